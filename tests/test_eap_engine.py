"""Correctness of the intervention primitive and EAP on tiny models of every supported family."""

from __future__ import annotations

import pytest
import torch
from model_factories import FAMILIES, VOCAB, tiny_model
from scipy.stats import spearmanr

from harness.circuit.batches import Positions, Sample, make_batch
from harness.circuit.eap import mask_gradient_scores, run_eap, score_batch
from harness.circuit.graph import Layout, build_graph
from harness.circuit.intervention import InstrumentedModel, RunState
from harness.errors import UserError

SAMPLES = [Sample("long", tuple(range(3, 15)), (5, 9, 11, 2)),
           Sample("short", (7, 8), (9, 10, 11, 12, 13)),
           Sample("mid", (4, 40, 41, 42, 43), (6, 6))]


def test_graph_counts_match_the_paper():
    for n_layers in (1, 2, 30):
        g = build_graph(n_layers, "paper")
        assert (g.n_src, g.n_dst) == (2 * n_layers + 1, 4 * n_layers + 1)
        assert g.n_edges == 4 * n_layers ** 2 + 3 * n_layers + 1 == int(g.mask().sum())
    g = build_graph(2, "block")
    assert g.n_dst == 5 and g.destination_names == ["attn.0", "mlp.0", "attn.1", "mlp.1", "sink"]


@pytest.mark.parametrize("layout", ["paper", "block"])
@pytest.mark.parametrize("family", FAMILIES)
def test_instrumented_logits_equal_plain_model(family, layout):
    model = tiny_model(family)
    batch = make_batch(SAMPLES, 0, Positions.ALL)
    plain = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    with InstrumentedModel(model, layout) as im:
        with im.run_state(RunState()):
            hooked = im.logits(batch.input_ids, batch.attention_mask)
        scores, _ = score_batch(im, batch)
    # bit-identical except GPT-2's fused qkv, split per slot (float64 rounding only)
    torch.testing.assert_close(hooked, plain, rtol=1e-12, atol=1e-12)
    assert scores.abs().sum() > 0
    after = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.equal(plain, after), "leaving the context must restore the model"


@pytest.mark.parametrize("layout", ["paper", "block"])
@pytest.mark.parametrize("family", FAMILIES)
def test_eap_equals_autograd_of_explicit_edge_masks(family, layout):
    model = tiny_model(family)
    eap = run_eap(model, SAMPLES, layout=layout, batch_size=2, progress=False)
    reference = mask_gradient_scores(model, SAMPLES, layout).float()
    assert eap.scores.dtype == torch.float32
    scale = reference.abs().max()
    assert scale > 0
    torch.testing.assert_close(eap.scores, reference, rtol=1e-5, atol=1e-5 * scale)
    assert torch.all(eap.scores[:, ~eap.mask] == 0), "structural zeros stay zero"


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_scores_equal_one_at_a_time(family):
    model = tiny_model(family)
    batched = run_eap(model, SAMPLES, batch_size=3, progress=False)
    single = run_eap(model, SAMPLES, batch_size=1, progress=False)
    torch.testing.assert_close(batched.scores, single.scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched.loss, single.loss)
    assert batched.ids == [s.id for s in SAMPLES]


def _linearised_gpt2():
    """GPT-2 made linear: identity norms, identity activation, q = k = 0 (uniform causal attention)."""
    model = tiny_model("gpt2")
    for block in model.transformer.h:
        block.ln_1, block.ln_2 = torch.nn.Identity(), torch.nn.Identity()
        block.mlp.act = torch.nn.Identity()
        width = block.attn.c_attn.weight.shape[1] // 3
        block.attn.c_attn.weight[:, : 2 * width] = 0
        block.attn.c_attn.bias[: 2 * width] = 0
    model.transformer.ln_f = torch.nn.Identity()
    return model


def test_first_order_scores_are_exact_on_a_linear_model():
    model = _linearised_gpt2()
    readout = torch.randn(VOCAB, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def linear_loss(logits, batch):
        return (logits.double() @ readout * batch.target_mask).sum(-1)

    sample = SAMPLES[:1]
    eap = run_eap(model, sample, loss_fn=linear_loss, progress=False)
    batch = make_batch(sample, 0, Positions.ALL)
    with InstrumentedModel(model, "paper") as im:
        with im.run_state(RunState()):
            clean = linear_loss(im.logits(batch.input_ids), batch)
        exact = torch.zeros_like(eap.scores[0], dtype=torch.float64)
        for u, v in eap.mask.nonzero().tolist():
            m = torch.zeros(1, im.graph.n_src, im.graph.n_dst, dtype=torch.float64)
            m[0, u, v] = 1.0
            with im.run_state(RunState(edge_mask=m)):
                exact[u, v] = linear_loss(im.logits(batch.input_ids), batch) - clean
    assert exact.abs().max() > 1e-3
    torch.testing.assert_close(eap.scores[0].double(), exact, rtol=1e-5, atol=1e-5 * exact.abs().max())


@pytest.mark.parametrize("layout", ["paper", "block"])
@pytest.mark.parametrize("family", FAMILIES)
def test_destination_inputs_are_sums_of_their_sources(family, layout):
    model = tiny_model(family)
    batch = make_batch(SAMPLES, 0, Positions.ALL)
    with InstrumentedModel(model, layout) as im:
        with im.run_state(RunState(record=True)) as state:
            im.logits(batch.input_ids, batch.attention_mask)
        for j, dest in enumerate(im.graph.destinations):
            total = sum(state.live[u] for u in range(dest.n_parents))
            torch.testing.assert_close(state.recorded_inputs[j], total, rtol=1e-10, atol=1e-10)


def test_target_positions_restrict_the_sum():
    model = tiny_model("llama")
    everywhere = run_eap(model, SAMPLES, positions="all", progress=False)
    targets_only = run_eap(model, SAMPLES, positions="targets", progress=False)
    assert not torch.allclose(everywhere.scores, targets_only.scores)
    # the sink only receives gradient at target positions, so its column agrees
    torch.testing.assert_close(everywhere.scores[..., -1], targets_only.scores[..., -1],
                               rtol=1e-5, atol=1e-6)


def test_bfloat16_model_gives_float32_scores_that_rank_like_float32():
    model32 = tiny_model("llama", dtype=torch.float32)
    model16 = tiny_model("llama", dtype=torch.bfloat16)
    s32 = run_eap(model32, SAMPLES, progress=False)
    s16 = run_eap(model16, SAMPLES, progress=False)
    assert s16.scores.dtype == torch.float32
    mask = s32.mask
    rho = spearmanr(s32.scores[:, mask].flatten(), s16.scores[:, mask].flatten()).statistic
    print(f"bf16 vs float32 Spearman rank agreement over {int(mask.sum())} edges × 3 samples: {rho:.4f}")
    assert rho > 0.9


def test_unsupported_architecture_names_its_class():
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                                     ffn_dim=16, num_attention_heads=2, word_embed_proj_dim=16))
    with pytest.raises(UserError, match="OPTForCausalLM.*supported model types: gemma3_text, gpt2"):
        run_eap(model, SAMPLES, progress=False)


@pytest.mark.parametrize("bad, message", [
    ([], "input is empty"),
    ([Sample("x", (), (1,))], "prompt_ids is empty"),
    ([Sample("x", (1,), ())], "target_ids is empty"),
    ([Sample("x", tuple([1] * 200), (1,))], "longer than the model's context of 128"),
])
def test_bad_samples_are_refused_before_any_work(bad, message):
    with pytest.raises(UserError, match=message):
        run_eap(tiny_model("llama"), bad, progress=False)


def test_layout_name_is_checked():
    with pytest.raises(UserError, match="unknown layout 'heads'"):
        build_graph(2, "heads")
    assert Layout("block") is Layout.BLOCK
