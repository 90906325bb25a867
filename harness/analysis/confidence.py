"""The clean loss beside the scores: how much of a change in edge intensity is a change in confidence.

EAP scores are linear in dL/dlogits, so |W| of a question shrinks as the model grows sure of its
targets. Per question, Δlog intensity = log mean|W_post| - log mean|W_base| (over the graph's cells)
is set against Δloss = clean loss post - base (mean NLL of the targets, nats). A strong positive rank
correlation says "intensity rose" is largely "confidence fell".
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import DegenerateDataWarning, bootstrap, spearmanr

MIN_QUESTIONS = 5


def log_intensity(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[n] log of mean |W| over the graph's real edges, per question (scores [n, n_src, n_dst])."""
    return np.log(np.abs(scores[:, mask]).astype(np.float64).mean(axis=1))


def loss_link(base_scores: np.ndarray, post_scores: np.ndarray, mask: np.ndarray, base_loss: np.ndarray,
              post_loss: np.ndarray, *, n_boot: int, seed: int, ci_level: float) -> dict:
    """Each model's mean clean loss, its change, and the Spearman correlation over questions of Δlog
    intensity with Δloss, with a percentile bootstrap interval over questions (pairs resampled)."""
    base_loss, post_loss = np.asarray(base_loss, float), np.asarray(post_loss, float)
    d_int = log_intensity(post_scores, mask) - log_intensity(base_scores, mask)
    d_loss = post_loss - base_loss
    out = {"base": float(base_loss.mean()), "post": float(post_loss.mean()), "change": float(d_loss.mean()),
           "units": "mean NLL of the targets, nats",
           "link": "Spearman over questions of dlog intensity (post - base) with dloss (post - base)"}
    usable = np.isfinite(d_int) & np.isfinite(d_loss)
    if usable.sum() < MIN_QUESTIONS or np.ptp(d_int[usable]) == 0 or np.ptp(d_loss[usable]) == 0:
        return {**out, "spearman": None, "ci": [None, None],
                "note": f"fewer than {MIN_QUESTIONS} questions, or no variation to correlate"}
    x, y = d_int[usable], d_loss[usable]

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        return spearmanr(a, b).statistic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)   # a resample with constant values has no rank correlation
        res = bootstrap((x, y), rho, paired=True, vectorized=False, n_resamples=n_boot, method="percentile",
                        confidence_level=ci_level, rng=np.random.default_rng(seed))
    low, high = res.confidence_interval
    finite = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731
    return {**out, "spearman": float(spearmanr(x, y).statistic), "ci": [finite(low), finite(high)],
            "n": int(usable.sum())}
