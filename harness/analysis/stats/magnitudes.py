"""Magnitudes of change compared across pairs that share a base model and questions: each pair's
oriented relative change of a metric's mean, resampled jointly over the union of their questions.

Hand-written: scipy.stats.bootstrap resamples one sample (or independent samples); here every pair
reads its own subset of one shared question pool, so the resample must be drawn once over the pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.analysis.stats.resampling import bootstrap_weights, check_direction
from harness.errors import UserError


@dataclass(frozen=True)
class PairValues:
    """One pair's per-question metric values: ids [n], base [n], post [n]."""

    name: str
    ids: tuple[str, ...]
    base: np.ndarray
    post: np.ndarray


@dataclass(frozen=True)
class MagnitudeComparison:
    """Oriented relative change R = direction * (mean post / mean base - 1) of a focal pair vs the mean
    over reference pairs; difference = R_focal - mean R_ref (negative: the focal pair changed less
    toward the claim). Intervals are percentile bootstrap over the shared question pool."""

    focal: float
    reference: float
    reference_each: tuple[float, ...]
    difference: float
    ci_low: float
    ci_high: float
    focal_ci_tost: tuple[float, float]   # (1 - 2 equivalence_level) interval of R_focal, for the TOST
    reference_ci: tuple[float, float]    # ci_level interval of mean R_ref
    p_weaker: float
    p_stronger: float
    n_focal: int
    n_reference: tuple[int, ...]
    n_pool: int
    n_boot: int
    ci_level: float
    ci_method: str

    @property
    def min_p(self) -> float:
        return 1 / (self.n_boot + 1)


def _relative(weights: np.ndarray, values: PairValues, index: np.ndarray, direction: int) -> np.ndarray:
    w = weights[:, index]
    base, post = w @ values.base, w @ values.post
    with np.errstate(divide="ignore", invalid="ignore"):
        return direction * (post / base - 1.0)


def compare_magnitudes(focal: PairValues, references: Sequence[PairValues], direction: int, *, equivalence_level: float = 0.05,
                       n_boot: int = 2000, seed: int = 0, ci_level: float = 0.95) -> MagnitudeComparison:
    """Is the focal pair's oriented relative change smaller than the reference pairs' mean?

    Questions are drawn with replacement from the union of all pairs' question ids; each pair's means
    use the drawn questions it has. p_weaker = (1 + #{difference* >= 0}) / (B + 1), p_stronger the
    other tail; B counts resamples where every pair has a drawn question.
    """
    direction = check_direction(direction)
    if not references:
        raise UserError("a magnitude comparison needs at least one reference (online-RL) pair")
    pairs = [focal, *references]
    for p in pairs:
        if len(p.ids) < 3 or p.base.shape != (len(p.ids),) or p.post.shape != (len(p.ids),):
            raise UserError(f"pair {p.name}: need >= 3 questions with one base and one post value each")
        if not p.base.mean() > 0:
            raise UserError(f"pair {p.name}: the mean base value must be > 0 for a relative change")
    pool = sorted({q for p in pairs for q in p.ids})
    position = {q: i for i, q in enumerate(pool)}
    index = [np.array([position[q] for q in p.ids]) for p in pairs]
    ones = np.ones((1, len(pool)))
    point = np.array([_relative(ones, p, i, direction)[0] for p, i in zip(pairs, index)])
    weights = bootstrap_weights(np.random.default_rng(seed), len(pool), n_boot)
    boot = np.stack([_relative(weights, p, i, direction) for p, i in zip(pairs, index)])
    ok = np.isfinite(boot).all(axis=0)
    boot = boot[:, ok]
    diff = boot[0] - boot[1:].mean(axis=0)
    tail = (1 - ci_level) / 2
    low, high = np.quantile(diff, [tail, 1 - tail]) if diff.size else (math.nan, math.nan)
    tost = tuple(float(x) for x in np.quantile(boot[0], [equivalence_level, 1 - equivalence_level])) if diff.size else (math.nan, math.nan)
    ref = (tuple(float(x) for x in np.quantile(boot[1:].mean(axis=0), [tail, 1 - tail])) if diff.size
           else (math.nan, math.nan))
    return MagnitudeComparison(
        focal=float(point[0]), reference=float(point[1:].mean()), reference_each=tuple(float(x) for x in point[1:]),
        difference=float(point[0] - point[1:].mean()), ci_low=float(low), ci_high=float(high), focal_ci_tost=tost,
        reference_ci=ref,
        p_weaker=float((1 + np.sum(diff >= 0)) / (diff.size + 1)),
        p_stronger=float((1 + np.sum(diff <= 0)) / (diff.size + 1)),
        n_focal=len(focal.ids), n_reference=tuple(len(p.ids) for p in references), n_pool=len(pool),
        n_boot=int(diff.size), ci_level=ci_level,
        ci_method=f"percentile bootstrap over the {len(pool)} pooled questions, drawn jointly for all pairs, "
                  f"{int(diff.size)} resamples")
