"""Exact edge ablation with the same primitive as EAP (m[u, v] = 1 removes edge u→v).

Ablated values z̃: `zero` (the paper's), `mean` (each source's mean over the dataset, per position
or over all tokens), `patch` (the source's value on a corrupted input of the same length).

Fast path: one clean batch-1 run records each layer's inputs; the edges whose destination sits in
layer l are then stacked along the batch dimension (one variant per edge) and only layers l…L−1
run again. The naive path (one full forward per edge) is kept as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
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
from harness.circuit.graph import Graph
from harness.circuit.intervention import InstrumentedModel, RunState
from harness.errors import UserError

Edge = tuple[int, int]   # (source index u, destination index v)


class AblationKind(str, Enum):
    ZERO = "zero"
    MEAN = "mean"
    PATCH = "patch"


class MeanOver(str, Enum):
    POSITIONS = "positions"   # one mean per position, over samples that reach it
    TOKENS = "tokens"         # one mean over every real token of every sample


@dataclass
class AblationResult:
    """delta: float32 [n, n_src, n_dst], L(edges removed) − L(clean), NaN where not ablated.
    clean_loss: float32 [n]."""

    delta: torch.Tensor
    clean_loss: torch.Tensor
    ids: list[str]
    kind: AblationKind
    edges: list[Edge]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def record_sources(im: InstrumentedModel, batch: Batch) -> torch.Tensor:
    """Source outputs of a clean run, detached: [n_src, b, t, h] in the model's dtype."""
    with torch.no_grad(), im.run_state(RunState()) as state:
        im.logits(batch.input_ids, batch.attention_mask)
    return torch.stack([state.live[u].detach() for u in range(im.graph.n_src)])


def mean_sources(im: InstrumentedModel, samples: Sequence[Sample], pad_id: int,
                 over: MeanOver = MeanOver.POSITIONS, batch_size: int = 8) -> torch.Tensor:
    """Dataset mean of each source: [n_src, 1, t_max, h] per position, or [n_src, 1, 1, h]."""
    over = MeanOver(over)
    total, count = None, None
    device = _device(im.model)
    width = max(s.input_length for s in samples)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = make_batch(chunk, pad_id, Positions.ALL).to(device)
        z = record_sources(im, batch).float()                            # [n_src, b, t, h]
        real = batch.attention_mask.float()                               # [b, t]
        pad = width - z.shape[2]
        z = torch.nn.functional.pad(z * real[None, :, :, None], (0, 0, 0, pad))
        real = torch.nn.functional.pad(real, (0, pad))
        total = z.sum(1) if total is None else total + z.sum(1)           # [n_src, t, h]
        count = real.sum(0) if count is None else count + real.sum(0)     # [t]
    if over is MeanOver.TOKENS:
        return (total.sum(1) / count.sum())[:, None, None, :]
    return (total / count.clamp(min=1)[None, :, None])[:, None]


def patch_sources(im: InstrumentedModel, samples: Sequence[Sample], corrupted: Sequence[Sample],
                  pad_id: int) -> list[torch.Tensor]:
    """Per-sample source values on the corrupted inputs: each [n_src, 1, t, h]."""
    if len(corrupted) != len(samples):
        raise UserError(f"{len(samples)} samples but {len(corrupted)} corrupted inputs; give one "
                        "corrupted input per sample, in the same order")
    values = []
    for clean, bad in zip(samples, corrupted):
        if bad.input_length != clean.input_length:
            raise UserError(f"sample {clean.id!r}: corrupted input has {bad.input_length} tokens, "
                            f"the clean one {clean.input_length}; patching needs equal lengths")
        batch = make_batch([bad], pad_id, Positions.ALL).to(_device(im.model))
        values.append(record_sources(im, batch))
    return values


def _ablated_for(ablated: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """Trim a per-position mean [n_src, 1, T, h] to a sample's length."""
    if ablated is None or ablated.shape[2] == 1:
        return ablated
    return ablated[:, :, :length]


def _loss_for(im: InstrumentedModel, batch: Batch, loss_fn: LossFn, state: RunState) -> torch.Tensor:
    with torch.no_grad(), im.run_state(state):
        return loss_fn(im.logits(batch.input_ids, batch.attention_mask), batch).float()


def one_hot_masks(graph: Graph, edges: Sequence[Edge], dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    """[k, n_src, n_dst]: variant i removes edges[i]."""
    masks = torch.zeros(len(edges), graph.n_src, graph.n_dst, dtype=dtype, device=device)
    for i, (u, v) in enumerate(edges):
        masks[i, u, v] = 1
    return masks


def naive_edge_deltas(im: InstrumentedModel, batch: Batch, edges: Sequence[Edge],
                      ablated: torch.Tensor | None = None, loss_fn: LossFn = target_nll) -> torch.Tensor:
    """Reference path: one full forward per edge. batch of one sample → float32 [k] deltas."""
    dtype = next(im.model.parameters()).dtype
    clean = _loss_for(im, batch, loss_fn, RunState(ablated=ablated))
    masks = one_hot_masks(im.graph, edges, dtype, batch.input_ids.device)
    deltas = [_loss_for(im, batch, loss_fn, RunState(ablated=ablated, edge_mask=masks[i : i + 1])) - clean
              for i in range(len(edges))]
    return torch.cat(deltas)


def fast_edge_deltas(im: InstrumentedModel, batch: Batch, edges: Sequence[Edge],
                     ablated: torch.Tensor | None = None, loss_fn: LossFn = target_nll,
                     chunk: int = 32) -> torch.Tensor:
    """Stacked variants restarted at the destination's layer. batch of one → float32 [k] deltas.

    With the built-in target loss, the head runs only over the span of target positions.
    """
    if batch.input_ids.shape[0] != 1:
        raise ValueError("fast_edge_deltas takes a batch of one sample")
    span = slice(None)
    if loss_fn is target_nll:
        predicting = batch.target_mask[0].nonzero()[:, 0]
        span = slice(int(predicting[0]), int(predicting[-1]) + 1)
    graph = im.graph
    dtype = next(im.model.parameters()).dtype
    with torch.no_grad(), im.run_state(RunState(ablated=ablated, record=True)) as clean_state:
        clean_loss = loss_fn(im.logits(batch.input_ids, batch.attention_mask), batch).float()
    layer_calls, live = clean_state.layer_calls, clean_state.live
    deltas = torch.empty(len(edges), dtype=torch.float32)
    by_layer: dict[int, list[int]] = {}
    for i, (_, v) in enumerate(edges):
        by_layer.setdefault(graph.destinations[v].layer, []).append(i)
    for layer, indices in sorted(by_layer.items()):
        n_upstream = 1 + 2 * layer               # sources computed before this layer runs
        for start in range(0, len(indices), chunk):
            part = indices[start : start + chunk]
            k = len(part)
            masks = one_hot_masks(graph, [edges[i] for i in part], dtype, batch.input_ids.device)
            state = RunState(ablated=ablated, edge_mask=masks,
                             live={u: live[u] for u in range(n_upstream)})   # batch 1, shared
            expanded = Batch(*(t[:, span].expand(k, -1) for t in (
                batch.input_ids, batch.attention_mask, batch.targets, batch.target_mask,
                batch.position_mask)))
            if layer < graph.n_layers:
                hidden = layer_calls[layer][0][0]
            else:                                # sink: the residual after the last layer
                hidden = sum(live[u] for u in range(graph.n_src))
            with torch.no_grad(), im.run_state(state):
                logits = im.logits_from_layer(layer, hidden.expand(k, *hidden.shape[1:]), layer_calls, span)
                deltas[part] = (loss_fn(logits, expanded).float() - clean_loss).cpu()
    return deltas


def ablate_edges(model: torch.nn.Module, samples: Sequence[Sample], edges: Sequence[Edge], *,
                 layout: str = "paper", kind: AblationKind | str = AblationKind.ZERO,
                 corrupted: Sequence[Sample] | None = None, mean_over: MeanOver | str = MeanOver.POSITIONS,
                 loss_fn: LossFn = target_nll, pad_id: int = 0, fast: bool = True,
                 chunk: int = 32, progress: bool = True) -> AblationResult:
    """Exact L(edge removed) − L(clean) for each edge and sample, one edge at a time."""
    kind = AblationKind(kind)
    validate_samples(samples, None)
    device = _device(model)
    with InstrumentedModel(model, layout) as im:
        graph = im.graph
        mask = graph.mask()
        for u, v in edges:
            if not (0 <= u < graph.n_src and 0 <= v < graph.n_dst) or not mask[u, v]:
                raise UserError(f"edge ({u}, {v}) is not an edge of the {graph.layout.value} graph")
        if kind is AblationKind.PATCH and corrupted is None:
            raise UserError("patch ablation needs corrupted inputs (one per sample, same lengths)")
        shared = mean_sources(im, samples, pad_id, MeanOver(mean_over)) if kind is AblationKind.MEAN else None
        patched = patch_sources(im, samples, corrupted, pad_id) if kind is AblationKind.PATCH else None
        delta = torch.full((len(samples), graph.n_src, graph.n_dst), float("nan"))
        clean_loss = torch.zeros(len(samples))
        for n, sample in enumerate(tqdm(samples, desc=f"ablate ({kind.value})", unit="sample",
                                        disable=not progress)):
            batch = make_batch([sample], pad_id, Positions.ALL).to(device)
            ablated = patched[n] if patched is not None else _ablated_for(shared, sample.input_length)
            clean_loss[n] = _loss_for(im, batch, loss_fn, RunState()).cpu()[0]
            if fast:
                values = fast_edge_deltas(im, batch, edges, ablated, loss_fn, chunk)
            else:
                values = naive_edge_deltas(im, batch, edges, ablated, loss_fn).cpu()
            for (u, v), value in zip(edges, values.tolist()):
                delta[n, u, v] = value
    return AblationResult(delta=delta, clean_loss=clean_loss, ids=[s.id for s in samples],
                          kind=kind, edges=list(edges))
