"""`python -m harness report diff A B`, `python -m harness report merge SHARD... --out DIR` and
`python -m harness report baseline RUN --out FILE`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from harness.cli import COMMANDS
from harness.files import atomic_write_text, check_writable_file, check_writable_folder
from harness.report.compare import baseline_of, diff_runs, merge_runs
from harness.report.document import load_claims
from harness.report.writers import write_reports


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help=COMMANDS["report"][1])
    actions = report.add_subparsers(dest="report_command", required=True)

    diff = actions.add_parser("diff", help="print verdict and effect changes from run A to run B "
                                           "(exit 1 when anything changed)")
    diff.add_argument("old", type=Path, help="claims.json, or the run folder holding it")
    diff.add_argument("new", type=Path, help="claims.json, or the run folder holding it")
    diff.set_defaults(run=run_diff)

    merge = actions.add_parser("merge", help="merge result shards (xdist workers, machines) into one report")
    merge.add_argument("shards", type=Path, nargs="+", help="claims.json files or run folders")
    merge.add_argument("--out", type=Path, required=True, help="folder to write the merged reports into")
    merge.add_argument("--run-id", default=None, help="id of the merged run (default merged-<UTC time>)")
    merge.set_defaults(run=run_merge)

    baseline = actions.add_parser("baseline", help="write a run's claims.json as a baseline to commit (what "
                                                   "--baseline compares, without the per-edge detail)")
    baseline.add_argument("claims", type=Path, help="claims.json, or the run folder holding it")
    baseline.add_argument("--out", type=Path, required=True, help="file to write, e.g. "
                                                                  "reports/baselines/nightly-claims.json")
    baseline.set_defaults(run=run_baseline)


def run_diff(args: argparse.Namespace) -> int:
    old, new = load_claims(args.old), load_claims(args.new)
    changes = diff_runs(old, new)
    print(f"{old.run_id} -> {new.run_id}: {len(changes)} change(s)")
    for line in changes:
        print(line)
    return 1 if changes else 0


def run_merge(args: argparse.Namespace) -> int:
    check_writable_folder(args.out)
    run_id = args.run_id or "merged-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    merged = merge_runs([(str(path), load_claims(path)) for path in args.shards], run_id)
    paths = write_reports(merged, args.out)
    print(f"merged {len(args.shards)} shard(s), {len(merged.cells)} cells -> {paths['html']}")
    return 0


def run_baseline(args: argparse.Namespace) -> int:
    check_writable_file(args.out)
    run = baseline_of(load_claims(args.claims))
    atomic_write_text(args.out, json.dumps(run.to_document(), indent=1) + "\n")
    print(f"baseline of run {run.run_id}: {len(run.cells)} cells -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0
