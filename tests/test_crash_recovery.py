"""An audit killed with SIGKILL at random points (seeded), then run again on the same cache, gives
the cells of an uninterrupted run: nothing a kill leaves behind (a half-written temporary, a stage
never finished) is read as a result, and the next run removes the temporaries."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiny_pairs

JUDGED = ("verdict", "n", "p_value", "p_holm", "effect", "ci_low", "ci_high", "base_value", "post_value")
KILLS = 4


def audit_command(folder: Path, run_id: str) -> list[str]:
    return [sys.executable, "-m", "harness", "audit", "--registry", str(folder / "pairs.toml"),
            "--pairs", "tiny-rl,tiny-pref", "--datasets", str(folder / "sums.jsonl"), "--questions",
            str(tiny_pairs.QUESTIONS), "--alphas", "0.3,1.0", "--fidelity-edges", "12", "--set", "grader=lenient",
            "--set", "fidelity_threshold=0", "--set", "behaviour_ks=1,2,4,8", "--threads", "1", "--no-progress",
            "--reports-dir",
            str(folder / "reports"), "--run-id", run_id]


def start(folder: Path, run_id: str, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "HARNESS_CACHE": str(cache)}
    return subprocess.Popen(audit_command(folder, run_id), cwd=folder, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def cells(folder: Path, run_id: str) -> dict[str, dict]:
    document = json.loads((folder / "reports" / run_id / "claims.json").read_text())
    return {c["cell_id"]: {k: c[k] for k in JUDGED} for c in document["cells"]}


@pytest.mark.slow
def test_an_audit_killed_at_random_points_then_rerun_gives_the_uninterrupted_report(tmp_path: Path) -> None:
    tiny_pairs.write_registry(tmp_path / "pairs.toml")
    tiny_pairs.write_dataset(tmp_path / "sums.jsonl")

    started = time.monotonic()
    reference = start(tmp_path, "reference", tmp_path / "cache-reference")
    assert reference.wait(900) == 0, reference.stderr.read()
    duration = time.monotonic() - started

    cache, rng, killed_at = tmp_path / "cache", random.Random(15), []
    for i in range(KILLS):
        run = start(tmp_path, f"killed-{i}", cache)
        delay = rng.uniform(0.1, 0.9) * duration
        try:
            run.wait(delay)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGKILL)
            run.wait(60)
            killed_at.append(round(delay, 1))
    assert len(killed_at) >= KILLS // 2, f"too few kills landed before the run ended: {killed_at}"

    final = start(tmp_path, "final", cache)
    assert final.wait(900) == 0, final.stderr.read()
    assert cells(tmp_path, "final") == cells(tmp_path, "reference"), f"killed at {killed_at} s"
    assert not [p for p in cache.rglob(".*.harness-tmp")], "a temporary file outlived the rerun"
    ledger = json.loads((tmp_path / "reports" / "final" / "claims.json").read_text())["provenance"]["cache"]["ledger"]
    assert ledger.get("answers:cache", 0) >= 1, f"the killed runs' finished stages were not reused: {ledger}"
    print(f"killed at {killed_at} s of an uninterrupted {duration:.1f} s; the rerun's ledger: {ledger}")
