"""Edge Attribution Patching: one forward and one backward per batch, scores in float32.

W[u, v] = −Σ_t ⟨∂L/∂x_v(t), z_u(t) − z̃_u(t)⟩ estimates L(edge u→v removed) − L(clean); with the
paper's zero ablation z̃ = 0. Per sample, over all positions (the paper) or the target positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from harness.errors import UserError
from harness.circuit.graph import Graph, Layout
from harness.circuit.intervention import InstrumentedModel, RunState

SIGN_CONVENTION = "score estimates L(edge removed) - L(clean) under the ablation (zero unless stated)"


class Positions(str, Enum):
    ALL = "all"          # every input position, prompt included (the paper)
    TARGETS = "targets"  # only positions whose logits predict a target token


@dataclass(frozen=True)
class Sample:
    """One scored sequence: the loss is the mean NLL of `target_ids` after `prompt_ids`."""

    id: str
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]

    @classmethod
    def from_row(cls, row: dict) -> "Sample":
        """From an EAP input row {"id", "prompt_ids", "target_ids"}."""
        return cls(str(row["id"]), tuple(row["prompt_ids"]), tuple(row["target_ids"]))

    @property
    def input_length(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids) - 1


@dataclass
class Batch:
    """Right-padded model inputs for a list of samples.

    input_ids, attention_mask: [b, t]; targets: [b, t] (−100 where no target is predicted);
    target_mask, position_mask: float32 [b, t].
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    target_mask: torch.Tensor
    position_mask: torch.Tensor

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(getattr(self, f).to(device) for f in
                       ("input_ids", "attention_mask", "targets", "target_mask", "position_mask")))


# A loss maps [b, t, vocab] logits and the batch to a per-sample loss [b].
LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


def target_nll(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean NLL of each sample's target tokens (self-entropy on own tokens, or cross-entropy on
    reference tokens: Eq. 13). [b, t, V] → [b], computed in float32 (float64 for float64 models)."""
    logprobs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    safe = batch.targets.clamp(min=0)
    nll = -logprobs.gather(-1, safe[..., None])[..., 0] * batch.target_mask
    return nll.sum(-1) / batch.target_mask.sum(-1)


def validate_samples(samples: Sequence[Sample], max_length: int | None) -> None:
    if not samples:
        raise UserError("no samples to score: the input is empty")
    for sample in samples:
        if not sample.prompt_ids:
            raise UserError(f"sample {sample.id!r}: prompt_ids is empty; the first target needs a "
                            "prompt token as context")
        if not sample.target_ids:
            raise UserError(f"sample {sample.id!r}: target_ids is empty; give at least one token")
        if max_length is not None and sample.input_length > max_length:
            raise UserError(f"sample {sample.id!r}: prompt+targets is {sample.input_length} tokens, "
                            f"longer than the model's context of {max_length}; truncate it")


def make_batch(samples: Sequence[Sample], pad_id: int, positions: Positions) -> Batch:
    """Input = prompt + targets[:-1]; position p−1+i predicts target i."""
    width = max(s.input_length for s in samples)
    b = len(samples)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(b, width, dtype=torch.long)
    targets = torch.full((b, width), -100, dtype=torch.long)
    for i, s in enumerate(samples):
        seq = list(s.prompt_ids) + list(s.target_ids[:-1])
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
        start = len(s.prompt_ids) - 1
        targets[i, start : start + len(s.target_ids)] = torch.tensor(s.target_ids)
    target_mask = (targets >= 0).float()
    position_mask = attention_mask.float() if positions is Positions.ALL else target_mask.clone()
    return Batch(input_ids, attention_mask, targets, target_mask, position_mask)


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
