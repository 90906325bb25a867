"""C8: EAP is a faithful, tractable stand-in for edge ablation (the premise of §3.2).

Two parts, both decided:
- fidelity: each model's Spearman of EAP scores against exact single-edge zero ablation on uniform
  random edges, with a bootstrap CI over questions and edges; its status (FAITHFUL, UNFAITHFUL,
  UNCERTAIN) says where the CI lies against the threshold;
- the causal check: the loss with the top-k EAP edges removed against k random edges removed, paired
  over questions (mean over the k grid and the random draws), one-sided sign-flip test, Holm over C8.
Both need at least `stats.min_n` questions (the minimum every claim is judged on), else INVALID.
"""

from __future__ import annotations

import math

import numpy as np

from harness.analysis.stats.paired import PairedTest, paired_test
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.claims.common import (
    FamilyContext,
    FamilyTest,
    GridCell,
    bh_adjusted,
    cell_fidelity,
    cell_id,
    family_extra,
    fidelity_extra,
    finite,
    funnel_of,
    invalid_cell,
    try_cell,
)
from harness.audit.stages import AuditPipeline, CellData
from harness.audit.verdicts import CellResult, Decision, Verdict, family_verdicts
from harness.data.selection import SelectionError


def rule_text(audit: AuditPipeline) -> str:
    cfg, stats = audit.config, audit.config.stats
    return (f"Fidelity: each model's Spearman of EAP scores against exact single-edge zero ablation (float32) on "
            f"{cfg.fidelity_edges} uniform random real edges x up to {cfg.fidelity_samples} questions, "
            f"{stats.ci_level:.0%} bootstrap CI over questions and edges; FAITHFUL if the CI lies above "
            f"{cfg.fidelity_threshold}, UNFAITHFUL if below, UNCERTAIN across. Causal check (post model): per question, "
            f"the loss with the top-k EAP edges removed minus the loss with k random edges removed, averaged over "
            f"the k grid and the random draws; one-sided sign-flip test that it is > 0, Holm over C8 at "
            f"{stats.alpha}; both are measured at one alpha per pair and dataset (fidelity_alpha) where it is set. "
            f"SUPPORTED if both models are FAITHFUL and the causal check is significant; REFUTED if "
            f"a model is UNFAITHFUL or the random edges matter significantly more; INVALID with fewer than "
            f"{stats.min_n} questions (stats.min_n) in either model's fidelity measurement or in the causal "
            f"check, or a NaN; otherwise INCONCLUSIVE")


def causal_test(causal: dict, stats) -> PairedTest | FamilyTest:
    """Paired over questions: mean over (k, draw) of loss(random k removed) vs loss(top k removed)."""
    top = np.asarray(causal.get("question_loss_top", []), dtype=float)          # [K, n]
    random = np.asarray(causal.get("question_loss_random", []), dtype=float)    # [K, R, n]
    if top.size == 0 or random.size == 0:
        return FamilyTest(0, math.nan, math.nan, "causal check not measured per question")
    return paired_test(random.mean(axis=(0, 1)), top.mean(axis=0), +1, n_boot=stats.n_boot, n_perm=stats.n_perm,
                       seed=stats.seed, zero_method=stats.zero_method, ci_level=stats.ci_level)


def judge(audit: AuditPipeline, claim_id: str, grid: list[GridCell], context: FamilyContext
          ) -> dict[GridCell, CellResult]:
    claim = CLAIMS_BY_ID[claim_id]
    stats = audit.config.stats
    rule = rule_text(audit)
    rows: list[tuple[GridCell, CellData, dict, PairedTest | FamilyTest]] = []
    out = {}
    for g in grid:
        cell = try_cell(audit, g.pair, g.dataset, g.alpha, g.token_mode)
        if isinstance(cell, SelectionError):
            out[g] = invalid_cell(audit, claim_id, g, "selection left no sample", funnel_of(cell), rule)
            continue
        measured = cell if cell.measured_at == cell.alpha else audit.cell(g.pair, g.dataset, cell.measured_at,
                                                                         g.token_mode)
        causal = audit.causal(measured, "post")   # at the alpha fidelity was measured at, shared like it
        rows.append((g, cell, {**causal, "measured_at": measured.alpha}, causal_test(causal, stats)))
    decisions = family_verdicts([r[3] for r in rows], alpha=stats.alpha, min_n=stats.min_n, rule=rule)
    bh = bh_adjusted([r[3] for r in rows], decisions)
    for (g, cell, causal, test), causal_decision, p_bh in zip(rows, decisions, bh):
        fidelity = cell_fidelity([cell])
        label, reason = _label(cell, fidelity, causal_decision, stats.min_n)
        out[g] = CellResult(
            claim_id, claim.name, cell_id(claim_id, g), label, rule, reason, g.pair, g.dataset, g.alpha, None,
            g.token_mode, n=min(int(f.get("samples", 0)) for f in cell.fidelity.values()),
            base_value=finite(cell.fidelity["base"].get("spearman")), post_value=finite(cell.fidelity["post"].get("spearman")),
            effect=finite(getattr(test, "mean_diff", None)), ci_low=finite(getattr(test, "ci_low", None)),
            ci_high=finite(getattr(test, "ci_high", None)),
            ci_method="causal check: loss(top-k removed) - loss(k random removed), nats, BCa over questions",
            p_value=finite(test.p_claimed), p_holm=finite(causal_decision.p_adjusted), p_bh=finite(p_bh),
            fidelity=fidelity, funnel=cell.funnel,
            extra={**family_extra(grid, claim_id, causal_decision, stats), "fidelity": fidelity_extra([cell]),
                   "causal": causal, "causal_verdict": causal_decision.label.value,
                   "causal_reason": causal_decision.reason},
            provenance=cell.provenance)
    return out


def _label(cell: CellData, fidelity: dict | None, causal: Decision, min_n: int) -> tuple[Verdict, str]:
    measured = min(int(f.get("samples", 0)) for f in cell.fidelity.values())
    statuses = {side: rec.get("status") for side, rec in cell.fidelity.items()}
    text = ", ".join(f"{side} {rec.get('status')} (Spearman {_n(rec.get('spearman'))} "
                     f"[{_n((rec.get('ci') or [None, None])[0])}, {_n((rec.get('ci') or [None, None])[1])}])"
                     for side, rec in cell.fidelity.items())
    causal_text = f"causal check {causal.label.value}: {causal.reason}"
    if measured < min_n:
        return Verdict.INVALID, f"fidelity measured on {measured} questions (< stats.min_n = {min_n}); {text}"
    if fidelity is None or any(s is None for s in statuses.values()):
        return Verdict.INVALID, "fidelity not measured"
    if "UNFAITHFUL" in statuses.values() or causal.label is Verdict.REFUTED:
        return Verdict.REFUTED, f"{text}; {causal_text}"
    if causal.label is Verdict.INVALID:
        return Verdict.INVALID, f"{causal_text}; {text}"
    if all(s == "FAITHFUL" for s in statuses.values()) and causal.label is Verdict.SUPPORTED:
        return Verdict.SUPPORTED, f"{text}; {causal_text}"
    return Verdict.INCONCLUSIVE, f"{text}; {causal_text}"


def _n(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.3g}"
