"""Which models are resident: on the CPU a session holds one pair's two models at a time; on CUDA
one model at a time (a 7B pair's two bf16 models are 28 GB before any activation; the planner counts
the same). Models load on first use; a pair's weights are identified by file hashes without loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.audit.config import AuditConfig
from harness.audit.store import Ledger
from harness.errors import UserError
from harness.models.loading import LoadedModel, sha256_files
from harness.models.pairs import build_reference, load_pair_models, load_pair_side
from harness.models.registry import PairSpec, load_registry

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".json")


class ModelSession:
    """The registry's pairs and the one pair whose models are loaded (counted as "models:loaded")."""

    def __init__(self, config: AuditConfig, ledger: Ledger, registry: str | Path | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self.pairs = load_registry(registry)
        self.resident = resident_models(config.device)
        self._loaded: dict[tuple[str, str], LoadedModel] = {}
        self._failed: dict[str, Exception] = {}

    def pair(self, name: str) -> PairSpec:
        if name not in self.pairs:
            raise UserError(f"unknown pair {name!r}; known pairs: {', '.join(self.pairs)}")
        return self.pairs[name]

    def model(self, spec: PairSpec, side: str) -> LoadedModel:
        """One model of a pair (side `base` or `post`), loaded on first use. Loading frees what no longer
        fits: another pair's models (both resident), or any other model (one resident). A pair that
        failed to load is not tried again in the session: its first error is raised again."""
        if spec.name in self._failed:
            raise self._failed[spec.name].with_traceback(None)
        if (spec.name, side) not in self._loaded:
            self._free()
            try:
                if self.resident == 2:
                    base, post = load_pair_models(spec, dtype=self.config.dtype, device=self.config.device)
                    self._loaded = {(spec.name, "base"): base, (spec.name, "post"): post}
                else:
                    self._loaded = {(spec.name, side): load_pair_side(spec, side, self.config.dtype,
                                                                      self.config.device)}
                for (_, loaded_side), loaded in self._loaded.items():
                    check_fingerprint(spec, loaded_side, loaded, self.config.dtype)
            except Exception as err:
                self._failed[spec.name] = err
                raise
            self.ledger.count("models", "loaded")
        return self._loaded[(spec.name, side)]

    def _free(self) -> None:
        self._loaded = {}
        if self.config.device.startswith("cuda"):
            import gc

            import torch

            gc.collect()
            torch.cuda.empty_cache()

    def pair_identity(self, spec: PairSpec) -> dict:
        """What identifies the pair's weights without loading them: the registry entry plus hashes
        of the weight files (or adapter files) behind each reference."""
        ident = {k: v for k, v in dataclasses.asdict(spec).items() if k != "notes"}
        ident["base_files"] = self._hash_reference(build_reference(spec.base), spec.base_revision)
        if spec.post is not None:
            ident["post_files"] = self._hash_reference(build_reference(spec.post), spec.post_revision)
        for key, folder in (("adapter_files", spec.post_adapter), ("base_adapter_files", spec.base_adapter)):
            if folder is None:
                continue
            if not (Path(folder) / "adapter_config.json").is_file():
                raise UserError(f"pair {spec.name}: adapter folder {folder} has no adapter_config.json; "
                                "train it (see fixtures/smollm2/rebuild.sh) or choose other --pairs")
            ident[key] = self._hash_folder(Path(folder))
        return ident

    def _hash_reference(self, ref: str, revision: str | None) -> str:
        """A local reference's file hash; a hub id with its pinned revision ("unpinned" when none:
        such a key cannot see the hub repo change, which the README says)."""
        path = Path(ref)
        return self._hash_folder(path) if path.exists() else f"hub:{ref}@{revision or 'unpinned'}"

    def _hash_folder(self, folder: Path) -> str:
        files = sorted(p for p in ([folder] if folder.is_file() else folder.iterdir())
                       if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        return sha256_files(files)   # persisted by path, size and mtime (harness.models.loading)


def resident_models(device: str) -> int:
    """How many models a session keeps loaded on `device`: 1 on CUDA, both of a pair elsewhere."""
    return 1 if device.startswith("cuda") else 2


def check_fingerprint(spec: PairSpec, side: str, loaded: LoadedModel, dtype: str) -> None:
    """The registry's `base_fingerprint` / `post_fingerprint`, where it records one, against the model
    loaded: a mismatch is a UserError (other weights than the pair was registered with). A merged
    adapter's fingerprint is of its float32 weights, so it is compared in float32 runs only."""
    expected = spec.base_fingerprint if side == "base" else spec.post_fingerprint
    merged = spec.base_adapter is not None if side == "base" else spec.post is None
    if expected is None or (merged and dtype != "float32") or loaded.info.fingerprint == expected:
        return
    raise UserError(f"pair {spec.name}: the {side} model's weights ({loaded.info.fingerprint[:19]}…) are not the "
                    f"ones its registry entry records ({side}_fingerprint {expected[:19]}…); rebuild the model or "
                    "correct the registry")
