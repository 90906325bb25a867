"""On-disk cache keyed by content hashes: every write is atomic (temp file + rename), every entry
carries a sha256 checked on read, concurrent writers take a file lock, and temporary files left by a
killed run are removed by the next one."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from harness.errors import UserError


def cache_root() -> Path:
    """Cache folder: $HARNESS_CACHE, else .harness-cache in the working directory. A HARNESS_CACHE set
    to nothing is a UserError (it would make the working folder the cache)."""
    value = os.environ.get("HARNESS_CACHE")
    if value is None:
        return Path(".harness-cache")
    if not value.strip():
        raise UserError("HARNESS_CACHE is set but empty; unset it (the cache is then ./.harness-cache) or name "
                        "a folder for the cache")
    return Path(value)


def content_key(*parts: Any) -> str:
    """Stable sha256 (hex, 16 chars) of JSON-serialisable parts; dict keys are sorted."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# every temporary file or folder the harness writes is named ".<anything>.harness-tmp", a name no other
# program writes, so that a later run can find what a killed one left behind (clean_stale_temps)
TEMP_SUFFIX = ".harness-tmp"
# the cache root's folders the harness writes into; clean_stale_temps looks in these only
CACHE_FOLDERS = ("audit", "generations", "models", "tiny-models", "fingerprints", "posttrain-eval")


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
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=TEMP_SUFFIX))
    os.chmod(tmp, umask_mode(directory=True))
    return tmp


def temp_file(parent: Path, suffix: str) -> Path:
    """A fresh empty file in `parent` (to be renamed into place) with the umask's mode, not mkstemp's 0o600."""
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".", suffix=suffix + TEMP_SUFFIX)
    os.fchmod(fd, umask_mode())
    os.close(fd)
    return Path(tmp)


def read_json_file(path: Path, what: str, fields: tuple[str, ...] = ()) -> Any:
    """The JSON object in `path`; UserError naming `what` when it is not JSON (truncated, damaged) or
    lacks one of `fields`."""
    try:
        value = json.loads(read_utf8(Path(path), what))
    except ValueError as err:
        raise UserError(f"{what} {path} is not valid JSON ({err}); it is truncated or damaged: write it again") from None
    missing = [f for f in fields if not isinstance(value, dict) or f not in value]
    if missing:
        raise UserError(f"{what} {path} has no {', '.join(missing)}; write it again with this version")
    return value


def read_utf8(path: Path, what: str = "file") -> str:
    """The text of `path`; UserError (naming `what` and the first bad byte) when it is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{what} {path} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); "
                        "save it as UTF-8") from None


def check_writable_folder(path: Path, flag: str = "--out", *, given: Path | None = None) -> Path:
    """Fail early, creating nothing, when files cannot be written into the folder `path`: it is a file,
    an ancestor is a file, or the nearest existing ancestor is not writable (UserError naming `flag`
    and `given`, the path the user gave, `path` itself by default)."""
    path = Path(path)
    shown = f"{flag} {given if given is not None else path}"
    too_long = [part for part in path.parts if len(os.fsencode(part)) > 255]
    if too_long:   # ENAMETOOLONG: Path.exists() raises it on Python 3.11 (findings e03, u13)
        raise UserError(f"{shown}: the name {too_long[0][:40]}... is {len(too_long[0])} characters; a file or folder "
                        "name holds at most 255 bytes")
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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
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


# ---------------------------------------------------------------- checked entries


class CorruptEntry(Exception):
    """A cache entry that fails its checksum or cannot be parsed; `reason` says how."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _payload_digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def write_checked_json(path: Path, value: Any) -> None:
    """Write `value` atomically as {"sha256": digest of its canonical JSON, "value": value}."""
    atomic_write_json(path, {"sha256": _payload_digest(value), "value": value})


def read_checked_json(path: Path) -> Any:
    """The value of a write_checked_json file; CorruptEntry when it is unreadable, truncated, not an
    envelope, or its checksum does not match."""
    try:
        raw = json.loads(Path(path).read_bytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptEntry(f"not valid JSON ({type(err).__name__}: {err})") from None
    if not isinstance(raw, dict) or set(raw) != {"sha256", "value"}:
        raise CorruptEntry("not a checksummed entry (no sha256/value fields)")
    if _payload_digest(raw["value"]) != raw["sha256"]:
        raise CorruptEntry("content does not match its sha256")
    return raw["value"]


MANIFEST = "MANIFEST.json"


def write_manifest(folder: Path) -> None:
    """Record the sha256 of every file in `folder` (written last: a folder entry is complete once its
    manifest exists)."""
    folder = Path(folder)
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    write_checked_json(folder / MANIFEST, {"files": files})


def verify_manifest(folder: Path) -> None:
    """CorruptEntry unless `folder` has a valid manifest and every file it lists has its checksum."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise CorruptEntry(f"no {MANIFEST} (incomplete, or written by an older version)")
    files = read_checked_json(folder / MANIFEST).get("files", {})
    for name, digest in files.items():
        if not (folder / name).is_file():
            raise CorruptEntry(f"{name} is missing")
        if sha256_file(folder / name) != digest:
            raise CorruptEntry(f"{name} does not match its sha256")


def _stamp() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"


def _move_aside(path: Path, was: str) -> None:
    """Move what stands at `path` (a damaged cache's) to `<path>.displaced-<time>-<pid>`, with a line."""
    aside = path.with_name(f"{path.name}.displaced-{_stamp()}")
    os.replace(path, aside)
    print(f"cache: {path} was {was}; moved it to {aside}", file=sys.stderr, flush=True)


def own_folder(folder: Path) -> Path:
    """`folder` as a folder the cache can use: created when missing; a file or a dangling link in its
    place is moved aside (`_move_aside`)."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists() or folder.exists() and not folder.is_dir():
        _move_aside(folder, "not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def own_file(path: Path) -> Path:
    """`path` as a file the cache can open (its folder made by `own_folder`): a folder in its place is
    moved aside."""
    path = Path(path)
    own_folder(path.parent)
    if path.is_dir() and not path.is_symlink():
        _move_aside(path, "a folder")
    return path


def quarantine(entry: Path, root: Path) -> Path:
    """Move a corrupt file or folder to `<root>/quarantine/` (kept for inspection, never read again);
    returns where it went."""
    entry = Path(entry)
    target = own_folder(Path(root) / "quarantine") / f"{entry.parent.name}-{entry.name}.{_stamp()}"
    os.replace(entry, target)
    return target


# ---------------------------------------------------------------- concurrency


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False, wait: bool = True) -> Iterator[bool]:
    """Hold an advisory lock (POSIX flock) on `path` for the block: exclusive by default, so a second
    process computing the same entry waits and then reads the first one's result. Yields True once
    held; with `wait=False`, False at once (nothing taken) when another process holds it."""
    path = own_file(path)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ActiveRun:
    """A shared lock on `<root>/.active.lock` held while this process uses the cache (one per root
    and process: `ActiveRun.of(root)`). The first run to start when no other holds it removes the
    temporary files that killed runs left (`cleaned`)."""

    _open: dict[Path, "ActiveRun"] = {}

    def __init__(self, root: Path) -> None:
        self.root = own_folder(Path(root))
        self._handle = open(own_file(self.root / ".active.lock"), "a")
        self.cleaned: list[Path] = []
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass   # another run is active: its temporaries may be live
        else:
            self.cleaned = clean_stale_temps(self.root)
        fcntl.flock(self._handle, fcntl.LOCK_SH)

    def take_cleaned(self) -> list[Path]:
        """What the start-up clean removed, once (later calls: [])."""
        cleaned, self.cleaned = self.cleaned, []
        return cleaned

    @classmethod
    def of(cls, root: Path) -> "ActiveRun":
        key = Path(root).resolve()
        if key not in cls._open:
            cls._open[key] = cls(key)
        return cls._open[key]


def clean_stale_temps(root: Path) -> list[Path]:
    """Remove the temporary files and folders killed runs left: `.*.harness-tmp` under the cache's own
    folders (CACHE_FOLDERS), nothing else (call only while no other run is active)."""
    stale = [p for folder in CACHE_FOLDERS for p in (Path(root) / folder).rglob(f".*{TEMP_SUFFIX}")]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale
