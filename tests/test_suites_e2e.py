"""The claim suites end to end on tiny trained models: real generation, answer checks, selection,
EAP, fidelity, family-wise Holm, reports; then a second run that must read every stage back.

The pairs and the sums dataset are those of tests/tiny_pairs.py (each "post-trained" model is its
base with 1 % weight noise; the qwen2 pair is labelled a preference pair so that C4 has cells).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_pairs
import torch

pytest_plugins = ["pytester"]

SUITES = Path(__file__).resolve().parent.parent / "suites"
ALPHAS = "0.3,0.6,1.0"
QUESTIONS = tiny_pairs.QUESTIONS


def _run(pytester: pytest.Pytester, run_id: str):
    return pytester.runpytest(
        str(SUITES), "-p", "no:cacheprovider", "--registry", "pairs.toml", "--datasets", "sums.jsonl",
        "--grader", "lenient",  # the tiny models print a bare sum, no \boxed{} or ####
        "--pairs", "tiny-rl,tiny-pref", "--alphas", ALPHAS, "--questions", str(QUESTIONS), "--fidelity-edges", "12",
        "--fidelity-threshold", "0", "--run-id", run_id, "--reports-dir", str(pytester.path / "reports"),
        "--set", "behaviour_ks=1,2,4,8")   # the tiny graph has 23 edges: k and k matched ones fit


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_suites_run_end_to_end_and_second_run_reads_the_cache(pytester: pytest.Pytester, monkeypatch,
                                                             one_thread) -> None:
    tiny_pairs.write_registry(pytester.path / "pairs.toml")
    tiny_pairs.write_dataset(pytester.path / "sums.jsonl")
    monkeypatch.setenv("HARNESS_CACHE", str(pytester.path / "cache"))

    first = _run(pytester, "first")
    # stage progress reaches the terminal without -s: a line when a stage starts and when it ends
    first.stdout.fnmatch_lines([f"answers tiny-rl · sums.jsonl · base: {QUESTIONS} questions ...",
                                "answers tiny-rl · sums.jsonl · base: done in *",
                                "eap tiny-rl · post · T_cut *: * questions, about * at this run's rate ..."],
                               consecutive=False)
    # the matrix header says who the verdicts are about
    first.stdout.fnmatch_lines(["population: * pair(s) on sums.jsonl: tiny-*"], consecutive=False)
    document = json.loads((pytester.path / "reports" / "first" / "claims.json").read_text())
    cells = {c["cell_id"]: c for c in document["cells"]}
    by_claim: dict[str, list[dict]] = {}
    for c in cells.values():
        by_claim.setdefault(c["claim_id"], []).append(c)
    assert sorted(by_claim) == [f"C{i}" for i in range(1, 10)] + ["CB1", "CB2", "CB3"]
    # Each claim reads only the pairs it speaks about.
    assert {c["pair"] for c in by_claim["C1"]} == {"tiny-rl"}
    assert {c["pair"] for claim in ("CB1", "CB2", "CB3") for c in by_claim[claim]} == {"tiny-pref"}
    assert not [c["reason"] for claim in ("CB1", "CB2", "CB3") for c in by_claim[claim] if c["verdict"] == "INVALID"]
    assert {c["pair"] for c in by_claim["C4"]} == {"tiny-pref"}
    assert {c["pair"] for c in by_claim["C9"]} == {"tiny-rl", "tiny-pref"}
    assert len(by_claim["C1"]) == 3 and len(by_claim["C4"]) == 3 * 3 and len(by_claim["C6"]) == 1
    assert "C1-intensity-tiny_rl-sums_jsonl-a030" in cells
    # pytest outcomes are the verdicts.
    counts = document["summary"]["verdicts"]
    outcomes = first.parseoutcomes()
    assert outcomes.get("passed", 0) == counts["SUPPORTED"]
    assert outcomes.get("errors", 0) == counts["INVALID"]
    assert outcomes.get("failed", 0) == counts["REFUTED"]
    assert outcomes.get("inconclusive", 0) == counts["INCONCLUSIVE"]
    # Holm is applied over each claim's family (both directions of every usable cell), not per cell.
    for claim_id in ("C1", "C2", "C3", "C7", "C9"):
        family = [c for c in by_claim[claim_id] if c["verdict"] != "INVALID"]
        for c in family:
            assert c["extra"]["family_size"] == len(by_claim[claim_id])
            assert c["extra"]["holm_m"] == 2 * len(family)
            assert c["p_value"] <= c["p_holm"] <= min(1.0, c["extra"]["holm_m"] * c["p_value"]) + 1e-12
    # Every EAP cell carries fidelity, its threshold, the funnel and the provenance of its inputs.
    for c in by_claim["C1"] + by_claim["C8"]:
        assert c["fidelity"]["threshold"] == 0 and c["fidelity"]["status"] in ("FAITHFUL", "UNFAITHFUL", "UNCERTAIN")
        assert c["funnel"][0]["stage"] == "questions" and c["funnel"][0]["n"] == QUESTIONS
        prov = c["provenance"]
        assert prov["models"]["base"]["fingerprint"].startswith("sha256:")
        assert prov["data"]["revision"].startswith("sha256:") and prov["config_hash"]
        assert prov["audit_config"]["questions"] == QUESTIONS
    # Information Complexity carries its sensitivity to the bin count B.
    for c in by_claim["C2"]:
        if c["verdict"] != "INVALID":
            band = c["extra"]["complexity_band"]
            assert band["bins"] == [10, 20, 50, 100, 200, 500, 1000]
            assert band["diff_min"] <= band["pooled_diff"][band["bins"].index(100)] <= band["diff_max"]
    rl_cell = cells["C1-intensity-tiny_rl-sums_jsonl-a100"]
    assert rl_cell["n"] >= 10 and rl_cell["ci_low"] <= rl_cell["effect"] <= rl_cell["ci_high"]
    assert document["provenance"]["cache"]["ledger"].get("eap:computed", 0) > 0
    figures = {f["name"] for f in document["figures"]}
    assert {"heatmap-tiny_rl", "node-entropy-tiny_rl"} <= figures
    assert {f"fidelity-{c['cell_id']}" for c in by_claim["C8"]} <= figures
    assert {f"causal-{c['cell_id']}" for c in by_claim["C8"]} <= figures
    for c in by_claim["C8"]:
        check = c["extra"]["causal"]
        assert check["ks"] == sorted(set(check["ks"])) and max(check["ks"]) <= len(check["edges"]) // 2
        assert all(len(check[f"question_loss_{name}"]) == len(check["ks"]) for name in ("eap", "exact", "random"))
        assert [len(chosen) for chosen in check["chosen_eap"]] == check["ks"]

    second = _run(pytester, "second")
    assert "answers tiny-rl" not in second.stdout.str()   # a cached read prints no stage line
    again = json.loads((pytester.path / "reports" / "second" / "claims.json").read_text())
    assert second.parseoutcomes() == outcomes
    ledger = again["provenance"]["cache"]["ledger"]
    assert ledger.get("eap:cache", 0) > 0 and not [k for k in ledger if k.endswith((":computed", ":loaded"))], ledger
    for c in again["cells"]:
        before = cells[c["cell_id"]]
        assert (c["verdict"], c["p_value"], c["effect"]) == (before["verdict"], before["p_value"], before["effect"])
