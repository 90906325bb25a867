"""Family-wise (Holm) and false-discovery (Benjamini-Hochberg) adjustment of p-values, through
statsmodels' `multipletests`; NaN entries (cells that cannot be analysed) stay NaN and do not count."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from statsmodels.stats.multitest import multipletests

from harness.errors import UserError


def _adjusted(pvals: Sequence[float], method: str) -> np.ndarray:
    p = np.asarray(pvals, dtype=float)
    if p.ndim != 1:
        raise UserError(f"p-values must be a flat list, got shape {p.shape}")
    valid = np.isfinite(p)
    if np.any((p[valid] < 0) | (p[valid] > 1)):
        raise UserError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    if valid.any():
        out[valid] = multipletests(p[valid], method=method)[1]
    return out


def holm(pvals: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values."""
    return _adjusted(pvals, "holm")


def benjamini_hochberg(pvals: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (FDR)."""
    return _adjusted(pvals, "fdr_bh")
