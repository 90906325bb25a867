"""Paired per-question tests of post - base: the mean change decided by the one-sided sign-flip
permutation test and reported with its BCa interval and Hedges d_z (the paper's Table 1 reports means
over samples); the Wilcoxon signed-rank test with its Hodges-Lehmann estimate as a named secondary."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import special, stats

from harness.analysis.stats.resampling import alternative, check_direction, paired_vectors
from harness.errors import UserError


def hedges_correction(df: float) -> float:
    """Exact small-sample factor J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2))."""
    return float(np.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / np.sqrt(df / 2))


def hedges_dz(diffs: np.ndarray) -> float:
    """Hedges-corrected standardised mean difference of paired differences, mean / sd * J(n-1)."""
    n = diffs.size
    sd = diffs.std(ddof=1)
    return float(diffs.mean() / sd * hedges_correction(n - 1)) if sd > 0 else math.nan


SIGN_FLIP_BATCH = 2500   # permutations per vectorised call: faster than all at once (cache), same test


def sign_flip_pvalues(base: np.ndarray, post: np.ndarray, n_perm: int, rng: np.random.Generator
                      ) -> tuple[float, float, str]:
    """(p greater, p less, method) of the sign-flip permutation test of the mean of post - base
    (scipy `permutation_test`, permutation_type='samples': each question's two values swap).

    Questions with a zero difference are left out of the flips (flipping them changes nothing), so
    the test is exact over all 2^m flips of the m nonzero differences when 2^m <= n_perm, else Monte
    Carlo with p = (1 + #{T* >= T}) / (n_perm + 1). Both tails come from the one null distribution.
    """
    n = post.size
    changed = post != base
    m = int(changed.sum())
    if m == 0:
        return math.nan, math.nan, "no nonzero differences"
    if m == 1:   # permutation_test needs two observations; the exact null is {d, -d}
        d = float((post - base)[changed][0])
        greater, less = (0.5, 1.0) if d > 0 else (1.0, 0.5)
        return greater, less, "exact over 2 sign flips"

    def mean_diff(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.sum(x - y, axis=axis) / n

    res = stats.permutation_test((post[changed], base[changed]), mean_diff, permutation_type="samples",
                                 vectorized=True, n_resamples=n_perm, batch=SIGN_FLIP_BATCH, alternative="greater",
                                 rng=rng)
    exact = 2**m <= n_perm
    # the other tail of the same null distribution, with permutation_test's own tolerance and
    # randomised-test correction (it returns one alternative per call; a second call would redraw)
    null, observed = res.null_distribution, float(res.statistic)
    gamma = abs(100 * np.finfo(float).eps * observed)
    correction = 0 if exact else 1
    p_less = (np.count_nonzero(null <= observed + gamma) + correction) / (null.size + correction)
    method = f"exact over {2**m} sign flips" if exact else f"Monte Carlo, {n_perm} sign flips"
    return float(res.pvalue), float(min(p_less, 1.0)), method


def bca_mean_interval(diffs: np.ndarray, n_boot: int, ci_level: float, rng: np.random.Generator
                      ) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of `diffs` (scipy `bootstrap`); NaN if degenerate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        ci = stats.bootstrap((diffs,), np.mean, vectorized=True, n_resamples=n_boot, confidence_level=ci_level,
                             method="BCa", rng=rng).confidence_interval
    low, high = float(ci.low), float(ci.high)
    return (low, high) if np.isfinite(low) and np.isfinite(high) else (math.nan, math.nan)


def hodges_lehmann(diffs: np.ndarray) -> float:
    """Median of the Walsh averages (d_i + d_j) / 2, i <= j: the estimate that goes with the signed-rank
    test (hand-written: neither scipy nor statsmodels has the one-sample Hodges-Lehmann estimate)."""
    i, j = np.triu_indices(diffs.size)
    return float(np.median((diffs[i] + diffs[j]) / 2))


# --------------------------------------------------------------------------- paired test per cell


@dataclass(frozen=True)
class PairedTest:
    """One cell's paired comparison of per-question values (difference = post - base).

    Decided on the mean difference: `p_claimed`/`p_opposite` are the one-sided sign-flip
    permutation p-values of the mean, whose estimate (`mean_diff`) and BCa interval are reported.
    The Wilcoxon signed-rank p-values and their estimate (`hodges_lehmann`, the pseudo-median) are
    a secondary view of the same data that does not decide the cell.
    """

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
    p_permutation: float
    p_permutation_opposite: float
    permutation_method: str
    p_wilcoxon: float
    p_wilcoxon_opposite: float
    wilcoxon_method: str
    hodges_lehmann: float
    direction: int
    alternative: str
    zero_method: str
    seed: int
    invalid_reason: str | None
    no_change: bool = False   # every paired difference is exactly zero: evidence of no change, p = 1
    min_p: float | None = None   # smallest one-sided p the sign-flip test can give on these data

    decided_by: ClassVar[str] = "one-sided sign-flip permutation test of the mean difference"

    @property
    def p_claimed(self) -> float:
        return self.p_permutation

    @property
    def p_opposite(self) -> float:
        return self.p_permutation_opposite


def _wilcoxon_one_sided(diffs: np.ndarray, zero_method: str) -> tuple[float, float, str]:
    """(p greater, p less, method) of the Wilcoxon signed-rank test of `diffs` (scipy `wilcoxon`).

    Exact null distribution when at most 50 differences are ranked and none tie or are zero
    (after 'wilcox' drops the zeros); otherwise the normal approximation with tie correction
    (and, for 'pratt', the zero-rank correction), no continuity correction. The method is chosen
    here, not by scipy's 'auto', which counts the zeros 'wilcox' drops and would switch to a
    permutation test for n <= 13 with ties.
    """
    d = diffs[diffs != 0] if zero_method == "wilcox" else diffs
    _, tie_sizes = np.unique(np.abs(d[d != 0]), return_counts=True)
    exact = d.size <= 50 and not np.any(d == 0) and np.all(tie_sizes == 1)
    p = {alt: float(stats.wilcoxon(d, zero_method=zero_method, correction=False, alternative=alt,
                                   method="exact" if exact else "asymptotic").pvalue)
         for alt in ("greater", "less")}
    return p["greater"], p["less"], "exact null distribution" if exact else "normal approximation, tie-corrected"


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
    margin: float = 0.0,
) -> PairedTest:
    """One-sided sign-flip permutation test of the mean of post - base in `direction` (deciding,
    both tails), BCa bootstrap CI of the mean difference, Hedges-corrected d_z; secondary: one-sided
    Wilcoxon signed-rank test in both directions with its Hodges-Lehmann estimate.

    base, post: per-question values [n], paired by index. zero_method (Wilcoxon only): 'wilcox'
    drops zero differences (their count is `n_zero`), 'pratt' ranks them and drops their ranks; the
    Hodges-Lehmann estimate uses the differences the signed-rank test ranks. The bootstrap and the
    permutations draw from independent streams spawned from `seed`.
    margin (>= 0, in the units of the difference): the sign-flip tests are of shifted nulls, the claimed
    side "mean difference beyond +margin in the claimed direction", the opposite side "beyond -margin"
    (each on the differences shifted by the margin), so that the smallest effect of interest is tested
    inside whatever correction the p-values enter; 0 tests "no change".
    Fewer than 3 questions give NaN p-values and `invalid_reason`. All differences exactly zero is no
    change, not invalid data: p = 1 in both directions and `no_change` set. A constant non-zero shift
    is a clear effect: its interval is the point, its sign-flip p the smallest the test can give.
    """
    direction = check_direction(direction)
    if margin < 0 or not math.isfinite(margin):
        raise UserError(f"margin must be a finite value >= 0, got {margin!r}")
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
                          hodges_lehmann=0.0,
                          p_permutation=1.0, p_permutation_opposite=1.0, permutation_method="not run",
                          invalid_reason=None, no_change=True)
    if reason is not None:
        return PairedTest(**common, ci_low=math.nan, ci_high=math.nan, hedges_dz=math.nan,
                          p_wilcoxon=math.nan, p_wilcoxon_opposite=math.nan, wilcoxon_method="not run",
                          hodges_lehmann=math.nan,
                          p_permutation=math.nan, p_permutation_opposite=math.nan, permutation_method="not run",
                          invalid_reason=reason)
    greater, less, wmethod = _wilcoxon_one_sided(d, zero_method)
    p_claim, p_opp = (greater, less) if direction > 0 else (less, greater)
    boot_rng, perm_rng = rng.spawn(2)
    # a constant shift (every difference equal, not zero) is a clear effect: its interval is the point
    low, high = bca_mean_interval(d, n_boot, ci_level, boot_rng) if d.std() > 0 else (float(d[0]), float(d[0]))
    if margin == 0:
        perm_greater, perm_less, pmethod = sign_flip_pvalues(b, p, n_perm, perm_rng)
        p_perm, p_perm_opp = (perm_greater, perm_less) if direction > 0 else (perm_less, perm_greater)
    else:   # two shifted nulls, each from its own draws of one stream
        claimed_rng, opposite_rng = perm_rng.spawn(2)
        greater, less, pmethod = sign_flip_pvalues(b + direction * margin, p, n_perm, claimed_rng)
        p_perm = greater if direction > 0 else less
        greater, less, _ = sign_flip_pvalues(b - direction * margin, p, n_perm, opposite_rng)
        p_perm_opp = less if direction > 0 else greater
        pmethod = f"{pmethod}, each side against the null shifted by the margin {margin:.3g}"
    m = n - n_zero
    return PairedTest(**common, ci_low=low, ci_high=high, hedges_dz=hedges_dz(d),
                      p_wilcoxon=p_claim, p_wilcoxon_opposite=p_opp, wilcoxon_method=wmethod,
                      hodges_lehmann=hodges_lehmann(d[d != 0] if zero_method == "wilcox" else d),
                      p_permutation=p_perm, p_permutation_opposite=p_perm_opp, permutation_method=pmethod,
                      invalid_reason=None, min_p=2.0 ** -m if 2**m <= n_perm else 1 / (n_perm + 1))


