"""C4: DPO deviates: its changes are weaker than online RL's (or absent).

Magnitudes, not standardised effects: each pair's oriented relative change of the metric's mean,
R = direction * (mean post / mean base - 1), compared with the mean over the grid's online-RL pairs
on the same dataset, alpha, metric and token mode, resampled jointly over their shared questions
(harness.analysis.stats.magnitudes). Offline-preference pairs make C4's family. Online-preference
pairs (online DPO) are their own contrast, for the paper's explanation (static vs online data): it
predicts that online DPO changes like online RL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.analysis.metrics import METRICS, per_sample_values
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.magnitudes import MagnitudeComparison, PairValues, compare_magnitudes
from harness.analysis.stats.resampling import ties_within_precision
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.claims.common import (
    FamilyContext,
    FamilyTest,
    GridCell,
    bh_adjusted,
    cell_fidelity,
    cell_id,
    edge_arrays,
    family_extra,
    fidelity_extra,
    finite,
    try_cell,
)
from harness.audit.claims.robust import not_applicable
from harness.audit.stages import AuditPipeline, CellData
from harness.audit.verdicts import CellResult, Decision, Margin, Verdict, family_verdicts, verdict_rule
from harness.data.selection import SelectionError
from harness.errors import UserError

OFFLINE = "offline-preference"


@dataclass(frozen=True)
class PreferenceRow:
    """One C4 cell: the preference pair's data, the online-RL cells it is compared with, the comparison."""

    grid: GridCell
    online: bool                      # an online-preference pair: the explanation's contrast
    cell: CellData | None
    test: FamilyTest
    comparison: MagnitudeComparison | None = None
    rl_cells: tuple[CellData, ...] = ()


def rule_text(stats: StatsConfig, online: bool) -> str:
    base = verdict_rule(stats.alpha, stats.min_n, f"{stats.ci_level:.0%} interval of the difference")
    tested = ("Tested effect: difference = R(preference pair) - mean R(online-RL pairs), R = direction x (mean post / "
              "mean base - 1) the relative change of the metric's mean oriented toward the online-RL claim, "
              "percentile bootstrap over the pairs' pooled questions, drawn jointly (they share base model and "
              f"questions); p = share of resamples on the other side of 0. Smallest effect of interest: "
              f"{stats.sesoi_rel:g} in R")
    if online:
        return (f"{base}, with 'claimed' = online DPO changes at least as strongly as online RL (the paper's "
                f"explanation: online data, like online RL). Also SUPPORTED when the difference's interval lies "
                f"inside +-{stats.sesoi_rel:g} (online DPO moves like online RL). {tested}")
    return (f"{base}, with 'claimed' = the offline-preference pair's change is weaker (difference < 0). Also "
            f"SUPPORTED when its own change is equivalent to none while online RL's is not: its "
            f"{1 - 2 * stats.alpha:.0%} bootstrap interval of R lies inside +-{stats.sesoi_rel:g} (TOST at "
            f"{stats.alpha}; 'no or weak change') and the online-RL pairs' mean R has its {stats.ci_level:.0%} "
            f"interval beyond +{stats.sesoi_rel:g}. {tested}")


def _values(cell: CellData, metric: str, audit: AuditPipeline) -> PairValues:
    values = per_sample_values(metric, *edge_arrays(cell), audit.config.metrics)
    post, _ = ties_within_precision(values.base, values.post, audit.config.stats.tie_rel_tol)
    return PairValues(cell.pair.name, tuple(cell.selection.ids), np.asarray(values.base, float), post)


def _row(audit: AuditPipeline, g: GridCell, rl_pairs: tuple[str, ...]) -> PreferenceRow:
    stats = audit.config.stats
    online = audit.pair(g.pair).algorithm_kind != OFFLINE
    direction = METRICS[g.metric].direction
    cell = try_cell(audit, g.pair, g.dataset, g.alpha, g.token_mode)
    if isinstance(cell, SelectionError):
        return PreferenceRow(g, online, None, FamilyTest(0, math.nan, math.nan, f"selection: {str(cell).splitlines()[0]}"))
    rl_cells = tuple(c for c in (try_cell(audit, p, g.dataset, g.alpha, g.token_mode) for p in rl_pairs)
                     if not isinstance(c, SelectionError))
    if not rl_cells:
        return PreferenceRow(g, online, cell, FamilyTest(cell.n, math.nan, math.nan,
                             "no online-RL pair with selected questions on this dataset and alpha"))
    try:
        comparison = compare_magnitudes(_values(cell, g.metric, audit), [_values(c, g.metric, audit) for c in rl_cells],
                                        direction, alpha=stats.alpha, n_boot=stats.n_boot, seed=stats.seed,
                                        ci_level=stats.ci_level)
    except UserError as err:
        return PreferenceRow(g, online, cell, FamilyTest(cell.n, math.nan, math.nan, str(err)), None, rl_cells)
    p_claim, p_opp = ((comparison.p_stronger, comparison.p_weaker) if online
                      else (comparison.p_weaker, comparison.p_stronger))
    test = FamilyTest(cell.n, p_claim, p_opp, min_p=comparison.min_p)
    return PreferenceRow(g, online, cell, test, comparison, rl_cells)


def _decide(rows: list[PreferenceRow], stats: StatsConfig, online: bool) -> list[Decision]:
    rule = rule_text(stats, online)
    margins = [Margin(r.comparison.difference, r.comparison.ci_low, r.comparison.ci_high, +1 if online else -1,
                      stats.sesoi_rel, f"{stats.sesoi_rel:g}") if r.comparison else None for r in rows]
    decisions = family_verdicts([r.test for r in rows], alpha=stats.alpha, min_n=stats.min_n,
                                margins=margins, rule=rule)
    out = []
    for row, d in zip(rows, decisions):
        if d.label is Verdict.INCONCLUSIVE and d.reachable and row.comparison is not None:
            if online and d.equivalent:
                d = Decision(Verdict.SUPPORTED, rule, f"online DPO moves like online RL: {d.reason}", d.p_adjusted,
                             d.p_adjusted_opposite, d.holm_m, True)
            elif not online and _equivalent_to_none(row.comparison, stats):
                low, high = row.comparison.focal_ci_tost
                d = Decision(Verdict.SUPPORTED, rule, f"no meaningful change in the preference pair (TOST): its R "
                             f"interval [{low:.3g}, {high:.3g}] lies inside +-{stats.sesoi_rel:g}, while online RL's "
                             f"R is {row.comparison.reference:.3g}; {d.reason}",
                             d.p_adjusted, d.p_adjusted_opposite, d.holm_m, True)
        out.append(d)
    return out


def _equivalent_to_none(comparison: MagnitudeComparison, stats: StatsConfig) -> bool:
    """The preference pair does not change (TOST) while online RL does (its interval beyond the margin)."""
    low, high = comparison.focal_ci_tost
    return -stats.sesoi_rel < low and high < stats.sesoi_rel and comparison.reference_ci[0] > stats.sesoi_rel


def judge(audit: AuditPipeline, claim_id: str, grid: list[GridCell], context: FamilyContext
          ) -> dict[GridCell, CellResult]:
    claim = CLAIMS_BY_ID[claim_id]
    stats = audit.config.stats
    rows = [_row(audit, g, context.rl_pairs) for g in grid]
    out = {}
    for online in (False, True):
        family = [r for r in rows if r.online == online]
        if not family:
            continue
        decisions = _decide(family, stats, online)
        bh = bh_adjusted([r.test for r in family], decisions)
        members = [r.grid for r in family]
        for row, decision, p_bh in zip(family, decisions, bh):
            out[row.grid] = _result(audit, claim_id, claim.name, row, decision, p_bh, members)
    return out


def _result(audit: AuditPipeline, claim_id: str, name: str, row: PreferenceRow, decision: Decision, p_bh: float,
            members: list[GridCell]) -> CellResult:
    g, cell, test, comp = row.grid, row.cell, row.test, row.comparison
    stats = audit.config.stats
    extra = {**family_extra(members, claim_id, decision, stats),
             "contrast": "online-preference vs online RL (the explanation)" if row.online
             else "offline-preference vs online RL (the claim)",
             "compared_with": [c.pair.name for c in row.rl_cells],
             "algorithm_kind": audit.pair(g.pair).algorithm_kind,
             "fidelity": fidelity_extra([c for c in [cell, *row.rl_cells] if c is not None])}
    if comp is not None:
        extra.update(relative_change=comp.focal, relative_change_rl=comp.reference,
                     relative_change_rl_each=list(comp.reference_each), n_rl=list(comp.n_reference),
                     n_pool=comp.n_pool, p_weaker=comp.p_weaker, p_stronger=comp.p_stronger,
                     relative_change_rl_ci=list(comp.reference_ci),
                     equivalence={"interval": list(comp.focal_ci_tost), "margin": stats.sesoi_rel,
                                  "equivalent_to_none": _equivalent_to_none(comp, stats)})
    reason = (decision.reason if test.invalid_reason is None or decision.label is not Verdict.INVALID
              else test.invalid_reason)
    return CellResult(
        claim_id, name, cell_id(claim_id, g), decision.label, decision.rule, reason, g.pair, g.dataset, g.alpha,
        g.metric, g.token_mode, n=test.n,
        base_value=finite(comp.reference) if comp else None, post_value=finite(comp.focal) if comp else None,
        effect=finite(comp.difference) if comp else None, ci_low=finite(comp.ci_low) if comp else None,
        ci_high=finite(comp.ci_high) if comp else None, ci_method=comp.ci_method if comp else None,
        p_value=finite(test.p_claimed), p_holm=finite(decision.p_adjusted), p_bh=finite(p_bh),
        fidelity=cell_fidelity([c for c in [cell, *row.rl_cells] if c is not None]),
        robustness=not_applicable(audit, "C4 compares relative changes of whole-W metrics across pairs; its exact "
                                         "version would need exact deltas of every pair on shared edges"),
        funnel=cell.funnel if cell else [],
        extra=extra, provenance={**(cell.provenance if cell else {}), "metric_config": audit.config.metrics.as_dict()})
