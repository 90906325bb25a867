"""`python -m harness posttrain` and `posttrain-table`: controlled post-training of one checkpoint
(harness.training.posttrain) and the held-out accuracy table of its runs."""

from __future__ import annotations

from pathlib import Path

from harness.cli import COMMANDS, real_number, whole_number
from harness.data.problems import MAX_PROBLEMS
from harness.errors import UserError
from harness.files import (
    atomic_write_json,
    atomic_write_text,
    check_writable_file,
    check_writable_folder,
    read_json_file,
)
from harness.training.posttrain import (
    TRAINED_ALGORITHMS,
    PostTrainConfig,
    accuracy_markdown,
    evaluate_run,
    heldout_summary,
    resolve_base,
    train,
    update_of_run,
)


def _run_posttrain(args) -> int:
    import torch

    check_writable_folder(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PostTrainConfig(algo=args.algo, steps=args.steps, seed=args.seed, learning_rate=args.lr,
                             lora_r=args.lora_r, lora_alpha=2 * args.lora_r, full_weights=args.full_weights,
                             max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             rl_generations=args.generations, train_pool=args.train_pool,
                             sequences_per_step=args.sequences_per_step,
                             solve_band=tuple(args.solve_band) if args.solve_band else None,
                             screen_samples=args.screen_samples, save_every=args.save_every,
                             curve_every=args.curve_every, curve_n=args.curve_n)
    summary = train(config, Path(args.out), args.base, max_minutes=args.max_minutes)
    if "stopped_at" in summary:
        print(f"stopped after step {summary['stopped_at']} of {summary['steps']} (--max-minutes {args.max_minutes}); "
              f"the same command continues the run from its checkpoint in {args.out}")
        return 0
    print(f"trained {args.algo} for {args.steps} steps in {summary['train_s']:.0f} s -> {args.out}")
    if args.eval_n:
        row = evaluate_run(Path(args.out), args.eval_n, args.base)
        print(f"held-out n={row['n']}: base {row['base_accuracy']:.3f} -> {args.algo} {row['post_accuracy']:.3f} "
              f"(fixed {row['fixed']}, broken {row['broken']}, McNemar exact p={row['p_value']:.3g})")
    return 0



def _run_eval(args) -> int:
    """heldout.json of a run from the answer fixtures of the shared base and of the run's model."""
    from harness.training.posttrain import heldout_rows_of_run

    run = Path(args.folder)
    summary_path = run / "train_summary.json"
    if not summary_path.is_file():
        raise UserError(f"{summary_path} missing; run `python -m harness posttrain --out {run}` first")
    summary = read_json_file(summary_path, "training summary", ("config",))   # t03
    config = summary["config"]
    answers = Path(args.answers)
    sides = heldout_rows_of_run(answers, run.name, config["tasks"])
    table = heldout_summary(config["algo"], sides["base"], sides["post"])
    update = (update_of_run(run, answers, args.kl_n, resolve_base(args.base or summary.get("base_ref")))
              if args.kl_n else None)
    atomic_write_json(run / "heldout.json", {"summary": table, "base": sides["base"], "post": sides["post"],
                                             "answers": str(answers), "update": update})
    print(f"{run.name}: held-out n={table['n']} base {table['base_accuracy']:.3f} -> post {table['post_accuracy']:.3f} "
          f"(McNemar exact p={table['p_value']:.3g}); both correct {table['both_correct']}, of which changed "
          f"{table['both_correct_changed']}" + (f"; KL(post || base) {update['kl_per_token']:.4f} nats per token"
                                                if update else ""))
    return 0


def _run_table(args) -> int:
    if Path(args.out).suffix == ".md":   # the Markdown sibling is written beside it: .md would overwrite it (t01)
        raise UserError(f"--out {args.out}: give the JSON file (e.g. table.json); the Markdown table is written "
                        "beside it with the .md suffix")
    check_writable_file(args.out)
    rows = []
    for run in args.runs:
        held = Path(run) / "heldout.json"
        if not held.exists():
            raise UserError(f"{held} missing; run `python -m harness posttrain ... --eval-n N` first")
        data = read_json_file(held, "held-out table", ("summary", "base", "post"))   # t02
        rows.append({"run": Path(run).name, **heldout_summary(data["summary"]["algo"], data["base"], data["post"]),
                     "update": data.get("update")})
    atomic_write_json(Path(args.out), rows)
    atomic_write_text(Path(args.out).with_suffix(".md"), accuracy_markdown(rows))
    for row in rows:
        print(f"{row['run']:>12}: n={row['n']} base {row['base_accuracy']:.3f} -> {row['post_accuracy']:.3f} "
              f"p={row['p_value']:.3g}")
    print(f"table written to {args.out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("posttrain", help=COMMANDS["posttrain"][1])
    p.add_argument("--algo", required=True, choices=TRAINED_ALGORITHMS)
    p.add_argument("--steps", type=whole_number("--steps"), default=8, help="optimizer steps (16 sequences each)")
    p.add_argument("--out", required=True, help="output folder: adapter/, configs, log, curves.png")
    p.add_argument("--base", default=None,
                   help="base model: a folder, a hub id or a bundled model such as bundled:smollm2-135m-reason "
                        "(the bundled pairs' SFT checkpoint; default: SmolLM2-135M-Instruct)")
    p.add_argument("--seed", type=whole_number("--seed", minimum=0), default=0)
    p.add_argument("--lr", type=real_number("--lr", 0, 1, open_low=True), default=3e-4, help="learning rate")
    p.add_argument("--lora-r", type=whole_number("--lora-r"), default=8)
    p.add_argument("--full-weights", action="store_true", help="train all weights instead of LoRA (GPU)")
    defaults = PostTrainConfig(algo="grpo", steps=1)
    p.add_argument("--max-new-tokens", type=whole_number("--max-new-tokens"), default=defaults.max_new_tokens)
    p.add_argument("--temperature", type=real_number("--temperature", 0, 10, open_low=True),
                   default=defaults.temperature, help="sampling temperature of online algorithms and screening")
    p.add_argument("--generations", type=whole_number("--generations", minimum=2), default=defaults.rl_generations,
                   help="completions per prompt (GRPO, RLOO)")
    p.add_argument("--sequences-per-step", type=whole_number("--sequences-per-step", minimum=2),
                   default=defaults.sequences_per_step)
    p.add_argument("--train-pool", type=whole_number("--train-pool"), default=defaults.train_pool,
                   help="training problems per task (screened first when --solve-band is given)")
    p.add_argument("--solve-band", type=real_number("--solve-band", 0, 1), nargs=2, metavar=("LOW", "HIGH"),
                   help="train only on problems the base solves in LOW..HIGH of --screen-samples samples")
    p.add_argument("--screen-samples", type=whole_number("--screen-samples"), default=defaults.screen_samples)
    p.add_argument("--save-every", type=whole_number("--save-every"), default=defaults.save_every,
                   help="steps between resumable checkpoints")
    p.add_argument("--curve-every", type=whole_number("--curve-every", minimum=0), default=0,
                   help="steps between held-out accuracy points (0: no curve)")
    p.add_argument("--curve-n", type=whole_number("--curve-n"), default=defaults.curve_n,
                   help="held-out problems per task at each curve point")
    p.add_argument("--max-minutes", type=real_number("--max-minutes", 0, 1e6), default=None,
                   help="end this sitting after the first step past this many minutes (checkpoint saved); "
                        "the same command continues the run")
    p.add_argument("--eval-n", type=whole_number("--eval-n", 0, MAX_PROBLEMS), default=0, help="held-out problems to evaluate base and post on")
    p.add_argument("--threads", type=whole_number("--threads", minimum=0), default=1,
                   help="torch CPU threads; 1 avoids thread oversubscription on a shared CPU, 0: torch default")
    p.set_defaults(run=_run_posttrain)
    e = subparsers.add_parser("posttrain-eval", help=COMMANDS["posttrain-eval"][1])
    e.add_argument("folder", help="a posttrain output folder")
    e.add_argument("--answers", required=True, help="answer-fixture folder (python -m harness answer-fixtures)")
    e.add_argument("--kl-n", type=whole_number("--kl-n", minimum=0), default=50,
                   help="held-out answers per task on which to measure the update size, KL(post || base) (0: skip)")
    e.add_argument("--base", default=None, help="the run's base model (default: the one its train_summary.json names)")
    e.set_defaults(run=_run_eval)
    t = subparsers.add_parser("posttrain-table", help=COMMANDS["posttrain-table"][1])
    t.add_argument("runs", nargs="+")
    t.add_argument("--out", required=True)
    t.set_defaults(run=_run_table)
