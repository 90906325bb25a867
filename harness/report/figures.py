"""Figures that follow from the cells alone: metric vs alpha per claim, and the Fig. 3a scatter."""

from __future__ import annotations

from collections import defaultdict

from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.verdicts import CellResult
from harness.report import plots
from harness.report.document import Figure


def alpha_figures(cells: list[CellResult]) -> list[Figure]:
    """One 'effect vs alpha' figure per claim with alpha-indexed cells that have an effect."""
    by_claim: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    metric_of: dict[str, str] = {}
    for cell in cells:
        if cell.alpha is None or cell.effect is None:
            continue
        label = " · ".join(str(p) for p in (cell.pair, cell.dataset, cell.token_mode, cell.metric) if p)
        by_claim[cell.claim_id][label or cell.claim_name].append(
            (cell.alpha, cell.effect, cell.ci_low, cell.ci_high))
        metric_of.setdefault(cell.claim_id, cell.metric or cell.claim_name)
    figures = []
    for claim_id, series in sorted(by_claim.items()):
        name = CLAIMS_BY_ID[claim_id].name if claim_id in CLAIMS_BY_ID else claim_id
        png = plots.metric_vs_alpha(series, metric_of[claim_id], f"{claim_id} {name}: effect vs α")
        figures.append(Figure(f"{claim_id}-alpha", png,
                              f"{claim_id}: mean paired change (post − base) against α, with CIs", claim_id,
                              derived=True))
    return figures


def diversity_figure(cells: list[CellResult]) -> list[Figure]:
    """Fig. 3a analogue: one point per experiment (base vs post pooled diversity), from each cell of a
    diversity claim (C6)."""
    figures = []
    for cell in cells:
        spec = CLAIMS_BY_ID.get(cell.claim_id)
        if spec is None or spec.rule != "diversity":
            continue
        points = [x for x in cell.extra.get("experiments", []) if x.get("base") is not None and "skipped" not in x]
        if not points:
            continue
        png = plots.diversity_scatter([f"{x['experiment']} ({x.get('outcome', '?')})" for x in points],
                                      [x["base"] for x in points], [x["post"] for x in points])
        figures.append(Figure(f"{cell.cell_id}-fig3a", png,
                              f"Fig. 3a analogue ({cell.cell_id}): pooled inter-sample diversity (1 − mean pairwise "
                              "correlation of W), base vs post-trained, one point per experiment, labelled with its "
                              "own test's outcome", cell.claim_id, derived=True))
    return figures


def derived_figures(cells: list[CellResult]) -> list[Figure]:
    return alpha_figures(cells) + diversity_figure(cells)
