"""Accuracy table: Wilson intervals and exact McNemar (statsmodels/scipy) against closed forms and pinned values."""

import math

import pytest

from harness.analysis.accuracy import accuracy_table, mcnemar_exact, wilson_interval
from harness.data.grading import Check
from harness.errors import UserError


@pytest.mark.parametrize("k,n", [(0, 10), (20, 100), (26, 100), (7, 7), (1, 3)])
def test_wilson_matches_the_score_formula(k, n):
    z, p = 1.959963984540054, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(k, n) == pytest.approx((max(0.0, centre - half), min(1.0, centre + half)), abs=1e-12)


def test_wilson_by_hand():
    low, high = wilson_interval(20, 100)
    assert (round(low, 4), round(high, 4)) == (0.1334, 0.2888)


@pytest.mark.parametrize("fixed,broken", [(10, 4), (11, 6), (0, 5), (3, 3), (0, 0)])
def test_exact_mcnemar_is_the_binomial_sum(fixed, broken):
    m = fixed + broken

    def cdf(k):   # P(X <= k), X ~ Binomial(m, 1/2)
        return sum(math.comb(m, i) for i in range(k + 1)) / 2**m

    assert mcnemar_exact(fixed, broken) == pytest.approx(min(1.0, 2 * cdf(min(fixed, broken))))
    assert mcnemar_exact(fixed, broken, "greater") == pytest.approx(1 - cdf(fixed - 1) if m else 1.0)
    assert mcnemar_exact(fixed, broken, "less") == pytest.approx(cdf(fixed))


def checks(outcomes):
    return [Check(f"q{i}", None, "none", "1", bool(c)) for i, c in enumerate(outcomes)]


def test_accuracy_table_pairs_by_question():
    base = checks([1, 1, 0, 0, 0, 1, 0, 0])
    post = checks([1, 0, 1, 1, 1, 1, 0, 1])
    table = accuracy_table(base, list(reversed(post)), pair="tiny", dataset="chain_sum")
    assert (table.base.correct, table.post.correct, table.n) == (3, 6, 8)
    assert (table.fixed, table.broken) == (4, 1)
    assert table.mcnemar_p == pytest.approx(0.375)  # 2 * P(X <= 1 | 5, 1/2) = 2 * 6/32
    assert table.base.ci_low < 3 / 8 < table.base.ci_high
    assert "| tiny | chain_sum | 8 |" in table.to_markdown()


def test_accuracy_table_refuses_unpaired_checks():
    with pytest.raises(UserError, match="same non-empty question set"):
        accuracy_table(checks([1, 0]), checks([1]))
    with pytest.raises(UserError):
        accuracy_table([], [])


PINNED_WILSON = {  # correct, n, confidence: interval of the hand-written Wilson formula at bbcf753
    (0, 10, 0.95): (0.0, 0.2775327998628892), (0, 10, 0.9): (0.0, 0.21294197008340698),
    (20, 100, 0.95): (0.13336693333103253, 0.28882916559315885), (20, 100, 0.9): (0.14250182366028782, 0.2733038088096168),
    (7, 7, 0.95): (0.6456695649333126, 1.0), (7, 7, 0.9): (0.7212373045474579, 1.0),
    (1, 3, 0.95): (0.06149194472039615, 0.7923403991979523), (1, 3, 0.9): (0.07826572633372836, 0.746466131718776),
    (55, 80, 0.95): (0.5793222425531256, 0.7784959588710517), (55, 80, 0.9): (0.5973080188610146, 0.7654246196912137),
}


@pytest.mark.parametrize("k, n, confidence", sorted(PINNED_WILSON))
def test_wilson_reproduces_pinned_numbers(k, n, confidence):
    low, high = wilson_interval(k, n, confidence)
    assert (low, high) == pytest.approx(PINNED_WILSON[(k, n, confidence)], rel=1e-12, abs=1e-15)
    assert 0.0 <= low <= high <= 1.0


PINNED_MCNEMAR = {  # fixed, broken: (two-sided, one-sided 'fixes more', one-sided 'breaks more') at bbcf753
    (10, 4): (0.1795654296875, 0.08978271484375, 0.9713134765625),
    (11, 6): (0.332305908203125, 0.1661529541015625, 0.9282684326171875),
    (0, 5): (0.0625, 1.0, 0.03125),
    (3, 3): (1.0, 0.65625, 0.65625),
    (0, 0): (1.0, 1.0, 1.0),
    (20, 3): (0.00048828125, 0.000244140625, 0.9999669790267944),
    (1, 0): (1.0, 0.5, 1.0),
}


@pytest.mark.parametrize("fixed, broken", sorted(PINNED_MCNEMAR))
def test_mcnemar_reproduces_pinned_numbers(fixed, broken):
    two, greater, less = PINNED_MCNEMAR[(fixed, broken)]
    assert mcnemar_exact(fixed, broken) == pytest.approx(two, rel=1e-12)
    assert mcnemar_exact(fixed, broken, "greater") == pytest.approx(greater, rel=1e-12)
    assert mcnemar_exact(fixed, broken, "less") == pytest.approx(less, rel=1e-12)


def test_mcnemar_refuses_unknown_alternative():
    with pytest.raises(UserError, match="alternative"):
        mcnemar_exact(3, 1, "bigger")
