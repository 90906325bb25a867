"""The rule of attention-example.toml's claim X1: per question, the mean |W| over the real edges into
attention inputs (q, k, v destinations), post against base, one-sided sign-flip test; the family judge
corrects and decides as it does for every claim."""

from __future__ import annotations

import numpy as np

from harness.analysis.stats.paired import paired_test
from harness.audit.claims.common import finite, funnel_of, relative_margin
from harness.audit.claims.family import Outcome
from harness.audit.verdicts import verdict_rule
from harness.data.selection import SelectionError


def attention_intensity(w: np.ndarray, mask: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """[n] mean |W| over the real edges whose destination is an attention input."""
    keep = mask & attention[None, :]
    return np.abs(w)[:, keep].mean(axis=1)


def rule(claim, records, grid, context):
    stats = records.config.stats
    text = (f"{verdict_rule(stats.significance, stats.min_n, 'interval of the mean difference')}. Tested effect: mean over "
            "questions of post - base mean |W| on the edges into q, k and v; sign-flip permutation p")
    out = []
    for g in grid:
        cell = records.cell(g.pair, g.dataset, g.alpha, g.token_mode)
        if isinstance(cell, SelectionError):
            out.append(Outcome(g, text, skipped="selection left no sample", fields={"funnel": funnel_of(cell)}))
            continue
        mask = cell.base.mask.numpy()
        attention = np.array([d.kind == "attn" for d in cell.base.graph.destinations])
        base = attention_intensity(cell.base.scores.numpy(), mask, attention)
        post = attention_intensity(cell.post.scores.numpy(), mask, attention)
        test = paired_test(base, post, +1, n_boot=stats.n_boot, n_perm=stats.n_perm, seed=stats.seed,
                           zero_method=stats.zero_method, ci_level=stats.ci_level)
        margin = relative_margin(test.mean_diff, test.ci_low, test.ci_high, test.mean_base, +1, stats)
        out.append(Outcome(g, text, test, margin, fields={
            "metric": "attention_intensity", "base_value": finite(test.mean_base), "post_value": finite(test.mean_post),
            "effect": finite(test.mean_diff), "ci_low": finite(test.ci_low), "ci_high": finite(test.ci_high),
            "ci_method": test.ci_method, "funnel": cell.funnel, "provenance": cell.provenance}))
    return out
