"""Files the harness writes (reports, cache entries, model folders) get the user's umask, like any
ordinary open() or mkdir(), never the private 0o600 / 0o700 of a temp file renamed into place."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from harness.audit.store import save_dir_atomically
from harness.errors import UserError
from harness.files import (
    atomic_write_bytes,
    atomic_write_json,
    check_writable_file,
    check_writable_folder,
    temp_file,
)


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
    assert (tmp_path / "a.bin").read_bytes() == b"x" and not list(tmp_path.glob(".*.harness-tmp"))


def test_cache_folders_and_temp_files_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    save_dir_atomically(tmp_path / "entry", lambda tmp: atomic_write_json(tmp / "meta.json", {}))
    assert _mode(tmp_path / "entry") == 0o777 & ~umask
    assert _mode(tmp_path / "entry" / "meta.json") == 0o666 & ~umask
    assert _mode(temp_file(tmp_path, ".png")) == 0o666 & ~umask


def test_an_unwritable_output_folder_is_named_before_anything_is_written(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--out .*/file is a file, not a folder"):
        check_writable_folder(tmp_path / "file")
    with pytest.raises(UserError, match=r"--out .*/file/a/b: .*/file is a file, not a folder"):
        check_writable_folder(tmp_path / "file" / "a" / "b")
    with pytest.raises(UserError, match=r"--out .* is a folder; give a file path"):
        check_writable_file(tmp_path)
    monkeypatch.setattr(os, "access", lambda path, mode: False)   # read-only, also where we run as root
    with pytest.raises(UserError, match=r"--reports-dir .*/new/run: .* is not writable; choose a folder"):
        check_writable_folder(tmp_path / "new" / "run", "--reports-dir")
    assert not (tmp_path / "new").exists()


def test_a_failed_write_is_one_clear_error_and_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(UserError, match=r"cannot write .*/r.json: No space left on device; choose a writable"):
        atomic_write_json(tmp_path / "r.json", {})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match=r"cannot write .*/file/x.bin: "):
        (tmp_path / "file").write_text("x")
        monkeypatch.undo()
        atomic_write_bytes(tmp_path / "file" / "x.bin", b"x")
