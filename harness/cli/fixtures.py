"""`python -m harness answer-fixtures`: the greedy answers of every model of the bundled SmolLM2 pairs
to the audit's questions, written as answer fixtures (harness.data.fixtures) that the audit verifies
by regenerating a sample and then reuses instead of generating.

    python -m harness answer-fixtures --questions 160 --out fixtures/smollm2/answers

One file per model and dataset, `<model>--<dataset>.json`; a model is named by its run folder
(`base` for the shared checkpoint). Models are loaded exactly as the audit loads them, so the
fingerprints in the files are the audit's.
"""

from __future__ import annotations

from pathlib import Path

from harness.cli import COMMANDS, whole_number
from harness.errors import UserError


def model_label(reference: str | None) -> str:
    """`base` for the checkpoint, else the run folder of an adapter (`.../grpo/adapter` -> `grpo`)."""
    return "base" if reference is None else Path(reference).parent.name


def fixture_name(label: str, dataset: str) -> str:
    return f"{label}--{dataset.replace(':', '_').replace('/', '_')}.json"


def _run(args) -> int:
    import torch

    from harness.data.fixtures import build_fixture, write_fixture
    from harness.data.generation import Decoding
    from harness.data.problems import dataset_spec, load_problems
    from harness.models.pairs import load_pair_models
    from harness.models.prompts import get_template
    from harness.models.registry import load_registry

    if args.questions < 1:
        raise UserError(f"--questions must be at least 1, got {args.questions}")
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = [p for p in load_registry(args.registry).values()
             if p.bundled and p.post_adapter and (not args.pairs or p.name in args.pairs.split(","))]
    if not pairs:
        raise UserError("no bundled adapter pairs selected; check --pairs against fixtures/pairs.toml")
    out = Path(args.out)
    done: set[str] = set()
    for spec in pairs:
        todo = [(side, ref) for side, ref in (("base", spec.base_adapter), ("post", spec.post_adapter))
                if any(not (out / fixture_name(model_label(ref), d)).is_file() or args.overwrite
                       for d in spec.datasets) and model_label(ref) not in done]
        if not todo:
            continue
        models = dict(zip(("base", "post"), load_pair_models(spec)))
        template = get_template(spec.prompt_template)
        decoding = Decoding(max_new_tokens=spec.max_new_tokens, batch_size=args.batch_size)
        for side, ref in todo:
            label = model_label(ref)
            for dataset in spec.datasets:
                path = out / fixture_name(label, dataset)
                if path.is_file() and not args.overwrite:
                    continue
                problems = load_problems(dataset_spec(dataset), n=args.questions, seed=args.data_seed).problems
                write_fixture(path, build_fixture(models[side], problems, template, decoding, dataset=dataset))
                print(f"wrote {path}", flush=True)
            done.add(label)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("answer-fixtures", help=COMMANDS["answer-fixtures"][1])
    p.add_argument("--out", required=True, help="folder for the fixture files")
    p.add_argument("--questions", type=int, default=160, help="problems per dataset (the audit's --questions)")
    p.add_argument("--data-seed", type=int, default=0, help="the audit's data_seed")
    p.add_argument("--batch-size", type=int, default=16, help="generation batch (recorded; the check regenerates whole batches)")
    p.add_argument("--pairs", default=None, help="bundled pairs, comma separated (default: every adapter pair)")
    p.add_argument("--registry", default=None)
    p.add_argument("--overwrite", action="store_true", help="regenerate files that exist")
    p.add_argument("--threads", type=whole_number("--threads", minimum=0), default=0,
                   help="torch CPU threads (0: torch default)")
    p.set_defaults(run=_run)
