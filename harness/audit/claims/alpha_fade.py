"""C5: counter-examples fade as alpha grows: each cell's oriented effect trends up over the grid's
alpha levels (exact permutation Spearman trend); Holm runs over C5's family."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.analysis.metrics import METRICS
from harness.analysis.stats.comparisons import Trend, alpha_trend
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.claims.common import (
    METRIC_CONFIG,
    STATS,
    FamilyContext,
    FamilyTest,
    Gate,
    GridCell,
    bh_adjusted,
    cell_id,
    family_extra,
    fidelity_extra,
    finite,
    gate,
    metric_diffs,
    try_cell,
)
from harness.audit.stages import AuditPipeline, CellData
from harness.audit.verdicts import CellResult, Verdict, family_verdicts
from harness.data.selection import SelectionError

MIN_ALPHAS = 3


@dataclass(frozen=True)
class FadeRow:
    """One C5 cell: the usable alpha levels, the standardised effect at each, and the trend test."""

    grid: GridCell
    test: FamilyTest
    trend: Trend | None
    levels: tuple[float, ...]
    effects: tuple[float, ...]   # mean / sd (ddof 1) of post - base at each level
    cells: tuple[CellData, ...]
    gate: Gate = Gate()


def rule_text() -> str:
    return (f"SUPPORTED if the effect in the claimed direction (Hedges d_z of post - base, oriented) "
            f"grows with alpha: exact permutation p of Spearman rho (Holm within C5) < {STATS.alpha}; "
            f"REFUTED if it shrinks with Holm p < {STATS.alpha}; INVALID with fewer than {MIN_ALPHAS} usable "
            "alpha levels or a failed fidelity gate; otherwise INCONCLUSIVE")


def _row(audit: AuditPipeline, g: GridCell, alphas: tuple[float, ...]) -> FadeRow:
    direction = METRICS[g.metric].direction
    levels, effects, cells = [], [], []
    for a in sorted(alphas):
        cell = try_cell(audit, g.pair, g.dataset, a, g.token_mode)
        if isinstance(cell, SelectionError):
            continue
        d = metric_diffs(cell, g.metric)
        if d.size >= 3 and d.std() > 0:
            levels.append(a)
            effects.append(float(d.mean() / d.std(ddof=1)))
            cells.append(cell)
    if len(levels) < MIN_ALPHAS:
        test = FamilyTest(len(levels), math.nan, math.nan,
                          f"{len(levels)} usable alpha levels (< {MIN_ALPHAS}) in {sorted(alphas)}")
        return FadeRow(g, test, None, tuple(levels), tuple(effects), tuple(cells))
    trend = alpha_trend(levels, effects, direction, seed=STATS.seed)
    back = alpha_trend(levels, effects, -direction, seed=STATS.seed)
    test = FamilyTest(len(levels), trend.p_increasing, back.p_increasing, trend.invalid_reason)
    return FadeRow(g, test, trend, tuple(levels), tuple(effects), tuple(cells), gate(audit, cells))


def judge(audit: AuditPipeline, claim_id: str, grid: list[GridCell], context: FamilyContext
          ) -> dict[GridCell, CellResult]:
    claim = CLAIMS_BY_ID[claim_id]
    rule = rule_text()
    rows = [_row(audit, g, context.alphas) for g in grid]
    tests = [r.test for r in rows]
    decisions = family_verdicts(tests, alpha=STATS.alpha, min_n=MIN_ALPHAS, fidelity_ok=[r.gate.ok for r in rows])
    bh = bh_adjusted(tests, decisions)
    out = {}
    for row, decision, p_bh in zip(rows, decisions, bh):
        g, test, trend = row.grid, row.test, row.trend
        direction = METRICS[g.metric].direction
        counter = [a for a, e in zip(row.levels, row.effects) if direction * e < 0]
        reason = (test.invalid_reason if decision.label is Verdict.INVALID and test.invalid_reason
                  else decision.reason) + (f"; {row.gate.note}" if row.gate.note else "")
        out[g] = CellResult(
            claim_id, claim.name, cell_id(claim_id, g), decision.label, rule, reason, g.pair, g.dataset, None,
            g.metric, g.token_mode, n=test.n, effect=finite(trend.rho) if trend else None,
            ci_method="Spearman rho of oriented d_z vs alpha (no interval: few alpha levels)",
            p_value=finite(test.p_claimed), p_holm=finite(decision.p_adjusted), p_bh=finite(p_bh),
            fidelity=finite(row.gate.worst), fidelity_threshold=audit.config.fidelity_threshold,
            funnel=[{"stage": f"alpha={a}", "n": c.n} for a, c in zip(row.levels, row.cells)],
            extra={**family_extra(grid, claim_id, decision), "alphas": list(row.levels), "hedges_dz": list(row.effects),
                   "counter_example_alphas": counter, "trend_method": trend.method if trend else None,
                   "fidelity": fidelity_extra(list(row.cells))},
            provenance={**(row.cells[0].provenance if row.cells else {}), "metric_config": METRIC_CONFIG.as_dict()})
    return out
