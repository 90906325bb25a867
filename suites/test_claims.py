"""The paper's nine claims (arXiv 2509.21044), one test per claim, one cell per grid point.

Grid axes come from the options (--pairs --datasets --alphas --metrics --token-mode) or from the
pair registry's bundled pairs. Each claim reads the pairs it speaks about: online RL for C1-C3,
C5-C7; preference pairs for C4; every pair for C8 and C9. Select with -k, e.g.
`-k C1`, `-k intensity`, `-k "smollm2_grpo and a030"`.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.metrics import node_entropy_by_node
from harness.report.plots import causal_curve_png, fidelity_scatter


@pytest.mark.claim("C1")
def test_intensity(claim_cell, judged, figure_cell, pair, dataset, alpha, token_mode):
    if figure_cell is not None:
        graph = figure_cell.base.graph
        claim_cell.add_edge_heatmap(pair, np.abs(figure_cell.base.scores.numpy()).mean(0),
                                    np.abs(figure_cell.post.scores.numpy()).mean(0),
                                    list(graph.sources), graph.destination_names)
    claim_cell.record(judged)


@pytest.mark.claim("C2")
def test_complexity(claim_cell, judged, pair, dataset, alpha, token_mode):
    claim_cell.record(judged)


@pytest.mark.claim("C3")
def test_kurtosis(claim_cell, judged, pair, dataset, alpha, token_mode):
    claim_cell.record(judged)


@pytest.mark.claim("C4")
def test_dpo_deviates(claim_cell, judged, pair, dataset, alpha, metric, token_mode):
    claim_cell.record(judged)


@pytest.mark.claim("C5")
def test_alpha_fade(claim_cell, judged, pair, dataset, metric, token_mode):
    claim_cell.record(judged)


@pytest.mark.claim("C6")
def test_diversity(claim_cell, judged, token_mode):
    claim_cell.record(judged)


@pytest.mark.claim("C7")
def test_node_entropy(claim_cell, judged, audit, figure_cell, pair, dataset, alpha, token_mode):
    if figure_cell is not None:
        config, mask = audit.config.metrics, figure_cell.base.mask.numpy()
        base = np.nanmean(node_entropy_by_node(figure_cell.base.scores.numpy(), mask, config), axis=0)
        post = np.nanmean(node_entropy_by_node(figure_cell.post.scores.numpy(), mask, config), axis=0)
        claim_cell.add_node_entropy(pair, list(figure_cell.base.graph.sources), base, post)
    claim_cell.record(judged)


@pytest.mark.claim("C8")
def test_eap_fidelity(claim_cell, judged, pair, dataset, alpha, token_mode):
    points = {key.rsplit("/", 1)[-1]: (f["points"]["eap"], f["points"]["exact"])   # none on an INVALID cell
              for key, f in judged.extra.get("fidelity", {}).items() if "points" in f}
    if points:
        title = f"{pair} {dataset} α={alpha:g}: EAP vs exact ablation"
        claim_cell.add_figure(f"fidelity-{judged.cell_id}", fidelity_scatter(points, title),
                              f"C8, {judged.cell_id}: EAP score vs exact ΔL per (question, sampled edge); "
                              "grey: y = x")
    causal = judged.extra.get("causal")
    if causal is not None:
        claim_cell.add_figure(f"causal-{judged.cell_id}",
                              causal_curve_png(causal, f"{pair} α={alpha:g}, post model: top-k EAP vs random edges"),
                              f"C8, {judged.cell_id}: loss with the top-k EAP edges vs k random edges removed "
                              f"({len(causal['loss_removed_random'][0])} draws), and faithfulness of the "
                              "circuits that keep only them")
    claim_cell.record(judged)


@pytest.mark.claim("C9")
def test_accuracy(claim_cell, judged, pair, dataset):
    claim_cell.record(judged)
