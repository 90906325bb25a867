"""The engine always restores the model: after an exception inside a scoring pass, an exact
ablation, a lookahead pass, or the installation of the hooks itself, every module carries the
forward, pre-forward and backward hooks it had before, no forward override, and no parameter holds
a tensor hook; for each supported family (TransformerLens shipped this leak, its issue #1323)."""

from __future__ import annotations

import pytest
import torch
from model_factories import FAMILIES, tiny_model

from harness.circuit import intervention
from harness.circuit.ablation import ablate_edges
from harness.circuit.batches import Sample, target_nll
from harness.circuit.eap import run_eap
from harness.circuit.intervention import InstrumentedModel

SAMPLES = [Sample("q0", (1, 2, 3, 4), (5, 6)), Sample("q1", (7, 8, 9), (10, 11, 12))]


class Planted(Exception):
    """The failure the test plants; anything else is a real error."""


def hook_counts(model: torch.nn.Module) -> dict[str, int]:
    """Every hook a module or parameter can carry, counted over the model; forward overrides too."""
    modules = list(model.modules())
    return {
        "forward": sum(len(m._forward_hooks) for m in modules),
        "forward_pre": sum(len(m._forward_pre_hooks) for m in modules),
        "backward": sum(len(m._backward_hooks) + len(m._backward_pre_hooks) for m in modules),
        "overrides": sum("forward" in vars(m) for m in modules),
        "tensor": sum(len(p._backward_hooks or {}) for p in model.parameters()),
    }


def failing_loss(logits, batch):
    raise Planted("inside the pass")


def half_failing_loss():
    """A loss that works once (the clean run), then raises (inside the ablated runs)."""
    calls = []

    def loss(logits, batch):
        calls.append(1)
        if len(calls) > 1:
            raise Planted("inside an ablated run")
        return target_nll(logits, batch)
    return loss


RUNS = {
    "eap": lambda model: run_eap(model, SAMPLES, loss_fn=failing_loss, progress=False),
    "lookahead": lambda model: run_eap(model, SAMPLES, loss_fn=failing_loss, progress=False, method="lookahead"),
    "ablation": lambda model: ablate_edges(model, SAMPLES, [(0, 0), (1, 3)], loss_fn=half_failing_loss(),
                                           progress=False),
    "naive ablation": lambda model: ablate_edges(model, SAMPLES, [(0, 0), (1, 3)], loss_fn=half_failing_loss(),
                                                 fast=False, progress=False),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("entry", sorted(RUNS))
def test_an_exception_inside_the_engine_leaves_no_hook(family: str, entry: str) -> None:
    model = tiny_model(family)
    before = hook_counts(model)
    with pytest.raises(Planted):
        RUNS[entry](model)
    assert hook_counts(model) == before


@pytest.mark.parametrize("family", FAMILIES)
def test_a_failure_while_installing_the_hooks_removes_those_installed(family: str, monkeypatch) -> None:
    model = tiny_model(family)
    before = hook_counts(model)
    real = InstrumentedModel._slot_hook
    calls = []

    def slot_hook(self, dest):
        calls.append(dest)
        if len(calls) == 2:   # the second slot: after the embedding, layer, source and first slot hooks
            raise Planted("while installing")
        return real(self, dest)

    monkeypatch.setattr(intervention.InstrumentedModel, "_slot_hook", slot_hook)
    with pytest.raises(Planted):
        with InstrumentedModel(model, "paper"):
            pass
    assert len(calls) == 2 and hook_counts(model) == before
