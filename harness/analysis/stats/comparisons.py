"""Equivalence (TOST), effect comparisons between pairs, rate tests, trends and correlations."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import special, stats
from statsmodels.stats.weightstats import DescrStatsW, ttost_paired

from harness.analysis.stats.config import DEPENDENCE_CAVEAT
from harness.analysis.stats.paired import hedges_dz, weighted_hedges_dz
from harness.analysis.stats.resampling import (
    as_vector,
    bootstrap_weights,
    check_direction,
    paired_vectors,
)
from harness.errors import UserError

# --------------------------------------------------------------------------- equivalence and comparisons


@dataclass(frozen=True)
class EquivalenceTest:
    """Paired TOST: is the mean change within +-margin_abs (= margin_rel * |mean base|)?"""

    n: int
    mean_base: float
    mean_diff: float
    margin_rel: float
    margin_abs: float
    p_lower: float
    p_upper: float
    p_tost: float
    ci_low: float
    ci_high: float
    ci_level: float
    alpha: float
    equivalent: bool


def tost_paired(base: Any, post: Any, margin_rel: float, *, alpha: float = 0.05) -> EquivalenceTest:
    """Two one-sided paired t-tests of post - base against -margin and +margin (statsmodels
    `ttost_paired`; the interval is `DescrStatsW.tconfint_mean`).

    margin_rel: margin as a fraction of |mean base| (fixed in config). Equivalent when
    p_tost = max(p_lower, p_upper) < alpha, i.e. the (1 - 2 alpha) t-interval lies inside the margin.
    """
    b, p = paired_vectors(base, post)
    if b.size < 3:
        raise UserError(f"equivalence test needs at least 3 paired questions, got {b.size}")
    if not margin_rel > 0:
        raise UserError(f"equivalence margin must be > 0, got {margin_rel!r}")
    d = p - b
    margin = margin_rel * abs(b.mean())
    if d.std() > 0:
        p_tost, (_, p_lower, _), (_, p_upper, _) = ttost_paired(p, b, -margin, margin)
        p_lower, p_upper = float(p_lower), float(p_upper)
    else:   # every difference equal: the t statistics are +-inf (or 0/0), decided by the mean alone
        p_lower = float(d.mean() <= -margin)
        p_upper = float(d.mean() >= margin)
    p_tost = max(p_lower, p_upper)
    low, high = DescrStatsW(d).tconfint_mean(alpha=2 * alpha)
    return EquivalenceTest(d.size, float(b.mean()), float(d.mean()), margin_rel, float(margin), p_lower, p_upper,
                           p_tost, float(low), float(high), 1 - 2 * alpha, alpha, bool(p_tost < alpha))


@dataclass(frozen=True)
class EffectComparison:
    """Oriented Hedges d_z of the DPO pair vs the mean over online-RL pairs (positive = claimed way)."""

    effect_dpo: float
    effect_rl: float
    effect_rl_each: tuple[float, ...]
    difference: float
    ci_low: float
    ci_high: float
    ci_level: float
    ci_method: str
    p_weaker: float
    n_dpo: int
    n_rl: tuple[int, ...]
    n_boot: int
    seed: int


def compare_effects(
    dpo_diffs: Any,
    rl_diffs: Sequence[Any],
    direction: int,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    ci_level: float = 0.95,
) -> EffectComparison:
    """Is the DPO pair's effect weaker than the online-RL pairs'?

    dpo_diffs [n_dpo], rl_diffs: one array [n_j] per online-RL pair, each of per-question
    differences post - base (pairs use different questions, so they are resampled independently).
    Effect = direction * Hedges d_z; difference = DPO - mean over RL pairs, percentile bootstrap CI;
    p_weaker = (1 + #{resampled difference >= 0}) / (n_boot + 1), one-sided for "DPO weaker".
    """
    direction = check_direction(direction)
    groups = [as_vector(dpo_diffs, "DPO differences")] + [
        as_vector(x, f"online-RL pair {i} differences") for i, x in enumerate(rl_diffs)
    ]
    if len(groups) < 2:
        raise UserError("compare_effects needs at least one online-RL pair")
    for g in groups:
        if g.size < 3 or g.std() == 0:
            raise UserError("every pair needs >= 3 differences with nonzero spread to compare effect sizes")
    rng = np.random.default_rng(seed)
    # hand-written weight bootstrap (not scipy.stats.bootstrap): resamples whose d_z is undefined (a
    # group of >= 3 values drawn all equal) are dropped, and p_weaker needs the resampled distribution
    point = np.array([direction * hedges_dz(g) for g in groups])
    boot = np.stack([direction * weighted_hedges_dz(bootstrap_weights(rng, g.size, n_boot), g) for g in groups])
    diff_boot = boot[0] - boot[1:].mean(axis=0)
    diff_boot = diff_boot[np.isfinite(diff_boot)]
    tail = (1 - ci_level) / 2
    low, high = np.quantile(diff_boot, [tail, 1 - tail])
    difference = float(point[0] - point[1:].mean())
    return EffectComparison(
        effect_dpo=float(point[0]), effect_rl=float(point[1:].mean()),
        effect_rl_each=tuple(float(x) for x in point[1:]), difference=difference,
        ci_low=float(low), ci_high=float(high), ci_level=ci_level,
        ci_method=f"percentile bootstrap, questions resampled within each pair, {n_boot} resamples",
        p_weaker=float((1 + np.sum(diff_boot >= 0)) / (diff_boot.size + 1)),
        n_dpo=groups[0].size, n_rl=tuple(g.size for g in groups[1:]), n_boot=n_boot, seed=seed,
    )


@dataclass(frozen=True)
class RateTest:
    """Fraction of cells meeting a criterion against a claimed rate p0, Clopper-Pearson interval."""

    k: int
    n: int
    p0: float
    rate: float
    ci_low: float
    ci_high: float
    ci_level: float
    ci_method: str
    p_above: float
    p_below: float
    caveat: str


def binomial_rate_test(k: int, n: int, p0: float = 0.95, *, ci_level: float = 0.95) -> RateTest:
    """Exact binomial tests of k successes in n cells: p_above for rate > p0, p_below for rate < p0."""
    if int(n) != n or n < 1 or int(k) != k or not 0 <= k <= n:
        raise UserError(f"need integers 0 <= k <= n and n >= 1, got k={k!r}, n={n!r}")
    if not 0 < p0 < 1:
        raise UserError(f"claimed rate p0 must lie in (0, 1), got {p0!r}")
    k, n = int(k), int(n)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=ci_level, method="exact")
    return RateTest(k, n, p0, k / n, float(ci.low), float(ci.high), ci_level, "Clopper-Pearson (exact)",
                    float(stats.binomtest(k, n, p0, alternative="greater").pvalue),
                    float(stats.binomtest(k, n, p0, alternative="less").pvalue), DEPENDENCE_CAVEAT)


def _ranks(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, axis=-1)


@dataclass(frozen=True)
class Trend:
    """Spearman trend of an oriented effect over alpha (positive rho = effect grows toward the claim)."""

    n: int
    rho: float
    p_increasing: float
    p_two_sided: float
    method: str
    invalid_reason: str | None


def alpha_trend(alphas: Any, effects: Any, direction: int = 1, *, n_perm: int = 10000, seed: int = 0) -> Trend:
    """Spearman rho between alpha and direction * effect, with a permutation p-value
    (scipy `spearmanr` and `permutation_test` over pairings).

    Exact over all n! orderings for n <= 8 (with 4 alpha levels the smallest one-sided p is 1/24),
    Monte Carlo with n_perm orderings otherwise, p = (1 + #{null >= rho}) / (n_perm + 1).
    """
    direction = check_direction(direction)
    a, e = paired_vectors(alphas, effects)
    n = a.size
    if n < 3:
        raise UserError(f"a trend over alpha needs at least 3 alpha levels, got {n}")
    if np.ptp(a) == 0 or np.ptp(e) == 0:
        return Trend(n, math.nan, math.nan, math.nan, "not run", "alpha or effect is constant")
    oriented = direction * e
    rho = float(stats.spearmanr(a, oriented).statistic)
    ranked_alphas = _ranks(a)

    def spearman(ranked_effects: np.ndarray, axis: int) -> np.ndarray:
        # Spearman rho = Pearson r of the ranks; the effects are ranked once, a permutation of
        # them permutes their ranks, so each ordering only needs the (vectorised) Pearson r
        return stats.pearsonr(np.broadcast_to(ranked_alphas, ranked_effects.shape), ranked_effects,
                              axis=axis).statistic

    exact = n <= 8
    n_resamples = math.factorial(n) if exact else n_perm
    method = (f"exact permutation over {n_resamples} orderings" if exact
              else f"Monte Carlo permutation, {n_perm} orderings")
    p = {alt: float(stats.permutation_test((_ranks(oriented),), spearman, permutation_type="pairings",
                                           vectorized=True, n_resamples=n_resamples, alternative=alt,
                                           rng=np.random.default_rng(seed)).pvalue)
         for alt in ("greater", "two-sided")}   # same seed: the same orderings for both
    return Trend(n, rho, p["greater"], p["two-sided"], method, None)


@dataclass(frozen=True)
class Correlation:
    """Correlation across cells with a Fisher-z confidence interval and two-sided p."""

    n: int
    r: float
    ci_low: float
    ci_high: float
    ci_level: float
    p_two_sided: float
    method: str
    ci_method: str
    caveat: str


def correlation_ci(x: Any, y: Any, *, method: str = "pearson", ci_level: float = 0.95) -> Correlation:
    """Correlation of x and y (e.g. metric change vs accuracy change across cells).

    pearson: Fisher z, se = 1/sqrt(n-3); spearman: Fisher z on rho with the Bonett-Wright
    se = sqrt((1 + rho^2/2)/(n-3)). p from t = r sqrt((n-2)/(1-r^2)), df = n-2.
    """
    if method not in ("pearson", "spearman"):
        raise UserError(f"correlation method must be 'pearson' or 'spearman', got {method!r}")
    a, b = paired_vectors(x, y)
    n = a.size
    if n < 4:
        raise UserError(f"a correlation with a CI needs at least 4 cells, got {n}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise UserError("one of the two variables is constant across cells; its correlation is undefined")
    if method == "spearman":
        a, b = _ranks(a), _ranks(b)
    r = float(np.clip(np.corrcoef(a, b)[0, 1], -1.0, 1.0))
    se = np.sqrt((1 + r**2 / 2) / (n - 3)) if method == "spearman" else 1 / np.sqrt(n - 3)
    z = np.arctanh(min(max(r, -1 + 1e-15), 1 - 1e-15))
    half = special.ndtri((1 + ci_level) / 2) * se
    with np.errstate(divide="ignore"):
        t = r * np.sqrt((n - 2) / max(1 - r**2, 1e-300))
    p = float(2 * stats.t.sf(abs(t), n - 2))
    ci_method = "Fisher z" + (" (Bonett-Wright se)" if method == "spearman" else "")
    return Correlation(n, r, float(np.tanh(z - half)), float(np.tanh(z + half)), ci_level, p, method,
                       ci_method, DEPENDENCE_CAVEAT)


