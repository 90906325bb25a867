"""Answer extraction and equivalence on real GSM8K / MATH / model-output strings, under both graders."""

from fractions import Fraction

import pytest

from harness.data.generation import Generation
from harness.data.grading import (
    GRADER_SETTINGS,
    answers_equivalent,
    canonical_number,
    check_answer,
    check_answers,
    extract_answer,
    parse_number,
    resolve_grader,
)
from harness.data.latex import last_boxed
from harness.data.problems import Problem, load_reasoning_gym
from harness.errors import UserError

NATALIA = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
           "clips altogether in April and May.\n#### 72")

# (model text, gold, style, expected extracted string, expected method, expected correct), under
# the lenient grader; the paper grader must agree on boxed (and GSM8K ####) answers and find nothing
# in the others.
CASES = [
    # GSM8K reference solutions and GSM8K-style model answers
    (NATALIA, "72", "gsm8k", "72", "hash", True),
    ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n#### 10", "10", "gsm8k", "10", "hash", True),
    ("She pays 1,000 in total.\n#### 1,000", "1000", "gsm8k", "1,000", "hash", True),
    ("So he makes 18 dollars.\n#### 18.00", "18", "gsm8k", "18.00", "hash", True),
    ("#### 2.50", "2.5", "gsm8k", "2.50", "hash", True),
    ("Each costs $3, so 3*2 = 6.\n#### 5", "6", "gsm8k", "5", "hash", False),
    ("The answer is $18.", "18", "gsm8k", "18", "answer-is", True),
    ("So the answer is: 42", "42", "gsm8k", "42", "answer-is", True),
    ("So the answer is 4 - 8 = -4.", "-4", "gsm8k", "-4", "answer-is", True),
    ("She has 3 apples and eats 1, leaving 2 apples.", "2", "gsm8k", "2", "last-number", True),
    ("We get 12,500 - 2,000 = 10,500 dollars in the end", "10500", "gsm8k", "10,500", "last-number", True),
    ("Earlier I wrote #### 70 but redo: \\boxed{72}", "72", "gsm8k", "72", "boxed", True),
    ("The total is \\boxed{\\$1,250.50}.", "1250.5", "gsm8k", "\\$1,250.50", "boxed", True),
    ("Increase: \\boxed{50\\%}", "50", "gsm8k", "50\\%", "boxed", True),
    ("The temperature is \\boxed{-3}", "3", "gsm8k", "-3", "boxed", False),
    ("I don't know how to solve this.", "5", "gsm8k", None, "none", False),
    # MATH solutions and MATH-style model answers
    ("Thus the sum is $\\boxed{\\frac{14}{3}}$.", "\\frac{14}{3}", "math", "\\frac{14}{3}", "boxed", True),
    ("so $x = \\boxed{\\dfrac{14}{3}}$", "\\frac{14}{3}", "math", "\\dfrac{14}{3}", "boxed", True),
    ("The answer is $\\boxed{14/3}$.", "\\frac{14}{3}", "math", "14/3", "boxed", True),
    ("$\\boxed{\\frac12}$", "0.5", "math", "\\frac12", "boxed", True),
    ("$\\boxed{0.333}$", "\\frac13", "math", "0.333", "boxed", False),
    ("Simplifying, $\\boxed{2\\sqrt{2}}$.", "\\sqrt{8}", "math", "2\\sqrt{2}", "boxed", True),
    ("$\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{1}{2}\\sqrt{3}", "math", "\\frac{\\sqrt{3}}{2}", "boxed", True),
    ("$\\boxed{\\frac{1}{\\sqrt{2}}}$", "\\frac{\\sqrt{2}}{2}", "math", "\\frac{1}{\\sqrt{2}}", "boxed", True),
    ("The point is $\\boxed{(3, -1)}$.", "(3,-1)", "math", "(3, -1)", "boxed", True),
    ("The point is $\\boxed{(-1, 3)}$.", "(3,-1)", "math", "(-1, 3)", "boxed", False),
    ("$x \\in \\boxed{[2,5)}$", "[2, 5)", "math", "[2,5)", "boxed", True),
    ("$x \\in \\boxed{(2,5)}$", "[2, 5)", "math", "(2,5)", "boxed", False),
    ("Expanding, $\\boxed{x^2+2x+1}$", "(x+1)^2", "math", "x^2+2x+1", "boxed", True),
    ("The angle measures $\\boxed{90^\\circ}$.", "90", "math", "90^\\circ", "boxed", True),
    ("The answer is $\\boxed{\\text{(C)}}$.", "\\text{(C)}", "math", "\\text{(C)}", "boxed", True),
    ("Solving gives $\\boxed{x=5}$.", "5", "math", "x=5", "boxed", True),
    ("The roots are $\\boxed{2, -3}$.", "-3, 2", "math", "2, -3", "boxed", True),
    ("The area is $\\boxed{\\pi}$.", "3.14", "math", "\\pi", "boxed", False),
    ("The length is $\\boxed{10\\text{ cm}}$.", "10", "math", "10\\text{ cm}", "boxed", True),
    ("$\\boxed{3\\pi}$", "3\\pi", "math", "3\\pi", "boxed", True),
    ("$\\boxed{1,000}$", "1000", "math", "1,000", "boxed", True),
    ("Final: \\fbox{7}", "7", "math", "7", "boxed", True),
    ("$\\boxed{\\infty}$", "\\infty", "math", "\\infty", "boxed", True),
    ("$\\boxed{a}$", "b", "math", "a", "boxed", False),
    ("First \\boxed{12}. But wait, recheck: \\boxed{13}.", "13", "math", "13", "boxed", True),
    ("so we get \\boxed{3", "3", "math", "3", "last-number", True),
    ("$\\boxed{\\left( \\frac{1}{2}, 4 \\right)}$", "(\\frac12,4)", "math",
     "\\left( \\frac{1}{2}, 4 \\right)", "boxed", True),
    ("$\\boxed{\\sqrt[3]{8}}$", "2", "math", "\\sqrt[3]{8}", "boxed", True),
]


@pytest.mark.parametrize("text,gold,style,extracted,method,correct", CASES)
def test_extraction_and_equivalence_table(text, gold, style, extracted, method, correct):
    problem = Problem(id="q", question="?", gold=gold, style=style)
    check = check_answer(text, problem, grader="lenient")
    assert (check.extracted, check.method, check.correct) == (extracted, method, correct)
    assert check.gold == gold and check.problem_id == "q" and check.grader == "lenient"
    paper = check_answer(text, problem)  # auto -> paper on GSM8K and MATH
    assert paper.grader == "paper"
    if method in ("boxed", "hash"):
        assert (paper.extracted, paper.method, paper.correct) == (extracted, method, correct)
    else:
        assert (paper.extracted, paper.method, paper.correct) == (None, "none", False)


def test_table_is_large_and_mixed():
    assert len(CASES) >= 30
    assert {c[2] for c in CASES} == {"gsm8k", "math"}
    assert {c[5] for c in CASES} == {True, False}


def test_last_boxed_handles_nesting_and_space_form():
    assert last_boxed("\\boxed{\\frac{a}{b^{2}}} and more") == "\\frac{a}{b^{2}}"
    assert last_boxed("so \\boxed 5$") == "5"
    assert last_boxed("no box here") is None


@pytest.mark.parametrize("text,value", [
    ("1,000", Fraction(1000)), ("$18.50", Fraction(37, 2)), ("12 dollars", Fraction(12)),
    ("3/4", Fraction(3, 4)), ("\\frac{3}{4}", Fraction(3, 4)), ("-\\frac12", Fraction(-1, 2)),
    ("0.50", Fraction(1, 2)), ("50\\%", Fraction(50)), ("x = -7", Fraction(-7)),
    ("5 cm^2", Fraction(5)), (".25", Fraction(1, 4)), ("\\text{12 dollars}", Fraction(12)),
    ("10\\text{ cm}", Fraction(10)), ("30^\\circ", Fraction(30)),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["1,2", "1,00", "x+1", "\\frac{1}{0}", "(1,2)", "",
                                  "2i", "3x", "2e", "2 i", "5\\pi", "2pi", "2 pi"])
def test_parse_number_rejects_non_numbers(text):
    assert parse_number(text) is None


def test_canonical_number_is_exact():
    assert canonical_number(Fraction(1000)) == "1000"
    assert canonical_number(Fraction(5, 2)) == "2.5"
    assert canonical_number(Fraction(1, 3)) == "1/3"


def test_answers_equivalent_none_is_wrong():
    assert not answers_equivalent(None, "5")


def test_paper_extraction_has_no_fallback():
    assert extract_answer("There are 4 cats.", grader="paper").method == "none"
    assert extract_answer("There are 4 cats.", grader="lenient").value == "4"
    # #### counts under paper only for GSM8K-style problems (the dataset's own answer line)
    assert extract_answer("#### 4", grader="paper", style="gsm8k").value == "4"
    assert extract_answer("#### 4", grader="paper", style="math").method == "none"


def test_reasoning_gym_uses_the_task_scorer():
    problems = load_reasoning_gym("chain_sum", n=5, seed=3).problems
    for problem in problems:
        assert check_answer(f"The answer is {problem.gold}.", problem).correct
        wrong = str(int(problem.gold) + 1)
        check = check_answer(f"#### {wrong}", problem)
        assert not check.correct and check.extracted == wrong


def test_reasoning_gym_gsm_symbolic_accepts_thousands_commas():
    problem = next(p for p in load_reasoning_gym("gsm_symbolic", n=40, seed=0).problems
                   if int(float(p.gold)) >= 1000)
    with_commas = f"{int(float(problem.gold)):,}"
    assert check_answer(f"#### {with_commas}", problem).correct


# (gold, predicted \boxed{} content, correct under paper, correct under lenient): MATH / GSM8K answers
EQUIVALENCE = [
    ("2", "2i", False, False),                       # imaginary unit is not a unit word
    ("1 + 2i", "1+2i", True, True),
    ("2 + i", "2 - i", False, False),
    ("3", "3x", False, False),                       # a variable is not a unit word
    ("2", "2e", False, False),                       # nor is Euler's e
    ("5", "5\\pi", False, False),
    ("5\\pi", "5\\pi", True, True),
    ("x/2", "\\frac{x}{2}", True, True),
    ("\\frac{x}{2}", "\\frac{y}{2}", False, False),
    ("(-\\infty,2]", "(-\\infty, 2]", True, True),
    ("(0,1)", "[0,1)", False, False),
    ("(-\\infty, 2]", "(-\\infty, 2)", False, False),
    ("12", "\\text{12 dollars}", False, True),       # unit words: only the lenient grader strips them
    ("12", "12 dollars", False, True),
    ("5", "5\\text{ cm}", True, True),              # math-verify drops \\text units itself
    ("30", "30^\\circ", True, True),
    ("0.5", "\\dfrac{1}{2}", True, True),
    ("\\frac{1}{2}", "0.5", True, True),
    ("2\\sqrt{2}", "\\sqrt{8}", True, True),
    ("\\sqrt{8}", "3", False, False),
    ("1000", "1,000", True, True),
    ("1000", "1,000,000", False, False),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True, True),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}", False, False),
]


@pytest.mark.parametrize("gold,predicted,paper,lenient", EQUIVALENCE)
def test_equivalence_under_both_graders(gold, predicted, paper, lenient):
    problem = Problem(id="q", question="?", gold=gold, style="math")
    text = f"Therefore the final answer is $\\boxed{{{predicted}}}$."
    assert check_answer(text, problem, grader="paper").correct is paper
    assert check_answer(text, problem, grader="lenient").correct is lenient
    assert answers_equivalent(predicted, gold, grader="paper") is paper


def test_gsm8k_hash_answer_with_thousands_comma():
    problem = Problem(id="q", question="?", gold="1000", style="gsm8k")
    text = "She saves 250 a week for 4 weeks: 250*4 = <<250*4=1000>>1000.\n#### 1,000"
    for grader in ("paper", "lenient"):
        check = check_answer(text, problem, grader=grader)
        assert (check.extracted, check.method, check.correct) == ("1,000", "hash", True)
    wrong = check_answer(text.replace("1,000", "1,001"), problem)
    assert not wrong.correct


def test_paper_needs_a_box_even_when_the_last_number_is_right():
    problem = Problem(id="q", question="?", gold="\\frac{14}{3}", style="math")
    text = "Adding the two parts gives 14/3"
    paper = check_answer(text, problem)
    assert (paper.grader, paper.method, paper.correct) == ("paper", "none", False)
    lenient = check_answer(text, problem, grader="lenient")
    assert (lenient.method, lenient.extracted, lenient.correct) == ("last-number", "14/3", True)
    gsm = Problem(id="g", question="?", gold="72", style="gsm8k")
    assert not check_answer("So she sold 72 clips.", gsm).correct
    assert check_answer("So she sold 72 clips.", gsm, grader="lenient").correct


def test_grader_resolution_and_recording():
    assert GRADER_SETTINGS == ("auto", "paper", "lenient")
    assert [resolve_grader("auto", s) for s in ("math", "gsm8k", "reasoning-gym")] == \
        ["paper", "paper", "reasoning-gym"]
    assert resolve_grader("lenient", "math") == "lenient"
    assert resolve_grader("lenient", "reasoning-gym") == "reasoning-gym"
    assert resolve_grader("paper", "reasoning-gym") == "paper"
    with pytest.raises(UserError, match="unknown grader 'strict'; choose one of auto, paper, lenient"):
        resolve_grader("strict", "math")


def test_check_answers_threads_the_grader():
    problems = [Problem(id="a", question="?", gold="7", style="math")]
    generation = Generation(problem_id="a", prompt="p", prompt_ids=(1,), answer_ids=(2,),
                            text="so it is 7", finish_reason="eos", model_fingerprint="sha256:x",
                            template="bare")
    [paper] = check_answers([generation], problems)
    [lenient] = check_answers([generation], problems, grader="lenient")
    assert (paper.correct, paper.check.grader) == (False, "paper")
    assert (lenient.correct, lenient.check.grader) == (True, "lenient")
    with pytest.raises(UserError, match="unknown grader"):
        check_answers([generation], problems, grader="exact")


def test_reasoning_gym_auto_keeps_the_final_number_convention():
    problem = load_reasoning_gym("chain_sum", n=1, seed=5).problems[0]
    check = check_answer(f"Adding them up, we get {problem.gold}", problem)
    assert (check.grader, check.method, check.correct) == ("reasoning-gym", "last-number", True)
    boxed_only = check_answer(f"Adding them up, we get {problem.gold}", problem, grader="paper")
    assert (boxed_only.grader, boxed_only.correct) == ("paper", False)


def test_grading_works_off_the_main_thread():
    # math-verify's default timeouts use signals, which raise off the main thread; we turn them off
    from concurrent.futures import ThreadPoolExecutor

    problem = Problem(id="q", question="?", gold="2\\sqrt{2}", style="math")
    with ThreadPoolExecutor(1) as pool:
        check = pool.submit(check_answer, "$\\boxed{\\sqrt{8}}$", problem).result()
    assert check.correct and check.grader == "paper"
