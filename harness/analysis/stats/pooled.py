"""Pooled metrics (the paper's histogram entropy over all questions): swap-permutation test and a
bootstrap over questions; `cell_test` picks the deciding test of a metric."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.stats import DegenerateDataWarning, bootstrap, permutation_test

from harness.analysis.metrics import (
    MetricConfig,
    MetricSpec,
    RangePolicy,
    as_pair,
    edge_values,
    get_metric,
    per_sample_values,
    pooled_ranges,
    pooled_states,
)
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.paired import PairedTest, paired_test
from harness.analysis.stats.resampling import ties_within_precision

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
    no_change: bool = False   # the pooled difference is a tie (within the precision tolerance)

    @property
    def p_claimed(self) -> float:
        return self.p_permutation

    @property
    def min_p(self) -> float:
        """Smallest one-sided p the swap test can give: 1/(n_perm + 1), or 2^-n if fewer swaps exist."""
        return max(1 / (self.n_perm + 1), 2.0 ** -self.n)

    @property
    def p_opposite(self) -> float:
        return self.p_permutation_opposite


def _combine_chunked(spec: MetricSpec, state: Any, weights: np.ndarray, chunk: int = 256) -> np.ndarray:
    """spec.combine over weight rows in chunks (bounds memory for node-level states)."""
    return np.concatenate([spec.combine(state, weights[i : i + chunk]) for i in range(0, weights.shape[0], chunk)])


def _multiplicities(drawn: np.ndarray, size: int) -> np.ndarray:
    """Weights [R, size]: how often each row of `drawn` [R, k] (indices < size) names each index."""
    drawn = np.atleast_2d(drawn)
    flat = drawn + (np.arange(drawn.shape[0]) * size)[:, None]
    return np.bincount(flat.ravel(), minlength=drawn.shape[0] * size).reshape(drawn.shape[0], size).astype(float)


def _over_rows(rowwise: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """scipy's vectorised statistic(*arrays [..., k], axis) from one of index rows: rowwise(*arrays [R, k]) -> [R]."""
    def statistic(*drawn: np.ndarray, axis: int = -1) -> np.ndarray:
        return rowwise(*(d.reshape(-1, d.shape[-1]) for d in drawn)).reshape(drawn[0].shape[:-1])

    return statistic


def _bootstrap_interval(difference: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int, level: float,
                        rng: np.random.Generator) -> tuple[float, float]:
    """BCa interval of pooled post - base: scipy.stats.bootstrap over the question indices [n];
    `difference(drawn [R, k]) -> [R]` is the pooled difference of each row of drawn questions.
    NaN where the interval is degenerate (every resample on one side of the estimate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        with np.errstate(divide="ignore", invalid="ignore"):
            interval = bootstrap((np.arange(n),), _over_rows(difference), n_resamples=n_boot, confidence_level=level,
                                 method="BCa", vectorized=True, rng=rng).confidence_interval
    low, high = float(interval.low), float(interval.high)
    return (low, high) if np.isfinite(low) and np.isfinite(high) else (math.nan, math.nan)


def _recombined_difference(spec: MetricSpec, state_base: Any, state_post: Any, n: int
                           ) -> Callable[[np.ndarray], np.ndarray]:
    """Pooled post - base of rows of drawn questions, from precomputed per-question states (the bins of
    the full data held fixed)."""
    def difference(drawn: np.ndarray) -> np.ndarray:
        weights = _multiplicities(drawn, n)
        return _combine_chunked(spec, state_post, weights) - _combine_chunked(spec, state_base, weights)

    return difference


class _RangedHistograms:
    """The pooled Information Complexity of any multiset of samples of [base; post] (rows 0..n-1 base),
    its histogram range re-derived from the samples drawn: per model, or over both models (joint).

    Every sample's |cells| are sorted once; a histogram on new edges is then a batch of searchsorted
    calls (bins [e_i, e_i+1), the last one closed). Hand-written: no library histograms a resampled
    multiset of presorted rows without copying them."""

    def __init__(self, base: np.ndarray, post: np.ndarray, mask: np.ndarray, config: MetricConfig) -> None:
        stacked = np.abs(edge_values(np.concatenate([base, post]), mask, config))
        rows, self.m = stacked.shape
        ordered = np.sort(stacked, axis=1)
        self.offset = float(ordered[:, -1].max()) + 1.0
        self.keys = (ordered + self.offset * np.arange(rows)[:, None]).ravel()
        self.row_min, self.row_max = ordered[:, 0], ordered[:, -1]
        self.fractions = np.arange(1, config.bins) / config.bins
        self.eps = config.eps

    def range_of(self, *selected: np.ndarray) -> tuple[float, float]:
        return (min(self.row_min[s].min() for s in selected), max(self.row_max[s].max() for s in selected))

    def entropy(self, selected: np.ndarray, low: float, high: float) -> float:
        edges = low + (high - low) * self.fractions if high > low else np.full(self.fractions.size, np.inf)
        queries = edges[None, :] + self.offset * selected[:, None]
        below = np.searchsorted(self.keys, queries, side="left") - self.m * selected[:, None]
        cumulative = np.concatenate([np.zeros((selected.size, 1)), below, np.full((selected.size, 1), self.m)], axis=1)
        counts = np.diff(cumulative, axis=1).sum(axis=0)
        p = counts / counts.sum()
        return float(-np.sum(np.where(p > 0, p * np.log(p + self.eps), 0.0)))

    def difference(self, as_base: np.ndarray, as_post: np.ndarray, joint: bool) -> np.ndarray:
        """Pooled complexity post - base for each row of row indices as_base, as_post [R, k]."""
        out = np.empty(as_base.shape[0])
        for i, (b, p) in enumerate(zip(as_base, as_post)):
            rb, rp = (self.range_of(b, p),) * 2 if joint else (self.range_of(b), self.range_of(p))
            out[i] = self.entropy(p, *rp) - self.entropy(b, *rb)
        return out


def _swap_statistic(spec: MetricSpec, base: np.ndarray, post: np.ndarray, mask: np.ndarray,
                    config: MetricConfig) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Pooled post - base of rows of indices into the stacked samples [base; post] (rows 0..n-1 are
    base): difference(as_base [R, n], as_post [R, n]) -> [R], for paired swaps. Under the per-model
    range each pattern re-derives each model's range; otherwise the states of the full data recombine
    (a swap leaves the joint range of [base; post] as it is)."""
    if spec.uses_range and config.range_policy is RangePolicy.PER_MODEL:
        histograms = _RangedHistograms(base, post, mask, config)
        return lambda as_base, as_post: histograms.difference(as_base, as_post, joint=False)
    stacked = np.concatenate([base, post])
    value_range = None
    if spec.uses_range:
        a = np.abs(edge_values(stacked, mask, config))
        value_range = pooled_ranges(a, a, config)[0]
    state = spec.state(stacked, mask, config, value_range)
    size = stacked.shape[0]

    def difference(as_base: np.ndarray, as_post: np.ndarray) -> np.ndarray:
        return (_combine_chunked(spec, state, _multiplicities(as_post, size))
                - _combine_chunked(spec, state, _multiplicities(as_base, size)))

    return difference


def _swap_test(spec: MetricSpec, base: np.ndarray, post: np.ndarray, mask: np.ndarray, config: MetricConfig,
               n_perm: int, rng: np.random.Generator) -> tuple[float, float, str]:
    """One-sided swap-permutation p-values (claimed side, opposite side) and the method's description.

    scipy.stats.permutation_test with paired swaps over index arrays (exact when 2^n <= n_perm):
    base sample i and post sample i trade places. p = (#{null >= observed} + adj) / (draws + adj),
    adj = 1 for Monte Carlo draws and 0 for the exact enumeration, as scipy defines it."""
    n = base.shape[0]
    raw = _swap_statistic(spec, base, post, mask, config)
    oriented = _over_rows(lambda as_base, as_post: spec.direction * raw(as_base, as_post))
    result = permutation_test((np.arange(n), np.arange(n, 2 * n)), oriented, permutation_type="samples",
                              n_resamples=n_perm, alternative="greater", vectorized=True, rng=rng)
    null = result.null_distribution
    exact = 2 ** n <= n_perm
    adjustment = 0 if exact else 1
    # the opposite tail from the same draws, with scipy's tolerance and adjustment
    gamma = np.abs(np.finfo(float).eps * 100 * result.statistic)
    p_opposite = (np.sum(null <= result.statistic + gamma) + adjustment) / (null.size + adjustment)
    method = (f"swap permutation within questions, exact over all {2 ** n} swap patterns" if exact
              else f"swap permutation within questions, {n_perm} Monte Carlo draws")
    return float(result.pvalue), float(min(p_opposite, 1.0)), method


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
    tie_rel_tol: float = 0.0,
) -> PooledTest:
    """Pooled metric of base and post W [n, n_src, n_dst], paired by question.

    CI: BCa paired bootstrap over questions (the same resampled questions for both models); a metric
    whose histogram range comes from the data (complexity, joint or per-model range) re-derives the
    range from each resample, since the range is a main source of its variance. p-values: swap permutation test,
    exact under "base and post are exchangeable within each question": swap the two models'
    samples of a random subset of questions, recompute the pooled difference. Under the per_model
    range policy every permutation re-derives each model's range (and so its bin edges).
    Both resamplers are scipy's, run over index arrays; the statistic recombines precomputed
    per-question histogram states, which no library does for us.
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
    if abs(diff) <= tie_rel_tol * max(abs(vb), abs(vp)):
        return PooledTest(metric, n, vb, vp, diff, 0.0, 0.0, ci_level, "not run: a tie", 1.0, 1.0,
                          f"not run: |difference| within {tie_rel_tol:g} relative (a tie)", spec.direction, n_boot,
                          n_perm, seed, config.as_dict(), None, no_change=True)
    rng = np.random.default_rng(seed)
    if spec.uses_range and config.range_policy is not RangePolicy.FIXED:
        # the histogram's range moves with the questions drawn: each resample re-derives it
        histograms = _RangedHistograms(base, post, mask_, config)
        joint = config.range_policy is RangePolicy.JOINT
        difference = lambda drawn: histograms.difference(drawn, drawn + n, joint)  # noqa: E731
        ci_method = f"BCa paired bootstrap over questions, {n_boot} resamples, the histogram range re-derived per resample"
    else:
        difference = _recombined_difference(spec, sb, sp, n)
        ci_method = f"BCa paired bootstrap over questions, {n_boot} resamples"
    low, high = _bootstrap_interval(difference, n, n_boot, ci_level, rng)
    p_claim, p_opp, permutation_method = _swap_test(spec, base, post, mask_, config, n_perm, rng)
    return PooledTest(metric, n, vb, vp, diff, low, high, ci_level, ci_method,
                      p_claim, p_opp, permutation_method, spec.direction, n_boot, n_perm, seed, config.as_dict(), None)


@dataclass(frozen=True)
class MetricTest:
    """One cell's tests of one metric; `decisive` names the one its verdict uses."""

    metric: str
    paired: PairedTest | None
    pooled: PooledTest
    decisive: str

    @property
    def decisive_test(self) -> PairedTest | PooledTest:
        return self.paired if self.decisive == "paired" else self.pooled


def cell_test(metric: str, base_W: Any, post_W: Any, mask: Any, metric_config: MetricConfig,
              stats_config: StatsConfig) -> MetricTest:
    """The full per-cell procedure for one metric on one (pair, dataset, alpha, token mode) cell.

    A metric is decided on the form the paper defines it by (`MetricSpec.decided_by`): per question
    by the paired sign-flip test of the mean change (Wilcoxon as a secondary), or pooled (Information Complexity, Eq. 15; inter-sample diversity) by the
    swap-permutation test, with the per-question test kept as a named secondary where questions are
    independent (diversity has none: each sample's value uses all the others). Per-question values
    within `stats_config.tie_rel_tol` of each other are ties. The paired test's p-values are of the
    shifted nulls "beyond +-the metric's margin (StatsConfig.sesoi_for) x |mean base|"; the pooled swap test's are of "no change" (its
    exchangeability null cannot be shifted), with the margin checked on its interval.
    """
    spec = get_metric(metric)
    seed = stats_config.seed
    pooled = pooled_test(base_W, post_W, mask, metric, metric_config, n_boot=stats_config.n_boot,
                         n_perm=stats_config.n_perm_pooled, seed=seed, ci_level=stats_config.ci_level,
                         tie_rel_tol=stats_config.tie_rel_tol)
    if not spec.independent_per_sample:
        return MetricTest(metric, None, pooled, "pooled")
    values = per_sample_values(metric, base_W, post_W, mask, metric_config)
    post, _ = ties_within_precision(values.base, values.post, stats_config.tie_rel_tol)
    # the metric's smallest effect of interest x |mean base|, tested as a shifted null (inside Holm)
    paired = paired_test(values.base, post, spec.direction, n_boot=stats_config.n_boot,
                         n_perm=stats_config.n_perm, seed=seed, zero_method=stats_config.zero_method,
                         ci_level=stats_config.ci_level, margin=stats_config.sesoi_for(metric) * abs(float(values.base.mean())))
    return MetricTest(metric, paired, pooled, spec.decided_by)


