"""Figures that follow from the cells alone: metric vs alpha per claim, and the Fig. 3a scatter."""

from __future__ import annotations

from collections import defaultdict

from harness.audit.algorithm import algorithm_answers
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.verdicts import CellResult, alpha_tag
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


def forest_figures(cells: list[CellResult]) -> list[Figure]:
    """One forest plot per claim with algorithm-level answers: each run's and seed control's relative
    change with its CI, per dataset, alpha and metric, and the pooled random-effects estimate."""
    by_claim: dict[str, list[dict]] = defaultdict(list)
    for answer in algorithm_answers(cells):
        spec = CLAIMS_BY_ID.get(answer.claim_id)
        metric = answer.metric if spec is None or answer.metric != spec.metric else None   # C4's three metrics
        point = " · ".join(x for x in (answer.dataset, None if answer.alpha is None else f"α={answer.alpha:g}", metric)
                           if x)
        rows = by_claim[answer.claim_id]
        for entry, kind in [(r, "run") for r in answer.runs] + [(c, "control") for c in answer.controls]:
            if entry["relative"] is not None:
                label = f"{entry['pair']}{' (seed control)' if kind == 'control' else ''} · {point}"
                rows.append({"label": label, "effect": entry["relative"], "ci": entry["relative_ci"], "kind": kind})
        if answer.pooled:
            rows.append({"label": f"pooled {answer.kind} ({answer.pooled['n_runs']} runs) · {point}: {answer.verdict.value}",
                         "effect": answer.pooled["estimate"], "ci": answer.pooled["ci"], "kind": "pooled"})
    figures = []
    for claim_id, rows in sorted(by_claim.items()):
        if not rows:
            continue
        name = CLAIMS_BY_ID[claim_id].name if claim_id in CLAIMS_BY_ID else claim_id
        png = plots.forest(rows, f"{claim_id} {name}: each run, the seed controls (grey) and the pooled estimate",
                           "change post − base, relative to the base value where it has one (CI)")
        figures.append(Figure(f"{claim_id}-forest", png,
                              f"{claim_id}: forest plot, one row per run and seed control (shaded) per dataset and "
                              "α, and the Paule-Mandel random-effects pooled estimate of the runs (diamond)", claim_id,
                              derived=True))
    return figures


def behaviour_figures(records: list[dict]) -> list[Figure]:
    """One scatter per metric claim and alpha: each run's metric change against its accuracy change.
    records: harness.audit.behaviour.metric_vs_accuracy's (the run summary's `metric_vs_accuracy`)."""
    figures = []
    for record in records:
        alpha = "" if record["alpha"] is None else f" α={record['alpha']:g}"
        name = f"{record['claim_id']}-vs-accuracy" + (f"-{alpha_tag(record['alpha'])}" if record["alpha"] is not None else "")
        png = plots.metric_accuracy_scatter(record["points"], f"{record['claim_id']} {record['metric']}{alpha}: "
                                            f"r = {record['pearson_r']:.2f}; {record['tracks'].split(':')[0]}",
                                            record["metric"])
        figures.append(Figure(name, png, f"{record['claim_id']}{alpha}: the metric's change against the accuracy "
                              f"change, one point per run and dataset ({record['method']})", record["claim_id"],
                              derived=True))
    return figures


def edges_behaviour_figure(rows: list[dict]) -> list[Figure]:
    """The causal claims' edges-and-behaviour scatter (the run summary's `edges_and_behaviour`), if any."""
    if not rows:
        return []
    return [Figure("edges-vs-behaviour", plots.edges_behaviour_scatter(rows),
                   "CB1/CB2: the share of the behaviour gap the patched edges move against their share of the "
                   "intensity change, one point per run, dataset and k (dotted: y = x)", "CB1", derived=True)]


def derived_figures(cells: list[CellResult], summary: dict) -> list[Figure]:
    """Every figure that follows from the cells; summary: the run's (ClaimsRun.summary), whose
    metric-vs-accuracy records are read rather than bootstrapped again."""
    return (forest_figures(cells) + behaviour_figures(summary["metric_vs_accuracy"]) + alpha_figures(cells)
            + diversity_figure(cells) + edges_behaviour_figure(summary.get("edges_and_behaviour", [])))
