"""Library versions: recorded in every artefact's provenance, and checked at model load against the
versions that passed the engine's identity tests (`tested_versions.json`, written by the test run)."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from pathlib import Path

LIBRARIES = ("rl-circuit-audit", "torch", "transformers", "numpy", "scipy", "statsmodels",
             "matplotlib", "pytest", "reasoning-gym", "sympy", "trl", "peft")
# the libraries whose internals the engine hooks into: a version outside the record may break its identities
ENGINE_LIBRARIES = ("torch", "transformers")
TESTED_VERSIONS = Path(__file__).resolve().parent / "tested_versions.json"
_warned: list[str] = []


def library_versions() -> dict[str, str]:
    """{package: installed version or "absent"}, plus the Python version."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def tested_versions(path: Path = TESTED_VERSIONS) -> dict[str, list[str]]:
    """{library: versions that passed the engine's identity tests}; {} when there is no record."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def engine_versions() -> dict[str, str]:
    """The installed engine libraries' release versions (a local build tag such as +cpu or +cu126 dropped:
    the CPU and CUDA builds of one release are the same code for the engine's identities)."""
    installed = library_versions()
    return {name: installed[name].split("+")[0] for name in ENGINE_LIBRARIES}


def untested_versions(path: Path = TESTED_VERSIONS) -> list[str]:
    """`library version` of each engine library installed at a version outside the record."""
    record = tested_versions(path)
    return [f"{name} {v}" for name, v in engine_versions().items() if v not in record.get(name, [])]


def warn_untested_versions(path: Path = TESTED_VERSIONS) -> None:
    """One line on stderr, once per process, when an engine library is at a version the identity
    tests have not passed on (README, "Versions")."""
    outside = untested_versions(path)
    if outside and outside != _warned:
        _warned[:] = outside
        print(f"warning: {', '.join(outside)} has not passed the engine's identity tests "
              f"(passed: {_passed(tested_versions(path))}); run `make test` to check it", file=sys.stderr)


def record_tested_versions(path: Path = TESTED_VERSIONS) -> dict[str, list[str]]:
    """Add the installed engine libraries' versions to the record (called by a test run whose identity
    tests all passed); written atomically, sorted."""
    from harness.files import atomic_write_text

    record = tested_versions(path)
    for name, version in engine_versions().items():
        record[name] = sorted(set(record.get(name, [])) | {version})
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def _passed(record: dict[str, list[str]]) -> str:
    return "; ".join(f"{name} {', '.join(record.get(name, [])) or 'none'}" for name in ENGINE_LIBRARIES)
