"""The audit's on-disk cache: one place that says what each stage's key holds, where its entry
lives, and a ledger of what was computed and what was read back.

Keys are content hashes (`harness.files.content_key`) of everything that determines a stage's
output, down to the bits: the device type and, on CPU, torch's thread count (a different count
reorders float sums; answers and scores then differ in the last bits). Entries are written
atomically (a file through a temporary file, a folder through a temporary folder renamed into
place) and verified on read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.audit.config import AuditConfig
from harness.circuit.ablation import DEFAULT_CHUNK
from harness.data.grading import GRADING_VERSION
from harness.data.worked import WORKED_VERSION
from harness.errors import UserError
from harness.files import (
    ActiveRun,
    CorruptEntry,
    cache_root,
    content_key,
    file_lock,
    quarantine,
    read_checked_json,
    temp_dir,
    verify_manifest,
    write_checked_json,
    write_manifest,
)
from harness.models.loading import bit_context

# v2: entries carry checksums (v1 entries are not read) and keys hold the CPU thread count
CACHE_VERSION = "audit-v2"


class Ledger:
    """Counts stages by outcome, e.g. {"answers:computed": 1, "eap:cache": 4}."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def count(self, stage: str, how: str) -> None:
        key = f"{stage}:{how}"
        self.counts[key] = self.counts.get(key, 0) + 1

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


# ---------------------------------------------------------------- what each key holds


def answers_key(pair_identity: dict, dataset_spec: str, config: AuditConfig, template: str, decoding: dict) -> str:
    """Both models' checked answers: the pair's weight files, the problem set, template, decoding, and
    the grader (the entry stores the checks, not only the generations) with the grading code's version,
    and the worked solutions' version (the entry stores the reference solutions' tokens)."""
    return content_key(CACHE_VERSION, "answers", pair_identity, dataset_spec, config.questions, config.data_seed,
                       template, decoding, config.dtype, config.grader, GRADING_VERSION, WORKED_VERSION,
                       bit_context(config.device),
                       *([config.generation_backend] if config.generation_backend != "hf" else []))


def eap_key(fingerprint: str, rows: list[dict], config: AuditConfig, method: str = "eap") -> str:
    """One model's edge scores: its weights, the exact EAP rows, layout, positions, dtype, device type, and
    the estimator (the paper's one-step EAP keeps its old key)."""
    extra = () if method == "eap" else (method,)
    return content_key(CACHE_VERSION, "eap", fingerprint, rows, config.layout, config.positions, config.dtype,
                       bit_context(config.device), *extra)


def fidelity_key(eap: str, n_questions: int, config: AuditConfig, edge_seed: int, strata: str | None = None) -> str:
    """Fidelity of one model's scores: the scores' key, the questions and edges it ablates (how many, the
    seed of their draw (`edge_seed`), and for a stratified draw the key of the base scores whose mean |EAP|
    the strata rank), and what turns the correlation into a status (threshold, bootstrap resamples)."""
    # the chunks change a delta's rounding only: a given variant chunk other than the default is keyed (so
    # existing entries stay valid); the planner's choice and the logit chunk are recorded in the entry
    chunk = (() if config.ablation_chunk in (0, DEFAULT_CHUNK) else
             (("ablation_chunk", config.ablation_chunk),))
    drawn = (("fidelity-uniform-f32+deltas",) if config.fidelity_sampling == "uniform" else
              ("fidelity-stratified-f32+deltas+weights", strata))
    return content_key(CACHE_VERSION, *drawn, eap, n_questions, config.fidelity_edges,
                       edge_seed, config.fidelity_threshold, config.stats.n_boot, *chunk)


def causal_key(eap: str, ids: list[str], edges: list[list[int]], ks: list[int], config: AuditConfig) -> str:
    """EAP's top k against exact's top k and k random: the scores' key, the fidelity record's questions
    and edge pool (whose exact deltas rank the pool), the k grid and the random floor's seed."""
    return content_key(CACHE_VERSION, "causal-topk-vs-exact", eap, list(ids), [list(e) for e in edges], list(ks),
                       config.causal_seed)


def interventions_key(eap: dict[str, str], answers: str, config: AuditConfig) -> str:
    """The causal claims on behaviour of one cell: both models' EAP keys (the edges ranked), the answers
    whose first `behaviour_questions` questions' reference solutions are probed, the k grid, the matched
    draw and the layout."""
    return content_key(CACHE_VERSION, "interventions-reference-solution", eap, answers, config.behaviour_questions,
                       list(config.behaviour_ks), config.behaviour_bins, config.behaviour_seed, config.layout)


# ---------------------------------------------------------------- entries

_MISSING = object()


class CacheStore:
    """Stage entries under `<cache root>/audit/<stage>/`, counted in `ledger`.

    Each entry carries a sha256 (a JSON entry its own, a folder entry a MANIFEST.json of its files),
    checked on every read. A corrupt or partial entry is moved to `<cache root>/quarantine/`,
    recomputed, counted as "<stage>:healed" and listed in `healed`. Computing an entry holds a file
    lock on its key, so a concurrent run waits and reads the result instead of computing it again. A
    compute that raised is remembered for the session and raised again, not retried.
    """

    def __init__(self, ledger: Ledger, root: Path | None = None) -> None:
        self.ledger = ledger
        self.cache = Path(root or cache_root())
        self.root = self.cache / "audit"
        self.healed: list[dict] = []
        self._failed: dict[tuple[str, str], Exception] = {}
        cleaned = ActiveRun.of(self.cache).take_cleaned()
        if cleaned:
            ledger.count("temp", "cleaned")
            print(f"cache: removed {len(cleaned)} temporary file(s) left in {self.cache} by an "
                  "interrupted run", file=sys.stderr, flush=True)

    def folder(self, stage: str) -> Path:
        return self.root / stage

    @contextlib.contextmanager
    def lease(self, name: str, wait: bool = True) -> Iterator[bool]:
        """Hold the lease `name` (a file lock under `<cache root>/.locks/`) for the block, so that
        processes sharing the cache (xdist workers, shards) do a piece of work once: yields True once
        held; with `wait=False`, False at once when another process holds it."""
        with file_lock(self.cache / ".locks" / f"lease-{name}.lock", wait=wait) as held:
            yield held

    def json_entry(self, stage: str, key: str, compute: Callable[[], Any], fields: tuple[str, ...] = ()) -> Any:
        """The stage's JSON entry for `key`, computed and written when missing or corrupt. An entry
        without one of `fields` (a valid checksum over an older format) is corrupt too."""
        path = self.folder(stage) / f"{key}.json"

        def read() -> Any:
            if path.is_dir():
                raise CorruptEntry("a folder where the entry's file belongs")
            value = read_checked_json(path)
            missing = [f for f in fields if not isinstance(value, dict) or f not in value]
            if missing:
                raise CorruptEntry(f"an older format: no {', '.join(missing)}")
            return value

        return self._entry(stage, key, path, read, compute, lambda value: write_checked_json(path, value))

    def folder_entry(self, stage: str, key: str, load: Callable[[Path], Any], compute: Callable[[], Any],
                     save: Callable[[Any, Path], None]) -> Any:
        """The stage's folder entry for `key`: verified against its manifest and loaded, or computed and
        saved through a temporary folder."""
        folder = self.folder(stage) / key

        def read() -> Any:
            if not folder.is_dir():
                raise CorruptEntry("a file where the entry's folder belongs")
            verify_manifest(folder)
            try:
                return load(folder)
            except Exception as err:   # a file that passes its checksum but does not load is corrupt too
                raise CorruptEntry(f"does not load ({type(err).__name__}: {err})") from None

        return self._entry(stage, key, folder, read, compute,
                           lambda value: save_dir_atomically(folder, lambda tmp: save(value, tmp)))

    def _entry(self, stage: str, key: str, path: Path, read: Callable[[], Any], compute: Callable[[], Any],
               write: Callable[[Any], None]) -> Any:
        if (stage, key) in self._failed:
            raise self._failed[(stage, key)].with_traceback(None)
        value = self._read(stage, key, path, read)
        if value is not _MISSING:
            return value
        with file_lock(self.cache / ".locks" / f"{stage}-{key}.lock"):
            value = self._read(stage, key, path, read)   # written by another run while this one waited
            if value is not _MISSING:
                return value
            try:
                value = compute()
            except Exception as err:
                self._failed[(stage, key)] = err
                raise
            write(value)
        self.ledger.count(stage, "computed")
        return value

    def _read(self, stage: str, key: str, path: Path, read: Callable[[], Any]) -> Any:
        if not path.exists():
            return _MISSING
        try:
            value = read()
        except CorruptEntry as err:
            moved = quarantine(path, self.cache)
            self.ledger.count(stage, "healed")
            self.healed.append({"stage": stage, "key": key, "reason": str(err), "moved_to": str(moved)})
            print(f"cache: {stage} entry {key} is corrupt ({err}); moved to {moved}; recomputing it",
                  file=sys.stderr, flush=True)
            return _MISSING
        self.ledger.count(stage, "cache")
        return value


def save_dir_atomically(folder: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_dir)`, add its manifest, then rename it into place; if another writer got
    there first (a valid entry exists), keep theirs."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(folder.parent, f".{folder.name}.")
    try:
        write(tmp)
        write_manifest(tmp)
        os.replace(tmp, folder)
    except OSError:
        try:
            verify_manifest(folder)
        except CorruptEntry:
            raise UserError(f"cannot write cache entry {folder}; remove it or set HARNESS_CACHE to another "
                            "folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
