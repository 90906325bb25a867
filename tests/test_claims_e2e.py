"""A claim run end to end on tiny models: EAP on a base and a perturbed copy, per-sample metrics,
paired tests, Holm verdicts, recorded through the plugin, every report file written and consistent
with the pytest outcomes. The "post-trained" model is the base with its weights scaled: a test
stand-in, not a real pair."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS_DIR = Path(__file__).resolve().parent

CONFTEST = f'''
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
pytest_plugins = ["harness.pytest_plugin"]
'''

CLAIM_FILE = '''
import functools

import numpy as np
import pytest
import torch
from model_factories import VOCAB, tiny_model

from harness.circuit.batches import Sample
from harness.circuit.eap import run_eap
from harness.analysis.metrics import METRICS, MetricConfig, node_entropy_by_node, per_sample_values
from harness.analysis.stats.paired import paired_test
from harness.audit.verdicts import family_verdicts
from harness.audit.verdicts import CellResult

CLAIM_GRID = {"pair": ["tiny-llama"], "dataset": ["random-tokens"], "alpha": [0.3, 1.0]}
N_QUESTIONS = 12
ANSWER_LENGTH = 10


@functools.cache
def edge_scores(alpha):
    """W of base and scaled copy on the same random prompts, answers cut to alpha of their length."""
    base = tiny_model("llama", seed=0)
    post = tiny_model("llama", seed=0)
    with torch.no_grad():
        for p in post.parameters():
            p.mul_(1.15)
    rng = np.random.default_rng(0)
    t_cut = max(int(alpha * ANSWER_LENGTH), 1)
    samples = [Sample(f"q{i}", tuple(int(t) for t in rng.integers(1, VOCAB, 6)),
                      tuple(int(t) for t in rng.integers(1, VOCAB, ANSWER_LENGTH))[:t_cut])
               for i in range(N_QUESTIONS)]
    b = run_eap(base, samples, progress=False)
    p = run_eap(post, samples, progress=False)
    return b.scores.numpy(), p.scores.numpy(), b.mask.numpy(), b.graph


def judge(claim_cell, metric, pair, dataset, alpha):
    W_base, W_post, mask, _ = edge_scores(alpha)
    values = per_sample_values(metric, W_base, W_post, mask, MetricConfig())
    test = paired_test(values.base, values.post, METRICS[metric].direction, n_boot=400, n_perm=2000)
    (verdict,) = family_verdicts([test], min_n=10)
    return CellResult(
        claim_id=claim_cell.claim.id, claim_name=claim_cell.claim.name,
        cell_id=claim_cell.cell_id(pair, dataset, alpha=alpha), verdict=verdict.label,
        rule=verdict.rule, reason=verdict.reason, pair=pair, dataset=dataset, alpha=alpha, metric=metric,
        token_mode="shared", n=test.n, base_value=test.mean_base, post_value=test.mean_post,
        effect=test.mean_diff, ci_low=test.ci_low, ci_high=test.ci_high, ci_method=test.ci_method,
        effect_size=test.hedges_dz, p_value=test.p_claimed, p_holm=verdict.p_adjusted,
        funnel=[{"stage": "random prompts", "n": N_QUESTIONS}, {"stage": "scored", "n": test.n}],
        extra={"permutation": test.permutation_method, "wilcoxon": test.wilcoxon_method, "p_wilcoxon": test.p_wilcoxon},
        provenance={"base": "tiny llama, seed 0", "post": "tiny llama, seed 0, weights x1.15",
                    "metric_config": values.config})


@pytest.mark.claim("C1")
def test_intensity(claim_cell, pair, dataset, alpha):
    claim_cell.record(judge(claim_cell, "intensity", pair, dataset, alpha))


@pytest.mark.claim("C3")
def test_kurtosis(claim_cell, pair, dataset, alpha):
    claim_cell.record(judge(claim_cell, "kurtosis", pair, dataset, alpha))


@pytest.mark.claim("C7")
def test_node_entropy(claim_cell, pair, dataset, alpha):
    W_base, W_post, mask, graph = edge_scores(alpha)
    if alpha == 1.0:
        claim_cell.add_edge_heatmap(pair, np.abs(W_base).mean(0), np.abs(W_post).mean(0),
                                    list(graph.sources), graph.destination_names)
        config = MetricConfig()
        claim_cell.add_node_entropy(pair, list(graph.sources),
                                    np.nanmean(node_entropy_by_node(W_base, mask, config), axis=0),
                                    np.nanmean(node_entropy_by_node(W_post, mask, config), axis=0))
    claim_cell.record(judge(claim_cell, "node_entropy", pair, dataset, alpha))
'''


@pytest.mark.slow
def test_tiny_model_claim_run_writes_consistent_reports(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_tiny_claims=CLAIM_FILE)
    result = pytester.runpytest("--run-id", "tiny", "--junitxml=junit.xml", "-p", "no:cacheprovider")
    run_dir = pytester.path / "reports" / "tiny"
    document = json.loads((run_dir / "claims.json").read_text())
    verdicts = document["summary"]["verdicts"]
    assert document["summary"]["cells"] == 6
    # Each recorded verdict is the pytest outcome of its test.
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) == verdicts["SUPPORTED"]
    assert outcomes.get("failed", 0) == verdicts["REFUTED"]
    assert outcomes.get("inconclusive", 0) == verdicts["INCONCLUSIVE"]
    assert outcomes.get("errors", 0) == verdicts["INVALID"]
    result.stdout.fnmatch_lines(["*= claim matrix =*", "tiny-llama · random-tokens · a030*",
                                 "tiny-llama · random-tokens · a100*"])
    for cell in document["cells"]:
        assert cell["n"] == 12 and cell["p_holm"] is not None and cell["rule"].startswith("SUPPORTED if")
        assert cell["provenance"]["run_id"] == "tiny" and cell["provenance"]["metric_config"]["bins"] > 0
        if cell["verdict"] != "INVALID":
            assert cell["ci_low"] <= cell["effect"] <= cell["ci_high"]
    figures = {f["name"] for f in document["figures"]}
    assert {"heatmap-tiny_llama", "node-entropy-tiny_llama", "C1-alpha", "C3-alpha", "C7-alpha"} <= figures
    assert all((run_dir / "figures" / f"{name}.png").stat().st_size > 1000 for name in figures)
    assert (run_dir / "claims.html").read_text().count("data:image/png;base64,") == len(figures)
    assert "C3-kurtosis-tiny_llama-random_tokens-a100" in (run_dir / "claims.md").read_text()
    assert len(ET.parse(run_dir / "claims-junit.xml").getroot().findall(".//testcase")) == 6
    cases = ET.parse(pytester.path / "junit.xml").getroot().findall(".//testcase")
    assert sorted(p.get("value") for c in cases for p in c.iter("property") if p.get("name") == "claim_id") == \
        ["C1", "C1", "C3", "C3", "C7", "C7"]
