"""Worked solutions of two-term integer problems (a + b, a - b, a * b): the supervised data of the
bundled SFT checkpoint, and the reference solution of the bundled tasks (token mode `reference`).

The paper's pairs start from SFT checkpoints that already write their reasoning; the bundled pairs do
the same. `worked_solution("34 * 7")` writes the steps as a careful pupil would (a two-digit operand
split into tens and ones, a sum or difference checked by the inverse operation) and ends with the
sentence the graders read, "The answer is N.". Hand-written because the steps are the data: no library
writes arithmetic explanations.
"""

from __future__ import annotations

import re

# the worked solutions' format; part of the answers cache key, since the reference solution is stored there
WORKED_VERSION = "worked-1"
_EXPRESSION = re.compile(r"^\s*(\d+)\s*([+\-*])\s*(\d+)\s*$")


def parse_expression(expression: str) -> tuple[int, str, int]:
    """(a, operator, b) of a two-term expression such as "15 - 43" or "7 * 12"."""
    match = _EXPRESSION.match(expression)
    if match is None:
        raise ValueError(f"not a two-term +, -, * expression of non-negative integers: {expression!r}")
    return int(match[1]), match[2], int(match[3])


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _split_steps(a: int, op: str, b: int) -> list[str]:
    """The computation in parts: a sum or difference adds b's tens, then its ones; a product multiplies
    the larger operand's tens and ones separately, then adds the parts."""
    result = _apply(a, op, b)
    if op in "+-":
        tens, ones = divmod(b, 10)
        if tens and ones:
            middle = _apply(a, op, tens * 10)
            return [f"First {a} {op} {tens * 10} = {middle}.", f"Then {middle} {op} {ones} = {result}."]
        return [f"{a} {op} {b} = {result}."]
    split, other = (a, b) if a >= b else (b, a)
    tens, ones = divmod(split, 10)
    if not (tens and ones):
        return [f"{a} * {b} = {result}."]
    high, low = tens * 10 * other, ones * other
    return [f"Split {split} into {tens * 10} + {ones}.", f"First {tens * 10} * {other} = {high}.",
            f"Then {ones} * {other} = {low}.", f"Add the parts: {high} + {low} = {result}."]


def worked_solution(expression: str) -> str:
    """The steps of `expression` and "The answer is N." (N its value)."""
    a, op, b = parse_expression(expression)
    result = _apply(a, op, b)
    lines = [f"We need to compute {a} {op} {b}.", *_split_steps(a, op, b), f"So {a} {op} {b} = {result}."]
    if op == "+":
        lines.append(f"Check: {result} - {b} = {a}.")
    elif op == "-":
        lines.append(f"Check: {result} + {b} = {a}.")
    elif min(a, b):
        lines.append(f"Check: {result} / {min(a, b)} = {max(a, b)}.")
    lines.append(f"The answer is {result}.")
    return "\n".join(lines)


def reference_solution(expression: str) -> str | None:
    """The worked solution of a two-term expression, or None for any other expression."""
    try:
        return worked_solution(expression)
    except ValueError:
        return None
