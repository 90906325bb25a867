"""Files the harness writes (reports, cache entries, model folders) get the user's umask, like any
ordinary open() or mkdir(), never the private 0o600 / 0o700 of a temp file renamed into place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.audit.store import save_dir_atomically
from harness.files import atomic_write_bytes, atomic_write_json, temp_file


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=oct)
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_atomic_writes_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    atomic_write_json(tmp_path / "sub" / "b.json", {"k": 1})
    assert _mode(tmp_path / "a.bin") == _mode(tmp_path / "sub" / "b.json") == 0o666 & ~umask
    assert (tmp_path / "a.bin").read_bytes() == b"x" and not list(tmp_path.glob(".*.tmp"))


def test_cache_folders_and_temp_files_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    save_dir_atomically(tmp_path / "entry", lambda tmp: atomic_write_json(tmp / "meta.json", {}), "meta.json")
    assert _mode(tmp_path / "entry") == 0o777 & ~umask
    assert _mode(tmp_path / "entry" / "meta.json") == 0o666 & ~umask
    assert _mode(temp_file(tmp_path, ".png")) == 0o666 & ~umask
