"""C6: inter-sample diversity rises after online RL in at least 95 % of experiments (pair x dataset
x alpha), as the paper counts: the share of experiments whose pooled diversity rose."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.analysis.stats.comparisons import RateTest, binomial_rate_test
from harness.analysis.stats.pooled import cell_test
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.claims.common import (
    METRIC_CONFIG,
    STATS,
    FamilyContext,
    FamilyTest,
    GridCell,
    bh_adjusted,
    cell_id,
    edge_arrays,
    family_extra,
    finite,
    gate,
    try_cell,
)
from harness.audit.stages import AuditPipeline, CellData
from harness.audit.verdicts import CellResult, Verdict, family_verdicts
from harness.data.selection import SelectionError

C6_RATE = 0.95


@dataclass(frozen=True)
class DiversityRow:
    """One C6 cell (a token mode): the rate test over its usable experiments and each one's record."""

    grid: GridCell
    test: FamilyTest
    rate: RateTest | None
    experiments: list[dict]
    used: list[CellData]


def judge(audit: AuditPipeline, claim_id: str, grid: list[GridCell], context: FamilyContext
          ) -> dict[GridCell, CellResult]:
    """Share of experiments (online-RL pair x dataset x alpha) whose pooled diversity rose, against 95%."""
    claim = CLAIMS_BY_ID[claim_id]
    experiments = context.experiments
    rule = (f"An experiment counts when its pooled inter-sample diversity (1 - mean pairwise correlation) "
            f"is higher after post-training (as the paper counts). SUPPORTED if the exact binomial p for "
            f"rate > {C6_RATE} (Holm across token modes) < {STATS.alpha}; REFUTED if the p for rate < {C6_RATE} "
            f"is < {STATS.alpha}; an exact tie counts as neither (INCONCLUSIVE, no change, when every experiment ties); "
            f"INVALID if no experiment passes selection and the fidelity gate; "
            "otherwise INCONCLUSIVE. Experiments share models and questions, so the binomial p is optimistic")
    rows = []
    for g in grid:
        details, rises, ties = [], 0, 0
        used = []
        for pair, dataset, a in experiments:
            cell = try_cell(audit, pair, dataset, a, g.token_mode)
            if isinstance(cell, SelectionError):
                details.append({"experiment": f"{pair}/{dataset}/a{a}", "skipped": "selection left no sample"})
                continue
            fidelity_gate = gate(audit, [cell])
            ct = cell_test("diversity", *edge_arrays(cell), METRIC_CONFIG, STATS)
            pooled = ct.pooled
            entry = {"experiment": f"{pair}/{dataset}/a{a}", "n": pooled.n, "base": pooled.base,
                     "post": pooled.post, "diff": pooled.diff, "p_rise": pooled.p_permutation, "fidelity": fidelity_gate.worst}
            if not fidelity_gate.ok or pooled.invalid_reason is not None:
                entry["skipped"] = fidelity_gate.note or pooled.invalid_reason
            elif pooled.diff == 0:   # an exact tie is neither a rise nor a fall
                entry["skipped"] = "no change (exact tie)"
                ties += 1
            else:
                rises += pooled.diff > 0
                used.append(cell)
            details.append(entry)
        n = len(used)
        if n == 0:
            test = (FamilyTest(ties, 1.0, 1.0, no_change=True) if ties
                    else FamilyTest(0, math.nan, math.nan, "no usable experiment"))
            rows.append(DiversityRow(g, test, None, details, used))
            continue
        rate = binomial_rate_test(int(rises), n, C6_RATE, ci_level=STATS.ci_level)
        rows.append(DiversityRow(g, FamilyTest(n, rate.p_above, rate.p_below), rate, details, used))
    tests = [r.test for r in rows]
    decisions = family_verdicts(tests, alpha=STATS.alpha, min_n=1)
    bh = bh_adjusted(tests, decisions)
    out = {}
    for row, decision, p_bh in zip(rows, decisions, bh):
        g, test, rate, details, used = row.grid, row.test, row.rate, row.experiments, row.used
        reason = test.invalid_reason if decision.label is Verdict.INVALID and test.invalid_reason else decision.reason
        fids = [f.get("spearman") for c in used for f in c.fidelity.values()]
        out[g] = CellResult(
            claim_id, claim.name, cell_id(claim_id, g), decision.label, rule, reason, None, None, None,
            "diversity", g.token_mode, n=test.n, base_value=C6_RATE, post_value=finite(rate.rate) if rate else None,
            effect=finite(rate.rate - C6_RATE) if rate else None, ci_low=finite(rate.ci_low - C6_RATE) if rate else None,
            ci_high=finite(rate.ci_high - C6_RATE) if rate else None,
            ci_method=f"{rate.ci_method}, shifted by the claimed rate" if rate else None,
            p_value=finite(test.p_claimed), p_holm=finite(decision.p_adjusted), p_bh=finite(p_bh),
            fidelity=float(min(fids)) if fids else None,
            fidelity_threshold=audit.config.fidelity_threshold,
            funnel=[{"stage": "experiments", "n": len(experiments)}, {"stage": "usable", "n": test.n}],
            extra={**family_extra(grid, claim_id, decision), "experiments": details,
                   "rises": int(sum(1 for d in details if "skipped" not in d and d["diff"] > 0)),
                   "caveat": rate.caveat if rate else None},
            provenance={"audit_config": audit.config.as_dict(), "metric_config": METRIC_CONFIG.as_dict(),
                        "cache_keys": [c.provenance["cache_keys"] for c in used]})
    return out
