"""The claim catalogue: each audited paper is a data file, `harness/audit/papers/<paper id>.toml`, with
a [paper] table (id, title, arxiv) and one [[claims]] table per claim (its fields: `ClaimSpec`).
More papers join with `add_papers` (the `--papers` option of the suites and the audit).

A claim names its rule: a module of this package whose `rule(claim, records, grid, context)` returns
one `harness.audit.claims.family.Outcome` per grid cell, or "module:function" for a rule of one's
own; `harness.audit.claims.family.judge_family` decides them. A claim declares the records it needs;
the grid computes those stages and no others.

`direction` names the shape of the test a claim needs:
  increase / decrease  one-sided paired test, post vs base, in that direction;
  weaker               DPO's change is smaller than online RL's (or equivalent to zero);
  fades                share of counter-examples falls as alpha grows (trend test);
  proportion           share of experiments with the claimed sign reaches a stated level;
  faithful             EAP scores agree with exact ablation above a fidelity threshold;
  restores / installs  patching the other model's values into the k edges of largest EAP change moves
                       behaviour toward that model more than k magnitude-matched random edges;
  necessary            removing the k edges of largest |EAP| lowers the correct answer's probability
                       more than k magnitude-matched random edges.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:   # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

from harness.errors import UserError
from harness.files import read_utf8
from harness.models.registry import ALGORITHM_KINDS, ONLINE_RL

DIRECTIONS = ("increase", "decrease", "weaker", "fades", "proportion", "faithful", "restores", "installs",
              "necessary")
NEEDS = ("answers", "cells", "causal", "estimates", "interventions")
AXES = ("pair", "dataset", "alpha", "metric", "token_mode")
PAPERS_DIR = Path(__file__).resolve().parents[1] / "papers"
DEFAULT_PAPER = "2509.21044"


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of a paper and how it is tested."""

    id: str
    name: str
    section: str
    statement: str
    direction: str
    rule: str | None = None                      # a module of harness.audit.claims, or "module:function"
    reads: tuple[str, ...] | None = (ONLINE_RL,)  # algorithm kinds of the pairs it reads; None: all
    metric: str | None = None                    # the metric a one-metric claim tests
    axes: tuple[str, ...] = ("pair", "dataset", "alpha", "token_mode")  # its cells' grid arguments
    needs: tuple[str, ...] = ("answers", "cells")  # the records its rule reads (NEEDS)
    paper: str = DEFAULT_PAPER

    def describe(self) -> dict[str, str]:
        """What a report records of the claim: id, paper, name, section, statement, direction."""
        return {"id": self.id, "paper": self.paper, "name": self.name, "section": self.section,
                "statement": self.statement, "direction": self.direction}

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise UserError(f"claim {self.id}: direction {self.direction!r} not in {DIRECTIONS}")
        for name, values, known in (("needs", self.needs, NEEDS), ("axes", self.axes, AXES),
                                    ("reads", self.reads or (), ALGORITHM_KINDS)):
            bad = [v for v in values if v not in known]
            if bad:
                raise UserError(f"claim {self.id}: {name} {', '.join(map(repr, bad))} not in {', '.join(known)}")


@dataclass(frozen=True)
class Paper:
    id: str
    title: str
    arxiv: str | None
    source: str


PAPERS: dict[str, Paper] = {}
CLAIMS_BY_ID: dict[str, ClaimSpec] = {}


def load_paper(path: Path) -> tuple[Paper, list[ClaimSpec]]:
    """The paper and claims of one paper file; a malformed file is a UserError naming it."""
    path = Path(path)
    try:
        raw = tomllib.loads(read_utf8(path, "paper file"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the paper file ({err.strerror})") from None
    head = raw.get("paper")
    if not isinstance(head, dict) or not isinstance(head.get("id"), str) or not head["id"]:
        raise UserError(f"{path}: needs a [paper] table with an id, e.g. id = \"2509.21044\"")
    paper = Paper(head["id"], str(head.get("title", "")), head.get("arxiv"), str(path))
    claims = []
    known = {"id", "name", "section", "statement", "direction", "rule", "reads", "metric", "axes", "needs"}
    for index, entry in enumerate(raw.get("claims", [])):
        where = f"{path}: claim #{index + 1}"
        unknown = sorted(set(entry) - known)
        missing = [k for k in ("id", "name", "statement", "direction", "rule") if k not in entry]
        if unknown or missing:
            raise UserError(f"{where}: " + "; ".join(
                ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"missing field(s) {', '.join(missing)}"] if missing else [])))
        fields: dict[str, Any] = {**entry, "section": entry.get("section", ""), "paper": paper.id}
        for name in ("reads", "axes", "needs"):
            if name in fields:
                fields[name] = tuple(fields[name])
        fields.setdefault("reads", None)
        claims.append(ClaimSpec(**fields))
    if not claims:
        raise UserError(f"{path}: paper {paper.id} lists no [[claims]]")
    return paper, claims


def add_papers(paths: list[str | Path]) -> list[ClaimSpec]:
    """Add the papers of these files (or every *.toml in these folders) to the catalogue; the claims
    added. A paper or claim id already taken by another file is a UserError."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.glob("*.toml"))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"--papers {path}: no such file or folder")
    added = []
    for file in files:
        paper, claims = load_paper(file)
        if paper.id in PAPERS:
            if Path(PAPERS[paper.id].source).resolve() == file.resolve():
                continue
            raise UserError(f"{file}: paper {paper.id} is already in the catalogue ({PAPERS[paper.id].source})")
        taken = [c.id for c in claims if c.id in CLAIMS_BY_ID]
        if taken:
            raise UserError(f"{file}: claim id(s) {', '.join(taken)} already taken by paper "
                            f"{CLAIMS_BY_ID[taken[0]].paper}; give this paper's claims ids of their own")
        PAPERS[paper.id] = paper
        CLAIMS_BY_ID.update({c.id: c for c in claims})
        added += claims
    return added


CLAIMS: tuple[ClaimSpec, ...] = tuple(add_papers([PAPERS_DIR / f"{DEFAULT_PAPER}.toml"]))
add_papers([PAPERS_DIR])


def get_claim(claim_id: str) -> ClaimSpec:
    """The claim with this id, or a UserError listing the known ids."""
    try:
        return CLAIMS_BY_ID[claim_id]
    except KeyError:
        raise UserError(f"unknown claim {claim_id!r}; known: {', '.join(CLAIMS_BY_ID)}") from None


def rule_function(claim: ClaimSpec) -> Callable:
    """The function that measures this claim's cells: `rule` of harness.audit.claims.<rule>, or the
    function a "module:function" rule names."""
    if claim.rule is None:
        raise UserError(f"claim {claim.id} has no rule; its test must judge it")
    module, _, name = claim.rule.partition(":")
    try:
        found = getattr(importlib.import_module(module if name else f"{__name__}.{module}"), name or "rule")
    except (ImportError, AttributeError) as err:
        raise UserError(f"claim {claim.id}: rule {claim.rule!r} cannot be imported ({err})") from None
    return found
