"""What identifies a model's scores is the whole model: weights, config, tokenizer; and a registry
that records a model's fingerprint is held to it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from model_factories import tiny_model

from harness.audit.config import AuditConfig
from harness.audit.session import check_fingerprint
from harness.audit.stages import model_key
from harness.audit.store import eap_key
from harness.errors import UserError
from harness.models.loading import load_model


def test_an_edited_config_gives_other_score_keys(tmp_path: Path) -> None:
    """Finding F8: with rms_norm_eps 1e-6 -> 0.5 and the same weights, a rerun read the old scores back.
    The weights' fingerprint is the same; the model's definition, and so every score's key, is not."""
    tiny_model("llama", dtype=torch.float32).save_pretrained(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 0.5}))
    a, b = (load_model(str(tmp_path / n), require_tokenizer=False).info for n in "ab")
    assert a.fingerprint == b.fingerprint and a.definition != b.definition
    rows = [{"id": "q0", "prompt_ids": [1, 2], "target_ids": [3]}]
    keys = {eap_key(model_key(vars(info)), rows, AuditConfig()) for info in (a, b)}
    assert len(keys) == 2
    assert model_key({"fingerprint": a.fingerprint}) == a.fingerprint   # answers cached before: unchanged keys


def test_a_registry_fingerprint_that_does_not_match_the_files_stops_the_run() -> None:
    """Finding u21: the registry's base_fingerprint / post_fingerprint were never compared with the files."""
    spec = SimpleNamespace(name="p", base_fingerprint="sha256:aaaa", post_fingerprint=None, base_adapter=None,
                           post=None)
    loaded = SimpleNamespace(info=SimpleNamespace(fingerprint="sha256:bbbb"))
    with pytest.raises(UserError, match="pair p: the base model's weights .* are not the ones its registry entry "
                                        "records"):
        check_fingerprint(spec, "base", loaded, "float32")
    check_fingerprint(spec, "post", loaded, "float32")                    # nothing recorded: nothing to hold
    merged = SimpleNamespace(name="p", base_fingerprint=None, post_fingerprint="sha256:aaaa", base_adapter=None,
                             post=None)
    check_fingerprint(merged, "post", loaded, "bfloat16")                 # a merge's fingerprint is float32's
    with pytest.raises(UserError, match="post_fingerprint"):
        check_fingerprint(merged, "post", loaded, "float32")


def test_an_adapter_of_the_wrong_shape_names_the_first_mismatch(tmp_path: Path) -> None:
    """Finding u24: the message was cut at 'Error(s) in loading state_dict for PeftModel:'."""
    import transformers
    from peft import LoraConfig, get_peft_model

    from harness.models.pairs import merged_adapter_model
    from harness.models.tiny import make_tokenizer

    small = tiny_model("llama", dtype=torch.float32)
    small.save_pretrained(tmp_path / "base")
    make_tokenizer().save_pretrained(tmp_path / "base")
    config = small.config.to_dict()
    wide = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(
        **{**config, "hidden_size": 2 * config["hidden_size"], "intermediate_size": 2 * config["intermediate_size"]}))
    get_peft_model(wide, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    with pytest.raises(UserError, match=r"does not fit the base .*: size mismatch for .*q_proj\.lora_A"):
        merged_adapter_model("p", str(tmp_path / "base"), tmp_path / "adapter", "float32", "cpu")
