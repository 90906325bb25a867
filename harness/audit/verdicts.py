"""Verdicts: the one `Verdict` type, the family decision rule (Holm within a claim's family), and
the schema of one `CellResult` per (claim, pair, dataset, alpha, metric, token mode) cell.

This is the record every claim test produces and every report reads. `to_dict`/`from_dict`
round-trip through JSON; `CLAIMS_SCHEMA_VERSION` changes whenever a field changes meaning.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Sequence

import numpy as np

from harness.analysis.stats.multiplicity import holm
from harness.errors import UserError

CLAIMS_SCHEMA_VERSION = 3   # 2: fidelity is a record (spearman, ci, status, ...), robustness added; 3: paper


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
    """alpha (a fraction) in hundredths: 0.1 -> 'a010', 0.03 -> 'a003'; None -> 'a-'.

    An alpha that is not a whole number of hundredths keeps its exact remaining digits after a 'p':
    0.301 -> 'a030p1', 0.004 -> 'a000p4'. The tag is the shortest decimal that round-trips the float,
    so distinct alphas always get distinct tags.
    """
    if alpha is None:
        return "a-"
    hundredths = (Decimal(repr(float(alpha))) * 100).normalize()
    whole, _, rest = f"{hundredths:f}".partition(".")
    return f"a{int(whole):03d}" + (f"p{rest}" if rest else "")


def cell_id_part(part: Any) -> str:
    """A grid value as it reads in a cell id: non-alphanumerics become '_' (an alpha: its tag)."""
    if isinstance(part, float):
        return alpha_tag(part)
    return re.sub(r"[^A-Za-z0-9]+", "_", str(part)).strip("_")


def make_cell_id(claim_id: str, claim_name: str, *parts: Any, alpha: float | None = None) -> str:
    """Readable, `-k`-friendly id: `C1-intensity-smollm2_grpo-gsm8k-a010`.

    Parts are slugged (non-alphanumerics become '_') and joined by '-'; None parts are dropped.
    """
    pieces = [claim_id, cell_id_part(claim_name), *(cell_id_part(p) for p in parts if p is not None)]
    if alpha is not None:
        pieces.append(alpha_tag(alpha))
    return "-".join(p for p in pieces if p)


@dataclass(frozen=True)
class CellResult:
    """One judged cell. Values are per-question paired statistics unless `extra` says otherwise.

    effect is the effect the cell's test decides on (its rule says which: the mean of post - base
    over the n paired questions for C1, C3, C7; the pooled difference for C2; a difference of
    relative changes for C4 and C5; the share of rising experiments minus the claimed rate for C6;
    the accuracy change for C9); ci_low/ci_high bound `effect` (method in ci_method); effect_size is
    Hedges' d_z where the effect is a per-question mean; p_value is the raw one-sided p in the
    claimed direction, p_holm / p_bh the family-adjusted ones.
    fidelity: the method's validity beside the verdict: {spearman, ci: [lo, hi], status (FAITHFUL,
    UNFAITHFUL or UNCERTAIN by where the CI lies against the threshold), n_questions, n_edges,
    sampling, threshold, by_destination, ...} of EAP against exact ablation, or None when not measured.
    robustness: the same claim decided on a more faithful estimate of the edge effects: {estimator,
    verdict, effect, ci, p_value, n, n_edges, ...}, or {applicable: false, reason} where the claim has
    no such version; None when not measured.
    funnel lists the sample counts after each selection stage: [{"stage": str, "n": int}].
    paper: the id of the paper the claim is from (harness/audit/papers/<id>.toml).
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
    fidelity: dict[str, Any] | None = None
    robustness: dict[str, Any] | None = None
    funnel: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    paper: str | None = None

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
        for name, value in data.items():
            kinds, nullable = FIELD_KINDS[name]
            ok = (value is None and nullable) or (isinstance(value, kinds) and not isinstance(value, bool))
            if not ok:
                shown = {numbers.Real: "a number", numbers.Integral: "a whole number"}.get(kinds[0], kinds[0].__name__)
                raise UserError(f"cell {data.get('cell_id', '?')}: field {name} must be {shown}"
                                f"{' or null' if nullable else ''}, got {value!r:.60}")
        return cls(**data)

    def replace(self, **changes: Any) -> CellResult:
        return dataclasses.replace(self, **changes)


# JSON types of each CellResult field as read back from a claims.json: (types, may be null).
_TEXT, _NUMBER = (str,), (numbers.Real,)   # numbers.*: numpy scalars count, as they do in memory
FIELD_KINDS: dict[str, tuple[tuple[type, ...], bool]] = {
    **{name: (_TEXT, False) for name in ("claim_id", "claim_name", "cell_id", "verdict", "rule", "reason")},
    **{name: (_TEXT, True) for name in ("pair", "dataset", "metric", "token_mode", "ci_method", "paper")},
    **{name: (_NUMBER, True) for name in ("alpha", "base_value", "post_value", "effect", "ci_low", "ci_high",
                                          "effect_size", "p_value", "p_holm", "p_bh")},
    "n": ((numbers.Integral,), True), "fidelity": ((dict,), True), "robustness": ((dict,), True), "funnel": ((list,), False),
    "extra": ((dict,), False), "provenance": ((dict,), False),
}


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


# ---------------------------------------------------------------- the family decision rule


@dataclass(frozen=True)
class Decision:
    """A cell's verdict under the family rule, the rule text and why."""

    label: Verdict
    rule: str
    reason: str
    p_adjusted: float
    p_adjusted_opposite: float
    holm_m: int = 1   # one-sided hypotheses Holm corrected over: 2 per usable cell of the family
    equivalent: bool = False   # the effect's interval lies inside the smallest effect of interest
    reachable: bool = True     # the smallest attainable p could pass Holm at this m


CORRECTION = ("Holm over the family's 2m one-sided hypotheses (m usable cells, each tested in the claimed and "
              "in the opposite direction), so that the chance of any SUPPORTED or REFUTED under the global "
              "null is at most the significance level")


@dataclass(frozen=True)
class Margin:
    """The smallest effect of interest of one cell, in the units of its tested effect.

    effect, ci_low, ci_high: the tested effect (post - base unless stated) and its interval;
    direction: +1 if the claim is a rise, -1 a fall; size: the margin (>= 0); text: how it was set,
    e.g. "5% of |base| = 0.0012".
    """

    effect: float
    ci_low: float
    ci_high: float
    direction: int
    size: float
    text: str

    def oriented(self) -> tuple[float, float]:
        """The interval in the claimed direction (positive = toward the claim), low first."""
        a, b = self.direction * self.ci_low, self.direction * self.ci_high
        return min(a, b), max(a, b)


def verdict_rule(significance: float, min_n: int, sesoi: str | None = None) -> str:
    margin = (f" and the {sesoi} excludes the smallest effect of interest (lies wholly beyond it, in the tested "
              f"direction)" if sesoi else "")
    no_change = (f"; no meaningful change (INCONCLUSIVE, equivalent) when the {sesoi} lies wholly inside it"
                 if sesoi else "")
    return (
        f"SUPPORTED if the one-sided p-value in the claimed direction, Holm-adjusted, is < {significance}{margin}; "
        f"REFUTED if the same holds in the opposite direction; the correction is {CORRECTION}; INVALID if n < "
        f"{min_n}, a value is NaN or a stage failed; the verdict is on the EAP scores whatever their fidelity, "
        f"which is reported beside it; otherwise INCONCLUSIVE (no change, every difference a tie, is "
        f"INCONCLUSIVE with that reason; so is a cell whose smallest attainable p cannot pass Holm){no_change}"
    )


def decide_verdict(
    test: Any,
    p_adjusted: float,
    p_adjusted_opposite: float,
    *,
    significance: float = 0.05,
    min_n: int = 10,
    holm_m: int = 1,
    margin: Margin | None = None,
    rule: str | None = None,
) -> Decision:
    """Apply the pre-registered rule to one cell (pure function of its arguments).

    `test` provides n, p_claimed, p_opposite, invalid_reason and optionally no_change and min_p (the
    smallest one-sided p its design can give). With a `margin`, significance alone does not decide:
    the interval must also lie beyond the smallest effect of interest.
    """
    rule = rule or verdict_rule(significance, min_n, "interval" if margin else None)

    def make(label: Verdict, reason: str, **flags: bool) -> Decision:
        return Decision(label, rule, reason, float(p_adjusted), float(p_adjusted_opposite), holm_m, **flags)

    if test.invalid_reason is not None:
        return make(Verdict.INVALID, test.invalid_reason)
    if test.n < min_n:
        return make(Verdict.INVALID, f"n = {test.n} < {min_n}")
    if not (np.isfinite(p_adjusted) and np.isfinite(p_adjusted_opposite)):
        return make(Verdict.INVALID, "a p-value is NaN")
    if getattr(test, "no_change", False):
        return make(Verdict.INCONCLUSIVE, "no change: every paired difference is a tie (zero within numerical "
                    "precision)", equivalent=True)
    min_p = getattr(test, "min_p", None)
    if min_p is not None and min_p * holm_m >= significance:
        return make(Verdict.INCONCLUSIVE, f"unreachable on this grid: the smallest attainable one-sided p is "
                    f"{min_p:.3g}, and Holm over m = {holm_m} hypotheses needs p < {significance}/{holm_m} = "
                    f"{significance / holm_m:.3g}", reachable=False)
    within = ""
    if margin is not None:
        low, high = margin.oriented()
        interval = f"interval [{margin.ci_low:.3g}, {margin.ci_high:.3g}]"
        if not (np.isfinite(low) and np.isfinite(high)):
            within = f"; its {interval} is undefined"
            low, high = -math.inf, math.inf
        if -margin.size < low and high < margin.size:
            return make(Verdict.INCONCLUSIVE, f"no meaningful change: the {interval} lies inside +-{margin.text}",
                        equivalent=True)
    if p_adjusted < significance:
        if margin is None or low > margin.size:
            return make(Verdict.SUPPORTED, f"claimed direction p_holm = {p_adjusted:.3g} < {significance}"
                        + (f", {interval} beyond {margin.text}" if margin else ""))
        return make(Verdict.INCONCLUSIVE, f"claimed direction p_holm = {p_adjusted:.3g} < {significance}, but the "
                    f"{interval} reaches inside the smallest effect of interest {margin.text}{within}")
    if p_adjusted_opposite < significance:
        if margin is None or high < -margin.size:
            return make(Verdict.REFUTED, f"opposite direction p_holm = {p_adjusted_opposite:.3g} < {significance}"
                        + (f", {interval} beyond -{margin.text}" if margin else ""))
        return make(Verdict.INCONCLUSIVE, f"opposite direction p_holm = {p_adjusted_opposite:.3g} < {significance}, but "
                    f"the {interval} reaches inside the smallest effect of interest {margin.text}{within}")
    return make(
        Verdict.INCONCLUSIVE,
        f"p_holm = {p_adjusted:.3g} (claimed), {p_adjusted_opposite:.3g} (opposite), both >= {significance}",
    )


def family_verdicts(
    tests: Sequence[Any],
    *,
    significance: float = 0.05,
    min_n: int = 10,
    margins: Sequence[Margin | None] | None = None,
    rule: str | None = None,
) -> list[Decision]:
    """Holm-adjust one claim's family over both directions of every usable cell (CORRECTION) and
    decide every cell (with its smallest effect of interest where `margins` gives one)."""
    margins = [None] * len(tests) if margins is None else list(margins)
    if len(margins) != len(tests):
        raise UserError(f"margins ({len(margins)}) need one entry per test ({len(tests)})")
    usable = [t.invalid_reason is None and t.n >= min_n for t in tests]
    raw = ([t.p_claimed if u else math.nan for t, u in zip(tests, usable)]
           + [t.p_opposite if u else math.nan for t, u in zip(tests, usable)])
    both = holm(raw)
    claimed, opposite = both[:len(tests)], both[len(tests):]
    m = int(np.isfinite(raw).sum())
    return [
        decide_verdict(t, pc, po, significance=significance, min_n=min_n, holm_m=m, margin=mg, rule=rule)
        for t, pc, po, mg in zip(tests, claimed, opposite, margins)
    ]
