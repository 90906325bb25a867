"""Batched answer generation (greedy by default, as the paper), cached on disk per prompt.

One checksummed cache entry per (model fingerprint, template, prompt, decoding settings, CPU thread
count); a second run with the
same inputs reads every answer back and runs the model on nothing. Batch size is not part of the
key: left-padded batches give the same greedy tokens up to float rounding in near-ties.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

from tqdm.auto import tqdm

from harness.data.backends import Backend, make_backend
from harness.data.problems import Problem
from harness.errors import UserError
from harness.files import (
    CorruptEntry,
    atomic_write_text,
    cache_root,
    content_key,
    quarantine,
    read_checked_json,
    read_utf8,
    write_checked_json,
)
from harness.models.loading import bit_context
from harness.models.prompts import PromptTemplate, encode_prompt, get_template

FinishReason = Literal["eos", "stop", "length"]
CACHE_VERSION = "generation-v1"


MIN_TEMPERATURE = 0.01   # logits / 1e-300 overflow to inf (finding g01); below 0.01 sampling is greedy in effect


@dataclass(frozen=True)
class Decoding:
    """Decoding settings. max_new_tokens: answer budget in tokens. temperature/top_p/seed apply
    to mode "sample" only. stop_strings end an answer (the stop string itself is cut off)."""

    mode: Literal["greedy", "sample"] = "greedy"
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    stop_strings: tuple[str, ...] = ()
    batch_size: int = 8

    def __post_init__(self):
        if self.mode not in ("greedy", "sample"):
            raise UserError(f"decoding mode must be greedy or sample, got {self.mode!r}")
        if self.max_new_tokens < 1:
            raise UserError(f"max new tokens must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {self.batch_size}")
        empty = [s for s in self.stop_strings if not isinstance(s, str) or not s]
        if empty:
            raise UserError(f"stop strings must be non-empty text, got {empty[0]!r}; drop it or give the string")
        if self.mode == "sample" and not (MIN_TEMPERATURE <= self.temperature < math.inf and 0 < self.top_p <= 1):
            raise UserError(f"sampling needs a finite temperature >= {MIN_TEMPERATURE} (below it, decode greedy) and "
                            f"0 < top_p <= 1, got "
                            f"temperature={self.temperature}, top_p={self.top_p}")

    def cache_fields(self) -> dict:
        """The settings that change the tokens produced (sampling parameters only when sampling)."""
        keep = {"mode": self.mode, "max_new_tokens": self.max_new_tokens,
                "stop_strings": list(self.stop_strings)}
        if self.mode == "sample":
            keep.update(temperature=self.temperature, top_p=self.top_p, seed=self.seed)
        return keep


@dataclass(frozen=True)
class DecodingSettings:
    """The audit's decoding choices (`decoding.*` settings), resolved per pair by `for_pair`.
    max_new_tokens None: the pair's own answer budget. Defaults are `Decoding`'s."""

    mode: Literal["greedy", "sample"] = Decoding.mode
    max_new_tokens: int | None = None
    temperature: float = Decoding.temperature
    top_p: float = Decoding.top_p
    batch_size: int = Decoding.batch_size
    seed: int = Decoding.seed   # sampling's seed (greedy decoding draws nothing)

    def __post_init__(self):
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UserError(f"decoding.max_new_tokens must be at least 1 or none, got {self.max_new_tokens}")
        if self.seed < 0:
            raise UserError(f"decoding.seed must be at least 0, got {self.seed}")
        self.for_pair(1)   # the rest is Decoding's own check

    def for_pair(self, budget: int) -> Decoding:
        """The Decoding of a pair whose answer budget is `budget` tokens."""
        return Decoding(mode=self.mode, max_new_tokens=self.max_new_tokens or budget, temperature=self.temperature,
                        top_p=self.top_p, seed=self.seed, batch_size=self.batch_size)


@dataclass(frozen=True)
class Generation:
    """One model answer. answer_ids: generated tokens without EOS or stop string (length T).
    reference_ids: the dataset's reference solution under the same tokenizer, if it has one."""

    problem_id: str
    prompt: str
    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    model_fingerprint: str
    template: str
    reference_ids: tuple[int, ...] | None = field(default=None)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> "Generation":
        """Inverse of to_json; token ids must be lists of whole numbers (TypeError otherwise)."""
        if not isinstance(row, dict):
            raise TypeError(f"expected a JSON object, got {type(row).__name__}")
        tuples = {}
        for key in ("prompt_ids", "answer_ids", "reference_ids"):
            ids = row.get(key)
            if ids is not None and not (isinstance(ids, (list, tuple)) and all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)):
                raise TypeError(f"{key} must be a list of token ids (whole numbers >= 0), got {ids!r:.60}")
            tuples[key] = tuple(ids) if ids is not None else None
        return cls(**{**row, **tuples})


def _eos_ids(loaded) -> set[int]:
    ids = {loaded.tokenizer.eos_token_id}
    configured = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


def _cut_before_stop(ids: list[int], tokenizer, stops: Sequence[str]) -> list[int] | None:
    """Longest token prefix whose text ends at or before the first stop string; None if no stop."""
    text = tokenizer.decode(ids, skip_special_tokens=False)
    hits = [text.find(s) for s in stops if s and s in text]
    if not hits:
        return None
    limit = min(hits)
    lo, hi = 0, len(ids)  # invariant: decode(ids[:lo]) fits within the limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=False)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return ids[:lo]


def _finish(new_ids: list[int], eos: set[int], tokenizer, stops: Sequence[str]) -> tuple[list[int], FinishReason]:
    eos_at = next((i for i, t in enumerate(new_ids) if t in eos), None)
    ids = new_ids if eos_at is None else new_ids[:eos_at]
    cut = _cut_before_stop(ids, tokenizer, stops) if stops else None
    if cut is not None:
        return cut, "stop"
    return ids, "eos" if eos_at is not None else "length"


def generation_key(fingerprint: str, template: PromptTemplate, prompt: str, prompt_ids: Sequence[int],
                   decoding: Decoding) -> str:
    """What identifies one answer: model fingerprint, template, prompt (text and ids) and the
    decoding settings that change tokens (the cache key of generate_answers and of answer fixtures)."""
    return content_key(CACHE_VERSION, fingerprint, dataclasses.asdict(template), prompt, list(prompt_ids),
                       decoding.cache_fields())


def generate_answers(loaded, problems: Sequence[Problem], template: PromptTemplate | str,
                     decoding: Decoding = Decoding(), *, use_cache: bool = True,
                     progress: bool = True, healed: list[dict] | None = None,
                     backend: str | Backend = "hf") -> list[Generation]:
    """Answer every problem with `loaded` (a models.LoadedModel); output order = problem order.

    template: a PromptTemplate or its name. Prompts are grouped by length into batches of
    `decoding.batch_size` to limit padding. healed: where to list cache entries found corrupt (each
    is moved aside and regenerated). backend: `hf` or `vllm` (harness.data.backends), or a backend
    built for `loaded`; a backend other than hf is part of each answer's cache key.
    """
    if isinstance(template, str):
        template = get_template(template)
    if not problems:
        raise UserError("no problems to answer: the dataset is empty")
    tokenizer, fingerprint = loaded.tokenizer, loaded.info.fingerprint
    encoded = [encode_prompt(template, p.question, tokenizer) for p in problems]
    context = getattr(loaded.model.config, "max_position_embeddings", None)
    too_long = [(p.id, len(ids)) for p, (_, ids) in zip(problems, encoded) if context and len(ids) >= context]
    if too_long:
        raise UserError(f"problem {too_long[0][0]}: its prompt is {too_long[0][1]} tokens, at least the model's "
                        f"context of {context} ({len(too_long)} such problem(s)); leave such problems out")
    # the disk entry also depends on what changes bits (CPU threads); answer fixtures match on
    # generation_key alone because they are verified token for token before use
    engine = make_backend(backend, loaded) if isinstance(backend, str) else backend
    bits = {**bit_context(str(loaded.model.device)), **({"backend": engine.name} if engine.name != "hf" else {})}
    keys = [content_key(generation_key(fingerprint, template, prompt, ids, decoding), bits) for prompt, ids in encoded]
    folder = cache_root() / "generations"
    results: dict[int, Generation] = {}
    for i, key in enumerate(keys):
        cached = _cached_generation(folder / f"{key}.json", healed) if use_cache else None
        if cached is not None:
            results[i] = dataclasses.replace(cached, problem_id=problems[i].id)
    todo = sorted((i for i in range(len(problems)) if i not in results), key=lambda i: len(encoded[i][1]))
    eos = _eos_ids(loaded)
    if not eos:
        raise UserError("the tokenizer has no EOS token; set tokenizer.eos_token before generating")
    with tqdm(total=len(todo), desc="generate", unit="answer", disable=not progress or not todo) as bar:
        for start in range(0, len(todo), decoding.batch_size):
            batch = todo[start:start + decoding.batch_size]
            outputs = engine.generate([encoded[i][1] for i in batch], decoding, eos)
            for i, new_ids in zip(batch, outputs):
                answer_ids, reason = _finish(new_ids, eos, tokenizer, decoding.stop_strings)
                gen = Generation(problem_id=problems[i].id, prompt=encoded[i][0],
                                 prompt_ids=tuple(encoded[i][1]), answer_ids=tuple(answer_ids),
                                 text=tokenizer.decode(answer_ids, skip_special_tokens=True),
                                 finish_reason=reason, model_fingerprint=fingerprint,
                                 template=template.name)
                if use_cache:
                    write_checked_json(folder / f"{keys[i]}.json", gen.to_json())
                results[i] = gen
            bar.update(len(batch))
    return with_references([results[i] for i in range(len(problems))], problems, tokenizer)


def _cached_generation(path: Path, healed: list[dict] | None) -> Generation | None:
    """The cached answer at `path`, or None when absent; a corrupt entry is moved aside (and redone)."""
    if not path.is_file():
        return None
    try:
        return Generation.from_json(read_checked_json(path))
    except (CorruptEntry, KeyError, TypeError) as err:
        moved = quarantine(path, cache_root())
        if healed is not None:
            healed.append({"stage": "generations", "key": path.stem, "reason": str(err), "moved_to": str(moved)})
        print(f"cache: generation {path.name} is corrupt ({err}); moved to {moved}; regenerating it",
              file=sys.stderr, flush=True)
        return None


def with_references(generations: Sequence[Generation], problems: Sequence[Problem], tokenizer) -> list[Generation]:
    """Each generation with its problem's reference solution in the model's tokens (None without one);
    generations [i] answers problems [i]."""
    return [dataclasses.replace(g, reference_ids=None if not p.reference else
                                tuple(tokenizer(p.reference, add_special_tokens=False)["input_ids"]))
            for g, p in zip(generations, problems, strict=True)]


def save_generations(path: str | Path, generations: Iterable[Generation], checks: Iterable | None = None) -> None:
    """One JSON row per generation (with its check, when given), written atomically."""
    rows = []
    checks = list(checks) if checks is not None else None
    for i, gen in enumerate(generations):
        row = gen.to_json()
        if checks is not None:
            row["check"] = dataclasses.asdict(checks[i])
        rows.append(json.dumps(row))
    atomic_write_text(Path(path), "\n".join(rows) + "\n")


def load_generations(path: str | Path) -> list[tuple[Generation, dict | None]]:
    """Rows written by save_generations: (generation, check as a dict or None)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"generations file {path} does not exist; run `python -m harness generate` first")
    out = []
    for lineno, line in enumerate(read_utf8(path, "generations file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            check = row.pop("check", None) if isinstance(row, dict) else None
            out.append((Generation.from_json(row), check))
        except (json.JSONDecodeError, TypeError) as err:
            raise UserError(f"{path}:{lineno}: not a generation row ({err})") from None
    return out
