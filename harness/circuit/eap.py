"""Edge Attribution Patching: one forward and one backward per batch, scores in float32.

W[u, v] = −Σ_t ⟨∂L/∂x_v(t), z_u(t) − z̃_u(t)⟩ estimates L(edge u→v removed) − L(clean); with the
paper's zero ablation z̃ = 0. Per sample, over all positions (the paper) or the target positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from harness.circuit.batches import (
    Batch,
    LossFn,
    Positions,
    Sample,
    last_positions,
    make_batch,
    target_nll,
    target_span,
    validate_samples,
)
from harness.circuit.graph import Graph, Layout
from harness.circuit.intervention import InstrumentedModel, RunState
from harness.circuit.lookahead import lookahead_scores
from harness.errors import UserError

DEFAULT_LOOKAHEAD_STEPS = 1   # set from tests/bench/estimator_fidelity.py (README, engine section)
SIGN_CONVENTION = "score estimates L(edge removed) - L(clean) under the ablation (zero unless stated)"


# A loss maps [b, t, vocab] logits and the batch to a per-sample loss [b].


@dataclass
class EdgeScores:
    """Per-sample edge scores. scores: float32 [n, n_src, n_dst]; loss: float32 [n] clean loss."""

    scores: torch.Tensor
    graph: Graph
    ids: list[str]
    positions: Positions
    loss: torch.Tensor
    ablation: str = "zero"
    meta: dict = field(default_factory=dict)

    @property
    def mask(self) -> torch.Tensor:
        return self.graph.mask()

    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save as save_bytes

        from harness.files import atomic_write_bytes, atomic_write_json

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / "edges.safetensors", save_bytes(
            {"scores": self.scores.contiguous(), "mask": self.mask.contiguous(),
             "loss": self.loss.contiguous()}))
        atomic_write_json(out_dir / "edges.json", {
            "sources": list(self.graph.sources), "destinations": self.graph.destination_names,
            "ids": self.ids, "layout": self.graph.layout.value, "n_layers": self.graph.n_layers,
            "positions": self.positions.value, "ablation": self.ablation, "sign": SIGN_CONVENTION,
            **self.meta})

    @classmethod
    def load(cls, out_dir: Path) -> "EdgeScores":
        from safetensors.torch import load_file

        from harness.circuit.graph import build_graph

        out_dir = Path(out_dir)
        for name in ("edges.safetensors", "edges.json"):
            if not (out_dir / name).is_file():
                raise UserError(f"{out_dir / name} is missing; run `python -m harness eap` first")
        tensors = load_file(out_dir / "edges.safetensors")
        meta = json.loads((out_dir / "edges.json").read_text())
        graph = build_graph(meta["n_layers"], meta["layout"])
        known = {"sources", "destinations", "ids", "layout", "n_layers", "positions", "ablation", "sign"}
        return cls(scores=tensors["scores"], graph=graph, ids=meta["ids"],
                   positions=Positions(meta["positions"]), loss=tensors["loss"],
                   ablation=meta["ablation"], meta={k: v for k, v in meta.items() if k not in known})


def _length_sorted_batches(samples: Sequence[Sample], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(samples)), key=lambda i: samples[i].input_length)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def batch_loss(im: InstrumentedModel, batch: Batch, loss_fn: LossFn = target_nll) -> torch.Tensor:
    """Per-sample loss [b] under the active RunState. For `target_nll` the head and log-softmax run
    over the target span only ([b, span, vocab], not [b, t, vocab]): same values, a fraction of the
    memory at long prompts and large vocabularies."""
    if loss_fn is target_nll:
        span = target_span(batch)
        return target_nll(im.logits(batch.input_ids, batch.attention_mask, keep_last=span),
                          last_positions(batch, span))
    return loss_fn(im.logits(batch.input_ids, batch.attention_mask), batch)


def segment_starts(n_layers: int, segments: int) -> list[int]:
    """The first layer of each of `segments` near-equal runs of the n_layers layers."""
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= n_layers:
        raise UserError(f"segments must be a whole number from 1 to the model's {n_layers} layers, got {segments!r}")
    return [round(i * n_layers / segments) for i in range(segments)]


def score_batch(im: InstrumentedModel, batch: Batch, loss_fn: LossFn = target_nll,
                ablated: torch.Tensor | None = None,
                edge_mask: torch.Tensor | None = None, segments: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """EAP for one batch: float32 scores [b, n_src, n_dst] and per-sample loss [b].

    segments > 1: activation checkpointing (`checkpointed_scores`): the same scores, with autograd
    keeping one segment of layers at a time instead of all of them."""
    if segments > 1:
        if edge_mask is not None:
            raise UserError("checkpointed EAP scores at m = 0; run it without an edge mask (segments=1)")
        return checkpointed_scores(im, batch, segments, loss_fn, ablated)
    graph = im.graph
    device = batch.input_ids.device
    state = RunState(scores=torch.zeros(batch.input_ids.shape[0], graph.n_src, graph.n_dst,
                                        dtype=torch.float32, device=device),
                     position_mask=batch.position_mask, ablated=ablated, edge_mask=edge_mask)
    with torch.enable_grad(), im.run_state(state):
        loss = batch_loss(im, batch, loss_fn)
        loss.sum().backward()
    return state.scores, loss.detach().float()


def checkpointed_scores(im: InstrumentedModel, batch: Batch, segments: int, loss_fn: LossFn = target_nll,
                        ablated: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """EAP with activation checkpointing: float32 scores [b, n_src, n_dst] and loss [b], equal to
    `score_batch`'s.

    A forward without autograd records every source's delta (once: `RunState.delta_writes` is
    checked), each layer's call, and the residual entering each of `segments` runs of layers
    (`segment_starts`). Then, from the last segment to the first, the segment runs again from its
    recorded residual with autograd (its sources' deltas are not written again: `recompute`), and
    its backward, seeded with the gradient the later segment left on its output, fires the same
    score hooks. Autograd holds one segment's activations at a time and the segment starts' residuals.
    HF's own gradient checkpointing is not used: it reruns forward hooks, which would record twice.
    """
    graph = im.graph
    n_layers = len(im.family.layers(im.model))
    starts = segment_starts(n_layers, segments)
    device = batch.input_ids.device
    scores = torch.zeros(batch.input_ids.shape[0], graph.n_src, graph.n_dst, dtype=torch.float32, device=device)
    first = RunState(scores=scores, position_mask=batch.position_mask, ablated=ablated, keep_calls=frozenset(starts),
                     live_below=0)
    with torch.no_grad(), im.run_state(first):
        im.logits(batch.input_ids, batch.attention_mask, keep_last=1)
    calls = first.layer_calls
    if first.delta_writes != [1] * graph.n_src:
        raise RuntimeError(f"checkpointed EAP recorded the sources {first.delta_writes} times, not once each")
    span = target_span(batch) if loss_fn is target_nll else batch.input_ids.shape[1]
    grad, loss = None, None
    for j in reversed(range(segments)):
        hidden = calls[starts[j]][0][0].detach().requires_grad_(True)
        state = RunState(scores=scores, position_mask=batch.position_mask, ablated=ablated, delta=first.delta,
                         recompute=True, live_below=0)
        with torch.enable_grad(), im.run_state(state):
            if j == segments - 1:
                logits = im.logits_from_layer(starts[j], hidden, calls, slice(-span, None))
                per_sample = (target_nll(logits, last_positions(batch, span)) if loss_fn is target_nll
                              else loss_fn(logits, batch))
                per_sample.sum().backward()
                loss = per_sample.detach().float()
            else:
                im.run_layers(starts[j], starts[j + 1], hidden, calls).backward(grad)
        grad = hidden.grad
        del calls[starts[j]]    # that segment's start is no longer needed
    return scores, loss


def mask_gradient_scores(model: torch.nn.Module, samples: Sequence[Sample], layout: Layout | str = Layout.PAPER,
                         pad_id: int = 0) -> torch.Tensor:
    """The reference EAP is checked against: ∂L/∂m at m = 0 by autograd through explicit per-edge
    masks, one sample at a time, in the mask's float64 (no score hooks). [n, n_src, n_dst]; its sign
    is the gradient's, so EAP scores equal it."""
    rows = []
    with InstrumentedModel(model, layout) as im:
        device = next(model.parameters()).device
        for sample in samples:
            batch = make_batch([sample], pad_id, Positions.ALL).to(device)
            m = torch.zeros(1, im.graph.n_src, im.graph.n_dst, dtype=torch.float64, device=device,
                            requires_grad=True)
            with torch.enable_grad(), im.run_state(RunState(edge_mask=m)):
                loss = target_nll(im.logits(batch.input_ids, batch.attention_mask), batch).sum()
            (grad,) = torch.autograd.grad(loss, m)
            rows.append(grad[0].cpu())
    return torch.stack(rows)


METHODS = ("eap", "lookahead")


def check_method(method: str, steps: int | None) -> int | None:
    """Validate (method, steps); returns the steps used (lookahead's default when None)."""
    if method not in METHODS:
        raise UserError(f"unknown attribution method {method!r}; choose {' or '.join(METHODS)}")
    if method == "eap":
        if steps is not None:
            raise UserError(f"--steps applies to method lookahead only; eap takes none (got {steps})")
        return None
    if steps is None:
        return DEFAULT_LOOKAHEAD_STEPS
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise UserError(f"lookahead steps must be a whole number ≥ 0 (layers recomputed exactly; "
                        f"0 = EAP), got {steps!r}")
    return steps


def run_eap(model: torch.nn.Module, samples: Sequence[Sample], *, layout: Layout | str = Layout.PAPER,
            positions: Positions | str = Positions.ALL, loss_fn: LossFn = target_nll,
            batch_size: int = 1, pad_id: int = 0, progress: bool = True,
            method: str = "eap", steps: int | None = None, segments: int = 1) -> EdgeScores:
    """Score every edge for every sample. Samples are batched by length; results keep input order.

    method: `eap` (one forward + backward per batch: ∂L/∂m at m = 0) or `lookahead` (removes each
    edge exactly, recomputes the next `steps` blocks, linearises the rest; see
    `harness.circuit.lookahead`; one sample at a time, positions = all only).
    steps: lookahead's depth (default DEFAULT_LOOKAHEAD_STEPS); must be None for eap.
    segments: eap with activation checkpointing over that many runs of layers (1: none); same scores.
    meta records {"method": ..., "steps": ...} and the segments when more than one.
    """
    positions = Positions(positions)
    steps = check_method(method, steps)
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if method == "lookahead" and segments != 1:
        raise UserError("method lookahead runs without checkpointing; use segments=1")
    if method == "lookahead" and positions is not Positions.ALL:
        raise UserError("method lookahead removes an edge at every position; use positions=all")
    max_length = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None)
    validate_samples(samples, max_length)
    device = next(model.parameters()).device
    with InstrumentedModel(model, layout) as im:
        graph = im.graph
        scores = torch.zeros(len(samples), graph.n_src, graph.n_dst, dtype=torch.float32)
        losses = torch.zeros(len(samples), dtype=torch.float32)
        batches = _length_sorted_batches(samples, 1 if method == "lookahead" else batch_size)
        for index in tqdm(batches, desc=method, unit="batch", disable=not progress):
            batch = make_batch([samples[i] for i in index], pad_id, positions).to(device)
            if method == "lookahead":
                batch_scores, batch_loss = lookahead_scores(im, batch, steps, loss_fn)
            else:
                batch_scores, batch_loss = score_batch(im, batch, loss_fn, segments=segments)
            scores[index] = batch_scores.cpu()
            losses[index] = batch_loss.cpu()
    meta = {"method": method} if method == "eap" else {"method": method, "steps": steps}
    if segments > 1:
        meta["segments"] = segments
    return EdgeScores(scores=scores, graph=graph, ids=[s.id for s in samples],
                      positions=positions, loss=losses, meta=meta)
