"""Family-wise (Holm) and false-discovery (Benjamini-Hochberg) adjustment of p-values."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.errors import UserError

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


