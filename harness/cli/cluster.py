"""`python -m harness cluster --shards N [--executor slurm|local] -- <audit options>`: an audit split
into N shards (`audit --shard i/N`), each a job submitted through submitit, then their reports merged.

The shards share one cache (HARNESS_CACHE, which must be on a filesystem every job sees): each takes
the pairs no other shard is preparing, waits for the rest and judges every claim's family from the
same cached stages, so the merged report equals a serial run's. `--executor local` runs the jobs as
processes on this machine (submitit's local executor), the same code path without a scheduler.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.cli import COMMANDS, whole_number
from harness.errors import UserError
from harness.files import cache_root, check_writable_folder

OWN_FLAGS = ("--shard", "--run-id", "--reports-dir", "--overwrite")   # the launcher sets these per shard


@dataclass(frozen=True)
class ShardJob:
    """One shard's audit, run as a subprocess inside the submitted job (picklable for submitit).
    Returns the audit's exit status."""

    command: tuple[str, ...]
    cache: str
    cwd: str

    def __call__(self) -> int:
        env = {**os.environ, "HARNESS_CACHE": self.cache}
        return subprocess.run(list(self.command), cwd=self.cwd, env=env).returncode


def register(subparsers: argparse._SubParsersAction) -> None:
    c = subparsers.add_parser("cluster", help=COMMANDS["cluster"][1])
    c.add_argument("--shards", type=whole_number("--shards"), required=True, help="number of shards (jobs)")
    c.add_argument("--executor", choices=("slurm", "local"), default="slurm",
                   help="slurm: one SLURM job per shard; local: processes on this machine (default: slurm)")
    c.add_argument("--run-id", default=None, help="id of the merged report (default: UTC time and process id); "
                                                  "shard i writes <run-id>-shard<i>of<N>")
    c.add_argument("--reports-dir", default="reports", help="folder for the shards' and the merged reports")
    c.add_argument("--logs", default=None, help="submitit's job folder (default: <reports-dir>/<run-id>-jobs)")
    c.add_argument("--timeout-min", type=whole_number("--timeout-min"), default=240, help="per-shard time limit")
    c.add_argument("--gpus-per-shard", type=whole_number("--gpus-per-shard", 0), default=0,
                   help="GPUs each job asks for (pass `--workers G` to the audit to use them all)")
    c.add_argument("--cpus-per-shard", type=whole_number("--cpus-per-shard"), default=None)
    c.add_argument("--slurm-partition", default=None)
    c.add_argument("--slurm-account", default=None)
    c.add_argument("audit", nargs=argparse.REMAINDER,
                   help="-- then the audit's own options, e.g. -- --pairs deepseek-math")
    c.set_defaults(run=run_cluster)


def audit_options(given: list[str]) -> list[str]:
    """The audit options after `--`, refusing the ones the launcher sets for each shard."""
    options = given[1:] if given[:1] == ["--"] else list(given)
    taken = [o for o in options if o.split("=", 1)[0] in OWN_FLAGS]
    if taken:
        raise UserError(f"{', '.join(taken)}: the cluster launcher sets --shard, --run-id and --reports-dir for "
                        "each shard; give --run-id and --reports-dir to `cluster` itself")
    return options


def run_cluster(args: argparse.Namespace) -> int:
    try:
        import submitit
    except ImportError:
        raise UserError("the cluster launcher needs submitit: pip install -e '.[cluster]'") from None
    from harness.pytest_plugin import RUN_ID_PATTERN, default_run_id
    from harness.report.compare import merge_runs
    from harness.report.document import load_claims
    from harness.report.writers import write_reports

    options = audit_options(args.audit)
    reports = check_writable_folder(Path(args.reports_dir).resolve(), "--reports-dir")
    run_id = args.run_id or default_run_id()
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise UserError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    shard_ids = [f"{run_id}-shard{i}of{args.shards}" for i in range(1, args.shards + 1)]
    for folder in [run_id, *shard_ids]:
        if (reports / folder).exists():
            raise UserError(f"{reports / folder} already exists; choose another --run-id")
    cache = str(Path(os.environ.get("HARNESS_CACHE") or cache_root()).resolve())
    if args.executor == "slurm" and shutil.which("srun") is None:   # submitit's own error is a traceback (k01)
        raise UserError("--executor slurm: no SLURM here (srun not found); run on a SLURM cluster, or pass "
                        "--executor local to run the shards as processes on this machine")
    executor = submitit.AutoExecutor(folder=args.logs or reports / f"{run_id}-jobs", cluster=args.executor)
    executor.update_parameters(name=f"audit-{run_id}", timeout_min=args.timeout_min,
                               gpus_per_node=args.gpus_per_shard, tasks_per_node=1,
                               **({"cpus_per_task": args.cpus_per_shard} if args.cpus_per_shard else {}),
                               **({"slurm_partition": args.slurm_partition} if args.slurm_partition else {}),
                               **({"slurm_account": args.slurm_account} if args.slurm_account else {}))
    jobs = []
    for i, shard_id in enumerate(shard_ids, start=1):
        command = (sys.executable, "-m", "harness", "audit", *options, "--shard", f"{i}/{args.shards}",
                   "--run-id", shard_id, "--reports-dir", str(reports))
        jobs.append(executor.submit(ShardJob(command, cache, os.getcwd())))
    print(f"submitted {len(jobs)} shard(s) ({args.executor}; job ids {', '.join(str(j.job_id) for j in jobs)}); "
          f"shared cache {cache}; logs {executor.folder}", flush=True)
    codes = []
    for i, job in enumerate(jobs, start=1):
        try:
            codes.append(job.result())
        except Exception as err:   # submitit raises the job's failure (killed, timed out, crashed)
            codes.append(None)
            print(f"shard {i}/{args.shards} failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}; "
                  f"log {job.paths.stderr}", file=sys.stderr, flush=True)
            continue
        print(f"shard {i}/{args.shards} finished (exit {codes[-1]}); log {job.paths.stdout}", flush=True)
    missing = [shard_ids[i] for i, code in enumerate(codes) if code is None or code >= 2
               or not (reports / shard_ids[i] / "claims.json").is_file()]
    if missing:
        raise UserError(f"shard(s) {', '.join(missing)} wrote no report (see their logs in {executor.folder}); "
                        "rerun the launcher: the shards that finished are cached")
    merged = merge_runs([(shard_id, load_claims(reports / shard_id)) for shard_id in shard_ids], run_id)
    paths = write_reports(merged, reports / run_id)
    print(f"merged {len(shard_ids)} shard(s), {len(merged.cells)} cells -> {paths['html']}")
    return max(codes)
