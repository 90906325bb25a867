"""An audit split over processes gives the serial run's claims.json, and does each piece of work once.

On the two tiny pairs: a serial run; `audit --workers 2` (pytest-xdist, cells grouped by pair); and
`cluster --shards 2 --executor local` (two `audit --shard i/2` jobs through submitit's local executor,
sharing one cache, then `report merge`). Every cell's fields but its provenance must equal the serial
run's, the processes together must compute each cache entry and load each pair's models exactly as
often as the serial run, and each worker's stage lines must reach the terminal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import tiny_pairs

AUDIT = ("--registry", "pairs.toml", "--pairs", "tiny-rl,tiny-pref", "--datasets", "sums.jsonl",
         "--questions", str(tiny_pairs.QUESTIONS), "--alphas", "0.3,0.6", "--fidelity-edges", "12",
         "--set", "grader=lenient", "--set", "fidelity_threshold=0", "--threads", "1", "--no-progress",
         "--set", "behaviour_ks=1,2,4,8")   # the tiny graph has 23 edges: k and k matched ones fit


def harness(folder: Path, cache: str, *args: str) -> str:
    """Run `python -m harness ARGS` in `folder` on its own cache; its stdout."""
    env = {**os.environ, "HARNESS_CACHE": str(folder / cache)}
    done = subprocess.run([sys.executable, "-m", "harness", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def report(folder: Path, run_id: str) -> tuple[dict[str, dict], dict]:
    """(cell id -> cell without provenance, run provenance) of a run's claims.json."""
    document = json.loads((folder / "reports" / run_id / "claims.json").read_text())
    cells = {c["cell_id"]: {k: v for k, v in c.items() if k != "provenance"} for c in document["cells"]}
    return cells, document["provenance"]


def work(ledgers: list[dict]) -> Counter:
    """Entries computed and model loads, summed over processes."""
    return sum((Counter({k: v for k, v in ledger.items() if k.endswith((":computed", ":loaded"))})
                for ledger in ledgers), Counter())


@pytest.mark.slow
def test_xdist_workers_and_cluster_shards_equal_the_serial_run(tmp_path: Path) -> None:
    tiny_pairs.write_registry(tmp_path / "pairs.toml")
    tiny_pairs.write_dataset(tmp_path / "sums.jsonl")
    harness(tmp_path, "cache-serial", "audit", *AUDIT, "--reports-dir", "reports", "--run-id", "serial")
    shown = harness(tmp_path, "cache-xdist", "audit", *AUDIT, "--reports-dir", "reports", "--run-id", "xdist",
                    "--workers", "2")
    harness(tmp_path, "cache-shards", "cluster", "--shards", "2", "--executor", "local", "--run-id", "sharded",
            "--reports-dir", "reports", "--", *AUDIT)

    summaries = {r: json.loads((tmp_path / "reports" / r / "claims.json").read_text())["summary"]
                 for r in ("serial", "xdist")}
    assert summaries["xdist"]["selected"] == summaries["serial"]["selected"] == 30   # the missing-cell check runs
    serial, serial_run = report(tmp_path, "serial")
    xdist, xdist_run = report(tmp_path, "xdist")
    merged, merged_run = report(tmp_path, "sharded")
    assert len(serial) == 30 and {c["claim_id"] for c in serial.values()} == {f"C{i}" for i in range(1, 10)} | {
        "CB1", "CB2", "CB3"}
    assert not [c["reason"] for c in serial.values() if c["claim_id"].startswith("CB") and c["verdict"] == "INVALID"]
    assert xdist == serial
    assert merged == serial

    worker_ledgers = [w["ledger"] for w in xdist_run["cache"]["workers"].values()]
    shard_ledgers = [s["provenance"]["cache"]["ledger"] for s in merged_run["merged_from"]]
    assert len(worker_ledgers) == 2 and len(shard_ledgers) == 2
    expected = work([serial_run["cache"]["ledger"]])
    assert expected["eap:computed"] > 0 and expected["models:loaded"] == 2
    print(f"serial work {dict(expected)}; xdist workers {[dict(work([x])) for x in worker_ledgers]}; "
          f"shards {[dict(work([x])) for x in shard_ledgers]}")
    assert work(worker_ledgers) == expected
    assert work(shard_ledgers) == expected
    assert [s["provenance"]["shard"] for s in merged_run["merged_from"]] == ["1/2", "2/2"]
    for worker in ("gw0", "gw1"):                     # the workers' stage lines reach the terminal
        assert re.search(rf"^\[{worker}\] eap tiny-\w+ · base · T_cut \d+: done in", shown, re.M), shown[-2000:]


def _bundled_folder(cache: str) -> str:
    os.environ["HARNESS_CACHE"] = cache
    from harness.models.bundled import bundled_base_folder

    return str(bundled_base_folder())


@pytest.mark.slow
def test_two_processes_converting_the_bundled_model_at_once_both_get_it(tmp_path: Path) -> None:
    """Two workers starting on an empty cache both need the bundled base converted from its GGUF: one
    converts while the other waits, and neither fails (it once failed with 'Directory not empty')."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        folders = pool.map(_bundled_folder, [str(tmp_path / "cache")] * 2)
    assert folders[0] == folders[1] and (Path(folders[0]) / "config.json").is_file()
    assert not list((tmp_path / "cache" / "models").glob(".convert-*"))
