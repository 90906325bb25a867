"""`python -m harness audit`: the claim suites on the bundled pairs within a CPU budget, then where
the report is.

    python -m harness audit                       # bundled pairs, default budget (see AUDIT_BUDGETS)
    python -m harness audit --budget nightly      # every bundled pair at the paper's alpha grid
    python -m harness audit -k "C1 or C9" --questions 200 --run-id nightly
    python -m harness audit --set stats.sesoi_rel=0.1 --set metrics.range_policy=joint
    python -m harness audit --vary metrics.bins=20,100,500   # one claim matrix per value + a comparison

Runs pytest on suites/ in this process; stages are cached (HARNESS_CACHE), so a second audit with
the same budget reads answers and edge scores back instead of recomputing them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from harness.audit.config import (
    AuditConfig,
    parse_alphas,
    parse_settings,
    parse_token_modes,
    settable_keys,
    settings_of,
)
from harness.cli import COMMANDS, whole_number
from harness.data.problems import MAX_PROBLEMS
from harness.errors import UserError
from harness.files import atomic_write_text, cache_root, check_writable_folder
from harness.report.compare import sensitivity_table
from harness.report.document import load_claims

SUITES = Path(__file__).resolve().parents[2] / "suites"
# Named budgets (`--budget`); an option given on the command line overrides its budget's value.
# default: what `make audit` runs, sized for 2 CPU cores from an empty cache (measured: README): three
# online-RL runs (GRPO seeds 0 and 1, RLOO), so that an algorithm-level answer has runs to stand on, offline
# DPO, and the GRPO seed control, on the held-out pool of 200 questions per task (all shipped as verified
# answer fixtures), 30 questions per cell (a seeded sample of those both models answer right), alpha 0.3
# of the span after the answer's opening (selection.span_start=after_template: T_cut 16-20 tokens, 11-13
# of them computational on the bundled answers; 0.03 and 0.1 would score 1-7 tokens), fidelity on 10
# questions x 16 stratified edges per model. One alpha, so that validity is measured where every verdict
# stands within 20 minutes (C5, which reads how a change moves with alpha, is off this grid: nightly).
# `make audit` runs it with `--workers 2 --threads 1`, one pair per worker at a time (the answer fixtures
# were generated with one thread, so their check regenerates the same bits).
# nightly: every bundled pair (the seed-1 replicates too) at the paper's alpha grid, up to the paper's 100
# questions per cell, fidelity on more questions and edges. In every budget fidelity, robustness (exact
# ablation) and the C8 causal check are measured at every alpha that carries a verdict (fidelity_alpha
# none): no measurement is copied from one alpha to another. Answers come from the verified answer
# fixtures where they match (`answer_fixtures`).
AUDIT_BUDGETS: dict[str, dict] = {
    # settings: --set values of the budget (a --set of the same key wins); two k of the causal claims on
    # behaviour keep their 16 model runs per cell inside the default's 20 minutes
    "default": {"pairs": "smollm2-grpo,smollm2-grpo-seed1,smollm2-rloo,smollm2-dpo,smollm2-grpo-seeds",
                "questions": 200, "n": 30, "alphas": "0.3", "fidelity_edges": 16, "fidelity_samples": 10,
                "settings": {"behaviour_ks": "4,32"}},
    "nightly": {"pairs": None, "questions": 200, "n": 100, "alphas": "0.03,0.1,0.3,0.5", "fidelity_edges": 32,
                "fidelity_samples": 16},
}
AUDIT_BUDGET = AUDIT_BUDGETS["default"]
# the flags that set a setting of the run's AuditConfig: giving one and --set its key too is refused
FLAG_SETTINGS = {"questions": "questions", "fidelity_edges": "fidelity_edges", "fidelity_samples": "fidelity_samples",
                 "n": "selection.n", "max_new_tokens": "decoding.max_new_tokens", "device": "device", "dtype": "dtype"}


def audit_config(args, settings: list[str]) -> AuditConfig:
    """The run's one AuditConfig: the budget's and the flags' values, then every --set KEY=VALUE.
    Fidelity, robustness and C8 are measured at every alpha, unless --set fidelity_alpha says otherwise."""
    from harness.data.generation import DecodingSettings
    from harness.data.selection import SelectionSettings
    from harness.models.loading import default_dtype

    config = AuditConfig(questions=args.questions, fidelity_edges=args.fidelity_edges,
                         fidelity_samples=args.fidelity_samples, device=args.device,
                         dtype=args.dtype or default_dtype(args.device), selection=SelectionSettings(n=args.n),
                         decoding=DecodingSettings(max_new_tokens=args.max_new_tokens))
    parsed = {**AUDIT_BUDGETS[args.budget].get("settings", {}), **parse_settings(settings)}
    for flag, key in args.given.items():
        if key in parsed:
            option = "--" + flag.replace("_", "-")
            raise UserError(f"--set {key}={parsed[key]} and {option} {getattr(args, flag)} both set {key}; give one")
    return config.with_settings(parsed)


def pytest_args(args, run_id: str, config: AuditConfig) -> list[str]:
    """The pytest command line of an audit run: the grid and run options, and the run's config as
    `--set KEY=VALUE` for every setting that differs from the defaults (harness.audit.config.settings_of)."""
    argv = [str(SUITES), "-p", "no:cacheprovider", "--run-id", run_id, "--reports-dir", str(Path(args.reports_dir).resolve()),
            "--alphas", ",".join(map(repr, args.alphas)), "--device", config.device, "--dtype", config.dtype, "-q"]
    argv += [] if args.no_progress or args.workers else ["-s"]
    if args.workers:
        argv += ["-n", str(args.workers), "--dist", "loadgroup"]
    for flag, value in (("--pairs", args.pairs), ("--datasets", args.datasets), ("--registry", args.registry),
                        ("--n", args.n), ("--token-mode", args.token_mode),
                        ("-k", args.k), ("--claims-baseline", args.baseline), ("--shard", args.shard)):
        if value is not None:
            argv += [flag, str(value)]
    for path in args.papers or []:
        argv += ["--papers", path]
    for key, value in settings_of(config).items():
        argv += ["--set", f"{key}={value}"]
    return argv + (["--overwrite"] if getattr(args, "overwrite", False) else [])


MAX_RUN_ID = 200   # a folder name holds 255 bytes; --vary appends the key and value


def check_run_id(args, run_id: str) -> None:
    """A run id whose report folder exists would show the old report as this run's: refused unless
    --overwrite (the plugin then clears the old report before the run)."""
    from harness.pytest_plugin import RUN_ID_PATTERN

    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise UserError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    if len(run_id) > MAX_RUN_ID:
        raise UserError(f"--run-id: {len(run_id)} characters; give at most {MAX_RUN_ID} (it names the report folder)")
    folder = Path(args.reports_dir) / run_id
    if folder.exists() and not args.overwrite:
        raise UserError(f"--run-id {run_id}: {folder} already exists; choose another run id or pass "
                        "--overwrite to replace its report")


GRID_SETTING = "token_mode"   # --vary's one key that is a grid axis, not an AuditConfig setting


def _vary(text: str | None) -> tuple[str, list[str]] | None:
    """`KEY=V1,V2,...` -> (KEY, [V1, V2, ...]), each value checked against the configuration."""
    if text is None:
        return None
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or len(items) < 2:
        raise UserError(f"--vary {text!r}: expected KEY=V1,V2[,...] with at least two values, e.g. metrics.bins=20,100")
    if key.strip() == GRID_SETTING:
        return GRID_SETTING, list(parse_token_modes(items, f"--vary {text!r}"))
    settings = [AuditConfig().with_settings({key.strip(): value}) for value in items]
    for i, config in enumerate(settings):
        if config in settings[:i]:   # the same run twice: its second report would be the first's (u12)
            raise UserError(f"--vary {text!r}: {items[i]!r} sets {key.strip()} as an earlier value does; "
                            "give each value once")
    return key.strip(), items


def apply_budget(args) -> None:
    """Fill every option left unset on the command line from the chosen `--budget`; `args.alphas`
    becomes the grid's alphas, parsed here once (a tuple)."""
    if args.budget not in AUDIT_BUDGETS:
        raise UserError(f"unknown --budget {args.budget!r}; choose one of {', '.join(AUDIT_BUDGETS)}")
    args.given = {flag: key for flag, key in FLAG_SETTINGS.items() if getattr(args, flag, None) is not None}
    args.device = args.device or "cpu"
    for key, value in AUDIT_BUDGETS[args.budget].items():
        if key != "settings" and getattr(args, key, None) is None:
            setattr(args, key, value)
    args.alphas = parse_alphas(args.alphas)
    if not args.alphas:
        raise UserError("--alphas: give at least one alpha in (0, 1], e.g. 0.1,0.3")
    if args.token_mode is not None:
        parse_token_modes(args.token_mode)


def preflight(args, config: AuditConfig) -> None:
    """What would otherwise fail in every claim test, checked before any work: the registry, the
    pairs and their local model and adapter files, the datasets (readable, with answers), the
    grid's options, and the planner's memory check of every stage at the run's batch sizes. The
    first problem is a UserError (one line, exit 2)."""
    from harness.audit.claims import add_papers
    from harness.audit.grid import RunGrid
    from harness.cli.plan import check_audit_plan
    from harness.data.problems import dataset_spec, load_problems
    from harness.models.pairs import check_pair_files
    from harness.models.registry import load_registry

    def names(text: str | None) -> tuple[str, ...]:
        return tuple(x.strip() for x in (text or "").split(",") if x.strip())

    add_papers(args.papers or [])
    if config.answer_fixtures not in ("bundled", "none") and not Path(config.answer_fixtures).is_dir():   # u08
        raise UserError(f"answer_fixtures {config.answer_fixtures!r} is no folder; give bundled, none or a folder "
                        "of answer fixtures")
    grid = RunGrid.build(load_registry(args.registry), pairs=names(args.pairs), datasets=names(args.datasets),
                         alphas=args.alphas, token_modes=names(args.token_mode))
    if args.shard is not None:
        grid.check_shard(args.shard)
    for pair in grid.pairs:
        check_pair_files(grid.registry[pair])
    for dataset in grid.datasets:
        spec = dataset_spec(dataset)
        if not spec.startswith("hf:"):   # a hub dataset is fetched when answered
            load_problems(spec, n=1)
    print(check_audit_plan(list(grid.pairs), config, registry=args.registry, alphas=grid.alphas,
                           memory=args.memory))


def run_audit(args) -> int:
    check_writable_folder(cache_root(), "HARNESS_CACHE")   # empty, a file or read-only: refused before any work
    apply_budget(args)
    if not 0 < args.questions:
        raise UserError(f"--questions must be at least 1, got {args.questions}")
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)   # xdist workers start with this many
    if args.list_settings:
        defaults = AuditConfig()
        for key in settable_keys():
            head, _, tail = key.partition(".")
            value = getattr(getattr(defaults, head), tail) if tail else getattr(defaults, head)
            print(f"{key} = {getattr(value, 'value', value)}")
        return 0
    check_writable_folder(args.reports_dir, "--reports-dir")
    if args.run_id is None:
        from harness.pytest_plugin import default_run_id

        args.run_id = default_run_id()
    settings = list(args.set or [])
    config = audit_config(args, settings)   # a bad setting fails here, before any work
    vary = _vary(args.vary)
    key, values = vary or (None, [])
    run_ids = [f"{args.run_id}-{re.sub(r'[^A-Za-z0-9._-]+', '_', key)}-{re.sub(r'[^A-Za-z0-9._-]+', '_', value)}"
               for value in values] or [args.run_id]
    for run_id in run_ids:
        check_run_id(args, run_id)   # before the planner's work (finding u13)
    preflight(args, config)
    if vary is None:
        code, _, errored = _run_once(args, args.run_id, config, " ".join(settings))
        return 1 if errored else (int(code) if args.strict else 0)
    runs, worst, any_errored = [], 0, False
    for value, run_id in zip(values, run_ids):
        if key == GRID_SETTING:   # the loss's token mode is a grid axis: each value is a run's --token-mode
            code, folder, errored = _run_once(argparse.Namespace(**{**vars(args), "token_mode": value}), run_id,
                                              config, f"{key}={value}")
        else:
            code, folder, errored = _run_once(args, run_id, config.with_settings({key: value}), f"{key}={value}")
        runs.append((value, load_claims(folder)))
        worst, any_errored = max(worst, int(code)), any_errored or errored
    table = Path(args.reports_dir) / f"{args.run_id}-sensitivity-{key}.md"
    atomic_write_text(table, sensitivity_table(key, runs))
    print(f"sensitivity to {key}: {table.resolve()}")
    return 1 if any_errored else (worst if args.strict else 0)


def _run_once(args, run_id: str, config: AuditConfig, label: str) -> tuple[int, Path, bool]:
    """One suite run; (1 if a cell is not SUPPORTED else 0, the exit code of --strict; report folder;
    whether it failed: a cell errored, a selected cell is missing, or a verdict moved from --baseline).
    No report of this run is a UserError."""
    from harness.pytest_plugin import run_suites

    started = time.perf_counter()
    code = run_suites(pytest_args(args, run_id, config))
    seconds = time.perf_counter() - started
    report = Path(args.reports_dir) / run_id / "claims.html"
    if int(code) in (3, 4):   # pytest: an internal or a usage error; no report of this run exists
        raise UserError(f"the suites refused run {run_id} (pytest exit code {int(code)}); see the output above")
    if int(code) == 5:   # pytest: no tests collected
        raise UserError(f"-k {args.k!r} selected no claim test, so there is no report; list the test ids with "
                        "`pytest suites --collect-only -q`" if args.k else "the audit selected no claim test")
    if not report.is_file():
        raise UserError(f"the audit wrote no report (pytest exit code {int(code)}); see the output above")
    document = json.loads((report.parent / "claims.json").read_text())
    if document.get("run_id") != run_id or document.get("provenance", {}).get("run_id") != run_id:
        raise UserError(f"{report.parent / 'claims.json'} is not this run's report (run id "
                        f"{document.get('run_id')!r}, expected {run_id!r})")
    summary = document["summary"]
    verdicts = ", ".join(f"{n} {v}" for v, n in summary["verdicts"].items() if n)
    selected, errors = summary.get("selected"), summary.get("errors", 0)
    of = f" of {selected} selected" if selected is not None else ""
    print(f"\naudit {label} finished in {seconds / 60:.1f} min: {summary['cells']} cells{of} "
          f"({verdicts})")
    print(f"report: {report.resolve()}")
    for healed in document.get("provenance", {}).get("cache", {}).get("healed", []):
        print(f"cache: {healed['stage']} entry {healed['key']} was corrupt ({healed['reason']}); moved to "
              f"{healed['moved_to']} and recomputed", file=sys.stderr)
    missing = selected is not None and summary["cells"] < selected
    if errors or missing:
        errored = [c for c in document["cells"] if (c.get("extra") or {}).get("error")]
        ids = [c["cell_id"] for c in errored]
        print(f"audit: {errors} cell(s) errored (a claim test raised: INVALID, 'error in ...')"
              + (f": {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}" if ids else "")
              + (f"; {selected - summary['cells']} selected cell(s) missing from the report" if missing else ""),
              file=sys.stderr)
        reasons = list(dict.fromkeys(_reason(c) for c in errored))
        for reason in reasons[:3][::-1]:   # the first error is the last line
            print(f"audit: {sum(_reason(c) == reason for c in errored)} cell(s) failed with {reason}",
                  file=sys.stderr)
    regressed = _regressions(args.baseline, report.parent / "claims.json")
    unsupported = sum(n for v, n in summary["verdicts"].items() if v != "SUPPORTED")
    return int(unsupported > 0), report.parent, bool(errors or missing or regressed)


def _regressions(baseline: str | None, claims: Path) -> list[str]:
    """Cells of `claims` whose verdict moved from `baseline` (a stored claims.json), each with its cause,
    printed to stderr; empty without a baseline."""
    if baseline is None:
        return []
    from harness.report.compare import baseline_problems

    stored = {c.cell_id: c for c in load_claims(Path(baseline)).cells}
    lines = [f"{cell.cell_id}: {problem}" for cell in load_claims(claims).cells
             for problem in baseline_problems(cell, stored.get(cell.cell_id), [])]
    if lines:
        print(f"audit: {len(lines)} cell(s) regressed against the baseline {baseline}:", file=sys.stderr)
        for line in lines:
            print(f"audit:   {line}", file=sys.stderr)
    return lines


def _reason(cell: dict) -> str:
    error = cell["extra"]["error"]
    return f"{error.get('type', 'error')}: {error.get('message', '')}"


def register(subparsers) -> None:
    a = subparsers.add_parser("audit", help=COMMANDS["audit"][1])
    a.add_argument("--run-id", default=None,
                   help="report folder name (default: UTC time to the microsecond and the process id); "
                        "an existing one is refused unless --overwrite")
    a.add_argument("--overwrite", action="store_true", help="replace the report of an existing --run-id")
    a.add_argument("--reports-dir", default="reports", help="folder for run reports (default: reports)")
    a.add_argument("--pairs", default=None, help="pairs, comma separated (default: the budget's; nightly: every bundled pair)")
    a.add_argument("--datasets", default=None, help="datasets, comma separated (default: each pair's own)")
    a.add_argument("--registry", default=None, help="pair registry TOML (default: fixtures/pairs.toml)")
    a.add_argument("--budget", default="default", help=f"named budget: {', '.join(AUDIT_BUDGETS)} (default: default)")
    a.add_argument("--questions", type=whole_number("--questions", 1, MAX_PROBLEMS), default=None,
                   help="problems answered per dataset (default: the budget's)")
    a.add_argument("--alphas", default=None, help="T_cut fractions, comma separated (default: the budget's)")
    a.add_argument("--token-mode", default=None,
                   help="answer tokens the loss reads: own (the paper), shared-base, shared-post or reference; "
                        "comma separated for several (default: own); --vary token_mode=own,shared-base compares them")
    a.add_argument("--max-new-tokens", type=whole_number("--max-new-tokens"), default=None,
                   help="answer budget (default: the pair's)")
    a.add_argument("--fidelity-edges", type=whole_number("--fidelity-edges"), default=None)
    a.add_argument("--fidelity-samples", type=whole_number("--fidelity-samples"), default=None)
    a.add_argument("--n", type=whole_number("--n"), default=None, help="questions kept per cell at most (default: the budget's)")
    a.add_argument("-k", default=None, help="pytest -k expression, e.g. 'C1 or C9'")
    a.add_argument("--baseline", default=None, help="claims.json of a stored run to compare verdicts with")
    a.add_argument("--device", default=None, help="cpu (default) or cuda[:N]")
    a.add_argument("--memory", default=None, help="memory the planner checks every stage against, e.g. 80GiB "
                   "(default: the device's; see `python -m harness plan`)")
    a.add_argument("--dtype", default=None, help="weights' dtype (default: bfloat16 on CUDA, float32 on CPU; "
                                                 "scores are float32 either way)")
    a.add_argument("--threads", type=whole_number("--threads"), default=None,
                   help="torch CPU threads (1 is fastest on a machine shared with other jobs)")
    a.add_argument("--no-progress", action="store_true", help="hide the stages' progress bars")
    a.add_argument("--workers", type=whole_number("--workers"), default=None,
                   help="pytest-xdist worker processes (cells grouped by pair; with several GPUs visible, one each)")
    a.add_argument("--shard", default=None, metavar="I/N",
                   help="run the I-th of N shards (1-based) of the grid's pairs; shards sharing HARNESS_CACHE "
                        "split the work; join their reports with `python -m harness report merge`")
    a.add_argument("--strict", action="store_true", help="exit non-zero unless every cell is SUPPORTED "
                   "(without it the audit exits 1 only when a claim test raised or a verdict moved from "
                   "--baseline, 2 on bad input)")
    a.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any verdict-changing setting, e.g. stats.sesoi_rel=0.1 (repeatable; see --list-settings)")
    a.add_argument("--vary", metavar="KEY=V1,V2,...",
                   help="sensitivity run: one claim matrix per value of KEY, then a table comparing their verdicts")
    a.add_argument("--list-settings", action="store_true", help="print every settable KEY with its default")
    a.add_argument("--papers", action="append", metavar="PATH",
                   help="paper files (or folders of them) whose claims join the catalogue (repeatable)")
    a.set_defaults(run=run_audit)
