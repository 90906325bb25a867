"""Generation backends behind `generate_answers`: the new token ids of a batch of prompts.

`hf` (the default, and the CPU path) runs the loaded model's `generate` on left-padded batches.
`vllm` (the `vllm` extra; GPU machines) serves the same model folder or hub id through a vLLM
engine, for continuous batching of long answers. Both return each prompt's new tokens the way HF
does, ending with the EOS token when the answer ended on one, so `generate_answers` cuts and
records them into the same `Generation` record and cache (the cache key names the backend when it
is not `hf`, since two engines can break near-ties differently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from harness.errors import UserError
from harness.files import content_key

BACKENDS = ("hf", "vllm")


class Backend(Protocol):
    name: str

    def generate(self, prompts: list[list[int]], decoding, eos: set[int]) -> list[list[int]]:
        """New token ids of each prompt (after the prompt; padding or an EOS may follow the answer)."""


class HFBackend:
    """`model.generate` on left-padded batches of the loaded model (what the audit ran from the start)."""

    name = "hf"

    def __init__(self, loaded) -> None:
        self.loaded = loaded

    def generate(self, prompts: list[list[int]], decoding, eos: set[int]) -> list[list[int]]:
        from transformers import GenerationConfig

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        device = next(model.parameters()).device
        config = GenerationConfig(
            max_new_tokens=decoding.max_new_tokens, do_sample=decoding.mode == "sample",
            temperature=decoding.temperature if decoding.mode == "sample" else None,
            top_p=decoding.top_p if decoding.mode == "sample" else None, top_k=None,
            pad_token_id=pad_id, eos_token_id=sorted(eos),
            stop_strings=list(decoding.stop_strings) or None)
        seed = int(content_key(decoding.seed, prompts)[:8], 16)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(seed)
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                 generation_config=config,
                                 tokenizer=tokenizer if decoding.stop_strings else None)
        return [row[width:].tolist() for row in out.cpu()]


class VllmBackend:
    """A vLLM engine on the loaded model's source (a local folder or a hub id; vLLM loads its own
    weights). Greedy is temperature 0; sampling is seeded per request with `decoding.seed`."""

    name = "vllm"

    def __init__(self, loaded, *, memory_fraction: float = 0.5) -> None:
        try:
            import vllm
        except ImportError:
            raise UserError("generation backend vllm: vLLM is not installed; pip install -e '.[vllm]' on a GPU "
                            "machine, or use the hf backend") from None
        source = vllm_source(loaded.info.source)
        self.vllm = vllm
        self.engine = vllm.LLM(model=source, tokenizer=source, dtype=loaded.info.dtype, seed=0,
                               gpu_memory_utilization=memory_fraction)

    def generate(self, prompts: list[list[int]], decoding, eos: set[int]) -> list[list[int]]:
        sample = decoding.mode == "sample"
        params = self.vllm.SamplingParams(
            n=1, max_tokens=decoding.max_new_tokens, temperature=decoding.temperature if sample else 0.0,
            top_p=decoding.top_p if sample else 1.0, seed=decoding.seed if sample else None,
            stop_token_ids=sorted(eos), stop=list(decoding.stop_strings) or None,
            include_stop_str_in_output=True, skip_special_tokens=False)
        outputs = self.engine.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        return [as_hf_tokens(out.outputs[0], eos) for out in outputs]


def as_hf_tokens(completion, eos: set[int]) -> list[int]:
    """A vLLM completion's token ids as HF returns them: an answer that stopped on an EOS token
    ends with it (vLLM may leave it out of `token_ids` and name it in `stop_reason`)."""
    ids = list(completion.token_ids)
    stopped_on_token = completion.finish_reason == "stop" and not isinstance(completion.stop_reason, str)
    if stopped_on_token and (not ids or ids[-1] not in eos):
        ids.append(completion.stop_reason if completion.stop_reason in eos else min(eos))
    return ids


def vllm_source(source: str) -> str:
    """What vLLM loads: a model folder or a hub id; a GGUF file or a built-in model is refused."""
    path = Path(source)
    if source.endswith(".gguf") or source.startswith(("tiny:", "bundled:")) or "+" in source:
        raise UserError(f"generation backend vllm serves a full model folder or hub id, not {source} (a GGUF file, "
                        "a built-in model or a merged LoRA adapter); use the hf backend")
    if path.exists() and not (path / "config.json").is_file():
        raise UserError(f"generation backend vllm: {source} has no config.json; give a HF model folder")
    return source


def make_backend(name: str, loaded) -> Backend:
    """The named backend for a loaded model (UserError for an unknown name)."""
    if name == "hf":
        return HFBackend(loaded)
    if name == "vllm":
        return VllmBackend(loaded)
    raise UserError(f"unknown generation backend {name!r}; choose one of {', '.join(BACKENDS)}")


def token_agreement(first: list, second: list) -> dict:
    """How two backends' answers to the same problems agree (Generations, same order): the share of
    token-identical answers, the mean share of each answer pair's common prefix (of the longer one),
    and per problem the first position where they part (None: identical)."""
    if len(first) != len(second) or [g.problem_id for g in first] != [g.problem_id for g in second]:
        raise UserError("token agreement needs the two backends' answers to the same problems, in order")
    rows = []
    for a, b in zip(first, second):
        x, y = a.answer_ids, b.answer_ids
        common = next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))
        parted = None if x == y else common
        rows.append({"problem_id": a.problem_id, "tokens": [len(x), len(y)], "first_difference": parted,
                     "prefix_share": common / max(len(x), len(y), 1)})
    return {"n": len(rows), "identical": sum(r["first_difference"] is None for r in rows) / max(len(rows), 1),
            "mean_prefix_share": sum(r["prefix_share"] for r in rows) / max(len(rows), 1), "problems": rows}
