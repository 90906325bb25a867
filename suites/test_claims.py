"""The audited papers' claims as tests: one test, run once per cell of every catalogued claim on the
run's grid (harness/audit/papers/*.toml, and any --papers file).

Grid axes come from the options (--pairs --datasets --alphas --metrics --token-mode) or from the
pair registry's bundled pairs. Each claim reads the pairs it speaks about: online RL for C1-C3,
C5-C7; preference pairs for C4; every pair for C8 and C9; offline-preference pairs for CB1-CB3. Test ids are cell ids; select with -k, e.g.
`-k C1`, `-k intensity`, `-k "smollm2_grpo and a030"`.
"""

from __future__ import annotations

import numpy as np

from harness.analysis.metrics import node_entropy_by_node
from harness.audit.claims import get_claim
from harness.report.plots import causal_check_png, fidelity_scatter, intervention_curve_png


def test_claim(claim_cell, judged, figure_cell, point, audit):
    """Record the cell's verdict, with the figures its claim draws (the pair's Fig. 2 and Fig. 3b
    analogues, once per pair; C8's fidelity scatter and causal curve, per cell)."""
    claim = get_claim(point.claim)
    draw = FIGURES.get(claim.metric) or FIGURES.get(claim.rule)
    if draw is not None:
        draw(claim_cell, judged, figure_cell, point.grid, audit)
    claim_cell.record(judged)


def edge_heatmap(claim_cell, judged, cell, g, audit):
    if cell is not None:
        graph = cell.base.graph
        claim_cell.add_edge_heatmap(g.pair, np.abs(cell.base.scores.numpy()).mean(0),
                                    np.abs(cell.post.scores.numpy()).mean(0), list(graph.sources),
                                    graph.destination_names)


def node_entropy(claim_cell, judged, cell, g, audit):
    if cell is not None:
        config, mask = audit.config.metrics, cell.base.mask.numpy()
        base = np.nanmean(node_entropy_by_node(cell.base.scores.numpy(), mask, config), axis=0)
        post = np.nanmean(node_entropy_by_node(cell.post.scores.numpy(), mask, config), axis=0)
        claim_cell.add_node_entropy(g.pair, list(cell.base.graph.sources), base, post)


def fidelity(claim_cell, judged, cell, g, audit):
    points = {key.rsplit("/", 1)[-1]: (f["points"]["eap"], f["points"]["exact"])   # none on an INVALID cell
              for key, f in judged.extra.get("fidelity", {}).items() if "points" in f}
    if points:
        title = f"{g.pair} {g.dataset} α={g.alpha:g}: EAP vs exact ablation"
        claim_cell.add_figure(f"fidelity-{judged.cell_id}", fidelity_scatter(points, title),
                              f"C8, {judged.cell_id}: EAP score vs exact ΔL per (question, sampled edge); "
                              "grey: y = x")
    causal = judged.extra.get("causal")
    if causal is not None:
        claim_cell.add_figure(f"causal-{judged.cell_id}",
                              causal_check_png(causal, f"{g.pair} {g.dataset} α={g.alpha:g}, post model"),
                              f"C8, {judged.cell_id}: loss increase with EAP's top k, exact ablation's top k and "
                              f"k random edges of the fidelity pool ({len(causal['edges'])} edges) removed together; "
                              "bars: range over questions")


def intervention(claim_cell, judged, cell, g, audit):
    record = judged.extra.get("interventions")
    if record is not None:
        part = record["part"]
        claim_cell.add_figure(f"{part}-{judged.cell_id}",
                              intervention_curve_png(record["curve"], part, f"{g.pair} {g.dataset} α={g.alpha:g}: {part}"),
                              f"{judged.claim_id}, {judged.cell_id}: the effect of the chosen k edges and of k random "
                              "edges matched in magnitude, on the log-probability of the reference solution; bars: "
                              "bootstrap interval over questions")


FIGURES = {"intensity": edge_heatmap, "node_entropy": node_entropy, "fidelity": fidelity, "intervention": intervention}
