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
    make_batch,
    target_nll,
    validate_samples,
)
from harness.circuit.graph import Graph, Layout
from harness.circuit.intervention import InstrumentedModel, RunState
from harness.errors import UserError

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


def score_batch(im: InstrumentedModel, batch: Batch, loss_fn: LossFn = target_nll,
                ablated: torch.Tensor | None = None,
                edge_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """EAP for one batch: float32 scores [b, n_src, n_dst] and per-sample loss [b]."""
    graph = im.graph
    device = batch.input_ids.device
    state = RunState(scores=torch.zeros(batch.input_ids.shape[0], graph.n_src, graph.n_dst,
                                        dtype=torch.float32, device=device),
                     position_mask=batch.position_mask, ablated=ablated, edge_mask=edge_mask)
    with torch.enable_grad(), im.run_state(state):
        logits = im.logits(batch.input_ids, batch.attention_mask)
        loss = loss_fn(logits, batch)
        loss.sum().backward()
    return state.scores, loss.detach().float()


def run_eap(model: torch.nn.Module, samples: Sequence[Sample], *, layout: Layout | str = Layout.PAPER,
            positions: Positions | str = Positions.ALL, loss_fn: LossFn = target_nll,
            batch_size: int = 1, pad_id: int = 0, progress: bool = True) -> EdgeScores:
    """Score every edge for every sample. Samples are batched by length; results keep input order."""
    positions = Positions(positions)
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    max_length = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None)
    validate_samples(samples, max_length)
    device = next(model.parameters()).device
    with InstrumentedModel(model, layout) as im:
        graph = im.graph
        scores = torch.zeros(len(samples), graph.n_src, graph.n_dst, dtype=torch.float32)
        losses = torch.zeros(len(samples), dtype=torch.float32)
        batches = _length_sorted_batches(samples, batch_size)
        for index in tqdm(batches, desc="EAP", unit="batch", disable=not progress):
            batch = make_batch([samples[i] for i in index], pad_id, positions).to(device)
            batch_scores, batch_loss = score_batch(im, batch, loss_fn)
            scores[index] = batch_scores.cpu()
            losses[index] = batch_loss.cpu()
    return EdgeScores(scores=scores, graph=graph, ids=[s.id for s in samples],
                      positions=positions, loss=losses)
