"""Calibration by simulation: null pairs keep the false-positive rate at alpha, planted effects are
found with the power that theory predicts, intervals cover.

Monte-Carlo bounds: with R simulations a rate is compared with the binomial(R, rate) quantile at
0.001 / 0.999, so a seeded run fails only if the procedure is off by more than Monte-Carlo error.
"""

import math

import numpy as np
import pytest
import scipy.stats

from harness.analysis.metrics import METRICS, MetricConfig, per_sample_values
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.magnitudes import PairValues, compare_magnitudes
from harness.analysis.stats.paired import paired_test
from harness.analysis.stats.pooled import cell_test
from harness.audit.claims.common import FamilyTest
from harness.audit.verdicts import Verdict, decide_verdict, family_verdicts

ALPHA = 0.05
R = 400
MASK = np.tril(np.ones((5, 9), bool), 4)
FAST = StatsConfig(n_boot=50, n_perm=1000, n_perm_pooled=400)


def upper_bound(rate: float, sims: int) -> int:
    return int(scipy.stats.binom.ppf(0.999, sims, rate))


def lower_bound(rate: float, sims: int) -> int:
    return int(scipy.stats.binom.ppf(0.001, sims, rate))


def null_pair(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Base and post W of one null pair: same law, a per-question scale shared by both models."""
    scale = rng.lognormal(0.0, 0.5, (n, 1, 1))
    return scale * rng.standard_t(4, (n, *MASK.shape)), scale * rng.standard_t(4, (n, *MASK.shape))


def test_null_pairs_keep_false_positive_rate_of_the_cell_procedure():
    rng = np.random.default_rng(2024)
    config = MetricConfig(bins=30)
    supported = {m: 0 for m in METRICS}
    refuted = {m: 0 for m in METRICS}
    for sim in range(R):
        base, post = null_pair(rng, 30)
        for metric in METRICS:
            test = cell_test(metric, base, post, MASK, config, FAST).decisive_test
            verdict = decide_verdict(test, test.p_claimed, test.p_opposite, significance=ALPHA, min_n=10)
            supported[metric] += verdict.label is Verdict.SUPPORTED
            refuted[metric] += verdict.label is Verdict.REFUTED
    # metrics of one simulation are correlated, so each metric is bounded on its own
    for metric in METRICS:
        assert supported[metric] <= upper_bound(ALPHA, R), (metric, supported[metric])
        assert refuted[metric] <= upper_bound(ALPHA, R), (metric, refuted[metric])


@pytest.mark.parametrize(
    "metric, pattern_gain, noise_gain",
    [("intensity", 1.2, 1.2), ("diversity", 0.7, 1.0)],
)
def test_pooled_swap_test_finds_a_planted_change(metric, pattern_gain, noise_gain):
    """Samples = shared graph pattern + own noise; post rescales the pattern and the noise."""
    rng = np.random.default_rng(3)
    config = MetricConfig(bins=30)
    pattern = rng.normal(size=MASK.shape)
    sims, found = 100, 0
    for sim in range(sims):
        scale = rng.lognormal(0.0, 0.5, (30, 1, 1))
        base = scale * (pattern + rng.standard_t(4, (30, *MASK.shape)))
        post = scale * (pattern_gain * pattern + noise_gain * rng.standard_t(4, (30, *MASK.shape)))
        found += cell_test(metric, base, post, MASK, config, FAST).pooled.p_permutation < ALPHA
    assert found >= 0.8 * sims, found


def test_pooled_complexity_finds_lighter_tails_and_ignores_a_rescaling():
    """Information Complexity (per-model range) rises when |W| spreads over its range (post noise t(30)
    instead of t(2)); a pure rescaling of W leaves it exactly unchanged (a tie, no change)."""
    rng = np.random.default_rng(3)
    config = MetricConfig(bins=30)
    pattern = rng.normal(size=MASK.shape)
    sims, found = 40, 0
    for sim in range(sims):
        scale = rng.lognormal(0.0, 0.2, (30, 1, 1))
        base = scale * (pattern + rng.standard_t(2, (30, *MASK.shape)))
        post = scale * (pattern + rng.standard_t(30, (30, *MASK.shape)))
        found += cell_test("complexity", base, post, MASK, config, FAST).pooled.p_permutation < ALPHA
        if sim == 0:
            rescaled = cell_test("complexity", base, 1.3 * base, MASK, config, FAST).pooled
            assert rescaled.no_change and rescaled.p_claimed == 1.0
    assert found >= 0.8 * sims, found


def test_paired_test_on_per_sample_diversity_would_be_anti_conservative():
    """Why diversity is decided by the pooled swap test: its per-sample values share the other samples."""
    rng = np.random.default_rng(7)
    config = MetricConfig()
    false_positives = 0
    for sim in range(R):
        base, post = null_pair(rng, 30)
        values = per_sample_values("diversity", base, post, MASK, config)
        false_positives += paired_test(values.base, values.post, +1, n_boot=10, n_perm=10).p_wilcoxon < ALPHA
    assert not METRICS["diversity"].independent_per_sample
    assert false_positives > upper_bound(ALPHA, R)


def _wilcoxon_power_normal_shift(d: float, n: int, alpha: float) -> float:
    """Normal approximation of the one-sided exact Wilcoxon test's power for N(d, 1) differences.

    Exact mean and variance of T+ = sum_i 1(d_i > 0) + sum_{i<j} 1(d_i + d_j > 0) under the
    shift, against the exact null critical value (continuity-corrected).
    """
    p1 = scipy.stats.norm.cdf(d)
    p2 = scipy.stats.norm.cdf(d * math.sqrt(2))
    p3 = scipy.stats.multivariate_normal([0, 0], [[1, 0.5], [0.5, 1]]).cdf([d * math.sqrt(2)] * 2)
    r = 1 / math.sqrt(2)
    p4 = scipy.stats.multivariate_normal([0, 0], [[1, r], [r, 1]]).cdf([d, d * math.sqrt(2)])
    pairs = n * (n - 1) / 2
    mean = n * p1 + pairs * p2
    var = (n * p1 * (1 - p1) + pairs * p2 * (1 - p2) + n * (n - 1) * (n - 2) * (p3 - p2**2)
           + 2 * n * (n - 1) * (p4 - p1 * p2))
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    tail = np.cumsum(counts[::-1])[::-1] / 2**n
    critical = int(np.argmax(tail <= alpha))
    return float(scipy.stats.norm.sf((critical - 0.5 - mean) / math.sqrt(var)))


def _t_test_power(d: float, n: int, alpha: float) -> float:
    df = n - 1
    return float(scipy.stats.nct.sf(scipy.stats.t.ppf(1 - alpha, df), df, d * math.sqrt(n)))


@pytest.mark.parametrize("effect", [0.3, 0.5])
def test_planted_effects_are_found_with_the_predicted_power(effect):
    rng = np.random.default_rng(int(effect * 100))
    n = 30
    found_wilcoxon = found_permutation = covered = 0
    for sim in range(R):
        base = rng.normal(5.0, 2.0, n)
        post = base + rng.normal(effect, 1.0, n)
        test = paired_test(base, post, +1, n_boot=1000, n_perm=1000, seed=sim)
        found_wilcoxon += test.p_wilcoxon < ALPHA
        found_permutation += test.p_permutation < ALPHA
        covered += test.ci_low <= effect <= test.ci_high
    for found, expected in ((found_wilcoxon, _wilcoxon_power_normal_shift(effect, n, ALPHA)),
                            (found_permutation, _t_test_power(effect, n, ALPHA))):
        assert lower_bound(expected, R) <= found <= upper_bound(expected, R), (found / R, expected)
    assert covered >= lower_bound(0.95, R), covered / R


def test_wilcoxon_power_formula_is_the_size_at_zero_effect():
    size = _wilcoxon_power_normal_shift(0.0, 30, ALPHA)
    assert 0.04 < size <= 0.055


@pytest.mark.slow
def test_c4_keeps_its_level_with_every_true_difference_at_the_margin():
    """C4's family of 4 cells, each preference pair weaker than online RL by exactly the margin (R 0.25
    against 0.30, margin 0.05): P(any cell SUPPORTED, "weaker by more than the margin") stays at most
    the significance level, Holm over the family's 8 one-sided shifted-null tests."""
    rng = np.random.default_rng(11)
    n, margin, cells = 40, 0.05, 4
    ids = tuple(f"q{i}" for i in range(n))
    any_supported = 0
    for _ in range(R):
        tests = []
        for _ in range(cells):
            base = rng.lognormal(2.0, 0.3, n)
            rl = PairValues("rl", ids, base, base * 1.30 + rng.normal(0.0, 0.8, n))
            dpo = PairValues("dpo", ids, base, base * 1.25 + rng.normal(0.0, 0.8, n))
            c = compare_magnitudes(dpo, [rl], +1, margin=margin, n_boot=400, seed=int(rng.integers(1 << 30)))
            tests.append(FamilyTest(c.n_shared, c.p_weaker, c.p_stronger, min_p=c.min_p))
        decisions = family_verdicts(tests, significance=ALPHA, min_n=10)
        any_supported += any(d.label is Verdict.SUPPORTED for d in decisions)
    assert any_supported <= upper_bound(ALPHA, R), any_supported / R


@pytest.mark.slow
def test_c1_keeps_its_level_with_every_true_effect_at_the_margin():
    """C1's family of 8 cells, each with intensity up by exactly the 5 % margin (per-question factor
    1.05 x (1 + 0.05 z)): P(any cell SUPPORTED) stays at most the significance level. The paired test's
    p is of the null shifted by the margin, inside Holm over the family's 16 one-sided hypotheses; with
    the margin read only off each cell's unadjusted interval it was about 1 - 0.975^8 = 18 %."""
    from harness.audit.claims.common import relative_margin

    rng = np.random.default_rng(12)
    stats = StatsConfig(n_boot=200, n_perm=1000, n_perm_pooled=200)
    config = MetricConfig()
    any_supported = 0
    for _ in range(R):
        tests, margins = [], []
        for _ in range(8):
            base = rng.lognormal(0.0, 0.5, (30, 1, 1)) * rng.standard_t(4, (30, *MASK.shape))
            post = base * 1.05 * (1 + 0.05 * rng.normal(size=(30, 1, 1)))
            paired = cell_test("intensity", base, post, MASK, config, stats).paired
            tests.append(paired)
            margins.append(relative_margin(paired.mean_diff, paired.ci_low, paired.ci_high, paired.mean_base, +1, stats))
        decisions = family_verdicts(tests, significance=ALPHA, min_n=10, margins=margins)
        any_supported += any(d.label is Verdict.SUPPORTED for d in decisions)
    assert any_supported <= upper_bound(ALPHA, R), any_supported / R
