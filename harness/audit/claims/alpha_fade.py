"""C5: counter-examples fade as alpha grows.

Per question, the oriented relative change s(alpha) = direction * (post - base) / mean(|post|, |base|)
(positive = the online-RL claim's direction), at every alpha level of the grid, on the questions kept
at all of them. A counter-example is a level whose mean s is below 0 (the point estimate against the
claim). A pair with none at any level has nothing to fade: INCONCLUSIVE, said so. Otherwise the trend
over all levels decides: per question, the least-squares slope of s against the level's rank, times
(levels - 1), i.e. the fitted change of s from the smallest to the largest alpha; its mean, sign-flip
test, BCa interval, Holm over C5. SUPPORTED: s rises with alpha (the counter-examples fade); REFUTED:
it falls (they grow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.analysis.metrics import METRICS, per_sample_values
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.paired import PairedTest, paired_test
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
    span_of,
    template_reason,
)
from harness.audit.claims.family import Outcome
from harness.audit.claims.robust import not_applicable
from harness.audit.config import AuditConfig
from harness.audit.records import CellData, Records
from harness.audit.verdicts import Margin, Verdict, verdict_rule
from harness.data.selection import SelectionError

MIN_ALPHAS = 2


@dataclass(frozen=True)
class FadeRow:
    """One C5 cell: the alpha levels used, the per-level mean oriented relative change, and the test."""

    grid: GridCell
    test: PairedTest | FamilyTest
    levels: tuple[float, ...]
    mean_changes: tuple[float, ...]   # mean oriented relative change at each level, in `levels` order
    cells: tuple[CellData, ...]
    template_levels: dict[float, str]   # levels left out: their targets are the answer's template (the reason)


def oriented_change(cell: CellData, metric: str, config: AuditConfig) -> dict[str, float]:
    """question id -> direction * (post - base) / mean(|post|, |base|) of the metric (ties: 0)."""
    values = per_sample_values(metric, *edge_arrays(cell), config.metrics)
    post, _ = ties_within_precision(values.base, values.post, config.stats.tie_rel_tol)
    scale = (np.abs(post) + np.abs(values.base)) / 2
    change = np.divide(post - values.base, scale, out=np.zeros_like(scale), where=scale > 0)
    return dict(zip(cell.selection.ids, (METRICS[metric].direction * change).tolist()))


def rule_text(stats: StatsConfig, metric: str) -> str:
    return (f"{verdict_rule(stats.significance, stats.min_n, f'{stats.ci_level:.0%} interval of the mean fitted change')}. "
            "A counter-example is an alpha level whose mean s is below 0, with s = direction x (post - base) / "
            "mean(|post|, |base|) the per-question relative change oriented toward the online-RL claim; with none at "
            "any level the cell is INCONCLUSIVE ('no counter-example to fade'). Tested effect: mean over the questions "
            "kept at every level of the fitted change of s from the smallest to the largest alpha (least-squares "
            "slope of s on the level's rank, times levels - 1); sign-flip permutation p, BCa bootstrap interval. "
            f"Smallest effect of interest: {stats.sesoi_text(metric)} in s. Needs at least {MIN_ALPHAS} alpha levels and "
            f"{stats.min_n} shared questions; a level whose targets are the answer's template (beyond "
            f"template_limit) is left out")


def _row(records: Records, g: GridCell, alphas: tuple[float, ...]) -> FadeRow:
    stats = records.config.stats
    levels, changes, cells, template = [], [], [], {}
    for a in sorted(alphas):
        cell = records.cell(g.pair, g.dataset, a, g.token_mode)
        reason = None if isinstance(cell, SelectionError) else template_reason(span_of(cell),
                                                                               records.config.template_limit)
        if reason:
            template[a] = reason
        elif not isinstance(cell, SelectionError):
            levels.append(a)
            changes.append(oriented_change(cell, g.metric, records.config))
            cells.append(cell)
    shared = [q for q in (changes[0] if changes else {}) if all(q in c for c in changes)]
    means = tuple(float(np.mean([c[q] for q in shared])) if shared else math.nan for c in changes)
    if len(levels) < MIN_ALPHAS:
        test = FamilyTest(0, math.nan, math.nan, f"{len(levels)} alpha levels with selected questions "
                          f"(< {MIN_ALPHAS}) in {sorted(alphas)}" + (
                              f"; left out, their targets are the answer's template: {sorted(template)}"
                              if template else ""))
        return FadeRow(g, test, tuple(levels), means, tuple(cells), template)
    s = np.array([[c[q] for c in changes] for q in shared]).reshape(len(shared), len(levels))   # [questions, levels]
    rank = np.arange(len(levels)) - (len(levels) - 1) / 2
    fitted = (s @ rank) / (rank @ rank) * (len(levels) - 1)          # fitted change, smallest to largest alpha
    start = s.mean(axis=1) - fitted / 2
    test = paired_test(start, start + fitted, +1, n_boot=stats.n_boot, n_perm=stats.n_perm, seed=stats.seed,
                       zero_method=stats.zero_method, ci_level=stats.ci_level, margin=stats.sesoi_for(g.metric))
    return FadeRow(g, test, tuple(levels), means, tuple(cells), template)


def rule(claim: ClaimSpec, records: Records, grid: list[GridCell], context: FamilyContext) -> list[Outcome]:
    """The trend of the oriented change over every alpha level, per (pair, dataset, metric, mode), where a
    level holds a counter-example."""
    stats = records.config.stats
    out = []
    for g in grid:
        text = rule_text(stats, g.metric)
        row = _row(records, g, context.alphas)
        test = row.test
        paired = test if isinstance(test, PairedTest) else None
        rel = stats.sesoi_for(g.metric)
        margin = (Margin(test.mean_diff, test.ci_low, test.ci_high, +1, rel, f"{rel:g}")
                  if paired else None)
        counter = [a for a, m in zip(row.levels, row.mean_changes) if m < 0]
        decided = None
        if paired is not None and not counter:
            decided = (Verdict.INCONCLUSIVE, "no counter-example to fade: the mean oriented change is at or above 0 at "
                       "every alpha level (" + ", ".join(f"{a:g}: {m:.3g}" for a, m in zip(row.levels, row.mean_changes))
                       + ")")
        out.append(Outcome(g, text, test, margin, decided=decided, fields={
            "n": paired.n if paired else None,
            "base_value": finite(paired.mean_base) if paired else None,
            "post_value": finite(paired.mean_post) if paired else None,
            "effect": finite(paired.mean_diff) if paired else None,
            "ci_low": finite(paired.ci_low) if paired else None, "ci_high": finite(paired.ci_high) if paired else None,
            "ci_method": paired.ci_method if paired else None, "fidelity": cell_fidelity(list(row.cells)),
            "robustness": not_applicable(records.config, "C5 compares two alpha levels; exact deltas are measured at one"),
            "funnel": [{"stage": f"alpha={a}", "n": c.n} for a, c in zip(row.levels, row.cells)],
            "extra": {"alphas": list(row.levels),
                      "compared": list(row.levels) if len(row.levels) >= MIN_ALPHAS else [],
                      "mean_oriented_change": list(row.mean_changes),
                      "counter_example_alphas": counter, "counter_example_rule": "mean oriented change < 0",
                      "template_alphas": row.template_levels,
                      "span": {f"a{c.alpha}": span_of(c) for c in row.cells},
                      "behaviour": {f"a{c.alpha}": behaviour_of(c) for c in row.cells},
                      "fidelity": fidelity_extra(list(row.cells))},
            "provenance": {**(row.cells[0].provenance if row.cells else {}),
                           "metric_config": records.config.metrics.as_dict()}}))
    return out
