"""Generation with a tiny random Llama and the SmolLM2 tokenizer: determinism, padding, cache."""

import json

import pytest
import torch

from harness.data.generation import (
    Decoding,
    Generation,
    _finish,
    generate_answers,
    load_generations,
    save_generations,
)
from harness.data.problems import Problem, load_reasoning_gym
from harness.errors import UserError
from harness.models.loading import (
    LoadedModel,
    ModelInfo,
    smollm2_gguf_path,
    state_dict_fingerprint,
)
from harness.models.prompts import TEMPLATES, encode_prompt, get_template, render_prompt


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    path = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    info = ModelInfo(source="tiny-llama", fingerprint=state_dict_fingerprint(model),
                     model_class="LlamaForCausalLM", dtype="float32", device="cpu")
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)


@pytest.fixture
def problems():
    return list(load_reasoning_gym("chain_sum", n=6, seed=1).problems)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_paper_templates_are_verbatim():
    q = "What is 1+1?"
    assert render_prompt(TEMPLATES["deepseek-math"], q) == (
        "User: What is 1+1?\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.\n\nAssistant:")
    assert render_prompt(TEMPLATES["mistral"], q) == "[INST] What is 1+1?[/INST]"
    assert render_prompt(TEMPLATES["qwen25-math-cot"], q) == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n")


def test_question_with_braces_is_not_formatted():
    assert "{x}" in render_prompt(TEMPLATES["mistral"], "Solve {x} + 1 = 2")


def test_chat_template_uses_the_tokenizer(tokenizer):
    prompt, ids = encode_prompt(TEMPLATES["chat"], "2+2?", tokenizer)
    assert prompt.endswith("<|im_start|>assistant\n") and "2+2?" in prompt
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(ids[0]) == prompt.count("<|im_start|>")  # no BOS added twice


def test_unknown_template_is_a_user_error():
    with pytest.raises(UserError, match="deepseek-math"):
        get_template("alpaca")


def test_greedy_generation_is_deterministic_and_cached(tiny, problems, cache_dir, monkeypatch):
    decoding = Decoding(max_new_tokens=12, batch_size=4)
    template = TEMPLATES["deepseek-math"]
    first = generate_answers(tiny, problems, template, decoding, progress=False)
    assert [g.problem_id for g in first] == [p.id for p in problems]
    assert all(len(g.answer_ids) <= 12 and g.answer_ids for g in first)
    assert len(list((cache_dir / "generations").glob("*.json"))) == len(problems)

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran although every answer was cached")

    monkeypatch.setattr(tiny.model, "generate", refuse)
    second = generate_answers(tiny, problems, template, decoding, progress=False)
    assert second == first


def test_cache_key_changes_with_decoding(tiny, problems, cache_dir):
    template = TEMPLATES["deepseek-math"]
    generate_answers(tiny, problems[:2], template, Decoding(max_new_tokens=5), progress=False)
    generate_answers(tiny, problems[:2], template, Decoding(max_new_tokens=6), progress=False)
    generate_answers(tiny, problems[:2], TEMPLATES["mistral"], Decoding(max_new_tokens=5), progress=False)
    assert len(list((cache_dir / "generations").glob("*.json"))) == 6


def test_left_padded_batches_match_single_prompts(tiny, problems):
    template = TEMPLATES["deepseek-math"]
    ragged = problems[:3] + [Problem("long", "A much longer question " * 5, "1", "gsm8k")]
    batched = generate_answers(tiny, ragged, template, Decoding(max_new_tokens=10, batch_size=4),
                               use_cache=False, progress=False)
    single = generate_answers(tiny, ragged, template, Decoding(max_new_tokens=10, batch_size=1),
                              use_cache=False, progress=False)
    assert len({len(g.prompt_ids) for g in batched}) > 1
    assert [g.answer_ids for g in batched] == [g.answer_ids for g in single]


def test_sampling_is_seeded(tiny, problems):
    template = TEMPLATES["deepseek-math"]

    def run(seed):
        decoding = Decoding(mode="sample", temperature=1.0, top_p=0.9, seed=seed, max_new_tokens=8)
        return [g.answer_ids for g in generate_answers(tiny, problems[:3], template, decoding,
                                                       use_cache=False, progress=False)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_finish_cuts_at_eos_and_before_stop_strings(tokenizer):
    eos = tokenizer.eos_token_id
    body = tokenizer("The answer is 4.", add_special_tokens=False)["input_ids"]
    tail = tokenizer("\nUser: next", add_special_tokens=False)["input_ids"]
    assert _finish(body + [eos] + tail, {eos}, tokenizer, ()) == (body, "eos")
    assert _finish(body + tail, {eos}, tokenizer, ("User:",))[1] == "stop"
    cut, _ = _finish(body + tail, {eos}, tokenizer, ("User:",))
    assert "User" not in tokenizer.decode(cut) and tokenizer.decode(cut).startswith("The answer is 4.")
    assert _finish(body, {eos}, tokenizer, ("User:",)) == (body, "length")


def test_empty_problem_list_is_a_user_error(tiny):
    with pytest.raises(UserError, match="empty"):
        generate_answers(tiny, [], TEMPLATES["mistral"])


def test_bad_decoding_is_a_user_error():
    with pytest.raises(UserError, match="temperature"):
        Decoding(mode="sample", temperature=0.0)


def test_generations_round_trip_through_jsonl(tmp_path):
    gen = Generation("q1", "p", (1, 2), (3, 4), "t", "eos", "sha256:x", "mistral", (5,))
    save_generations(tmp_path / "g.jsonl", [gen])
    assert load_generations(tmp_path / "g.jsonl") == [(gen, None)]


def test_generation_rows_round_trip_and_refuse_non_integer_token_ids() -> None:
    from harness.data.generation import Generation

    g = Generation("q1", "p", (7, 8), (1, 2, 3), "t", "eos", "sha256:x", "bare", None)
    assert Generation.from_json(g.to_json()) == g                         # tuples, as the cache keeps them
    assert Generation.from_json(json.loads(json.dumps(g.to_json()))) == g  # lists, as a JSONL file holds them
    for bad in (["1", "2"], [1.5], [True], [-1], "12"):
        with pytest.raises(TypeError, match="answer_ids must be a list of token ids"):
            Generation.from_json({**g.to_json(), "answer_ids": bad})
