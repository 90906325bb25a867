"""The audit cache verifies and heals: a truncated, byte-flipped or partial entry is moved aside and
recomputed (and counted), nothing left on disk blocks a rewrite, a failed compute is not retried in
the session, concurrent runs compute an entry once, and a killed run's temporary files are removed
by the next run."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch

from harness.audit.config import AuditConfig
from harness.audit.store import CacheStore, Ledger, eap_key
from harness.errors import UserError
from harness.files import (
    ActiveRun,
    CorruptEntry,
    atomic_write_json,
    cache_root,
    clean_stale_temps,
    file_lock,
    read_checked_json,
    write_checked_json,
)


def _store(root: Path) -> CacheStore:
    return CacheStore(Ledger(), root)


class Counter:
    def __init__(self, value):
        self.calls, self.value = 0, value

    def __call__(self):
        self.calls += 1
        return self.value


def _flip_a_byte(path: Path, marker: bytes) -> None:
    """Change one digit after `marker`: the file still parses, only its content is wrong."""
    data = bytearray(path.read_bytes())
    at = data.index(marker) + len(marker)
    while not chr(data[at]).isdigit():
        at += 1
    data[at] = ord("7") if data[at] != ord("7") else ord("3")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "plain-json"])
def test_a_damaged_json_entry_is_moved_aside_and_recomputed(tmp_path: Path, damage: str, capsys) -> None:
    value = {"loss": [0.125, 2.5, 31.0], "n": 3}
    _store(tmp_path).json_entry("fidelity", "k1", Counter(value))
    path = tmp_path / "audit" / "fidelity" / "k1.json"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif damage == "flip":
        _flip_a_byte(path, b'"loss"')
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_text(json.dumps(value))   # no checksum: not trusted
    with pytest.raises(CorruptEntry):
        read_checked_json(path)

    store, compute = _store(tmp_path), Counter(value)
    assert store.json_entry("fidelity", "k1", compute) == value
    assert compute.calls == 1
    assert store.ledger.as_dict() == {"fidelity:healed": 1, "fidelity:computed": 1}
    (healed,) = store.healed
    assert Path(healed["moved_to"]).parent == tmp_path / "quarantine" and Path(healed["moved_to"]).is_file()
    assert f"moved to {healed['moved_to']}" in capsys.readouterr().err
    assert read_checked_json(path) == value
    # the healed entry is read back like any other
    again = _store(tmp_path)
    assert again.json_entry("fidelity", "k1", Counter(None)) == value and again.ledger.as_dict() == {"fidelity:cache": 1}


def _save(value, folder: Path) -> None:
    atomic_write_json(folder / "edges.json", {"ids": value["ids"]})
    (folder / "edges.bin").write_bytes(bytes(value["blob"]))


def _load(folder: Path) -> dict:
    return {"ids": json.loads((folder / "edges.json").read_text())["ids"],
            "blob": list((folder / "edges.bin").read_bytes())}


@pytest.mark.parametrize("damage", ["lost-file", "flipped-file", "lost-manifest", "truncated-file"])
def test_a_damaged_folder_entry_heals_and_nothing_blocks_its_rewrite(tmp_path: Path, damage: str) -> None:
    value = {"ids": ["q1", "q2"], "blob": list(range(64))}
    _store(tmp_path).folder_entry("eap", "k2", _load, Counter(value), _save)
    folder = tmp_path / "audit" / "eap" / "k2"
    assert sorted(p.name for p in folder.iterdir()) == ["MANIFEST.json", "edges.bin", "edges.json"]
    if damage == "lost-file":
        (folder / "edges.json").unlink()   # what once made the folder impossible to rewrite
    elif damage == "flipped-file":
        blob = bytearray((folder / "edges.bin").read_bytes())
        blob[10] ^= 0xFF
        (folder / "edges.bin").write_bytes(bytes(blob))
    elif damage == "lost-manifest":
        (folder / "MANIFEST.json").unlink()
    else:
        (folder / "edges.bin").write_bytes((folder / "edges.bin").read_bytes()[:5])

    store, compute = _store(tmp_path), Counter(value)
    assert store.folder_entry("eap", "k2", _load, compute, _save) == value
    assert compute.calls == 1 and store.ledger.as_dict() == {"eap:healed": 1, "eap:computed": 1}
    assert _load(folder) == value and len(list((tmp_path / "quarantine").iterdir())) == 1


def test_an_entry_that_passes_its_checksum_but_does_not_load_is_recomputed(tmp_path: Path) -> None:
    value = {"ids": ["q1"], "blob": [1, 2]}
    _store(tmp_path).folder_entry("eap", "k3", _load, Counter(value), _save)
    store = _store(tmp_path)

    def broken_load(folder: Path):
        raise KeyError("scores")   # e.g. a file written by another version of the code

    assert store.folder_entry("eap", "k3", broken_load, Counter(value), _save) == value
    assert store.ledger.as_dict() == {"eap:healed": 1, "eap:computed": 1}


def test_a_failed_compute_is_raised_again_not_retried(tmp_path: Path) -> None:
    store, calls = _store(tmp_path), []

    def compute():
        calls.append(1)
        raise UserError("pair tiny-rl: the post model folder /x does not exist")

    for _ in range(3):
        with pytest.raises(UserError, match="does not exist"):
            store.json_entry("answers", "k4", compute)
    assert len(calls) == 1 and not (tmp_path / "audit" / "answers" / "k4.json").exists()
    # another key of the same stage is still computed
    assert store.json_entry("answers", "k5", Counter([1])) == [1]


def _slow_compute(root: str, log: str) -> None:
    def compute():
        with open(log, "a") as handle:
            handle.write("computed\n")
        time.sleep(1.0)
        return {"ok": True}

    assert CacheStore(Ledger(), Path(root)).json_entry("answers", "shared", compute) == {"ok": True}


def test_two_concurrent_runs_compute_an_entry_once(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_slow_compute, args=(str(tmp_path / "cache"), str(log))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert log.read_text() == "computed\n"


def _hold_active_lock(root: str, ready, release) -> None:
    active = ActiveRun(Path(root))
    ready.set()
    release.wait(30)
    del active


def test_a_killed_runs_temporary_files_are_removed_only_when_no_run_is_active(tmp_path: Path, capsys) -> None:
    root = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    other = context.Process(target=_hold_active_lock, args=(str(root), ready, release))
    other.start()
    assert ready.wait(60)
    stale = [root / "audit" / "eap" / ".k6.abc123.harness-tmp", root / "generations" / ".x.json.def.harness-tmp"]
    stale[0].mkdir(parents=True)
    (stale[0] / "edges.json").write_text("{}")
    stale[1].parent.mkdir(parents=True)
    stale[1].write_text("{")
    keep = root / "generations" / "kept.json"
    write_checked_json(keep, {"a": 1})
    try:
        assert ActiveRun(root).cleaned == [] and all(p.exists() for p in stale)   # the other run may own them
    finally:
        release.set()
        other.join(60)

    store = _store(root)
    assert store.ledger.as_dict() == {"temp:cleaned": 1}
    assert not any(p.exists() for p in stale) and keep.is_file()
    assert "removed 2 temporary file(s)" in capsys.readouterr().err


def test_a_lock_is_released_when_its_block_raises(tmp_path: Path) -> None:
    lock = tmp_path / "l.lock"
    with pytest.raises(RuntimeError):
        with file_lock(lock):
            raise RuntimeError("compute failed")
    with file_lock(lock):   # would block forever if the first were still held
        pass


def test_the_cpu_thread_count_is_part_of_the_eap_key() -> None:
    config, rows = AuditConfig(), [{"id": "q", "prompt_ids": [1, 2], "target_ids": [3]}]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = eap_key("sha256:x", rows, config)
        torch.set_num_threads(2)
        two = eap_key("sha256:x", rows, config)
    finally:
        torch.set_num_threads(threads)
    assert one != two


def test_weight_fingerprints_are_read_once_per_file_version(tmp_path: Path, monkeypatch) -> None:
    from harness.models import loading

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"w" * 1000)
    first = loading.sha256_files([weights])
    hashed = []
    real = loading._hash_files
    monkeypatch.setattr(loading, "_hash_files", lambda paths: hashed.append(paths) or real(paths))
    assert loading.sha256_files([weights]) == first and hashed == []   # persisted: the file is not read again
    weights.write_bytes(b"v" * 1000)
    os.utime(weights, ns=(1, 1))
    changed = loading.sha256_files([weights])
    assert changed != first and len(hashed) == 1


def test_the_start_up_clean_touches_only_the_harness_own_temporaries(tmp_path: Path) -> None:
    """Findings v05, v06: a cache root pointed at a folder that holds other programs' files (a home, a shared scratch):
    their `.draft.tmp` files and folders survive, and so does a harness-named file outside the cache's
    own folders; only the killed run's temporaries inside them go."""
    root = tmp_path / "home"
    theirs = [root / "docs" / ".draft.tmp", root / "project" / ".build.tmp" / "data",
              root / "audit" / "eap" / ".notes.tmp", root / "notes" / ".x.harness-tmp"]
    ours = [root / "audit" / "eap" / ".k6.abc123.harness-tmp", root / "generations" / ".g.json.def.harness-tmp"]
    for path in theirs + ours:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep" if path in theirs else "{")
    assert sorted(clean_stale_temps(root)) == sorted(ours)
    assert all(p.read_text() == "keep" for p in theirs) and not any(p.exists() for p in ours)


def test_an_empty_harness_cache_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE", " ")
    with pytest.raises(UserError, match="HARNESS_CACHE is set but empty"):
        cache_root()
    monkeypatch.delenv("HARNESS_CACHE")
    assert cache_root() == Path(".harness-cache")


@pytest.mark.parametrize("damage", ["quarantine-file", "quarantine-dangling-link", "locks-file", "active-lock-folder"])
def test_the_caches_own_structure_heals(tmp_path: Path, damage: str, capsys) -> None:
    """Findings F1-F3, F7: a quarantine that is a file or a dangling link, a .locks that is a file, an
    .active.lock that is a folder left every later run INVALID. Each is moved aside, once, with a line."""
    root = tmp_path / "cache"
    root.mkdir()
    where = {"quarantine-file": root / "quarantine", "quarantine-dangling-link": root / "quarantine",
             "locks-file": root / ".locks", "active-lock-folder": root / ".active.lock"}[damage]
    if damage == "quarantine-dangling-link":
        where.symlink_to(tmp_path / "nowhere")
    elif damage == "active-lock-folder":
        where.mkdir()
    else:
        where.write_text("not a folder")
    bad = root / "audit" / "causal" / "k1.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{")                                     # a corrupt entry: healing must move it
    store = _store(root)
    assert store.json_entry("causal", "k1", lambda: {"v": 1}) == {"v": 1}
    assert store.json_entry("causal", "k1", lambda: {"v": 2}) == {"v": 1}   # written, then read back
    assert len(list((root / "quarantine").iterdir())) == 1 and store.ledger.as_dict()["causal:healed"] == 1
    said = "was a folder" if damage == "active-lock-folder" else "was not a folder"
    assert len(list(root.glob(f"{where.name}.displaced-*"))) == 1 and said in capsys.readouterr().err


@pytest.mark.parametrize("entry, fields, reason", [
    ("folder", (), "a folder where the entry's file belongs"),                       # F4
    ("older", ("ks",), "an older format: no ks"),                                    # F5
])
def test_an_entry_of_the_wrong_kind_or_an_older_format_is_healed(tmp_path: Path, entry, fields, reason) -> None:
    root = tmp_path / "cache"
    path = root / "audit" / "causal" / "k2.json"
    path.parent.mkdir(parents=True)
    if entry == "folder":
        path.mkdir()
    else:
        write_checked_json(path, {"top": [1]})   # a valid checksum over fields of another format
    store = _store(root)
    assert store.json_entry("causal", "k2", lambda: {"ks": [1, 2]}, fields=fields) == {"ks": [1, 2]}
    assert store.healed[0]["reason"] == reason and store.ledger.as_dict()["causal:healed"] == 1
    assert _store(root).json_entry("causal", "k2", lambda: {"ks": [9]}, fields=fields) == {"ks": [1, 2]}
