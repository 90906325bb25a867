"""On-disk cache keyed by content hashes; every write is atomic (temp file + rename)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import UserError


def cache_root() -> Path:
    """Cache folder: $HARNESS_CACHE, else .harness-cache in the working directory."""
    return Path(os.environ.get("HARNESS_CACHE", ".harness-cache"))


def content_key(*parts: Any) -> str:
    """Stable sha256 (hex, 16 chars) of JSON-serialisable parts; dict keys are sorted."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def current_umask() -> int:
    """The process's file-mode creation mask (e.g. 0o022)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def umask_mode(directory: bool = False) -> int:
    """Mode an ordinary open() (0o666) or mkdir() (0o777) would give under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh folder in `parent` (to be renamed into place) with the umask's mode, not mkdtemp's 0o700."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(tmp, umask_mode(directory=True))
    return tmp


def temp_file(parent: Path, suffix: str) -> Path:
    """A fresh empty file in `parent` (to be renamed into place) with the umask's mode, not mkstemp's 0o600."""
    fd, tmp = tempfile.mkstemp(dir=parent, suffix=suffix)
    os.fchmod(fd, umask_mode())
    os.close(fd)
    return Path(tmp)


def check_writable_folder(path: Path, flag: str = "--out", *, given: Path | None = None) -> Path:
    """Fail early, creating nothing, when files cannot be written into the folder `path`: it is a file,
    an ancestor is a file, or the nearest existing ancestor is not writable (UserError naming `flag`
    and `given`, the path the user gave, `path` itself by default)."""
    path = Path(path)
    shown = f"{flag} {given if given is not None else path}"
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == Path(given or path) else f": {existing}"
        raise UserError(f"{shown}{where} is a file, not a folder; give a path under a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{shown}: {existing} is not writable; choose a folder you can write to")
    return path


def check_writable_file(path: Path, flag: str = "--out") -> Path:
    """As check_writable_folder, for a file to be written at `path` (which must not be a folder)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file path, e.g. {path / 'out.jsonl'}")
    check_writable_folder(path.parent, flag, given=path)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and a rename. The file gets the mode
    an ordinary open() would give it (0o666 less the umask), not mkstemp's private 0o600. A path that
    cannot be written (read-only, full disk, a file in place of a folder) is a UserError."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {err.strerror or err}; choose a writable folder with free space") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
