"""Accuracy table: Wilson intervals and exact McNemar against statsmodels and hand values."""

import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from harness.analysis.accuracy import accuracy_table, mcnemar_exact, wilson_interval
from harness.data.grading import Check
from harness.errors import UserError


@pytest.mark.parametrize("k,n", [(0, 10), (20, 100), (26, 100), (7, 7), (1, 3)])
def test_wilson_matches_statsmodels(k, n):
    assert wilson_interval(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=1e-9)


def test_wilson_by_hand():
    low, high = wilson_interval(20, 100)
    assert (round(low, 4), round(high, 4)) == (0.1334, 0.2888)


@pytest.mark.parametrize("fixed,broken", [(10, 4), (11, 6), (0, 5), (3, 3), (0, 0)])
def test_exact_mcnemar_matches_statsmodels(fixed, broken):
    expected = mcnemar([[0, broken], [fixed, 0]], exact=True).pvalue if fixed + broken else 1.0
    assert mcnemar_exact(fixed, broken) == pytest.approx(expected)


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
