"""Shares of experiments with a cluster bootstrap: experiments that share models and questions (the
same pair and dataset) are resampled together, so the interval reflects their dependence.

Hand-written: scipy.stats.bootstrap resamples single observations, not clusters of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

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

    hits [E] bool, clusters [E] cluster labels (e.g. "pair/dataset"). Each resample draws as many
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
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_boot, k))
    shares = hits_per[draws].sum(axis=1) / size_per[draws].sum(axis=1)
    tail = (1 - ci_level) / 2
    low, high = np.quantile(shares, [tail, 1 - tail]) if k > 1 else (math.nan, math.nan)
    return ClusteredShare(int(h.sum()), int(h.size), k, float(h.mean()), float(low), float(high), ci_level,
                          f"percentile cluster bootstrap over {k} pair x dataset clusters, {n_boot} resamples")
