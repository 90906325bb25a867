"""Shares of experiments with a cluster bootstrap: experiments that share models and questions (one
cluster label each, chosen by the caller: C6 uses base model x dataset) are resampled together, so the interval reflects their dependence. The
resampling is scipy.stats.bootstrap's, over the array of cluster indices."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import bootstrap
from statsmodels.stats.proportion import proportion_confint

from harness.errors import UserError


@dataclass(frozen=True)
class ClusteredShare:
    """share = hits / experiments; [ci_low, ci_high] percentile interval over cluster resamples."""

    hits: int
    n: int
    n_clusters: int
    share: float
    ci_low: float
    ci_high: float
    ci_level: float
    ci_method: str


def clustered_share(hits: Sequence[bool], clusters: Sequence[str], *, n_boot: int = 2000, seed: int = 0,
                    ci_level: float = 0.95) -> ClusteredShare:
    """Share of experiments with a hit, and its interval from resampling whole clusters with replacement.

    hits [E] bool, clusters [E] cluster labels (e.g. "base model/dataset"). Each resample draws as many
    clusters as there are, with replacement, and takes hits / experiments over the drawn clusters.
    """
    h = np.asarray(hits, dtype=bool)
    if h.ndim != 1 or h.size != len(clusters) or h.size == 0:
        raise UserError(f"need one cluster label per experiment and at least one experiment, got {h.size} "
                        f"outcomes and {len(clusters)} labels")
    labels = sorted(set(clusters))
    index = np.array([labels.index(c) for c in clusters])
    k = len(labels)
    hits_per = np.bincount(index, weights=h.astype(float), minlength=k)
    size_per = np.bincount(index, minlength=k).astype(float)
    low = high = math.nan
    if k > 1:
        def share_of(drawn: np.ndarray, axis: int = -1) -> np.ndarray:   # drawn: cluster indices [..., k]
            return hits_per[drawn].sum(axis=axis) / size_per[drawn].sum(axis=axis)

        interval = bootstrap((np.arange(k),), share_of, n_resamples=n_boot, confidence_level=ci_level,
                             method="percentile", vectorized=True, rng=np.random.default_rng(seed)).confidence_interval
        low, high = interval.low, interval.high
    return ClusteredShare(int(h.sum()), int(h.size), k, float(h.mean()), float(low), float(high), ci_level,
                          f"percentile cluster bootstrap over {k} clusters, {n_boot} resamples")


def clustered_share_exact(hits: Sequence[bool], clusters: Sequence[str], *, n_boot: int = 2000, seed: int = 0,
                          ci_level: float = 0.95) -> ClusteredShare:
    """clustered_share with the wider of its interval and the exact (Clopper-Pearson) binomial interval
    over the k clusters (hits counted as share x k): a cluster bootstrap over few clusters is too narrow,
    and degenerate when every experiment is a hit."""
    boot = clustered_share(hits, clusters, n_boot=n_boot, seed=seed, ci_level=ci_level)
    if not np.isfinite(boot.ci_low):
        return boot
    k = boot.n_clusters
    low, high = proportion_confint(boot.share * k, k, alpha=1 - ci_level, method="beta")
    return ClusteredShare(boot.hits, boot.n, k, boot.share, min(boot.ci_low, float(low)), max(boot.ci_high, float(high)),
                          boot.ci_level, f"{boot.ci_method}, widened to the exact binomial interval over {k} clusters")
