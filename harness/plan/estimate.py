"""Predicted peak memory and work of each audit stage, from a model's shape alone.

Byte counts follow what the harness's own code keeps alive, not a generic transformer formula:
- weights: the models `ModelSession` keeps resident (both of a pair on the CPU, one on CUDA), in the
  run's dtype;
- generation: HF `generate`, a KV cache of (prompt + max_new_tokens) positions per sequence, the
  prefill's MLP activations and the last position's logits;
- EAP (`harness.circuit.eap.score_batch`): the tensors autograd saves for an activation-only backward
  (frozen weights, so a linear layer saves nothing), counted on transformers' llama with
  `torch.autograd.graph.saved_tensors_hooks`: per layer and token 3 MLP tensors (gate, up, SiLU
  output), attention's q, k, v and output, and RMSNorm's float32 inputs (2 per layer when the model
  is float32; 5 when a half-precision input is upcast); plus the float32 source deltas
  `[b, 2L+1, t·h]`, and the head over the target span only (logits, float32 log-softmax and its
  gradient);
- ablation and fidelity (`harness.circuit.ablation`): float32 weights of one unit at a time (a
  layer, or the embedding or head) for a half-precision model (`upcast`), the clean run's record
  (L layer inputs, 2L+1 sources, the sink's input), then `chunk + 1` stacked variants restarted at a
  layer: per variant the restarted layers' residual stream and one layer's transients, the patched
  parents stacked for one destination, and the head over `logit_chunk` target positions at a time;
  every restart layer (and the sink) is counted and the worst taken.
Attention is assumed to run as a fused kernel (SDPA), which keeps no t×t matrix.

Work is counted in FLOPs (2 per multiply-add; a frozen-weight backward ≈ one more forward) and
turned into time at a stated throughput; generation's decoding is bound by memory bandwidth (every
step reads the weights and the cache), so its time is the larger of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.circuit.ablation import DEFAULT_CHUNK, DEFAULT_LOGIT_CHUNK
from harness.errors import UserError
from harness.plan.shapes import ModelShape

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
FLOAT32 = 4
GIB = 2 ** 30


@dataclass(frozen=True)
class Workload:
    """What one pair's audit computes. Token counts are per question: prompt_tokens the prompt,
    answer_tokens T̄ (the mean answer length that T_cut = max(floor(α·T̄), 1) is taken of)."""

    questions: int
    alphas: tuple[float, ...]
    prompt_tokens: int
    answer_tokens: int
    max_new_tokens: int
    fidelity_samples: int
    fidelity_edges: int          # edges ablated per sample (top and uniform ones together)
    dtype: str
    models: int = 2              # resident at once (harness.audit.session.resident_models)

    def t_cut(self, alpha: float) -> int:
        return max(math.floor(alpha * self.answer_tokens), 1)

    def eap_tokens(self, alpha: float) -> int:
        """Input length of one EAP sample: prompt + answer[:T_cut − 1]."""
        return self.prompt_tokens + self.t_cut(alpha) - 1


@dataclass
class StageEstimate:
    """One stage's prediction: peak bytes at the chosen batch, the batch (or chunk), FLOPs, seconds."""

    stage: str
    peak_bytes: int
    batch: int
    batch_name: str
    flops: float
    seconds: float
    fits: bool
    detail: str = ""
    parts: dict[str, int] = field(default_factory=dict)
    largest_fitting: int = 0     # the largest batch (or chunk) that fits; 0: none does
    segments: int = 1            # EAP: activation-checkpointing segments the stage is planned with
    logit_chunk: int = 0         # fidelity: target positions whose logits exist at once


@dataclass(frozen=True)
class Throughput:
    """The stated machine: sustained FLOP/s of dense matmuls and memory bandwidth in bytes/s."""

    flops_per_s: float
    bytes_per_s: float


def weight_bytes(shape: ModelShape, dtype: str) -> int:
    return shape.parameters * DTYPE_BYTES[dtype]


def kv_cache_bytes(shape: ModelShape, dtype: str, batch: int, positions: int) -> int:
    """K and V of every layer for `batch` sequences of `positions` tokens."""
    return 2 * shape.n_layers * shape.kv_dim * DTYPE_BYTES[dtype] * batch * positions


def forward_flops(shape: ModelShape, tokens: int, head_tokens: int) -> float:
    """One forward over `tokens` positions (causal attention), the head on `head_tokens` of them."""
    body = shape.parameters - shape.vocab * shape.hidden * (1 if shape.tied else 2)
    attention = 2 * shape.n_layers * shape.q_dim * tokens * tokens   # QKᵀ and AV, causal half
    return 2 * body * tokens + attention + 2 * shape.vocab * shape.hidden * head_tokens


def generation_peak(shape: ModelShape, w: Workload, batch: int) -> dict[str, int]:
    s = DTYPE_BYTES[w.dtype]
    positions = w.prompt_tokens + w.max_new_tokens
    return {"weights": w.models * weight_bytes(shape, w.dtype),
            "kv_cache": kv_cache_bytes(shape, w.dtype, batch, positions),
            "prefill": batch * w.prompt_tokens * (3 * shape.intermediate * s + 4 * shape.hidden * s),
            "logits": batch * shape.vocab * (s + 2 * FLOAT32)}


def eap_activation_bytes_per_token(shape: ModelShape, dtype: str) -> int:
    """Bytes autograd keeps per layer and token in an EAP forward (see the module docstring)."""
    s = DTYPE_BYTES[dtype]
    norm_inputs = 2 if s >= FLOAT32 else 5
    return (3 * shape.intermediate * s + 2 * shape.q_dim * s + 2 * shape.kv_dim * s
            + norm_inputs * shape.hidden * FLOAT32)


def longest_segment(n_layers: int, segments: int) -> int:
    """Layers in the longest of `segments` runs (harness.circuit.eap.segment_starts)."""
    from harness.circuit.eap import segment_starts

    starts = segment_starts(n_layers, segments) + [n_layers]
    return max(b - a for a, b in zip(starts, starts[1:]))


def eap_peak(shape: ModelShape, w: Workload, alpha: float, batch: int, segments: int = 1) -> dict[str, int]:
    s = DTYPE_BYTES[w.dtype]
    t, span = w.eap_tokens(alpha), w.t_cut(alpha)
    n_src, n_dst = 2 * shape.n_layers + 1, 4 * shape.n_layers + 1
    logits_bytes = s + 3 * FLOAT32 if s < FLOAT32 else 3 * FLOAT32
    held = longest_segment(shape.n_layers, segments)
    # plain EAP keeps every source's output (RunState.live, model dtype); checkpointed EAP keeps none, and
    # its peak falls in the last segment's backward, where the head holds one more span x vocab tensor
    extra = ({"source_outputs": batch * n_src * t * shape.hidden * s} if segments == 1 else
             {"segment_starts": batch * t * shape.hidden * s * (segments + 1),
              "head_backward": batch * span * shape.vocab * FLOAT32})
    return {"weights": w.models * weight_bytes(shape, w.dtype),
            "saved_activations": batch * t * (held * eap_activation_bytes_per_token(shape, w.dtype)
                                              + shape.hidden * FLOAT32),
            **extra,
            "source_deltas": batch * n_src * t * shape.hidden * FLOAT32,
            "scores": batch * n_src * n_dst * FLOAT32,
            "head": batch * span * shape.vocab * logits_bytes,
            "backward_transients": batch * t * (3 * shape.intermediate * s + 4 * shape.hidden * FLOAT32)}


def edges_into_layer(shape: ModelShape, layer: int) -> int:
    """Paper-layout edges into layer l's q, k, v and MLP slots, 3·(2l+1) + (2l+2); l = L: the sink's 2L+1."""
    return 2 * layer + 1 if layer == shape.n_layers else 8 * layer + 5


# per variant and restarted token: the residual stream's tensors a restarted layer holds at once, in
# units of hidden (its input, the q, k and v slots' inputs, attention's output and the MLP's input and
# output), measured with `python -m harness.plan.measure --stage fidelity`
RESTART_RESIDUALS = 7


def restart_peak(shape: ModelShape, t: int, span: int, variants: int, layer: int, logit_chunk: int) -> int:
    """Bytes of one stacked restart at `layer` (n_layers: the sink, the head only), float32: the larger
    of its layers' phase (per variant the residual stream and one layer's MLP, plus one destination's
    patched parents stacked) and its head's phase (per variant the final norm's output over the
    sequence, and one chunk of logits with their log-softmax)."""
    c, h = FLOAT32, shape.hidden
    parents = min(variants - 1, 2 * layer + 2)
    layers = (variants * t * (RESTART_RESIDUALS * h + 3 * shape.intermediate) + (parents + 1) * t * h
              if layer < shape.n_layers else (parents + 1 + variants) * t * h)
    head = variants * (t * h + min(span, logit_chunk) * shape.vocab * 2)
    return max(layers, head) * c


def worst_restart_layer(shape: ModelShape, w: Workload, alpha: float, chunk: int,
                        logit_chunk: int = DEFAULT_LOGIT_CHUNK) -> int:
    """The restart layer (n_layers: the sink) whose stacked run with up to `chunk` edges peaks highest."""
    t, span = w.eap_tokens(alpha), w.t_cut(alpha)
    return max(range(shape.n_layers + 1), key=lambda l: restart_peak(
        shape, t, span, min(chunk, edges_into_layer(shape, l)) + 1, l, logit_chunk))


def ablation_peak(shape: ModelShape, w: Workload, alpha: float, chunk: int,
                  logit_chunk: int = DEFAULT_LOGIT_CHUNK) -> dict[str, int]:
    """One sample's exact ablation with up to `chunk` stacked variants (+1 control), float32 compute,
    at the worst restart layer (the edges of a fidelity check can fall anywhere)."""
    c, h = FLOAT32, shape.hidden
    t, span = w.eap_tokens(alpha), w.t_cut(alpha)
    layer = worst_restart_layer(shape, w, alpha, chunk, logit_chunk)
    variants = min(chunk, edges_into_layer(shape, layer)) + 1
    largest_unit = max(shape.layer_parameters, shape.vocab * h)
    clean_run = t * (3 * shape.intermediate + 4 * h) * c + min(span, logit_chunk) * shape.vocab * 2 * c
    return {"weights": w.models * weight_bytes(shape, w.dtype),
            # a unit's half-precision weights are freed while its float32 copy is in use
            "float32_unit": largest_unit * max(FLOAT32 - DTYPE_BYTES[w.dtype], 0),
            "clean_record": t * h * c * (shape.n_layers + (2 * shape.n_layers + 1) + 1),
            "clean_run_or_variants": max(clean_run, restart_peak(shape, t, span, variants, layer, logit_chunk))}


def largest_fitting(peak_of, budget: int, upper: int) -> int:
    """The largest batch in 1..upper whose peak fits `budget` (peaks grow with the batch); 0 if none."""
    if sum(peak_of(1).values()) > budget:
        return 0
    low, high = 1, max(upper, 1)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(peak_of(mid).values()) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def _estimate(stage: str, peak_of, budget: int, upper: int, batch_name: str, flops_of,
              seconds_of, detail: str) -> StageEstimate:
    batch = largest_fitting(peak_of, budget, upper)
    shown = max(batch, 1)
    parts = peak_of(shown)
    return StageEstimate(stage=stage, peak_bytes=sum(parts.values()), batch=batch, batch_name=batch_name,
                         flops=flops_of(shown), seconds=seconds_of(shown), fits=batch > 0,
                         detail=detail, parts=parts, largest_fitting=batch)


def choose_segments(shape: ModelShape, w: Workload, alpha: float, budget: int, batch: int | None = None) -> int:
    """The cheapest EAP checkpointing that fits `budget` at `batch` (None: at batch 1): none (1) when it
    fits, else the segment count with the smallest peak (every count > 1 costs the same one extra
    forward). 1 when nothing fits either way (the stage then reports its misfit)."""
    def peak(segments: int) -> int:
        return sum(eap_peak(shape, w, alpha, batch or 1, segments).values())

    if peak(1) <= budget:
        return 1
    best = min(range(2, shape.n_layers + 1), key=peak, default=1)
    return best if peak(best) <= budget else 1


LOGIT_CHUNKS = (DEFAULT_LOGIT_CHUNK, 512, 256, 128, 64, 32, 16)


def choose_fidelity(shape: ModelShape, w: Workload, alpha: float, budget: int, chunk: int | None = None,
                    logit_chunk: int | None = None) -> tuple[int, int]:
    """(stacked variants, logit chunk) exact ablation runs with under `budget`: the most variants that fit
    (up to DEFAULT_CHUNK; fewer restarted runs), then the longest logit chunk (of LOGIT_CHUNKS) at which
    they do (fewer head calls; the loss is the same at any). A given value is kept. When nothing fits:
    the smallest of each (the stage then reports its misfit)."""
    chunks = [logit_chunk] if logit_chunk else list(LOGIT_CHUNKS)

    def variants(lc: int) -> int:
        peak = (lambda k: ablation_peak(shape, w, alpha, k, lc))
        if chunk:
            return chunk if sum(peak(chunk).values()) <= budget else 0
        return largest_fitting(peak, budget, DEFAULT_CHUNK)

    fitting = {lc: variants(lc) for lc in chunks}
    most = max(fitting.values())
    if most == 0:
        return chunk or 1, chunks[-1]
    return most, next(lc for lc in chunks if fitting[lc] == most)


def plan_pair(shape: ModelShape, w: Workload, budget: int, speed: Throughput,
              generation_batch: int | None = None, eap_batch: int | None = None,
              chunk: int | None = None, fidelity_alpha: float | None = None,
              eap_segments: int | None = None, logit_chunk: int | None = None) -> list[StageEstimate]:
    """Every stage of one pair's audit under a memory budget (bytes). A batch left None is chosen
    (the largest that fits, up to the question count or DEFAULT_CHUNK variants); a given one is checked.
    EAP's checkpointing segments left None are chosen per alpha (`choose_segments`); given, checked.
    Exact ablation's variants and logit chunk left None are chosen (`choose_fidelity`); given, checked.
    Fidelity is planned at `fidelity_alpha` (default: the largest α, the worst case)."""
    s = DTYPE_BYTES[w.dtype]
    stages: list[StageEstimate] = []
    weights = w.models * weight_bytes(shape, w.dtype)
    stages.append(StageEstimate("load", weights, w.models, "models", 0.0, weights / speed.bytes_per_s,
                                weights <= budget, f"{w.models} × {shape.parameters / 1e9:.2f}B parameters",
                                {"weights": weights}, w.models if weights <= budget else 0))

    positions = w.prompt_tokens + w.max_new_tokens

    def generation_flops(_batch: int) -> float:
        return w.models * w.questions * forward_flops(shape, positions, w.max_new_tokens)

    def generation_seconds(batch: int) -> float:
        steps = w.models * math.ceil(w.questions / batch) * w.max_new_tokens
        read = weight_bytes(shape, w.dtype) + kv_cache_bytes(shape, w.dtype, batch, positions) / 2
        return max(generation_flops(batch) / speed.flops_per_s, steps * read / speed.bytes_per_s)

    gen_peak = (lambda b: generation_peak(shape, w, b))
    stages.append(_pinned(_estimate("generation", gen_peak, budget, w.questions, "batch", generation_flops,
                                    generation_seconds, f"{positions} positions cached per sequence"),
                          generation_batch, gen_peak, generation_flops, generation_seconds, budget))

    for alpha in w.alphas:
        t = w.eap_tokens(alpha)
        n_edges = 4 * shape.n_layers ** 2 + 3 * shape.n_layers + 1     # the paper layout's edges
        hooks = 2 * t * shape.hidden * n_edges                            # one ⟨∂L/∂x_v, δz_u⟩ per edge

        def eap_flops(_batch: int, t=t, alpha=alpha, hooks=hooks) -> float:
            one = 2 * forward_flops(shape, t, w.t_cut(alpha)) + hooks   # forward + activation backward
            return w.models * w.questions * one

        segments = eap_segments or choose_segments(shape, w, alpha, budget, eap_batch)
        eap_of = (lambda b, a=alpha, n=segments: eap_peak(shape, w, a, b, n))
        recompute = (lambda b, t=t, alpha=alpha, n=segments:
                     w.models * w.questions * forward_flops(shape, t, 1) if n > 1 else 0.0)
        checkpointed = (lambda b, f=eap_flops, r=recompute: f(b) + r(b))
        eap_seconds = (lambda b, f=checkpointed: f(b) / speed.flops_per_s)
        detail = f"T_cut {w.t_cut(alpha)}, {t} tokens per sample" + (
            f", checkpointed over {segments} segments" if segments > 1 else "")
        estimate = _pinned(_estimate(f"eap α={alpha:g}", eap_of, budget, w.questions, "batch", checkpointed,
                                     eap_seconds, detail), eap_batch, eap_of, checkpointed, eap_seconds, budget)
        estimate.segments = segments
        stages.append(estimate)

    alpha = fidelity_alpha or max(w.alphas)
    t = w.eap_tokens(alpha)

    def ablation_flops(_chunk: int) -> float:
        restarts = w.fidelity_edges / 2          # each edge's restart runs half the layers, on average
        per_sample = forward_flops(shape, t, t) + restarts * forward_flops(shape, t, w.t_cut(alpha))
        return w.models * w.fidelity_samples * per_sample

    variants, logits = choose_fidelity(shape, w, alpha, budget, chunk, logit_chunk)
    abl_peak = (lambda k: ablation_peak(shape, w, alpha, k, logits))
    estimate = _pinned(_estimate(f"fidelity α={alpha:g}", abl_peak, budget, DEFAULT_CHUNK, "chunk", ablation_flops,
                                 (lambda k: ablation_flops(k) / speed.flops_per_s),
                                 f"{w.fidelity_edges} edges × {w.fidelity_samples} samples, float32"
                                 + (" a layer at a time" if s < FLOAT32 else "")
                                 + f", logits over {min(logits, w.t_cut(alpha))} of {w.t_cut(alpha)} positions at a time"),
                       variants, abl_peak, ablation_flops, (lambda k: ablation_flops(k) / speed.flops_per_s), budget)
    estimate.logit_chunk = logits
    stages.append(estimate)
    return stages


def _pinned(estimate: StageEstimate, given: int | None, peak_of, flops_of, seconds_of,
            budget: int) -> StageEstimate:
    """The estimate at a batch the run already fixed (checked, not chosen)."""
    if given is None:
        return estimate
    parts = peak_of(given)
    peak = sum(parts.values())
    return StageEstimate(estimate.stage, peak, given, estimate.batch_name, flops_of(given), seconds_of(given),
                         peak <= budget, estimate.detail, parts, estimate.largest_fitting)


def available_memory(device: str) -> int:
    """The device's memory when --memory is not given: a CUDA device's total, or this machine's
    available RAM (MemAvailable)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available here; give --memory to plan for it")
        index = int(device.split(":")[1]) if ":" in device else 0
        return torch.cuda.get_device_properties(index).total_memory
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise UserError("could not read MemAvailable from /proc/meminfo; give --memory")


def _rows_workload(rows: list[dict], dtype: str, models: int) -> Workload:
    """One audit stage's rows as a workload at α = 1: their longest prompt and target."""
    prompt = max(len(r["prompt_ids"]) for r in rows)
    answer = max(len(r["target_ids"]) for r in rows)
    return Workload(questions=len(rows), alphas=(1.0,), prompt_tokens=prompt, answer_tokens=answer,
                    max_new_tokens=answer, fidelity_samples=1, fidelity_edges=1, dtype=dtype, models=models)


def planned_segments(shape: ModelShape, rows: list[dict], dtype: str, batch: int, models: int, budget: int) -> int:
    """`choose_segments` for one EAP stage of the audit: its rows' longest prompt and target."""
    return choose_segments(shape, _rows_workload(rows, dtype, models), 1.0, budget, batch)


def _device_budget(device: str) -> tuple[int, int]:
    from harness.audit.session import resident_models

    return available_memory(device), resident_models(device)


def _loaded_shape(model) -> ModelShape:
    return ModelShape.from_config(model.config.to_dict(), "the loaded model")


def segment_planner(dtype: str, batch: int, device: str):
    """The audit's choice of EAP segments per stage: (model, rows) -> `planned_segments` on this
    device's memory, with the models a session keeps resident there."""
    budget, models = _device_budget(device)

    def plan(model, rows: list[dict]) -> int:
        return planned_segments(_loaded_shape(model), rows, dtype, batch, models, budget)

    return plan


def fidelity_planner(dtype: str, device: str):
    """The audit's choice of exact ablation's settings per stage: (model, rows, chunk, logit_chunk) ->
    `choose_fidelity` on the rows it ablates, this device's memory and resident models (a setting
    given as > 0 is kept)."""
    budget, models = _device_budget(device)

    def plan(model, rows: list[dict], chunk: int, logit_chunk: int) -> tuple[int, int]:
        return choose_fidelity(_loaded_shape(model), _rows_workload(rows, dtype, models), 1.0, budget,
                               chunk or None, logit_chunk or None)

    return plan
