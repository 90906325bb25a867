"""One configuration: every verdict-changing setting is reachable by `--set KEY=VALUE`, converted to its
field's type or refused with a specific message; a sensitivity run's table marks the cells whose
verdict moves with the setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.analysis.metrics import RangePolicy
from harness.audit.config import AuditConfig, parse_settings, settable_keys
from harness.audit.verdicts import CellResult, Verdict
from harness.errors import UserError
from harness.report.compare import sensitivity_table
from harness.report.document import ClaimsRun


def test_settings_convert_to_each_fields_type() -> None:
    config = AuditConfig().with_settings(parse_settings([
        "stats.sesoi_rel=0.1", "metrics.range_policy=joint", "metrics.bins_band=10,20",
        "metrics.include_structural_zeros=false", "decoding.mode=sample", "decoding.temperature=0.7",
        "decoding.max_new_tokens=none", "grader=lenient", "selection.short_answers=drop", "stats.n_perm=500"]))
    assert config.stats.sesoi_rel == 0.1 and config.stats.n_perm == 500
    assert config.metrics.range_policy is RangePolicy.JOINT and config.metrics.bins_band == (10, 20)
    assert config.metrics.include_structural_zeros is False
    assert (config.decoding.mode, config.decoding.temperature, config.decoding.max_new_tokens) == ("sample", 0.7, None)
    assert (config.grader, config.selection.short_answers) == ("lenient", "drop")
    recorded = config.as_dict()
    assert recorded["stats"]["sesoi_rel"] == 0.1 and recorded["metrics"]["range_policy"] == "joint"


@pytest.mark.parametrize("old, new", [("stats.alpha", "stats.significance"), ("decoding", "decoding.mode"),
                                      ("n_select", "selection.n"), ("generation_batch_size", "decoding.batch_size")])
def test_an_old_key_is_refused_with_the_key_to_use_now(old: str, new: str) -> None:
    """`alpha` is the paper's truncation fraction only; selection and decoding settings are nested."""
    with pytest.raises(UserError, match=f"--set {old}: this setting is now {new}"):
        AuditConfig().with_settings({old: "0.1"})
    assert "stats.significance" in settable_keys() and "stats.equivalence_level" in settable_keys()


def test_every_field_is_settable() -> None:
    keys = settable_keys()
    for key in ("stats.tie_rel_tol", "stats.claimed_rate", "metrics.eps", "layout", "positions", "selection.variant",
                "eap_batch_size", "decoding.batch_size", "decoding.top_p", "selection.delta"):
        assert key in keys


@pytest.mark.parametrize("item, message", [
    ("stats.foo=1", "unknown setting"),
    ("bins=10", "unknown setting"),
    ("stats.significance=abc", "not a valid float"),
    ("metrics.range_policy=sideways", "not a valid RangePolicy"),
    ("metrics.include_structural_zeros=maybe", "not a valid bool"),
    ("stats.significance=1.5", "must lie in (0, 1)"),
    ("layout=heads", "layout must be paper or block"),
    ("decoding.mode=beam", "decoding mode must be greedy or sample"),
    ("decoding.max_new_tokens=0", "decoding.max_new_tokens must be at least 1 or none"),
    ("selection.beta=2", "need 0 <= beta <= gamma"),
    ("stats.equivalence_level=0.6", "stats.equivalence_level must lie in (0, 0.5)"),
])
def test_bad_settings_get_a_specific_error(item: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AuditConfig().with_settings(parse_settings([item]))


def test_a_setting_without_a_value_is_refused() -> None:
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        parse_settings(["stats.significance"])


def _cell(cell_id: str, verdict: str, effect: float) -> CellResult:
    return CellResult("C1", "intensity", cell_id, Verdict.parse(verdict), "rule", effect=effect)


def test_sensitivity_table_marks_the_cells_whose_verdict_moves() -> None:
    runs = [("20", ClaimsRun("a", [_cell("C1-x", "SUPPORTED", 0.3), _cell("C1-y", "INCONCLUSIVE", 0.01)], {})),
            ("500", ClaimsRun("b", [_cell("C1-x", "SUPPORTED", 0.31), _cell("C1-y", "REFUTED", -0.2)], {}))]
    table = sensitivity_table("metrics.bins", runs)
    assert "the verdict changes with `metrics.bins` in 1 of them" in table
    row_x = next(line for line in table.splitlines() if "`C1-x`" in line)
    row_y = next(line for line in table.splitlines() if "`C1-y`" in line)
    assert "**changes**" not in row_x and "SUPPORTED (0.3)" in row_x
    assert "INCONCLUSIVE (0.01) | REFUTED (-0.2) | **changes**" in row_y


@pytest.mark.parametrize("args, message", [
    (["--vary", "stats.sesoi_rel=0.1"], "at least two values"),
    (["--vary", "stats.nope=1,2"], "unknown setting"),
    (["--set", "stats.significance=2"], "must lie in (0, 1)"),
])
def test_audit_refuses_bad_settings_before_any_work(args: list[str], message: str) -> None:
    run = subprocess.run([sys.executable, "-m", "harness", "audit", *args], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
