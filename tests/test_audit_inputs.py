"""Bad input to the audit pipeline, the suites and the audit command fails with one clear message
that lists the valid choices; the audit command line carries its budget."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import harness.analysis.stats  # noqa: F401  (numpy/scipy imported once, before pytester's in-process runs)
from harness.audit.config import AuditConfig, validate_alpha
from harness.audit.stages import AuditPipeline
from harness.data.problems import DATASETS, dataset_spec
from harness.errors import UserError

pytest_plugins = ["pytester"]

SUITES = Path(__file__).resolve().parent.parent / "suites"


def test_dataset_names_resolve_and_unknown_ones_list_the_choices() -> None:
    assert dataset_spec("chain_sum") == "rg:chain_sum"
    assert dataset_spec("rg:products") == "rg:products"
    with pytest.raises(UserError, match="unknown dataset 'nope'; choose one of chain_sum, "):
        dataset_spec("nope")
    assert set(DATASETS) >= {"chain_sum", "gsm8k"}


@pytest.mark.parametrize("alpha", [0, -0.1, 1.5])
def test_alpha_outside_unit_interval_is_refused(alpha) -> None:
    with pytest.raises(UserError, match=r"alpha must be in \(0, 1\]"):
        validate_alpha(alpha)


@pytest.mark.parametrize("field, value, message", [
    ("selection.variant", "codez", "unknown selection variant 'codez'; choose paper or paper-code"),
    ("questions", "0", "questions must be at least 1"),
    ("fidelity_threshold", "2.0", "Spearman correlation in"),
    ("grader", "strict", "unknown grader 'strict'; choose one of auto, paper, lenient"),
    ("selection.short_answers", "keep", "short_answers must be one of slice, drop, error, got 'keep'"),
])
def test_audit_config_rejects_bad_values(field, value, message) -> None:
    with pytest.raises(UserError, match=message):
        AuditConfig().with_settings({field: value})


def test_unknown_pair_lists_the_registry() -> None:
    pipeline = AuditPipeline(AuditConfig())
    with pytest.raises(UserError, match="unknown pair 'nope'; known pairs: .*smollm2-grpo"):
        pipeline.pair("nope")


@pytest.mark.parametrize("args, message", [
    (["--pairs", "nope"], "*--pairs: unknown nope; known pairs: *smollm2-grpo*"),
    (["--metrics", "loudness"], "*--metrics: unknown loudness; known metrics: intensity, complexity*"),
    (["--datasets", "nope"], "*unknown dataset 'nope'; choose one of chain_sum*"),
    (["--alphas", "1.5"], "*--alphas must be in (0, 1], got 1.5*"),
    (["--token-mode", "mixed"], "*--token-mode: unknown mixed; choose from own, shared-base*"),
])
def test_suites_refuse_bad_grid_options(pytester: pytest.Pytester, args, message) -> None:
    result = pytester.runpytest(str(SUITES), "-p", "no:cacheprovider", "--collect-only", *args)
    assert result.ret != 0
    result.stderr.fnmatch_lines([message])


def test_suites_collect_each_claim_on_the_pairs_it_speaks_about(pytester: pytest.Pytester) -> None:
    """One test per cell, its id the cell id: C1 on the online-RL pairs and the seed control, C4 on the
    preference pairs, C9 on every pair, no tiny test pair."""
    result = pytester.runpytest(str(SUITES), "-p", "no:cacheprovider", "--collect-only", "-q")
    ids = [line.split("::", 1)[1] for line in result.outlines if "::test_" in line]
    assert "test_claim[C1-intensity-smollm2_grpo-chain_sum_2d-a010]" in ids
    assert "test_claim[C1-intensity-smollm2_rloo-arithmetic_2d-a050]" in ids
    assert "test_claim[C1-intensity-smollm2_grpo_seeds-chain_sum_2d-a010]" in ids   # the control
    assert not any(i.startswith("test_claim[C1-intensity-smollm2_dpo") for i in ids)
    assert "test_claim[C4-dpo_deviates-smollm2_dpo-chain_sum_2d-kurtosis-a030]" in ids
    assert not any(i.startswith("test_claim[C4-dpo_deviates-smollm2_grpo_seeds") for i in ids)
    assert not any("tiny" in i for i in ids)
    assert "test_claim[C9-accuracy-smollm2_online_dpo-arithmetic_2d]" in ids
    assert "test_claim[C6-diversity]" in ids


def _audit_args(*argv: str):
    from harness.cli.audit import apply_budget, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["audit", *argv])
    apply_budget(args)
    return args


def test_audit_command_line_carries_the_budget() -> None:
    from harness.cli.audit import AUDIT_BUDGET, audit_config, pytest_args

    args = _audit_args("--run-id", "r1", "-k", "C1", "--pairs", "smollm2-grpo")
    config = audit_config(args, ["stats.sesoi_rel=0.1"])
    argv = pytest_args(args, args.run_id, config)
    assert argv[0] == str(SUITES)
    settings = dict(argv[i + 1].split("=", 1) for i, flag in enumerate(argv) if flag == "--set")
    assert settings == {"questions": str(AUDIT_BUDGET["questions"]), "fidelity_samples": "10",
                        "fidelity_edges": str(AUDIT_BUDGET["fidelity_edges"]), "selection.n": str(AUDIT_BUDGET["n"]),
                        "stats.sesoi_rel": "0.1", "behaviour_ks": "4,32"}   # the budget's own settings travel too
    override = audit_config(args, ["behaviour_ks=8"])   # a --set of the budget's setting wins
    assert override.behaviour_ks == (8,)
    assert config.fidelity_alpha is None   # fidelity, robustness and C8 measured at every alpha
    for flag, value in (("--alphas", AUDIT_BUDGET["alphas"]), ("--run-id", "r1"), ("-k", "C1"),
                        ("--pairs", "smollm2-grpo")):
        assert argv[argv.index(flag) + 1] == value
    assert config.decoding.max_new_tokens is None   # the pair's own budget unless asked


@pytest.mark.parametrize("argv, settings", [
    ((), []),
    (("--questions", "120", "--alphas", "0.1,0.5", "--device", "cpu"),
     ["decoding.mode=sample", "decoding.temperature=0.7", "metrics.bins_band=10,20", "metrics.range_policy=joint",
      "metrics.include_structural_zeros=false", "stats.significance=0.01", "fidelity_alpha=none"]),
])
def test_the_audit_config_reaches_the_suites_unchanged(pytester: pytest.Pytester, argv, settings) -> None:
    """The CLI builds the one AuditConfig; pytest's argv carries it as --set KEY=VALUE (settings_of), and
    the suites' plugin reads back the same config, field for field."""
    from harness.cli.audit import audit_config, pytest_args
    from harness.pytest_plugin import SESSION_KEY

    args = _audit_args("--reports-dir", str(pytester.path / "r"), *argv)
    config = audit_config(args, settings)
    suite_args = pytest_args(args, "roundtrip", config)
    read_back = pytester.parseconfigure("-p", "harness.pytest_plugin", *suite_args[1:]).stash[SESSION_KEY].options.config
    assert read_back == config


def test_an_unknown_pair_is_refused_in_one_line_before_the_suites_run(pytester: pytest.Pytester) -> None:
    result = pytester.run(sys.executable, "-m", "harness", "audit", "--pairs", "nope", "--run-id", "x",
                          "--reports-dir", str(pytester.path / "r"))
    assert result.ret == 2 and result.stdout.str() == ""
    assert result.stderr.lines == [result.stderr.lines[0]]
    result.stderr.fnmatch_lines(["error: --pairs: unknown nope; known pairs: deepseek-math, *"])
    assert not (pytester.path / "r" / "x").exists()


def _fake_suites(monkeypatch, *, code: int = 1, errors: int = 0, selected: int | None = None,
                 written_as: str | None = None):
    """Replace the suite run of `audit` by one that writes a report of 3 cells, `errors` of them
    errored, as run `written_as` (default: the run id it was given); returns pytest's exit code."""
    import harness.pytest_plugin as plugin
    from harness.audit.verdicts import CellResult
    from harness.report import ClaimsRun, write_reports

    def run(argv: list[str]) -> int:
        run_id, reports = argv[argv.index("--run-id") + 1], Path(argv[argv.index("--reports-dir") + 1])
        if code != 5:
            cells = [CellResult("C1", "intensity", f"C1-intensity-p-d-a0{i}0", "SUPPORTED" if i >= errors else "INVALID",
                                "r", "error in call: KeyError: 'x'" if i < errors else "",
                                extra={"error": {"type": "KeyError"}} if i < errors else {}) for i in range(3)]
            shown = written_as or run_id
            write_reports(ClaimsRun(shown, cells, {"run_id": shown, "selected_cells": selected or 3}), reports / run_id)
        return code

    monkeypatch.setattr(plugin, "run_suites", run)


def _audit(tmp_path, *extra: str) -> int:
    from harness.cli import main

    return main(["audit", "--reports-dir", str(tmp_path / "reports"), "--alphas", "0.1", *extra])


def test_audit_prints_this_runs_report_and_exits_0(tmp_path, monkeypatch, capsys) -> None:
    _fake_suites(monkeypatch)
    assert _audit(tmp_path, "--run-id", "now") == 0
    out = capsys.readouterr().out
    assert "3 cells of 3 selected (3 SUPPORTED)" in out and f"report: {tmp_path / 'reports' / 'now' / 'claims.html'}" in out


def test_audit_exits_1_when_a_cell_errored_or_is_missing(tmp_path, monkeypatch, capsys) -> None:
    _fake_suites(monkeypatch, errors=1)
    assert _audit(tmp_path, "--run-id", "e1") == 1
    assert "audit: 1 cell(s) errored (a claim test raised: INVALID, 'error in ...'): C1-intensity-p-d-a000" \
        in capsys.readouterr().err
    _fake_suites(monkeypatch, selected=4)
    assert _audit(tmp_path, "--run-id", "e2") == 1
    assert "1 selected cell(s) missing from the report" in capsys.readouterr().err


def test_audit_refuses_an_old_or_foreign_report(tmp_path, monkeypatch, capsys) -> None:
    _fake_suites(monkeypatch)
    assert _audit(tmp_path, "--run-id", "r1") == 0
    capsys.readouterr()
    assert _audit(tmp_path, "--run-id", "r1", "-k", "nothing") == 2
    assert "--run-id r1: " in capsys.readouterr().err           # refused before anything runs
    _fake_suites(monkeypatch, code=5)
    assert _audit(tmp_path, "--run-id", "r1", "-k", "nothing", "--overwrite") == 2
    assert "-k 'nothing' selected no claim test, so there is no report" in capsys.readouterr().err
    _fake_suites(monkeypatch, written_as="someone-else")
    assert _audit(tmp_path, "--run-id", "r2") == 2
    assert "is not this run's report (run id 'someone-else', expected 'r2')" in capsys.readouterr().err


def test_audit_default_run_ids_are_distinct(tmp_path, monkeypatch, capsys) -> None:
    _fake_suites(monkeypatch)
    assert _audit(tmp_path) == 0 and _audit(tmp_path) == 0
    assert len(list((tmp_path / "reports").iterdir())) == 2


def test_weights_default_to_bfloat16_on_cuda_and_float32_on_cpu() -> None:
    from harness.cli.audit import audit_config, pytest_args
    from harness.models.loading import default_dtype

    assert (default_dtype("cuda"), default_dtype("cuda:3"), default_dtype("cpu")) == ("bfloat16", "bfloat16", "float32")
    args = _audit_args("--device", "cuda")
    argv = pytest_args(args, "r", audit_config(args, []))
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    args = _audit_args("--device", "cuda", "--dtype", "float32")
    argv = pytest_args(args, "r", audit_config(args, []))
    assert argv[argv.index("--dtype") + 1] == "float32"


@pytest.mark.parametrize("axes, message", [
    ({"pairs": ("smollm2-grpo", "smollm2-grpo")}, "--pairs: 'smollm2-grpo' is given twice"),             # u39
    ({"datasets": ("sums.jsonl", "sums.jsonl")}, "--datasets: 'sums.jsonl' is given twice"),             # u40
    ({"pairs": ("tiny-rl", "tiny.rl")}, "--pairs: 'tiny.rl' and 'tiny-rl' share the cell-id part 'tiny_rl'"),  # u17
    ({"datasets": ("a-b.jsonl", "a_b.jsonl")}, "'a_b.jsonl' and 'a-b.jsonl' share the cell-id part 'a_b_jsonl'"),  # u16
    ({"metrics": ("intensity", "intensity")}, "--metrics: 'intensity' is given twice"),
])
def test_repeated_or_colliding_grid_names_are_refused_up_front(axes, message) -> None:
    """A repeat would count its cells twice in Holm's family; a collision would overwrite cells."""
    from harness.audit.grid import RunGrid
    from harness.models.registry import load_registry

    with pytest.raises(UserError, match=re.escape(message)):
        RunGrid.build(load_registry(None), **axes)


@pytest.mark.slow
def test_vary_runs_the_audit_once_per_value_on_the_tiny_pairs(tmp_path: Path) -> None:
    """`audit --vary` end to end: one report per value of a setting and of the token mode (a grid axis),
    each run with its value, and the sensitivity table over them. The audit runs in a fresh interpreter,
    as a user runs it (in this process its suite module would shadow pytester's `test_claims`)."""
    import tiny_pairs

    def main(argv: list[str]) -> int:
        env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(SUITES.parent)}
        return subprocess.run([sys.executable, "-m", "harness", *argv], env=env, cwd=tmp_path).returncode

    tiny_pairs.write_registry(tmp_path / "pairs.toml")
    tiny_pairs.write_dataset(tmp_path / "sums.jsonl")
    common = ["audit", "--registry", str(tmp_path / "pairs.toml"), "--pairs", "tiny-rl", "--datasets",
              str(tmp_path / "sums.jsonl"), "--alphas", "0.6", "--questions", "120", "--fidelity-edges", "6",
              "--fidelity-samples", "10", "--set", "grader=lenient", "-k", "C1", "--no-progress",
              "--reports-dir", str(tmp_path / "r"), "--threads", "1"]
    assert main([*common, "--run-id", "m", "--vary", "token_mode=own,shared-base"]) == 0
    assert main([*common, "--run-id", "s", "--vary", "stats.sesoi_rel=0.05,0.5"]) == 0
    for run, key, values in (("m", "token_mode", ("own", "shared-base")), ("s", "stats.sesoi_rel", ("0.05", "0.5"))):
        for value in values:
            cells = json.loads((tmp_path / "r" / f"{run}-{key}-{value}" / "claims.json").read_text())["cells"]
            assert len(cells) == 1
            if key == "token_mode":
                assert cells[0]["token_mode"] == value
            else:
                assert cells[0]["extra"]["stats_config"]["sesoi_rel"] == float(value)
        table = (tmp_path / "r" / f"{run}-sensitivity-{key}.md").read_text()
        assert all(value in table for value in values)


def test_a_grid_without_a_dataset_is_refused_naming_the_pairs() -> None:
    """Finding u20: a registry pair with datasets = [] and no --datasets ended in a pytest collection error."""
    from types import SimpleNamespace

    from harness.audit.grid import RunGrid

    registry = {"p": SimpleNamespace(name="p", datasets=(), bundled=True, base="x", algorithm_kind="online-rl")}
    with pytest.raises(UserError, match="--pairs p: no dataset to audit; give --datasets"):
        RunGrid.build(registry, pairs=("p",))


@pytest.mark.slow
def test_token_mode_reference_runs_on_a_bundled_pair(tmp_path: Path) -> None:
    """`audit --token-mode reference` on SmolLM2 GRPO (answers from the shipped fixtures): the loss reads
    the bundled task's reference solution (its worked solution), and the cell gets a verdict."""
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(SUITES.parent)}
    argv = ["audit", "--pairs", "smollm2-grpo", "--datasets", "chain_sum_2d", "--token-mode", "reference", "-k", "C1",
            "--questions", "40", "--alphas", "0.3", "--no-progress", "--threads", "1", "--run-id", "ref",
            "--reports-dir", str(tmp_path / "r")]
    done = subprocess.run([sys.executable, "-m", "harness", *argv], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    [cell] = json.loads((tmp_path / "r" / "ref" / "claims.json").read_text())["cells"]
    assert cell["token_mode"] == "reference" and cell["verdict"] != "INVALID" and cell["n"] >= 3, cell["reason"]


@pytest.mark.parametrize("dtype, setting, effective", [("float32", "1e-4", 1e-4), ("float32", "0", 0.0),
                                                       ("bfloat16", "1e-4", 1e-2), ("float16", "1e-4", 1e-3),
                                                       ("bfloat16", "0.05", 0.05)])
def test_ties_follow_the_dtype_the_scores_were_computed_in(dtype, setting, effective) -> None:
    """A bfloat16 run's metrics differ by ~1e-2 from rounding alone: its tie tolerance is at least that,
    whatever the setting; a larger setting is kept, and float32 keeps the setting."""
    config = AuditConfig(dtype=dtype).with_settings({"stats.tie_rel_tol": setting})
    assert config.stats.tie_rel_tol == effective and config.as_dict()["stats"]["tie_rel_tol"] == effective
