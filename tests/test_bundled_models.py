"""Merged bundled models: the folder holds exactly base + LoRA adapter, built once, named by the adapter."""

from __future__ import annotations

import torch

from harness.models.bundled import merged_folder
from harness.models.loading import load_model
from harness.models.tiny import tiny_model_folder


def _adapter(base, folder, seed: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(load_model(str(base)).model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                                  init_lora_weights=False))
    model.save_pretrained(folder)
    return model.eval()


def test_merged_folder_computes_base_plus_adapter_and_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    base = tiny_model_folder("llama")
    peft_model = _adapter(base, tmp_path / "a", seed=1)
    folder = merged_folder(base, tmp_path / "a", "tiny-sft")
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    merged = load_model(str(folder)).model
    with torch.no_grad():
        expected, got = peft_model(ids).logits, merged(ids).logits
        plain = load_model(str(base)).model(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)            # the adapter changed the function
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert merged_folder(base, tmp_path / "a", "tiny-sft") == folder   # read back, not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    _adapter(base, tmp_path / "b", seed=2)
    assert merged_folder(base, tmp_path / "b", "tiny-sft") != folder   # another adapter, another folder
