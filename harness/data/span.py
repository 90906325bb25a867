"""What the loss reads: the answer's template, copies of the prompt, and the computation between them.

A token of an answer is
- template: the token the model writes at that position (from the answer's start) in at least
  TEMPLATE_SHARE of its answers on the dataset ("We need to compute" opens all 200 bundled answers);
- a copy: part of a run of at least COPY_RUN consecutive answer tokens found verbatim in the prompt
  (the restated operands);
- computational otherwise.

The span the loss reads can start at the answer (the paper) or after its opening (`after_template`):
past the leading run of template and copied tokens, so that alpha counts reasoning tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal, Sequence, get_args

import numpy as np

SpanStart = Literal["after_template", "answer"]
SPAN_STARTS: tuple[SpanStart, ...] = get_args(SpanStart)
TEMPLATE_SHARE = 0.9   # a position is template when this share of the model's answers hold one token there
COPY_RUN = 3           # shortest run of answer tokens, found verbatim in the prompt, that counts as a copy


@dataclass(frozen=True)
class Template:
    """position (from the answer's start) -> the token at least TEMPLATE_SHARE of the answers hold there."""

    tokens: dict[int, int]
    n_answers: int

    @classmethod
    def of(cls, answers: Sequence[Sequence[int]], share: float = TEMPLATE_SHARE) -> Template:
        """The template of a model's answers [n answers, variable length]."""
        tokens, longest = {}, max((len(a) for a in answers), default=0)
        for j in range(longest):
            held = Counter(a[j] for a in answers if len(a) > j)
            token, count = held.most_common(1)[0]
            if count >= share * len(answers):
                tokens[j] = token
        return cls(tokens, len(answers))


def copied(prompt: Sequence[int], answer: Sequence[int], run: int = COPY_RUN) -> np.ndarray:
    """bool [len(answer)]: the answer tokens inside a run of >= `run` tokens found verbatim in the prompt."""
    out = np.zeros(len(answer), bool)
    grams = {tuple(prompt[i:i + run]) for i in range(len(prompt) - run + 1)}
    for i in range(len(answer) - run + 1):
        if tuple(answer[i:i + run]) in grams:
            out[i:i + run] = True
    return out


def kinds(prompt: Sequence[int], answer: Sequence[int], template: Template) -> np.ndarray:
    """int8 [len(answer)]: 0 computational, 1 template, 2 copy of the prompt (template wins)."""
    out = np.where(copied(prompt, answer), 2, 0).astype(np.int8)
    for j, token in template.tokens.items():
        if j < len(answer) and answer[j] == token:
            out[j] = 1
    return out


def opening_length(prompt: Sequence[int], answer: Sequence[int], template: Template) -> int:
    """Tokens in the answer's opening: its leading run of template and copied tokens."""
    k = kinds(prompt, answer, template)
    nonzero = np.flatnonzero(k == 0)
    return int(nonzero[0]) if nonzero.size else len(answer)


def span_start(start: SpanStart, prompt: Sequence[int], answer: Sequence[int], template: Template) -> int:
    """Where the loss's span starts in the answer (tokens)."""
    return opening_length(prompt, answer, template) if start == "after_template" else 0


def profile(spans: Sequence[tuple[Sequence[int], Sequence[int], int, int]], template: Template) -> dict:
    """The span profile of one model's targets: spans are (prompt, answer, start, stop) per question,
    the targets being answer[start:stop]. Shares are of all target tokens; computational tokens per
    question as mean and minimum."""
    counts = np.zeros((len(spans), 3))
    for i, (prompt, answer, start, stop) in enumerate(spans):
        k = kinds(prompt, answer, template)[start:stop]
        counts[i] = np.bincount(k, minlength=3)[:3]
    total = counts.sum()
    share = lambda c: float(c / total) if total else 0.0  # noqa: E731
    return {"targets": int(total), "template_share": share(counts[:, 1].sum()), "copy_share": share(counts[:, 2].sum()),
            "template_or_copy_share": share(counts[:, 1:].sum()),
            "computational_mean": float(counts[:, 0].mean()) if len(spans) else 0.0,
            "computational_min": int(counts[:, 0].min()) if len(spans) else 0,
            "start_mean": float(np.mean([s[2] for s in spans])) if spans else 0.0,
            "template_positions": len(template.tokens)}
