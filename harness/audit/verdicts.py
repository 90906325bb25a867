"""Verdict schema: one `CellResult` per (claim, pair, dataset, alpha, metric, token mode) cell.

This is the record every claim test produces and every report reads. `to_dict`/`from_dict`
round-trip through JSON; `CLAIMS_SCHEMA_VERSION` changes whenever a field changes meaning.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UserError

CLAIMS_SCHEMA_VERSION = 1


class Verdict(str, enum.Enum):
    """Outcome of one cell. pytest: SUPPORTED pass, REFUTED fail, INCONCLUSIVE fail, INVALID error."""

    SUPPORTED = "SUPPORTED"
    REFUTED = "REFUTED"
    INCONCLUSIVE = "INCONCLUSIVE"
    INVALID = "INVALID"

    @classmethod
    def parse(cls, value: Any) -> Verdict:
        """A Verdict from its name, any enum whose value is the name, or a Verdict."""
        try:
            return cls(str(value.value if isinstance(value, enum.Enum) else value).upper())
        except ValueError:
            names = ", ".join(v.value for v in cls)
            raise UserError(f"unknown verdict {value!r}; expected one of {names}") from None

    @property
    def pytest_outcome(self) -> str:
        """'passed', 'failed' or 'error' (INVALID: the cell could not be judged)."""
        return {"SUPPORTED": "passed", "INVALID": "error"}.get(self.value, "failed")


def alpha_tag(alpha: float | None) -> str:
    """0.1 -> 'a010', 0.03 -> 'a003' (hundredths, three digits); None -> 'a-'."""
    if alpha is None:
        return "a-"
    return f"a{round(alpha * 100):03d}"


def _slug(part: Any) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(part)).strip("_")


def make_cell_id(claim_id: str, claim_name: str, *parts: Any, alpha: float | None = None) -> str:
    """Readable, `-k`-friendly id: `C1-intensity-smollm2_grpo-gsm8k-a010`.

    Parts are slugged (non-alphanumerics become '_') and joined by '-'; None parts are dropped.
    """
    pieces = [claim_id, _slug(claim_name), *(_slug(p) for p in parts if p is not None)]
    if alpha is not None:
        pieces.append(alpha_tag(alpha))
    return "-".join(p for p in pieces if p)


@dataclass(frozen=True)
class CellResult:
    """One judged cell. Values are per-question paired statistics unless `extra` says otherwise.

    effect = mean(post - base) over the n paired questions; ci_low/ci_high bound `effect`
    (method in ci_method); effect_size is Hedges' d_z; p_value is the raw one-sided p in the
    claimed direction, p_holm / p_bh the family-adjusted ones. fidelity is the Spearman
    correlation between EAP scores and exact ablation (None when not measured).
    funnel lists the sample counts after each selection stage: [{"stage": str, "n": int}].
    """

    claim_id: str
    claim_name: str
    cell_id: str
    verdict: Verdict
    rule: str
    reason: str = ""
    pair: str | None = None
    dataset: str | None = None
    alpha: float | None = None
    metric: str | None = None
    token_mode: str | None = None
    n: int | None = None
    base_value: float | None = None
    post_value: float | None = None
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = None
    effect_size: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    p_bh: float | None = None
    fidelity: float | None = None
    fidelity_threshold: float | None = None
    funnel: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict.parse(self.verdict))
        for name in ("claim_id", "cell_id", "rule"):
            if not getattr(self, name):
                raise UserError(f"cell result needs a non-empty {name}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN/inf floats become None (JSON has no NaN)."""
        out = dataclasses.asdict(self)
        out["verdict"] = self.verdict.value
        return {k: _json_safe(v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        """Inverse of `to_dict`; unknown keys and missing required keys are a UserError."""
        if not isinstance(data, dict):
            raise UserError(f"cell result must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"cell {data.get('cell_id', '?')}: unknown field(s) {', '.join(unknown)}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise UserError(f"cell {data.get('cell_id', '?')}: missing field(s) {', '.join(missing)}")
        return cls(**data)

    def replace(self, **changes: Any) -> CellResult:
        return dataclasses.replace(self, **changes)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value
