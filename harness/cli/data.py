"""`generate` (answers + checks for one model) and `select` (paired selection -> EAP input rows).

    python -m harness generate --model M --dataset rg:chain_sum --n 100 --out run/base.jsonl
    python -m harness check --generations run/base.jsonl --dataset rg:chain_sum --n 100 --grader paper \
        --out run/base.paper.jsonl
    python -m harness select --base run/base.jsonl --post run/post.jsonl --alpha 0.1 --out run/sel
    python -m harness eap --model M --input run/sel/base.jsonl --out run/eap-base
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from harness.analysis.accuracy import accuracy_table
from harness.cli import COMMANDS, real_number, whole_number
from harness.data.generation import (
    Decoding,
    generate_answers,
    load_generations,
    save_generations,
)
from harness.data.grading import GRADER_SETTINGS, GRADING_VERSION, Check, CheckedGeneration, check_answers
from harness.data.problems import MAX_PROBLEMS
from harness.data.selection import (
    SHORT_ANSWERS,
    T_CUT_FROM,
    TOKEN_MODES,
    VARIANTS,
    SelectionParams,
    build_eap_rows,
    select_samples,
)
from harness.data.span import SPAN_STARTS
from harness.errors import UserError
from harness.files import atomic_write_json, atomic_write_text, check_writable_file, check_writable_folder
from harness.versions import library_versions


def provenance_path(generations_path: Path) -> Path:
    """Sidecar written beside a generations file: `base.jsonl` -> `base.provenance.json`."""
    return generations_path.with_name(generations_path.stem + ".provenance.json")


def run_generate(args) -> int:
    from harness.data.problems import load_problems
    from harness.models.loading import load_model
    from harness.models.prompts import get_template

    check_writable_file(args.out)
    template = get_template(args.template)
    decoding = Decoding(mode="sample" if args.sample else "greedy", max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                        stop_strings=tuple(args.stop or ()), batch_size=args.batch_size)
    problem_set = load_problems(args.dataset, n=args.n, seed=args.data_seed)
    loaded = load_model(args.model, gguf_file=args.gguf_file, dtype=args.dtype, device=args.device,
                        revision=args.revision)
    if args.compare_backends:
        return compare_backends(loaded, problem_set.problems, template, decoding, Path(args.out))
    started = time.perf_counter()
    generations = generate_answers(loaded, problem_set.problems, template, decoding,
                                   use_cache=not args.no_cache, backend=args.backend)
    seconds = time.perf_counter() - started
    checked = check_answers(generations, problem_set.problems, grader=args.grader)
    out = Path(args.out)
    save_generations(out, generations, [c.check for c in checked])
    n_tokens = sum(len(g.answer_ids) for g in generations)
    correct = sum(c.correct for c in checked)
    atomic_write_json(provenance_path(out), {
        "model": dataclasses.asdict(loaded.info), "data": problem_set.provenance(),
        "template": dataclasses.asdict(template), "decoding": dataclasses.asdict(decoding),
        "grader": {"setting": args.grader, "resolved": sorted({c.check.grader for c in checked}),
                   "version": GRADING_VERSION},
        "versions": library_versions(),
        "summary": {"n": len(generations), "correct": correct, "answer_tokens": n_tokens,
                    "seconds": round(seconds, 2)}})
    print(f"{correct}/{len(checked)} correct; {n_tokens} answer tokens in {seconds:.1f} s "
          f"→ {out}")
    return 0


def compare_backends(loaded, problems, template, decoding: Decoding, out: Path) -> int:
    """Answer the problems with every backend (no cache) and write their token agreement to `out`."""
    from harness.data.backends import BACKENDS, make_backend, token_agreement

    answers = {}
    for name in BACKENDS:
        started = time.perf_counter()
        answers[name] = generate_answers(loaded, problems, template, decoding, use_cache=False,
                                         backend=make_backend(name, loaded))
        print(f"{name}: {len(problems)} answers in {time.perf_counter() - started:.1f} s", flush=True)
    agreement = token_agreement(answers["hf"], answers["vllm"])
    atomic_write_json(out, {"backends": list(BACKENDS), "model": dataclasses.asdict(loaded.info),
                            "decoding": dataclasses.asdict(decoding), **agreement})
    print(f"hf vs vllm on {agreement['n']} problems: {agreement['identical']:.1%} token-identical, mean common "
          f"prefix {agreement['mean_prefix_share']:.1%} of the longer answer -> {out}")
    return 0


def run_check(args) -> int:
    """Grade saved generations again (another grader, or newer grading code) without a model."""
    from harness.data.problems import load_problems

    check_writable_file(args.out)
    source = Path(args.generations)
    generations = [g for g, _ in load_generations(source)]
    problem_set = load_problems(args.dataset, n=args.n, seed=args.data_seed)
    sidecar = provenance_path(source)
    provenance = json.loads(sidecar.read_text()) if sidecar.is_file() else {"missing": str(sidecar)}
    answered = (provenance.get("data") or {}).get("revision")
    if answered and problem_set.revision and answered != problem_set.revision:   # finding c01
        raise UserError(f"{source} answered {provenance['data'].get('dataset')} (revision {answered[:19]}…), not "
                        f"{args.dataset} (revision {problem_set.revision[:19]}…); regrade against the dataset "
                        "the answers were generated for")
    checked = check_answers(generations, problem_set.problems, grader=args.grader)
    out = Path(args.out)
    save_generations(out, generations, [c.check for c in checked])
    correct = sum(c.correct for c in checked)
    atomic_write_json(provenance_path(out), {
        **provenance, "regraded_from": str(source), "data": problem_set.provenance(),
        "answered_data": provenance.get("data"),
        "grader": {"setting": args.grader, "resolved": sorted({c.check.grader for c in checked}),
                   "version": GRADING_VERSION},
        "versions": library_versions(),
        "summary": {**provenance.get("summary", {}), "n": len(checked), "correct": correct}})
    print(f"{correct}/{len(checked)} correct under grader {args.grader} → {out}")
    return 0


def _read_checked(path: Path) -> tuple[list[CheckedGeneration], dict]:
    rows = load_generations(path)
    if any(check is None for _, check in rows):
        raise UserError(f"{path} has rows without an answer check; write it with "
                        "`python -m harness generate`")
    sidecar = provenance_path(path)
    provenance = json.loads(sidecar.read_text()) if sidecar.is_file() else {"missing": str(sidecar)}
    return [CheckedGeneration(g, Check(**c)) for g, c in rows], provenance


def run_select(args) -> int:
    check_writable_folder(args.out)
    base, base_prov = _read_checked(Path(args.base))
    post, post_prov = _read_checked(Path(args.post))
    params = SelectionParams(variant=args.variant, alpha=args.alpha, beta=args.beta, gamma=args.gamma,
                             delta=args.delta, n=args.n, seed=args.seed, short_answers=args.short_answers,
                             t_cut_from=args.t_cut_from, span_start=args.span_start)
    base_ids = {c.id for c in base}
    paired = [c for c in post if c.id in base_ids]
    post_ids = {c.id for c in paired}
    table = accuracy_table([c for c in base if c.id in post_ids], paired, pair=args.pair,
                           dataset=str(base_prov.get("data", {}).get("dataset", "?"))) if paired else None
    selection = select_samples(base, post, params)
    out = Path(args.out)
    files = {}
    for mode in args.token_mode or ["own"]:
        base_rows, post_rows = build_eap_rows(selection, mode)
        suffix = "" if mode == "own" else f".{mode}"
        for name, rows in (("base", base_rows), ("post", post_rows)):
            path = out / f"{name}{suffix}.jsonl"
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
            files[f"{name}{suffix}"] = path.name
    atomic_write_json(out / "selection.json", {
        **selection.to_json(), "token_modes": args.token_mode or ["own"], "files": files,
        "accuracy": table.to_json() if table else None,
        "provenance": {"base": base_prov, "post": post_prov, "inputs": [args.base, args.post],
                       "versions": library_versions()}})
    if table:
        print(table.to_markdown())
    print(f"selection ({params.variant}, alpha={params.alpha}, short answers: {params.short_answers}): "
          f"{len(selection.ids)} questions, "
          f"T̄={selection.t_bar:.2f} ({params.t_cut_from}), T_cut={selection.t_cut}\n{selection.funnel_table()}\n→ {out}")
    return 0


def register(subparsers) -> None:
    g = subparsers.add_parser("generate", help=COMMANDS["generate"][1])
    g.add_argument("--model", required=True, help="local folder, .gguf file, or hub id")
    g.add_argument("--gguf-file", default=None, help="GGUF file name inside --model's folder")
    g.add_argument("--revision", default=None,
                   help="hub branch, tag or commit of --model (hub ids only; recorded in the fingerprint)")
    g.add_argument("--dataset", required=True,
                   help="JSONL file (GSM8K or MATH format), rg:<reasoning-gym task>, or hf:<hub id>")
    g.add_argument("--n", type=whole_number("--n", 1, MAX_PROBLEMS), default=None,
                   help="number of problems (rg: default 100)")
    g.add_argument("--data-seed", type=whole_number("--data-seed", minimum=0), default=0,
                   help="seed of reasoning-gym problems")
    g.add_argument("--template", default="deepseek-math", help="prompt template name")
    g.add_argument("--max-new-tokens", type=whole_number("--max-new-tokens"), default=512)
    g.add_argument("--batch-size", type=whole_number("--batch-size"), default=8)
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=real_number("--temperature", 0, math.inf, open_low=True, open_high=True),
                   default=1.0)
    g.add_argument("--top-p", type=real_number("--top-p", 0, 1, open_low=True), default=1.0)
    g.add_argument("--seed", type=whole_number("--seed", minimum=0), default=0, help="sampling seed")
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.add_argument("--no-cache", action="store_true", help="regenerate even if cached")
    g.add_argument("--backend", default="hf", choices=("hf", "vllm"),
                   help="hf (the model's generate; default, CPU) or vllm (a vLLM engine on the model folder or hub id)")
    g.add_argument("--compare-backends", action="store_true",
                   help="answer with hf and with vllm (no cache) and write their token agreement to --out (JSON)")
    g.add_argument("--grader", default="auto", choices=GRADER_SETTINGS,
                   help="auto (default): paper for GSM8K/MATH, the task's own scorer for reasoning-gym; "
                        "paper: last \\boxed{} only (GSM8K: else '#### N'), math-verify equivalence; "
                        "lenient: also 'the answer is X' and the last number")
    g.add_argument("--dtype", default="float32")
    g.add_argument("--device", default="cpu")
    g.add_argument("--out", required=True, help="output JSONL; provenance goes beside it")
    g.set_defaults(run=run_generate)

    c = subparsers.add_parser("check", help=COMMANDS["check"][1])
    c.add_argument("--generations", required=True, help="generations JSONL written by generate")
    c.add_argument("--dataset", required=True, help="the dataset spec the generations answer")
    c.add_argument("--n", type=whole_number("--n", 1, MAX_PROBLEMS), default=None,
                   help="number of problems, as given to generate")
    c.add_argument("--data-seed", type=whole_number("--data-seed", minimum=0), default=0, help="seed of reasoning-gym problems, as given to generate")
    c.add_argument("--grader", default="auto", choices=GRADER_SETTINGS, help="as for generate")
    c.add_argument("--out", required=True, help="output JSONL; provenance goes beside it")
    c.set_defaults(run=run_check)

    s = subparsers.add_parser("select", help=COMMANDS["select"][1])
    s.add_argument("--base", required=True, help="generations JSONL of the base model")
    s.add_argument("--post", required=True, help="generations JSONL of the post-trained model")
    s.add_argument("--variant", default="paper-code", choices=VARIANTS)
    s.add_argument("--alpha", type=real_number("--alpha", 0, 1, open_low=True), default=0.1,
                   help="T_cut = max(floor(alpha·T̄), 1)")
    s.add_argument("--beta", type=real_number("--beta", 0, math.inf, open_high=True), default=0.5)
    s.add_argument("--gamma", type=real_number("--gamma", 0, math.inf, open_high=True), default=1.5)
    s.add_argument("--delta", type=real_number("--delta", 0, math.inf, open_high=True), default=0.5)
    s.add_argument("--n", type=whole_number("--n"), default=100, help="questions kept at most")
    s.add_argument("--seed", type=whole_number("--seed", minimum=0), default=42, help="subsample seed")
    s.add_argument("--short-answers", default="slice", choices=SHORT_ANSWERS,
                   help="answers shorter than T_cut: slice (default, the paper's code: all their tokens "
                        "are targets), drop the question, or error")
    s.add_argument("--t-cut-from", default="base", choices=T_CUT_FROM,
                   help="T̄ of T_cut: base (default: the base model's correct answers, one T_cut for every pair "
                        "of that base) or pair (the paper: the pair's T̄)")
    s.add_argument("--span-start", default="after_template", choices=SPAN_STARTS,
                   help="where the loss's span starts: after_template (default: past the answer's opening of "
                        "template tokens and prompt copies) or answer (the paper's plain cut)")
    s.add_argument("--token-mode", action="append", choices=TOKEN_MODES,
                   help="repeatable; default own. own -> base.jsonl/post.jsonl, others -> "
                        "base.<mode>.jsonl/post.<mode>.jsonl")
    s.add_argument("--pair", default="", help="pair name for the accuracy table")
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(run=run_select)
