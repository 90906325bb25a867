"""C8: EAP is a faithful, tractable stand-in for edge ablation (the premise of §3.2).

Three parts, all decided:
- fidelity: each model's Spearman of EAP scores against exact single-edge zero ablation on a sample
  of real edges (weighted by inverse inclusion probability when stratified), with a bootstrap CI over questions and edges; its status (FAITHFUL, UNFAITHFUL,
  UNCERTAIN) says where the CI lies against the threshold;
- the changes: per edge, EAP's change post - base against exact ablation's on the same questions and
  edges (difference fidelity, its Spearman over edges with a bootstrap CI, judged like the levels):
  the claims are about changes, and EAP can rank each model's edges well and still get the change wrong;
- the causal check: does EAP choose the edges whose joint removal hurts? From the fidelity check's pool
  of edges (exact deltas known), EAP's top k and exact ablation's own top k are removed together (k random
  edges beside them, for the reader). EAP passes if its choice does more than `causal_share` of the damage
  (loss increase over the clean loss) of exact's choice, per question (mean over the k grid), one-sided
  sign-flip test, Holm over C8. Beating random alone is not asked: any ranking that follows an edge's size
  does that.
Both need at least `stats.min_n` questions (the minimum every claim is judged on), else INVALID.
"""

from __future__ import annotations

import math

import numpy as np

from harness.analysis.stats.paired import PairedTest, paired_test
from harness.audit.claims import ClaimSpec
from harness.audit.claims.common import (
    FamilyContext,
    FamilyTest,
    GridCell,
    cell_fidelity,
    change_fidelity,
    fidelity_extra,
    finite,
)
from harness.audit.claims.family import Outcome, measured_cell
from harness.audit.claims.robust import sample_text
from harness.audit.config import AuditConfig
from harness.audit.records import CellData, Records
from harness.audit.verdicts import Decision, Verdict


def rule_text(cfg: AuditConfig) -> str:
    stats = cfg.stats
    return (f"Fidelity: each model's Spearman of EAP scores against exact single-edge zero ablation (float32) on "
            f"{sample_text(cfg)} x up to {cfg.fidelity_samples} questions (weighted Spearman under a stratified "
            f"sample), "
            f"{stats.ci_level:.0%} bootstrap CI over questions and edges; FAITHFUL if the CI lies above "
            f"{cfg.fidelity_threshold}, UNFAITHFUL if below, UNCERTAIN across. Changes: per edge, the change post - "
            f"base of the mean over questions, EAP against exact ablation, Spearman over edges (weighted under a "
            f"stratified sample) with a two-way bootstrap CI, judged against the same threshold. Causal check (post model), on the fidelity "
            f"check's questions and edge pool: the k pool edges of largest mean EAP score, of largest mean exact "
            f"delta (and k random ones, causal_seed, reported beside) removed together, k = 1, an eighth and a "
            f"quarter of the pool; per question, averaged over k, EAP's damage (loss with its k removed minus the "
            f"clean loss) minus {cfg.causal_share:g} x exact's damage (causal_share); one-sided sign-flip test that "
            f"it is > 0, Holm over C8 at {stats.significance}; all measured at the cell's own alpha. "
            f"SUPPORTED if both models and the changes are FAITHFUL and EAP's choice does significantly more than "
            f"that share of exact's damage; REFUTED if a model or the changes are UNFAITHFUL or EAP's choice does "
            f"significantly less; INVALID with fewer than "
            f"{stats.min_n} questions (stats.min_n) in either model's fidelity measurement or in the causal "
            f"check, or a NaN; otherwise INCONCLUSIVE")


def causal_test(causal: dict, config: AuditConfig) -> PairedTest | FamilyTest:
    """Paired over questions, each averaged over the k grid: EAP's damage (loss with its top k removed minus
    the clean loss) against `causal_share` x exact's damage (its own top k removed)."""
    eap = np.asarray(causal.get("question_loss_eap", []), dtype=float)          # [K, n]
    exact = np.asarray(causal.get("question_loss_exact", []), dtype=float)      # [K, n]
    clean = np.asarray(causal.get("loss_clean", []), dtype=float)               # [n]
    if eap.size == 0 or exact.shape != eap.shape or clean.shape != eap.shape[1:]:
        return FamilyTest(0, math.nan, math.nan, "causal check not measured per question")
    stats = config.stats
    bar = config.causal_share * (exact - clean).mean(axis=0)
    return paired_test(bar, (eap - clean).mean(axis=0), +1, n_boot=stats.n_boot, n_perm=stats.n_perm,
                       seed=stats.seed, zero_method=stats.zero_method, ci_level=stats.ci_level)


def closed_share(causal: dict) -> float | None:
    """EAP's damage as a share of exact's, pooled over questions and k: mean(L_eap - L_clean) /
    mean(L_exact - L_clean); None if exact's choice does no damage (nothing to find)."""
    eap, exact = (np.asarray(causal.get(f"question_loss_{name}", []), dtype=float) for name in ("eap", "exact"))
    clean = np.asarray(causal.get("loss_clean", []), dtype=float)
    if eap.size == 0 or clean.size == 0:
        return None
    damage = float(np.mean(exact - clean))
    return float(np.mean(eap - clean)) / damage if damage > 0 else None


def rule(claim: ClaimSpec, records: Records, grid: list[GridCell], context: FamilyContext) -> list[Outcome]:
    """Each cell: both models' fidelity records and the post model's causal check, at the alpha its
    fidelity was measured at; the causal checks are the family Holm corrects."""
    config = records.config
    text = rule_text(config)
    out = []
    for g in grid:
        cell = measured_cell(records, g, text, "fidelity_alpha = {measured_at:g} measures fidelity and the causal "
                             "check there only, and a validity measured at one alpha is not copied to another "
                             "(fidelity_alpha=none measures every alpha)")
        if isinstance(cell, Outcome):
            out.append(cell)
            continue
        measured = cell
        causal = records.causal(measured, "post")
        test, closed = causal_test(causal, config), closed_share(causal)
        fidelity = cell_fidelity([cell])
        change = change_fidelity(cell, config)
        out.append(Outcome(g, text, test, combine=_combine(cell, fidelity, change, closed, config.stats.min_n), fields={
            "n": min(int(f.get("samples", 0)) for f in cell.fidelity.values()),
            "base_value": finite(cell.fidelity["base"].get("spearman")),
            "post_value": finite(cell.fidelity["post"].get("spearman")),
            "effect": finite(getattr(test, "mean_diff", None)), "ci_low": finite(getattr(test, "ci_low", None)),
            "ci_high": finite(getattr(test, "ci_high", None)),
            "ci_method": (f"causal check: EAP's top-k damage - {config.causal_share:g} x exact's top-k damage, nats, "
                          "BCa over questions"),
            "fidelity": fidelity, "funnel": cell.funnel, "provenance": cell.provenance,
            "extra": {"fidelity": fidelity_extra([cell]),
                      "causal": {**causal, "measured_at": measured.alpha, "closed_share": closed,
                                 "causal_share": config.causal_share},
                      "difference_fidelity": change}}))
    return out


def _combine(cell: CellData, fidelity: dict | None, change: dict | None, closed: float | None, min_n: int):
    """C8's verdict from its three parts: the fidelity records, the changes' fidelity and the causal
    check's family decision."""
    def combine(causal: Decision) -> tuple[Verdict, str, dict]:
        label, reason = _label(cell, fidelity, change, causal, closed, min_n)
        return label, reason, {"causal_verdict": causal.label.value, "causal_reason": causal.reason}
    return combine


def _label(cell: CellData, fidelity: dict | None, change: dict | None, causal: Decision, closed: float | None,
           min_n: int) -> tuple[Verdict, str]:
    measured = min(int(f.get("samples", 0)) for f in cell.fidelity.values())
    statuses = {side: rec.get("status") for side, rec in cell.fidelity.items()}
    text = ", ".join(f"{side} {rec.get('status')} (Spearman {_n(rec.get('spearman'))} "
                     f"[{_n((rec.get('ci') or [None, None])[0])}, {_n((rec.get('ci') or [None, None])[1])}])"
                     for side, rec in cell.fidelity.items())
    change_status = (change or {}).get("status")
    text += ("; changes not measured" if change_status is None else
             f"; changes {change_status} (Spearman {_n(change.get('spearman'))} [{_n(change['ci'][0])}, "
             f"{_n(change['ci'][1])}], sign agreement {_n(change.get('sign_agreement'))})")
    share = ("exact's top k does no damage" if closed is None else
             f"EAP's top k does {closed:.0%} of the damage of exact's top k")
    causal_text = f"causal check {causal.label.value} ({share}): {causal.reason}"
    if measured < min_n:
        return Verdict.INVALID, f"fidelity measured on {measured} questions (< stats.min_n = {min_n}); {text}"
    if fidelity is None or any(s is None for s in statuses.values()):
        return Verdict.INVALID, "fidelity not measured"
    if "UNFAITHFUL" in statuses.values() or change_status == "UNFAITHFUL" or causal.label is Verdict.REFUTED:
        return Verdict.REFUTED, f"{text}; {causal_text}"
    if causal.label is Verdict.INVALID:
        return Verdict.INVALID, f"{causal_text}; {text}"
    if (all(s == "FAITHFUL" for s in statuses.values()) and change_status == "FAITHFUL"
            and causal.label is Verdict.SUPPORTED):
        return Verdict.SUPPORTED, f"{text}; {causal_text}"
    return Verdict.INCONCLUSIVE, f"{text}; {causal_text}"


def _n(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.3g}"
