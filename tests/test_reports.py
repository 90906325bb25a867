"""Verdict schema, report writers, plots, diff/merge and the HTML page in headless Chromium.
Every cell here is synthetic, made by hand for the test."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from harness.audit.claims import CLAIMS, get_claim
from harness.audit.config import parse_alphas
from harness.audit.verdicts import (
    CLAIMS_SCHEMA_VERSION,
    CellResult,
    Verdict,
    alpha_tag,
    make_cell_id,
)
from harness.cli import main as harness_main
from harness.errors import UserError
from harness.report import ClaimsRun, Figure, load_claims, plots, write_reports
from harness.report.compare import DriftLimit, baseline_of, baseline_problems, change_cause, diff_runs, merge_runs
from harness.report.matrix import build_matrix

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_cell(claim_id="C1", name="intensity", pair="toy-grpo", alpha=0.1, verdict="SUPPORTED",
                   effect=0.2, **fields) -> CellResult:
    values = dict(
        claim_id=claim_id, claim_name=name, cell_id=make_cell_id(claim_id, name, pair, "toy", alpha=alpha),
        verdict=verdict, rule="synthetic rule", reason=f"synthetic {verdict.lower()}", pair=pair,
        dataset="toy", alpha=alpha, metric=name, token_mode="own", n=30, base_value=1.0,
        post_value=1.0 + effect, effect=effect, ci_low=effect - 0.1, ci_high=effect + 0.1, ci_method="BCa",
        effect_size=0.8, p_value=0.004, p_holm=0.012, p_bh=0.008,
        fidelity={"spearman": 0.91, "ci": [0.85, 0.95], "status": "FAITHFUL", "threshold": 0.8, "n_questions": 8,
                  "n_edges": 32, "sampling": "uniform", "by_destination": {}},
        robustness={"estimator": "exact", "verdict": "INCONCLUSIVE", "effect": 0.1, "ci": [-0.1, 0.3],
                    "p_value": 0.2, "n": 8, "n_edges": 32},
        funnel=[{"stage": "both correct", "n": 41}, {"stage": "balanced", "n": 30}],
        extra={"test": "synthetic"}, provenance={"base": "sha256:aa", "post": "sha256:bb", "seed": 0})
    values.update(fields)
    return CellResult(**values)


def synthetic_run(run_id="synthetic") -> ClaimsRun:
    cells, experiments = [], []
    for pair, sign in (("toy-grpo", 1.0), ("toy-dpo", -1.0)):
        for alpha, verdict in ((0.03, "INCONCLUSIVE"), (0.1, "SUPPORTED"), (0.3, "SUPPORTED")):
            cells.append(synthetic_cell(pair=pair, alpha=alpha, effect=sign * alpha,
                                        verdict=verdict if sign > 0 else "REFUTED"))
            experiments.append({"experiment": f"{pair}/toy/a{alpha}", "base": 0.3, "post": 0.3 + sign * 0.05,
                                "outcome": "rise" if sign > 0 else "fall"})
    cells.append(synthetic_cell("C6", "diversity", pair=None, dataset=None, alpha=None, base_value=0.95,
                                post_value=0.5, effect=-0.45, extra={"experiments": experiments}))
    cells.append(synthetic_cell("C8", "eap_fidelity", pair="toy-grpo", alpha=None, verdict="INVALID",
                                reason="fidelity 0.41 < 0.8",
                                fidelity={"spearman": 0.41, "ci": [0.2, 0.6], "status": "UNCERTAIN", "threshold": 0.8},
                                robustness=None))
    base = np.abs(np.random.default_rng(0).normal(size=(5, 9)))
    heatmap = plots.edge_change_heatmap(base, base * 1.1, [f"s{i}" for i in range(5)],
                                        [f"d{i}" for i in range(9)], "synthetic pair")
    return ClaimsRun(run_id, cells, {"code_version": "git:synthetic", "device": "cpu"},
                     [Figure("heatmap-synthetic", heatmap, "synthetic heatmap", "C7")])


# ---------------------------------------------------------------- verdict schema

def test_claim_catalogue_lists_the_paper_claims_and_the_causal_ones() -> None:
    assert [c.id for c in CLAIMS] == [f"C{i}" for i in range(1, 10)] + ["CB1", "CB2", "CB3"]   # -k C1 selects C1 only
    assert get_claim("C3").direction == "decrease" and get_claim("C8").name == "eap_fidelity"
    assert [get_claim(c).direction for c in ("CB1", "CB2", "CB3")] == ["restores", "installs", "necessary"]
    with pytest.raises(UserError, match="unknown claim 'CB4'"):
        get_claim("CB4")


def test_cell_id_is_readable() -> None:
    assert make_cell_id("C1", "intensity", "smollm2-grpo", "gsm8k", alpha=0.1) == "C1-intensity-smollm2_grpo-gsm8k-a010"
    assert make_cell_id("C5", "alpha_fade", "mistral", None, "kurtosis") == "C5-alpha_fade-mistral-kurtosis"
    assert make_cell_id("C1", "intensity", alpha=0.03).endswith("-a003")


@pytest.mark.parametrize("alpha, tag", [(0.1, "a010"), (0.03, "a003"), (1.0, "a100"), (0.3, "a030"),
                                        (0.301, "a030p1"), (0.001, "a000p1"), (0.004, "a000p4"),
                                        (0.125, "a012p5"), (0.07, "a007"), (None, "a-")])
def test_alpha_tag_keeps_hundredths_and_the_exact_rest(alpha, tag) -> None:
    assert alpha_tag(alpha) == tag


def test_distinct_alphas_give_distinct_cell_ids() -> None:
    alphas = [0.3, 0.301, 0.3001, 0.001, 0.004, 0.0041, 0.1, 0.10000000000000002, 0.5, 1.0, 0.999]
    ids = {make_cell_id("C1", "intensity", "p", "d", alpha=a) for a in alphas}
    assert len(ids) == len(alphas)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)   # still one `-k` word each


@pytest.mark.parametrize("texts, message", [(["0.3", "0.30"], "--alphas: 0.3 is given twice"),
                                             (["0.1", "x"], "--alphas: 'x' is not a number"),
                                             (["0"], r"--alphas must be in \(0, 1\], got 0.0")])
def test_parse_alphas_rejects_repeats_and_bad_values(texts, message) -> None:
    with pytest.raises(UserError, match=message):
        parse_alphas(texts)
    assert parse_alphas(["0.3", "0.301"]) == (0.3, 0.301)


def test_cell_round_trips_through_json() -> None:
    cell = synthetic_cell()
    assert CellResult.from_dict(json.loads(json.dumps(cell.to_dict()))) == cell
    assert cell.to_dict()["verdict"] == "SUPPORTED"


def test_non_finite_numbers_become_null() -> None:
    data = synthetic_cell(effect=math.nan, extra={"x": [math.inf, 1.0]}).to_dict()
    assert data["effect"] is None and data["extra"]["x"] == [None, 1.0]


def test_verdict_accepts_any_enum_with_its_name() -> None:
    class Label(str, enum.Enum):
        REFUTED = "REFUTED"

    assert synthetic_cell(verdict=Label.REFUTED).verdict is Verdict.REFUTED
    assert Verdict.INVALID.pytest_outcome == "error" and Verdict.INCONCLUSIVE.pytest_outcome == "failed"


@pytest.mark.parametrize("change, message", [
    ({"verdict": "MAYBE"}, "unknown verdict 'MAYBE'"),
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"rule": None}, "missing field(s) rule"),
])
def test_malformed_cell_dict_is_user_error(change: dict, message: str) -> None:
    data = synthetic_cell().to_dict()
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None or k != "rule"}
    with pytest.raises(UserError, match=re.escape(message)):
        CellResult.from_dict(data)


# ---------------------------------------------------------------- writers

def test_write_reports_produces_every_file(tmp_path: Path) -> None:
    run = synthetic_run()
    paths = write_reports(run, tmp_path)
    assert set(paths) == {"json", "markdown", "html", "junit"}
    document = json.loads(paths["json"].read_text())
    assert document["schema_version"] == CLAIMS_SCHEMA_VERSION
    assert document["summary"]["verdicts"] == {"SUPPORTED": 3, "REFUTED": 3, "INCONCLUSIVE": 1, "INVALID": 1}
    assert [c["id"] for c in document["claims"]] == ["C1", "C6", "C7", "C8"]
    figure_names = {f["name"] for f in document["figures"]}
    assert figure_names == {"heatmap-synthetic", "C1-alpha", "C6-diversity-toy-fig3a"}
    for name in figure_names:
        assert (tmp_path / "figures" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    reloaded = load_claims(tmp_path)
    assert sorted(reloaded.cells, key=lambda c: c.cell_id) == sorted(run.cells, key=lambda c: c.cell_id)
    assert [f.name for f in reloaded.figures] == ["heatmap-synthetic"]  # derived ones are redrawn


def test_html_is_self_contained(tmp_path: Path) -> None:
    html = write_reports(synthetic_run(), tmp_path)["html"].read_text()
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["'](https?:|//)""", html)
    assert html.count('src="data:image/png;base64,') == 3
    assert "C8-eap_fidelity-toy_grpo-toy" in html and "fidelity 0.41 &lt; 0.8" in html
    assert "synthetic rule" in html and "git:synthetic" in html


def test_markdown_has_matrix_and_cards(tmp_path: Path) -> None:
    md = write_reports(synthetic_run(), tmp_path)["markdown"].read_text()
    assert "| toy-grpo · toy · a003 | **INCONCLUSIVE · exact: INCONCLUSIVE** |  |  |" in md
    assert "**Answer:** per checkpoint on EAP 2 SUP 1 INC 3 REF; on exact ablation 6 INC of 6 measured; EAP fidelity 6 FAITHFUL" in md
    assert "## C8 eap_fidelity" in md and "0.41 [0.2, 0.6] UNCERTAIN (vs 0.8)" in md
    assert "![synthetic heatmap](figures/heatmap-synthetic.png)" in md


def test_junit_has_one_case_per_cell_with_properties(tmp_path: Path) -> None:
    root = ET.parse(write_reports(synthetic_run(), tmp_path)["junit"]).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 8
    invalid = next(c for c in cases if c.get("name").startswith("C8-"))
    assert invalid.find("error").get("message") == "INVALID: fidelity 0.41 < 0.8"
    props = {p.get("name"): p.get("value") for p in invalid.iter("property")}
    assert props["verdict"] == "INVALID" and json.loads(props["fidelity"])["status"] == "UNCERTAIN"
    assert json.loads(props["funnel"])[0] == {"stage": "both correct", "n": 41}
    assert (root.find("testsuite").get("failures"), root.find("testsuite").get("skipped")) == ("3", "1")   # REFUTED; INCONCLUSIVE


def test_matrix_summarises_several_cells_in_one_entry() -> None:
    cells = [synthetic_cell(metric="m1", cell_id="C1-a"), synthetic_cell(metric="m2", cell_id="C1-b", verdict="REFUTED")]
    matrix = build_matrix(cells)
    (experiment,) = matrix.experiments
    assert matrix.entry_text(experiment, "C1") == "1 SUP 1 REF · exact: 2 INC"
    assert matrix.entry_verdict(experiment, "C1") is Verdict.REFUTED


# ---------------------------------------------------------------- loading bad files

@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable claims.json"),
    ('{"schema": "other"}', "not a claims file"),
    ('{"schema": "rl-circuit-audit/claims", "schema_version": 99, "cells": []}', "schema_version 99 is not supported"),
    ('{"schema": "rl-circuit-audit/claims", "schema_version": 1, "cells": {}}', '"cells" must be a list'),
    ('{"schema": "rl-circuit-audit/claims", "schema_version": 1, "cells": [], '
     '"figures": [{"name": "x", "file": "figures/x.png"}]}', "figure 'x' missing its file"),
])
def test_malformed_claims_file_is_user_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "claims.json"
    path.write_text(content)
    with pytest.raises(UserError, match=re.escape(message)):
        load_claims(path)


# ---------------------------------------------------------------- plots

def test_relative_edge_change_blank_on_non_edges() -> None:
    change = plots.relative_edge_change(np.array([[2.0, 0.0]]), np.array([[3.0, 0.0]]))
    assert change[0, 0] == pytest.approx(0.5) and np.isnan(change[0, 1])


def test_plots_return_png_and_reject_mismatched_input() -> None:
    assert plots.diversity_scatter(["a", "b"], [0.1, 0.2], [0.15, 0.18]).startswith(PNG_MAGIC)
    assert plots.node_entropy_bars(["n0", "n1"], [0.5, 0.0], [0.6, 0.1], "t").startswith(PNG_MAGIC)
    assert plots.metric_vs_alpha({"s": [(0.1, 1.0, None, None)]}, "m", "t").startswith(PNG_MAGIC)
    with pytest.raises(UserError, match="do not match the matrix shape"):
        plots.edge_change_heatmap(np.ones((2, 3)), np.ones((2, 3)), ["a"], ["x", "y", "z"], "t")
    with pytest.raises(UserError, match="same 2-D shape"):
        plots.edge_change_heatmap(np.ones((2, 3)), np.ones((3, 2)), ["a", "b"], ["x", "y", "z"], "t")


# ---------------------------------------------------------------- diff, merge, drift

def test_diff_lists_verdict_effect_and_membership_changes() -> None:
    old = ClaimsRun("old", [synthetic_cell(alpha=0.1), synthetic_cell(alpha=0.3), synthetic_cell(alpha=0.5)])
    new = ClaimsRun("new", [synthetic_cell(alpha=0.1, verdict="REFUTED", effect=-0.1),
                            synthetic_cell(alpha=0.3, effect=0.25), synthetic_cell(alpha=0.03)])
    assert diff_runs(old, new) == [
        "+ C1-intensity-toy_grpo-toy-a003: SUPPORTED (new)",
        "~ C1-intensity-toy_grpo-toy-a010: SUPPORTED -> REFUTED; effect 0.2 -> -0.1 (-150.0%) "
        "(cause: the data: effect 0.2 -> -0.1, ci_low 0.1 -> -0.2, ci_high 0.3 -> 0)",
        "  C1-intensity-toy_grpo-toy-a030: SUPPORTED; effect 0.2 -> 0.25 (+25.0%)",
        "- C1-intensity-toy_grpo-toy-a050: SUPPORTED (removed)",
    ]
    assert diff_runs(old, old) == []


def test_a_changed_verdict_names_its_cause_settings_family_or_data() -> None:
    """Nightly regression: a verdict that moved because a setting changed, because its correction
    family grew, or because its data moved, says which (settings first: they explain the rest)."""
    config = {"questions": 200, "stats": {"sesoi_rel": 0.05, "significance": 0.05}}
    before = synthetic_cell(alpha=0.1, provenance={"audit_config": config},
                            extra={"holm_m": 4, "family_size": 2, "family_hash": "f1"})
    setting = synthetic_cell(alpha=0.1, verdict="INCONCLUSIVE", provenance={
        "audit_config": {**config, "stats": {**config["stats"], "sesoi_rel": 0.5}}},
        extra={"holm_m": 4, "family_size": 2, "family_hash": "f1"})
    family = synthetic_cell(alpha=0.1, verdict="INCONCLUSIVE", provenance={"audit_config": config},
                            extra={"holm_m": 12, "family_size": 6, "family_hash": "f2"})
    data = synthetic_cell(alpha=0.1, verdict="INCONCLUSIVE", effect=0.01, provenance={"audit_config": config},
                          extra={"holm_m": 4, "family_size": 2, "family_hash": "f1"})
    assert baseline_problems(setting, before, []) == [
        "verdict changed from the baseline: SUPPORTED -> INCONCLUSIVE (cause: settings: stats.sesoi_rel 0.05 -> 0.5)"]
    assert change_cause(before, family) == ("its correction family (the cell's own numbers are unchanged): "
                                            "holm_m 4 -> 12, family_size 2 -> 6")
    # another budget: other settings and a larger family, the same numbers: Holm decided, and it says so
    budget = synthetic_cell(alpha=0.1, verdict="INCONCLUSIVE", provenance={"audit_config": {**config, "questions": 400}},
                            extra={"holm_m": 24, "family_size": 12, "family_hash": "f3"})
    assert change_cause(before, budget).startswith("its correction family (the cell's own numbers are unchanged)")
    # a newer release: its rule moved the numbers and it added a setting; no setting the old run had changed
    old_code = synthetic_cell(alpha=0.1, provenance={"audit_config": config, "code_version": "git:aaa"},
                              extra={"holm_m": 4, "family_size": 2, "family_hash": "f1"})
    new_code = synthetic_cell(alpha=0.1, verdict="INCONCLUSIVE", effect=0.01, extra={"holm_m": 4, "family_size": 2,
                              "family_hash": "f1"}, provenance={"code_version": "git:bbb", "audit_config": {
                                  **config, "stats": {**config["stats"], "claimed_rate_tolerance": 0.05}}})
    assert change_cause(old_code, new_code) == ("the code: git:aaa -> git:bbb, under the same settings (settings it "
                                                "added: stats.claimed_rate_tolerance)")
    assert change_cause(before, data) == "the data: effect 0.2 -> 0.01, ci_low 0.1 -> -0.09, ci_high 0.3 -> 0.11"
    assert baseline_problems(before, before, []) == []


def test_drift_limit_parsing() -> None:
    assert DriftLimit.parse("effect:12.5%") == DriftLimit("effect", 12.5)
    with pytest.raises(UserError, match="expected effect:X%"):
        DriftLimit.parse("effect=10")


def test_merge_keeps_agreeing_duplicates_and_names_conflicts() -> None:
    a = ClaimsRun("a", [synthetic_cell(alpha=0.1), synthetic_cell(alpha=0.3)])
    b = ClaimsRun("b", [synthetic_cell(alpha=0.3, provenance={"host": "other"}), synthetic_cell(alpha=0.5)])
    merged = merge_runs([("a", a), ("b", b)], "m")
    assert sorted(c.alpha for c in merged.cells) == [0.1, 0.3, 0.5]
    assert [s["run_id"] for s in merged.provenance["merged_from"]] == ["a", "b"]
    conflict = ClaimsRun("c", [synthetic_cell(alpha=0.1, verdict="REFUTED")])
    with pytest.raises(UserError, match="cell C1-intensity-toy_grpo-toy-a010 differs between shards a and c"):
        merge_runs([("a", a), ("c", conflict)], "m")


def test_report_cli_merge_then_diff(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    full = synthetic_run()
    half = len(full.cells) // 2
    write_reports(ClaimsRun("shard-1", full.cells[:half], {"host": "one"}, full.figures), tmp_path / "s1")
    write_reports(ClaimsRun("shard-2", full.cells[half:], {"host": "two"}), tmp_path / "s2")
    status = harness_main(["report", "merge", str(tmp_path / "s1"), str(tmp_path / "s2" / "claims.json"),
                           "--out", str(tmp_path / "merged"), "--run-id", "nightly"])
    assert status == 0
    merged = load_claims(tmp_path / "merged")
    assert merged.run_id == "nightly" and len(merged.cells) == len(full.cells)
    assert (tmp_path / "merged" / "claims.html").read_text().count("data:image/png;base64,") == 3
    capsys.readouterr()
    assert harness_main(["report", "diff", str(tmp_path / "merged"), str(tmp_path / "merged")]) == 0
    capsys.readouterr()
    assert harness_main(["report", "diff", str(tmp_path / "s1"), str(tmp_path / "merged")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("shard-1 -> nightly: 4 change(s)")
    assert "+ C8-eap_fidelity-toy_grpo-toy: INVALID (new)" in out


def test_report_cli_unreadable_shard_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "broken.json").write_text("[1, 2")
    assert harness_main(["report", "merge", str(tmp_path / "broken.json"), "--out", str(tmp_path / "o")]) == 2
    assert "broken.json: not a readable claims.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _tampered_shard(tmp_path: Path, edit) -> Path:
    """A written shard whose claims.json was then edited by `edit(document)` (what a received file can hold)."""
    write_reports(synthetic_run(), tmp_path / "shard")
    claims = tmp_path / "shard" / "claims.json"
    document = json.loads(claims.read_text())
    edit(document)
    claims.write_text(json.dumps(document))
    return claims


def _attached(document: dict) -> dict:
    return next(f for f in document["figures"] if not f["derived"])


SECRET = "/etc/hostname"


@pytest.mark.parametrize("edit, message", [
    (lambda d: _attached(d).update(file=SECRET), "file '/etc/hostname' must be a relative path inside the run folder"),
    (lambda d: _attached(d).update(file="../../../../../../../../etc/hostname"),
     "must be a relative path inside the run folder (no absolute path, no '..')"),
    (lambda d: _attached(d).update(file="figures/../../outside.png"), "no absolute path, no '..'"),
    (lambda d: _attached(d).update(name="../../escaped"), "figure name '../../escaped': use letters, digits"),
    (lambda d: _attached(d).update(name="sub/escaped"), "figure name 'sub/escaped': use letters, digits"),
    (lambda d: _attached(d).update(name=7), "figure name 7: use letters, digits"),
    (lambda d: _attached(d).update(file=None), "file None must be a relative path inside the run folder"),
    (lambda d: d["cells"][0].update(cell_id="../../C6-x"), "cell id '../../C6-x': use letters, digits"),
    (lambda d: d.update(figures={"a": 1}), '"figures" must be a list'),
])
def test_report_merge_confines_received_paths_to_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                edit, message: str) -> None:
    claims = _tampered_shard(tmp_path, edit)
    out = tmp_path / "deep" / "er" / "merged"
    assert harness_main(["report", "merge", str(claims), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not out.exists() and not list(tmp_path.rglob("escaped*"))


def test_a_symlinked_figure_leaving_the_run_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    claims = _tampered_shard(tmp_path, lambda d: _attached(d).update(file="figures/link.png"))
    (claims.parent / "figures" / "link.png").symlink_to(SECRET)
    assert harness_main(["report", "merge", str(claims), "--out", str(tmp_path / "m")]) == 2
    assert "must be a relative path inside the run folder" in capsys.readouterr().err


def test_a_figure_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Finding r07: a received shard whose figure file is a FIFO hung `report merge` forever."""
    claims = _tampered_shard(tmp_path, lambda d: _attached(d).update(file="figures/fifo.png"))
    os.mkfifo(claims.parent / "figures" / "fifo.png")
    assert harness_main(["report", "merge", str(claims), "--out", str(tmp_path / "m")]) == 2
    assert "is not a regular file" in capsys.readouterr().err


def test_merge_refuses_shards_of_different_runs() -> None:
    """Finding r11: shards run with other settings or another alpha grid were merged without a word."""
    def shard(name, config_hash, alphas):
        cell = synthetic_cell(alpha=0.1, provenance={"config_hash": config_hash})
        return name, ClaimsRun(name, [cell], {"grid": {"pairs": ["toy-grpo"], "alphas": alphas}})

    assert len(merge_runs([shard("s1", "h1", [0.1]), shard("s2", "h1", [0.1])], "m").cells) == 1
    with pytest.raises(UserError, match=r"shards s1 and s2 were run with different settings \(config_hash h1 vs h2"):
        merge_runs([shard("s1", "h1", [0.1]), shard("s2", "h2", [0.1])], "m")
    with pytest.raises(UserError, match="shards s1 and s3 were run on different grids"):
        merge_runs([shard("s1", "h1", [0.1]), shard("s3", "h1", [0.1, 0.3])], "m")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_reports_are_written_with_the_users_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        paths = write_reports(synthetic_run(), tmp_path / "run")
    finally:
        os.umask(old)
    files = [*paths.values(), *(tmp_path / "run" / "figures").iterdir()]
    assert files and {oct(f.stat().st_mode & 0o777) for f in files} == {oct(0o666 & ~umask)}


# ---------------------------------------------------------------- the page in a browser

def _chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Load claims.html offline: no console errors, the matrix is in the DOM, screenshot kept."""
    html = write_reports(synthetic_run("chromium-check"), tmp_path / "run")["html"]
    screenshot = REPO / "reports" / "html-check" / "claims-html.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120, env=env)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    assert "C1 intensity" in dom.stdout and "INVALID" in dom.stdout
    assert dom.stdout.count("data:image/png;base64,") == 3
    shot = subprocess.run([_chromium(), *flags, f"--screenshot={screenshot}", "--window-size=1280,2000",
                           "--hide-scrollbars", html.as_uri()], capture_output=True, text=True, timeout=120, env=env)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize("field, value, message", [
    ("n", "20", "field n must be a whole number or null, got '20'"),
    ("n", True, "field n must be a whole number or null, got True"),
    ("effect", "big", "field effect must be a number or null, got 'big'"),
    ("pair", 3, "field pair must be str or null, got 3"),
    ("extra", [], "field extra must be dict, got []"),
    ("funnel", None, "field funnel must be list, got None"),
])
def test_wrongly_typed_cell_fields_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, field, value,
                                                message) -> None:
    claims = _tampered_shard(tmp_path, lambda d: d["cells"][0].update({field: value}))
    assert harness_main(["report", "merge", str(claims), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert CellResult.from_dict({**synthetic_cell().to_dict(), "n": np.int64(3), "effect": np.float32(0.5)}).n == 3


def test_a_baseline_keeps_what_the_comparison_reads_and_drops_the_detail(tmp_path: Path) -> None:
    """`report baseline`: the same verdicts and numbers (diff finds nothing), the settings and family that
    change_cause reads, without the per-edge detail (here extra.fidelity) or the figures."""
    run = synthetic_run()
    cell = run.cells[0]
    run.cells[0] = dataclasses.replace(cell, extra={**cell.extra, "holm_m": 4, "fidelity": {"by_destination": [1] * 999}},
                                       provenance={**cell.provenance, "audit_config": {"questions": 200},
                                                   "answers_source": {"file": "x"}})
    baseline = baseline_of(run)
    assert diff_runs(run, baseline) == [] and baseline.figures == []
    kept = baseline.cells[0]
    assert kept.extra == {"holm_m": 4} and kept.provenance == {"audit_config": {"questions": 200}}   # no code_version here
    assert harness_main(["report", "baseline", str(write_reports(run, tmp_path / "r")["json"]), "--out",
                 str(tmp_path / "b.json")]) == 0
    assert diff_runs(run, load_claims(tmp_path / "b.json")) == []


def test_a_claim_off_the_grid_is_named_in_every_report() -> None:
    """A claim the grid cannot test (provenance off_grid) is named with its reason in the summary, the
    Markdown and the HTML, rather than shown as cells that could not be judged."""
    from harness.report.writers import render_html, render_markdown

    why = "needs at least 2 alphas (it reads how a change moves across them); this grid has 0.3 (--alphas)"
    run = ClaimsRun("one-alpha", [synthetic_cell(alpha=0.3)], {"off_grid": {"C5": why}})
    assert run.summary()["off_grid"] == {"C5": why}
    assert f"Not tested on this grid: C5 alpha_fade, {why}." in render_markdown(run, [])
    assert "Not tested on this grid: C5 alpha_fade, needs at least 2 alphas" in render_html(run, [])
    assert "off_grid" not in ClaimsRun("grid", [synthetic_cell(alpha=0.3)]).summary()


def test_the_first_screen_answers_about_the_algorithm_before_the_matrix(tmp_path: Path) -> None:
    """Three online-RL runs and a seed control: the Markdown and HTML open with the algorithm-level answers
    (before the matrix), the population (saying these are not the paper's pairs) and the claim's forest
    plot; claims.json carries the answers and JUnit the population of each testcase."""
    def cell(pair, verdict, effect, kind):
        return synthetic_cell(pair=pair, alpha=0.3, verdict=verdict, effect=effect,
                              extra={"control": "seed"} if kind == "seed-control" else {},
                              provenance={"pair": {"name": pair, "algorithm": "grpo", "algorithm_kind": kind,
                                                   "base": "bundled:smollm2-135m-reason"}})
    cells = [cell("run-a", "SUPPORTED", 0.3, "online-rl"), cell("run-b", "SUPPORTED", 0.25, "online-rl"),
             cell("run-c", "SUPPORTED", 0.35, "online-rl"), cell("seeds", "REFUTED", -0.3, "seed-control")]
    paths = write_reports(ClaimsRun("screen", cells), tmp_path)
    markdown, page = paths["markdown"].read_text(), paths["html"].read_text()
    for text in (markdown, page):
        answers = text.index("Answers: does the algorithm do what the paper claims?")
        assert answers < text.index("Matrix (")
        assert "within seed-to-seed variation" in text
        assert "not the paper's 7B pairs" in text.replace("&#x27;", "'")
        assert "C1: forest plot, one row per run and seed control" in text[answers:text.index("Matrix (")]
    assert "| C1 intensity | online-rl | **1 INCONCLUSIVE** | 3 | toy α0.3: 0.3 [" in markdown   # one row per claim
    assert "| decides (1 of 1) | 3 pair(s) on toy (run-a, run-b, run-c), not the paper's 7B pairs |" in markdown
    document = json.loads(paths["json"].read_text())
    [answer] = document["summary"]["algorithm"]
    assert answer["verdict"] == "INCONCLUSIVE" and len(answer["runs"]) == 3 and answer["pooled"]["n_runs"] == 3
    junit = ET.parse(paths["junit"]).getroot()
    scopes = [p.get("value") for p in junit.iter("property") if p.get("name") == "population"]
    assert len(scopes) == 5 and all("not the paper's 7B pairs" in s for s in scopes)   # 4 cells, 1 answer
    [suite] = [s for s in junit.findall("testsuite") if s.get("name") == "algorithm-screen"]
    [case] = suite.findall("testcase")
    assert case.get("classname") == "algorithm.C1" and case.find("skipped").get("message").startswith(
        "INCONCLUSIVE: within seed-to-seed variation")
