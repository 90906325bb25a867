"""Final-answer extraction and equivalence: `\\boxed{}` / `#### N`, numbers, and sympy algebra.

An answer counts as correct when it equals the gold answer after normalisation (numbers as exact
fractions, LaTeX cleaned), or when sympy proves the difference is zero. reasoning-gym problems are
scored by the task's own scorer. Every check keeps the string it extracted and how.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Literal, Sequence

from harness.data.latex import clean_latex, last_boxed, latex_to_sympy, unwrap
from harness.data.problems import Problem, reasoning_gym_score
from harness.errors import UserError

if TYPE_CHECKING:
    from harness.data.generation import Generation

ExtractionMethod = Literal["boxed", "hash", "answer-is", "last-number", "none"]

_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_LAST_NUMBER = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?:\s*/\s*\d+)?")
_MAX_SYMPY_CHARS = 120  # longer strings are compared as text only (sympy can stall on them)


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


def extract_answer(text: str, *, fallback_last_number: bool = True) -> Extraction:
    """The final answer of a model's text: last \\boxed{}, else `#### X`, else "the answer is X",
    else (if allowed) the last number in the text."""
    boxed = last_boxed(text)
    if boxed is not None:
        return Extraction(boxed, "boxed")
    hashes = re.findall(r"####\s*([^\n]+)", text)
    hashes = [h.strip() for h in hashes if h.strip().strip("#").strip()]
    if hashes:
        return Extraction(hashes[-1].strip("#").strip(), "hash")
    answer_is = re.findall(r"answer is[:\s]*\$?([^\n$]+?)\$?(?:\.\s|\.?$|\n)", text,
                           flags=re.IGNORECASE | re.MULTILINE)
    if answer_is:  # "the answer is 4 - 8 = -4." -> "-4"
        return Extraction(answer_is[-1].split("=")[-1].strip(), "answer-is")
    if fallback_last_number:
        numbers = _LAST_NUMBER.findall(text)
        if numbers:
            return Extraction(numbers[-1].replace(" ", ""), "last-number")
    return Extraction(None, "none")


def parse_number(answer: str) -> Fraction | None:
    """Exact value of a numeric answer, or None: "1,000" "$18.50" "12 dollars" "3/4" "\\frac{3}{4}"
    "0.50" "-\\frac12" "50\\%" all parse; thousands commas must group by three."""
    s = answer.strip().replace("\\$", "").replace("$", "")
    s = unwrap(s, "text")
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s.strip())
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\?%", "", s)
    s = re.sub(r"(?<=[\d}])\s*[a-zA-Z][a-zA-Z\s^\d]*\.?$", "", s.strip())  # trailing unit words
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


def _split_top_level(s: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in s:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _symbolically_equal(a: str, b: str) -> bool:
    if max(len(a), len(b)) > _MAX_SYMPY_CHARS:
        return False
    import sympy

    try:
        difference = sympy.simplify(latex_to_sympy(a) - latex_to_sympy(b))
        return bool(difference == 0)
    except Exception:  # any parse or simplify failure means "not shown equal"
        return False


def answers_equivalent(predicted: str | None, gold: str) -> bool:
    """True if the predicted final answer equals the gold one (text, number, tuple or algebra)."""
    if predicted is None:
        return False
    pred_num, gold_num = parse_number(predicted), parse_number(gold)
    if pred_num is not None and gold_num is not None:
        return pred_num == gold_num
    a, b = clean_latex(predicted), clean_latex(gold)
    if a == b:
        return True
    if not a or not b:
        return False
    # tuples and intervals: same brackets, same number of parts, parts equivalent
    if a[0] in "([" and b[0] in "([" and a[-1] in ")]" and b[-1] in ")]":
        if (a[0], a[-1]) != (b[0], b[-1]):
            return False
        pa, pb = _split_top_level(a[1:-1]), _split_top_level(b[1:-1])
        if len(pa) > 1 or len(pb) > 1:
            return len(pa) == len(pb) and all(answers_equivalent(x, y) for x, y in zip(pa, pb))
    pa, pb = _split_top_level(a), _split_top_level(b)
    if len(pa) > 1 or len(pb) > 1:  # unordered answer lists such as "2,-3"
        if len(pa) != len(pb):
            return False
        remaining = list(pb)
        for x in pa:
            match = next((y for y in remaining if answers_equivalent(x, y)), None)
            if match is None:
                return False
            remaining.remove(match)
        return True
    if pred_num is not None or gold_num is not None:
        other = b if pred_num is not None else a
        if not re.search(r"\\(?:frac|sqrt|pi)|\d", other):
            return False
    return _symbolically_equal(a, b)


def check_answer(text: str, problem: Problem, *, fallback_last_number: bool = True) -> Check:
    """Extract the final answer from `text` and compare it with the problem's gold answer."""
    extraction = extract_answer(text, fallback_last_number=fallback_last_number)
    if problem.style == "reasoning-gym":
        value = extraction.value
        number = parse_number(value) if value is not None else None
        scored = canonical_number(number) if number is not None else value
        correct = problem.entry is not None and reasoning_gym_score(
            problem.entry["task"], scored, problem.entry) == 1.0
    else:
        correct = answers_equivalent(extraction.value, problem.gold)
    return Check(problem.id, extraction.value, extraction.method, problem.gold, correct)


def check_answers(generations: Sequence["Generation"], problems: Sequence[Problem], *,
                  fallback_last_number: bool = True) -> list[CheckedGeneration]:
    """Check each generation against the problem with the same id; order follows generations."""
    by_id = {p.id: p for p in problems}
    missing = [g.problem_id for g in generations if g.problem_id not in by_id]
    if missing:
        raise UserError(f"{len(missing)} generations have no matching problem (first: "
                        f"{missing[0]!r}); check the answers against the dataset they came from")
    return [CheckedGeneration(g, check_answer(g.text, by_id[g.problem_id],
                                              fallback_last_number=fallback_last_number))
            for g in generations]
