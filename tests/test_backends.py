"""Generation backends: the vLLM adapter against a fake engine with vLLM's interface (`LLM`,
`SamplingParams`, `generate` returning request outputs), since vLLM cannot be installed on this CPU
machine; `gpu-check` and `generate --compare-backends` exercise the real import where a GPU is lent.

The fake serves the model folder it is given with HF's greedy `generate`, one prompt at a time, and
returns what vLLM returns: the new token ids, `finish_reason` stop or length, and the stop token in
`stop_reason`, with the stop token left in `token_ids` or not (vLLM versions differ)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from harness.audit.config import AuditConfig
from harness.audit.store import answers_key
from harness.cli import main
from harness.data.backends import as_hf_tokens, token_agreement, vllm_source
from harness.data.generation import Decoding, Generation, generate_answers
from harness.data.problems import load_reasoning_gym
from harness.errors import UserError
from harness.models.loading import load_model, smollm2_gguf_path


class FakeLLM:
    """vLLM's `LLM` over HF: greedy `generate` per prompt on the folder `model`."""

    calls = 0
    stop_token_in_ids = False

    def __init__(self, model: str, tokenizer: str, dtype: str, seed: int, gpu_memory_utilization: float) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).eval()

    def generate(self, prompts: list[dict], params: "FakeSamplingParams", use_tqdm: bool = True) -> list:
        assert params.kwargs["temperature"] == 0.0 and params.kwargs["n"] == 1   # greedy
        stops = set(params.kwargs["stop_token_ids"])
        out = []
        for prompt in prompts:
            FakeLLM.calls += 1
            ids = torch.tensor([prompt["prompt_token_ids"]])
            with torch.no_grad():
                row = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          max_new_tokens=params.kwargs["max_tokens"], eos_token_id=sorted(stops),
                                          pad_token_id=min(stops))[0, ids.shape[1]:].tolist()
            end = next((i for i, t in enumerate(row) if t in stops), None)
            if end is None:
                completion = SimpleNamespace(token_ids=row, finish_reason="length", stop_reason=None)
            else:
                kept = row[: end + 1] if FakeLLM.stop_token_in_ids else row[:end]
                completion = SimpleNamespace(token_ids=kept, finish_reason="stop", stop_reason=row[end])
            out.append(SimpleNamespace(outputs=[completion]))
        return out


class FakeSamplingParams:
    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.calls = 0
    return module


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny random llama with SmolLM2's tokenizer, saved as a HF folder (what vLLM loads)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def loaded(model_folder, tmp_path, monkeypatch):
    """The folder loaded for HF, with a second EOS the random model emits often, so that some
    answers end on a stop token and others run to the budget."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    model = load_model(str(model_folder), dtype="float32")
    probe = generate_answers(model, PROBLEMS, "mistral", DECODING, use_cache=False, progress=False)
    common = Counter(t for g in probe for t in g.answer_ids[3:]).most_common(1)[0][0]
    model.model.generation_config.eos_token_id = [model.tokenizer.eos_token_id, common]
    return model


PROBLEMS = list(load_reasoning_gym("chain_sum", n=6, seed=1).problems)
DECODING = Decoding(max_new_tokens=12, batch_size=3)


@pytest.mark.parametrize("stop_token_in_ids", [False, True])
def test_vllm_answers_are_the_hf_answers_in_the_same_record(fake_vllm, loaded, stop_token_in_ids) -> None:
    FakeLLM.stop_token_in_ids = stop_token_in_ids
    hf = generate_answers(loaded, PROBLEMS, "mistral", DECODING, use_cache=False, progress=False)
    served = generate_answers(loaded, PROBLEMS, "mistral", DECODING, use_cache=False, progress=False, backend="vllm")
    assert {g.finish_reason for g in hf} == {"eos", "length"}     # both endings are exercised
    assert served == hf and FakeLLM.calls == len(PROBLEMS)


def test_the_vllm_backend_has_its_own_cache_entries(fake_vllm, loaded) -> None:
    generate_answers(loaded, PROBLEMS, "mistral", DECODING, progress=False)                     # hf, cached
    first = generate_answers(loaded, PROBLEMS, "mistral", DECODING, progress=False, backend="vllm")
    assert FakeLLM.calls == len(PROBLEMS)                         # not served from hf's entries
    again = generate_answers(loaded, PROBLEMS, "mistral", DECODING, progress=False, backend="vllm")
    assert again == first and FakeLLM.calls == len(PROBLEMS)      # read back from its own


def test_compare_backends_reports_token_agreement(fake_vllm, loaded, model_folder, tmp_path) -> None:
    out = tmp_path / "agreement.json"
    assert main(["generate", "--model", str(model_folder), "--dataset", "rg:chain_sum", "--n", "4", "--data-seed",
                 "1", "--template", "mistral", "--max-new-tokens", "8", "--compare-backends", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["backends"] == ["hf", "vllm"] and report["n"] == 4
    assert report["identical"] == 1.0 and report["mean_prefix_share"] == 1.0


def _gen(pid: str, ids: tuple[int, ...]) -> Generation:
    return Generation(pid, "p", (1,), ids, "", "eos", "sha256:x", "t")


def test_token_agreement_finds_where_answers_part() -> None:
    report = token_agreement([_gen("a", (1, 2, 3, 4)), _gen("b", (5, 6)), _gen("c", ())],
                             [_gen("a", (1, 2, 9)), _gen("b", (5, 6)), _gen("c", (7,))])
    assert [r["first_difference"] for r in report["problems"]] == [2, None, 0]
    assert report["identical"] == pytest.approx(1 / 3)
    assert report["mean_prefix_share"] == pytest.approx((2 / 4 + 1 + 0) / 3)
    with pytest.raises(UserError, match="same problems"):
        token_agreement([_gen("a", (1,))], [_gen("b", (1,))])


def test_a_completion_that_stopped_on_a_token_ends_with_it_as_in_hf() -> None:
    eos = {2, 7}
    assert as_hf_tokens(SimpleNamespace(token_ids=[5, 6], finish_reason="stop", stop_reason=7), eos) == [5, 6, 7]
    assert as_hf_tokens(SimpleNamespace(token_ids=[5, 7], finish_reason="stop", stop_reason=7), eos) == [5, 7]
    assert as_hf_tokens(SimpleNamespace(token_ids=[5, 6], finish_reason="length", stop_reason=None), eos) == [5, 6]
    assert as_hf_tokens(SimpleNamespace(token_ids=[5], finish_reason="stop", stop_reason="###"), eos) == [5]


@pytest.mark.parametrize("source", ["m.gguf", "bundled:smollm2-135m-instruct", "tiny:llama", "/base+/adapter"])
def test_vllm_serves_full_model_folders_and_hub_ids_only(source: str) -> None:
    with pytest.raises(UserError, match="use the hf backend"):
        vllm_source(source)
    assert vllm_source("deepseek-ai/deepseek-math-7b-rl") == "deepseek-ai/deepseek-math-7b-rl"


def test_without_vllm_installed_the_backend_says_how_to_get_it(monkeypatch, loaded) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UserError, match=r"vLLM is not installed; pip install -e '.\[vllm\]'"):
        generate_answers(loaded, PROBLEMS[:1], "mistral", DECODING, use_cache=False, progress=False, backend="vllm")


def test_the_audit_setting_names_the_backend_in_the_answers_key() -> None:
    hf, vllm = AuditConfig(), AuditConfig(generation_backend="vllm")
    keys = {answers_key({"pair": "p"}, "d", c, "t", {}) for c in (hf, vllm)}
    assert len(keys) == 2
    with pytest.raises(UserError, match="generation_backend must be one of hf, vllm"):
        AuditConfig(generation_backend="tgi")
