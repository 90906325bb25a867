"""Input checks and ties for the paired statistics. Unit = one question; `direction` is +1 (claimed
rise) or -1 (fall). Every resampler is scipy's (stats.paired, stats.pooled and stats.magnitudes call
scipy.stats.bootstrap / permutation_test, the last two over index arrays)."""

from __future__ import annotations

from typing import Any

import numpy as np

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
