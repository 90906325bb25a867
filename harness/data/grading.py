"""Final-answer extraction and equivalence, under a named grader recorded in every check.

Graders (the setting `auto`, the default, resolves per problem style):
- "paper" (the paper's text, §Models and data): the last `\\boxed{}` only (GSM8K-style problems: else
  the text after the last `####`), compared with the gold answer by math-verify (`parse` of both,
  gold first, then `verify`). No "answer is", no last number. `auto` picks it for MATH and GSM8K.
- "lenient": the last `\\boxed{}`, else `#### X`, else "the answer is X", else the last number in
  the text (the released evaluation code, Qwen2.5-Math's `extract_answer`, also falls back to
  "answer is" and the last number). Plain numbers are compared exactly by hand (unit words such as
  "12 dollars" allowed, a trailing variable such as "3x" not); everything else by math-verify.
- "reasoning-gym": what `auto` (or `lenient`) resolves to on reasoning-gym problems: the lenient
  extraction (the dataset's final-number convention) scored by the task's own `score_answer`.
  Asking for `paper` on such problems keeps boxed-only extraction, still scored by the task.

math-verify runs without its signal-based timeouts (`parsing_timeout=None`, `timeout_seconds=None`):
signals fail off the main thread, and a time limit would make a verdict depend on machine speed.
Instead answers longer than `_MAX_VERIFY_CHARS` are compared as cleaned text only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Literal, Sequence, get_args

from harness.data.latex import clean_latex, last_boxed, unwrap
from harness.data.problems import Problem, reasoning_gym_score
from harness.errors import UserError

if TYPE_CHECKING:
    from harness.data.generation import Generation

ExtractionMethod = Literal["boxed", "hash", "answer-is", "last-number", "none"]
Grader = Literal["paper", "lenient"]
GRADERS: tuple[Grader, ...] = get_args(Grader)
GraderSetting = Literal["auto", "paper", "lenient"]
GRADER_SETTINGS: tuple[GraderSetting, ...] = get_args(GraderSetting)
REASONING_GYM = "reasoning-gym"  # resolved name: lenient extraction, the task's own scorer
# Part of the cache key of every stage that stores checks: bump when a grader's verdicts change.
GRADING_VERSION = "grading-v2-math-verify"

_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_LAST_NUMBER = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?:\s*/\s*\d+)?")
_MAX_VERIFY_CHARS = 400  # longer answers are compared as cleaned text only (sympy can stall on them)
# A trailing unit: a word of two or more letters after the number and a space (or inside \text{}),
# "12 dollars", "5 cm^2". Not one letter ("2i", "3x", "2 e": a variable, i or e) and not "pi".
_UNIT = re.compile(r"(?<=[\d}])\s+(?!pi\b)[a-zA-Z]{2,}(?:\s*\^?\s*\d)?(?:\s+[a-zA-Z]{2,}(?:\s*\^?\s*\d)?)*\.?$")


class _DropTimeoutNotice(logging.Filter):
    """math-verify warns once that its timeout is off; we turn it off on purpose (module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutNotice())


@dataclass(frozen=True)
class Extraction:
    value: str | None
    method: ExtractionMethod


@dataclass(frozen=True)
class Check:
    """The verdict on one answer: what was extracted, how, and whether it matches the gold."""

    problem_id: str
    extracted: str | None
    method: ExtractionMethod
    gold: str
    correct: bool
    grader: str = "unrecorded"  # resolved grader (see module doc); "unrecorded" in files from before


@dataclass(frozen=True)
class CheckedGeneration:
    """A generation with its check; the unit that selection works on."""

    generation: "Generation"
    check: Check

    @property
    def id(self) -> str:
        return self.generation.problem_id

    @property
    def correct(self) -> bool:
        return self.check.correct

    @property
    def answer_len(self) -> int:
        """Answer length T in tokens (EOS and stop string excluded)."""
        return len(self.generation.answer_ids)

    @property
    def prompt_len(self) -> int:
        return len(self.generation.prompt_ids)


def validate_grader(setting: str) -> str:
    if setting not in GRADER_SETTINGS:
        raise UserError(f"unknown grader {setting!r}; choose one of {', '.join(GRADER_SETTINGS)}")
    return setting


def resolve_grader(setting: str, style: str) -> str:
    """The grader that runs on a problem of `style`: `auto` -> paper for MATH/GSM8K, the task's own
    scoring for reasoning-gym."""
    validate_grader(setting)
    if style == "reasoning-gym":
        return "paper" if setting == "paper" else REASONING_GYM
    return "lenient" if setting == "lenient" else "paper"


def extract_answer(text: str, *, grader: str = "lenient", style: str = "math") -> Extraction:
    """The final answer of a model's text.

    paper: the last \\boxed{} only; for GSM8K-style problems, else the text after the last `####`.
    lenient (and reasoning-gym): last \\boxed{}, else `#### X`, else "the answer is X", else the
    last number in the text.
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return Extraction(boxed, "boxed")
    if grader == "paper" and style != "gsm8k":
        return Extraction(None, "none")
    hashes = re.findall(r"####\s*([^\n]+)", text)
    hashes = [h.strip() for h in hashes if h.strip().strip("#").strip()]
    if hashes:
        return Extraction(hashes[-1].strip("#").strip(), "hash")
    if grader == "paper":
        return Extraction(None, "none")
    answer_is = re.findall(r"answer is[:\s]*\$?([^\n$]+?)\$?(?:\.\s|\.?$|\n)", text,
                           flags=re.IGNORECASE | re.MULTILINE)
    if answer_is:  # "the answer is 4 - 8 = -4." -> "-4"
        return Extraction(answer_is[-1].split("=")[-1].strip(), "answer-is")
    numbers = _LAST_NUMBER.findall(text)
    if numbers:
        return Extraction(numbers[-1].replace(" ", ""), "last-number")
    return Extraction(None, "none")


def parse_number(answer: str) -> Fraction | None:
    """Exact value of a numeric answer, or None: "1,000" "$18.50" "12 dollars" "3/4" "\\frac{3}{4}"
    "0.50" "-\\frac12" "50\\%" all parse; thousands commas must group by three. A trailing letter
    is a variable or constant, not a unit: "2i", "3x", "2e", "5\\pi" are not numbers."""
    s = answer.strip().replace("\\$", "").replace("$", "")
    s = unwrap(s, "text")
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s.strip())
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\?%", "", s)
    s = _UNIT.sub("", s.strip())  # trailing unit words
    s = s.strip().rstrip(".").strip()
    frac = re.fullmatch(r"([-+]?)\\frac\{?([-+]?\d+)\}?\{?(\d+)\}?", s)
    if frac:
        sign, num, den = frac.groups()
        if int(den) == 0:
            return None
        return Fraction(int(num), int(den)) * (-1 if sign == "-" else 1)
    slash = re.fullmatch(rf"({_NUMBER})\s*/\s*({_NUMBER})", s)
    if slash:
        num, den = (Fraction(part.replace(",", "")) for part in slash.groups())
        return num / den if den else None
    if re.fullmatch(_NUMBER, s):
        return Fraction(s.replace(",", ""))
    return None


def canonical_number(value: Fraction) -> str:
    """Shortest exact string for a number: "1000", "2.5", "1/3"."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den == 1:
        text = f"{float(value):.12f}".rstrip("0")
        if Fraction(text) == value:
            return text
    return f"{value.numerator}/{value.denominator}"


def _math_verify_equal(predicted: str, gold: str) -> bool:
    """math-verify's verdict on two extracted answers: both wrapped in \\boxed{} so its LaTeX
    extraction takes them whole, gold parsed and passed first (verify is not symmetric)."""
    from math_verify import parse, verify

    gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)
    pred_parsed = parse(f"\\boxed{{{predicted}}}", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def answers_equivalent(predicted: str | None, gold: str, *, grader: str = "lenient") -> bool:
    """True if the predicted final answer equals the gold one under `grader` (paper or lenient)."""
    if predicted is None or not predicted.strip():
        return False
    a, b = clean_latex(predicted), clean_latex(gold)
    if max(len(predicted), len(gold)) > _MAX_VERIFY_CHARS:
        return bool(a) and a == b
    if grader != "paper":
        # Hand code kept for what math-verify does not do: it reads unit words as products of
        # symbols ("12 dollars" -> 12*d*o*l*l*a*r*s, "\\text{12 dollars}" -> one symbol) and so
        # grades them wrong, and it compares floats rounded to 6 places (0.3333333 = 1/3), where
        # plain numbers can be compared exactly. Both numeric: exact comparison decides.
        pred_num, gold_num = parse_number(predicted), parse_number(gold)
        if pred_num is not None and gold_num is not None:
            return pred_num == gold_num
        if a and a == b:
            return True
    return _math_verify_equal(predicted, gold)


def check_answer(text: str, problem: Problem, *, grader: str = "auto") -> Check:
    """Extract the final answer from `text` and compare it with the problem's gold answer.

    grader: auto (the default; paper for MATH/GSM8K, the task's scorer for reasoning-gym), paper or
    lenient. The check records the grader that ran.
    """
    resolved = resolve_grader(grader, problem.style)
    extraction = extract_answer(text, grader=resolved, style=problem.style)
    if problem.style == "reasoning-gym":
        value = extraction.value
        number = parse_number(value) if value is not None else None
        scored = canonical_number(number) if number is not None else value
        correct = problem.entry is not None and reasoning_gym_score(
            problem.entry["task"], scored, problem.entry) == 1.0
    else:
        correct = answers_equivalent(extraction.value, problem.gold, grader=resolved)
    return Check(problem.id, extraction.value, extraction.method, problem.gold, correct, resolved)


def check_answers(generations: Sequence["Generation"], problems: Sequence[Problem], *,
                  grader: str = "auto") -> list[CheckedGeneration]:
    """Check each generation against the problem with the same id; order follows generations."""
    validate_grader(grader)
    by_id = {p.id: p for p in problems}
    missing = [g.problem_id for g in generations if g.problem_id not in by_id]
    if missing:
        raise UserError(f"{len(missing)} generations have no matching problem (first: "
                        f"{missing[0]!r}); check the answers against the dataset they came from")
    return [CheckedGeneration(g, check_answer(g.text, by_id[g.problem_id], grader=grader))
            for g in generations]
