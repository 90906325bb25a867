"""The run document: every cell of one run, its figures and the run's provenance.

On disk it is `claims.json` (schema below) with figure PNGs in `figures/` beside it.
  {"schema": "rl-circuit-audit/claims", "schema_version": N, "run_id", "created",
   "provenance": {...}, "claims": [ClaimSpec...], "summary": {...},
   "cells": [CellResult.to_dict()...],
   "figures": [{"name", "file", "caption", "claim_id", "derived"}]}
Derived figures are not read back: writing a run draws them again from its cells.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from harness.audit.algorithm import algorithm_answers, population
from harness.audit.behaviour import edges_and_behaviour, metric_vs_accuracy
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.verdicts import CLAIMS_SCHEMA_VERSION, CellResult, Verdict
from harness.errors import UserError
from harness.report.matrix import control_summary
from harness.versions import library_versions

SCHEMA_NAME = "rl-circuit-audit/claims"
# Figure names and cell ids become file names (figures/<name>.png): one safe path component each.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Figure:
    """One report figure: `name` is its file stem (figures/<name>.png).

    derived: drawn from the cells at write time (so rebuilt, not carried, when runs are merged).
    """

    name: str
    png: bytes = field(repr=False)
    caption: str
    claim_id: str | None = None
    derived: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not SAFE_NAME.fullmatch(self.name):
            raise UserError(f"figure name {self.name!r}: use letters, digits, '.', '_' and '-' only "
                            "(no '/', no leading '.')")


@dataclass
class ClaimsRun:
    run_id: str
    cells: list[CellResult]
    provenance: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def claim_ids(self) -> list[str]:
        """Claim ids present in the run, in catalogue order (unknown ids last, sorted)."""
        present = {cell.claim_id for cell in self.cells} | {f.claim_id for f in self.figures if f.claim_id}
        known = [cid for cid in CLAIMS_BY_ID if cid in present]
        return known + sorted(present - set(known))

    def summary(self) -> dict[str, Any]:
        """Verdict counts overall and per claim; `selected`: the claim tests the run selected (None
        where unknown); `errors`: cells whose test raised (INVALID with `extra.error`)."""
        per_claim: dict[str, Counter] = {}
        for cell in self.cells:
            per_claim.setdefault(cell.claim_id, Counter())[cell.verdict.value] += 1
        total = Counter(cell.verdict.value for cell in self.cells)
        out = {"cells": len(self.cells), "selected": self.provenance.get("selected_cells"),
               "errors": sum(bool((cell.extra or {}).get("error")) for cell in self.cells),
               "verdicts": {v.value: total.get(v.value, 0) for v in Verdict},
               "per_claim": {cid: {v.value: c.get(v.value, 0) for v in Verdict}
                             for cid, c in sorted(per_claim.items())}}
        control = control_summary(self.cells)
        if control:
            out["seed_control"] = control
        if self.provenance.get("off_grid"):
            out["off_grid"] = dict(self.provenance["off_grid"])
        out["algorithm"] = [a.to_dict() for a in algorithm_answers(self.cells)]
        out["population"] = population(self.cells)
        out["metric_vs_accuracy"] = metric_vs_accuracy(self.cells)
        out["edges_and_behaviour"] = edges_and_behaviour(self.cells)
        return out

    def to_document(self, summary: dict[str, Any] | None = None) -> dict[str, Any]:
        """The claims.json document; `summary`: this run's summary() where the caller has it already."""
        claims = [CLAIMS_BY_ID[cid].describe() for cid in self.claim_ids() if cid in CLAIMS_BY_ID]
        return {
            "schema": SCHEMA_NAME,
            "schema_version": CLAIMS_SCHEMA_VERSION,
            "run_id": self.run_id,
            "created": self.created,
            "provenance": self.provenance,
            "claims": claims,
            "summary": summary if summary is not None else self.summary(),
            "cells": [cell.to_dict() for cell in sorted(self.cells, key=lambda c: c.cell_id)],
            "figures": [{"name": f.name, "file": f"figures/{f.name}.png", "caption": f.caption,
                         "claim_id": f.claim_id, "derived": f.derived} for f in self.figures],
        }


def load_claims(path: str | Path) -> ClaimsRun:
    """Read a claims.json (or a folder holding one), its cells and its figures.

    Anything unreadable or not in the schema is a UserError naming the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "claims.json"
    try:
        document = json.loads(path.read_text(), parse_constant=_no_constant)   # NaN is not JSON (r05)
    except FileNotFoundError:
        raise UserError(f"{path}: no such claims file") from None
    except (OSError, ValueError) as err:   # ValueError: JSONDecodeError, UnicodeDecodeError, a NaN literal
        raise UserError(f"{path}: not a readable claims.json ({err})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA_NAME:
        raise UserError(f"{path}: not a claims file (expected \"schema\": \"{SCHEMA_NAME}\")")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= CLAIMS_SCHEMA_VERSION:
        raise UserError(f"{path}: schema_version {version!r} is not supported "
                        f"(this harness reads up to {CLAIMS_SCHEMA_VERSION})")
    cells_raw = document.get("cells")
    if not isinstance(cells_raw, list):
        raise UserError(f"{path}: \"cells\" must be a list")
    try:
        cells = [CellResult.from_dict(raw) for raw in cells_raw]
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    for cell in cells:
        if not isinstance(cell.cell_id, str) or not SAFE_NAME.fullmatch(cell.cell_id):
            raise UserError(f"{path}: cell id {cell.cell_id!r}: use letters, digits, '.', '_' and '-' only")
    entries = document.get("figures", [])
    if not isinstance(entries, list):
        raise UserError(f"{path}: \"figures\" must be a list")
    figures = [_read_figure(path, entry) for entry in entries if not (isinstance(entry, dict) and entry.get("derived"))]
    return ClaimsRun(run_id=str(document.get("run_id", path.parent.name)), cells=cells,
                     provenance=dict(document.get("provenance") or {}), figures=figures,
                     created=str(document.get("created", "")))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _read_figure(path: Path, entry: Any) -> Figure:
    """One attached figure of the claims file at `path`; its file must lie inside the run folder."""
    if not isinstance(entry, dict):
        raise UserError(f"{path}: each entry of \"figures\" must be a JSON object, got {type(entry).__name__}")
    name, file = entry.get("name"), entry.get("file")
    try:
        figure_name = Figure(name, b"", "").name
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    folder = path.parent.resolve()
    relative = PurePosixPath(file) if isinstance(file, str) and file else None
    if (relative is None or relative.is_absolute() or ".." in relative.parts or "\\" in file
            or not (folder / relative).resolve().is_relative_to(folder)):
        raise UserError(f"{path}: figure {figure_name!r}: file {file!r} must be a relative path inside the run "
                        "folder (no absolute path, no '..'), e.g. figures/NAME.png")
    if (folder / relative).exists() and not (folder / relative).is_file():   # a FIFO would block forever (r07)
        raise UserError(f"{path}: figure {figure_name!r}: {folder / relative} is not a regular file")
    try:
        png = (folder / relative).read_bytes()
    except OSError:
        raise UserError(f"{path}: figure {figure_name!r} missing its file {folder / relative}") from None
    caption, claim_id = entry.get("caption", ""), entry.get("claim_id")
    if not isinstance(caption, str) or not (claim_id is None or isinstance(claim_id, str)):
        raise UserError(f"{path}: figure {figure_name!r}: caption and claim_id must be strings")
    return Figure(figure_name, png, caption, claim_id)


def code_version(root: Path | None = None) -> str:
    """`git describe` of the harness checkout (with -dirty), else the installed package version."""
    root = root or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10, check=True)
        return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        try:
            return f"pkg:{importlib.metadata.version('rl-circuit-audit')}"
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


def run_provenance(**settings: Any) -> dict[str, Any]:
    """Run-level provenance: code version, library versions, platform, plus the given settings
    (device, dtype, seeds, the selected grid, ...)."""
    return {"code_version": code_version(), "libraries": library_versions(),
            "platform": platform.platform(), "argv": sys.argv[1:], **settings}
