"""Library versions recorded in every artefact's provenance."""

from __future__ import annotations

import importlib.metadata
import platform

LIBRARIES = ("rl-circuit-audit", "torch", "transformers", "numpy", "scipy", "statsmodels",
             "matplotlib", "pytest", "reasoning-gym", "sympy", "trl", "peft")


def library_versions() -> dict[str, str]:
    """{package: installed version or "absent"}, plus the Python version."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions
