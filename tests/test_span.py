"""What the loss reads: template, prompt copies and computation, planted in synthetic answers whose
every token's kind is known by construction; the span start after the opening; the span profile."""

import numpy as np
import pytest

from harness.data.generation import Generation
from harness.data.grading import Check, CheckedGeneration
from harness.data.selection import build_eap_rows, select_samples
from harness.data.span import Template, copied, kinds, opening_length

OPENING = (7, 8, 9, 10)   # "We need to compute": the same four tokens open every answer


def answer(i: int, rng: np.random.Generator, length: int = 30) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prompt, answer): the prompt holds the operands (500+i, 600+i, 700+i); the answer opens with the
    template, restates the operands, then computes with tokens drawn from 1000-1999 (never in a prompt)."""
    prompt = (1, 2, 500 + i, 600 + i, 700 + i, 3)
    return prompt, (*OPENING, 500 + i, 600 + i, 700 + i, *rng.integers(1000, 2000, length - 7).tolist())


def generation(qid: str, prompt, tokens) -> CheckedGeneration:
    gen = Generation(problem_id=qid, prompt="p", prompt_ids=tuple(prompt), answer_ids=tuple(tokens), text="t",
                     finish_reason="eos", model_fingerprint="sha256:x", template="t")
    return CheckedGeneration(gen, Check(qid, "1", "boxed", "1", True))


def planted_pair(n: int = 20):
    rng = np.random.default_rng(0)
    rows = [answer(i, rng) for i in range(n)]
    base = [generation(f"q{i}", p, a) for i, (p, a) in enumerate(rows)]
    post = [generation(f"q{i}", p, a) for i, (p, a) in enumerate(rows)]
    return base, post


def test_each_token_is_template_copy_or_computation_as_planted() -> None:
    rng = np.random.default_rng(0)
    pairs = [answer(i, rng) for i in range(20)]
    template = Template.of([a for _, a in pairs])
    assert template.tokens == dict(enumerate(OPENING))
    prompt, a = pairs[3]
    assert kinds(prompt, a, template).tolist() == [1] * 4 + [2] * 3 + [0] * 23
    assert opening_length(prompt, a, template) == 7
    assert copied((1, 2, 3), (9, 1, 2, 9)).tolist() == [False] * 4   # a run of 2 is no copy (COPY_RUN = 3)


def test_the_span_starts_after_the_opening_and_alpha_counts_reasoning_tokens() -> None:
    base, post = planted_pair()
    plain = select_samples(base, post, span_start="answer", alpha=0.2)
    after = select_samples(base, post, alpha=0.2)
    assert plain.t_bar == 30 and plain.t_cut == 6           # floor(0.2 x 30): the opening and two copies
    assert after.t_bar == 23 and after.t_cut == 4           # floor(0.2 x 23), past the 7 opening tokens
    rows, _ = build_eap_rows(after)
    assert rows[0]["prompt_ids"][-7:] == list(OPENING) + [500, 600, 700]    # the opening is context
    assert rows[0]["target_ids"] == list(base[0].generation.answer_ids[7:11])
    assert after.span_profile()["base"]["template_or_copy_share"] == 0.0
    profile = plain.span_profile()["base"]
    assert profile["template_share"] == pytest.approx(4 / 6) and profile["copy_share"] == pytest.approx(2 / 6)
    assert profile["computational_mean"] == 0 and profile["template_or_copy_share"] == 1.0

