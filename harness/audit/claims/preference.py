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

import numpy as np

from harness.analysis.metrics import METRICS, per_sample_values
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.magnitudes import MagnitudeComparison, PairValues, compare_magnitudes
from harness.analysis.stats.resampling import ties_within_precision
from harness.audit.claims import ClaimSpec
from harness.audit.claims.common import (
    FamilyContext,
    FamilyTest,
    GridCell,
    cell_fidelity,
    edge_arrays,
    fidelity_extra,
    finite,
)
from harness.audit.claims.family import Equivalence, Outcome
from harness.audit.claims.robust import not_applicable
from harness.audit.config import AuditConfig
from harness.audit.records import CellData, Records
from harness.audit.verdicts import Margin, verdict_rule
from harness.data.selection import SelectionError
from harness.errors import UserError

OFFLINE = "offline-preference"
NOT_APPLICABLE = ("C4 compares relative changes of whole-W metrics across pairs; its exact version would need exact "
                  "deltas of every pair on shared edges")


def rule_text(stats: StatsConfig, online: bool) -> str:
    base = verdict_rule(stats.significance, stats.min_n, f"{stats.ci_level:.0%} interval of the difference")
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
            f"{1 - 2 * stats.equivalence_level:.0%} bootstrap interval of R lies inside +-{stats.sesoi_rel:g} (TOST at "
            f"{stats.equivalence_level}; 'no or weak change') and the online-RL pairs' mean R has its {stats.ci_level:.0%} "
            f"interval beyond +{stats.sesoi_rel:g}. {tested}")


def _values(cell: CellData, metric: str, config: AuditConfig) -> PairValues:
    values = per_sample_values(metric, *edge_arrays(cell), config.metrics)
    post, _ = ties_within_precision(values.base, values.post, config.stats.tie_rel_tol)
    return PairValues(cell.pair.name, tuple(cell.selection.ids), np.asarray(values.base, float), post)


def _equivalent_to_none(comparison: MagnitudeComparison, stats: StatsConfig) -> bool:
    """The preference pair does not change (TOST) while online RL does (its interval beyond the margin)."""
    low, high = comparison.focal_ci_tost
    return -stats.sesoi_rel < low and high < stats.sesoi_rel and comparison.reference_ci[0] > stats.sesoi_rel


def rule(claim: ClaimSpec, records: Records, grid: list[GridCell], context: FamilyContext) -> list[Outcome]:
    """Offline-preference pairs: weaker than online RL (C4's family); online-preference pairs: at least
    as strong (the explanation's contrast, a family of its own)."""
    return [_outcome(records, g, context.rl_pairs) for g in grid]


def _outcome(records: Records, g: GridCell, rl_pairs: tuple[str, ...]) -> Outcome:
    config, stats = records.config, records.config.stats
    online = records.kind(g.pair) != OFFLINE
    text = rule_text(stats, online)
    found = records.cell(g.pair, g.dataset, g.alpha, g.token_mode)
    cell = None if isinstance(found, SelectionError) else found
    others = (records.cell(p, g.dataset, g.alpha, g.token_mode) for p in rl_pairs) if cell is not None else ()
    rl_cells = tuple(c for c in others if not isinstance(c, SelectionError))
    comparison = None
    if cell is None:
        test = FamilyTest(0, math.nan, math.nan, f"selection: {str(found).splitlines()[0]}")
    elif not rl_cells:
        test = FamilyTest(cell.n, math.nan, math.nan, "no online-RL pair with selected questions on this dataset and alpha")
    else:
        try:
            comparison = compare_magnitudes(
                _values(cell, g.metric, config), [_values(c, g.metric, config) for c in rl_cells],
                METRICS[g.metric].direction, equivalence_level=stats.equivalence_level, n_boot=stats.n_boot,
                seed=stats.seed, ci_level=stats.ci_level)
        except UserError as err:
            test = FamilyTest(cell.n, math.nan, math.nan, str(err))
        else:
            p_claim, p_opp = ((comparison.p_stronger, comparison.p_weaker) if online
                              else (comparison.p_weaker, comparison.p_stronger))
            test = FamilyTest(cell.n, p_claim, p_opp, min_p=comparison.min_p)
    read = [c for c in [cell, *rl_cells] if c is not None]
    extra = {"contrast": "online-preference vs online RL (the explanation)" if online
             else "offline-preference vs online RL (the claim)",
             "compared_with": [c.pair.name for c in rl_cells], "algorithm_kind": records.kind(g.pair),
             "fidelity": fidelity_extra(read)}
    fields = {"fidelity": cell_fidelity(read), "robustness": not_applicable(config, NOT_APPLICABLE),
              "funnel": cell.funnel if cell else [],
              "provenance": {**(cell.provenance if cell else {}), "metric_config": config.metrics.as_dict()}}
    margin = equivalence = None
    if comparison is not None:
        c = comparison
        extra.update(relative_change=c.focal, relative_change_rl=c.reference,
                     relative_change_rl_each=list(c.reference_each), n_rl=list(c.n_reference),
                     n_pool=c.n_pool, p_weaker=c.p_weaker, p_stronger=c.p_stronger,
                     relative_change_rl_ci=list(c.reference_ci),
                     equivalence={"interval": list(c.focal_ci_tost), "margin": stats.sesoi_rel,
                                  "equivalent_to_none": _equivalent_to_none(c, stats)})
        fields.update(base_value=finite(c.reference), post_value=finite(c.focal), effect=finite(c.difference),
                      ci_low=finite(c.ci_low), ci_high=finite(c.ci_high), ci_method=c.ci_method)
        margin = Margin(c.difference, c.ci_low, c.ci_high, +1 if online else -1, stats.sesoi_rel, f"{stats.sesoi_rel:g}")
        if online:
            equivalence = Equivalence("online DPO moves like online RL: ")
        else:
            low, high = c.focal_ci_tost
            equivalence = Equivalence(f"no meaningful change in the preference pair (TOST): its R interval "
                                      f"[{low:.3g}, {high:.3g}] lies inside +-{stats.sesoi_rel:g}, while online RL's "
                                      f"R is {c.reference:.3g}; ", _equivalent_to_none(c, stats))
    return Outcome(g, text, test, margin, equivalence, family="online" if online else "offline",
                   fields={**fields, "extra": extra})
