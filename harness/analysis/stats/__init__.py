"""Paired statistics for base vs post-trained metric values, multiplicity control and verdicts.

Unit of analysis = one question; base and post values are paired by question and the difference
is always `post - base`. `direction` is the claimed sign of that difference (+1 rise, -1 fall).
Every resampling procedure draws from a seeded `numpy.random.Generator` and is vectorised.
"""

from __future__ import annotations

import enum
import functools
import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import special, stats

from harness.errors import UserError
from harness.analysis.metrics import (
    MetricConfig,
    MetricSpec,
    RangePolicy,
    as_pair,
    cells,
    get_metric,
    per_sample_values,
    pooled_ranges,
    pooled_states,
)

DEPENDENCE_CAVEAT = (
    "cells share models, questions and alpha levels, so they are not independent trials; "
    "the p-value and interval treat them as independent and are therefore optimistic"
)


@dataclass(frozen=True)
class StatsConfig:
    """Decision parameters fixed before the data is seen; recorded with every verdict."""

    alpha: float = 0.05
    ci_level: float = 0.95
    n_boot: int = 2000
    n_perm: int = 10000
    n_perm_pooled: int = 2000
    zero_method: str = "wilcox"
    min_n: int = 10
    equivalence_margin_rel: float = 0.05
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- input checks


def _vector(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        raise UserError(f"{name} must be one value per question (1-D), got shape {x.shape}")
    bad = np.nonzero(~np.isfinite(x))[0]
    if bad.size:
        raise UserError(
            f"{name} has NaN/inf at questions {bad[:10].tolist()}; the metric is undefined there "
            "(e.g. an all-zero W): drop those questions from both models"
        )
    return x


def _paired_vectors(base: Any, post: Any) -> tuple[np.ndarray, np.ndarray]:
    b, p = _vector(base, "base values"), _vector(post, "post-trained values")
    if b.shape != p.shape:
        raise UserError(
            f"base ({b.size}) and post-trained ({p.size}) values differ in length; they must be paired "
            "by question (same ids, same order)"
        )
    return b, p


def _check_direction(direction: int) -> int:
    if direction not in (1, -1):
        raise UserError(f"direction must be +1 (claimed rise) or -1 (claimed fall), got {direction!r}")
    return int(direction)


def _alternative(direction: int) -> str:
    return "greater" if direction > 0 else "less"


# --------------------------------------------------------------------------- resampling primitives


def bootstrap_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """Multiplicities [n_boot, n] of n questions drawn with replacement (each row sums to n)."""
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = idx + (np.arange(n_boot) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def jackknife_weights(n: int) -> np.ndarray:
    """Weights [n, n] leaving out one question per row."""
    return 1.0 - np.eye(n)


def bca_interval(theta: float, boot: np.ndarray, jack: np.ndarray, level: float) -> tuple[float, float]:
    """BCa interval from bootstrap replicates [B] and leave-one-out replicates [n]; NaN if degenerate."""
    boot = boot[np.isfinite(boot)]
    if boot.size == 0 or not np.isfinite(jack).all() or not np.isfinite(theta):
        return math.nan, math.nan
    below = (np.sum(boot < theta) + 0.5 * np.sum(boot == theta)) / boot.size
    if below <= 0 or below >= 1:
        return math.nan, math.nan
    z0 = special.ndtri(below)
    dev = jack.mean() - jack
    denom = 6.0 * np.sum(dev**2) ** 1.5
    accel = np.sum(dev**3) / denom if denom > 0 else 0.0
    z = special.ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
    adj = special.ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    low, high = np.quantile(boot, adj)
    return float(low), float(high)


def hedges_correction(df: float) -> float:
    """Exact small-sample factor J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2))."""
    return float(np.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / np.sqrt(df / 2))


def hedges_dz(diffs: np.ndarray) -> float:
    """Hedges-corrected standardised mean difference of paired differences, mean / sd * J(n-1)."""
    n = diffs.size
    sd = diffs.std(ddof=1)
    return float(diffs.mean() / sd * hedges_correction(n - 1)) if sd > 0 else math.nan


def _weighted_hedges_dz(weights: np.ndarray, diffs: np.ndarray) -> np.ndarray:
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
    Degenerate data (n < 3, all differences zero, zero variance) gives NaN p-values and
    `invalid_reason`.
    """
    direction = _check_direction(direction)
    if zero_method not in ("wilcox", "pratt"):
        raise UserError(f"zero_method must be 'wilcox' or 'pratt', got {zero_method!r}")
    b, p = _paired_vectors(base, post)
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
        direction=direction, alternative=_alternative(direction), zero_method=zero_method, seed=seed,
    )
    reason = None
    if n < 3:
        reason = f"only {n} paired questions"
    elif n_zero == n:
        reason = "all differences are zero"
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


# --------------------------------------------------------------------------- pooled metrics


@dataclass(frozen=True)
class PooledTest:
    """The paper's pooled metric for base and post: bootstrap CI and swap-permutation p-values."""

    metric: str
    n: int
    base: float
    post: float
    diff: float
    ci_low: float
    ci_high: float
    ci_level: float
    ci_method: str
    p_permutation: float
    p_permutation_opposite: float
    permutation_method: str
    direction: int
    n_boot: int
    n_perm: int
    seed: int
    config: dict[str, Any]
    invalid_reason: str | None

    @property
    def p_claimed(self) -> float:
        return self.p_permutation

    @property
    def p_opposite(self) -> float:
        return self.p_permutation_opposite


def _combine_chunked(spec: MetricSpec, state: Any, weights: np.ndarray, chunk: int = 256) -> np.ndarray:
    """spec.combine over weight rows in chunks (bounds memory for node-level states)."""
    return np.concatenate([spec.combine(state, weights[i : i + chunk]) for i in range(0, weights.shape[0], chunk)])


def _swap_null(spec: MetricSpec, base: np.ndarray, post: np.ndarray, mask: np.ndarray, config: MetricConfig,
               swaps: np.ndarray) -> np.ndarray:
    """Pooled post - base after swapping the two models' samples where swaps [r, n] is 1."""
    if spec.uses_range and config.range_policy is RangePolicy.PER_MODEL:
        return _swap_null_per_model_complexity(base, post, mask, config, swaps)
    stacked = np.concatenate([base, post])
    value_range = None
    if spec.uses_range:
        a = np.abs(cells(stacked, mask, config))
        value_range = pooled_ranges(a, a, config)[0]
    state = spec.state(stacked, mask, config, value_range)
    keep = 1.0 - swaps
    as_base = np.concatenate([keep, swaps], axis=1)
    as_post = np.concatenate([swaps, keep], axis=1)
    return _combine_chunked(spec, state, as_post) - _combine_chunked(spec, state, as_base)


def _swap_null_per_model_complexity(base: np.ndarray, post: np.ndarray, mask: np.ndarray, config: MetricConfig,
                                    swaps: np.ndarray) -> np.ndarray:
    """Pooled complexity post - base per swap pattern, each model's min-max range re-derived.

    Every sample's |cells| are sorted once; a histogram on new edges is then a batch of
    searchsorted calls (bins [e_i, e_i+1), the last one closed).
    """
    stacked = np.abs(cells(np.concatenate([base, post]), mask, config))
    rows, m = stacked.shape
    n = rows // 2
    ordered = np.sort(stacked, axis=1)
    offset = float(ordered[:, -1].max()) + 1.0
    keys = (ordered + offset * np.arange(rows)[:, None]).ravel()
    row_min, row_max = ordered[:, 0], ordered[:, -1]
    fractions = np.arange(1, config.bins) / config.bins

    def entropy_of(selected: np.ndarray) -> float:
        low, high = row_min[selected].min(), row_max[selected].max()
        edges = low + (high - low) * fractions if high > low else np.full(fractions.size, np.inf)
        queries = edges[None, :] + offset * selected[:, None]
        below = np.searchsorted(keys, queries, side="left") - m * selected[:, None]
        cumulative = np.concatenate([np.zeros((selected.size, 1)), below, np.full((selected.size, 1), m)], axis=1)
        counts = np.diff(cumulative, axis=1).sum(axis=0)
        p = counts / counts.sum()
        return float(-np.sum(np.where(p > 0, p * np.log(p + config.eps), 0.0)))

    out = np.empty(swaps.shape[0])
    index = np.arange(n)
    for i, s in enumerate(swaps.astype(bool)):
        out[i] = entropy_of(np.where(s, index, index + n)) - entropy_of(np.where(s, index + n, index))
    return out


def pooled_test(
    base_W: Any,
    post_W: Any,
    mask: Any,
    metric: str,
    config: MetricConfig,
    *,
    n_boot: int = 2000,
    n_perm: int = 2000,
    seed: int = 0,
    ci_level: float = 0.95,
) -> PooledTest:
    """Pooled metric of base and post W [n, n_src, n_dst], paired by question.

    CI: BCa paired bootstrap over questions (the same resampled questions for both models;
    histogram ranges and bin edges of the full data held fixed). p-values: swap permutation test,
    exact under "base and post are exchangeable within each question": swap the two models'
    samples of a random subset of questions, recompute the pooled difference; one-sided,
    p = (1 + #{null >= observed}) / (n_perm + 1). Under the per_model range policy every
    permutation re-derives each model's range (and so its bin edges).
    """
    spec = get_metric(metric)
    base, post, mask_ = as_pair(base_W, post_W, mask)
    n = base.shape[0]
    sb, sp = pooled_states(spec, base, post, mask_, config)
    ones = np.ones((1, n))
    vb, vp = float(spec.combine(sb, ones)[0]), float(spec.combine(sp, ones)[0])
    diff = vp - vb
    reason = None
    if n < 3:
        reason = f"only {n} paired questions"
    elif not np.isfinite(diff):
        reason = f"pooled {metric} is undefined (NaN) for this data"
    if reason is not None:
        return PooledTest(metric, n, vb, vp, diff, math.nan, math.nan, ci_level, "not run", math.nan, math.nan,
                          "not run", spec.direction, n_boot, n_perm, seed, config.as_dict(), reason)
    rng = np.random.default_rng(seed)
    weights = bootstrap_weights(rng, n, n_boot)
    boot = _combine_chunked(spec, sp, weights) - _combine_chunked(spec, sb, weights)
    jw = jackknife_weights(n)
    jack = _combine_chunked(spec, sp, jw) - _combine_chunked(spec, sb, jw)
    low, high = bca_interval(diff, boot, jack, ci_level)
    swaps = np.vstack([np.zeros(n), rng.integers(0, 2, size=(n_perm, n))])
    null = _swap_null(spec, base, post, mask_, config, swaps)
    tol = 1e-12 * np.abs(null).max()
    oriented, observed = spec.direction * null[1:], spec.direction * null[0]
    p_claim = (1 + np.sum(oriented >= observed - tol)) / (n_perm + 1)
    p_opp = (1 + np.sum(oriented <= observed + tol)) / (n_perm + 1)
    return PooledTest(metric, n, vb, vp, diff, low, high, ci_level,
                      f"BCa paired bootstrap over questions, {n_boot} resamples, bin edges of the full data",
                      float(p_claim), float(p_opp), f"swap permutation within questions, {n_perm} draws",
                      spec.direction, n_boot, n_perm, seed, config.as_dict(), None)


@dataclass(frozen=True)
class CellTest:
    """One cell's tests of one metric; `decisive` names the one its verdict uses."""

    metric: str
    paired: PairedTest | None
    pooled: PooledTest
    decisive: str

    @property
    def decisive_test(self) -> PairedTest | PooledTest:
        return self.paired if self.decisive == "paired" else self.pooled


def cell_test(metric: str, base_W: Any, post_W: Any, mask: Any, metric_config: MetricConfig,
              stats_config: StatsConfig) -> CellTest:
    """The full per-cell procedure for one metric on one (pair, dataset, alpha, token mode) cell.

    Metrics whose per-sample values are independent across questions are decided by the paired
    Wilcoxon test on them; inter-sample diversity (each sample's value uses all the others) is
    decided by the pooled swap-permutation test and gets no per-question test.
    """
    spec = get_metric(metric)
    seed = stats_config.seed
    pooled = pooled_test(base_W, post_W, mask, metric, metric_config, n_boot=stats_config.n_boot,
                         n_perm=stats_config.n_perm_pooled, seed=seed, ci_level=stats_config.ci_level)
    if not spec.independent_per_sample:
        return CellTest(metric, None, pooled, "pooled")
    values = per_sample_values(metric, base_W, post_W, mask, metric_config)
    paired = paired_test(values.base, values.post, spec.direction, n_boot=stats_config.n_boot,
                         n_perm=stats_config.n_perm, seed=seed, zero_method=stats_config.zero_method,
                         ci_level=stats_config.ci_level)
    return CellTest(metric, paired, pooled, "paired")


# --------------------------------------------------------------------------- multiplicity


def _pvalue_array(pvals: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pvals, dtype=float)
    if p.ndim != 1:
        raise UserError(f"p-values must be a flat list, got shape {p.shape}")
    valid = np.isfinite(p)
    if np.any((p[valid] < 0) | (p[valid] > 1)):
        raise UserError("p-values must lie in [0, 1]")
    return p, valid


def holm(pvals: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values. NaN entries (invalid cells) stay NaN and do not count."""
    p, valid = _pvalue_array(pvals)
    out = np.full(p.shape, np.nan)
    q = p[valid]
    m = q.size
    if m:
        order = np.argsort(q, kind="stable")
        adj = np.maximum.accumulate((m - np.arange(m)) * q[order])
        res = np.empty(m)
        res[order] = np.minimum(adj, 1.0)
        out[valid] = res
    return out


def benjamini_hochberg(pvals: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (FDR). NaN entries stay NaN and do not count."""
    p, valid = _pvalue_array(pvals)
    out = np.full(p.shape, np.nan)
    q = p[valid]
    m = q.size
    if m:
        order = np.argsort(q, kind="stable")
        scaled = q[order] * m / np.arange(1, m + 1)
        adj = np.minimum.accumulate(scaled[::-1])[::-1]
        res = np.empty(m)
        res[order] = np.minimum(adj, 1.0)
        out[valid] = res
    return out


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
    """Two one-sided paired t-tests of post - base against -margin and +margin.

    margin_rel: margin as a fraction of |mean base| (fixed in config). Equivalent when
    p_tost = max(p_lower, p_upper) < alpha, i.e. the (1 - 2 alpha) t-interval lies inside the margin.
    """
    b, p = _paired_vectors(base, post)
    if b.size < 3:
        raise UserError(f"equivalence test needs at least 3 paired questions, got {b.size}")
    if not margin_rel > 0:
        raise UserError(f"equivalence margin must be > 0, got {margin_rel!r}")
    d = p - b
    n = d.size
    margin = margin_rel * abs(b.mean())
    se = d.std(ddof=1) / np.sqrt(n)
    t_dist = stats.t(df=n - 1)
    if se > 0:
        p_lower = float(t_dist.sf((d.mean() + margin) / se))
        p_upper = float(t_dist.cdf((d.mean() - margin) / se))
    else:
        p_lower = float(d.mean() <= -margin)
        p_upper = float(d.mean() >= margin)
    half = t_dist.ppf(1 - alpha) * se
    p_tost = max(p_lower, p_upper)
    return EquivalenceTest(n, float(b.mean()), float(d.mean()), margin_rel, float(margin), p_lower, p_upper,
                           p_tost, float(d.mean() - half), float(d.mean() + half), 1 - 2 * alpha, alpha,
                           bool(p_tost < alpha))


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
    direction = _check_direction(direction)
    groups = [_vector(dpo_diffs, "DPO differences")] + [
        _vector(x, f"online-RL pair {i} differences") for i, x in enumerate(rl_diffs)
    ]
    if len(groups) < 2:
        raise UserError("compare_effects needs at least one online-RL pair")
    for g in groups:
        if g.size < 3 or g.std() == 0:
            raise UserError("every pair needs >= 3 differences with nonzero spread to compare effect sizes")
    rng = np.random.default_rng(seed)
    point = np.array([direction * hedges_dz(g) for g in groups])
    boot = np.stack([direction * _weighted_hedges_dz(bootstrap_weights(rng, g.size, n_boot), g) for g in groups])
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
    a = 1 - ci_level
    low = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return RateTest(k, n, p0, k / n, low, high, ci_level, "Clopper-Pearson (exact)",
                    float(stats.binom.sf(k - 1, n, p0)), float(stats.binom.cdf(k, n, p0)), DEPENDENCE_CAVEAT)


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
    """Spearman rho between alpha and direction * effect, with a permutation p-value.

    Exact over all n! orderings for n <= 8 (with 4 alpha levels the smallest one-sided p is 1/24),
    Monte Carlo with n_perm orderings otherwise.
    """
    direction = _check_direction(direction)
    a, e = _paired_vectors(alphas, effects)
    n = a.size
    if n < 3:
        raise UserError(f"a trend over alpha needs at least 3 alpha levels, got {n}")
    if np.ptp(a) == 0 or np.ptp(e) == 0:
        return Trend(n, math.nan, math.nan, math.nan, "not run", "alpha or effect is constant")
    ra, re = _ranks(a), _ranks(direction * e)
    ra, re = ra - ra.mean(), re - re.mean()
    scale = np.sqrt(np.sum(ra**2) * np.sum(re**2))
    rho = float(ra @ re / scale)
    if n <= 8:
        perms = np.array(list(itertools.permutations(range(n))))
        method = f"exact permutation over {perms.shape[0]} orderings"
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)
        method = f"Monte Carlo permutation, {n_perm} orderings"
    null = (re[perms] @ ra) / scale
    tol = 1e-12
    if n <= 8:
        p_inc = float(np.mean(null >= rho - tol))
        p_two = float(np.mean(np.abs(null) >= abs(rho) - tol))
    else:
        p_inc = float((1 + np.sum(null >= rho - tol)) / (n_perm + 1))
        p_two = float((1 + np.sum(np.abs(null) >= abs(rho) - tol)) / (n_perm + 1))
    return Trend(n, rho, p_inc, p_two, method, None)


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
    a, b = _paired_vectors(x, y)
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


# --------------------------------------------------------------------------- verdicts


class VerdictLabel(str, enum.Enum):
    SUPPORTED = "SUPPORTED"
    REFUTED = "REFUTED"
    INCONCLUSIVE = "INCONCLUSIVE"
    INVALID = "INVALID"


@dataclass(frozen=True)
class Verdict:
    """A cell's verdict, the rule that produced it and why."""

    label: VerdictLabel
    rule: str
    reason: str
    p_adjusted: float
    p_adjusted_opposite: float


def verdict_rule(alpha: float, min_n: int) -> str:
    return (
        f"SUPPORTED if the one-sided p-value in the claimed direction, Holm-adjusted within the claim's "
        f"family, is < {alpha}; REFUTED if the one-sided p-value in the opposite direction, adjusted the "
        f"same way, is < {alpha}; INVALID if n < {min_n}, the differences are degenerate (all zero, zero "
        f"variance), a value is NaN, or the attribution-fidelity gate failed; otherwise INCONCLUSIVE"
    )


def decide_verdict(
    test: PairedTest | PooledTest,
    p_adjusted: float,
    p_adjusted_opposite: float,
    *,
    alpha: float = 0.05,
    min_n: int = 10,
    fidelity_ok: bool = True,
) -> Verdict:
    """Apply the pre-registered rule to one cell (pure function of its arguments)."""
    rule = verdict_rule(alpha, min_n)

    def make(label: VerdictLabel, reason: str) -> Verdict:
        return Verdict(label, rule, reason, float(p_adjusted), float(p_adjusted_opposite))

    if not fidelity_ok:
        return make(VerdictLabel.INVALID, "attribution-fidelity gate failed")
    if test.invalid_reason is not None:
        return make(VerdictLabel.INVALID, test.invalid_reason)
    if test.n < min_n:
        return make(VerdictLabel.INVALID, f"n = {test.n} < {min_n}")
    if not (np.isfinite(p_adjusted) and np.isfinite(p_adjusted_opposite)):
        return make(VerdictLabel.INVALID, "a p-value is NaN")
    if p_adjusted < alpha:
        return make(VerdictLabel.SUPPORTED, f"claimed direction p_holm = {p_adjusted:.3g} < {alpha}")
    if p_adjusted_opposite < alpha:
        return make(VerdictLabel.REFUTED, f"opposite direction p_holm = {p_adjusted_opposite:.3g} < {alpha}")
    return make(
        VerdictLabel.INCONCLUSIVE,
        f"p_holm = {p_adjusted:.3g} (claimed), {p_adjusted_opposite:.3g} (opposite), both >= {alpha}",
    )


def family_verdicts(
    tests: Sequence[PairedTest | PooledTest],
    *,
    alpha: float = 0.05,
    min_n: int = 10,
    fidelity_ok: Sequence[bool] | None = None,
) -> list[Verdict]:
    """Holm-adjust one claim's family (each direction separately) and decide every cell."""
    fidelity = [True] * len(tests) if fidelity_ok is None else list(fidelity_ok)
    if len(fidelity) != len(tests):
        raise UserError(f"fidelity_ok has {len(fidelity)} entries for {len(tests)} tests")
    usable = [t.invalid_reason is None and t.n >= min_n and ok for t, ok in zip(tests, fidelity)]
    claimed = holm([t.p_claimed if u else math.nan for t, u in zip(tests, usable)])
    opposite = holm([t.p_opposite if u else math.nan for t, u in zip(tests, usable)])
    return [
        decide_verdict(t, pc, po, alpha=alpha, min_n=min_n, fidelity_ok=ok)
        for t, pc, po, ok in zip(tests, claimed, opposite, fidelity)
    ]
