"""The claim plugin end to end through pytester: outcomes per verdict, the terminal matrix, report
files, JUnit properties, baseline comparison, option errors. All cells here are synthetic."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

CLAIM_FILE = '''
import pytest
from harness.audit.verdicts import CellResult

CLAIM_GRID = {"pair": ["toy-grpo"], "dataset": ["toy"], "alpha": [0.1, 0.3]}
EFFECT = {EFFECT}


def synthetic_cell(claim_cell, verdict, pair, dataset, alpha):
    return CellResult(
        claim_id=claim_cell.claim.id, claim_name=claim_cell.claim.name,
        cell_id=claim_cell.cell_id(pair, dataset, alpha=alpha), verdict=verdict,
        rule="synthetic rule: SUPPORTED if p < 0.05", reason=f"synthetic {verdict.lower()}",
        pair=pair, dataset=dataset, alpha=alpha, metric="toy", n=20, base_value=1.0,
        post_value=1.0 + EFFECT, effect=EFFECT, ci_low=EFFECT - 0.1, ci_high=EFFECT + 0.1,
        ci_method="synthetic", effect_size=1.2, p_value=0.01, p_holm=0.02, p_bh=0.015,
        funnel=[{"stage": "both correct", "n": 25}, {"stage": "length window", "n": 20}])


@pytest.mark.claim("C1")
def test_intensity(claim_cell, pair, dataset, alpha):
    claim_cell.record(synthetic_cell(claim_cell, "{C1}", pair, dataset, alpha))


@pytest.mark.claim("C2")
def test_complexity(claim_cell, pair, dataset, alpha):
    claim_cell.record(synthetic_cell(claim_cell, "REFUTED", pair, dataset, alpha))


@pytest.mark.claim("C3")
def test_kurtosis(claim_cell, pair, dataset, alpha):
    claim_cell.record(synthetic_cell(claim_cell, "INCONCLUSIVE", pair, dataset, alpha))


@pytest.mark.claim("C8")
def test_fidelity(claim_cell, pair, dataset, alpha):
    claim_cell.record(synthetic_cell(claim_cell, "INVALID", pair, dataset, alpha))
'''


def claim_file(c1: str = "SUPPORTED", effect: float = 0.5) -> str:
    return CLAIM_FILE.replace("{C1}", c1).replace("{EFFECT}", repr(effect))


@pytest.fixture
def claims_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest('pytest_plugins = ["harness.pytest_plugin"]')
    pytester.makepyfile(test_claims=claim_file())
    return pytester


def test_verdicts_become_outcomes(claims_dir: pytest.Pytester) -> None:
    result = claims_dir.runpytest("-v", "--run-id", "r1")
    outcomes = result.parseoutcomes()
    assert outcomes == {"passed": 2, "failed": 2, "inconclusive": 2, "errors": 2}
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*test_intensity?toy_grpo-toy-a010? SUPPORTED*",
        "*test_complexity?toy_grpo-toy-a010? REFUTED*",
        "*test_kurtosis?toy_grpo-toy-a010? INCONCLUSIVE*",
        "*test_fidelity?toy_grpo-toy-a010? INVALID*",
    ])
    result.stdout.fnmatch_lines(["*REFUTED C2-complexity-toy_grpo-toy-a010: synthetic refuted*",
                                 "*rule: synthetic rule*"])


def test_terminal_matrix_lists_every_experiment(claims_dir: pytest.Pytester) -> None:
    result = claims_dir.runpytest("--run-id", "r1")
    result.stdout.fnmatch_lines([
        "*= claim matrix =*",
        "experiment*C1 intensity*C2 complexity*C3 kurtosis*C8 eap_fidelity*",
        "toy-grpo · toy · a010*SUPPORTED*REFUTED*INCONCLUSIVE*INVALID*",
        "toy-grpo · toy · a030*SUPPORTED*REFUTED*INCONCLUSIVE*INVALID*",
        "2 SUPPORTED, 2 REFUTED, 2 INCONCLUSIVE, 2 INVALID (8 cells of 8 selected)",
        "INVALID*C8-eap_fidelity-toy_grpo-toy-a010: synthetic invalid",
    ])


def test_reports_written_and_valid(claims_dir: pytest.Pytester) -> None:
    claims_dir.runpytest("--run-id", "r1", "--junitxml=junit.xml")
    run_dir = claims_dir.path / "reports" / "r1"
    document = json.loads((run_dir / "claims.json").read_text())
    assert document["run_id"] == "r1"
    assert document["summary"]["verdicts"] == {"SUPPORTED": 2, "REFUTED": 2, "INCONCLUSIVE": 2, "INVALID": 2}
    cell = next(c for c in document["cells"] if c["cell_id"] == "C1-intensity-toy_grpo-toy-a030")
    assert cell["funnel"][1] == {"stage": "length window", "n": 20}
    assert cell["provenance"]["run_id"] == "r1" and "numpy" in cell["provenance"]["libraries"]
    assert "code_version" in document["provenance"]
    assert "C1-intensity-toy_grpo-toy-a030" in (run_dir / "claims.md").read_text()
    assert (run_dir / "figures" / "C1-alpha.png").read_bytes()[:4] == b"\x89PNG"
    claims_junit = ET.parse(run_dir / "claims-junit.xml").getroot()
    assert len(claims_junit.findall(".//error")) == 2 and len(claims_junit.findall(".//failure")) == 2
    # INCONCLUSIVE is not a failure: skipped, with its reason
    skipped = claims_junit.findall(".//skipped")
    assert [s.get("message") for s in skipped] == ["INCONCLUSIVE: synthetic inconclusive"] * 2
    assert claims_junit.find("testsuite").get("skipped") == "2"
    # pytest's own JUnit carries the verdict fields as properties of each test case.
    pytest_junit = ET.parse(claims_dir.path / "junit.xml").getroot()
    case = next(c for c in pytest_junit.iter("testcase") if c.get("name") == "test_kurtosis[toy_grpo-toy-a030]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["verdict"] == "INCONCLUSIVE" and props["cell_id"] == "C3-kurtosis-toy_grpo-toy-a030"
    assert case.find("skipped") is not None and case.find("failure") is None
    assert props["p_holm"] == "0.02"


def test_no_reports_without_cells(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["harness.pytest_plugin"]')
    pytester.makepyfile("def test_plain():\n    assert True\n")
    pytester.runpytest("--run-id", "r0").assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists()


def test_k_selects_by_claim_id_and_alpha(claims_dir: pytest.Pytester) -> None:
    result = claims_dir.runpytest("-k", "C1 and a030", "--run-id", "r1")
    result.assert_outcomes(passed=1)


def test_nearby_alphas_are_distinct_tests(claims_dir: pytest.Pytester) -> None:
    result = claims_dir.runpytest("-k", "intensity", "--alphas", "0.3,0.301,0.001,0.004", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_intensity?toy_grpo-toy-a030?", "*test_intensity?toy_grpo-toy-a030p1?",
                                 "*test_intensity?toy_grpo-toy-a000p1?", "*test_intensity?toy_grpo-toy-a000p4?"])
    result.stdout.fnmatch_lines(["4/*tests collected*"])


def test_options_override_module_grid(claims_dir: pytest.Pytester) -> None:
    result = claims_dir.runpytest("-k", "intensity", "--pairs", "a,b", "--alphas", "0.03", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_intensity?a-toy-a003?", "*test_intensity?b-toy-a003?"])


@pytest.mark.parametrize("args, message", [
    (["--alphas", "0.1,x"], "*--alphas: 'x' is not a number*"),
    (["--alphas", "1.5"], "*--alphas must be in (0, 1], got 1.5*"),
    (["--alphas", "0.1,0.3", "--alphas", "0.10"], "*--alphas: 0.1 is given twice; give each alpha once*"),
    (["--token-mode", "mixed"], "*--token-mode: unknown mixed; choose from own, shared*"),
    (["--n", "0"], "*--n must be a positive number*"),
    (["--run-id", "../x"], "*--run-id '../x'*"),
    (["--claims-compare-fail", "effect:5%"], "*needs --claims-baseline*"),
    (["--claims-baseline", "missing.json"], "*missing.json: no such claims file*"),
])
def test_bad_options_are_usage_errors(claims_dir: pytest.Pytester, args: list[str], message: str) -> None:
    result = claims_dir.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_malformed_baseline_is_usage_error(claims_dir: pytest.Pytester) -> None:
    (claims_dir.path / "bad.json").write_text('{"schema": "rl-circuit-audit/claims", "schema_version": 1, "cells": [{}]}')
    result = claims_dir.runpytest("--claims-baseline", "bad.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad.json*missing field(s)*"])


def test_baseline_mismatch_fails_the_cell(claims_dir: pytest.Pytester) -> None:
    claims_dir.runpytest("-k", "intensity", "--run-id", "base")
    baseline = claims_dir.path / "reports" / "base" / "claims.json"
    # Same verdicts: the baseline adds no failure.
    same = claims_dir.runpytest("-k", "intensity", "--run-id", "same", "--claims-baseline", str(baseline))
    same.assert_outcomes(passed=2)
    # C1 flips to INCONCLUSIVE: both cells now differ from the stored SUPPORTED.
    claims_dir.makepyfile(test_claims=claim_file(c1="INCONCLUSIVE"))
    result = claims_dir.runpytest("-k", "intensity", "--run-id", "next", "--claims-baseline", str(baseline))
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*BASELINE: verdict changed from the baseline: SUPPORTED -> INCONCLUSIVE*",
        "*baseline*: 2 regression(s), 0 baseline cell(s) not run*",
    ])


def test_effect_drift_beyond_limit_fails(claims_dir: pytest.Pytester) -> None:
    claims_dir.runpytest("-k", "intensity", "--run-id", "base")
    baseline = str(claims_dir.path / "reports" / "base" / "claims.json")
    claims_dir.makepyfile(test_claims=claim_file(effect=0.54))  # +8% on 0.5
    within = claims_dir.runpytest("-k", "intensity", "--claims-baseline", baseline, "--claims-compare-fail=effect:10%")
    within.assert_outcomes(passed=2)
    beyond = claims_dir.runpytest("-k", "intensity", "--claims-baseline", baseline, "--claims-compare-fail=effect:5%")
    beyond.assert_outcomes(failed=2)
    beyond.stdout.fnmatch_lines(["*effect drifted 8.0% from the baseline (0.5 -> 0.54), limit 5%*"])


def test_user_error_in_a_claim_test_is_one_line(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["harness.pytest_plugin"]')
    pytester.makepyfile('''
import pytest
from harness.errors import UserError

@pytest.mark.claim("C1")
def test_unknown_pair(claim_cell):
    raise UserError("unknown pair 'nope'; known: toy-grpo")
''')
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)     # it is still a cell: INVALID, whose outcome is an error
    result.stdout.fnmatch_lines(["error: unknown pair 'nope'; known: toy-grpo"])
    result.stdout.no_fnmatch_line("*raise UserError*")


CRASHING = '''
import pytest
from harness.audit.verdicts import CellResult

CLAIM_GRID = {"pair": ["toy-grpo"], "dataset": ["toy"], "alpha": [0.1, 0.3]}


@pytest.fixture
def judged(alpha):
    if alpha == 0.3:
        raise ValueError("selection left no sample\\nsecond line")
    return {"extra": {}}


@pytest.mark.claim("C8")
def test_eap_fidelity(claim_cell, judged, pair, dataset, alpha):
    judged["extra"]["fidelity"]
    claim_cell.record(CellResult("C8", "eap_fidelity", claim_cell.cell_id(pair, dataset, alpha=alpha), "SUPPORTED", "r"))


@pytest.mark.claim("C1")
def test_intensity(claim_cell, pair, dataset, alpha):
    claim_cell.record(CellResult("C1", "intensity", claim_cell.cell_id(pair, dataset, alpha=alpha), "SUPPORTED", "r"))
'''


def test_a_crashed_claim_test_is_an_invalid_cell_not_a_missing_row(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["harness.pytest_plugin"]')
    pytester.makepyfile(test_claims=CRASHING)
    result = pytester.runpytest("--run-id", "crash")
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(["2 SUPPORTED, 2 INVALID (4 cells of 4 selected; 2 errored: a test raised, see the INVALID rows)"])
    document = json.loads((pytester.path / "reports" / "crash" / "claims.json").read_text())
    assert document["summary"]["cells"] == document["summary"]["selected"] == 4
    assert document["summary"]["errors"] == 2
    cells = {c["cell_id"]: c for c in document["cells"]}
    body = cells["C8-eap_fidelity-toy_grpo-toy-a010"]       # raised in the test body
    assert body["verdict"] == "INVALID" and body["alpha"] == 0.1 and body["pair"] == "toy-grpo"
    assert body["reason"] == "error in call (test_claims.py:16 in test_eap_fidelity): KeyError: 'fidelity'"
    fixture = cells["C8-eap_fidelity-toy_grpo-toy-a030"]    # raised in a fixture: one line of the message
    assert fixture["reason"] == ("error in setup (test_claims.py:10 in judged): ValueError: "
                                 "selection left no sample")
    assert fixture["extra"]["error"]["type"] == "ValueError" and fixture["provenance"]["run_id"] == "crash"


def test_claim_test_without_record_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["harness.pytest_plugin"]')
    pytester.makepyfile('''
import pytest

@pytest.mark.claim("C9")
def test_forgot(claim_cell):
    pass
''')
    result = pytester.runpytest("--run-id", "forgot")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*recorded no cell*"])
    cell = json.loads((pytester.path / "reports" / "forgot" / "claims.json").read_text())["cells"][0]
    assert cell["verdict"] == "INVALID" and cell["cell_id"] == "C9-accuracy"
    assert "NoCell: the test finished without calling claim_cell.record" in cell["reason"]


def test_an_existing_run_id_is_refused_unless_overwrite(claims_dir: pytest.Pytester) -> None:
    claims_dir.runpytest("-k", "intensity", "--run-id", "r1").assert_outcomes(passed=2)
    stale = claims_dir.path / "reports" / "r1" / "figures" / "stale.png"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"old")
    again = claims_dir.runpytest("-k", "intensity", "--run-id", "r1")
    assert again.ret == pytest.ExitCode.USAGE_ERROR
    again.stderr.fnmatch_lines(["*--run-id r1: *reports/r1 already exists; choose another run id or pass --overwrite*"])
    # --overwrite clears the old report first: a run that records nothing leaves no report behind.
    nothing = claims_dir.runpytest("-k", "no_such_test", "--run-id", "r1", "--overwrite")
    assert nothing.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert not (claims_dir.path / "reports" / "r1" / "claims.json").exists() and not stale.exists()
    claims_dir.runpytest("-k", "intensity", "--run-id", "r1", "--overwrite").assert_outcomes(passed=2)
    assert (claims_dir.path / "reports" / "r1" / "claims.json").is_file()


def test_default_run_ids_do_not_collide(claims_dir: pytest.Pytester) -> None:
    from harness.pytest_plugin import RUN_ID_PATTERN, default_run_id

    ids = {default_run_id() for _ in range(200)}
    assert len(ids) == 200 and all(RUN_ID_PATTERN.fullmatch(i) for i in ids)
    claims_dir.runpytest("-k", "intensity")
    claims_dir.runpytest("-k", "intensity")
    assert len(list((claims_dir.path / "reports").iterdir())) == 2


def test_figures_attached_by_tests_reach_the_report(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["harness.pytest_plugin"]')
    pytester.makepyfile('''
import numpy as np
import pytest
from harness.audit.verdicts import CellResult

@pytest.mark.claim("C7")
def test_nodes(claim_cell):
    base = np.array([[1.0, 2.0], [0.0, 4.0]])
    claim_cell.add_edge_heatmap("toy-grpo", base, base * 1.5, ["embed", "attn.0"], ["mlp.0", "sink"])
    claim_cell.add_node_entropy("toy-grpo", ["embed", "attn.0"], [0.5, 1.0], [0.7, 0.9])
    claim_cell.record(CellResult("C7", "node_entropy", claim_cell.cell_id("toy-grpo"), "SUPPORTED", "synthetic rule"))
''')
    pytester.runpytest("--run-id", "figs").assert_outcomes(passed=1)
    document = json.loads((pytester.path / "reports" / "figs" / "claims.json").read_text())
    names = {f["name"]: f["claim_id"] for f in document["figures"]}
    assert names == {"heatmap-toy_grpo": "C7", "node-entropy-toy_grpo": "C7"}
    html = (pytester.path / "reports" / "figs" / "claims.html").read_text()
    assert html.count("data:image/png;base64,") == 2
