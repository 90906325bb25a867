"""Compare runs (baseline check, diff) and merge result shards into one run."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from harness.audit.verdicts import CellResult
from harness.errors import UserError
from harness.report.document import ClaimsRun


@dataclass(frozen=True)
class DriftLimit:
    """`--claims-compare-fail=effect:X%`: fail when |effect − baseline| exceeds X% of |baseline|."""

    field: str
    percent: float

    @classmethod
    def parse(cls, text: str) -> DriftLimit:
        match = re.fullmatch(r"\s*(effect|effect_size):\s*([0-9]+(?:\.[0-9]*)?)\s*%\s*", text or "")
        if not match:
            raise UserError(f"--claims-compare-fail={text!r}: expected effect:X% or effect_size:X% "
                            "(for example effect:10%)")
        return cls(match.group(1), float(match.group(2)))

    def check(self, cell: CellResult, baseline: CellResult) -> str | None:
        """A message when the cell's value drifted beyond the limit, else None."""
        now, before = getattr(cell, self.field), getattr(baseline, self.field)
        if now is None or before is None:
            return None
        drift = abs(now - before)
        scale = abs(before)
        if (scale == 0 and drift > 0) or (scale > 0 and 100 * drift / scale > self.percent):
            shown = "inf" if scale == 0 else f"{100 * drift / scale:.1f}%"
            return (f"{self.field} drifted {shown} from the baseline ({before:.4g} -> {now:.4g}), "
                    f"limit {self.percent:g}%")
        return None


def baseline_problems(cell: CellResult, baseline: CellResult | None, limits: list[DriftLimit]) -> list[str]:
    """Why `cell` regresses against its stored baseline cell (empty: it does not)."""
    if baseline is None:
        return []
    problems = []
    if cell.verdict is not baseline.verdict:
        problems.append(f"verdict changed from the baseline: {baseline.verdict.value} -> {cell.verdict.value} "
                        f"(cause: {change_cause(baseline, cell)})")
    problems += [msg for limit in limits if (msg := limit.check(cell, baseline))]
    return problems


def diff_runs(old: ClaimsRun, new: ClaimsRun) -> list[str]:
    """Human-readable changes from old to new: verdicts, effects, added and removed cells."""
    before = {c.cell_id: c for c in old.cells}
    after = {c.cell_id: c for c in new.cells}
    lines = []
    for cell_id in sorted(before.keys() | after.keys()):
        a, b = before.get(cell_id), after.get(cell_id)
        if a is None:
            lines.append(f"+ {cell_id}: {b.verdict.value} (new)")
        elif b is None:
            lines.append(f"- {cell_id}: {a.verdict.value} (removed)")
        elif a.verdict is not b.verdict:
            lines.append(f"~ {cell_id}: {a.verdict.value} -> {b.verdict.value}{_effect_change(a, b)} "
                         f"(cause: {change_cause(a, b)})")
        elif a.effect != b.effect or a.p_value != b.p_value or a.n != b.n:
            lines.append(f"  {cell_id}: {a.verdict.value}{_effect_change(a, b)}"
                         f"{'' if a.n == b.n else f'; n {a.n} -> {b.n}'}")
    return lines


def change_cause(before: CellResult, after: CellResult) -> str:
    """Why a cell's verdict moved, in the order that explains it: the family it was corrected with when
    its own numbers did not move (Holm's m, its members); else the settings it was judged under
    (provenance.audit_config, keys both records have); else the code (provenance.code_version: its
    rules or statistics); else its family; else its own data (n, effect, p)."""
    data = [(k, getattr(before, k), getattr(after, k)) for k in ("n", "effect", "p_value", "ci_low", "ci_high")
            if getattr(before, k) != getattr(after, k)]
    family = [(k, before.extra.get(k), after.extra.get(k)) for k in ("holm_m", "family_size", "family_unusable",
                                                                     "family_hash")
              if before.extra.get(k) != after.extra.get(k)]
    if not data and family:   # the same numbers judged in another family: Holm decided, whatever else changed
        return "its correction family (the cell's own numbers are unchanged): " + ", ".join(
            f"{k} {a} -> {b}" for k, a, b in family[:2])
    changed = _changed(before.provenance.get("audit_config") or {}, after.provenance.get("audit_config") or {})
    settings = [c for c in changed if _ABSENT not in c[1:]]
    if settings:
        shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in settings[:3])
        return f"settings: {shown}" + (f" and {len(settings) - 3} more" if len(settings) > 3 else "")
    code = (before.provenance.get("code_version"), after.provenance.get("code_version"))
    if None not in code and code[0] != code[1]:   # a setting that exists on one side only is the code's too
        added = [k for k, a, b in changed if a is _ABSENT]
        return (f"the code: {code[0]} -> {code[1]}, under the same settings"
                + (f" (settings it added: {', '.join(added[:3])})" if added else ""))
    if family:
        return "its correction family: " + ", ".join(f"{k} {a} -> {b}" for k, a, b in family[:2])
    return "the data: " + (", ".join(f"{k} {_num(a) if isinstance(a, float) else a} -> "
                                     f"{_num(b) if isinstance(b, float) else b}" for k, a, b in data[:3])
                           or "the same numbers under another rule")


_ABSENT = "<absent>"   # a setting the other record's release did not have


def _changed(a: dict, b: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, before, after) of every setting that differs between two audit_config records; a key
    only one of them has is _ABSENT on the other side."""
    out = []
    for key in sorted(a.keys() | b.keys()):
        x, y = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _changed(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append((f"{prefix}{key}", x, y))
    return out


def _effect_change(a: CellResult, b: CellResult) -> str:
    if a.effect == b.effect:
        return ""
    text = f"; effect {_num(a.effect)} -> {_num(b.effect)}"
    if a.effect not in (None, 0) and b.effect is not None:
        text += f" ({100 * (b.effect - a.effect) / abs(a.effect):+.1f}%)"
    return text


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def merge_runs(shards: list[tuple[str, ClaimsRun]], run_id: str) -> ClaimsRun:
    """One run from shards (name, run). The same cell in two shards must agree on everything but
    provenance; a conflict is a UserError naming the cell and both shards."""
    if not shards:
        raise UserError("merge needs at least one shard")
    _check_one_run(shards)
    cells: dict[str, tuple[str, CellResult]] = {}
    figures = {}
    for name, run in shards:
        for cell in run.cells:
            seen = cells.get(cell.cell_id)
            if seen is None:
                cells[cell.cell_id] = (name, cell)
            elif _comparable(seen[1]) != _comparable(cell):
                raise UserError(f"cell {cell.cell_id} differs between shards {seen[0]} and {name} "
                                f"({seen[1].verdict.value} vs {cell.verdict.value}); rerun it or drop one shard")
        for fig in run.figures:
            if fig.name in figures and figures[fig.name].png != fig.png:
                raise UserError(f"figure {fig.name} differs between shards; rename it or drop one shard")
            figures.setdefault(fig.name, fig)
    provenance = {"merged_from": [{"shard": name, "run_id": run.run_id, "created": run.created,
                                   "provenance": run.provenance} for name, run in shards]}
    return ClaimsRun(run_id, [cell for _, cell in cells.values()], provenance, list(figures.values()))


def _check_one_run(shards: list[tuple[str, ClaimsRun]]) -> None:
    """Shards of one run share its grid (the run's `grid` provenance) and its settings (each cell's
    `config_hash`); shards of different runs are a UserError naming the first difference (r11)."""
    first_name, first = shards[0]
    for name, run in shards[1:]:
        grids = first.provenance.get("grid"), run.provenance.get("grid")
        if grids[0] != grids[1]:
            raise UserError(f"shards {first_name} and {name} were run on different grids ({grids[0]} vs "
                            f"{grids[1]}); merge the shards of one run")
    hashes: dict[str, str] = {}
    for name, run in shards:
        for cell in run.cells:
            config = cell.provenance.get("config_hash")
            if config is not None:
                hashes.setdefault(config, name)
    if len(hashes) > 1:
        (a, first_shard), (b, other) = list(hashes.items())[:2]
        raise UserError(f"shards {first_shard} and {other} were run with different settings (config_hash {a} vs "
                        f"{b}: compare their provenance.audit_config); merge the shards of one run")


def _comparable(cell: CellResult) -> dict:
    data = cell.to_dict()
    data.pop("provenance")
    return data


def sensitivity_table(setting: str, runs: list[tuple[str, ClaimsRun]]) -> str:
    """Markdown table of every cell's verdict (and effect) under each value of one setting; cells whose
    verdict differs between values are marked, and counted in the heading line."""
    if not runs:
        raise UserError("a sensitivity table needs at least one run")
    by_value = [(value, {c.cell_id: c for c in run.cells}) for value, run in runs]
    ids = sorted({cell_id for _, cells in by_value for cell_id in cells})
    rows, changed = [], 0
    for cell_id in ids:
        found = [cells.get(cell_id) for _, cells in by_value]
        verdicts = {c.verdict.value for c in found if c is not None}
        changed += len(verdicts) > 1
        entries = [f"{c.verdict.value} ({_num(c.effect)})" if c is not None else "–" for c in found]
        rows.append(f"| `{cell_id}` | " + " | ".join(entries) + f" | {'**changes**' if len(verdicts) > 1 else ''} |")
    header = "| cell | " + " | ".join(f"{setting}={value}" for value, _ in runs) + " | |"
    rule = "|---|" + "---|" * len(runs) + "---|"
    return "\n".join([f"# Sensitivity to `{setting}`", "",
                      f"{len(ids)} cells; the verdict changes with `{setting}` in {changed} of them. "
                      "Each entry: verdict (effect).", "", header, rule, *rows, ""])


# What a baseline drops of the run's provenance: where it ran (its folders, command line, cache), not what it found
MACHINE_PROVENANCE = ("argv", "cache", "baseline")
# What a baseline keeps of a cell's `extra`: what the comparison and change_cause read
BASELINE_EXTRA = ("holm_m", "family_size", "family_unusable", "family_hash", "family_dependent", "reachable",
                  "equivalent", "outcome", "error")


def baseline_of(run: ClaimsRun) -> ClaimsRun:
    """`run` as a committed baseline keeps it: every cell's verdict, reason, numbers, the settings it was
    judged under and its family, without the per-edge, per-question and per-experiment detail (fidelity
    by destination, causal curves, answer sources, figures) that makes a claims.json megabytes."""
    cells = [dataclasses.replace(c, extra={k: c.extra[k] for k in BASELINE_EXTRA if k in (c.extra or {})},
                                 provenance={k: v for k, v in (c.provenance or {}).items()
                                             if k in ("audit_config", "code_version")})
             for c in run.cells]
    provenance = {k: v for k, v in run.provenance.items() if k not in MACHINE_PROVENANCE}
    return ClaimsRun(run.run_id, cells, provenance=provenance, figures=[], created=run.created)
