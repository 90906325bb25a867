"""Edge-score metrics of the audited paper, per sample and pooled, with explicit parameters.

Input: `W` of shape `[n_samples, n_src, n_dst]` (numpy array or torch tensor, any float dtype;
computed in float64) and a boolean `mask` `[n_src, n_dst]` of real edges. Cells outside the mask
are structural zeros: they are treated as 0 when `MetricConfig.include_structural_zeros` is True
and dropped when it is False. Entropies are in nats.

Every metric has a per-sample form (one value per question, so base and post-trained values pair
by question) and the paper's pooled form. The pooled form is computed from per-sample
"sufficient statistics" combined with question weights: weights of ones give the pooled value,
bootstrap multiplicities give a bootstrap replicate of the very same estimator.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
from scipy import stats

from harness.errors import UserError


class RangePolicy(str, enum.Enum):
    """Which |W| range the histogram bins of Information Complexity span.

    JOINT: min..max over the values of BOTH models being compared (pooled form: all samples of
      base and post; per-sample form: question k of base and of post). Base and post share bin
      edges, so a bin means the same |W| interval for both; a pure rescaling of W changes the
      entropy (intensity and spread are not separated).
    PER_MODEL: min..max over each model's own values (pooled: all its samples; per-sample: its
      sample k). Scale-free: only the shape of the |W| distribution counts, but each model's bins
      are set by its own extreme value.
    FIXED: `MetricConfig.fixed_range`; values outside it are an error.
    """

    JOINT = "joint"
    PER_MODEL = "per_model"
    FIXED = "fixed"


@dataclass(frozen=True)
class MetricConfig:
    """Parameters of every metric; `as_dict()` goes into provenance."""

    include_structural_zeros: bool = True
    bins: int = 100
    eps: float = 1e-12
    range_policy: RangePolicy = RangePolicy.PER_MODEL
    fixed_range: tuple[float, float] | None = None
    bins_band: tuple[int, ...] = (10, 20, 50, 100, 200, 500, 1000)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "range_policy", RangePolicy(self.range_policy))
        except ValueError:
            choices = ", ".join(p.value for p in RangePolicy)
            raise UserError(f"range_policy must be one of {choices}, got {self.range_policy!r}") from None
        if int(self.bins) != self.bins or self.bins < 1:
            raise UserError(f"MetricConfig.bins must be a positive integer, got {self.bins!r}")
        if any(int(b) != b or b < 1 for b in self.bins_band) or not self.bins_band:
            raise UserError(f"MetricConfig.bins_band must list positive integers, got {self.bins_band!r}")
        if not (self.eps >= 0 and np.isfinite(self.eps)):
            raise UserError(f"MetricConfig.eps must be a finite number >= 0, got {self.eps!r}")
        if self.range_policy is RangePolicy.FIXED:
            if self.fixed_range is None or len(self.fixed_range) != 2 or not self.fixed_range[0] < self.fixed_range[1]:
                raise UserError(
                    "range_policy 'fixed' needs fixed_range=(low, high) with low < high, "
                    f"got {self.fixed_range!r}"
                )
        elif self.fixed_range is not None:
            raise UserError("fixed_range is only used with range_policy 'fixed'; drop it or set the policy")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["range_policy"] = self.range_policy.value
        return out


# --------------------------------------------------------------------------- input checks


def as_scores(W: Any, mask: Any, name: str = "W") -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert `W` [n, n_src, n_dst] and `mask` [n_src, n_dst] to float64 / bool numpy."""
    if hasattr(W, "detach"):
        W = W.detach().cpu().float().numpy()
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    W = np.asarray(W)
    mask = np.asarray(mask)
    if W.ndim != 3:
        raise UserError(f"{name} must have shape [n_samples, n_src, n_dst], got shape {W.shape}")
    if not np.issubdtype(W.dtype, np.floating):
        raise UserError(f"{name} must hold floating-point edge scores, got dtype {W.dtype}")
    if mask.dtype != bool:
        raise UserError(f"mask must be boolean (True = real edge), got dtype {mask.dtype}")
    if mask.shape != W.shape[1:]:
        raise UserError(f"mask shape {mask.shape} does not match {name} edge shape {W.shape[1:]}")
    if not mask.any():
        raise UserError("mask marks no real edge; pass the real-edge mask of the graph")
    if W.shape[0] < 1:
        raise UserError(f"{name} has no samples")
    W = W.astype(np.float64)
    bad = ~np.isfinite(W) & mask
    if bad.any():
        samples = np.unique(np.nonzero(bad)[0])[:10].tolist()
        raise UserError(f"{name} has NaN/inf edge scores in samples {samples}; recompute or drop those samples")
    return np.where(mask, W, 0.0), mask


def as_pair(base_W: Any, post_W: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a base / post-trained pair: same shape, paired by sample index."""
    base, mask_ = as_scores(base_W, mask, "base W")
    post, _ = as_scores(post_W, mask, "post-trained W")
    if base.shape != post.shape:
        raise UserError(
            f"base W {base.shape} and post-trained W {post.shape} differ in shape; both must hold the "
            "same questions in the same order over the same graph"
        )
    return base, post, mask_


def edge_values(W: np.ndarray, mask: np.ndarray, config: MetricConfig) -> np.ndarray:
    """Per-sample flattened cells [n, m]: all n_src*n_dst cells, or the real edges only."""
    if config.include_structural_zeros:
        return W.reshape(W.shape[0], -1)
    return W[:, mask]


# --------------------------------------------------------------------------- histograms


def _entropy(p: np.ndarray, eps: float, axis: int = -1) -> np.ndarray:
    """-sum p log(p + eps) along `axis`; empty cells contribute 0."""
    # hand-written: scipy.stats.entropy has no eps inside the log, and the paper's formula does
    return -np.sum(np.where(p > 0, p * np.log(p + eps), 0.0), axis=axis)


def _histogram_counts(x: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int) -> np.ndarray:
    """Counts [n, bins] of rows of `x` [n, m] on uniform bins over [low_k, high_k] (right edge in).

    A row with high <= low puts all its mass in the first bin.
    """
    # hand-written: np.histogram takes one range per call; this bins every row on its own range at once
    n, m = x.shape
    low = np.broadcast_to(np.asarray(low, float), (n,))[:, None]
    high = np.broadcast_to(np.asarray(high, float), (n,))[:, None]
    width = np.where(high > low, high - low, 1.0)
    idx = np.floor((x - low) / width * bins).astype(np.int64)
    idx = np.clip(idx, 0, bins - 1)
    flat = idx + np.arange(n)[:, None] * bins
    return np.bincount(flat.ravel(), minlength=n * bins).reshape(n, bins).astype(float)


def _check_inside(values: np.ndarray, config: MetricConfig) -> None:
    low, high = config.fixed_range
    if values.size and (values.min() < low or values.max() > high):
        raise UserError(
            f"|W| spans [{values.min():.3g}, {values.max():.3g}], outside fixed_range {config.fixed_range}; "
            "widen fixed_range or use range_policy 'joint'"
        )


def pooled_ranges(
    abs_base: np.ndarray, abs_post: np.ndarray, config: MetricConfig
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(low, high) of the pooled histogram for base and for post, from |cells| [n, m] of each."""
    if config.range_policy is RangePolicy.FIXED:
        _check_inside(abs_base, config)
        _check_inside(abs_post, config)
        return config.fixed_range, config.fixed_range
    if config.range_policy is RangePolicy.JOINT:
        both = (float(min(abs_base.min(), abs_post.min())), float(max(abs_base.max(), abs_post.max())))
        return both, both
    return (float(abs_base.min()), float(abs_base.max())), (float(abs_post.min()), float(abs_post.max()))


def per_sample_ranges(
    abs_base: np.ndarray, abs_post: np.ndarray, config: MetricConfig
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Per-question (low[n], high[n]) for base and for post, from |cells| [n, m] of each."""
    if config.range_policy is RangePolicy.FIXED:
        pooled = pooled_ranges(abs_base, abs_post, config)[0]
        return pooled, pooled
    lb, hb = abs_base.min(axis=1), abs_base.max(axis=1)
    lp, hp = abs_post.min(axis=1), abs_post.max(axis=1)
    if config.range_policy is RangePolicy.JOINT:
        both = (np.minimum(lb, lp), np.maximum(hb, hp))
        return both, both
    return (lb, hb), (lp, hp)


# --------------------------------------------------------------------------- per-sample forms


def intensity_per_sample(W: np.ndarray, mask: np.ndarray, config: MetricConfig) -> np.ndarray:
    """Activation Intensity of each sample: mean |W| over its cells. [n], units of W."""
    return np.abs(edge_values(W, mask, config)).mean(axis=1)


def kurtosis_per_sample(W: np.ndarray, mask: np.ndarray, config: MetricConfig) -> np.ndarray:
    """Fisher excess kurtosis (population moments) of each sample's signed cells. [n]; NaN if constant."""
    x = edge_values(W, mask, config)
    with warnings.catch_warnings():
        # a constant sample warns of catastrophic cancellation; scipy returns NaN for it, as documented
        warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation", RuntimeWarning)
        return stats.kurtosis(x, axis=1, fisher=True, bias=True)


def correlation_matrix(W: np.ndarray, mask: np.ndarray, config: MetricConfig) -> np.ndarray:
    """Pearson correlation [n, n] between samples' flattened signed cells; NaN rows for constant samples."""
    x = edge_values(W, mask, config)
    dev = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.sum(dev**2, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = dev / np.where(norm > 0, norm, np.nan)[:, None]
    return np.clip(z @ z.T, -1.0, 1.0)


def diversity_per_sample(W: np.ndarray, mask: np.ndarray, config: MetricConfig) -> np.ndarray:
    """Inter-sample diversity of each sample: 1 - mean correlation with the other samples. [n]."""
    n = W.shape[0]
    if n < 2:
        raise UserError("inter-sample diversity needs at least 2 samples")
    corr = correlation_matrix(W, mask, config)
    return 1.0 - (corr.sum(axis=1) - np.diag(corr)) / (n - 1)


def node_entropy_by_node(W: np.ndarray, mask: np.ndarray, config: MetricConfig) -> np.ndarray:
    """Entropy of each source node's |W| row normalised to sum 1. [n, n_src]; NaN where a row is all 0.

    Zero cells add nothing (0 log 0 = 0), so the structural-zero switch leaves this metric unchanged.
    """
    return _row_entropy(np.abs(W), config.eps)


def _row_entropy(mass: np.ndarray, eps: float) -> np.ndarray:
    total = mass.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = mass / np.where(total > 0, total, np.nan)
    h = _entropy(np.nan_to_num(p), eps)
    return np.where(total[..., 0] > 0, h, np.nan)


def node_entropy_per_sample(W: np.ndarray, mask: np.ndarray, config: MetricConfig) -> np.ndarray:
    """Per-node output-edge entropy averaged over source nodes with mass, per sample. [n] nats."""
    return _nanmean_rows(node_entropy_by_node(W, mask, config))


def _nanmean_rows(h: np.ndarray) -> np.ndarray:
    valid = np.isfinite(h)
    count = valid.sum(axis=-1)
    total = np.where(valid, h, 0.0).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mass_entropy_per_sample(W: np.ndarray, mask: np.ndarray, config: MetricConfig) -> np.ndarray:
    """Binning-free companion of Information Complexity: entropy of |W| / sum |W| per sample. [n] nats."""
    mass = np.abs(edge_values(W, mask, config))
    return _row_entropy(mass, config.eps)


def complexity_per_sample_pair(
    base: np.ndarray, post: np.ndarray, mask: np.ndarray, config: MetricConfig, bins: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram entropy of each sample's |cells| for base and post ([n] each), ranges per policy."""
    bins = config.bins if bins is None else bins
    ab, ap = np.abs(edge_values(base, mask, config)), np.abs(edge_values(post, mask, config))
    (lb, hb), (lp, hp) = per_sample_ranges(ab, ap, config)
    m = ab.shape[1]
    hist_b = _histogram_counts(ab, lb, hb, bins) / m
    hist_p = _histogram_counts(ap, lp, hp, bins) / m
    return _entropy(hist_b, config.eps), _entropy(hist_p, config.eps)


# --------------------------------------------------------------------------- pooled forms via weights
#
# A "state" holds per-sample sufficient statistics of one model; `combine(state, weights)` maps
# question weights [r, n] to r pooled values. weights = ones -> the paper's pooled value.


def _intensity_state(W, mask, config, value_range):
    a = np.abs(edge_values(W, mask, config))
    return np.stack([a.sum(axis=1), np.full(a.shape[0], float(a.shape[1]))], axis=1)


def _intensity_combine(state, weights):
    s = weights @ state
    return s[:, 0] / s[:, 1]


def _complexity_state(W, mask, config, value_range, bins=None):
    a = np.abs(edge_values(W, mask, config))
    counts = _histogram_counts(a, value_range[0], value_range[1], config.bins if bins is None else bins)
    return {"counts": counts, "eps": config.eps}


def _complexity_combine(state, weights):
    pooled = weights @ state["counts"]
    return _entropy(pooled / pooled.sum(axis=1, keepdims=True), state["eps"])


def _mean_state(per_sample: Callable) -> Callable:
    def state(W, mask, config, value_range):
        return per_sample(W, mask, config)

    return state


def _mean_combine(state, weights):
    return (weights @ state) / weights.sum(axis=1)


def _diversity_state(W, mask, config, value_range):
    if W.shape[0] < 2:
        raise UserError("inter-sample diversity needs at least 2 samples")
    return correlation_matrix(W, mask, config)


def _diversity_combine(corr, weights):
    """1 - mean correlation over pairs of distinct questions, questions weighted by multiplicity."""
    quad = np.sum((weights @ corr) * weights, axis=1) - (weights**2) @ np.diag(corr)
    pairs = weights.sum(axis=1) ** 2 - np.sum(weights**2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - quad / np.where(pairs > 0, pairs, np.nan)


def _node_entropy_state(W, mask, config, value_range):
    mass = np.abs(W)
    return {"mass": mass.reshape(mass.shape[0], -1), "shape": mass.shape[1:], "eps": config.eps}


def _node_entropy_combine(state, weights):
    pooled = (weights @ state["mass"]).reshape(weights.shape[0], *state["shape"])
    return _nanmean_rows(_row_entropy(pooled, state["eps"]))


def _mass_entropy_state(W, mask, config, value_range):
    a = np.abs(edge_values(W, mask, config))
    with np.errstate(divide="ignore"):
        alog = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)
    return np.stack([a.sum(axis=1), alog.sum(axis=1)], axis=1)


def _mass_entropy_combine(state, weights):
    s = weights @ state
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s[:, 0] > 0, np.log(s[:, 0]) - s[:, 1] / s[:, 0], np.nan)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its claimed direction under online RL (+1 rise, -1 fall) and its two forms.

    independent_per_sample is False where a sample's value depends on the other samples
    (diversity): its per-question differences are then not independent, and a paired test on them
    is anti-conservative. decided_by: the form a claim on this metric is decided on, "paired" (per
    question) or "pooled" (the paper's statistic where the paper defines it pooled: Eq. 15).
    """

    name: str
    label: str
    direction: int
    uses_range: bool
    description: str
    state: Callable[..., Any]
    combine: Callable[[Any, np.ndarray], np.ndarray]
    per_sample: Callable[[np.ndarray, np.ndarray, MetricConfig], np.ndarray] | None
    independent_per_sample: bool = True
    decided_by: str = "paired"


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in [
        MetricSpec("intensity", "Activation Intensity", +1, False,
                   "mean |W| over the cells (Eq. 14)", _intensity_state, _intensity_combine,
                   intensity_per_sample),
        MetricSpec("complexity", "Information Complexity", +1, True,
                   "-sum p_b log(p_b + eps) of one B-bin histogram of |W| (Eq. 15)",
                   _complexity_state, _complexity_combine, None, decided_by="pooled"),
        MetricSpec("kurtosis", "Distribution Kurtosis", -1, False,
                   "Fisher excess kurtosis of signed W per sample, averaged (Eq. 16)",
                   _mean_state(kurtosis_per_sample), _mean_combine, kurtosis_per_sample),
        MetricSpec("diversity", "Inter-sample diversity", +1, False,
                   "1 - mean pairwise Pearson correlation of per-sample W (Fig. 3a)",
                   _diversity_state, _diversity_combine, diversity_per_sample,
                   independent_per_sample=False, decided_by="pooled"),
        MetricSpec("node_entropy", "Per-node output-edge entropy", +1, False,
                   "entropy of each source node's |W| row normalised to 1, mean over nodes (Fig. 3b)",
                   _node_entropy_state, _node_entropy_combine, node_entropy_per_sample),
        MetricSpec("mass_entropy", "|W| mass entropy (binning-free)", +1, False,
                   "entropy of |W| / sum |W| over the cells; companion of Information Complexity",
                   _mass_entropy_state, _mass_entropy_combine, mass_entropy_per_sample),
    ]
}


def get_metric(name: str) -> MetricSpec:
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
    return METRICS[name]


@dataclass(frozen=True)
class PairedValues:
    """Metric values of base and post-trained models: per-sample arrays [n] or pooled scalars."""

    metric: str
    form: str
    base: np.ndarray
    post: np.ndarray
    config: dict[str, Any]


def per_sample_values(name: str, base_W: Any, post_W: Any, mask: Any, config: MetricConfig) -> PairedValues:
    """Per-question values of metric `name` for base and post-trained W (paired by sample index)."""
    spec = get_metric(name)
    base, post, mask_ = as_pair(base_W, post_W, mask)
    if spec.name == "complexity":
        vb, vp = complexity_per_sample_pair(base, post, mask_, config)
    else:
        vb, vp = spec.per_sample(base, mask_, config), spec.per_sample(post, mask_, config)
    return PairedValues(name, "per_sample", vb, vp, config.as_dict())


def pooled_states(spec: MetricSpec, base: np.ndarray, post: np.ndarray, mask: np.ndarray,
                  config: MetricConfig, bins: int | None = None) -> tuple[Any, Any]:
    """Sufficient-statistic states of base and post for the pooled form (validated arrays)."""
    if not spec.uses_range:
        return spec.state(base, mask, config, None), spec.state(post, mask, config, None)
    ab, ap = np.abs(edge_values(base, mask, config)), np.abs(edge_values(post, mask, config))
    rb, rp = pooled_ranges(ab, ap, config)
    return (spec.state(base, mask, config, rb, bins=bins), spec.state(post, mask, config, rp, bins=bins))


def pooled_values(name: str, base_W: Any, post_W: Any, mask: Any, config: MetricConfig) -> PairedValues:
    """The paper's pooled value of metric `name` for base and post-trained W (scalars)."""
    spec = get_metric(name)
    base, post, mask_ = as_pair(base_W, post_W, mask)
    sb, sp = pooled_states(spec, base, post, mask_, config)
    ones = np.ones((1, base.shape[0]))
    return PairedValues(name, "pooled", spec.combine(sb, ones)[0], spec.combine(sp, ones)[0], config.as_dict())


@dataclass(frozen=True)
class ComplexityBand:
    """Information Complexity over a grid of bin counts B: pooled and per-sample-mean changes."""

    bins: tuple[int, ...]
    pooled_base: tuple[float, ...]
    pooled_post: tuple[float, ...]
    pooled_diff: tuple[float, ...]
    per_sample_mean_diff: tuple[float, ...]
    diff_min: float
    diff_max: float
    sign_consistent: bool
    config: dict[str, Any]


def complexity_band(base_W: Any, post_W: Any, mask: Any, config: MetricConfig) -> ComplexityBand:
    """Information Complexity at every B of `config.bins_band` (post - base), as a sensitivity band."""
    spec = get_metric("complexity")
    base, post, mask_ = as_pair(base_W, post_W, mask)
    ones = np.ones((1, base.shape[0]))
    pb, pp, ps = [], [], []
    for b in config.bins_band:
        sb, sp = pooled_states(spec, base, post, mask_, config, bins=b)
        pb.append(float(spec.combine(sb, ones)[0]))
        pp.append(float(spec.combine(sp, ones)[0]))
        vb, vp = complexity_per_sample_pair(base, post, mask_, config, bins=b)
        ps.append(float(np.mean(vp - vb)))
    diff = np.subtract(pp, pb)
    return ComplexityBand(
        bins=tuple(int(b) for b in config.bins_band),
        pooled_base=tuple(pb),
        pooled_post=tuple(pp),
        pooled_diff=tuple(float(d) for d in diff),
        per_sample_mean_diff=tuple(ps),
        diff_min=float(diff.min()),
        diff_max=float(diff.max()),
        sign_consistent=bool(np.all(diff > 0) or np.all(diff < 0)),
        config=config.as_dict(),
    )
