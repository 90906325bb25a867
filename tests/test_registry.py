"""The pair registry: the committed file parses, malformed entries fail with a clear UserError,
tiny pairs load, and the bundled SmolLM2 adapters merge to their stated fingerprints."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from harness.errors import UserError
from harness.models.pairs import load_pair_models
from harness.models.registry import (
    DEFAULT_REGISTRY,
    bundled_pairs,
    get_pair,
    load_registry,
)

PAPER_PAIRS = {
    "deepseek-math": ("deepseek-ai/deepseek-math-7b-instruct", "deepseek-ai/deepseek-math-7b-rl", "grpo"),
    "mistral": ("peiyi9979/mistral-7b-sft", "peiyi9979/math-shepherd-mistral-7b-rl", "ppo"),
    "distilled-qwen": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "nvidia/AceReason-Nemotron-7B", "grpo"),
    "qwen25-dpo": ("RLHFlow/Qwen2.5-7B-SFT", "RLHFlow/Qwen2.5-7B-DPO", "dpo"),
}
VALID = """
[[pair]]
name = "p"
family = "llama"
base = "org/base"
post = "org/post"
algorithm = "grpo"
algorithm_kind = "online-rl"
prompt_template = "chat"
max_new_tokens = 16
datasets = ["rg:chain_sum"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_committed_registry_holds_the_paper_pairs_with_their_hub_ids():
    pairs = load_registry()
    for name, (base, post, algo) in PAPER_PAIRS.items():
        assert (pairs[name].base, pairs[name].post, pairs[name].algorithm) == (base, post, algo)
        assert not pairs[name].bundled


def test_bundled_smollm2_pairs_share_one_base_and_differ_in_algorithm_or_seed_only():
    smol = [p for p in bundled_pairs() if p.name.startswith("smollm2-")]
    kinds = [p.algorithm_kind for p in smol]
    assert kinds.count("online-rl") >= 3 and kinds.count("offline-preference") >= 2
    assert kinds.count("online-preference") >= 1 and kinds.count("seed-control") == 1
    assert {p.algorithm for p in smol if p.algorithm_kind == "online-rl"} == {"grpo", "rloo"}
    assert len({p.base for p in smol}) == 1
    assert len({(p.prompt_template, p.max_new_tokens, p.datasets) for p in smol}) == 1
    assert len({p.datasets for p in smol}) == 1 and len(smol[0].datasets) >= 2
    for p in smol:
        assert (Path(p.post_adapter) / "adapter_config.json").is_file(), p.name
        assert p.post_fingerprint.startswith("sha256:") and p.adapter_fingerprint.startswith("sha256:"), p.name
    control = next(p for p in smol if p.algorithm_kind == "seed-control")
    runs = {Path(p.post_adapter): p for p in smol if p.algorithm_kind != "seed-control"}
    a, b = runs[Path(control.base_adapter)], runs[Path(control.post_adapter)]
    assert a.algorithm == b.algorithm == control.algorithm and a.name != b.name
    assert (control.base_fingerprint, control.post_fingerprint) == (a.post_fingerprint, b.post_fingerprint)


def test_a_seed_control_needs_a_base_adapter(tmp_path):
    text = VALID.replace('algorithm_kind = "online-rl"', 'algorithm_kind = "seed-control"')
    with pytest.raises(UserError, match="seed-control pair needs `base_adapter`"):
        load_registry(_write(tmp_path, text))


def test_valid_minimal_entry_parses(tmp_path):
    spec = get_pair("p", _write(tmp_path, VALID))
    assert spec.datasets == ("rg:chain_sum",) and spec.post_adapter is None


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('algorithm = "grpo"', 'algorithm = "magic"'), "algorithm = 'magic'"),
    (lambda t: t.replace('family = "llama"\n', ""), "missing required key(s) family"),
    (lambda t: t.replace('max_new_tokens = 16', 'max_new_tokens = "lots"'), "max_new_tokens must be"),
    (lambda t: t.replace('prompt_template = "chat"', 'prompt_template = "nope"'), "prompt_template"),
    (lambda t: t + 'post_adapter = "x"\n', "exactly one of `post`"),
    (lambda t: t + 'colour = "red"\n', "unknown key(s) colour"),
    (lambda t: t.replace('datasets = ["rg:chain_sum"]', 'datasets = "rg:chain_sum"'), "datasets must be a list"),
    (lambda t: t + t, "appears twice"),
    (lambda t: t.replace("[[pair]]", "[[pair]"), "not valid TOML"),
    (lambda t: "", "no [[pair]] tables"),
    (lambda t: t + "base_revision = 3\n", "base_revision must be a hub branch, tag or commit (text), got 3"),
    (lambda t: t.replace('post = "org/post"', 'post_adapter = "x"') + 'post_revision = "main"\n',
     "post_revision pins `post`, a hub id; this pair has a post_adapter"),
])
def test_malformed_entry_gives_clear_user_error(tmp_path, edit, message):
    with pytest.raises(UserError) as err:
        load_registry(_write(tmp_path, edit(VALID)))
    assert message in str(err.value)


def test_unknown_pair_and_missing_file_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="known pairs: deepseek-math"):
        get_pair("no-such-pair")
    with pytest.raises(UserError, match="does not exist"):
        load_registry(tmp_path / "absent.toml")


def test_adapter_path_is_resolved_relative_to_the_registry_file():
    assert Path(get_pair("smollm2-grpo").post_adapter) == DEFAULT_REGISTRY.parent / "smollm2" / "grpo" / "adapter"


@pytest.mark.slow
def test_tiny_pair_loads_two_different_models():
    base, post = load_pair_models(get_pair("tiny-llama"))
    assert base.info.fingerprint != post.info.fingerprint
    assert type(base.model).__name__ == "LlamaForCausalLM"
    ids = base.tokenizer(["3+4="], return_tensors="pt")
    assert not torch.equal(base.model(**ids).logits, post.model(**ids).logits)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-grpo", "smollm2-rloo", "smollm2-dpo", "smollm2-online-dpo",
                                  "smollm2-grpo-seeds"])
def test_bundled_adapter_merges_to_stated_fingerprint_and_differs_from_base(name):
    from harness.models.loading import _weight_files, sha256_files

    spec = get_pair(name)
    assert sha256_files(_weight_files(Path(spec.post_adapter))) == spec.adapter_fingerprint
    base, post = load_pair_models(spec)
    assert base.info.fingerprint == spec.base_fingerprint
    assert post.info.fingerprint == spec.post_fingerprint
    base_sd, post_sd = base.model.state_dict(), post.model.state_dict()
    assert base_sd.keys() == post_sd.keys()
    changed = [k for k in base_sd if not torch.equal(base_sd[k], post_sd[k])]
    assert any("q_proj" in k for k in changed) and any("mlp" in k for k in changed)


def test_a_pinned_hub_revision_is_part_of_the_pair_identity(tmp_path):
    """Cache keys hash the pair identity: pinning (or re-pinning) a hub revision changes them."""
    from harness.audit.config import AuditConfig
    from harness.audit.session import ModelSession
    from harness.audit.store import Ledger

    identities = []
    for extra in ("", 'base_revision = "v1.0"\n', 'base_revision = "0123abcd"\n'):
        registry = _write(tmp_path, VALID + extra)
        session = ModelSession(AuditConfig(), Ledger(), registry)
        identities.append(session.pair_identity(session.pair("p")))
    assert [i["base_files"] for i in identities] == ["hub:org/base@unpinned", "hub:org/base@v1.0",
                                                     "hub:org/base@0123abcd"]


def test_a_revision_for_a_local_model_and_a_dataset_revision_are_handled(tmp_path, monkeypatch):
    from harness.data import problems
    from harness.models.loading import load_model

    (tmp_path / "model").mkdir()
    with pytest.raises(UserError, match="--revision v1 applies to hub ids; .* is a local folder"):
        load_model(str(tmp_path / "model"), revision="v1")
    asked = {}
    monkeypatch.setattr(problems, "load_hub", lambda dataset_id, **kw: asked.update(id=dataset_id, **kw))
    problems.load_problems("hf:openai/gsm8k:main@e53f048")
    assert asked == {"id": "openai/gsm8k", "config": "main", "revision": "e53f048"}
