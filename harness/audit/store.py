"""The audit's on-disk cache: one place that says what each stage's key holds, where its entry
lives, and a ledger of what was computed and what was read back.

Keys are content hashes (`harness.files.content_key`) of everything that determines a stage's
output. Entries are written atomically: a file through a temporary file, a folder through a
temporary folder renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from harness.audit.config import AuditConfig
from harness.data.grading import GRADING_VERSION
from harness.files import atomic_write_json, cache_root, content_key, temp_dir

CACHE_VERSION = "audit-v1"


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
    the grader (the entry stores the checks, not only the generations) with the grading code's version."""
    return content_key(CACHE_VERSION, "answers", pair_identity, dataset_spec, config.questions, config.data_seed,
                       template, decoding, config.dtype, config.grader, GRADING_VERSION)


def eap_key(fingerprint: str, rows: list[dict], config: AuditConfig, method: str = "eap") -> str:
    """One model's edge scores: its weights, the exact EAP rows, layout, positions, dtype, device type, and
    the estimator (the paper's one-step EAP keeps its old key)."""
    extra = () if method == "eap" else (method,)
    return content_key(CACHE_VERSION, "eap", fingerprint, rows, config.layout, config.positions, config.dtype,
                       config.device.split(":")[0], *extra)


def fidelity_key(eap: str, n_questions: int, config: AuditConfig) -> str:
    """Fidelity of one model's scores: the scores' key, the questions and uniform edges it ablates, the
    seed, and what turns the correlation into a status (threshold, bootstrap resamples)."""
    return content_key(CACHE_VERSION, "fidelity-uniform-f32+deltas", eap, n_questions, config.fidelity_edges,
                       config.seed, config.fidelity_threshold, config.stats.n_boot)


def causal_key(eap: str, n_questions: int, config: AuditConfig) -> str:
    """Top-k vs random edges removed: the scores' key, the questions, the seed."""
    return content_key(CACHE_VERSION, "causal-per-question", eap, n_questions, config.seed)


# ---------------------------------------------------------------- entries


class CacheStore:
    """Stage entries under `<cache root>/audit/<stage>/`, counted in `ledger`."""

    def __init__(self, ledger: Ledger, root: Path | None = None) -> None:
        self.ledger = ledger
        self.root = (root or cache_root()) / "audit"

    def folder(self, stage: str) -> Path:
        return self.root / stage

    def json_entry(self, stage: str, key: str, compute: Callable[[], Any]) -> Any:
        """The stage's JSON entry for `key`, computed and written when missing."""
        path = self.folder(stage) / f"{key}.json"
        if path.is_file():
            self.ledger.count(stage, "cache")
            return json.loads(path.read_text())
        value = compute()
        atomic_write_json(path, value)
        self.ledger.count(stage, "computed")
        return value

    def folder_entry(self, stage: str, key: str, load: Callable[[Path], Any], compute: Callable[[], Any],
                     save: Callable[[Any, Path], None], marker: str) -> Any:
        """The stage's folder entry for `key` (complete once `marker` exists in it): loaded, or computed
        and saved through a temporary folder."""
        folder = self.folder(stage) / key
        if (folder / marker).is_file():
            self.ledger.count(stage, "cache")
            return load(folder)
        value = compute()
        save_dir_atomically(folder, lambda tmp: save(value, tmp), marker)
        self.ledger.count(stage, "computed")
        return value


def save_dir_atomically(folder: Path, write: Callable[[Path], None], marker: str) -> None:
    """Call `write(tmp_dir)` then rename it into place; if another writer got there first
    (`marker` exists in the folder), keep theirs."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(folder.parent, f".{folder.name}.")
    try:
        write(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / marker).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
