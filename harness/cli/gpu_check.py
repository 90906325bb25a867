"""`python -m harness gpu-check`: what a lent GPU must show before the paper pairs run on it, in one
JSON file (`make gpu-check`; a few minutes on one GPU).

1. EAP against the float64 mask-gradient reference (`mask_gradient_scores`) on the device, with the
   model in float32 and in bfloat16: the largest error relative to the largest score, and the
   Spearman correlation over every real edge.
2. The planner's predicted peaks against `torch.cuda.max_memory_allocated` (each in a fresh process,
   `harness.plan.measure`), for SmolLM2-135M's shape and for the registry's deepseek-math 7B shape
   with random weights (no hub), EAP at the T_cut of the paper's α for T̄ = 1024, generation and
   exact ablation.
3. Throughput: EAP and greedy generation, tokens per second.
4. The engine's identities on the device (`engine_identities`): EAP, exact ablation, lookahead and
   the causal curve against the CPU, fast against naive ablation, lookahead(0) against EAP.
5. hf against the vLLM backend's answers (token agreement), where vLLM is installed.

`--dry-run` runs the same on the CPU with the 7B shape cut to 2 layers at a quarter of the width and
T̄ = 256, so the check itself is tested where no GPU is lent.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from harness.cli import COMMANDS
from harness.errors import UserError
from harness.files import check_writable_file

PAPER_ALPHAS = (0.03, 0.1, 0.3, 0.5)
T_BAR = 1024          # answer length the memory check's T_cut values are taken of
PROMPT = 256
# the random-weight model the engine checks run on
ENGINE_SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256)


def engine_check(device: str) -> list[dict]:
    """EAP in float32 and bfloat16 against the float64 reference, on `device`."""
    import torch
    from scipy.stats import spearmanr
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.circuit.batches import Sample
    from harness.circuit.eap import mask_gradient_scores, run_eap

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**ENGINE_SHAPE)).double().eval().to(device)
    model.requires_grad_(False)
    samples = [Sample(f"s{k}", tuple(range(3 + k, 40 + k)), tuple(range(50, 58 + k))) for k in range(3)]
    reference = mask_gradient_scores(model, samples)
    real = reference.abs().sum(0) > 0
    rows = []
    for dtype in ("float32", "bfloat16"):
        scores = run_eap(model.to(getattr(torch, dtype)), samples, batch_size=3, progress=False).scores
        model.double()
        error = (scores.double() - reference).abs().max() / reference.abs().max()
        rho = spearmanr(scores[:, real].flatten().numpy(), reference[:, real].flatten().numpy()).statistic
        rows.append({"dtype": dtype, "max_error_relative": float(error), "spearman": float(rho),
                     "ok": bool(error < (1e-4 if dtype == "float32" else 0.1) and rho > 0.95)})
    return rows


def engine_identities(device: str) -> list[dict]:
    """The engine's identities on `device`, for a llama and a qwen2 model in float64 (random weights):
    EAP, exact ablation (the fast stacked path), lookahead with 0 steps and the causal curve on the
    device against the same computations on the CPU, and on the device the fast ablation path against
    the naive one and lookahead(0) against EAP. Each row: the largest difference relative to the
    largest value, ok below 1e-5 (the model runs in float64; scores and deltas are kept in float32,
    so a device's other summation order shows at float32's rounding)."""
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from harness.circuit.ablation import ablate_edges
    from harness.circuit.batches import Sample
    from harness.circuit.causal import causal_curve
    from harness.circuit.eap import run_eap

    samples = [Sample(f"s{k}", tuple(range(3 + k, 30 + k)), tuple(range(50, 56 + k))) for k in range(3)]

    def relative(a, b) -> float:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        keep = np.isfinite(a) & np.isfinite(b)
        return float(np.abs(a[keep] - b[keep]).max() / max(np.abs(b[keep]).max(), 1e-300))

    def computations(model) -> dict:
        eap = run_eap(model, samples, batch_size=1, progress=False)
        real = eap.graph.mask().nonzero()[::7][:16].tolist()
        edges = [tuple(e) for e in real]
        return {"eap": eap.scores,
                "ablation": ablate_edges(model, samples, edges, progress=False).delta,
                "ablation naive": ablate_edges(model, samples, edges, fast=False, progress=False).delta,
                "lookahead(0)": run_eap(model, samples, method="lookahead", steps=0, progress=False).scores,
                "causal": causal_curve(model, samples, eap, ks=[1, 8, 64], n_random=2, progress=False).question_loss_top}

    rows = []
    for name, config_class, model_class in (("llama", LlamaConfig, LlamaForCausalLM),
                                            ("qwen2", Qwen2Config, Qwen2ForCausalLM)):
        torch.manual_seed(0)
        model = model_class(config_class(**ENGINE_SHAPE)).double().eval()
        model.requires_grad_(False)
        on_cpu = computations(model)
        on_device = computations(model.to(device))
        pairs = [(f"{what} on {device} vs cpu", on_device[what], on_cpu[what]) for what in on_cpu]
        pairs += [(f"ablation fast vs naive on {device}", on_device["ablation"], on_device["ablation naive"]),
                  (f"lookahead(0) vs eap on {device}", on_device["lookahead(0)"], on_device["eap"])]
        for what, a, b in pairs:
            error = relative(a, b)
            rows.append({"model": name, "check": what, "max_error_relative": error, "ok": error < 1e-5})
    return rows


def memory_check(device: str, dry_run: bool, folder: Path) -> list[dict]:
    """Predicted vs measured peaks, each measured in a fresh process."""
    from harness.models.registry import load_architectures
    from harness.plan.estimate import weight_bytes
    from harness.plan.measure import measured_peak, predicted_peak, stage_workload
    from harness.plan.shapes import ModelShape

    shapes = load_architectures()
    configs = {"smollm2-135m": shapes["bundled:smollm2-135m-instruct"],
               "deepseek-math-7b": dict(shapes["deepseek-ai/deepseek-math-7b-instruct"])}
    if dry_run:     # 2 layers at a quarter of the width, and shorter inputs: minutes on a CPU
        configs["deepseek-math-7b"].update(num_hidden_layers=2, hidden_size=1024, intermediate_size=2752,
                                           num_attention_heads=8, num_key_value_heads=8)
    dtype = "float32" if dry_run else "bfloat16"
    t_bar, prompt = (256, 64) if dry_run else (T_BAR, PROMPT)
    cases = [("eap", {"alpha": a}) for a in PAPER_ALPHAS] + [("generation", {"batch": 4}),
                                                            ("fidelity", {"alpha": 0.1, "batch": 8})]
    rows = []
    for name, config in configs.items():
        config = {"model_type": "llama", **config}
        for stage, case in cases:
            options = {"dtype": dtype, "prompt_tokens": prompt, "answer_tokens": t_bar, "max_new_tokens": 64,
                       **case}
            predicted = predicted_peak(config, stage, **options)
            try:
                measured = measured_peak(config, stage, folder, device, **options)
            except RuntimeError as err:
                rows.append({"model": name, "stage": stage, **case, "error": str(err)})
                continue
            w = stage_workload(**options)
            rows.append({"model": name, "stage": stage, **case, "t_cut": w.t_cut(w.alphas[0]), "dtype": dtype,
                         "predicted_bytes": predicted, "measured_bytes": measured,
                         "ratio": predicted / measured, "ok": abs(predicted / measured - 1) <= 0.2,
                         "weights_bytes": weight_bytes(ModelShape.from_config(config, name), dtype)})
    return rows


def throughput_check(device: str, dry_run: bool) -> list[dict]:
    """EAP and greedy generation tokens per second on SmolLM2-135M's shape (random weights)."""
    import torch

    from harness.circuit.batches import Sample
    from harness.circuit.eap import run_eap
    from harness.data.backends import HFBackend
    from harness.data.generation import Decoding
    from harness.models.registry import load_architectures
    from harness.plan.measure import random_model

    dtype = "float32" if dry_run else "bfloat16"
    model = random_model({"model_type": "llama", **load_architectures()["bundled:smollm2-135m-instruct"]},
                         dtype, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n, length = (2, 128) if dry_run else (16, 1024)
    samples = [Sample(f"s{k}", tuple(range(1, length // 2 + 1)), tuple(range(2, length // 2 + 2))) for k in range(n)]
    sync()
    started = time.perf_counter()
    run_eap(model, samples, batch_size=min(n, 8), progress=False)
    sync()
    eap_seconds = time.perf_counter() - started
    new = 16 if dry_run else 256
    loaded = SimpleNamespace(model=model, tokenizer=SimpleNamespace(pad_token_id=0))
    started = time.perf_counter()
    HFBackend(loaded).generate([list(range(1, 65))] * 8, Decoding(max_new_tokens=new), eos={model.config.vocab_size})
    sync()
    gen_seconds = time.perf_counter() - started
    return [{"what": "eap", "dtype": dtype, "tokens": n * length, "seconds": eap_seconds,
             "tokens_per_s": n * length / eap_seconds},
            {"what": "generation", "dtype": dtype, "batch": 8, "new_tokens": 8 * new, "seconds": gen_seconds,
             "tokens_per_s": 8 * new / gen_seconds}]


def backend_check(device: str) -> dict:
    """hf against vllm (`generate --compare-backends`'s measure) on the tiny llama folder, greedy: the
    real vLLM import, where it is installed; recorded, not a pass/fail gate (near-ties may part)."""
    try:
        import vllm
    except ImportError:
        return {"vllm": "not installed (pip install -e '.[vllm]')"}
    from harness.data.backends import make_backend, token_agreement
    from harness.data.generation import Decoding, generate_answers
    from harness.data.problems import load_reasoning_gym
    from harness.models.loading import load_model
    from harness.models.tiny import tiny_model_folder

    loaded = load_model(str(tiny_model_folder("llama")), dtype="float32", device=device)
    problems = list(load_reasoning_gym("chain_sum", n=8, seed=1).problems)
    answers = [generate_answers(loaded, problems, "bare", Decoding(max_new_tokens=16), use_cache=False,
                                progress=False, backend=make_backend(name, loaded)) for name in ("hf", "vllm")]
    agreement = token_agreement(*answers)
    return {"vllm": vllm.__version__, "identical": agreement["identical"],
            "mean_prefix_share": agreement["mean_prefix_share"]}


def run(args) -> int:
    import torch

    check_writable_file(args.out)   # before minutes of work (finding q01)
    device = "cpu" if args.dry_run else args.device
    if not args.dry_run and not torch.cuda.is_available():
        raise UserError("gpu-check: CUDA is not available here; run it where a GPU is lent, or pass --dry-run "
                        "to check the check on the CPU")
    started = time.perf_counter()
    result = {"device": device, "dry_run": args.dry_run, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}
    print(f"gpu-check on {device}: engine ...", flush=True)
    result["engine"] = engine_check(device) + engine_identities(device)
    print("gpu-check: planner vs measured peaks ...", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        result["memory"] = memory_check(device, args.dry_run, Path(folder))
    print("gpu-check: throughput ...", flush=True)
    result["throughput"] = throughput_check(device, args.dry_run)
    print("gpu-check: generation backends ...", flush=True)
    result["backends"] = backend_check(device)
    result["seconds"] = time.perf_counter() - started
    checks = result["engine"] + result["memory"]
    result["ok"] = all(row.get("ok", False) for row in checks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from harness.files import atomic_write_json

    atomic_write_json(args.out, result)
    for row in checks:
        if not row.get("ok", False):
            print(f"gpu-check: FAILED {json.dumps(row)}", file=sys.stderr)
    print(f"gpu-check: {'ok' if result['ok'] else 'FAILED'} in {result['seconds']:.0f} s -> {args.out}")
    return 0 if result["ok"] else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("gpu-check", help=COMMANDS["gpu-check"][1])
    p.add_argument("--device", default="cuda", help="the CUDA device to check (default cuda)")
    p.add_argument("--dry-run", action="store_true", help="run the check on the CPU at small sizes")
    p.add_argument("--out", type=Path, default=Path("reports/gpu-check.json"), help="the JSON written")
    p.set_defaults(run=run)
