"""Measured peak memory of one stage on a random-weight model built from a config, to check the
planner's predictions (`harness.plan.estimate`) against the harness's real code.

    python -m harness.plan.measure --config shape.json --stage eap --alpha 0.5 --prompt-tokens 64 \\
        --answer-tokens 128 --dtype float32 --batch 1

Prints one JSON object: peak_bytes (the stage's peak above the Python/torch runtime, weights
included) and the model's parameter count. On CPU the peak is the process's resident-set high-water
mark (VmHWM, reset after the model is built, so model construction never counts); on CUDA it is
`torch.cuda.max_memory_allocated`. Run it in a fresh process: the resident set of a process that has
already run other work is not a clean baseline.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from harness.circuit.ablation import DEFAULT_LOGIT_CHUNK
from harness.plan.estimate import Workload, ablation_peak, eap_peak, generation_peak, weight_bytes
from harness.plan.shapes import ModelShape

STAGES = ("load", "generation", "eap", "fidelity", "eap-full-head", "backward")


def resident_bytes() -> int:
    """This process's resident set now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def reset_peak() -> None:
    """Restart VmHWM from the current resident set (Linux ≥ 4.0: `5` in clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_resident_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def random_model(config: dict, dtype: str, device: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**config)
    torch.manual_seed(0)
    with torch.device(device):     # weights are created where they run (a 7B model never visits the CPU)
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).eval()
    model.requires_grad_(False)
    return model


def run_stage(model: torch.nn.Module, stage: str, w: Workload, alpha: float, batch: int, segments: int = 1,
              logit_chunk: int = DEFAULT_LOGIT_CHUNK) -> None:
    """Run one stage of the harness's own code on token ids 1..vocab−1 (the content does not matter
    for memory; lengths do)."""
    vocab = model.config.vocab_size
    ids = [1 + (7 * k) % (vocab - 1) for k in range(w.prompt_tokens + max(w.answer_tokens, w.max_new_tokens))]
    if stage == "generation":
        from harness.data.backends import HFBackend
        from harness.data.generation import Decoding

        loaded = SimpleNamespace(model=model, tokenizer=SimpleNamespace(pad_token_id=0))
        HFBackend(loaded).generate([ids[: w.prompt_tokens]] * batch, Decoding(max_new_tokens=w.max_new_tokens),
                                   eos={vocab})     # no real token ends an answer: every row runs to the budget
        return
    from harness.circuit.batches import Sample

    answer = ids[w.prompt_tokens:]
    samples = [Sample(f"s{k}", tuple(ids[: w.prompt_tokens]), tuple(answer[: w.t_cut(alpha)]))
               for k in range(batch)]
    if stage in ("eap", "eap-full-head"):
        from harness.circuit.batches import target_nll
        from harness.circuit.eap import run_eap

        # eap-full-head: the same loss through the general path, head and log-softmax at every position
        loss = target_nll if stage == "eap" else (lambda logits, b: target_nll(logits, b))
        run_eap(model, samples, batch_size=batch, progress=False, loss_fn=loss, segments=segments)
    elif stage == "backward":       # a frozen-weight forward + backward, no attribution: the floor
        from harness.circuit.batches import Positions, last_positions, make_batch, target_nll, target_span

        b = make_batch(samples, 0, Positions.ALL)
        span = target_span(b)
        embeds = model.get_input_embeddings()(b.input_ids).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(inputs_embeds=embeds, attention_mask=b.attention_mask, logits_to_keep=span).logits
            target_nll(logits, last_positions(b, span)).sum().backward()
    elif stage == "fidelity":
        from harness.circuit.ablation import ablate_edges
        from harness.circuit.graph import build_graph
        from harness.plan.estimate import worst_restart_layer

        graph = build_graph(model.config.num_hidden_layers)
        layer = worst_restart_layer(ModelShape.from_config(model.config.to_dict(), "model"), w, alpha, batch,
                                    logit_chunk)
        edges = [(u, v) for v, d in enumerate(graph.destinations) if d.layer == layer
                 for u in range(d.n_parents)][:batch]   # one full stacked run at the layer the planner bounds
        ablate_edges(model, samples[:1], edges, chunk=batch, progress=False, logit_chunk=logit_chunk)
    else:
        raise SystemExit(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def stage_workload(*, dtype: str = "float32", alpha: float = 0.5, prompt_tokens: int = 64,
                   answer_tokens: int = 128, max_new_tokens: int = 32, batch: int = 1,
                   fidelity_edges: int = 16) -> Workload:
    """The one-model workload a measurement runs (the defaults are this module's CLI defaults)."""
    return Workload(questions=batch, alphas=(alpha,), prompt_tokens=prompt_tokens, answer_tokens=answer_tokens,
                    max_new_tokens=max_new_tokens, fidelity_samples=1, fidelity_edges=fidelity_edges,
                    dtype=dtype, models=1)


def predicted_peak(config: dict, stage: str, **options) -> int:
    """What the planner predicts for the measurement `measured_peak(config, stage, **options)` makes."""
    shape = ModelShape.from_config(config, "measured model")
    segments = options.pop("segments", 1)
    logit_chunk = options.pop("logit_chunk", DEFAULT_LOGIT_CHUNK)
    w = stage_workload(**options)
    alpha, batch = w.alphas[0], w.questions
    parts = {"load": lambda: {"weights": weight_bytes(shape, w.dtype)},
             "generation": lambda: generation_peak(shape, w, batch),
             "eap": lambda: eap_peak(shape, w, alpha, batch, segments),
             "fidelity": lambda: ablation_peak(shape, w, alpha, batch, logit_chunk)}[stage]()
    return sum(parts.values())


def measured_peak(config: dict, stage: str, folder: Path, device: str = "cpu", **options) -> int:
    """Peak bytes of one stage, measured in a fresh process (`main`); options as `stage_workload`.
    A fixed mmap threshold makes glibc return every freed block of ≥ 64 KiB at once, so the resident
    set follows live tensors (as CUDA's max_memory_allocated does) instead of the allocator's
    retained heap. A failed measurement raises RuntimeError with the process's last words."""
    path = Path(folder) / "config.json"
    path.write_text(json.dumps(config))
    argv = [sys.executable, "-m", "harness.plan.measure", "--config", str(path), "--stage", stage,
            "--device", device]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(argv, capture_output=True, text=True,
                         env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    if out.returncode:
        raise RuntimeError(out.stderr.strip()[-500:])
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, required=True, help="HF config JSON (model_type and shape)")
    p.add_argument("--stage", required=True, choices=STAGES)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--answer-tokens", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--fidelity-edges", type=int, default=16)
    p.add_argument("--batch", type=int, default=1, help="generation/EAP batch, or fidelity chunk")
    p.add_argument("--segments", type=int, default=1, help="EAP's activation-checkpointing segments")
    p.add_argument("--logit-chunk", type=int, default=DEFAULT_LOGIT_CHUNK,
                   help="fidelity: target positions whose logits exist at once")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    w = stage_workload(dtype=args.dtype, alpha=args.alpha, prompt_tokens=args.prompt_tokens,
                       answer_tokens=args.answer_tokens, max_new_tokens=args.max_new_tokens, batch=args.batch,
                       fidelity_edges=args.fidelity_edges)
    cuda = args.device.startswith("cuda")
    config = json.loads(args.config.read_text())
    # warm-up: a one-layer model of the same config runs the stage first, so imports, kernels and
    # lazy initialisation are part of the runtime baseline, not of the stage's peak
    tiny = Workload(**{**w.__dict__, "prompt_tokens": 4, "answer_tokens": 8, "max_new_tokens": 2})
    warm = random_model({**config, "num_hidden_layers": 1, "vocab_size": 64}, args.dtype, args.device)
    if args.stage != "load":
        run_stage(warm, args.stage, tiny, args.alpha, 1)
    del warm
    gc.collect()
    runtime = 0 if cuda else resident_bytes()
    model = random_model(config, args.dtype, args.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak()
    if args.stage != "load":
        run_stage(model, args.stage, w, args.alpha, args.batch, args.segments, args.logit_chunk)
    peak = torch.cuda.max_memory_allocated() if cuda else peak_resident_bytes() - runtime
    json.dump({"peak_bytes": peak, "parameters": sum(t.numel() for t in model.parameters()),
               "stage": args.stage, "dtype": args.dtype, "device": args.device}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
