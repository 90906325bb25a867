"""C1, C2, C3, C7: online RL moves one metric of the edge scores in the claimed direction.

Each (pair, dataset, alpha, token mode) cell gets the metric's deciding test: the mean of per-question
differences with a sign-flip test (C1, C3, C7), or the paper's pooled statistic with a swap-permutation
test (C2, Eq. 15); the family judge runs Holm over the claim's family, and the effect must clear the
smallest effect of interest.
"""

from __future__ import annotations

from harness.analysis.metrics import METRICS, complexity_band
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.pooled import MetricTest, cell_test
from harness.audit.claims import ClaimSpec
from harness.audit.claims.common import (
    FamilyContext,
    GridCell,
    behaviour_of,
    cell_fidelity,
    change_fidelity,
    edge_arrays,
    fidelity_extra,
    finite,
    funnel_of,
    loss_of,
    metric_rule,
    relative_margin,
    span_of,
    template_reason,
)
from harness.audit.claims.family import Outcome
from harness.audit.claims.robust import robustness
from harness.audit.records import Records
from harness.audit.verdicts import Margin, verdict_rule
from harness.data.selection import SelectionError


def rule(claim: ClaimSpec, records: Records, grid: list[GridCell], context: FamilyContext) -> list[Outcome]:
    """Paired per-question test of the claim's metric in each (pair, dataset, alpha, mode) cell."""
    metric = claim.metric
    metrics, stats = records.config.metrics, records.config.stats
    decided_on = ("the paper's pooled statistic, post - base, BCa bootstrap interval over questions, swap-permutation "
                  "p" if METRICS[metric].decided_by == "pooled" else
                  "mean over questions of post - base, BCa bootstrap interval, sign-flip permutation p")
    text = metric_rule(stats, metrics, metric, decided_on, records.config.template_limit)
    cells = {g: records.cell(g.pair, g.dataset, g.alpha, g.token_mode) for g in grid}
    judged = [(g, c) for g, c in cells.items() if not isinstance(c, SelectionError)]
    robust = robustness(records, metric, judged)
    out = []
    for g, cell in cells.items():
        if isinstance(cell, SelectionError):
            out.append(Outcome(g, verdict_rule(stats.significance, stats.min_n),
                               skipped=f"selection left no sample: {str(cell).splitlines()[0]}",
                               fields={"funnel": funnel_of(cell), "provenance": {"audit_config": records.config.as_dict()}}))
            continue
        try:
            out.append(_outcome(g, cell, claim, records, text, robust))
        except Exception as err:   # noqa: BLE001 -- one cell's failure must not void its family's other cells
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            out.append(Outcome(g, text, skipped=f"its test failed ({type(err).__name__}: {first}); the family's "
                               "other cells are decided without it",
                               fields={"funnel": cell.funnel, "extra": {"error": {"type": type(err).__name__,
                                                                                  "message": first}},
                                       "provenance": {"audit_config": records.config.as_dict()}}))
    return out


def _outcome(g: GridCell, cell, claim: ClaimSpec, records: Records, text: str, robust: dict) -> Outcome:
    """The cell's deciding test of the claim's metric and the fields it measured."""
    metric = claim.metric
    metrics, stats = records.config.metrics, records.config.stats
    ct = cell_test(metric, *edge_arrays(cell), metrics, stats)
    test = ct.decisive_test
    base_value, post_value, effect = _values(ct)
    extra = {"decisive": ct.decisive,
             "pooled": {"base": ct.pooled.base, "post": ct.pooled.post, "diff": ct.pooled.diff,
                        "ci": [ct.pooled.ci_low, ct.pooled.ci_high], "p": ct.pooled.p_permutation},
             "fidelity": fidelity_extra([cell]), "t_cut": cell.selection.t_cut, "t_bar": cell.selection.t_bar}
    paired = ct.paired
    if paired is not None:
        extra.update(decided_by=paired.decided_by, permutation=paired.permutation_method,
                     p_opposite=paired.p_permutation_opposite,
                     wilcoxon={"method": paired.wilcoxon_method, "p": paired.p_wilcoxon,
                               "p_opposite": paired.p_wilcoxon_opposite,
                               "hodges_lehmann": paired.hodges_lehmann, "zero_method": paired.zero_method},
                     relative_change=paired.relative_change, n_zero=paired.n_zero)
    if metric == "complexity":   # sensitivity to the bin count B, reported as a band
        band = complexity_band(*edge_arrays(cell), metrics)
        extra["complexity_band"] = {"bins": list(band.bins), "pooled_diff": list(band.pooled_diff),
                                    "per_sample_mean_diff": list(band.per_sample_mean_diff),
                                    "diff_min": band.diff_min, "diff_max": band.diff_max,
                                    "sign_consistent": band.sign_consistent}
    extra["relative_change"] = finite(effect / abs(base_value)) if base_value else None
    extra["span"], extra["loss"], extra["behaviour"] = span_of(cell), loss_of(cell, stats), behaviour_of(cell)
    extra["difference_fidelity"] = change_fidelity(cell, records.config)
    fields = {
        "metric": metric, "base_value": finite(base_value), "post_value": finite(post_value),
        "effect": finite(effect), "ci_low": finite(test.ci_low), "ci_high": finite(test.ci_high),
        "ci_method": test.ci_method,
        "effect_size": finite(paired.hedges_dz) if paired and ct.decisive == "paired" else None,
        "fidelity": cell_fidelity([cell]), "robustness": robust[g], "funnel": cell.funnel, "extra": extra,
        "provenance": {**cell.provenance, "metric_config": metrics.as_dict()}}
    template = template_reason(extra["span"], records.config.template_limit)
    if template:   # measured and reported, but no directional verdict on the answer's template
        return Outcome(g, text, skipped=template, fields=fields)
    return Outcome(g, text, test, _margin(ct, stats), fields=fields)


def _values(ct: MetricTest) -> tuple[float, float, float]:
    """(base value, post value, effect) of the deciding test: per-question means, or the pooled values."""
    if ct.decisive == "paired":
        return ct.paired.mean_base, ct.paired.mean_post, ct.paired.mean_diff
    return ct.pooled.base, ct.pooled.post, ct.pooled.diff


def _margin(ct: MetricTest, stats: StatsConfig) -> Margin:
    base_value, _, effect = _values(ct)
    test = ct.decisive_test
    return relative_margin(effect, test.ci_low, test.ci_high, base_value, METRICS[ct.metric].direction, stats, ct.metric)
