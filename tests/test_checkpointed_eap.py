"""Checkpointed EAP (harness.circuit.eap.checkpointed_scores) equals plain EAP on every family, at every
segment count, and records each source's delta once although the recomputed segments fire the
source hooks again."""

from __future__ import annotations

import pytest
import torch
from model_factories import FAMILIES, tiny_model

from harness.circuit.batches import Positions, Sample, make_batch
from harness.circuit.eap import run_eap, score_batch, segment_starts
from harness.circuit.intervention import InstrumentedModel
from harness.errors import UserError

SAMPLES = [Sample("a", (1, 2, 3, 4, 5, 6), (7, 8, 9)), Sample("b", (3, 4, 5), (9, 10, 11, 12))]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("segments", [2, 3, 4])
def test_checkpointed_scores_equal_plain_scores(family, segments):
    model = tiny_model(family, n_layers=4, dtype=torch.float32)
    batch = make_batch(SAMPLES, 0, Positions.ALL)
    with InstrumentedModel(model) as im:
        plain, plain_loss = score_batch(im, batch)
        checked, checked_loss = score_batch(im, batch, segments=segments)
    assert torch.equal(plain_loss, checked_loss)
    assert float(plain.abs().max()) > 0
    assert torch.equal(checked, plain)   # the same operations on the same inputs: bit for bit


def test_each_source_is_recorded_once_while_its_hook_fires_again(monkeypatch):
    calls: list[tuple[int, bool]] = []
    original = InstrumentedModel._record_source

    def spy(self, index, z):
        state = self._state
        if state is not None and state.scores is not None:
            calls.append((index, state.recompute))
        return original(self, index, z)

    monkeypatch.setattr(InstrumentedModel, "_record_source", spy)
    model = tiny_model("llama", n_layers=4, dtype=torch.float32)
    with InstrumentedModel(model) as im:
        score_batch(im, make_batch(SAMPLES, 0, Positions.ALL), segments=2)
        n_src = im.graph.n_src
    recorded = [i for i, again in calls if not again]
    rerun = [i for i, again in calls if again]
    assert sorted(recorded) == list(range(n_src))            # the first pass: each source once
    assert sorted(rerun) == list(range(n_src))               # the recomputed segments fire every source hook again


def test_segment_starts_and_bad_segment_counts():
    assert segment_starts(30, 1) == [0] and segment_starts(30, 4) == [0, 8, 15, 22]
    assert segment_starts(4, 4) == [0, 1, 2, 3]
    for bad in (0, 5, 2.0):
        with pytest.raises(UserError, match="segments must be a whole number from 1 to the model's 4 layers"):
            segment_starts(4, bad)
    model = tiny_model("llama", n_layers=4, dtype=torch.float32)
    with pytest.raises(UserError, match="lookahead runs without checkpointing"):
        run_eap(model, SAMPLES, method="lookahead", segments=2, progress=False)
    checked = run_eap(model, SAMPLES, segments=2, progress=False)
    assert checked.meta == {"method": "eap", "segments": 2}


def test_the_planner_checkpoints_only_what_does_not_fit():
    """planned_segments for an audit stage: none where plain EAP fits the budget; where it does not, the
    count with the smallest predicted peak, which fits; 1 (the stage then fails its plan) where nothing fits."""
    from harness.plan.estimate import Workload, eap_peak, planned_segments
    from harness.plan.shapes import ModelShape

    shape = ModelShape.from_config({"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
                                    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                                    "vocab_size": 49152, "tie_word_embeddings": True}, "smollm2 shape")
    rows = [{"prompt_ids": [1] * 128, "target_ids": [2] * 1024}]
    w = Workload(questions=1, alphas=(1.0,), prompt_tokens=128, answer_tokens=1024, max_new_tokens=1024,
                 fidelity_samples=1, fidelity_edges=1, dtype="float32", models=1)
    plain = sum(eap_peak(shape, w, 1.0, 1).values())
    assert planned_segments(shape, rows, "float32", 1, 1, plain) == 1
    chosen = planned_segments(shape, rows, "float32", 1, 1, int(0.8 * plain))
    assert chosen > 1 and sum(eap_peak(shape, w, 1.0, 1, chosen).values()) <= 0.8 * plain
    assert planned_segments(shape, rows, "float32", 1, 1, 10 * 2 ** 20) == 1


def test_the_audit_stage_runs_the_segments_it_is_given():
    from types import SimpleNamespace

    from harness.audit.config import AuditConfig
    from harness.audit.stages import AuditPipeline
    from harness.plan.estimate import segment_planner

    model = tiny_model("llama", n_layers=4, dtype=torch.float32)
    rows = [{"id": "a", "prompt_ids": [1, 2, 3], "target_ids": [4, 5]}]
    fixed = SimpleNamespace(config=AuditConfig(eap_segments=3), plan_segments=lambda m, r: 2)
    assert AuditPipeline.eap_segments(fixed, model, rows) == 3         # a fixed count wins
    planned = SimpleNamespace(config=AuditConfig(), plan_segments=lambda m, r: 2)
    assert AuditPipeline.eap_segments(planned, model, rows) == 2       # 0: the runner's planner decides
    assert AuditPipeline.eap_segments(SimpleNamespace(config=AuditConfig(), plan_segments=None), model, rows) == 1
    assert segment_planner("float32", 1, "cpu")(model, rows) == 1     # a tiny model fits this machine unchecked
    with pytest.raises(UserError, match="eap_segments must be 0"):
        AuditConfig(eap_segments=-1)


def test_the_audit_stage_ablates_with_the_settings_it_is_given_or_planned():
    """Exact ablation's variants and logit chunk: a set value is kept, 0 is the planner's, and the
    planner picks fewer variants and a shorter logit chunk only where memory asks for it."""
    from types import SimpleNamespace

    from harness.audit.config import AuditConfig
    from harness.audit.stages import AuditPipeline
    from harness.models.registry import load_architectures
    from harness.plan.estimate import Workload, ablation_peak, choose_fidelity, fidelity_planner
    from harness.plan.shapes import ModelShape

    model = tiny_model("llama", n_layers=4, dtype=torch.float32)
    rows = [{"id": "a", "prompt_ids": [1, 2, 3], "target_ids": [4, 5]}]
    planner = (lambda m, r, chunk, logits: (chunk or 5, logits or 7))
    set_both = SimpleNamespace(config=AuditConfig(ablation_chunk=3, logit_chunk=9), plan_fidelity=planner)
    assert AuditPipeline.ablation_settings(set_both, model, rows) == (3, 9)
    one_set = SimpleNamespace(config=AuditConfig(ablation_chunk=3), plan_fidelity=planner)
    assert AuditPipeline.ablation_settings(one_set, model, rows) == (3, 7)
    assert AuditPipeline.ablation_settings(SimpleNamespace(config=AuditConfig(), plan_fidelity=None),
                                           model, rows) == (32, 1024)
    assert fidelity_planner("float32", "cpu")(model, rows, 0, 0) == (32, 1024)   # a tiny model: no limit
    smollm2 = load_architectures()["bundled:smollm2-135m-instruct"]
    shape = ModelShape.from_config({"model_type": "llama", **smollm2}, "smollm2")
    w = Workload(questions=1, alphas=(1.0,), prompt_tokens=128, answer_tokens=4096, max_new_tokens=4096,
                 fidelity_samples=1, fidelity_edges=1, dtype="float32", models=1)
    roomy = choose_fidelity(shape, w, 1.0, 64 * 2 ** 30)
    tight_budget = sum(ablation_peak(shape, w, 1.0, 4, 128).values())
    tight = choose_fidelity(shape, w, 1.0, tight_budget)
    assert roomy == (32, 1024) and tight[0] < 32 and tight[1] < 1024
    assert sum(ablation_peak(shape, w, 1.0, *tight).values()) <= tight_budget
    with pytest.raises(UserError, match="logit_chunk must be 0"):
        AuditConfig(logit_chunk=-1)
