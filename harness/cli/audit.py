"""`python -m harness audit`: the claim suites on the bundled pairs within a CPU budget, then where
the report is.

    python -m harness audit                       # bundled pairs, default budget (see AUDIT_BUDGET)
    python -m harness audit -k "C1 or C9" --questions 200 --run-id nightly

Runs pytest on suites/ in this process; stages are cached (HARNESS_CACHE), so a second audit with
the same budget reads answers and edge scores back instead of recomputing them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from harness.cli import COMMANDS
from harness.errors import UserError

SUITES = Path(__file__).resolve().parents[2] / "suites"
# Budget that finishes in about 15 minutes on 2 CPU cores from an empty cache (measured: README).
AUDIT_BUDGET = {"questions": 100, "n": 16, "alphas": "0.1,0.3,0.5", "fidelity_edges": 24, "fidelity_samples": 2}


def pytest_args(args) -> list[str]:
    """The pytest command line of an audit run."""
    argv = [str(SUITES), "-p", "no:cacheprovider", "--run-id", args.run_id, "--reports-dir", args.reports_dir,
            "--questions", str(args.questions), "--n", str(args.n), "--alphas", args.alphas,
            "--fidelity-edges", str(args.fidelity_edges), "--fidelity-samples", str(args.fidelity_samples),
            "--device", args.device, "--dtype", args.dtype, "-q"] + ([] if args.no_progress else ["-s"])
    for flag, value in (("--pairs", args.pairs), ("--max-new-tokens", args.max_new_tokens), ("--datasets", args.datasets), ("--registry", args.registry),
                        ("-k", args.k), ("--claims-baseline", args.baseline)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run_audit(args) -> int:
    from harness.pytest_plugin import run_suites

    if not 0 < args.questions:
        raise UserError(f"--questions must be at least 1, got {args.questions}")
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    code = run_suites(pytest_args(args))
    seconds = time.perf_counter() - started
    report = Path(args.reports_dir) / args.run_id / "claims.html"
    if not report.is_file():
        raise UserError(f"the audit wrote no report (pytest exit code {int(code)}); see the output above")
    summary = json.loads((report.parent / "claims.json").read_text())["summary"]
    verdicts = ", ".join(f"{n} {v}" for v, n in summary["verdicts"].items() if n)
    print(f"\naudit finished in {seconds / 60:.1f} min: {summary['cells']} cells ({verdicts})")
    print(f"report: {report.resolve()}")
    return int(code) if args.strict else 0


def register(subparsers) -> None:
    a = subparsers.add_parser("audit", help=COMMANDS["audit"][1])
    a.add_argument("--run-id", default=dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S"),
                   help="report folder name (default: UTC time)")
    a.add_argument("--reports-dir", default="reports", help="folder for run reports (default: reports)")
    a.add_argument("--pairs", default=None, help="pairs, comma separated (default: the registry's bundled pairs)")
    a.add_argument("--datasets", default=None, help="datasets, comma separated (default: each pair's own)")
    a.add_argument("--registry", default=None, help="pair registry TOML (default: fixtures/pairs.toml)")
    a.add_argument("--questions", type=int, default=AUDIT_BUDGET["questions"], help="problems answered per dataset")
    a.add_argument("--alphas", default=AUDIT_BUDGET["alphas"], help="T_cut fractions, comma separated")
    a.add_argument("--max-new-tokens", type=int, default=None, help="answer budget (default: the pair's)")
    a.add_argument("--fidelity-edges", type=int, default=AUDIT_BUDGET["fidelity_edges"])
    a.add_argument("--fidelity-samples", type=int, default=AUDIT_BUDGET["fidelity_samples"])
    a.add_argument("--n", type=int, default=AUDIT_BUDGET["n"], help="questions kept per cell at most")
    a.add_argument("-k", default=None, help="pytest -k expression, e.g. 'C1 or C9'")
    a.add_argument("--baseline", default=None, help="claims.json of a stored run to compare verdicts with")
    a.add_argument("--device", default="cpu")
    a.add_argument("--dtype", default="float32")
    a.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is fastest on a machine shared with other jobs)")
    a.add_argument("--no-progress", action="store_true", help="hide the stages' progress bars")
    a.add_argument("--strict", action="store_true", help="exit non-zero unless every cell is SUPPORTED")
    a.set_defaults(run=run_audit)
