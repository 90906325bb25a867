"""Nightly regression: `audit --baseline` against a stored claims.json on the shipped tiny models.
A run whose verdicts match exits 0; a run under one changed setting that moves a verdict exits 1 and
names the cell and the cause. And the committed nightly baseline is a report of the nightly grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.report.document import load_claims

ROOT = Path(__file__).resolve().parent.parent
NIGHTLY_BASELINE = ROOT / "reports" / "baselines" / "nightly-claims.json"


@pytest.mark.slow
def test_a_setting_that_moves_a_verdict_fails_the_nightly_comparison(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_pairs

    tiny_pairs.write_registry(tmp_path / "pairs.toml", models=str(ROOT / "tests" / "golden" / "models"))
    tiny_pairs.write_dataset(tmp_path / "sums.jsonl")

    def audit(run_id: str, *extra: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
        argv = ["audit", "--registry", "pairs.toml", "--pairs", "tiny-rl", "--datasets", "sums.jsonl",
                "--alphas", "0.6", "--questions", "120", "--fidelity-edges", "6", "--fidelity-samples", "10",
                "--set", "grader=lenient", "--set", "stats.sesoi_rel=0", "-k", "C1", "--no-progress",
                "--reports-dir", "r", "--threads", "1", "--run-id", run_id, *extra]
        return subprocess.run([sys.executable, "-m", "harness", *argv], env=env, cwd=tmp_path, capture_output=True,
                              text=True)

    # the stored run decides at 0.2: the tiny pair's intensity fell (one-sided p 0.08), REFUTED there
    stored = audit("stored", "--set", "stats.significance=0.2")
    assert stored.returncode == 0, stored.stderr[-2000:]
    cell = "C1-intensity-tiny_rl-sums_jsonl-a060"
    assert [c.verdict.value for c in load_claims(tmp_path / "r" / "stored" / "claims.json").cells] == ["REFUTED"]
    baseline = str(tmp_path / "r" / "stored" / "claims.json")
    same = audit("same", "--set", "stats.significance=0.2", "--baseline", baseline)
    assert same.returncode == 0 and "regressed" not in same.stderr
    # INCONCLUSIVE is a skip for pytest, not a failure; --strict still exits 1 unless every cell is SUPPORTED
    assert (audit("plain").returncode, audit("strict", "--strict").returncode) == (0, 1)
    moved = audit("moved", "--baseline", baseline)   # significance back to its default, 0.05
    assert moved.returncode == 1
    assert (f"audit:   {cell}: verdict changed from the baseline: REFUTED -> INCONCLUSIVE "
            "(cause: settings: stats.significance 0.2 -> 0.05)") in moved.stderr



def test_the_committed_nightly_baseline_is_the_nightly_grid() -> None:
    """`make nightly` compares with reports/baselines/nightly-claims.json: a baseline of the nightly budget
    (every bundled pair, the paper's alpha grid), every claim, no INVALID cell, in the current schema."""
    from harness.audit.claims import CLAIMS_BY_ID
    from harness.cli.audit import AUDIT_BUDGETS

    run = load_claims(NIGHTLY_BASELINE)
    document = json.loads(NIGHTLY_BASELINE.read_text())
    nightly = AUDIT_BUDGETS["nightly"]
    assert {c.alpha for c in run.cells if c.alpha is not None} == {float(a) for a in nightly["alphas"].split(",")}
    # claims catalogued after the stored nightly run: a nightly run with them has not been stored yet, and
    # `make nightly` lists their cells as new against this baseline
    after_baseline = {"CB1", "CB2", "CB3"}
    assert {c.claim_id for c in run.cells} == set(CLAIMS_BY_ID) - after_baseline
    assert not [c.cell_id for c in run.cells if c.verdict.value == "INVALID"]
    assert {c.provenance["audit_config"]["questions"] for c in run.cells if c.provenance} == {nightly["questions"]}
    assert document["summary"]["cells"] == len(run.cells) == document["provenance"]["selected_cells"]
