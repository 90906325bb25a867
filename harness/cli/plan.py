"""`python -m harness plan`: predicted peak memory, work and time of each audit stage for model pairs,
from their configs alone (nothing is loaded), with the batch sizes that fit a memory budget.

    python -m harness plan --pairs deepseek-math,mistral --device cuda --memory 80GiB

Exit 0 when every stage fits, 2 (with the stages that do not, and why) otherwise.
"""

from __future__ import annotations

import re

from harness.cli import COMMANDS, real_number, whole_number
from harness.errors import UserError

PAPER_ALPHAS = (0.03, 0.1, 0.3, 0.5)
PROMPT_TOKENS = 512     # prompt length the planner assumes per question unless told
UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
         "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}
# stated throughput when none is given: (dense matmul FLOP/s, memory bytes/s) of the device kind
DEFAULT_SPEED = {"cuda": (150e12, 1.5e12), "cpu": (0.1e12, 10e9)}


def default_speed(device: str) -> tuple[float, float]:
    return DEFAULT_SPEED["cuda" if device.startswith("cuda") else "cpu"]


def parse_bytes(text: str, flag: str = "--memory") -> int:
    """'80GiB', '24 GB', '512MiB' or a plain byte count → bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS:
        raise UserError(f"{flag} must be a size like 80GiB, 24GB or 512MiB, got {text!r}")
    value = int(float(match.group(1)) * UNITS[match.group(2).lower()])
    if value <= 0:
        raise UserError(f"{flag} must be more than 0 bytes, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


def format_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def plan_pairs(pair_names: list[str], *, registry: str | None, device: str, dtype: str, memory: int,
               alphas: tuple[float, ...], questions: int, prompt_tokens: int, answer_tokens: int | None,
               fidelity_samples: int, fidelity_edges: int, flops_per_s: float, bytes_per_s: float,
               max_new_tokens: int | None = None, generation_batch: int | None = None,
               eap_batch: int | None = None, chunk: int | None = None, fidelity_alpha: float | None = None,
               logit_chunk: int | None = None):
    """[(pair, ModelShape, Workload, [StageEstimate])] for each pair."""
    from harness.audit.session import resident_models
    from harness.models.registry import load_architectures, load_registry
    from harness.plan.estimate import Throughput, Workload, plan_pair
    from harness.plan.shapes import shape_of

    pairs, architectures = load_registry(registry), load_architectures(registry)
    unknown = [p for p in pair_names if p not in pairs]
    if unknown:
        raise UserError(f"--pairs: unknown {', '.join(unknown)}; known pairs: {', '.join(pairs)}")
    speed = Throughput(flops_per_s, bytes_per_s)
    plans = []
    for name in pair_names:
        spec = pairs[name]
        shape = shape_of(spec.base, architectures)
        budget = max_new_tokens or spec.max_new_tokens
        workload = Workload(questions=questions, alphas=alphas, prompt_tokens=prompt_tokens,
                            answer_tokens=answer_tokens or budget, max_new_tokens=budget,
                            fidelity_samples=fidelity_samples, fidelity_edges=fidelity_edges, dtype=dtype,
                            models=resident_models(device))
        plans.append((name, shape, workload,
                      plan_pair(shape, workload, memory, speed, generation_batch, eap_batch, chunk, fidelity_alpha,
                                logit_chunk=logit_chunk)))
    return plans


def render(plans, memory: int, flops_per_s: float, bytes_per_s: float) -> str:
    lines = [f"memory budget {format_bytes(memory)}; stated throughput {flops_per_s / 1e12:g} TFLOP/s, "
             f"{bytes_per_s / 1e9:g} GB/s"]
    for name, shape, w, stages in plans:
        lines.append("")
        lines.append(f"{name}: {shape.parameters / 1e9:.2f}B parameters × {w.models} resident, {w.dtype}; "
                     f"prompt {w.prompt_tokens} + answers T̄ {w.answer_tokens} tokens (max {w.max_new_tokens}), "
                     f"{w.questions} questions")
        lines.append(f"  {'stage':<16} {'peak':>11} {'batch':>9} {'fits':>4} {'TFLOP':>10} {'time':>9}  detail")
        for s in stages:
            batch = f"{s.batch_name} {s.batch}" if s.fits else "-"
            lines.append(f"  {s.stage:<16} {format_bytes(s.peak_bytes):>11} {batch:>9} {'yes' if s.fits else 'NO':>4} "
                         f"{s.flops / 1e12:>10.1f} {format_seconds(s.seconds):>9}  {s.detail}")
    return "\n".join(lines)


def misfits(plans, memory: int) -> list[str]:
    """One reason per stage that cannot fit: its peak, its largest part, and a batch that would fit."""
    reasons = []
    for name, _, _, stages in plans:
        for s in stages:
            if not s.fits:
                part, size = max(s.parts.items(), key=lambda kv: kv[1])
                fix = (f"; {s.batch_name} {s.largest_fitting} fits" if s.largest_fitting
                       else f"; no {s.batch_name} fits")
                reasons.append(f"{name} {s.stage} needs {format_bytes(s.peak_bytes)} at {s.batch_name} "
                               f"{max(s.batch, 1)} (largest part: {part} {format_bytes(size)}){fix}")
    return reasons


def first_reasons(reasons: list[str], shown: int = 3) -> str:
    more = len(reasons) - shown
    return "; ".join(reasons[:shown]) + (f"; and {more} more" if more > 0 else "")


def check_audit_plan(pairs: list[str], config, *, registry: str | None, alphas: tuple[float, ...],
                     memory: str | None) -> str:
    """The audit's planner check, before anything loads: every stage of every pair at the run's own
    batch sizes (`config`: the AuditConfig) must fit the device's memory (or `memory`). Returns one
    line for the log; a stage that cannot fit is a UserError naming it."""
    from harness.plan.estimate import available_memory

    budget = parse_bytes(memory) if memory else available_memory(config.device)
    flops, bandwidth = default_speed(config.device)
    plans = plan_pairs(pairs, registry=registry, device=config.device, dtype=config.dtype, memory=budget,
                       alphas=alphas, questions=config.questions, prompt_tokens=PROMPT_TOKENS,
                       answer_tokens=None, fidelity_samples=config.fidelity_samples,
                       fidelity_edges=config.fidelity_edges, flops_per_s=flops,
                       bytes_per_s=bandwidth, max_new_tokens=config.decoding.max_new_tokens,
                       generation_batch=config.decoding.batch_size, eap_batch=config.eap_batch_size,
                       chunk=config.ablation_chunk or None, fidelity_alpha=config.fidelity_alpha,
                       logit_chunk=config.logit_chunk or None)
    reasons = misfits(plans, budget)
    if reasons:
        raise UserError(f"the planner predicts {len(reasons)} stage(s) will not fit {format_bytes(budget)}: "
                        + first_reasons(reasons) + "; set smaller batches (--set decoding.batch_size=N, "
                        "eap_batch_size=N, ablation_chunk=N, logit_chunk=N), or lower --max-new-tokens or --alphas; "
                        "`python -m harness plan` shows every stage")
    name, stage = max(((name, s) for name, _, _, stages in plans for s in stages), key=lambda x: x[1].peak_bytes)
    return (f"plan: every stage of {len(plans)} pair(s) fits {format_bytes(budget)} (largest: {name} "
            f"{stage.stage}, {format_bytes(stage.peak_bytes)} at {stage.batch_name} {stage.batch})")


def run(args) -> int:
    from harness.audit.config import AuditConfig, parse_alphas
    from harness.models.loading import default_dtype

    if not args.pairs:
        raise UserError("--pairs: give at least one pair name, comma separated")
    dtype = args.dtype or default_dtype(args.device)
    from harness.plan.estimate import available_memory

    memory = parse_bytes(args.memory) if args.memory else available_memory(args.device)
    flops, bandwidth = default_speed(args.device)
    flops = args.tflops * 1e12 if args.tflops else flops
    bandwidth = args.bandwidth * 1e9 if args.bandwidth else bandwidth
    defaults = AuditConfig()
    plans = plan_pairs([p.strip() for p in args.pairs.split(",") if p.strip()], registry=args.registry,
                       device=args.device, dtype=dtype, memory=memory,
                       alphas=parse_alphas(args.alphas) if args.alphas else PAPER_ALPHAS,
                       questions=args.questions or defaults.questions, prompt_tokens=args.prompt_tokens,
                       answer_tokens=args.answer_tokens, fidelity_samples=defaults.fidelity_samples,
                       fidelity_edges=defaults.fidelity_edges, flops_per_s=flops, bytes_per_s=bandwidth)
    print(render(plans, memory, flops, bandwidth))
    reasons = misfits(plans, memory)
    if reasons:
        raise UserError(f"{len(reasons)} stage(s) cannot fit {format_bytes(memory)}: " + first_reasons(reasons))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help=COMMANDS["plan"][1])
    p.add_argument("--pairs", required=True, help="pair names, comma separated")
    p.add_argument("--registry", default=None, help="pair registry TOML (default: fixtures/pairs.toml)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (sets the dtype default and throughput)")
    p.add_argument("--memory", default=None, help="memory per device, e.g. 80GiB (default: this device's)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="weights' dtype (default: bfloat16 on CUDA, float32 on CPU, as the audit)")
    p.add_argument("--alphas", default=None, help="T_cut fractions, comma separated (default: the paper's "
                   + ",".join(map(str, PAPER_ALPHAS)) + ")")
    p.add_argument("--questions", type=whole_number("--questions"), default=None,
                   help="questions generated per dataset and scored (default: the audit's)")
    p.add_argument("--prompt-tokens", type=whole_number("--prompt-tokens"), default=PROMPT_TOKENS,
                   help=f"prompt length assumed per question (default {PROMPT_TOKENS})")
    p.add_argument("--answer-tokens", type=whole_number("--answer-tokens"), default=None,
                   help="mean answer length T̄ that T_cut is taken of (default: the pair's max_new_tokens, "
                        "the worst case)")
    p.add_argument("--tflops", type=real_number("--tflops", 0, 1e6, open_low=True), default=None,
                   help="stated sustained TFLOP/s (default: 150 on CUDA, 0.1 on CPU)")
    p.add_argument("--bandwidth", type=real_number("--bandwidth", 0, 1e6, open_low=True), default=None,
                   help="stated memory bandwidth in GB/s (default: 1500 on CUDA, 10 on CPU)")
    p.set_defaults(run=run)
