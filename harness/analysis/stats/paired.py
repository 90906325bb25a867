"""Paired per-question tests of post - base: one-sided Wilcoxon (deciding), sign-flip permutation,
BCa interval of the mean change, Hedges d_z."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from harness.analysis.stats.resampling import (
    alternative,
    bca_interval,
    bootstrap_weights,
    check_direction,
    paired_vectors,
)
from harness.errors import UserError


def hedges_correction(df: float) -> float:
    """Exact small-sample factor J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2))."""
    return float(np.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / np.sqrt(df / 2))


def hedges_dz(diffs: np.ndarray) -> float:
    """Hedges-corrected standardised mean difference of paired differences, mean / sd * J(n-1)."""
    n = diffs.size
    sd = diffs.std(ddof=1)
    return float(diffs.mean() / sd * hedges_correction(n - 1)) if sd > 0 else math.nan


def weighted_hedges_dz(weights: np.ndarray, diffs: np.ndarray) -> np.ndarray:
    n = diffs.size
    mean = weights @ diffs / n
    var = (weights @ diffs**2 / n - mean**2) * n / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return mean / np.sqrt(np.where(var > 0, var, np.nan)) * hedges_correction(n - 1)


def sign_flip_pvalue(diffs: np.ndarray, direction: int, n_perm: int, rng: np.random.Generator) -> tuple[float, str]:
    """One-sided sign-flip permutation p-value of the mean difference in `direction`.

    Exact (all 2^m flips of the m nonzero differences) when 2^m <= n_perm, else Monte Carlo with
    p = (1 + #{T* >= T}) / (n_perm + 1). Returns (p, method description).
    """
    d = direction * diffs[diffs != 0]
    m = d.size
    if m == 0:
        return math.nan, "no nonzero differences"
    observed = d.sum()
    tol = 1e-12 * np.abs(d).sum()
    if 2**m <= n_perm:
        codes = np.arange(2**m)[:, None]
        signs = ((codes >> np.arange(m)) & 1) * 2.0 - 1.0
        count = np.sum(signs @ d >= observed - tol)
        return float(count / 2**m), f"exact over {2**m} sign flips"
    count, done, chunk = 0, 0, 4096
    while done < n_perm:
        rows = min(chunk, n_perm - done)
        signs = rng.integers(0, 2, size=(rows, m)) * 2.0 - 1.0
        count += int(np.sum(signs @ d >= observed - tol))
        done += rows
    return float((1 + count) / (n_perm + 1)), f"Monte Carlo, {n_perm} sign flips"


# --------------------------------------------------------------------------- paired test per cell


@dataclass(frozen=True)
class PairedTest:
    """One cell's paired comparison of per-question values (difference = post - base)."""

    n: int
    n_zero: int
    mean_base: float
    mean_post: float
    mean_diff: float
    relative_change: float
    ci_low: float
    ci_high: float
    ci_level: float
    ci_method: str
    hedges_dz: float
    p_wilcoxon: float
    p_wilcoxon_opposite: float
    wilcoxon_method: str
    p_permutation: float
    permutation_method: str
    direction: int
    alternative: str
    zero_method: str
    seed: int
    invalid_reason: str | None
    no_change: bool = False   # every paired difference is exactly zero: evidence of no change, p = 1

    @property
    def p_claimed(self) -> float:
        return self.p_wilcoxon

    @property
    def p_opposite(self) -> float:
        return self.p_wilcoxon_opposite


@functools.lru_cache(maxsize=64)
def _signed_rank_null(n: int) -> np.ndarray:
    """Exact null probabilities P(T+ = t), t = 0..n(n+1)/2, of the signed-rank sum of n untied ranks."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return counts / 2.0**n


def _wilcoxon_one_sided(diffs: np.ndarray, zero_method: str) -> tuple[float, float, str]:
    """(p greater, p less, method) of the Wilcoxon signed-rank test of `diffs`.

    Exact null distribution when at most 50 differences are ranked and none tie or are zero
    (after 'wilcox' drops the zeros); otherwise the normal approximation with tie correction
    (and, for 'pratt', the zero-rank correction), no continuity correction.
    """
    d = diffs[diffs != 0] if zero_method == "wilcox" else diffs
    ranks = stats.rankdata(np.abs(d))
    n_zero = int(np.sum(d == 0))
    t_plus = float(ranks[d > 0].sum())
    _, tie_sizes = np.unique(np.abs(d[d != 0]), return_counts=True)
    if d.size <= 50 and n_zero == 0 and np.all(tie_sizes == 1):
        null = _signed_rank_null(d.size)
        t = int(round(t_plus))
        return float(null[t:].sum()), float(null[: t + 1].sum()), "exact null distribution"
    n = d.size
    mean = (n * (n + 1) - n_zero * (n_zero + 1)) / 4
    var = (n * (n + 1) * (2 * n + 1) - n_zero * (n_zero + 1) * (2 * n_zero + 1)) / 24
    var -= np.sum(tie_sizes**3 - tie_sizes) / 48
    z = (t_plus - mean) / math.sqrt(var)
    return float(special.ndtr(-z)), float(special.ndtr(z)), "normal approximation, tie-corrected"


def paired_test(
    base: Any,
    post: Any,
    direction: int,
    *,
    n_boot: int = 2000,
    n_perm: int = 10000,
    seed: int = 0,
    zero_method: str = "wilcox",
    ci_level: float = 0.95,
) -> PairedTest:
    """One-sided paired Wilcoxon signed-rank test in `direction`, sign-flip permutation check,
    BCa bootstrap CI of the mean difference, Hedges-corrected d_z.

    base, post: per-question values [n], paired by index. zero_method: 'wilcox' drops zero
    differences (their count is `n_zero`), 'pratt' ranks them and drops their ranks.
    Degenerate data (n < 3, zero variance of non-zero differences) gives NaN p-values and
    `invalid_reason`. All differences exactly zero is no change, not invalid data: p = 1 in both
    directions and `no_change` set.
    """
    direction = check_direction(direction)
    if zero_method not in ("wilcox", "pratt"):
        raise UserError(f"zero_method must be 'wilcox' or 'pratt', got {zero_method!r}")
    b, p = paired_vectors(base, post)
    d = p - b
    n = d.size
    n_zero = int(np.sum(d == 0))
    rng = np.random.default_rng(seed)
    mean_base = float(b.mean()) if n else math.nan
    common = dict(
        n=n, n_zero=n_zero, mean_base=mean_base, mean_post=float(p.mean()) if n else math.nan,
        mean_diff=float(d.mean()) if n else math.nan,
        relative_change=float(d.mean() / abs(mean_base)) if n and mean_base != 0 else math.nan,
        ci_level=ci_level, ci_method=f"BCa bootstrap over questions, {n_boot} resamples",
        direction=direction, alternative=alternative(direction), zero_method=zero_method, seed=seed,
    )
    reason = None
    if n < 3:
        reason = f"only {n} paired questions"
    elif n_zero == n:
        return PairedTest(**common, ci_low=0.0, ci_high=0.0, hedges_dz=math.nan, p_wilcoxon=1.0,
                          p_wilcoxon_opposite=1.0, wilcoxon_method="not run: every difference is exactly zero",
                          p_permutation=1.0, permutation_method="not run", invalid_reason=None, no_change=True)
    elif d.std() == 0:
        reason = "all differences are identical (zero variance)"
    if reason is not None:
        return PairedTest(**common, ci_low=math.nan, ci_high=math.nan, hedges_dz=math.nan,
                          p_wilcoxon=math.nan, p_wilcoxon_opposite=math.nan, wilcoxon_method="not run",
                          p_permutation=math.nan, permutation_method="not run", invalid_reason=reason)
    greater, less, wmethod = _wilcoxon_one_sided(d, zero_method)
    p_claim, p_opp = (greater, less) if direction > 0 else (less, greater)
    boot = bootstrap_weights(rng, n, n_boot) @ d / n
    jack = (d.sum() - d) / (n - 1)
    low, high = bca_interval(float(d.mean()), boot, jack, ci_level)
    p_perm, pmethod = sign_flip_pvalue(d, direction, n_perm, rng)
    return PairedTest(**common, ci_low=low, ci_high=high, hedges_dz=hedges_dz(d),
                      p_wilcoxon=p_claim, p_wilcoxon_opposite=p_opp, wilcoxon_method=wmethod,
                      p_permutation=p_perm, permutation_method=pmethod, invalid_reason=None)


