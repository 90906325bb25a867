"""Magnitudes of change compared across pairs that share a base model: each pair's oriented relative
change of a metric's mean, on the questions every pair kept, resampled jointly (scipy.stats.bootstrap
over the array of shared question indices, one draw for all pairs).

Tests against shifted nulls: `p_weaker` tests "the focal pair's change is smaller than the references'
by more than the margin", `p_stronger` "larger by more than the margin", `p_like` "within the margin"
(two one-sided tests, the larger p). Each is a percentile-bootstrap p: (1 + #{resampled difference on
the null's side of its bound}) / (B + 1).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import DegenerateDataWarning, bootstrap

from harness.analysis.stats.resampling import check_direction
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
    over reference pairs, on the questions all of them kept; difference = R_focal - mean R_ref
    (negative: the focal pair changed less toward the claim). Intervals: percentile bootstrap at
    ci_level over the shared questions."""

    focal: float
    reference: float
    reference_each: tuple[float, ...]
    difference: float
    ci_low: float
    ci_high: float
    focal_ci: tuple[float, float]
    reference_ci: tuple[float, float]
    p_weaker: float      # H1: difference < -margin
    p_stronger: float    # H1: difference > +margin
    p_like: float        # H1: |difference| < margin
    margin: float
    shared_ids: tuple[str, ...]   # the questions every pair kept, in the focal pair's order
    n_each: tuple[int, ...]   # questions each pair kept (focal first), before the intersection
    n_boot: int
    ci_level: float
    ci_method: str

    @property
    def n_shared(self) -> int:
        return len(self.shared_ids)

    @property
    def min_p(self) -> float:
        return 1 / (self.n_boot + 1)


def compare_magnitudes(focal: PairValues, references: Sequence[PairValues], direction: int, *, margin: float,
                       n_boot: int = 2000, seed: int = 0, ci_level: float = 0.95) -> MagnitudeComparison:
    """Compare the focal pair's oriented relative change with the reference pairs' mean on their shared
    questions (like with like: every pair's means over the same questions)."""
    direction = check_direction(direction)
    if not references:
        raise UserError("a magnitude comparison needs at least one reference (online-RL) pair")
    pairs = [focal, *references]
    for p in pairs:
        if p.base.shape != (len(p.ids),) or p.post.shape != (len(p.ids),):
            raise UserError(f"pair {p.name}: need one base and one post value per question")
    kept = [set(p.ids) for p in references]
    shared = [q for q in focal.ids if all(q in k for k in kept)]
    if len(shared) < 3:
        raise UserError(f"the pairs {', '.join(p.name for p in pairs)} kept only {len(shared)} questions in common; "
                        "a comparison needs at least 3")
    rows = [{q: i for i, q in enumerate(p.ids)} for p in pairs]
    base = np.array([[p.base[r[q]] for q in shared] for p, r in zip(pairs, rows)])    # [pairs, n_shared]
    post = np.array([[p.post[r[q]] for q in shared] for p, r in zip(pairs, rows)])
    for p, b in zip(pairs, base):
        if not b.mean() > 0:
            raise UserError(f"pair {p.name}: the mean base value must be > 0 for a relative change")

    def statistic(drawn: np.ndarray, axis: int = -1) -> np.ndarray:   # drawn [..., k] indices -> [3, ...]
        relative = direction * (post[:, drawn].mean(axis=-1) / base[:, drawn].mean(axis=-1) - 1.0)  # [pairs, ...]
        reference = relative[1:].mean(axis=0)
        return np.stack([relative[0] - reference, relative[0], reference])

    each = direction * (post.mean(axis=1) / base.mean(axis=1) - 1.0)   # every pair's R on all shared questions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap((np.arange(len(shared)),), statistic, n_resamples=n_boot, confidence_level=ci_level,
                           method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    diff = result.bootstrap_distribution[0]
    tail = lambda hits: float((1 + np.sum(hits)) / (diff.size + 1))  # noqa: E731
    return MagnitudeComparison(
        focal=float(each[0]), reference=float(each[1:].mean()), reference_each=tuple(float(x) for x in each[1:]),
        difference=float(each[0] - each[1:].mean()), ci_low=float(low[0]), ci_high=float(high[0]),
        focal_ci=(float(low[1]), float(high[1])), reference_ci=(float(low[2]), float(high[2])),
        p_weaker=tail(diff >= -margin), p_stronger=tail(diff <= margin),
        p_like=max(tail(diff >= margin), tail(diff <= -margin)), margin=margin,
        shared_ids=tuple(shared), n_each=tuple(len(p.ids) for p in pairs), n_boot=n_boot, ci_level=ci_level,
        ci_method=f"percentile bootstrap over the {len(shared)} questions every pair kept, drawn jointly for all "
                  f"pairs, {n_boot} resamples")


def resamples_for(m: int, significance: float, floor: int) -> int:
    """Bootstrap resamples B for a family of m cells (2m one-sided hypotheses) so that its smallest p,
    1 / (B + 1), can pass Holm's first step with room to spare: 1 / (B + 1) <= significance / (4m)."""
    return max(floor, math.ceil(4 * m / significance))
