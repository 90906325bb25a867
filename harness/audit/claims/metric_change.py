"""C1, C2, C3, C7: online RL moves one metric of the edge scores in the claimed direction.

Each (pair, dataset, alpha, token mode) cell gets the metric's deciding test: the mean of per-question
differences with a sign-flip test (C1, C3, C7), or the paper's pooled statistic with a swap-permutation
test (C2, Eq. 15); Holm runs over the claim's family, and the effect must clear the smallest effect of
interest.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.analysis.metrics import METRICS, complexity_band
from harness.analysis.stats.pooled import MetricTest, cell_test
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.claims.common import (
    FamilyContext,
    GridCell,
    bh_adjusted,
    cell_fidelity,
    cell_id,
    edge_arrays,
    family_extra,
    fidelity_extra,
    finite,
    funnel_of,
    invalid_cell,
    metric_rule,
    relative_margin,
    try_cell,
)
from harness.audit.claims.robust import robustness
from harness.audit.stages import AuditPipeline, CellData
from harness.audit.verdicts import CellResult, Margin, family_verdicts
from harness.data.selection import SelectionError


@dataclass(frozen=True)
class MetricRow:
    """One judged cell: its grid values, data and deciding test."""

    grid: GridCell
    cell: CellData
    test: MetricTest


def judge(audit: AuditPipeline, claim_id: str, grid: list[GridCell], context: FamilyContext) -> dict[GridCell, CellResult]:
    """Paired per-question test of the claim's metric in each (pair, dataset, alpha, mode) cell."""
    claim = CLAIMS_BY_ID[claim_id]
    metric = claim.metric
    metrics, stats = audit.config.metrics, audit.config.stats
    judged: list[MetricRow] = []
    failed: list[tuple[GridCell, SelectionError]] = []
    for g in grid:
        cell = try_cell(audit, g.pair, g.dataset, g.alpha, g.token_mode)
        if isinstance(cell, SelectionError):
            failed.append((g, cell))
            continue
        judged.append(MetricRow(g, cell, cell_test(metric, *edge_arrays(cell), metrics, stats)))
    tests = [r.test.decisive_test for r in judged]
    margins = [_margin(r.test, stats) for r in judged]
    decided_on = ("the paper's pooled statistic, post - base, BCa bootstrap interval over questions, swap-permutation "
                  "p" if METRICS[metric].decided_by == "pooled" else
                  "mean over questions of post - base, BCa bootstrap interval, sign-flip permutation p")
    rule = metric_rule(stats, metrics, decided_on)
    decisions = family_verdicts(tests, alpha=stats.alpha, min_n=stats.min_n,
                                margins=margins, rule=rule)
    bh = bh_adjusted(tests, decisions)
    robust = robustness(audit, metric, [(r.grid, r.cell) for r in judged])
    out: dict[GridCell, CellResult] = {}
    for row, decision, p_bh, test in zip(judged, decisions, bh, tests):
        g, cell, ct = row.grid, row.cell, row.test
        extra = {**family_extra(grid, claim_id, decision, stats), "decisive": ct.decisive,
                 "pooled": {"base": ct.pooled.base, "post": ct.pooled.post, "diff": ct.pooled.diff,
                            "ci": [ct.pooled.ci_low, ct.pooled.ci_high], "p": ct.pooled.p_permutation},
                 "fidelity": fidelity_extra([cell]), "t_cut": cell.selection.t_cut, "t_bar": cell.selection.t_bar}
        if ct.paired is not None:
            extra.update(decided_by=ct.paired.decided_by, permutation=ct.paired.permutation_method,
                         p_opposite=ct.paired.p_permutation_opposite,
                         wilcoxon={"method": ct.paired.wilcoxon_method, "p": ct.paired.p_wilcoxon,
                                   "p_opposite": ct.paired.p_wilcoxon_opposite,
                                   "hodges_lehmann": ct.paired.hodges_lehmann, "zero_method": ct.paired.zero_method},
                         relative_change=ct.paired.relative_change, n_zero=ct.paired.n_zero)
        if metric == "complexity":   # sensitivity to the bin count B, reported as a band
            band = complexity_band(*edge_arrays(cell), metrics)
            extra["complexity_band"] = {"bins": list(band.bins), "pooled_diff": list(band.pooled_diff),
                                        "per_sample_mean_diff": list(band.per_sample_mean_diff),
                                        "diff_min": band.diff_min, "diff_max": band.diff_max,
                                        "sign_consistent": band.sign_consistent}
        paired = ct.paired
        base_value, post_value, effect = _values(ct)
        extra["relative_change"] = finite(effect / abs(base_value)) if base_value else None
        reason = decision.reason
        out[g] = CellResult(
            claim.id, claim.name, cell_id(claim_id, g), decision.label, decision.rule, reason,
            g.pair, g.dataset, g.alpha, metric, g.token_mode, n=test.n,
            base_value=finite(base_value), post_value=finite(post_value), effect=finite(effect),
            ci_low=finite(test.ci_low), ci_high=finite(test.ci_high), ci_method=test.ci_method,
            effect_size=finite(paired.hedges_dz) if paired and ct.decisive == "paired" else None,
            p_value=finite(test.p_claimed),
            p_holm=finite(decision.p_adjusted), p_bh=finite(p_bh), fidelity=cell_fidelity([cell]),
            robustness=robust[g], funnel=cell.funnel, extra=extra,
            provenance={**cell.provenance, "metric_config": metrics.as_dict()})
    for g, err in failed:
        out[g] = invalid_cell(audit, claim_id, g, f"selection left no sample: {str(err).splitlines()[0]}",
                              funnel_of(err))
    return out


def _values(ct: MetricTest) -> tuple[float, float, float]:
    """(base value, post value, effect) of the deciding test: per-question means, or the pooled values."""
    if ct.decisive == "paired":
        return ct.paired.mean_base, ct.paired.mean_post, ct.paired.mean_diff
    return ct.pooled.base, ct.pooled.post, ct.pooled.diff


def _margin(ct: MetricTest, stats) -> Margin:
    base_value, _, effect = _values(ct)
    test = ct.decisive_test
    return relative_margin(effect, test.ci_low, test.ci_high, base_value, METRICS[ct.metric].direction, stats)
