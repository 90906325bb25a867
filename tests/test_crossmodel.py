"""Cross-model edge patching (harness.circuit.crossmodel): patching no edge is the recipient, patching
every edge gives each destination the donor's residual, one edge matches a computation with plain HF
hooks; the behaviour probe and the matched random edge sets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from model_factories import FAMILIES, tiny_model

from harness.circuit.batches import Positions, Sample, make_batch
from harness.circuit.crossmodel import (
    answer_scores,
    matched_edges,
    source_magnitude,
    source_values,
    top_edges,
)
from harness.circuit.graph import build_graph
from harness.circuit.intervention import InstrumentedModel, RunState, _first, _submodule, family_of

PROBES = [Sample("a", (1, 2, 3, 4, 5), (6, 7)), Sample("b", (3, 4, 5), (9, 10, 11))]


def _pair(family: str):
    """A donor and a recipient that differs in every layer's weights, sharing embeddings, final norm
    and head (as a LoRA-trained post model does)."""
    donor = tiny_model(family)
    recipient = copy.deepcopy(donor)
    generator = torch.Generator().manual_seed(1)
    for layer in family_of(recipient).layers(recipient):
        for p in layer.parameters():
            if p.dim() > 1:
                p.add_(0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return donor, recipient


def _graph(model):
    return build_graph(len(family_of(model).layers(model)))


def _destination_inputs(model, edges=None, donor=None) -> dict[str, torch.Tensor]:
    """What each MLP slot and the sink read after the intervention, captured by hooks registered after
    the engine's (a pre-hook sees the input the engine's pre-hook returned)."""
    fam, captured, handles = family_of(model), {}, []
    batch = make_batch(PROBES, 0, Positions.ALL)

    def keep(name):
        return lambda module, args: captured.__setitem__(name, args[0].detach().clone())

    with InstrumentedModel(model) as im, torch.no_grad():
        for i, layer in enumerate(fam.layers(model)):
            handles.append(_submodule(layer, fam.mlp_norm).register_forward_pre_hook(keep(f"mlp.{i}")))
        handles.append(fam.final_norm(model).register_forward_pre_hook(keep("sink")))
        mask = None if edges is None else edges.to(next(model.parameters()).dtype)[None]
        try:
            with im.run_state(RunState(edge_mask=mask, ablated=donor)):
                im.logits(batch.input_ids, batch.attention_mask)
        finally:
            for h in handles:
                h.remove()
    return captured


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_no_edge_is_the_recipient_and_every_edge_gives_each_destination_the_donors_residual(family):
    donor, recipient = _pair(family)
    values = source_values(donor, PROBES, 0)
    graph = _graph(recipient)
    own = answer_scores(recipient, PROBES, 0)
    none = answer_scores(recipient, PROBES, 0, torch.zeros(graph.n_src, graph.n_dst), values)
    assert np.array_equal(none.logprob, own.logprob) and np.array_equal(none.hit, own.hit)
    everything = graph.mask().double()
    real = make_batch(PROBES, 0, Positions.ALL).attention_mask.bool()
    donor_reads, own_reads = _destination_inputs(donor), _destination_inputs(recipient)
    patched_reads = _destination_inputs(recipient, everything, values)
    assert set(patched_reads) == {f"mlp.{i}" for i in range(len(family_of(donor).layers(donor)))} | {"sink"}
    for name, x in patched_reads.items():
        assert torch.allclose(x[real], donor_reads[name][real], atol=1e-9), name
        assert not torch.allclose(own_reads[name][real], donor_reads[name][real], atol=1e-4), name
    # the sink reads the donor's final residual, and norm and head are shared: the donor's own scores
    donor_scores = answer_scores(donor, PROBES, 0)
    patched = answer_scores(recipient, PROBES, 0, everything, values)
    assert np.allclose(patched.logprob, donor_scores.logprob, atol=1e-9)
    assert not np.allclose(own.logprob, donor_scores.logprob, atol=1e-4)


def _plain_logprob(model, source_module, replacement=None):
    """Independent of the engine: the recipient's answer log-prob with layer 0's attention output
    at the final norm swapped for `replacement` (plain forward hooks); also returns that output."""
    fam = family_of(model)
    captured = {}
    h1 = source_module(model).register_forward_hook(lambda m, a, out: captured.__setitem__("z", _first(out).detach()))
    h2 = fam.final_norm(model).register_forward_pre_hook(
        lambda m, a: (a[0] - captured["z"] + replacement, *a[1:]) if replacement is not None else None)
    batch = make_batch(PROBES, 0, Positions.ALL)
    try:
        with torch.no_grad():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    finally:
        h1.remove()
        h2.remove()
    logprobs = torch.log_softmax(logits.double(), -1)
    total = [sum(float(logprobs[i, len(s.prompt_ids) - 1 + j, t]) for j, t in enumerate(s.target_ids))
             for i, s in enumerate(PROBES)]
    return np.array(total), captured["z"]


@pytest.mark.parametrize("family", FAMILIES)
def test_one_patched_edge_equals_swapping_that_source_at_the_sink_by_hand(family):
    donor, recipient = _pair(family)
    fam = family_of(recipient)

    def attention_output(model):
        return _submodule(fam.layers(model)[0], fam.attn_out)

    _, donor_z = _plain_logprob(donor, attention_output)
    expected, _ = _plain_logprob(recipient, attention_output, donor_z)
    graph = _graph(recipient)
    edge = torch.zeros(graph.n_src, graph.n_dst)
    edge[graph.source_index("attn.0"), graph.destination_index("sink")] = 1.0
    got = answer_scores(recipient, PROBES, 0, edge, source_values(donor, PROBES, 0))
    assert np.allclose(got.logprob, expected, atol=1e-9)
    assert not np.allclose(got.logprob, answer_scores(recipient, PROBES, 0).logprob, atol=1e-6)


def test_zero_ablation_of_a_patched_edge_is_the_donor_of_zeros():
    """No donor: the chosen edges are zero-ablated (the necessity check), as a donor of zeros."""
    model = tiny_model("llama")
    graph = _graph(model)
    edges = top_edges(torch.rand(graph.n_src, graph.n_dst, generator=torch.Generator().manual_seed(0)), graph, 5)
    zeros = torch.zeros_like(source_values(model, PROBES, 0))
    assert np.array_equal(answer_scores(model, PROBES, 0, edges).logprob,
                          answer_scores(model, PROBES, 0, edges, zeros).logprob)


def test_top_and_matched_edges():
    graph = build_graph(2)
    real = graph.mask()
    score = torch.arange(graph.n_src * graph.n_dst, dtype=torch.float32).view(graph.n_src, graph.n_dst)
    chosen = top_edges(score, graph, 4)
    assert chosen.sum() == 4 and bool((chosen.bool() <= real).all())
    assert score[chosen.bool()].min() >= score[real & ~chosen.bool()].max()   # the 4 largest real ones
    magnitude = torch.rand(graph.n_src, graph.n_dst, generator=torch.Generator().manual_seed(3))
    drawn = matched_edges(chosen, magnitude, graph, bins=2, rng=np.random.default_rng(0))
    assert drawn.sum() == 4 and not bool((drawn.bool() & chosen.bool()).any()) and bool((drawn.bool() <= real).all())
    cut = float(np.quantile(magnitude[real].numpy(), 0.5))   # the two bins' boundary
    assert sorted((magnitude[drawn.bool()] >= cut).tolist()) == sorted((magnitude[chosen.bool()] >= cut).tolist())
    values = torch.zeros(graph.n_src, 2, 5, 3)
    values[2] = 2.0                                          # source 2: norm sqrt(12) at every position
    mag = source_magnitude(values, [Sample("a", (1, 2), (3, 4, 5, 6)), Sample("b", (1,), (2, 3))], graph)
    assert torch.allclose(mag[2], torch.full((graph.n_dst,), 12 ** 0.5)) and float(mag[1].abs().max()) == 0
