"""Exact edge ablation with the same primitive as EAP (m[u, v] = 1 removes edge u→v).

Ablated values z̃: `zero` (the paper's), `mean` (each source's mean over the dataset, per position
or over all tokens), `patch` (the source's value on a corrupted input of the same length).

Fast path: one clean batch-1 run records each layer's inputs, the sources and the sink's residual;
the edges whose destination sits in layer l are then stacked along the batch dimension (variant 0
an all-zero-mask control, then one variant per edge) and only layers l…L−1 run again; each delta
is its variant's loss minus the control's. The naive path (one full forward per edge) is kept as
the reference. With the target-NLL loss, the head and log-softmax run over the target span only,
`logit_chunk` positions at a time, so no [variants, T, vocab] tensor exists. A float16/bfloat16
model is ablated in float32 (`upcast`), one layer at a time (`compute_in_float32`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from harness.circuit.batches import (
    Batch,
    LossFn,
    Positions,
    Sample,
    at_positions,
    make_batch,
    target_nll,
    token_nll,
    validate_samples,
)
from harness.circuit.graph import Graph
from harness.circuit.intervention import InstrumentedModel, RunState, family_of
from harness.errors import UserError

DEFAULT_CHUNK = 32          # stacked variants per restarted run (python -m harness plan bounds its memory)
DEFAULT_LOGIT_CHUNK = 1024  # target positions whose logits exist at once (the loss is the same at any)

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
    clean_loss: float32 [n].

    positions: where each edge was removed (`all`, or `targets`: only at positions that predict a
    target, matching EAP with positions=targets). dtype: the dtype the ablation ran in (float32
    for a float16/bfloat16 model unless upcast was refused). control: whether each delta was taken
    against a zero-mask control in the same stacked run (fast path) or a separate clean run.
    sampling / edge_weights / edge_strata: how `edges` were drawn (`given` for an explicit list;
    see harness.circuit.fidelity.sample_edges): weights are inverse inclusion probabilities.
    """

    delta: torch.Tensor
    clean_loss: torch.Tensor
    ids: list[str]
    kind: AblationKind
    edges: list[Edge]
    positions: str = "all"
    dtype: str = ""
    control: bool = False
    sampling: str = "given"
    edge_weights: list[float] | None = None
    edge_strata: list[int] | None = None
    meta: dict = field(default_factory=dict)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def record_sources(im: InstrumentedModel, batch: Batch) -> torch.Tensor:
    """Source outputs of a clean run, detached: [n_src, b, t, h] in the model's dtype."""
    with torch.no_grad(), im.run_state(RunState()) as state:
        im.logits(batch.input_ids, batch.attention_mask, keep_last=1)   # the head's output is not needed
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


def check_corrupted(samples: Sequence[Sample], corrupted: Sequence[Sample]) -> None:
    """One corrupted input per sample, in order, each as long as its clean sample (else UserError)."""
    if len(corrupted) != len(samples):
        raise UserError(f"{len(samples)} samples but {len(corrupted)} corrupted inputs; give one "
                        "corrupted input per sample, in the same order")
    for clean, bad in zip(samples, corrupted):
        if bad.input_length != clean.input_length:
            raise UserError(f"sample {clean.id!r}: corrupted input has {bad.input_length} tokens, "
                            f"the clean one {clean.input_length}; patching needs equal lengths")


def patch_sources(im: InstrumentedModel, corrupted: Sample, pad_id: int) -> torch.Tensor:
    """One sample's source values on its corrupted input, [n_src, 1, t, h]: computed when that
    sample is ablated, so only one sample's stack is on the device at a time."""
    return record_sources(im, make_batch([corrupted], pad_id, Positions.ALL).to(_device(im.model)))


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
                      ablated: torch.Tensor | None = None, loss_fn: LossFn = target_nll,
                      ablate_positions: torch.Tensor | None = None) -> torch.Tensor:
    """Reference path: one full batch-1 forward per edge. batch of one sample → float32 [k] deltas.

    ablate_positions: float [1, t] 0/1 where the edge is removed (None: every position).
    """
    dtype = next(im.model.parameters()).dtype
    clean = _loss_for(im, batch, loss_fn, RunState(ablated=ablated))
    masks = one_hot_masks(im.graph, edges, dtype, batch.input_ids.device)
    deltas = [_loss_for(im, batch, loss_fn, RunState(ablated=ablated, edge_mask=masks[i : i + 1],
                                                     ablate_positions=ablate_positions)) - clean
              for i in range(len(edges))]
    return torch.cat(deltas)


@dataclass
class CleanRun:
    """A recorded clean batch-1 run: what the fast path restarts from.

    loss: float32 [1]; state.layer_calls: each layer's (args, kwargs) (residual input, masks, rotary
    tables); state.recorded_inputs[v]: destination v's residual before the intervention (for the
    sink: the last layer's output before the final norm, exactly as the model computed it);
    state.live[u]: source outputs. span: the positions whose logits the loss reads.
    """

    loss: torch.Tensor
    state: RunState
    span: slice


def chunked_target_nll(im: InstrumentedModel, normed: torch.Tensor, batch: Batch, chunk: int) -> torch.Tensor:
    """`target_nll` of the head on final-normed residuals [k, s, h] (batch: the same s positions), the
    head and log-softmax applied to `chunk` positions at a time: float32 [k]. Each position's NLL is
    the unchunked one; only [k, chunk, vocab] logits exist at once."""
    if chunk < 1:
        raise UserError(f"logit_chunk must be a positive number of positions, not {chunk}")
    per_position = torch.cat([token_nll(im.head(normed[:, i : i + chunk]), batch.targets[:, i : i + chunk],
                                        batch.target_mask[:, i : i + chunk])
                              for i in range(0, normed.shape[1], chunk)], dim=1)
    return (per_position.sum(-1) / batch.target_mask.sum(-1)).float()


def record_clean(im: InstrumentedModel, batch: Batch, ablated: torch.Tensor | None = None,
                 loss_fn: LossFn = target_nll, logit_chunk: int = DEFAULT_LOGIT_CHUNK) -> CleanRun:
    """One clean batch-1 run with every layer call, every source and the sink's input recorded (the
    other destinations' inputs are not: no restart reads them)."""
    if batch.input_ids.shape[0] != 1:
        raise ValueError("the fast path takes a batch of one sample")
    span = slice(None)
    state = RunState(ablated=ablated, record=True, record_dests=frozenset({im.graph.n_dst - 1}))
    with torch.no_grad(), im.run_state(state):
        if loss_fn is target_nll:               # the head and log-softmax over the target span only
            predicting = batch.target_mask[0].nonzero()[:, 0]
            span = slice(int(predicting[0]), int(predicting[-1]) + 1)
            normed = im.final_normed(batch.input_ids, batch.attention_mask)[:, span]
            loss = chunked_target_nll(im, normed, at_positions(batch, span), logit_chunk)
        else:
            loss = loss_fn(im.logits(batch.input_ids, batch.attention_mask), batch).float()
    return CleanRun(loss, state, span)


def stacked_variant_losses(im: InstrumentedModel, batch: Batch, clean: CleanRun, layer: int,
                           masks: torch.Tensor, ablated: torch.Tensor | None = None,
                           loss_fn: LossFn = target_nll,
                           ablate_positions: torch.Tensor | None = None,
                           logit_chunk: int = DEFAULT_LOGIT_CHUNK) -> torch.Tensor:
    """Losses of k stacked variants (masks [k, n_src, n_dst], only edges into destinations of
    `layer` set; layer = n_layers for the sink), restarted at that layer from the clean run's
    recorded residual: float32 [k]. Variants with an all-zero mask are controls. The restart keeps
    no source computed after the layer's attention (no mask reads one)."""
    graph = im.graph
    k = masks.shape[0]
    n_upstream = 1 + 2 * layer                    # sources computed before this layer runs
    live = clean.state.live
    state = RunState(ablated=ablated, edge_mask=masks, ablate_positions=ablate_positions,
                     live={u: live[u] for u in range(n_upstream)},   # batch 1, shared
                     live_below=n_upstream + 1)                       # + this layer's attention (read by its MLP)
    span = clean.span
    expanded = at_positions(batch, span, k)
    if layer < graph.n_layers:
        hidden = clean.state.layer_calls[layer][0][0]
    else:                                         # sink: the recorded residual, not a re-sum of sources
        hidden = clean.state.recorded_inputs[graph.n_dst - 1]
    with torch.no_grad(), im.run_state(state):
        normed = im.normed_from_layer(layer, hidden.expand(k, *hidden.shape[1:]), clean.state.layer_calls, span)
        if loss_fn is target_nll:
            return chunked_target_nll(im, normed, expanded, logit_chunk)
        return loss_fn(im.head(normed), expanded).float()


def fast_edge_deltas(im: InstrumentedModel, batch: Batch, edges: Sequence[Edge],
                     ablated: torch.Tensor | None = None, loss_fn: LossFn = target_nll,
                     chunk: int = DEFAULT_CHUNK, *, control: bool = True,
                     ablate_positions: torch.Tensor | None = None,
                     clean: CleanRun | None = None, logit_chunk: int = DEFAULT_LOGIT_CHUNK) -> torch.Tensor:
    """Stacked variants restarted at the destination's layer. batch of one → float32 [k] deltas.

    control (default): variant 0 of every stacked run has an all-zero mask and each edge's delta
    is its variant's loss minus that control's, from the same run, so the restart's rounding (a
    batch-k run is not bit-identical to the batch-1 clean run) cancels. control=False subtracts
    the batch-1 clean loss instead (the former behaviour). Each run holds chunk edges (+1 control).
    """
    graph = im.graph
    dtype = next(im.model.parameters()).dtype
    clean = clean or record_clean(im, batch, ablated, loss_fn, logit_chunk)
    device = batch.input_ids.device
    deltas = torch.empty(len(edges), dtype=torch.float32)
    by_layer: dict[int, list[int]] = {}
    for i, (_, v) in enumerate(edges):
        by_layer.setdefault(graph.destinations[v].layer, []).append(i)
    for layer, indices in sorted(by_layer.items()):
        for start in range(0, len(indices), chunk):
            part = indices[start : start + chunk]
            masks = one_hot_masks(graph, [edges[i] for i in part], dtype, device)
            if control:
                masks = torch.cat([torch.zeros_like(masks[:1]), masks])
            losses = stacked_variant_losses(im, batch, clean, layer, masks, ablated, loss_fn, ablate_positions,
                                            logit_chunk)
            reference = losses[0] if control else clean.loss[0]
            deltas[part] = (losses[int(control):] - reference).cpu()
    return deltas


def _units(model: torch.nn.Module) -> list[tuple[torch.nn.Module, bool]]:
    """What `compute_in_float32` casts at once: each decoder layer (with everything in it) and each
    other module that holds parameters of its own (embeddings, final norm, head). (module, recurse)."""
    layers = list(family_of(model).layers(model))
    inside = {id(m) for layer in layers for m in layer.modules()}
    others = [m for m in model.modules()
              if id(m) not in inside and any(True for _ in m.parameters(recurse=False))]
    return [(layer, True) for layer in layers] + [(m, False) for m in others]


@contextmanager
def compute_in_float32(model: torch.nn.Module, upcast: bool = True) -> Iterator[torch.dtype]:
    """Run a float16/bfloat16 model in float32 (per-edge deltas of ~1e-3 nats sit at bf16's
    forward-noise level) without a float32 copy of it: each unit's parameters (`_units`) are cast to
    float32 as the unit is entered and back as it is left, so one unit's float32 weights exist at a
    time. Casting bf16 → float32 is exact, so every operation sees the values a float32 copy would.
    Yields the dtype the ablation computes in; on leaving (also after an error) every parameter has its
    own dtype again. A float32/float64 model, or upcast=False, runs as it is."""
    dtype = next(model.parameters()).dtype
    if not upcast or dtype in (torch.float32, torch.float64):
        yield dtype
        return
    own = {p: p.dtype for p in model.parameters()}

    def cast(module: torch.nn.Module, recurse: bool, to: torch.dtype | None) -> None:
        for p in module.parameters(recurse=recurse):
            p.data = p.data.to(to or own[p])

    handles = []
    for module, recurse in _units(model):
        handles.append(module.register_forward_pre_hook(
            lambda m, args, r=recurse: cast(m, r, torch.float32)))
        handles.append(module.register_forward_hook(
            lambda m, args, out, r=recurse: cast(m, r, None)))
    try:
        yield torch.float32
    finally:
        for handle in handles:
            handle.remove()
        for p, original in own.items():
            if p.dtype != original:
                p.data = p.data.to(original)


def ablate_edges(model: torch.nn.Module, samples: Sequence[Sample], edges: Sequence[Edge], *,
                 layout: str = "paper", kind: AblationKind | str = AblationKind.ZERO,
                 corrupted: Sequence[Sample] | None = None, mean_over: MeanOver | str = MeanOver.POSITIONS,
                 loss_fn: LossFn = target_nll, pad_id: int = 0, fast: bool = True,
                 chunk: int = DEFAULT_CHUNK, positions: Positions | str = Positions.ALL, upcast: bool = True,
                 control: bool = True, progress: bool = True,
                 logit_chunk: int = DEFAULT_LOGIT_CHUNK) -> AblationResult:
    """Exact L(edge removed) − L(clean) for each edge and sample, one edge at a time.

    positions: `all` removes the edge at every position; `targets` only at the positions whose
    logits predict a target token (x_v = residual − mask(t)·(z_u − z̃_u)), which is what EAP with
    positions=targets estimates. upcast: run a float16/bfloat16 model in float32, a layer at a time
    (`compute_in_float32`; the EAP scores are not touched). control: see `fast_edge_deltas` (fast path
    only). logit_chunk: target positions whose logits exist at once (fast path, target-NLL loss).
    """
    kind = AblationKind(kind)
    positions = Positions(positions)
    validate_samples(samples, None)
    device = _device(model)
    with compute_in_float32(model, upcast) as dtype, InstrumentedModel(model, layout) as im:
        graph = im.graph
        mask = graph.mask()
        for u, v in edges:
            if not (0 <= u < graph.n_src and 0 <= v < graph.n_dst) or not mask[u, v]:
                raise UserError(f"edge ({u}, {v}) is not an edge of the {graph.layout.value} graph")
        if kind is AblationKind.PATCH:
            if corrupted is None:
                raise UserError("patch ablation needs corrupted inputs (one per sample, same lengths)")
            check_corrupted(samples, corrupted)
        shared = mean_sources(im, samples, pad_id, MeanOver(mean_over)) if kind is AblationKind.MEAN else None
        delta = torch.full((len(samples), graph.n_src, graph.n_dst), float("nan"))
        clean_loss = torch.zeros(len(samples))
        for n, sample in enumerate(tqdm(samples, desc=f"ablate ({kind.value})", unit="sample",
                                        disable=not progress)):
            batch = make_batch([sample], pad_id, positions).to(device)
            where = batch.position_mask if positions is Positions.TARGETS else None
            ablated = (patch_sources(im, corrupted[n], pad_id) if kind is AblationKind.PATCH
                       else _ablated_for(shared, sample.input_length))
            if fast:
                clean = record_clean(im, batch, ablated, loss_fn, logit_chunk)
                clean_loss[n] = clean.loss.cpu()[0]
                values = fast_edge_deltas(im, batch, edges, ablated, loss_fn, chunk, control=control,
                                          ablate_positions=where, clean=clean, logit_chunk=logit_chunk)
            else:
                clean_loss[n] = _loss_for(im, batch, loss_fn, RunState()).cpu()[0]
                values = naive_edge_deltas(im, batch, edges, ablated, loss_fn, where).cpu()
            for (u, v), value in zip(edges, values.tolist()):
                delta[n, u, v] = value
    return AblationResult(delta=delta, clean_loss=clean_loss, ids=[s.id for s in samples],
                          kind=kind, edges=list(edges), positions=positions.value,
                          dtype=str(dtype).removeprefix("torch."),
                          control=bool(fast and control))
