"""C8: EAP is a faithful stand-in for edge ablation: both models' EAP-vs-exact Spearman on the
sampled edges against the threshold; each cell also carries the causal check (top-k EAP edges vs k
random edges removed)."""

from __future__ import annotations

from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.claims.common import (
    FamilyContext,
    GridCell,
    cell_id,
    fidelity_extra,
    finite,
    funnel_of,
    gate,
    invalid_cell,
    try_cell,
)
from harness.audit.stages import AuditPipeline
from harness.audit.verdicts import CellResult, Verdict
from harness.data.selection import SelectionError


def judge(audit: AuditPipeline, claim_id: str, grid: list[GridCell], context: FamilyContext
          ) -> dict[GridCell, CellResult]:
    """Spearman correlation of EAP scores with exact edge ablation, both models, against the threshold."""
    claim = CLAIMS_BY_ID[claim_id]
    threshold = audit.config.fidelity_threshold
    rule = (f"SUPPORTED if, for both models, the Spearman correlation between EAP scores and exact edge "
            f"ablation on {audit.config.fidelity_edges} sampled edges x {audit.config.fidelity_samples} "
            f"questions is >= {threshold}; REFUTED if it is below for either model; INVALID when not measured")
    out = {}
    for g in grid:
        cell = try_cell(audit, g.pair, g.dataset, g.alpha, g.token_mode)
        if isinstance(cell, SelectionError):
            out[g] = invalid_cell(audit, claim_id, g, "selection left no sample", funnel_of(cell), rule)
            continue
        fidelity_gate = gate(audit, [cell])
        ok, worst = fidelity_gate.ok, fidelity_gate.worst
        label = Verdict.SUPPORTED if ok else Verdict.REFUTED
        fid = cell.fidelity
        causal = audit.causal(cell, "post")
        out[g] = CellResult(
            claim_id, claim.name, cell_id(claim_id, g), label, rule,
            f"smallest Spearman {worst:.3g} {'>=' if ok else '<'} {threshold}", g.pair, g.dataset, g.alpha,
            None, g.token_mode, n=min(int(f.get("samples", 0)) for f in fid.values()),
            base_value=finite(fid["base"].get("spearman")), post_value=finite(fid["post"].get("spearman")),
            effect=finite(worst - threshold), ci_method="none: threshold rule on sampled edges",
            fidelity=finite(worst), fidelity_threshold=threshold, funnel=cell.funnel,
            extra={"family_size": len(grid), "fidelity": fidelity_extra([cell]), "causal": causal},
            provenance=cell.provenance)
    return out
