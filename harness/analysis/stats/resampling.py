"""Input checks and resampling primitives for the pooled metrics: multiplicity-weight bootstrap,
jackknife, BCa interval. Unit = one question; `direction` is +1 (claimed rise) or -1 (fall).

Per-question statistics use scipy.stats.bootstrap / permutation_test instead (stats.paired); these
primitives stay hand-written because a pooled metric is combined from precomputed per-question
states with weights, which scipy's resamplers (that call the statistic on resampled raw data) cannot do."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from harness.errors import UserError

# --------------------------------------------------------------------------- input checks


def as_vector(x: Any, name: str) -> np.ndarray:
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


def paired_vectors(base: Any, post: Any) -> tuple[np.ndarray, np.ndarray]:
    b, p = as_vector(base, "base values"), as_vector(post, "post-trained values")
    if b.shape != p.shape:
        raise UserError(
            f"base ({b.size}) and post-trained ({p.size}) values differ in length; they must be paired "
            "by question (same ids, same order)"
        )
    return b, p


def check_direction(direction: int) -> int:
    if direction not in (1, -1):
        raise UserError(f"direction must be +1 (claimed rise) or -1 (claimed fall), got {direction!r}")
    return int(direction)


def alternative(direction: int) -> str:
    return "greater" if direction > 0 else "less"


def ties_within_precision(base: np.ndarray, post: np.ndarray, rel_tol: float) -> tuple[np.ndarray, int]:
    """`post` with every value within rel_tol * max(|base|, |post|) of its base set to the base value
    (a tie: a difference that small is rounding, not an effect), and the number of such ties."""
    tied = np.abs(post - base) <= rel_tol * np.maximum(np.abs(base), np.abs(post))
    return np.where(tied, base, post), int(np.sum(tied & (post != base)))


# --------------------------------------------------------------------------- resampling primitives


def bootstrap_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """Multiplicities [n_boot, n] of n questions drawn with replacement (each row sums to n)."""
    # hand-written: scipy.stats.bootstrap cannot resample the histogram states without recomputing them per resample
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = idx + (np.arange(n_boot) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def jackknife_weights(n: int) -> np.ndarray:
    """Weights [n, n] leaving out one question per row."""
    return 1.0 - np.eye(n)


def bca_interval(theta: float, boot: np.ndarray, jack: np.ndarray, level: float) -> tuple[float, float]:
    """BCa interval from bootstrap replicates [B] and leave-one-out replicates [n]; NaN if degenerate."""
    # hand-written: scipy's BCa recomputes the statistic on resampled data; here the replicates come from weights
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


