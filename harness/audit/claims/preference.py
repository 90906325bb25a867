"""C4: DPO deviates: its changes are weaker than online RL's, or inconsistent with them.

Magnitudes in the claimed direction, not signed changes: each pair's oriented relative change of the
metric's mean, R = direction * (mean post / mean base - 1), compared with the mean over the grid's
online-RL pairs on the same dataset, alpha, metric and token mode, on the questions every compared
pair kept, resampled jointly (harness.analysis.stats.magnitudes). A cell is decided only where
online RL itself moves credibly in the claimed direction. Offline-preference pairs make C4's family;
online-preference pairs (online DPO) are their own contrast, for the paper's explanation (static vs
online data): it predicts that online DPO moves like online RL, within the margin.
"""

from __future__ import annotations

import math

import numpy as np

from harness.analysis.metrics import METRICS, per_sample_values
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.magnitudes import PairValues, compare_magnitudes, resamples_for
from harness.analysis.stats.resampling import ties_within_precision
from harness.audit.claims import ClaimSpec
from harness.audit.claims.common import (
    FamilyContext,
    FamilyTest,
    GridCell,
    behaviour_of,
    cell_fidelity,
    edge_arrays,
    fidelity_extra,
    finite,
    loss_of,
    span_of,
    template_reason,
)
from harness.audit.claims.family import Outcome
from harness.audit.claims.robust import not_applicable
from harness.audit.config import AuditConfig
from harness.audit.records import CellData, Records
from harness.audit.verdicts import CORRECTION, Decision, Verdict
from harness.data.selection import SelectionError
from harness.errors import UserError

OFFLINE = "offline-preference"
NOT_APPLICABLE = ("C4 compares relative changes of whole-W metrics across pairs; its exact version would need exact "
                  "deltas of every pair on shared edges")


def rule_text(stats: StatsConfig, metric: str, online: bool, n_boot: int) -> str:
    margin = f"{stats.sesoi_for(metric):g}"
    tested = (f"R = direction x (mean post / mean base - 1), each pair's relative change of the metric's mean oriented "
              f"toward the online-RL claim, on the questions every compared pair kept, each pair at its own T_cut (one T_cut "
              f"for pairs of one base model under selection.t_cut_from=base; a reason says when they differ); "
              f"beside it each pair's update size, the share of those questions whose answer changed; difference = R(preference "
              f"pair) - mean R(online-RL pairs); percentile bootstrap over those questions, drawn jointly, {n_boot} "
              f"resamples (sized to the family, so that its smallest p can pass Holm); margin {margin} in R, tested "
              f"as a shifted null inside the Holm family ({CORRECTION}); significance {stats.significance}, "
              f"INVALID if n < {stats.min_n}")
    guard = (f"INVALID where the compared pair's targets are the answer's template (beyond template_limit); an "
             f"online-RL pair whose targets are is left out. Decided only where online RL itself moves in the claimed direction: the {stats.ci_level:.0%} interval "
             f"of its mean R lies beyond +{margin}; otherwise INCONCLUSIVE, 'online RL does not move in the "
             f"claimed direction here'")
    if online:
        return (f"SUPPORTED (online DPO moves like online RL, the paper's explanation) if the test of |difference| "
                f"< {margin} (two one-sided tests) passes Holm; REFUTED (it does not move like online RL: stronger "
                f"or weaker) if the test of |difference| > {margin} (the smaller one-sided p, doubled) passes Holm; "
                f"else INCONCLUSIVE. {guard}. {tested}")
    return (f"SUPPORTED (the offline-preference pair's change is weaker, or inconsistent: against online RL's "
            f"direction) if the test of difference < -{margin} passes Holm; REFUTED (stronger) if the test of "
            f"difference > +{margin} passes Holm; else INCONCLUSIVE. {guard}. {tested}")


def _values(cell: CellData, metric: str, config: AuditConfig) -> PairValues:
    values = per_sample_values(metric, *edge_arrays(cell), config.metrics)
    post, _ = ties_within_precision(values.base, values.post, config.stats.tie_rel_tol)
    return PairValues(cell.pair.name, tuple(cell.selection.ids), np.asarray(values.base, float), post)


def rule(claim: ClaimSpec, records: Records, grid: list[GridCell], context: FamilyContext) -> list[Outcome]:
    """Offline-preference pairs: weaker than online RL, or inconsistent with it (C4's family);
    online-preference pairs: like online RL (the explanation's contrast, a family of its own)."""
    stats = records.config.stats
    size = {online: sum((records.kind(g.pair) != OFFLINE) == online for g in grid) for online in (False, True)}
    return [_outcome(records, g, context.rl_pairs, resamples_for(size[records.kind(g.pair) != OFFLINE],
                                                                  stats.significance, stats.n_boot))
            for g in grid]


def _outcome(records: Records, g: GridCell, rl_pairs: tuple[str, ...], n_boot: int) -> Outcome:
    config, stats = records.config, records.config.stats
    online = records.kind(g.pair) != OFFLINE
    text = rule_text(stats, g.metric, online, n_boot)
    found = records.cell(g.pair, g.dataset, g.alpha, g.token_mode)
    cell = None if isinstance(found, SelectionError) else found
    others = (records.cell(p, g.dataset, g.alpha, g.token_mode) for p in rl_pairs) if cell is not None else ()
    limit = config.template_limit
    measured = [c for c in others if not isinstance(c, SelectionError)]
    rl_cells = tuple(c for c in measured if not template_reason(span_of(c), limit))
    focal_span = span_of(cell) if cell is not None else None
    template = template_reason(focal_span, limit) if cell is not None else None
    comparison = None
    if cell is None:
        test = FamilyTest(0, math.nan, math.nan, f"selection: {str(found).splitlines()[0]}")
    elif template:
        test = FamilyTest(cell.n, math.nan, math.nan, template)
    elif measured and not rl_cells:
        test = FamilyTest(cell.n, math.nan, math.nan, "every online-RL pair's targets here are the answer's template")
    elif not rl_cells:
        test = FamilyTest(cell.n, math.nan, math.nan, "no online-RL pair with selected questions on this dataset and alpha")
    else:
        try:
            comparison = compare_magnitudes(
                _values(cell, g.metric, config), [_values(c, g.metric, config) for c in rl_cells],
                METRICS[g.metric].direction, margin=stats.sesoi_for(g.metric), n_boot=n_boot, seed=stats.seed,
                ci_level=stats.ci_level)
        except UserError as err:
            test = FamilyTest(cell.n, math.nan, math.nan, str(err))
        else:
            c = comparison
            test = (FamilyTest(c.n_shared, c.p_like, min(1.0, 2 * min(c.p_weaker, c.p_stronger)), min_p=c.min_p)
                    if online else FamilyTest(c.n_shared, c.p_weaker, c.p_stronger, min_p=c.min_p))
    read = [c for c in [cell, *rl_cells] if c is not None]
    extra = {"contrast": "online-preference vs online RL (the explanation)" if online
             else "offline-preference vs online RL (the claim)",
             "compared_with": [c.pair.name for c in rl_cells], "algorithm_kind": records.kind(g.pair),
             "fidelity": fidelity_extra(read), "n_boot": n_boot,
             "left_out_template": [c.pair.name for c in measured if all(c is not r for r in rl_cells)]}
    if cell is not None:
        extra.update(span=focal_span, loss=loss_of(cell, stats), behaviour=behaviour_of(cell))
    fields = {"fidelity": cell_fidelity(read), "robustness": not_applicable(config, NOT_APPLICABLE),
              "funnel": cell.funnel if cell else [],
              "provenance": {**(cell.provenance if cell else {}), "metric_config": config.metrics.as_dict()}}
    decided = combine = None
    if comparison is not None:
        c = comparison
        extra.update(relative_change=c.focal, relative_change_ci=list(c.focal_ci), relative_change_rl=c.reference,
                     relative_change_rl_each=list(c.reference_each), relative_change_rl_ci=list(c.reference_ci),
                     n_shared=c.n_shared, n_each=list(c.n_each), p_weaker=c.p_weaker, p_stronger=c.p_stronger,
                     p_like=c.p_like, margin=c.margin,
                     rl_moves=c.reference_ci[0] > c.margin, inconsistent=c.focal_ci[1] < -c.margin,
                     like_with_like=like_with_like(cell, rl_cells, c))
        cuts = {name: e["t_cut"] for name, e in extra["like_with_like"]["pairs"].items()}
        unlike = ("" if extra["like_with_like"]["same_t_cut"] else
                  "; T_cut differs across the compared pairs (" + ", ".join(f"{k} {v}" for k, v in cuts.items()) +
                  " tokens): their magnitudes are not read on like spans")
        fields.update(base_value=finite(c.reference), post_value=finite(c.focal), effect=finite(c.difference),
                      ci_low=finite(c.ci_low), ci_high=finite(c.ci_high), ci_method=c.ci_method, n=c.n_shared)
        if not c.reference_ci[0] > c.margin:
            decided = (Verdict.INCONCLUSIVE,
                       f"online RL does not move in the claimed direction here: its mean R = {c.reference:.3g}, "
                       f"{c.ci_level:.0%} interval [{c.reference_ci[0]:.3g}, {c.reference_ci[1]:.3g}], not beyond "
                       f"+{c.margin:g}, so there is no online-RL change to compare with{unlike}")
        else:
            combine = _named(c, online, unlike)
    return Outcome(g, text, test, family="online" if online else "offline", combine=combine, decided=decided,
                   fields={**fields, "extra": extra})


def like_with_like(cell: CellData, rl_cells: tuple[CellData, ...], c) -> dict:
    """What the compared pairs share, and each pair's update size on the shared questions: the share whose
    post answer differs from the base answer (tokens), and R per unit of it (the change per unit of update).

    T_cut is one across the pairs when they share a base and selection.t_cut_from is 'base'."""
    shared = set(c.shared_ids)
    each = {}
    for k, (pair_cell, r) in enumerate(zip((cell, *rl_cells), (c.focal, *c.reference_each))):
        s = pair_cell.selection
        changed = [b.generation.answer_ids != p.generation.answer_ids
                   for q, b, p in zip(s.ids, s.base, s.post) if q in shared]
        share = float(np.mean(changed))
        each[pair_cell.pair.name] = {"role": "compared" if k == 0 else "online RL", "t_cut": s.t_cut,
                                     "t_cut_from": s.params.t_cut_from, "relative_change": r,
                                     "answers_changed": share,
                                     "change_per_unit_update": r / share if share > 0 else None}
    return {"questions": f"the {c.n_shared} questions every compared pair kept",
            "same_t_cut": len({e["t_cut"] for e in each.values()}) == 1,
            "update_size": "share of the shared questions whose post answer differs from the base answer (tokens)",
            "pairs": each}


def _named(c, online: bool, unlike: str):
    """The decision's reason with the outcome the claim names: weaker, inconsistent, stronger, like."""
    def combine(d: Decision) -> tuple[Verdict, str, dict]:
        values = (f"R = {c.focal:.3g} [{c.focal_ci[0]:.3g}, {c.focal_ci[1]:.3g}] against online RL's "
                  f"{c.reference:.3g} [{c.reference_ci[0]:.3g}, {c.reference_ci[1]:.3g}]{unlike}")
        if d.label is Verdict.SUPPORTED:
            named = ("moves like online RL" if online else
                     "inconsistent: it moves against online RL's direction" if c.focal_ci[1] < -c.margin else
                     "weaker than online RL")
        elif d.label is Verdict.REFUTED:
            named = ("does not move like online RL: " + ("stronger" if c.difference > 0 else "weaker") if online
                     else "stronger than online RL")
        else:
            return d.label, f"{d.reason}; {values}", {}
        return d.label, f"{named}: {values}; {d.reason}", {"outcome": named.split(":")[0]}

    return combine
