"""Sample selection (paper Eqs. 10-12), T_cut, and the token sequences handed to EAP.

Two variants, always named in outputs:
- "paper" (the equations): T̄ for the window = mean over both-correct questions of the pair-average
  answer length; window β·T̄ <= T <= γ·T̄ for EACH model's length; balance; seeded subsample of n;
  T_cut = max(floor(α·T̄_kept), 1) with T̄_kept the same mean over the KEPT questions.
- "paper-code" (the released code): T̄ = min(mean base length, mean post length) over all
  both-correct questions; both prompts must have the same token length; window on the pair-average
  length with floored bounds floor(β·T̄) <= (T_b+T_p)/2 <= floor(γ·T̄); balance; `random.seed(seed)`
  then `random.sample`; T_cut = max(floor(α·T̄), 1) with that same T̄.
Lengths T are answer tokens without EOS. Balance: |T_b − T_p| / ((T_b+T_p)/2) <= δ.

Where the loss's span starts (`span_start`, harness.data.span): "after_template" (default) past the answer's
opening run of template tokens and prompt copies, so T̄ and T_cut count the tokens after it and alpha is a
fraction of the reasoning; "answer" is the paper's plain cut from the answer's first token. The opening
joins the prompt as context. The length window and balance read whole answers either way.

Where T̄ for T_cut comes from (`t_cut_from`): "base" (default) takes the mean answer length of the base
model's correct answers on the dataset, so every pair trained from one base cuts at one T_cut per alpha
and cross-pair comparisons (C4) read like with like; "pair" is the paper's per-pair T̄ of the variant.

Answers shorter than T_cut (`short_answers`): "slice" (default, the paper's code: the loss reads
answer[:T_cut], which for a shorter answer is the whole answer, so the question stays with fewer
targets and the question set is the same for every alpha), "drop" (remove such questions: the set
then shrinks as alpha grows), or "error".
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from dataclasses import dataclass
from statistics import mean
from typing import Literal, Sequence, get_args

from harness.data.grading import CheckedGeneration
from harness.data.span import SPAN_STARTS, SpanStart, Template, opening_length, profile, span_start
from harness.errors import UserError

Variant = Literal["paper", "paper-code"]
TokenMode = Literal["own", "shared-base", "shared-post", "reference"]
ShortAnswers = Literal["slice", "drop", "error"]
TCutFrom = Literal["base", "pair"]
Subsample = Literal["shared", "paper"]
Questions = Literal["both-correct", "changed"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)
SHORT_ANSWERS: tuple[ShortAnswers, ...] = get_args(ShortAnswers)
T_CUT_FROM: tuple[TCutFrom, ...] = get_args(TCutFrom)
SUBSAMPLES: tuple[Subsample, ...] = get_args(Subsample)
QUESTIONS: tuple[Questions, ...] = get_args(Questions)
# own: each model on its own greedy answer (the paper); shared-base/shared-post: both teacher-forced
# on the base's/post's answer; reference: both on the dataset's reference solution.
TOKEN_MODES: tuple[TokenMode, ...] = get_args(TokenMode)


# the settings with a fixed set of values: (name, values, what they mean in an error message)
CHOICES = (
    ("short_answers", SHORT_ANSWERS, ""),
    ("t_cut_from", T_CUT_FROM, " (base: T̄ of the base model's correct answers; pair: the paper's per-pair T̄)"),
    ("subsample", SUBSAMPLES, " (shared: one order of the questions for every pair; paper: the paper's random.sample)"),
    ("span_start", SPAN_STARTS, " (after_template: past the answer's template and prompt copies; answer: the "
                                "paper's cut)"),
    ("questions", QUESTIONS, " (both-correct: the paper; changed: where behaviour changed, read on the post's "
                             "answer)"),
)


@dataclass(frozen=True)
class SelectionSettings:
    """How questions are selected, at every alpha (the audit's `selection.*` settings).

    variant: the paper's equations or its code (`paper`, `paper-code`). beta, gamma: length window as
    fractions of T̄. delta: largest relative length gap between the two answers. n: questions kept at
    most. seed: subsample seed. short_answers: a kept answer shorter than T_cut is "slice"d (all its
    tokens are targets; the paper's code), or such questions are "drop"ped, or it is an "error".
    t_cut_from: T̄ of T_cut from the base model's correct answers on the dataset ("base": one T_cut for
    every pair of that base), or the variant's per-pair T̄ ("pair", the paper). span_start: the span
    starts "after_template" (past the answer's opening of template and prompt copies) or at the
    "answer"'s first token (the paper). subsample: how at most n kept questions are drawn: "shared"
    (default) takes the n first in an order fixed by the seed and the question id alone, so pairs that
    keep overlapping questions draw overlapping samples (C4 compares on the intersection); "paper" is
    the paper's code, `random.Random(seed).sample` of the pair's kept list. questions: which questions are
    analysed: "both-correct" (the paper: both models answer right, where behaviour mostly did not change),
    or "changed": where behaviour changed, the post model answers right and the base model wrongly or with
    other tokens; both models then read the post's answer (token mode shared-post), and the length window
    and balance read it too."""

    variant: Variant = "paper-code"
    beta: float = 0.5
    gamma: float = 1.5
    delta: float = 0.5
    n: int = 100
    seed: int = 42
    short_answers: ShortAnswers = "slice"
    t_cut_from: TCutFrom = "base"
    span_start: SpanStart = "after_template"
    subsample: Subsample = "shared"
    questions: Questions = "both-correct"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise UserError(f"unknown selection variant {self.variant!r}; choose paper or paper-code")
        if not 0 <= self.beta <= self.gamma:
            raise UserError(f"need 0 <= beta <= gamma, got beta={self.beta}, gamma={self.gamma}")
        if self.delta < 0:
            raise UserError(f"delta must be >= 0, got {self.delta}")
        if self.n < 1:
            raise UserError(f"n must be at least 1, got {self.n}")
        for name, choices, meaning in CHOICES:
            if getattr(self, name) not in choices:
                raise UserError(f"{name} must be one of {', '.join(choices)}{meaning}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SelectionParams(SelectionSettings):
    """The selection settings at one alpha: T_cut is max(floor(alpha x T̄), 1) tokens."""

    alpha: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.alpha <= 1:
            raise UserError(f"alpha must be in (0, 1], got {self.alpha}")

    @classmethod
    def at(cls, settings: SelectionSettings, alpha: float) -> SelectionParams:
        return cls(**dataclasses.asdict(settings), alpha=alpha)


@dataclass(frozen=True)
class FunnelStep:
    """How many questions remain after one filter."""

    step: str
    count: int
    rule: str


def format_funnel(funnel: Sequence[FunnelStep]) -> str:
    width = max(len(s.step) for s in funnel)
    return "\n".join(f"  {s.step:<{width}}  {s.count:>6}  {s.rule}" for s in funnel)


class SelectionError(UserError):
    """No usable sample; the message carries the funnel so the user sees where questions went."""

    def __init__(self, reason: str, funnel: Sequence[FunnelStep]):
        self.funnel = tuple(funnel)
        super().__init__(f"{reason}\nselection funnel:\n{format_funnel(funnel)}")


@dataclass(frozen=True)
class Selection:
    """The kept questions (ids in sampled order) with both models' checked generations.

    t_bar: the T̄ that defines T_cut (tokens; `params.t_cut_from` says whose answers). t_bar_window:
    the T̄ the length window used.
    short_ids: kept questions with an answer shorter than T_cut (policy "slice": they keep all
    their answer tokens as targets); empty under "drop" and "error". base_start, post_start: where
    each kept answer's span starts (tokens; 0 under span_start=answer). templates: each model's
    answer template on the dataset (harness.data.span.Template), base then post.
    """

    params: SelectionParams
    ids: tuple[str, ...]
    funnel: tuple[FunnelStep, ...]
    t_bar: float
    t_bar_window: float
    t_cut: int
    base: tuple[CheckedGeneration, ...]
    post: tuple[CheckedGeneration, ...]
    short_ids: tuple[str, ...] = ()
    base_start: tuple[int, ...] = ()
    post_start: tuple[int, ...] = ()
    templates: tuple[Template, Template] = (Template({}, 0), Template({}, 0))
    # span profiles by token mode, computed once: every claim reading the cell asks for them
    _profiles: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def funnel_table(self) -> str:
        return format_funnel(self.funnel)

    def span_profile(self, token_mode: TokenMode = "own") -> dict:
        """Per model ("base", "post"): the span profile of its targets (harness.data.span.profile)."""
        if token_mode not in self._profiles:
            out = {}
            for side, spans in zip(("base", "post"), target_spans(self, token_mode)):
                # whose answers the targets are: the side's own, or the shared source's
                source = {"own": side, "shared-base": "base", "shared-post": "post"}.get(token_mode)
                template = (Template.of([s.tokens for s in spans]) if source is None   # reference solutions
                            else self.templates[0 if source == "base" else 1])
                out[side] = profile([(s.prompt, s.tokens, s.start, s.stop) for s in spans], template)
            self._profiles[token_mode] = out
        return self._profiles[token_mode]

    def to_json(self) -> dict:
        from dataclasses import asdict

        return {"variant": self.params.variant, "params": asdict(self.params), "ids": list(self.ids),
                "short_answers": self.params.short_answers, "short_ids": list(self.short_ids),
                "t_cut_from": self.params.t_cut_from, "span_start": self.params.span_start,
                "starts": {i: [sb, sp] for i, sb, sp in zip(self.ids, self.base_start, self.post_start)},
                "funnel": [asdict(s) for s in self.funnel], "t_bar": self.t_bar,
                "t_bar_window": self.t_bar_window, "t_cut": self.t_cut,
                "answer_lengths": {i: [b.answer_len, p.answer_len]
                                   for i, b, p in zip(self.ids, self.base, self.post)}}


def _by_id(items: Sequence[CheckedGeneration], which: str) -> dict[str, CheckedGeneration]:
    out: dict[str, CheckedGeneration] = {}
    for item in items:
        if item.id in out:
            raise UserError(f"{which} generations hold question {item.id!r} twice; ids must be unique")
        out[item.id] = item
    return out


def _balanced(tb: int, tp: int, delta: float) -> bool:
    pair_mean = (tb + tp) / 2
    return pair_mean > 0 and abs(tb - tp) / pair_mean <= delta


def select_samples(base: Sequence[CheckedGeneration], post: Sequence[CheckedGeneration],
                   params: SelectionParams | None = None, **overrides) -> Selection:
    """Apply the chosen variant's filters to paired, checked answers and fix T_cut.

    Pass a SelectionParams, or its fields as keywords (variant=, alpha=, beta=, ... seed=).
    Raises SelectionError (with the funnel) when nothing survives or T_cut exceeds an answer.
    """
    p = SelectionParams(**{**(vars(params) if params else {}), **overrides})
    b, q = _by_id(base, "base"), _by_id(post, "post-trained")
    funnel = [FunnelStep("questions", len(b.keys() & q.keys()), "answered by both models")]
    common = [i for i in b if i in q]
    if not common:
        raise SelectionError("no question was answered by both models (empty dataset, or the two "
                             "generation files come from different datasets)", funnel)
    changed = p.questions == "changed"   # both models read the post's answer: b's lengths are q's below
    if changed:
        kept = [i for i in common if q[i].correct and (not b[i].correct or tuple(b[i].generation.answer_ids)
                                                       != tuple(q[i].generation.answer_ids))]
        funnel.append(FunnelStep("behaviour-changed", len(kept), "the post model answers right, the base model "
                                 "wrongly or with other tokens; both read the post's answer"))
    else:
        kept = [i for i in common if b[i].correct and q[i].correct]
        funnel.append(FunnelStep("both-correct", len(kept), "both final answers correct"))
    if not kept:
        raise SelectionError("no question was answered correctly by both models; use an easier "
                             "dataset or more questions" if not changed else
                             "no question where behaviour changed: the post model answers no question right that "
                             "the base model answers wrongly or differently", funnel)
    tb = {i: (q if changed else b)[i].answer_len for i in kept}
    tp = {i: q[i].answer_len for i in kept}
    # each model's template over its answers on the dataset, and where each answer's span starts
    templates = tuple(Template.of([m[i].generation.answer_ids for i in common]) for m in (b, q))
    start = [{i: span_start(p.span_start, m[i].generation.prompt_ids, m[i].generation.answer_ids, t)
              for i in (common if m is b else kept)} for m, t in zip((b, q), templates)]
    sb = {i: tb[i] - start[1 if changed else 0][i] for i in kept}   # span lengths: what alpha is a fraction of
    sp = {i: tp[i] - start[1][i] for i in kept}
    both_correct = list(kept)
    if p.variant == "paper":
        t_bar_window = mean((tb[i] + tp[i]) / 2 for i in kept)
        lo, hi = p.beta * t_bar_window, p.gamma * t_bar_window
        kept = [i for i in kept if lo <= tb[i] <= hi and lo <= tp[i] <= hi]
        funnel.append(FunnelStep("length-window", len(kept),
                                 f"{lo:.2f} <= T <= {hi:.2f} for each model (T̄={t_bar_window:.2f})"))
    else:
        t_bar_window = min(mean(tb.values()), mean(tp.values()))
        kept = [i for i in kept if b[i].prompt_len == q[i].prompt_len]
        funnel.append(FunnelStep("equal-prompt-length", len(kept), "same prompt token count"))
        lo, hi = math.floor(p.beta * t_bar_window), math.floor(p.gamma * t_bar_window)
        kept = [i for i in kept if lo <= (tb[i] + tp[i]) / 2 <= hi]
        funnel.append(FunnelStep("length-window", len(kept),
                                 f"{lo} <= (T_b+T_p)/2 <= {hi} (T̄={t_bar_window:.2f})"))
    kept = [i for i in kept if _balanced(tb[i], tp[i], p.delta)]
    funnel.append(FunnelStep("balance", len(kept), f"|T_b-T_p|/mean <= {p.delta}"))
    if not kept:
        raise SelectionError("no question survives the length window and balance filters; widen "
                             "beta/gamma/delta", funnel)
    if len(kept) > p.n and p.subsample == "paper":
        kept = random.Random(p.seed).sample(kept, p.n)
    elif len(kept) > p.n:   # one order for every pair: the question's rank by a hash of the seed and its id
        kept = sorted(kept, key=lambda i: hashlib.sha256(f"{p.seed}:{i}".encode()).hexdigest())[:p.n]
    funnel.append(FunnelStep("subsample", len(kept), f"at most n={p.n}, seed={p.seed} ({p.subsample})"))
    if p.t_cut_from == "base":   # one T̄ per base model and dataset: the same for every pair of that base
        t_bar = mean(b[i].answer_len - start[0][i] for i in common if b[i].correct)
    elif p.variant == "paper-code":
        t_bar = min(mean(sb[i] for i in both_correct), mean(sp[i] for i in both_correct))
    else:
        t_bar = mean((sb[i] + sp[i]) / 2 for i in kept)
    t_cut = max(math.floor(p.alpha * t_bar), 1)
    opening = mean(start[1][i] if changed else (start[0][i] + start[1][i]) / 2 for i in kept)
    funnel.append(FunnelStep("span", len(kept), f"{p.span_start}: spans start after {opening:.1f} opening tokens "
                             f"on average; T_cut = max(floor({p.alpha}·{t_bar:.2f}), 1) = {t_cut} "
                             f"(T̄ from the {p.t_cut_from})"))
    short = [i for i in kept if min(sb[i], sp[i]) < t_cut]
    if short and p.short_answers == "error":
        shortest = min(min(sb[i], sp[i]) for i in kept)
        raise SelectionError(f"T_cut = max(floor({p.alpha}·{t_bar:.2f}), 1) = {t_cut} tokens, but "
                             f"{len(short)} kept answers are shorter (shortest: {shortest} tokens, "
                             f"question {short[0]!r}); lower alpha, slice them (short_answers='slice', "
                             "CLI --short-answers slice) or drop such questions (short_answers='drop')",
                             funnel)
    if short and p.short_answers == "slice":
        funnel.append(FunnelStep("short-sliced", len(kept),
                                 f"{len(short)} kept with fewer than T_cut={t_cut} span tokens; "
                                 "all their tokens are targets (short_answers=slice)"))
    elif short:
        dropped = set(short)
        kept = [i for i in kept if i not in dropped]
        short = []
        funnel.append(FunnelStep("long-enough", len(kept), f"both spans >= T_cut={t_cut} tokens"))
        if not kept:
            raise SelectionError(f"every kept answer is shorter than T_cut={t_cut}; lower alpha, or "
                                 "slice them (short_answers='slice')", funnel)
    return Selection(params=p, ids=tuple(kept), funnel=tuple(funnel), t_bar=float(t_bar),
                     t_bar_window=float(t_bar_window), t_cut=t_cut,
                     base=tuple(b[i] for i in kept), post=tuple(q[i] for i in kept), short_ids=tuple(short),
                     base_start=tuple(start[0][i] for i in kept), post_start=tuple(start[1][i] for i in kept),
                     templates=templates)


@dataclass(frozen=True)
class TargetSpan:
    """What one model reads on one question: `tokens` after `prompt`, the loss on tokens[start:stop]
    (tokens[:start], the skipped opening, joins the prompt as context)."""

    id: str
    prompt: tuple[int, ...]
    tokens: tuple[int, ...]
    start: int
    stop: int

    def row(self) -> dict:
        """The EAP input row {"id", "prompt_ids", "target_ids"}."""
        return {"id": self.id, "prompt_ids": [*self.prompt, *self.tokens[:self.start]],
                "target_ids": list(self.tokens[self.start:self.stop])}


def target_spans(selection: Selection, token_mode: TokenMode = "own") -> tuple[list[TargetSpan], list[TargetSpan]]:
    """(base, post) spans per kept question. own: each model's own answer from its span start, T_cut
    tokens (a shorter span gives all its tokens). shared-base / shared-post: both models read the base's
    (post's) answer from its start. reference: the dataset's reference solution from its own span start
    (its opening by the references' template under span_start=after_template), T_cut tokens."""
    if token_mode not in TOKEN_MODES:
        raise UserError(f"unknown token mode {token_mode!r}; choose one of {', '.join(TOKEN_MODES)}")
    if selection.params.questions == "changed" and token_mode != "shared-post":
        raise UserError(f"selection.questions=changed keeps questions the base model answers wrongly or with other "
                        f"tokens, so both models must read the post's answer: use token mode shared-post "
                        f"(--token-mode shared-post), not {token_mode}")
    t_cut = selection.t_cut
    references = None
    if token_mode == "reference" and selection.params.span_start == "after_template":
        references = Template.of([p.generation.reference_ids or () for p in selection.post])
    starts = zip(selection.base_start or [0] * len(selection.ids), selection.post_start or [0] * len(selection.ids))
    base, post = [], []
    for qid, b, p, (sb, sp) in zip(selection.ids, selection.base, selection.post, starts):
        gb, gp = b.generation, p.generation
        if token_mode == "own":
            pair = ((gb.prompt_ids, gb.answer_ids, sb), (gp.prompt_ids, gp.answer_ids, sp))
        elif token_mode in ("shared-base", "shared-post"):
            if gb.prompt_ids != gp.prompt_ids:
                raise UserError(f"token mode {token_mode} needs both models to see the same prompt "
                                f"ids, but question {qid!r} was tokenised differently (different "
                                "tokenizer or template); use token mode own")
            source, start = (gb, sb) if token_mode == "shared-base" else (gp, sp)
            pair = ((source.prompt_ids, source.answer_ids, start),) * 2
        else:
            if gb.reference_ids is None or gp.reference_ids is None or not gb.reference_ids:
                raise UserError(f"token mode reference needs the dataset's reference solution, "
                                f"but question {qid!r} has none; use a dataset with solutions "
                                "(GSM8K, MATH, gsm_symbolic)")
            start = 0 if references is None else opening_length(gp.prompt_ids, gp.reference_ids, references)
            pair = ((gb.prompt_ids, gb.reference_ids, start), (gp.prompt_ids, gp.reference_ids, start))
        for out, (prompt, tokens, start) in zip((base, post), pair):
            out.append(TargetSpan(qid, tuple(prompt), tuple(tokens), start, min(start + t_cut, len(tokens))))
    return base, post


def build_eap_rows(selection: Selection, token_mode: TokenMode = "own") -> tuple[list[dict], list[dict]]:
    """Rows {"id", "prompt_ids", "target_ids"} for the base and the post-trained model (target_spans)."""
    base, post = target_spans(selection, token_mode)
    return [s.row() for s in base], [s.row() for s in post]
