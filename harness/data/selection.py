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
import math
import random
from dataclasses import dataclass
from statistics import mean
from typing import Literal, Sequence, get_args

from harness.data.grading import CheckedGeneration
from harness.errors import UserError

Variant = Literal["paper", "paper-code"]
TokenMode = Literal["own", "shared-base", "shared-post", "reference"]
ShortAnswers = Literal["slice", "drop", "error"]
TCutFrom = Literal["base", "pair"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)
SHORT_ANSWERS: tuple[ShortAnswers, ...] = get_args(ShortAnswers)
T_CUT_FROM: tuple[TCutFrom, ...] = get_args(TCutFrom)
# own: each model on its own greedy answer (the paper); shared-base/shared-post: both teacher-forced
# on the base's/post's answer; reference: both on the dataset's reference solution.
TOKEN_MODES: tuple[TokenMode, ...] = get_args(TokenMode)


@dataclass(frozen=True)
class SelectionSettings:
    """How questions are selected, at every alpha (the audit's `selection.*` settings).

    variant: the paper's equations or its code (`paper`, `paper-code`). beta, gamma: length window as
    fractions of T̄. delta: largest relative length gap between the two answers. n: questions kept at
    most. seed: subsample seed. short_answers: a kept answer shorter than T_cut is "slice"d (all its
    tokens are targets; the paper's code), or such questions are "drop"ped, or it is an "error".
    t_cut_from: T̄ of T_cut from the base model's correct answers on the dataset ("base": one T_cut for
    every pair of that base), or the variant's per-pair T̄ ("pair", the paper)."""

    variant: Variant = "paper-code"
    beta: float = 0.5
    gamma: float = 1.5
    delta: float = 0.5
    n: int = 100
    seed: int = 42
    short_answers: ShortAnswers = "slice"
    t_cut_from: TCutFrom = "base"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise UserError(f"unknown selection variant {self.variant!r}; choose paper or paper-code")
        if not 0 <= self.beta <= self.gamma:
            raise UserError(f"need 0 <= beta <= gamma, got beta={self.beta}, gamma={self.gamma}")
        if self.delta < 0:
            raise UserError(f"delta must be >= 0, got {self.delta}")
        if self.n < 1:
            raise UserError(f"n must be at least 1, got {self.n}")
        if self.short_answers not in SHORT_ANSWERS:
            raise UserError(f"short_answers must be one of {', '.join(SHORT_ANSWERS)}, "
                            f"got {self.short_answers!r}")
        if self.t_cut_from not in T_CUT_FROM:
            raise UserError(f"t_cut_from must be one of {', '.join(T_CUT_FROM)} (base: T̄ of the base model's "
                            f"correct answers; pair: the paper's per-pair T̄), got {self.t_cut_from!r}")


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
    their answer tokens as targets); empty under "drop" and "error".
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

    def funnel_table(self) -> str:
        return format_funnel(self.funnel)

    def to_json(self) -> dict:
        from dataclasses import asdict

        return {"variant": self.params.variant, "params": asdict(self.params), "ids": list(self.ids),
                "short_answers": self.params.short_answers, "short_ids": list(self.short_ids),
                "t_cut_from": self.params.t_cut_from,
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
    kept = [i for i in common if b[i].correct and q[i].correct]
    funnel.append(FunnelStep("both-correct", len(kept), "both final answers correct"))
    if not kept:
        raise SelectionError("no question was answered correctly by both models; use an easier "
                             "dataset or more questions", funnel)
    tb = {i: b[i].answer_len for i in kept}
    tp = {i: q[i].answer_len for i in kept}
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
    if len(kept) > p.n:
        kept = random.Random(p.seed).sample(kept, p.n)
    funnel.append(FunnelStep("subsample", len(kept), f"at most n={p.n}, seed={p.seed}"))
    if p.t_cut_from == "base":   # one T̄ per base model and dataset: the same for every pair of that base
        t_bar = mean(g.answer_len for g in b.values() if g.correct)
    else:
        t_bar = t_bar_window if p.variant == "paper-code" else mean((tb[i] + tp[i]) / 2 for i in kept)
    t_cut = max(math.floor(p.alpha * t_bar), 1)
    short = [i for i in kept if min(tb[i], tp[i]) < t_cut]
    if short and p.short_answers == "error":
        shortest = min(min(tb[i], tp[i]) for i in kept)
        raise SelectionError(f"T_cut = max(floor({p.alpha}·{t_bar:.2f}), 1) = {t_cut} tokens, but "
                             f"{len(short)} kept answers are shorter (shortest: {shortest} tokens, "
                             f"question {short[0]!r}); lower alpha, slice them (short_answers='slice', "
                             "CLI --short-answers slice) or drop such questions (short_answers='drop')",
                             funnel)
    if short and p.short_answers == "slice":
        funnel.append(FunnelStep("short-sliced", len(kept),
                                 f"{len(short)} kept with fewer than T_cut={t_cut} answer tokens; "
                                 "all their tokens are targets (short_answers=slice)"))
    elif short:
        dropped = set(short)
        kept = [i for i in kept if i not in dropped]
        short = []
        funnel.append(FunnelStep("long-enough", len(kept), f"both answers >= T_cut={t_cut} tokens"))
        if not kept:
            raise SelectionError(f"every kept answer is shorter than T_cut={t_cut}; lower alpha, or "
                                 "slice them (short_answers='slice')", funnel)
    return Selection(params=p, ids=tuple(kept), funnel=tuple(funnel), t_bar=float(t_bar),
                     t_bar_window=float(t_bar_window), t_cut=t_cut,
                     base=tuple(b[i] for i in kept), post=tuple(q[i] for i in kept), short_ids=tuple(short))


def build_eap_rows(selection: Selection, token_mode: TokenMode = "own") -> tuple[list[dict], list[dict]]:
    """Rows {"id", "prompt_ids", "target_ids"} for the base and the post-trained model.

    own: each model's own answer[:T_cut] (the paper; a shorter answer gives all its tokens, so the
    row has min(T, T_cut) targets and input prompt + answer[:-1]). shared-base / shared-post: both models get
    the same prompt and the base's (post's) answer[:T_cut], so their ids are identical.
    reference: each model gets the dataset's reference solution, first T_cut tokens (or all of
    it when shorter).
    """
    if token_mode not in TOKEN_MODES:
        raise UserError(f"unknown token mode {token_mode!r}; choose one of {', '.join(TOKEN_MODES)}")
    t_cut = selection.t_cut
    base_rows, post_rows = [], []
    for qid, b, p in zip(selection.ids, selection.base, selection.post):
        gb, gp = b.generation, p.generation
        if token_mode == "own":
            base_target, post_target = gb.answer_ids[:t_cut], gp.answer_ids[:t_cut]
            base_prompt, post_prompt = gb.prompt_ids, gp.prompt_ids
        elif token_mode in ("shared-base", "shared-post"):
            if gb.prompt_ids != gp.prompt_ids:
                raise UserError(f"token mode {token_mode} needs both models to see the same prompt "
                                f"ids, but question {qid!r} was tokenised differently (different "
                                "tokenizer or template); use token mode own")
            source = gb if token_mode == "shared-base" else gp
            base_prompt = post_prompt = source.prompt_ids
            base_target = post_target = source.answer_ids[:t_cut]
        else:
            if gb.reference_ids is None or gp.reference_ids is None or not gb.reference_ids:
                raise UserError(f"token mode reference needs the dataset's reference solution, "
                                f"but question {qid!r} has none; use a dataset with solutions "
                                "(GSM8K, MATH, gsm_symbolic)")
            base_prompt, post_prompt = gb.prompt_ids, gp.prompt_ids
            base_target, post_target = gb.reference_ids[:t_cut], gp.reference_ids[:t_cut]
        base_rows.append({"id": qid, "prompt_ids": list(base_prompt), "target_ids": list(base_target)})
        post_rows.append({"id": qid, "prompt_ids": list(post_prompt), "target_ids": list(post_target)})
    return base_rows, post_rows
