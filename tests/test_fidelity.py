"""Fidelity of EAP against exact ablation: sampling, the bootstrap interval, the status, and known
answers (a model on which EAP is exact; one built to break the linear approximation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_factories import VOCAB, tiny_model
from scipy.stats import chisquare, spearmanr
from test_eap_engine import SAMPLES, _linearised_gpt2

from harness.circuit.ablation import AblationKind, AblationResult, ablate_edges
from harness.circuit.batches import Sample
from harness.circuit.eap import run_eap
from harness.circuit.fidelity import (
    THRESHOLD_BAND,
    Status,
    bootstrap_spearman,
    classify,
    fidelity_for_model,
    measure_fidelity,
    sample_edges,
    status_band,
    weighted_spearman,
    with_sample,
)
from harness.circuit.graph import build_graph
from harness.errors import UserError

RNG = np.random.default_rng(0)
MANY = [Sample(f"s{i}", tuple(int(t) for t in RNG.integers(1, VOCAB, 6)),
               tuple(int(t) for t in RNG.integers(1, VOCAB, 3))) for i in range(6)]


def _linear_loss(seed: int = 3):
    readout = torch.randn(VOCAB, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))

    def loss(logits, batch):
        return (logits.double() @ readout * batch.target_mask).sum(-1)
    return loss


@pytest.mark.parametrize("positions", ["all", "targets"])
def test_a_model_on_which_eap_is_exact_is_faithful_with_a_tight_interval(positions):
    """Linear GPT-2 and a loss linear in the logits: EAP is the exact delta, cell for cell."""
    model, loss = _linearised_gpt2(), _linear_loss()
    eap = run_eap(model, SAMPLES, loss_fn=loss, positions=positions, progress=False)
    record, result = fidelity_for_model(model, SAMPLES, eap, n_edges=20, all_below=0, loss_fn=loss,
                                        n_boot=300, progress=False)
    assert record.sampling == "uniform" and record.bootstrap == "questions x edges"
    assert record.positions == positions == result.positions
    assert record.status == "FAITHFUL" and record.spearman > 0.99
    assert record.ci[1] - record.ci[0] < 0.05 and record.ci[0] >= 0.95
    assert (record.n_questions, record.n_edges, record.n_cells) == (3, 20, 60)
    assert sum(d["n_cells"] for d in record.by_destination.values()) == 60
    assert set(record.by_destination) <= {"q", "k", "v", "mlp", "sink"}
    assert record.band == {"0.3": "FAITHFUL", "0.5": "FAITHFUL", "0.7": "FAITHFUL"}


def test_a_saturated_model_is_unfaithful():
    """Large weights and a saturating tanh(30x) in place of the final norm: removing any edge moves
    the residual far outside the region where the first-order estimate holds."""
    class Saturate(torch.nn.Module):
        def forward(self, x):
            return torch.tanh(30.0 * x)

    model = tiny_model("gpt2", seed=1)
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=1.0, generator=torch.Generator().manual_seed(5))
    model.transformer.ln_f = Saturate()
    eap = run_eap(model, MANY, progress=False)
    record, _ = fidelity_for_model(model, MANY, eap, n_boot=300, progress=False)
    assert record.sampling == "all" and record.bootstrap == "questions"
    assert record.status == "UNFAITHFUL", record
    assert record.ci[1] < 0.5


def test_nan_spearman_is_uncertain_with_a_reason_never_a_decision():
    model = tiny_model("llama")
    eap = run_eap(model, SAMPLES, progress=False)
    edges = [tuple(e) for e in eap.graph.mask().nonzero().tolist()]
    flat = AblationResult(torch.zeros_like(eap.scores), eap.loss, eap.ids, AblationKind.ZERO, edges)
    record = measure_fidelity(eap, flat, n_boot=50)
    assert math.isnan(record.spearman)
    assert record.status == "UNCERTAIN" and "NaN" in record.reason
    assert set(record.band.values()) == {"UNCERTAIN"}
    assert classify(0.9, (math.nan, math.nan), 0.5)[0] is Status.UNCERTAIN


def test_status_rules_and_band():
    assert classify(0.8, (0.6, 0.9), 0.5)[0] is Status.FAITHFUL
    assert classify(0.8, (0.5, 0.9), 0.5)[0] is Status.FAITHFUL        # ci_lo >= threshold
    assert classify(0.2, (0.1, 0.49), 0.5)[0] is Status.UNFAITHFUL
    assert classify(0.5, (0.4, 0.6), 0.5)[0] is Status.UNCERTAIN
    assert status_band(0.5, (0.4, 0.6)) == {"0.3": "FAITHFUL", "0.5": "UNCERTAIN", "0.7": "UNFAITHFUL"}
    assert THRESHOLD_BAND == (0.3, 0.5, 0.7)


def test_by_destination_uses_the_layout_kinds():
    model = tiny_model("qwen2")
    for layout, kinds in (("paper", {"q", "k", "v", "mlp", "sink"}), ("block", {"attn", "mlp", "sink"})):
        eap = run_eap(model, SAMPLES, layout=layout, progress=False)
        edges = [tuple(e) for e in eap.graph.mask().nonzero().tolist()]
        exact = ablate_edges(model, SAMPLES, edges, layout=layout, progress=False)
        record = measure_fidelity(eap, exact, n_boot=50)
        assert set(record.by_destination) == kinds
        assert sum(d["n_cells"] for d in record.by_destination.values()) == record.n_cells == 3 * len(edges)


def test_positions_must_match():
    model = tiny_model("llama")
    eap = run_eap(model, SAMPLES, positions="targets", progress=False)
    exact = ablate_edges(model, SAMPLES, [(0, 8)], positions="all", progress=False)
    with pytest.raises(UserError, match="positions=targets"):
        measure_fidelity(eap, exact)


def test_uniform_sampling_draws_every_edge_equally_often():
    graph = build_graph(12)                                  # 613 real edges
    real = [tuple(e) for e in graph.mask().nonzero().tolist()]
    counts = dict.fromkeys(real, 0)
    draws = 1500
    for seed in range(draws):
        chosen = sample_edges(graph, 40, seed)
        assert chosen.sampling == "uniform" and len(set(chosen.edges)) == 40
        for e in chosen.edges:
            counts[e] += 1
    assert chosen.weights == [613 / 40] * 40
    assert sample_edges(graph, 40, 7).edges == sample_edges(graph, 40, 7).edges != sample_edges(graph, 40, 8).edges
    assert chisquare(list(counts.values())).pvalue > 1e-3
    small = sample_edges(build_graph(2), 40, 0)
    assert small.sampling == "all" and len(small.edges) == build_graph(2).n_edges


def test_stratified_weights_are_inverse_inclusion_probabilities():
    graph = build_graph(12)
    real = [tuple(e) for e in graph.mask().nonzero().tolist()]
    importance = torch.rand(graph.n_src, graph.n_dst, generator=torch.Generator().manual_seed(0))
    hits = dict.fromkeys(real, 0)
    weight_of: dict = {}
    draws = 1500
    for seed in range(draws):
        chosen = sample_edges(graph, 41, seed, sampling="stratified", importance=importance, n_strata=4)
        assert chosen.sampling == "stratified" and len(chosen.edges) == 41
        assert sum(chosen.weights) == pytest.approx(len(real))           # Horvitz-Thompson count
        for e, w in zip(chosen.edges, chosen.weights):
            hits[e] += 1
            assert weight_of.setdefault(e, w) == w                          # a fixed weight per edge
    # empirical inclusion frequency against 1 / weight, pooled per stratum (values 1/weight)
    for w in set(weight_of.values()):
        members = [e for e, x in weight_of.items() if x == w]
        freq = np.mean([hits[e] / draws for e in members])
        assert freq == pytest.approx(1 / w, rel=0.03)
    top = max(real, key=lambda e: float(importance[e]))
    assert weight_of[top] == pytest.approx(154 / 11)                     # 613 → strata 154,153,153,153
    with pytest.raises(UserError, match="needs the EAP scores"):
        sample_edges(graph, 40, 0, sampling="stratified")


def test_weighted_spearman_undoes_the_stratified_design():
    """A population whose correlation is stronger among large |EAP| edges: the unweighted Spearman
    of a top-heavy stratified sample overstates it; the inverse-inclusion weighted one does not.
    Equal weights give the ordinary Spearman."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(600)
    y = x + rng.standard_normal(600) * np.where(np.abs(x) > 1.0, 0.2, 3.0)
    assert weighted_spearman(x, y, np.full(600, 2.0)) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    truth = spearmanr(x, y).statistic
    order = np.argsort(-np.abs(x))
    top, rest = order[:150], order[150:]
    unweighted, weighted = [], []
    for seed in range(200):
        r = np.random.default_rng(seed)
        pick = np.r_[r.choice(top, 60, replace=False), r.choice(rest, 20, replace=False)]
        w = np.r_[np.full(60, 150 / 60), np.full(20, 450 / 20)]
        unweighted.append(spearmanr(x[pick], y[pick]).statistic)
        weighted.append(weighted_spearman(x[pick], y[pick], w))
    assert np.mean(unweighted) - truth > 0.1
    assert abs(np.mean(weighted) - truth) < 0.05


def test_bootstrap_interval_covers_the_true_spearman_at_about_its_level():
    """A finite population of 200 questions × 400 edges with question and edge effects; samples
    of 6 questions × 30 edges; the 90 % two-way interval should cover the population Spearman in
    about 90 % of 200 samples (it errs wide by design)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(400), rng.standard_normal(200)
    exact = a[None, :] * np.exp(0.3 * b[:, None]) + 0.3 * rng.standard_normal((200, 400))
    eap = exact + 0.8 * rng.standard_normal((200, 400)) + 0.5 * b[:, None]
    truth = spearmanr(eap.ravel(), exact.ravel()).statistic
    covered, reps = 0, 200
    for r in range(reps):
        qi, ei = rng.choice(200, 6, replace=False), rng.choice(400, 30, replace=False)
        lo, hi, finite = bootstrap_spearman(eap[np.ix_(qi, ei)], exact[np.ix_(qi, ei)], n_boot=200,
                                            level=0.9, seed=r)
        assert finite == 200
        covered += lo <= truth <= hi
    assert 0.84 <= covered / reps <= 0.995


def test_stratified_record_says_weighted():
    model = tiny_model("llama", n_layers=4)                  # 77 edges
    eap = run_eap(model, SAMPLES, progress=False)
    record, result = fidelity_for_model(model, SAMPLES, eap, n_edges=24, all_below=0, sampling="stratified",
                                        n_boot=100, progress=False)
    assert record.sampling == result.sampling == "stratified" and record.weighted
    assert record.bootstrap == "questions x edges within strata"
    assert len(result.edge_weights) == 24 and len(set(result.edge_strata)) == 4
    with pytest.raises(ValueError):
        with_sample(result, sample_edges(eap.graph, 24, 1, all_below=0))


def test_difference_fidelity_flags_an_estimator_that_ranks_levels_but_gets_the_change_wrong() -> None:
    """Exact deltas: edge levels spread over two decades, post = base + a change per edge of about 5 %.
    The biased estimator reads each model's levels with 2 % noise but is biased against the change in
    proportion to it (EAP_post = exact_post - 2 x change): both models' levels are FAITHFUL, the changes
    UNFAITHFUL with most signs wrong. An unbiased estimator gets the changes right."""
    from harness.circuit.fidelity import bootstrap_spearman, classify, difference_fidelity

    rng = np.random.default_rng(0)
    n_q, n_e = 12, 40
    level = np.exp(rng.normal(0, 1.5, n_e))
    exact_base = level * np.exp(rng.normal(0, 0.1, (n_q, n_e)))
    change = 0.05 * level * rng.normal(size=n_e)
    exact_post = exact_base + change
    noise = lambda: np.exp(rng.normal(0, 0.02, (n_q, n_e)))  # noqa: E731
    eap_base = exact_base * noise()
    biased_post = (exact_post - 2 * change) * noise()
    for est, exact in ((eap_base, exact_base), (biased_post, exact_post)):
        lo, hi, _ = bootstrap_spearman(est, exact, n_boot=200)
        assert classify(0.99, (lo, hi), 0.5)[0].value == "FAITHFUL"
    biased = difference_fidelity(eap_base, exact_base, biased_post, exact_post, threshold=0.5, n_boot=200)
    assert biased["status"] == "UNFAITHFUL" and biased["spearman"] < 0 and biased["sign_agreement"] < 0.3
    honest = difference_fidelity(eap_base, exact_base, exact_post * noise(), exact_post, threshold=0.5, n_boot=200)
    assert honest["status"] == "FAITHFUL" and honest["sign_agreement"] > 0.7



def test_weighted_difference_fidelity_speaks_of_every_edge_not_the_sample() -> None:
    """A stratified sample: 30 edges of a small stratum (weight 1) whose change EAP gets right, and 10
    edges standing for a stratum 100 times as large (weight 100) whose change EAP reverses. Unweighted,
    the sample looks faithful; weighted back to every real edge, most changes are wrong. Equal weights
    give the unweighted answer exactly."""
    from harness.circuit.fidelity import difference_fidelity

    rng = np.random.default_rng(1)
    n_q, n_e = 12, 40
    exact_base = np.exp(rng.normal(0, 1, n_e)) * np.exp(rng.normal(0, 0.05, (n_q, n_e)))
    change = rng.normal(0, 0.3, n_e)
    exact_post = exact_base + change
    reversed_ = np.arange(n_e) >= 30
    eap_post = exact_base + np.where(reversed_, -change, change)
    weights = np.where(reversed_, 100.0, 1.0)
    plain = difference_fidelity(exact_base, exact_base, eap_post, exact_post, threshold=0.5, n_boot=200)
    weighted = difference_fidelity(exact_base, exact_base, eap_post, exact_post, threshold=0.5, n_boot=200,
                                   weights=weights)
    assert plain["spearman"] > 0.3 and plain["sign_agreement"] == pytest.approx(0.75)
    assert weighted["weighted"] and weighted["spearman"] < 0 and weighted["sign_agreement"] < 0.1
    equal = difference_fidelity(exact_base, exact_base, eap_post, exact_post, threshold=0.5, n_boot=200,
                                weights=np.full(n_e, 7.0))
    assert {k: equal[k] for k in ("spearman", "ci", "sign_agreement")} == {
        k: plain[k] for k in ("spearman", "ci", "sign_agreement")}

def test_fidelity_edges_are_drawn_per_base_model_and_dataset() -> None:
    """Both models of a pair share a draw (one base); another dataset or base model draws anew."""
    from harness.audit.stages import edge_seed

    one = edge_seed(0, "sha256:base", "arithmetic_2d")
    assert one == edge_seed(0, "sha256:base", "arithmetic_2d")
    assert len({one, edge_seed(0, "sha256:base", "chain_sum_2d"), edge_seed(0, "sha256:other", "arithmetic_2d"),
                edge_seed(1, "sha256:base", "arithmetic_2d")}) == 4
