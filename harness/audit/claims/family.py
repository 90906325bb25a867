"""The one family judge: a rule measures, this module decides.

A claim's rule (`harness.audit.claims.<rule>`) reads its records and returns one `Outcome` per grid
cell: the cell's test (n, one-sided p in each direction, the smallest attainable p, whether it
cannot be analysed), the smallest effect of interest, an equivalence route where the claim has one,
and the fields it measured. `judge_family` then, for each family of outcomes (the claim's cells on
the run's grid, or a part of them a rule names), applies Holm over both directions of every usable
cell, the margins and the equivalence route, reports Benjamini-Hochberg beside Holm, and writes every
`CellResult` in one place. No rule builds a cell or changes a decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.multiplicity import benjamini_hochberg
from harness.audit.claims import ClaimSpec, rule_function
from harness.audit.claims.common import FamilyContext, GridCell, cell_id, finite, funnel_of
from harness.audit.records import Records
from harness.audit.verdicts import CORRECTION, CellResult, Decision, Margin, Verdict, family_verdicts
from harness.data.selection import SelectionError
from harness.files import content_key


@dataclass(frozen=True)
class Equivalence:
    """A second route to SUPPORTED for a cell Holm leaves INCONCLUSIVE (and reachable): taken when
    `holds` is True, or, with `holds` None, when the cell's interval lies inside its margin; `reason`
    is written before the decision's own."""

    reason: str
    holds: bool | None = None


@dataclass(frozen=True)
class Outcome:
    """What a rule found for one grid cell.

    test: n, p_claimed, p_opposite, invalid_reason (and optionally no_change, min_p) of the cell's
    one-sided tests; None when the rule reaches its verdict without the family's correction
    (`decided`, e.g. C6's share of experiments).
    rule: the rule text printed with the cell (one per family).
    family: cells with the same key are corrected together (C4: offline and online preference pairs).
    skipped: the cell could not be tested (its selection kept no question): INVALID with this reason,
    outside the correction, recorded with `fields` only.
    combine: for a claim of two parts (C8: fidelity and the causal check), the verdict, reason and
    extra fields from the decision of its tested part.
    fields: the CellResult fields the rule measured (values, interval, fidelity, funnel, extra, ...).
    family_record: write the family (members, hash, Holm's m) into `extra`.
    """

    grid: GridCell
    rule: str
    test: Any = None
    margin: Margin | None = None
    equivalence: Equivalence | None = None
    family: str = ""
    skipped: str | None = None
    combine: Callable[[Decision], tuple[Verdict, str, dict]] | None = None
    decided: tuple[Verdict, str] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    family_record: bool = True


def decide_tests(tests: Sequence[Any], stats: StatsConfig, rule: str,
                 margins: Sequence[Margin | None] | None = None) -> list[Decision]:
    """Holm over both directions of every usable test, each decided against its margin (the
    correction of one family, at the run's significance level and minimum n)."""
    return family_verdicts(tests, significance=stats.significance, min_n=stats.min_n, margins=margins, rule=rule)


def judge_family(claim: ClaimSpec, outcomes: Sequence[Outcome], stats: StatsConfig) -> dict[GridCell, CellResult]:
    """Every outcome's CellResult: each family decided together, in the order the rule gave."""
    out: dict[GridCell, CellResult] = {}
    for key in dict.fromkeys(o.family for o in outcomes):
        family = [o for o in outcomes if o.family == key]
        members = [o.grid for o in family]
        tested = [o for o in family if o.skipped is None and o.decided is None]
        decisions = decide_tests([o.test for o in tested], stats, tested[0].rule if tested else "",
                                 [o.margin for o in tested]) if tested else []
        decisions = [_equivalence_route(o, d) for o, d in zip(tested, decisions)]
        bh = benjamini_hochberg([o.test.p_claimed if d.label is not Verdict.INVALID else math.nan
                                 for o, d in zip(tested, decisions)]) if tested else []
        judged = {id(o): (d, p) for o, d, p in zip(tested, decisions, bh)}
        unusable = [cell_id(claim, o.grid) for o in family
                    if o.skipped is not None or (id(o) in judged and judged[id(o)][0].label is Verdict.INVALID)]
        for o in family:
            decision, p_bh = judged.get(id(o), (None, math.nan))
            out[o.grid] = _record(claim, o, decision, p_bh, members, unusable, stats)
    return out


def _equivalence_route(outcome: Outcome, d: Decision) -> Decision:
    route = outcome.equivalence
    if route is None or d.label is not Verdict.INCONCLUSIVE or not d.reachable:
        return d
    if not (d.equivalent if route.holds is None else route.holds):
        return d
    return Decision(Verdict.SUPPORTED, d.rule, f"{route.reason}{d.reason}", d.p_adjusted, d.p_adjusted_opposite,
                    d.holm_m, equivalent=True)


def _record(claim: ClaimSpec, o: Outcome, decision: Decision | None, p_bh: float, members: list[GridCell],
            unusable: list[str], stats: StatsConfig) -> CellResult:
    g = o.grid
    fields = dict(o.fields)
    extra = fields.pop("extra", {})
    values: dict[str, Any] = {"pair": g.pair, "dataset": g.dataset, "alpha": g.alpha, "metric": g.metric,
                              "token_mode": g.token_mode}
    if o.skipped is not None:
        label, reason = Verdict.INVALID, o.skipped
    elif o.decided is not None:
        label, reason = o.decided
    else:
        label, reason = decision.label, decision.reason
        values.update(n=o.test.n, p_value=finite(o.test.p_claimed), p_holm=finite(decision.p_adjusted),
                      p_bh=finite(p_bh))
        if o.combine is not None:
            label, reason, combined = o.combine(decision)
            extra = {**extra, **combined}
        raw = min(o.test.p_claimed, o.test.p_opposite)
        dependent = (label is Verdict.INCONCLUSIVE and decision.holm_m > 2 and raw < stats.significance
                     and not decision.equivalent and decision.reachable)
        if dependent:   # the same data would be decided in a smaller family: say so
            reason = (f"{reason}; the family decides: alone its p = {raw:.3g} < {stats.significance} would pass, "
                      f"Holm over m = {decision.holm_m} does not")
        if o.family_record:
            extra = {**family_extra(members, claim, decision, stats, unusable), "family_dependent": dependent, **extra}
    values.update(fields)
    return CellResult(claim.id, claim.name, cell_id(claim, g), label, o.rule, reason, extra=extra, paper=claim.paper,
                      **values)


def family_extra(members: list[GridCell], claim: ClaimSpec, decision: Decision, stats: StatsConfig,
                 unusable: list[str]) -> dict:
    """What a cell was corrected with: the family fixed by the grid, its hash, Holm's m, and the members
    Holm could not use (INVALID: their loss shrinks m, which the cell must say); whether the interval
    lay inside the smallest effect of interest, and whether the grid could reach a verdict."""
    ids = [cell_id(claim, g) for g in members]
    return {"family_size": len(members), "family": ids, "family_hash": content_key(ids), "family_unusable": unusable,
            "holm_m": decision.holm_m, "p_holm_opposite": finite(decision.p_adjusted_opposite),
            "correction": f"{CORRECTION} (BH reported)", "equivalent": decision.equivalent,
            "reachable": decision.reachable, "stats_config": stats.as_dict()}


def judge_claim(claim: ClaimSpec, records: Records, grid: list[GridCell], context: FamilyContext
                ) -> dict[GridCell, CellResult]:
    """The claim's family on `grid`: its rule measures every cell from `records`, then `judge_family`."""
    return judge_family(claim, rule_function(claim)(claim, records, grid, context), records.config.stats)


def measured_cell(records, g: GridCell, text: str, what: str):
    """The cell's data at the alpha its fidelity was measured at, or the skipped Outcome saying why not:
    a selection that kept no question, or a cell at another alpha (`what`: the reason, a format string
    that may name {measured_at}, the alpha measured)."""
    cell = records.cell(g.pair, g.dataset, g.alpha, g.token_mode)
    if isinstance(cell, SelectionError):
        return Outcome(g, text, skipped="selection left no sample",
                       fields={"funnel": funnel_of(cell), "provenance": {"audit_config": records.config.as_dict()}})
    if cell.measured_at != cell.alpha:
        return Outcome(g, text, skipped="not measured at this alpha: " + what.format(measured_at=cell.measured_at),
                       fields={"funnel": cell.funnel, "provenance": cell.provenance})
    return cell
