"""C4: the preference pairs' changes are weaker than online RL's.

Each preference cell's oriented Hedges d_z is compared with the mean over the grid's online-RL
pairs on the same dataset, alpha, metric and token mode (bootstrap); Holm runs over C4's family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.analysis.metrics import METRICS, PairedValues, per_sample_values
from harness.analysis.stats.comparisons import (
    EffectComparison,
    EquivalenceTest,
    compare_effects,
    tost_paired,
)
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
    edge_arrays,
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


@dataclass(frozen=True)
class PreferenceRow:
    """One C4 cell: the preference pair's data, the online-RL cells it is compared with, and the
    comparison (None where the data did not allow one)."""

    grid: GridCell
    cell: CellData | None
    test: FamilyTest
    comparison: EffectComparison | None = None
    gate: Gate = Gate()
    rl_cells: tuple[CellData, ...] = ()
    values: PairedValues | None = None
    equivalence: EquivalenceTest | None = None


def rule_text() -> str:
    return (f"SUPPORTED if the preference pair's oriented effect (Hedges d_z in the online-RL claim's "
            f"direction) is smaller than the online-RL pairs' mean: bootstrap p (Holm within C4) < "
            f"{STATS.alpha}; REFUTED if it is larger with Holm p < {STATS.alpha}; INVALID if a cell is "
            f"degenerate, has n < {STATS.min_n}, no online-RL pair to compare, or fails the fidelity gate; "
            "otherwise INCONCLUSIVE")


def _row(audit: AuditPipeline, g: GridCell, rl_pairs: tuple[str, ...]) -> PreferenceRow:
    direction = METRICS[g.metric].direction
    cell = try_cell(audit, g.pair, g.dataset, g.alpha, g.token_mode)
    if isinstance(cell, SelectionError):
        return PreferenceRow(g, None, FamilyTest(0, math.nan, math.nan, f"selection: {str(cell).splitlines()[0]}"))
    diffs = metric_diffs(cell, g.metric)
    rl_cells = tuple(c for c in (try_cell(audit, p, g.dataset, g.alpha, g.token_mode) for p in rl_pairs)
                     if isinstance(c, CellData))
    usable_rl = [d for d in (metric_diffs(c, g.metric) for c in rl_cells) if d.size >= 3 and d.std() > 0]
    fidelity_gate = gate(audit, [cell, *rl_cells])
    if not usable_rl or diffs.size < 3 or diffs.std() == 0:
        why = "no online-RL pair with usable data on this dataset" if not usable_rl else "degenerate differences"
        return PreferenceRow(g, cell, FamilyTest(diffs.size, math.nan, math.nan, why), None, fidelity_gate, rl_cells)
    comparison = compare_effects(diffs, usable_rl, direction, n_boot=STATS.n_boot, seed=STATS.seed)
    opposite = compare_effects(diffs, usable_rl, -direction, n_boot=STATS.n_boot, seed=STATS.seed)
    values = per_sample_values(g.metric, *edge_arrays(cell), METRIC_CONFIG)
    equivalence = tost_paired(values.base, values.post, STATS.equivalence_margin_rel, alpha=STATS.alpha)
    return PreferenceRow(g, cell, FamilyTest(diffs.size, comparison.p_weaker, opposite.p_weaker), comparison,
                         fidelity_gate, rl_cells, values, equivalence)


def judge(audit: AuditPipeline, claim_id: str, grid: list[GridCell], context: FamilyContext
          ) -> dict[GridCell, CellResult]:
    claim = CLAIMS_BY_ID[claim_id]
    rule = rule_text()
    rows = [_row(audit, g, context.rl_pairs) for g in grid]
    tests = [r.test for r in rows]
    decisions = family_verdicts(tests, alpha=STATS.alpha, min_n=STATS.min_n, fidelity_ok=[r.gate.ok for r in rows])
    bh = bh_adjusted(tests, decisions)
    out = {}
    for row, decision, p_bh in zip(rows, decisions, bh):
        g, cell, test, comp = row.grid, row.cell, row.test, row.comparison
        extra = {**family_extra(grid, claim_id, decision), "compared_with": [c.pair.name for c in row.rl_cells],
                 "algorithm_kind": audit.pair(g.pair).algorithm_kind,
                 "fidelity": fidelity_extra([c for c in [cell, *row.rl_cells] if c is not None])}
        if comp is not None:
            tost = row.equivalence
            extra.update(effect_dpo=comp.effect_dpo, effect_rl=comp.effect_rl, effect_rl_each=comp.effect_rl_each,
                         n_rl=comp.n_rl, p_stronger=test.p_opposite,
                         equivalence={"p_tost": tost.p_tost, "margin_rel": tost.margin_rel,
                                      "equivalent": tost.equivalent})
        reason = (decision.reason if test.invalid_reason is None or decision.label is not Verdict.INVALID
                  else test.invalid_reason) + (f"; {row.gate.note}" if row.gate.note else "")
        out[g] = CellResult(
            claim_id, claim.name, cell_id(claim_id, g), decision.label, rule, reason, g.pair, g.dataset, g.alpha,
            g.metric, g.token_mode, n=test.n,
            base_value=finite(float(np.mean(row.values.base))) if row.values is not None else None,
            post_value=finite(float(np.mean(row.values.post))) if row.values is not None else None,
            effect=finite(comp.difference) if comp else None, ci_low=finite(comp.ci_low) if comp else None,
            ci_high=finite(comp.ci_high) if comp else None, ci_method=comp.ci_method if comp else None,
            effect_size=finite(comp.effect_dpo) if comp else None, p_value=finite(test.p_claimed),
            p_holm=finite(decision.p_adjusted), p_bh=finite(p_bh), fidelity=finite(row.gate.worst),
            fidelity_threshold=audit.config.fidelity_threshold, funnel=cell.funnel if cell else [],
            extra=extra, provenance={**(cell.provenance if cell else {}), "metric_config": METRIC_CONFIG.as_dict()})
    return out
