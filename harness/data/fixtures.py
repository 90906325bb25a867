"""Greedy answers shipped as fixtures, and the check that they are what the model produces.

A fixture file holds one model's answers to one dataset, generated in recorded batches: each row is a
`Generation` plus `batch`, the index of the batch it was generated in. Batches are formed from the
problems sorted by prompt length (as `generate_answers` does), `batch_size` at a time, so that
regenerating one recorded batch feeds the model the very same padded tensor and must give the same
tokens. A row is found by the generation cache key (model fingerprint, template, prompt, decoding),
never by file name, so an answer can only be reused for the model, prompt and decoding that made it.

    build_fixture(loaded, problems, template, decoding)   -> fixture dict (write with write_fixture)
    FixtureIndex(folder).lookup(loaded.info.fingerprint, ...)  -> the rows of a (model, prompts, decoding)
    verify_sample(loaded, match, problems, template, decoding, min_questions=8) -> Verification
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from harness.data.generation import Decoding, Generation, generate_answers, generation_key
from harness.data.problems import Problem
from harness.errors import UserError
from harness.files import atomic_write_json
from harness.models.prompts import PromptTemplate, encode_prompt

FIXTURE_VERSION = "answers-fixture-v1"


@dataclass(frozen=True)
class FixtureRow:
    """One shipped answer: the generation, its cache key and the batch it was generated in."""

    key: str
    batch: int
    generation: Generation


@dataclass(frozen=True)
class FixtureMatch:
    """A fixture file's answers to a list of problems (in problem order) and the batch size that
    generated them."""

    file: str
    batch_size: int
    rows: tuple[FixtureRow, ...]


@dataclass(frozen=True)
class Verification:
    """Outcome of regenerating a sample of fixture answers. ids: the questions regenerated;
    mismatched: those whose tokens differ (empty when the fixture is verified)."""

    file: str
    ids: tuple[str, ...]
    mismatched: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return bool(self.ids) and not self.mismatched

    def as_dict(self) -> dict:
        return {"file": self.file, "verified_ids": list(self.ids), "mismatched_ids": list(self.mismatched),
                "ok": self.ok}


def _keys(loaded, problems: Sequence[Problem], template: PromptTemplate, decoding: Decoding) -> list[tuple]:
    """(problem, prompt, prompt ids, generation key) per problem, in problem order."""
    out = []
    for p in problems:
        prompt, ids = encode_prompt(template, p.question, loaded.tokenizer)
        out.append((p, prompt, ids, generation_key(loaded.info.fingerprint, template, prompt, ids, decoding)))
    return out


def build_fixture(loaded, problems: Sequence[Problem], template: PromptTemplate, decoding: Decoding,
                  *, dataset: str, progress: bool = True) -> dict:
    """Generate every problem's answer in recorded batches of `decoding.batch_size` (problems sorted
    by prompt length, ties in problem order) and return the fixture document."""
    keyed = _keys(loaded, problems, template, decoding)
    order = sorted(range(len(keyed)), key=lambda i: len(keyed[i][2]))
    rows = []
    for batch, start in enumerate(range(0, len(order), decoding.batch_size)):
        group = [keyed[i] for i in order[start:start + decoding.batch_size]]
        generations = generate_answers(loaded, [g[0] for g in group], template, decoding, use_cache=False,
                                       progress=False)
        rows += [{"key": g[3], "batch": batch, "generation": gen.to_json()} for g, gen in zip(group, generations)]
        if progress:
            print(f"fixture {dataset}: {min(start + decoding.batch_size, len(order))}/{len(order)} answers",
                  flush=True)
    return {"version": FIXTURE_VERSION, "model_fingerprint": loaded.info.fingerprint, "template": template.name,
            "decoding": dataclasses.asdict(decoding), "dataset": dataset, "rows": rows}


def write_fixture(path: Path, fixture: dict) -> None:
    atomic_write_json(Path(path), fixture)


class FixtureIndex:
    """Every fixture row under a folder, by generation key (files are read on first lookup)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder else None
        self._rows: dict[str, tuple[str, FixtureRow]] | None = None
        self._batch_sizes: dict[str, int] = {}

    def _load(self) -> dict[str, tuple[str, FixtureRow]]:
        if self._rows is None:
            self._rows = {}
            for path in sorted(self.folder.glob("*.json")) if self.folder and self.folder.is_dir() else []:
                try:
                    doc = json.loads(path.read_text())
                    rows = [FixtureRow(r["key"], int(r["batch"]), Generation.from_json(r["generation"]))
                            for r in doc["rows"]] if doc.get("version") == FIXTURE_VERSION else []
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                    raise UserError(f"answer fixture {path} is not a fixture file ({type(err).__name__}: {err}); "
                                    "rebuild it (fixtures/smollm2/rebuild.sh) or delete it") from None
                for row in rows:
                    self._rows[row.key] = (path.name, row)
                if rows:
                    self._batch_sizes[path.name] = int(doc["decoding"]["batch_size"])
        return self._rows

    def lookup(self, loaded, problems: Sequence[Problem], template: PromptTemplate,
               decoding: Decoding) -> FixtureMatch | None:
        """The shipped answers of one fixture file to the longest prefix of `problems` it holds for
        this model, template and decoding (rows in problem order); None when it holds none."""
        index = self._load()
        found = []
        for k in _keys(loaded, problems, template, decoding):
            hit = index.get(k[3])
            if hit is None or (found and hit[0] != found[0][0]):
                break
            found.append(hit)
        if not found:
            return None
        file = found[0][0]
        rows = tuple(dataclasses.replace(f[1], generation=dataclasses.replace(f[1].generation, problem_id=p.id))
                     for f, p in zip(found, problems))
        return FixtureMatch(file, self._batch_sizes[file], rows)


def verify_sample(loaded, match: FixtureMatch, problems: Sequence[Problem], template: PromptTemplate,
                  decoding: Decoding, *, min_questions: int = 8) -> Verification:
    """Regenerate whole recorded batches (at the fixture's batch size), smallest batch index first,
    until at least `min_questions` answers are regenerated; compare token ids with the fixture's."""
    rows = match.rows
    by_batch: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_batch.setdefault(row.batch, []).append(i)
    chosen: list[int] = []
    for batch in sorted(by_batch):
        if len(chosen) >= min_questions:
            break
        chosen += by_batch[batch]
    regenerated = generate_answers(loaded, [problems[i] for i in chosen], template,
                                   dataclasses.replace(decoding, batch_size=match.batch_size), use_cache=False,
                                   progress=False)
    mismatched = tuple(problems[i].id for i, gen in zip(chosen, regenerated)
                       if gen.answer_ids != rows[i].generation.answer_ids)
    return Verification(match.file, tuple(problems[i].id for i in chosen), mismatched)
