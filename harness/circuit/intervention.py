"""The one intervention primitive, installed on a HF causal LM with hooks.

Every destination slot v reads

    x_v = clean_v − Σ_u m[u, v] · (z_u − z̃_u)

where z_u is source u's output in the current run and z̃_u its ablated value (zero, a mean, or the
value from a corrupted input). EAP scores are ∂L/∂m at the current m (computed in a backward hook
on x_v, in float32); exact ablation sets m[u, v] = 1 for removed edges; a circuit sets
m = 1 − in_circuit. Attribution and ablation therefore share one definition of "removing an edge".

The model's own modules run unchanged (rotary embeddings, grouped-query attention, sliding
windows, q/k norms): in the `paper` layout the attention input norm passes the raw residual
through, and each of the q, k and v projections normalises its own slot input.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from harness.circuit.graph import Graph, Layout, build_graph
from harness.errors import UserError


@dataclass(frozen=True)
class FamilyAdapter:
    """Where each graph node lives in one architecture family's modules."""

    name: str
    layers: Callable[[nn.Module], nn.ModuleList]
    final_norm: Callable[[nn.Module], nn.Module]
    attn_norm: str                  # norm feeding attention (receives the residual)
    attn_out: str                   # module whose output is added to the residual (attention)
    mlp_norm: str                   # norm feeding the MLP
    mlp_out: str                    # module whose output is added to the residual (MLP)
    qkv: tuple[str, ...]            # q, k, v projections, or one fused projection
    config_layers: str = "num_hidden_layers"


def _llama_like(name: str) -> FamilyAdapter:
    return FamilyAdapter(
        name=name, layers=lambda m: m.model.layers, final_norm=lambda m: m.model.norm,
        attn_norm="input_layernorm", attn_out="self_attn", mlp_norm="post_attention_layernorm",
        mlp_out="mlp", qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"))


# The adapter of each HF model_type (the registry's family names are harness.circuit.FAMILIES).
ADAPTERS: dict[str, FamilyAdapter] = {
    "llama": _llama_like("llama"),
    "mistral": _llama_like("mistral"),
    "qwen2": _llama_like("qwen2"),
    "gemma3_text": FamilyAdapter(
        name="gemma3_text", layers=lambda m: m.model.layers, final_norm=lambda m: m.model.norm,
        attn_norm="input_layernorm", attn_out="post_attention_layernorm",
        mlp_norm="pre_feedforward_layernorm", mlp_out="post_feedforward_layernorm",
        qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    "gpt2": FamilyAdapter(
        name="gpt2", layers=lambda m: m.transformer.h, final_norm=lambda m: m.transformer.ln_f,
        attn_norm="ln_1", attn_out="attn", mlp_norm="ln_2", mlp_out="mlp", qkv=("attn.c_attn",),
        config_layers="n_layer"),
}


def family_of(model: nn.Module) -> FamilyAdapter:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type == "gemma3":   # multimodal wrapper config; only the text stack is supported
        model_type = None
    if model_type not in ADAPTERS:
        raise UserError(
            f"unsupported architecture {type(model).__name__} (model_type={model_type!r}); "
            f"supported model types: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[model_type]


def _submodule(root: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@dataclass
class RunState:
    """Per-forward state: source outputs, the ablation and the score accumulator.

    live: source outputs of this run, kept in the autograd graph (for the ablation term).
    delta: float32 [b, n_src, t·h], z_u − z̃_u detached (what a score multiplies).
    edge_mask: float [b or 1, n_src, n_dst] m, or None (no ablation).
    ablated: z̃ as [n_src, b or 1, t or 1, h], or None for zero ablation.
    scores: float32 [b, n_src, n_dst] accumulator, or None when not scoring.
    position_mask: float32 [b, t]: positions whose gradient contributes to scores.
    ablate_positions: float [b or 1, t] 0/1, or None (every position): positions where the edge
    mask acts, so x_v(t) = residual(t) − ablate_positions(t) Σ_u m[u, v](z_u(t) − z̃_u(t)). EAP with
    positions=targets estimates removing the edges at the target positions only; exact ablation
    matched to it passes the batch's target mask here.
    record: keep each destination's residual before the intervention (`recorded_inputs`, detached,
    in the model's dtype) and each layer's call (`layer_calls`), for restarts. record_dests: with
    `record`, keep only these destinations' residuals (None: every destination's).
    keep_calls: record each layer's call (`layer_calls`) without `record`'s residuals, keeping the
    residual input itself only for these layers (the segment starts of checkpointed EAP; None: no
    calls kept).
    recompute: a segment of checkpointed EAP run again: its sources' deltas were recorded by the
    first pass and are not written again. live_below: keep source u's output in `live` only for
    u < live_below (None: every source; 0: none, where nothing reads it: checkpointed EAP scores at
    m = 0, and its first pass would hold every source; a restarted ablation reads no source after its
    own layer's). delta_writes [n_src]: how often each source's delta was written (once per run;
    checkpointed EAP checks it).
    """

    edge_mask: torch.Tensor | None = None
    ablated: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    position_mask: torch.Tensor | None = None
    ablate_positions: torch.Tensor | None = None
    live: dict[int, torch.Tensor] = field(default_factory=dict)
    delta: torch.Tensor | None = None
    record: bool = False
    record_dests: frozenset[int] | None = None
    recorded_inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    layer_calls: dict[int, tuple[tuple, dict]] = field(default_factory=dict)
    keep_calls: frozenset[int] | None = None
    recompute: bool = False
    live_below: int | None = None
    delta_writes: list[int] = field(default_factory=list)


class InstrumentedModel:
    """A HF causal LM with the graph's intervention points installed (context manager).

    `with InstrumentedModel(model, "paper") as im: logits = im.forward(ids, attention_mask, ...)`.
    Leaving the block removes every hook, so the model is always restored.
    """

    def __init__(self, model: nn.Module, layout: Layout | str = Layout.PAPER):
        self.model = model
        self.family = family_of(model)
        n_layers = getattr(model.config, self.family.config_layers)
        self.graph: Graph = build_graph(n_layers, layout)
        self._handles: list = []
        self._forward_overrides: list[nn.Module] = []
        self._state: RunState | None = None

    # -- installation -------------------------------------------------------------------------
    def __enter__(self) -> "InstrumentedModel":
        """Install every hook; if installing fails midway, remove what was installed, then raise."""
        try:
            return self._install()
        except BaseException:
            self.__exit__()
            raise

    def _install(self) -> "InstrumentedModel":
        graph, fam = self.graph, self.family
        layers = fam.layers(self.model)
        self._hook(layers[0].register_forward_pre_hook(self._embed_hook))
        for layer_index, layer in enumerate(layers):
            self._hook(layer.register_forward_pre_hook(self._layer_call_hook(layer_index), with_kwargs=True))
        dest_of = {d.name: j for j, d in enumerate(graph.destinations)}
        for layer_index, layer in enumerate(layers):
            attn_src, mlp_src = 1 + 2 * layer_index, 2 + 2 * layer_index
            self._hook(_submodule(layer, fam.attn_out).register_forward_hook(self._source_hook(attn_src)))
            self._hook(_submodule(layer, fam.mlp_out).register_forward_hook(self._source_hook(mlp_src)))
            mlp_norm = _submodule(layer, fam.mlp_norm)
            self._hook(mlp_norm.register_forward_pre_hook(self._slot_hook(dest_of[f"mlp.{layer_index}"])))
            attn_norm = _submodule(layer, fam.attn_norm)
            if graph.layout is Layout.BLOCK:
                self._hook(attn_norm.register_forward_pre_hook(self._slot_hook(dest_of[f"attn.{layer_index}"])))
                continue
            # paper layout: the norm passes the residual through; each projection normalises its slot
            self._hook(attn_norm.register_forward_hook(lambda mod, args, out: args[0]))
            slots = [dest_of[f"attn.{layer_index}.{s}"] for s in ("q", "k", "v")]
            if len(fam.qkv) == 3:
                for proj_name, dest in zip(fam.qkv, slots):
                    proj = _submodule(layer, proj_name)
                    self._hook(proj.register_forward_pre_hook(self._normed_slot_hook(dest, attn_norm)))
            else:
                self._override_fused_qkv(_submodule(layer, fam.qkv[0]), attn_norm, slots)
        final_norm = fam.final_norm(self.model)
        self._hook(final_norm.register_forward_pre_hook(self._slot_hook(dest_of["sink"])))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module in self._forward_overrides:
            del module.forward
        self._forward_overrides.clear()
        self._state = None

    def _hook(self, handle) -> None:
        self._handles.append(handle)

    def _override_fused_qkv(self, fused: nn.Module, norm: nn.Module, slots: list[int]) -> None:
        """GPT-2 Conv1D c_attn (y = x W + b, W [h, 3h]): each third reads its own slot input."""
        def forward(residual: torch.Tensor) -> torch.Tensor:
            width = fused.weight.shape[1] // 3
            parts = []
            for k, dest in enumerate(slots):
                x = norm.forward(self._intervene(residual, dest))
                cols = slice(k * width, (k + 1) * width)
                parts.append(torch.addmm(fused.bias[cols], x.reshape(-1, x.shape[-1]),
                                         fused.weight[:, cols]).view(*x.shape[:-1], width))
            return torch.cat(parts, dim=-1)
        fused.forward = forward
        self._forward_overrides.append(fused)

    # -- hooks ----------------------------------------------------------------------------------
    def _embed_hook(self, module, args):
        hidden = args[0]
        state = self._state
        if state is not None and state.scores is not None:
            hidden = hidden.detach().requires_grad_(True)   # gradients start at the activations
        self._record_source(0, hidden)
        return (hidden, *args[1:])

    def _layer_call_hook(self, index: int):
        """With `record`, keep each layer's call (residual input, masks, rotary tables) for restarts;
        with `keep_calls`, the call with its residual input only at the listed layers."""
        def hook(module, args, kwargs):
            state = self._state
            if state is None:
                return
            if state.record:
                state.layer_calls[index] = (args, kwargs)
            elif state.keep_calls is not None:
                state.layer_calls[index] = (args if index in state.keep_calls else (None, *args[1:]), kwargs)
        return hook

    def _source_hook(self, index: int):
        def hook(module, args, output):
            self._record_source(index, _first(output))
        return hook

    def _slot_hook(self, dest: int):
        def hook(module, args):
            return (self._intervene(args[0], dest), *args[1:])
        return hook

    def _normed_slot_hook(self, dest: int, norm: nn.Module):
        def hook(module, args):
            return (norm.forward(self._intervene(args[0], dest)), *args[1:])
        return hook

    def _record_source(self, index: int, z: torch.Tensor) -> None:
        state = self._state
        if state is None:
            return
        if state.live_below is None or index < state.live_below:
            state.live[index] = z
        if state.scores is None or state.recompute:
            return
        if not state.delta_writes:
            state.delta_writes = [0] * self.graph.n_src
        state.delta_writes[index] += 1
        if state.delta is None:
            b, t, h = z.shape
            state.delta = torch.zeros(b, self.graph.n_src, t * h, dtype=torch.float32, device=z.device)
        delta = z.detach().float()
        if state.ablated is not None:
            delta = delta - state.ablated[index].float()
        state.delta[:, index] = delta.reshape(delta.shape[0], -1)

    def _intervene(self, residual: torch.Tensor, dest: int) -> torch.Tensor:
        """x_v = residual − Σ_u m[u, v](z_u − z̃_u); taps ∂L/∂x_v for scoring."""
        state = self._state
        if state is None:
            return residual
        if state.record and (state.record_dests is None or dest in state.record_dests):
            state.recorded_inputs[dest] = residual.detach()
        n_par = self.graph.destinations[dest].n_parents
        x = residual
        if state.edge_mask is not None:
            weights = state.edge_mask[:, :n_par, dest]                       # [b|1, n_par]
            if weights.requires_grad or torch.any(weights != 0):
                # without a gradient to take, only the parents with a weight enter the sum (a zero weight
                # adds exactly nothing): a few patched edges cost a few parents, not all n_par
                used = (torch.arange(n_par) if weights.requires_grad else
                        (weights != 0).any(0).nonzero()[:, 0].cpu())
                parents = [state.live[int(u)] for u in used]
                # one matmul per batch width: in stacked ablation variants the parents before the restart
                # are shared (batch 1) and the restarted layer's own attention is per variant, and no
                # shared parent is copied once per variant
                by_width: dict[int, list[int]] = {}
                for i, p in enumerate(parents):
                    by_width.setdefault(p.shape[0], []).append(i)
                term = functools.reduce(torch.add, (self._term(weights[:, used[g]], [parents[i] for i in g], used[g])
                                                    for g in by_width.values()))
                if state.ablate_positions is not None:
                    term = term * state.ablate_positions[..., None].to(term.dtype)
                x = residual - term
        if state.scores is not None and x.requires_grad:
            x = x.view_as(x)
            x.register_hook(self._score_hook(dest, n_par))
        return x

    def _term(self, weights: torch.Tensor, parents: list[torch.Tensor], used: torch.Tensor) -> torch.Tensor:
        """Σ_u m[u, v](z_u − z̃_u) over `parents` (sources `used`, each [b or 1, t, h], all of one batch
        width), weights [b|1, n_used] → [b, t, h]."""
        ablated = self._state.ablated
        z = torch.stack(parents)                                            # [n_used, b|1, t, h]
        if ablated is not None:
            z = z - ablated[used.to(ablated.device)].to(z.dtype)
        if z.shape[1] == 1:      # shared parents (stacked ablation variants): one matmul
            return torch.einsum("bu,uth->bth", weights.to(z.dtype), z[:, 0])
        return torch.einsum("bu,ubth->bth", weights.to(z.dtype), z)

    def _score_hook(self, dest: int, n_par: int):
        def hook(grad: torch.Tensor) -> None:
            state = self._state
            g = (grad.float() * state.position_mask[..., None]).reshape(grad.shape[0], -1, 1)
            contrib = torch.bmm(state.delta[:, :n_par], g)                    # [b, n_par, 1]
            state.scores[:, :n_par, dest] -= contrib[..., 0]
        return hook

    # -- running --------------------------------------------------------------------------------
    @contextmanager
    def run_state(self, state: RunState) -> Iterator[RunState]:
        if self._state is not None:
            raise RuntimeError("InstrumentedModel runs one forward at a time")
        self._state = state
        try:
            yield state
        finally:
            self._state = None

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               keep_last: int = 0) -> torch.Tensor:
        """[b, t] token ids → [b, t, vocab] logits (whatever RunState is active); keep_last = k > 0
        applies the head to the last k positions only ([b, k, vocab]): the loss needs no more."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          logits_to_keep=keep_last).logits

    def run_layers(self, start: int, stop: int, hidden: torch.Tensor,
                   layer_calls: dict[int, tuple[tuple, dict]]) -> torch.Tensor:
        """Run layers[start:stop] on residual `hidden` [b, t, h] with their recorded calls' masks and
        rotary tables (the residual each call recorded is not read)."""
        layers = self.family.layers(self.model)
        for index in range(start, stop):
            args, kwargs = layer_calls[index]
            hidden = _first(layers[index](hidden, *args[1:], **kwargs))
        return hidden

    def head(self, normed: torch.Tensor) -> torch.Tensor:
        """The output head on final-normed residuals [b, t, h] → logits [b, t, vocab] (with the model's
        final logit soft-capping, where it has one)."""
        logits = self.model.get_output_embeddings()(normed)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def final_normed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[b, t] token ids → the final norm's output [b, t, h] (whatever RunState is active); the head
        runs on the last position only, so no [b, t, vocab] tensor is made."""
        captured = []
        handle = self.family.final_norm(self.model).register_forward_hook(
            lambda module, args, output: captured.append(output))
        try:
            self.logits(input_ids, attention_mask, keep_last=1)
        finally:
            handle.remove()
        return captured[-1]

    def normed_from_layer(self, start: int, hidden: torch.Tensor,
                          layer_calls: dict[int, tuple[tuple, dict]],
                          positions: slice = slice(None)) -> torch.Tensor:
        """Run layers[start:] and the final norm on residual `hidden` [k, t, h]: [k, len(positions), h].

        layer_calls: each layer's recorded (args, kwargs) from a clean batch-1 run; masks and
        rotary tables broadcast over the k stacked variants. start = n_layers runs the norm only.
        """
        hidden = self.run_layers(start, len(self.family.layers(self.model)), hidden, layer_calls)
        return self.family.final_norm(self.model)(hidden)[:, positions]

    def logits_from_layer(self, start: int, hidden: torch.Tensor,
                          layer_calls: dict[int, tuple[tuple, dict]],
                          positions: slice = slice(None)) -> torch.Tensor:
        """`normed_from_layer`, then the head: [k, len(positions), vocab]."""
        return self.head(self.normed_from_layer(start, hidden, layer_calls, positions))
