"""Robustness beside the verdict: a claim is decided on the EAP scores whatever their fidelity, and
re-tested on exact single-edge ablation. Where EAP is exact (a linear model with a linear loss) the two
verdicts agree; an effect planted in the EAP scores alone is caught by the exact version disagreeing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_factories import VOCAB
from test_eap_engine import _linearised_gpt2
from test_reachability import PlantedRecords

from harness.audit.claims import get_claim
from harness.audit.claims.common import FamilyContext, GridCell
from harness.audit.claims.family import judge_claim
from harness.audit.verdicts import Verdict
from harness.circuit.ablation import ablate_edges
from harness.circuit.batches import Sample
from harness.circuit.eap import run_eap

N = 12


def _linear_loss(readout: torch.Tensor):
    def loss(logits, batch):
        return (logits.double() @ readout * batch.target_mask).sum(-1)
    return loss


def _measure(model, samples, loss) -> tuple[np.ndarray, dict, object]:
    """EAP scores [n, n_src, n_dst] and the exact deltas on every real edge, as the fidelity stage keeps them."""
    eap = run_eap(model, samples, loss_fn=loss, progress=False)
    edges = [tuple(e) for e in eap.graph.mask().nonzero().tolist()]
    exact = ablate_edges(model, samples, edges, loss_fn=loss, progress=False)
    us, vs = [u for u, _ in edges], [v for _, v in edges]
    record = {"spearman": 1.0, "ci": [1.0, 1.0], "status": "FAITHFUL", "samples": len(samples),
              "ids": [s.id for s in samples], "edges": [list(e) for e in edges],
              "deltas": exact.delta[:, us, vs].tolist()}
    return eap.scores.double().numpy(), record, eap.graph


class MeasuredRecords(PlantedRecords):
    """PlantedRecords whose cells carry real EAP scores, a graph and the exact deltas of the fidelity stage."""

    def __init__(self, base, post, graph, records):
        super().__init__({("rl", "d", 0.5): (base, post)})
        self.graph, self.records = graph, records

    def cell(self, pair, dataset, alpha, mode="own"):
        cell = super().cell(pair, dataset, alpha, mode)
        cell.base.graph = cell.post.graph = self.graph
        cell.base.mask = cell.post.mask = self.graph.mask()
        cell.fidelity = self.records
        return cell


@pytest.fixture(scope="module")
def linear_pair():
    rng = np.random.default_rng(0)
    samples = [Sample(f"q{i}", tuple(int(t) for t in rng.integers(1, VOCAB, 5)),
                      tuple(int(t) for t in rng.integers(1, VOCAB, 3))) for i in range(N)]
    loss = _linear_loss(torch.randn(VOCAB, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    base = _linearised_gpt2()
    post = _linearised_gpt2()
    with torch.no_grad():
        for p in post.parameters():
            p.mul_(1.25)
    (wb, rb, graph), (wp, rp, _) = _measure(base, samples, loss), _measure(post, samples, loss)
    return wb, wp, graph, {"base": rb, "post": rp}


def _judge(audit, claim_id="C1"):
    g = GridCell("rl", "d", 0.5, None, "own")
    return judge_claim(get_claim(claim_id), audit, [g], FamilyContext())[g]


def test_on_a_linear_model_the_robustness_verdict_equals_the_eap_verdict(linear_pair) -> None:
    wb, wp, graph, records = linear_pair
    cell = _judge(MeasuredRecords(wb, wp, graph, records))
    assert cell.verdict is not Verdict.INVALID
    assert cell.robustness["verdict"] == cell.verdict.value, (cell.reason, cell.robustness["reason"])
    assert cell.robustness["effect"] == pytest.approx(cell.effect, rel=1e-6)
    assert cell.robustness["n"] == N and cell.robustness["n_edges"] >= 1


def test_an_effect_only_in_the_eap_scores_is_caught_by_exact_ablation(linear_pair) -> None:
    """The post model is the base; its EAP scores alone are planted x 1.4. EAP says the intensity rose;
    exact ablation (unchanged) says no change: the robustness verdict disagrees."""
    wb, _, graph, records = linear_pair
    same = {"base": records["base"], "post": records["base"]}
    cell = _judge(MeasuredRecords(wb, 1.4 * wb, graph, same))
    assert cell.verdict is Verdict.SUPPORTED
    assert cell.robustness["verdict"] == "INCONCLUSIVE" and cell.robustness["reason"].startswith("no change")


def test_the_eap_twin_uses_the_exact_verdicts_questions_and_edges(linear_pair) -> None:
    """'EAP on the same sample' reads EAP at exactly the questions and edges of the exact verdict, so the
    two differ only in the estimator: planted x 1.4 in EAP alone, the twin says the intensity rose where
    the exact verdict says no change; on the linear model (EAP exact) the two agree."""
    wb, wp, graph, records = linear_pair
    same = {"base": records["base"], "post": records["base"]}
    planted = _judge(MeasuredRecords(wb, 1.4 * wb, graph, same)).robustness
    twin = planted["eap_same_sample"]
    assert twin["questions"] == planted["questions"] and twin["edges"] == planted["edges"]
    assert len(twin["questions"]) == N and twin["edges"] == records["base"]["edges"]
    assert planted["verdict"] == "INCONCLUSIVE" and twin["verdict"] == "SUPPORTED"
    assert twin["relative_change"] == pytest.approx(0.4, rel=1e-6)
    exact = _judge(MeasuredRecords(wb, wp, graph, records)).robustness
    assert exact["eap_same_sample"]["verdict"] == exact["verdict"]
    assert exact["eap_same_sample"]["effect"] == pytest.approx(exact["effect"], rel=1e-6)


def test_claims_without_a_sampled_version_say_why(linear_pair) -> None:
    wb, wp, graph, records = linear_pair
    for claim_id in ("C2", "C3", "C7"):
        cell = _judge(MeasuredRecords(wb, wp, graph, records), claim_id)
        assert cell.robustness["applicable"] is False and cell.robustness["verdict"] is None
        assert cell.robustness["reason"]


def test_lookahead_as_the_robustness_estimator_agrees_with_eap_where_eap_is_exact(linear_pair) -> None:
    """With robustness_estimator=lookahead the claim's own test reruns on lookahead scores of every edge;
    on the linear model they equal EAP's, and so do the verdicts."""
    wb, wp, graph, records = linear_pair
    audit = MeasuredRecords(wb, wp, graph, records)
    audit.config = audit.config.with_settings({"robustness_estimator": "lookahead"})
    audit.estimates = lambda cell, method: (cell.base, cell.post)
    cell = _judge(audit)
    assert cell.robustness["estimator"].startswith("lookahead") and cell.robustness["verdict"] == cell.verdict.value
    assert _judge(audit, "C7").robustness["verdict"] is not None   # every edge: C7 has a version too


def test_a_stratified_edge_sample_is_weighted_back_to_every_real_edge(linear_pair) -> None:
    """The fidelity stage's stratified sample over-represents the largest |EAP| edges; the exact intensity
    is then the Horvitz-Thompson mean, each edge weighted by N_h / n_h. Planted: a stratified sample of
    the census records; the robustness effect equals that weighted mean computed here with numpy, and
    not the unweighted mean of the same sample (which the top stratum would inflate)."""
    from harness.circuit.fidelity import sample_edges

    wb, wp, graph, records = linear_pair
    chosen = sample_edges(graph, 8, 0, sampling="stratified", importance=torch.from_numpy(np.abs(wb).mean(0)),
                          all_below=0)
    census = [tuple(e) for e in records["base"]["edges"]]
    columns = [census.index(tuple(e)) for e in chosen.edges]
    sampled = {side: {**r, "edges": [list(e) for e in chosen.edges], "weights": list(chosen.weights),
                      "deltas": np.asarray(r["deltas"])[:, columns].tolist()} for side, r in records.items()}
    share = graph.n_edges / (graph.n_src * graph.n_dst)

    def intensity(side: str, weights) -> np.ndarray:
        return share * np.average(np.abs(np.asarray(sampled[side]["deltas"])), axis=1, weights=weights)

    weighted = float(np.mean(intensity("post", chosen.weights) - intensity("base", chosen.weights)))
    plain = float(np.mean(intensity("post", None) - intensity("base", None)))
    assert len(set(chosen.weights)) > 1 and abs(plain - weighted) > 1e-3 * abs(weighted)
    robust = _judge(MeasuredRecords(wb, wp, graph, sampled)).robustness
    assert robust["effect"] == pytest.approx(weighted, rel=1e-9)
