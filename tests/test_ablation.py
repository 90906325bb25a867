"""Exact edge ablation, its fast path, and the fidelity/causal checks built on it."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from model_factories import FAMILIES, VOCAB, tiny_model
from test_eap_engine import SAMPLES, _linearised_gpt2

from harness.circuit.ablation import (
    ablate_edges,
    fast_edge_deltas,
    mean_sources,
    naive_edge_deltas,
    one_hot_masks,
    record_clean,
    record_sources,
    stacked_variant_losses,
)
from harness.circuit.batches import Positions, Sample, make_batch, target_nll
from harness.circuit.causal import acdc, causal_curve, causal_ks, edge_integrated_gradient, topk_against_exact
from harness.circuit.eap import run_eap
from harness.circuit.fidelity import measure_fidelity
from harness.circuit.graph import build_graph
from harness.circuit.intervention import InstrumentedModel, RunState
from harness.errors import UserError

ONE = SAMPLES[0]


def _all_edges(graph):
    return [tuple(e) for e in graph.mask().nonzero().tolist()]


def _logits(im, batch, **state):
    with torch.no_grad(), im.run_state(RunState(**state)):
        return im.logits(batch.input_ids, batch.attention_mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_ablation_is_clean_and_removing_every_sink_edge_empties_the_residual(family):
    model = tiny_model(family)
    batch = make_batch([ONE], 0, Positions.ALL)
    with InstrumentedModel(model, "paper") as im:
        graph = im.graph
        clean = _logits(im, batch)
        nothing = _logits(im, batch, edge_mask=torch.zeros(1, graph.n_src, graph.n_dst, dtype=torch.float64))
        assert torch.equal(clean, nothing)
        sink_cut = torch.zeros(1, graph.n_src, graph.n_dst, dtype=torch.float64)
        sink_cut[0, :, -1] = 1
        emptied = _logits(im, batch, edge_mask=sink_cut)
    zero = torch.zeros(1, batch.input_ids.shape[1], model.config.hidden_size if family != "gpt2"
                       else model.config.n_embd, dtype=torch.float64)
    final_norm = model.transformer.ln_f if family == "gpt2" else model.model.norm
    expected = model.get_output_embeddings()(final_norm(zero))
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        expected = torch.tanh(expected / cap) * cap
    torch.testing.assert_close(emptied, expected)


def test_patching_every_sink_edge_gives_the_corrupted_run():
    model = tiny_model("llama")
    corrupted = Sample("bad", (9, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7), ONE.target_ids)
    clean_batch = make_batch([ONE], 0, Positions.ALL)
    bad_batch = make_batch([corrupted], 0, Positions.ALL)
    with InstrumentedModel(model, "paper") as im:
        patched = record_sources(im, bad_batch)
        cut = torch.zeros(1, im.graph.n_src, im.graph.n_dst, dtype=torch.float64)
        cut[0, :, -1] = 1
        result = _logits(im, clean_batch, edge_mask=cut, ablated=patched)
        corrupted_logits = _logits(im, bad_batch)
    torch.testing.assert_close(result, corrupted_logits)


def test_single_edge_ablation_matches_a_hand_recomputed_layer():
    model = tiny_model("llama")
    batch = make_batch([ONE], 0, Positions.ALL)
    layer = model.model.layers[0]
    with InstrumentedModel(model, "paper") as im:
        graph = im.graph
        v = graph.destination_index("mlp.0")
        m = torch.zeros(1, graph.n_src, graph.n_dst, dtype=torch.float64)
        m[0, 0, v] = 1                                   # remove embed → mlp.0
        with torch.no_grad(), im.run_state(RunState()) as clean:
            im.logits(batch.input_ids)
        with torch.no_grad(), im.run_state(RunState(edge_mask=m)) as ablated:
            im.logits(batch.input_ids)
    # by hand: the MLP reads only attn.0's output once the embedding edge is gone
    by_hand = layer.mlp(layer.post_attention_layernorm(clean.live[1]))
    torch.testing.assert_close(ablated.live[2], by_hand)
    torch.testing.assert_close(ablated.live[1], clean.live[1])   # upstream is untouched


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_path_equals_naive_path_on_every_edge(family):
    model = tiny_model(family)
    batch = make_batch([ONE], 0, Positions.ALL)
    with InstrumentedModel(model, "paper") as im:
        edges = _all_edges(im.graph)
        fast = fast_edge_deltas(im, batch, edges, chunk=7)
        naive = naive_edge_deltas(im, batch, edges)
    assert naive.abs().max() > 1e-3
    torch.testing.assert_close(fast, naive, rtol=1e-9, atol=1e-9)


def test_eap_is_the_derivative_of_exact_ablation_at_zero():
    """Central finite differences in float64 (GPT-2: its LayerNorm stays in float64, whereas the
    RMSNorm families normalise in float32 internally)."""
    model = tiny_model("gpt2")
    eap = run_eap(model, [ONE], progress=False)
    batch = make_batch([ONE], 0, Positions.ALL)
    eps = 1e-5
    with InstrumentedModel(model, "paper") as im:
        for u, v in _all_edges(im.graph):
            losses = []
            for sign in (1, -1):
                m = torch.zeros(1, im.graph.n_src, im.graph.n_dst, dtype=torch.float64)
                m[0, u, v] = sign * eps
                with torch.no_grad(), im.run_state(RunState(edge_mask=m)):
                    losses.append(float(target_nll(im.logits(batch.input_ids), batch)))
            finite_difference = (losses[0] - losses[1]) / (2 * eps)
            assert eap.scores[0, u, v].item() == pytest.approx(finite_difference, rel=1e-4, abs=1e-6)


def test_linear_model_eap_equals_exact_ablation_and_ig_converges_on_a_nonlinear_one():
    linear = _linearised_gpt2()
    readout = torch.randn(VOCAB, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def linear_loss(logits, batch):
        return (logits.double() @ readout * batch.target_mask).sum(-1)

    eap = run_eap(linear, [ONE], loss_fn=linear_loss, progress=False)
    graph = eap.graph
    exact = ablate_edges(linear, [ONE], _all_edges(graph), loss_fn=linear_loss, progress=False)
    mask = graph.mask()
    torch.testing.assert_close(eap.scores[0][mask].double(), exact.delta[0][mask].double(),
                               rtol=1e-6, atol=1e-6 * float(exact.delta[0][mask].abs().max()))

    model = tiny_model("llama")
    edge = (0, build_graph(2).destination_index("sink"))
    truth = float(ablate_edges(model, [ONE], [edge], progress=False).delta[0, edge[0], edge[1]])
    errors = [abs(edge_integrated_gradient(model, ONE, edge, steps) - truth) for steps in (1, 4, 16)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01 * abs(truth)


def test_acdc_recovers_a_planted_circuit():
    """Attention outputs and the second MLP write nothing: only embed→mlp.0, embed→sink and
    mlp.0→sink can matter."""
    model = tiny_model("llama")
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight.zero_()
    model.model.layers[1].mlp.down_proj.weight.zero_()
    graph = build_graph(2)
    planted = torch.zeros(graph.n_src, graph.n_dst, dtype=torch.bool)
    mlp0, sink = graph.destination_index("mlp.0"), graph.destination_index("sink")
    planted[0, mlp0] = planted[0, sink] = planted[graph.source_index("mlp.0"), sink] = True
    result = acdc(model, SAMPLES, threshold=1e-6, progress=False)
    assert torch.equal(result.circuit, planted)
    assert result.faithfulness == pytest.approx(1.0, abs=1e-9)


def test_mean_and_patch_ablations_and_their_errors():
    model = tiny_model("mistral")
    with InstrumentedModel(model, "paper") as im:
        per_position = mean_sources(im, SAMPLES, 0)
        per_token = mean_sources(im, SAMPLES, 0, over="tokens")
    width = max(s.input_length for s in SAMPLES)
    assert per_position.shape == (5, 1, width, 32) and per_token.shape == (5, 1, 1, 32)
    edges = [(0, 8), (3, 8)]
    mean = ablate_edges(model, SAMPLES, edges, kind="mean", progress=False)
    zero = ablate_edges(model, SAMPLES, edges, kind="zero", progress=False)
    assert torch.isfinite(mean.delta[:, 0, 8]).all() and not torch.allclose(mean.delta[:, 0, 8], zero.delta[:, 0, 8])
    assert torch.isnan(mean.delta[:, 1, 1]).all()
    with pytest.raises(UserError, match="patching needs equal lengths"):
        ablate_edges(model, [ONE], edges, kind="patch", corrupted=[Sample("c", (1, 2), (3,))], progress=False)
    with pytest.raises(UserError, match="needs corrupted inputs"):
        ablate_edges(model, [ONE], edges, kind="patch", progress=False)
    with pytest.raises(UserError, match=r"edge \(4, 0\) is not an edge"):
        ablate_edges(model, [ONE], [(4, 0)], progress=False)


def test_fidelity_on_a_tiny_model_and_the_gate():
    model = tiny_model("llama")
    eap = run_eap(model, SAMPLES, progress=False)
    exact = ablate_edges(model, SAMPLES, _all_edges(eap.graph), progress=False)
    fid = measure_fidelity(eap, exact, n_boot=200)
    assert fid.n_edges == eap.graph.n_edges and fid.n_questions == 3
    assert -1 <= fid.spearman <= 1 and 0 <= fid.sign_agreement <= 1 and 0 <= fid.topk_recall <= 1
    perfect = measure_fidelity(eap, type(exact)(eap.scores.clone(), exact.clean_loss, exact.ids,
                                                exact.kind, exact.edges), n_boot=200)
    assert perfect.spearman == pytest.approx(1) and perfect.relative_error == 0 and perfect.topk_recall == 1


def test_causal_curve_endpoints():
    model = tiny_model("gemma3_text")
    eap = run_eap(model, SAMPLES, progress=False)
    n = eap.graph.n_edges
    curve = causal_curve(model, SAMPLES, eap, ks=[1, 4, n], n_random=2, progress=False)
    assert curve.loss_removed_top[-1] == pytest.approx(curve.loss_all_removed)
    assert curve.faithfulness_top[-1] == pytest.approx(1.0)
    assert all(f == pytest.approx(1.0) for f in curve.faithfulness_random[-1])
    assert len(curve.loss_removed_random[0]) == 2


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_zero_mask_control_cancels_exactly_and_deltas_equal_the_naive_path(family):
    """Variant 0 of a stacked run removes nothing: a second all-zero variant in the same run has
    delta exactly 0, and every edge's delta against the control equals the naive path's."""
    model = tiny_model(family)
    batch = make_batch([ONE], 0, Positions.ALL)
    with InstrumentedModel(model, "paper") as im:
        graph = im.graph
        clean = record_clean(im, batch)
        for layer in range(graph.n_layers + 1):
            edges = [(u, v) for u, v in _all_edges(graph) if graph.destinations[v].layer == layer]
            masks = one_hot_masks(graph, edges, torch.float64, torch.device("cpu"))
            zero = torch.zeros_like(masks[:1])
            losses = stacked_variant_losses(im, batch, clean, layer, torch.cat([zero, zero, masks]))
            assert losses[1] - losses[0] == 0
            naive = naive_edge_deltas(im, batch, edges)
            torch.testing.assert_close(losses[2:] - losses[0], naive, rtol=1e-9, atol=1e-12)
        edges = _all_edges(graph)
        torch.testing.assert_close(fast_edge_deltas(im, batch, edges, chunk=5), naive_edge_deltas(im, batch, edges),
                                   rtol=1e-9, atol=1e-12)


def test_sink_restarts_from_the_recorded_residual():
    """The fast path's sink variants start from the residual the clean run fed the final norm (the
    last layer's output), not from a re-sum of the recorded sources: with every source replaced by
    garbage, the sink's zero-mask control still reproduces the clean loss bit for bit."""
    model = tiny_model("llama", dtype=torch.bfloat16)
    batch = make_batch([ONE], 0, Positions.ALL)
    with InstrumentedModel(model, "paper") as im:
        clean = record_clean(im, batch)
        recorded = clean.state.recorded_inputs[im.graph.n_dst - 1]
        with torch.no_grad():
            direct = model.model(input_ids=batch.input_ids, use_cache=False)
        for u in clean.state.live:
            clean.state.live[u] = torch.full_like(clean.state.live[u], 7.0)
        zero = torch.zeros(2, im.graph.n_src, im.graph.n_dst, dtype=torch.bfloat16)
        control = stacked_variant_losses(im, batch, clean, im.graph.n_layers, zero)
    # HF's last hidden state is after the final norm; the norm's input is what was recorded
    torch.testing.assert_close(model.model.norm(recorded), direct.last_hidden_state, rtol=0, atol=0)
    assert torch.equal(control, clean.loss.expand(2))


def test_bf16_ablation_upcasts_to_float32_and_matches_a_float64_reference():
    """bf16 weights: the fast path in float32 (a layer at a time) agrees with the naive path on a float64 copy
    of the same weights to 1e-4 of the largest |delta| (sink edges included); ablating in bf16
    (no upcast, the former behaviour) misses that tolerance by orders of magnitude."""
    import copy

    model = tiny_model("llama", dtype=torch.bfloat16)
    edges = _all_edges(build_graph(2))
    assert any(v == build_graph(2).n_dst - 1 for _, v in edges)
    upcast = ablate_edges(model, SAMPLES, edges, progress=False)
    assert upcast.dtype == "float32" and next(model.parameters()).dtype == torch.bfloat16
    reference = ablate_edges(copy.deepcopy(model).double(), SAMPLES, edges, fast=False, progress=False)
    assert reference.dtype == "float64"
    mask = build_graph(2).mask()
    ref = reference.delta[:, mask].double()
    tolerance = 1e-4 * float(ref.abs().max())
    assert float((upcast.delta[:, mask].double() - ref).abs().max()) < tolerance
    old = ablate_edges(model, SAMPLES, edges, upcast=False, control=False, progress=False)
    assert old.dtype == "bfloat16"
    assert float((old.delta[:, mask].double() - ref).abs().max()) > 10 * tolerance


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_targets_only_ablation_matches_a_position_masked_reference(family):
    """positions=targets removes each edge only where a target is predicted. Reference: patch
    ablation whose patched value is the clean source at non-target positions and zero at target
    positions (the sources feeding v are upstream of v, so unaffected), run on the naive path."""
    model = tiny_model(family)
    edges = _all_edges(build_graph(2))
    targets = ablate_edges(model, [ONE], edges, positions="targets", progress=False)
    everywhere = ablate_edges(model, [ONE], edges, positions="all", progress=False)
    naive = ablate_edges(model, [ONE], edges, positions="targets", fast=False, progress=False)
    assert targets.positions == "targets"
    batch = make_batch([ONE], 0, Positions.TARGETS)
    with InstrumentedModel(model, "paper") as im:
        clean = record_sources(im, batch)                               # [n_src, 1, t, h]
        patched = clean * (1 - batch.target_mask)[None, :, :, None].to(clean.dtype)
        reference = naive_edge_deltas(im, batch, edges, ablated=patched)
    mask = build_graph(2).mask()
    torch.testing.assert_close(targets.delta[0][mask], reference.float(), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(naive.delta[0][mask], reference.float(), rtol=1e-6, atol=1e-9)
    differs = (targets.delta[0][mask] - everywhere.delta[0][mask]).abs()
    assert float(differs.max()) > 1e-3


def test_patch_sources_are_computed_per_sample_when_it_is_ablated(monkeypatch):
    """Only one sample's corrupted source stack exists at a time: each is recorded right before its
    sample's clean run, and the deltas equal those of the stacks computed up front."""
    from harness.circuit import ablation

    model = tiny_model("llama")
    corrupted = [Sample(f"c{i}", tuple((t + 1) % VOCAB for t in s.prompt_ids), s.target_ids)
                 for i, s in enumerate(SAMPLES)]
    edges = [(0, 8), (3, 8)]
    order, patch, clean = [], ablation.patch_sources, ablation.record_clean
    monkeypatch.setattr(ablation, "patch_sources", lambda im, bad, pad: order.append(bad.id) or patch(im, bad, pad))
    monkeypatch.setattr(ablation, "record_clean", lambda im, batch, *a: order.append("clean") or clean(im, batch, *a))
    result = ablate_edges(model, SAMPLES, edges, kind="patch", corrupted=corrupted, progress=False)
    assert order == [x for c in corrupted for x in (c.id, "clean")]
    with InstrumentedModel(model, "paper") as im:
        for n, (sample, bad) in enumerate(zip(SAMPLES, corrupted)):
            ablated = record_sources(im, make_batch([bad], 0, Positions.ALL))
            batch = make_batch([sample], 0, Positions.ALL)
            expected = ablation.naive_edge_deltas(im, batch, edges, ablated)
            assert torch.allclose(result.delta[n, [0, 3], [8, 8]], expected.float(), atol=1e-9)


def test_topk_against_exact_reads_the_pool_and_can_fail():
    """The causal check C8 decides on. Planted truths: with EAP replaced by the exact deltas themselves,
    both choices are one set and lose alike (closed share 1); removing exact's top 1 edge costs exactly
    that edge's single-edge delta (computed independently by ablate_edges); a ranking turned upside down
    beats nothing: it closes less than none of the gap to exact's choice."""
    from harness.audit.claims.fidelity import closed_share

    model = tiny_model("llama")
    graph = build_graph(model.config.num_hidden_layers, "paper")
    pool = [tuple(e) for e in graph.mask().nonzero().tolist()]
    exact = ablate_edges(model, SAMPLES, pool, progress=False)
    us, vs = [u for u, _ in pool], [v for _, v in pool]
    deltas = exact.delta[:, us, vs].double().numpy()
    ks = causal_ks(len(pool))
    same = topk_against_exact(model, SAMPLES, graph, pool, deltas, deltas, ks=ks, progress=False)
    assert same.chosen_eap == same.chosen_exact and same.question_loss_eap == same.question_loss_exact
    assert closed_share(asdict(same)) == pytest.approx(1.0)
    best = int(deltas.mean(0).argmax())
    assert same.chosen_exact[0] == [best]
    single = np.asarray(same.question_loss_exact[0]) - np.asarray(same.loss_clean)
    assert single == pytest.approx(deltas[:, best], abs=1e-5)
    upside_down = topk_against_exact(model, SAMPLES, graph, pool, -deltas, deltas, ks=ks, progress=False)
    assert closed_share(asdict(upside_down)) < 0
    with pytest.raises(ValueError, match=f"half of the {len(pool)} pool edges"):
        topk_against_exact(model, SAMPLES, graph, pool, deltas, deltas, ks=[len(pool) // 2 + 1], progress=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_ablation_equals_the_unchunked_one(family, monkeypatch):
    """The target span's losses taken 1 or 3 positions at a time equal those over the whole span: bit
    for bit on a float64 model, and within 4 float32 ulps of the loss on a float32 one (the head's
    matmul rounds differently for fewer rows). No head call sees more positions than the chunk."""
    edges = _all_edges(build_graph(2))
    mask = build_graph(2).mask()
    widths = []
    head = InstrumentedModel.head
    monkeypatch.setattr(InstrumentedModel, "head", lambda im, normed: widths.append(normed.shape[1]) or head(im, normed))
    for dtype in (torch.float64, torch.float32):
        model = tiny_model(family, dtype=dtype)
        whole = ablate_edges(model, SAMPLES, edges, progress=False, logit_chunk=10 ** 6)
        assert max(widths) > 3
        for chunk in (1, 3):
            widths.clear()
            chunked = ablate_edges(model, SAMPLES, edges, progress=False, logit_chunk=chunk)
            assert max(widths) == chunk
            if dtype is torch.float64:
                assert torch.equal(chunked.delta[:, mask], whole.delta[:, mask])
                assert torch.equal(chunked.clean_loss, whole.clean_loss)
            else:
                ulp = 4 * torch.finfo(torch.float32).eps * float(whole.clean_loss.abs().max())
                assert float((chunked.delta[:, mask] - whole.delta[:, mask]).abs().max()) <= 2 * ulp
                assert float((chunked.clean_loss - whole.clean_loss).abs().max()) <= ulp


def test_a_bad_logit_chunk_is_refused():
    with pytest.raises(UserError, match="logit_chunk must be a positive number"):
        ablate_edges(tiny_model("llama"), SAMPLES[:1], [(0, 1)], progress=False, logit_chunk=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_by_layer_upcast_equals_a_float32_copy(family):
    """bf16 weights ablated in float32 one unit at a time give the float32 copy's deltas bit for bit,
    never hold a float32 copy of more than one unit, and leave every parameter in bf16."""
    import copy

    model = tiny_model(family, dtype=torch.bfloat16)
    edges = _all_edges(build_graph(2))
    mask = build_graph(2).mask()
    layerwise = ablate_edges(model, SAMPLES, edges, progress=False)
    copied = ablate_edges(copy.deepcopy(model).float(), SAMPLES, edges, progress=False)
    assert layerwise.dtype == "float32"
    assert torch.equal(layerwise.delta[:, mask], copied.delta[:, mask])
    assert torch.equal(layerwise.clean_loss, copied.clean_loss)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())

    float32_at_once = []

    def count(*_):
        float32_at_once.append(sum(p.numel() for p in model.parameters() if p.dtype == torch.float32))

    layers = model.transformer.h if family == "gpt2" else model.model.layers
    hooks = [m.register_forward_hook(count) for m in layers[0].modules()]
    ablate_edges(model, SAMPLES[:1], edges[:3], progress=False)
    for h in hooks:
        h.remove()
    largest_unit = max(sum(p.numel() for p in layer.parameters()) for layer in layers)
    assert 0 < max(float32_at_once) <= largest_unit


def test_upcast_restores_the_dtypes_after_an_error():
    model = tiny_model("llama", dtype=torch.bfloat16)

    def fail(*_):
        raise RuntimeError("planted failure inside layer 1")

    handle = model.model.layers[1].mlp.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="planted failure"):
        ablate_edges(model, SAMPLES[:1], [(0, 1)], progress=False)
    handle.remove()
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
