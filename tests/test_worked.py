"""Worked solutions (the SFT checkpoint's data): every step is true arithmetic, the final sentence is
the task's own answer, and the audit's grader reads it as correct."""

from __future__ import annotations

import re

import pytest

from harness.data.grading import check_answer
from harness.data.problems import load_problems, load_reasoning_gym
from harness.data.worked import parse_expression, reference_solution, worked_solution
from harness.training.posttrain import TASKS, task_problems

EQUATION = re.compile(r"(-?\d+) ([+\-*/]) (-?\d+) = (-?\d+)")


def _true(a: int, op: str, b: int, c: int) -> bool:
    return {"+": a + b == c, "-": a - b == c, "*": a * b == c, "/": b * c == a}[op]


@pytest.mark.parametrize("task", TASKS)
def test_every_step_is_true_and_the_final_answer_is_the_tasks(task):
    for problem in task_problems("train", 200, task):
        text = worked_solution(problem["expression"])
        equations = EQUATION.findall(text)
        assert len(equations) >= 2, text
        assert all(_true(int(a), op, int(b), int(c)) for a, op, b, c in equations), text
        assert text.endswith(f"The answer is {problem['answer']}."), text


@pytest.mark.parametrize("task", TASKS)
def test_the_audit_grades_a_worked_solution_correct_and_a_wrong_total_wrong(task):
    problems = load_reasoning_gym(task, n=30, seed=0).problems
    for p in problems:
        text = worked_solution(p.entry["metadata"]["expression"])
        assert check_answer(text, p, grader="auto").correct, text
        wrong = text.rsplit("The answer is ", 1)[0] + f"The answer is {int(p.gold) + 1}."
        assert not check_answer(wrong, p, grader="auto").correct, wrong


@pytest.mark.parametrize("expression, steps", [
    ("47 + 38", ["First 47 + 30 = 77.", "Then 77 + 8 = 85.", "Check: 85 - 38 = 47."]),
    ("15 - 43", ["First 15 - 40 = -25.", "Then -25 - 3 = -28.", "Check: -28 + 43 = 15."]),
    ("34 * 7", ["Split 34 into 30 + 4.", "First 30 * 7 = 210.", "Then 4 * 7 = 28.", "210 + 28 = 238.",
                "Check: 238 / 7 = 34."]),
    ("20 + 56", ["First 20 + 50 = 70.", "Then 70 + 6 = 76."]),
    ("12 - 40", ["12 - 40 = -28."]),
])
def test_two_digit_operands_are_split_into_tens_and_ones(expression, steps):
    text = worked_solution(expression)
    assert all(step in text for step in steps), text


@pytest.mark.parametrize("bad", ["1 + 2 + 3", "3 / 4", "-3 + 4", "x + 1", ""])
def test_only_two_term_expressions_are_accepted(bad):
    with pytest.raises(ValueError, match="two-term"):
        parse_expression(bad)


@pytest.mark.parametrize("task", ["chain_sum_2d", "arithmetic_2d"])
def test_the_bundled_tasks_have_the_worked_solution_as_their_reference(task):
    """Token mode `reference` reads the dataset's reference solution; reasoning-gym writes none for these
    tasks, so it is the worked solution of the item's expression, ending in the gold answer."""
    for p in load_problems(f"rg:{task}", n=20).problems:
        expression = p.entry["metadata"]["expression"]
        assert p.reference == worked_solution(expression)
        assert p.reference.endswith(f"The answer is {p.gold}.")


def test_an_expression_with_no_worked_solution_has_no_reference():
    assert reference_solution("1 + 2 + 3") is None and reference_solution("(4 * 5)") is None
