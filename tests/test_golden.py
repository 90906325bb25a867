"""The golden audit (tests/golden/run_golden.py) gives the stored claims.json: every verdict, p,
effect, interval, funnel and provenance field, floats to 1e-6 relative."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))

import run_golden  # noqa: E402


def differences(expected: Any, actual: Any, where: str = "$") -> list[str]:
    """Paths at which `actual` differs from `expected` (floats within 1e-6 relative, 1e-9 absolute)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}.{k}: missing" for k in expected.keys() - actual.keys()]
        out += [f"{where}.{k}: unexpected" for k in actual.keys() - expected.keys()]
        for k in expected.keys() & actual.keys():
            out += differences(expected[k], actual[k], f"{where}.{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: length {len(actual)} != {len(expected)}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, f"{where}[{i}]")]
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        if math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-9):
            return []
    elif expected == actual and type(expected) is type(actual):
        return []
    return [f"{where}: {actual!r} != {expected!r}"]


def test_comparison_sees_a_changed_verdict_and_a_moved_float() -> None:
    golden = json.loads(run_golden.GOLDEN.read_text())
    changed = json.loads(json.dumps(golden))
    changed["cells"][0]["verdict"] = "SUPPORTED" if golden["cells"][0]["verdict"] != "SUPPORTED" else "REFUTED"
    changed["cells"][1]["n"] = golden["cells"][1]["n"] + 1
    assert differences(golden, golden) == []
    assert sorted(differences(golden, changed)) == sorted(["$.cells[0].verdict: " + repr(changed["cells"][0]["verdict"])
                                                           + " != " + repr(golden["cells"][0]["verdict"]),
                                                           f"$.cells[1].n: {changed['cells'][1]['n']} != {golden['cells'][1]['n']}"])


def test_the_golden_audit_reproduces_the_stored_claims(tmp_path: Path) -> None:
    golden = json.loads(run_golden.GOLDEN.read_text())
    actual = run_golden.run_audit(tmp_path)
    found = differences(golden, actual)
    assert not found, f"{len(found)} fields differ from tests/golden/claims.json:\n" + "\n".join(found[:30])
