"""Statistics against independent computations (brute force, closed forms) and scipy/statsmodels."""

import itertools
import math
import time

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from harness.analysis.metrics import (
    METRICS,
    MetricConfig,
    as_pair,
    per_sample_values,
    pooled_values,
)
from harness.analysis.stats.comparisons import (
    alpha_trend,
    binomial_rate_test,
    compare_effects,
    correlation_ci,
    tost_paired,
)
from harness.analysis.stats.multiplicity import benjamini_hochberg, holm
from harness.analysis.stats.paired import PairedTest, hedges_correction, paired_test
from harness.analysis.stats.pooled import _swap_null, pooled_test
from harness.audit.verdicts import Verdict, decide_verdict, family_verdicts
from harness.errors import UserError


def brute_force_wilcoxon(d):
    """Exact one-sided p (greater) of the signed-rank sum over all 2^n sign patterns (no ties)."""
    ranks = scipy.stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=d.size)]
    return np.mean(np.array(sums) >= observed - 1e-9)


def test_wilcoxon_exact_matches_brute_force_both_directions():
    rng = np.random.default_rng(0)
    base = rng.normal(size=12)
    post = base + rng.normal(0.4, 1.0, 12)
    d = post - base
    up = paired_test(base, post, +1)
    down = paired_test(base, post, -1)
    assert up.p_wilcoxon == pytest.approx(brute_force_wilcoxon(d))
    assert down.p_wilcoxon == pytest.approx(brute_force_wilcoxon(-d))
    assert up.p_wilcoxon_opposite == pytest.approx(down.p_wilcoxon)
    assert up.wilcoxon_method.startswith("exact") and up.alternative == "greater" and down.alternative == "less"


def test_wilcoxon_drops_zeros_and_says_so():
    rng = np.random.default_rng(1)
    base = rng.normal(size=14)
    post = base + rng.normal(0.3, 1.0, 14)
    post[[2, 5, 9]] = base[[2, 5, 9]]
    d = post - base
    r = paired_test(base, post, +1)
    assert r.n == 14 and r.n_zero == 3 and r.zero_method == "wilcox"
    assert r.p_wilcoxon == pytest.approx(brute_force_wilcoxon(d[d != 0]))


def test_wilcoxon_large_n_matches_normal_approximation_by_hand():
    rng = np.random.default_rng(2)
    d = rng.normal(0.1, 1.0, 80)
    r = paired_test(np.zeros(80), d, +1)
    n = d.size
    t_plus = scipy.stats.rankdata(np.abs(d))[d > 0].sum()
    z = (t_plus - n * (n + 1) / 4) / math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    assert r.p_wilcoxon == pytest.approx(scipy.stats.norm.sf(z), rel=1e-9)
    assert r.wilcoxon_method.startswith("normal")


@pytest.mark.parametrize("n", [9, 30, 70])
@pytest.mark.parametrize("zero_method", ["wilcox", "pratt"])
@pytest.mark.parametrize("with_ties", [False, True])
def test_wilcoxon_matches_scipy_with_zeros_and_ties(n, zero_method, with_ties):
    rng = np.random.default_rng(n)
    d = rng.normal(0.3, 1.0, n)
    if with_ties:
        d = np.round(d, 1)
        d[:3] = 0.0
        d[3:5] = 0.7
    r = paired_test(np.zeros(n), d, +1, zero_method=zero_method)
    method = "exact" if r.wilcoxon_method.startswith("exact") else "asymptotic"
    assert (method == "exact") == (not with_ties and n <= 50)
    for alternative, ours in (("greater", r.p_wilcoxon), ("less", r.p_wilcoxon_opposite)):
        ref = scipy.stats.wilcoxon(d, zero_method=zero_method, alternative=alternative, method=method)
        assert ours == pytest.approx(ref.pvalue, rel=1e-9), alternative


def test_sign_flip_exact_matches_scipy_permutation_test():
    rng = np.random.default_rng(3)
    base = rng.normal(size=10)
    post = base + rng.normal(0.5, 1.0, 10)
    r = paired_test(base, post, +1)
    ref = scipy.stats.permutation_test(
        (post, base), lambda x, y: np.mean(x - y), permutation_type="samples", alternative="greater"
    )
    assert r.permutation_method.startswith("exact")
    assert r.p_permutation == pytest.approx(ref.pvalue)


def test_sign_flip_monte_carlo_close_to_large_reference():
    rng = np.random.default_rng(4)
    base = rng.normal(size=40)
    post = base + rng.normal(0.3, 1.0, 40)
    r = paired_test(base, post, +1, n_perm=20000, seed=1)
    ref = scipy.stats.permutation_test(
        (post, base), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples", alternative="greater",
        n_resamples=200000, vectorized=True, rng=np.random.default_rng(9),
    ).pvalue
    assert r.permutation_method.startswith("Monte Carlo")
    assert abs(r.p_permutation - ref) < 4 * math.sqrt(ref * (1 - ref) / 20000) + 1e-4


def test_bca_interval_matches_scipy_bootstrap():
    rng = np.random.default_rng(5)
    base = rng.gamma(2.0, size=60)
    post = base + rng.gamma(1.0, size=60) - 0.8
    d = post - base
    r = paired_test(base, post, +1, n_boot=40000, seed=2)
    ref = scipy.stats.bootstrap(
        (d,), np.mean, method="BCa", n_resamples=40000, confidence_level=0.95, rng=np.random.default_rng(3)
    ).confidence_interval
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert abs(r.ci_low - ref.low) < 0.05 * se
    assert abs(r.ci_high - ref.high) < 0.05 * se
    assert r.ci_low < d.mean() < r.ci_high


def test_hedges_dz_by_hand():
    assert hedges_correction(2) == pytest.approx(1 / math.sqrt(math.pi))
    rng = np.random.default_rng(6)
    d = rng.normal(0.5, 2.0, 30)
    r = paired_test(np.zeros(30), d, +1)
    approx_j = 1 - 3 / (4 * 29 - 1)
    assert r.hedges_dz == pytest.approx(d.mean() / d.std(ddof=1) * approx_j, rel=1e-4)


def test_bootstrap_is_fast_and_deterministic():
    rng = np.random.default_rng(7)
    base, post = rng.normal(size=100), rng.normal(size=100)
    start = time.perf_counter()
    first = paired_test(base, post, +1, n_boot=2000, n_perm=10000, seed=11)
    assert time.perf_counter() - start < 0.5
    assert first == paired_test(base, post, +1, n_boot=2000, n_perm=10000, seed=11)
    assert first.ci_low != paired_test(base, post, +1, n_boot=2000, seed=12).ci_low


def test_degenerate_cells_are_flagged_and_no_change_is_not_invalid():
    x = np.arange(12.0)
    unchanged = paired_test(x, x, +1)
    assert unchanged.invalid_reason is None and unchanged.no_change
    assert (unchanged.p_claimed, unchanged.p_opposite, unchanged.mean_diff) == (1.0, 1.0, 0.0)
    assert "zero variance" in paired_test(x, x + 1, +1).invalid_reason
    assert "only 2" in paired_test([1.0, 2.0], [2.0, 3.5], +1).invalid_reason
    assert math.isnan(paired_test(x, x + 1, +1).p_wilcoxon)


@pytest.mark.parametrize(
    "base, post, direction, match",
    [
        (np.zeros(5), np.zeros(6), 1, "differ in length"),
        (np.zeros(5), np.array([0, 1, np.nan, 2, 3.0]), 1, "NaN/inf at questions \\[2\\]"),
        (np.zeros((5, 2)), np.zeros((5, 2)), 1, "1-D"),
        (np.zeros(5), np.ones(5), 0, "direction"),
    ],
)
def test_paired_test_bad_input(base, post, direction, match):
    with pytest.raises(UserError, match=match):
        paired_test(base, post, direction)


def test_holm_and_bh_give_the_hand_computed_values():
    # sorted 0.005, 0.01, 0.03, 0.04. Holm: 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06), capped at 1.
    # BH: 0.005*4/1, 0.01*4/2, 0.03*4/3, 0.04*4/4, then the running minimum from the largest.
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_multiplicity_skips_invalid_cells():
    p = np.array([0.01, np.nan, 0.04, 0.03])
    valid = ~np.isnan(p)
    for ours, method in ((holm(p), "holm"), (benjamini_hochberg(p), "fdr_bh")):
        assert np.isnan(ours[1])
        assert ours[valid] == pytest.approx(multipletests(p[valid], method=method)[1])
    with pytest.raises(UserError, match="\\[0, 1\\]"):
        holm([0.5, 1.5])


def test_tost_matches_statsmodels():
    rng = np.random.default_rng(9)
    base = rng.normal(10.0, 1.0, 40)
    post = base + rng.normal(0.1, 0.5, 40)
    r = tost_paired(base, post, margin_rel=0.05)
    margin = 0.05 * abs(base.mean())
    p_ref, lower, upper = ttost_paired(post, base, -margin, margin)
    assert r.p_tost == pytest.approx(p_ref)
    assert r.p_lower == pytest.approx(lower[1]) and r.p_upper == pytest.approx(upper[1])
    assert r.equivalent == (p_ref < 0.05)
    assert r.margin_abs == pytest.approx(margin)
    far = tost_paired(base, base + 2.0, margin_rel=0.05)
    assert not far.equivalent


def test_binomial_rate_test_matches_scipy():
    r = binomial_rate_test(39, 41, 0.95)
    assert r.p_above == pytest.approx(scipy.stats.binomtest(39, 41, 0.95, alternative="greater").pvalue)
    assert r.p_below == pytest.approx(scipy.stats.binomtest(39, 41, 0.95, alternative="less").pvalue)
    ci = scipy.stats.binomtest(39, 41).proportion_ci(0.95, method="exact")
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high))
    assert "not independent" in r.caveat
    edge = binomial_rate_test(0, 10, 0.5)
    assert edge.ci_low == 0.0
    assert edge.ci_high == pytest.approx(scipy.stats.binomtest(0, 10).proportion_ci(method="exact").high)
    with pytest.raises(UserError):
        binomial_rate_test(5, 4)


def test_alpha_trend_matches_exact_permutation_reference():
    alphas = np.array([0.03, 0.1, 0.3, 0.5])
    effects = np.array([-0.2, 0.1, 0.05, 0.4])
    r = alpha_trend(alphas, effects, direction=+1)
    rho_ref = scipy.stats.spearmanr(alphas, effects).statistic
    ref = scipy.stats.permutation_test(
        (effects,), lambda y: scipy.stats.spearmanr(alphas, y).statistic, permutation_type="pairings",
        alternative="greater",
    )
    assert r.rho == pytest.approx(rho_ref)
    assert r.p_increasing == pytest.approx(ref.pvalue)
    perfect = alpha_trend(alphas, -np.arange(4.0), direction=-1)
    assert perfect.rho == pytest.approx(1.0) and perfect.p_increasing == pytest.approx(1 / 24)


def test_alpha_trend_monte_carlo_for_many_levels():
    rng = np.random.default_rng(10)
    alphas = np.linspace(0.01, 1.0, 12)
    effects = alphas + rng.normal(0, 0.3, 12)
    r = alpha_trend(alphas, effects, n_perm=20000, seed=1)
    ranked_alphas = scipy.stats.rankdata(alphas) - 6.5

    def spearman(y, axis):
        ranked = scipy.stats.rankdata(y, axis=axis) - 6.5
        return np.sum(ranked * ranked_alphas, axis=axis) / np.sum(ranked_alphas**2)

    ref = scipy.stats.permutation_test(
        (effects,), spearman, permutation_type="pairings", alternative="greater", n_resamples=20000,
        vectorized=True, rng=np.random.default_rng(2),
    ).pvalue
    assert abs(r.p_increasing - ref) < 4 * math.sqrt(max(ref, 1e-3) / 20000) + 2e-4


def test_correlation_ci_matches_scipy():
    rng = np.random.default_rng(11)
    x = rng.normal(size=25)
    y = 0.5 * x + rng.normal(size=25)
    r = correlation_ci(x, y)
    ref = scipy.stats.pearsonr(x, y)
    ci = ref.confidence_interval(0.95)
    assert r.r == pytest.approx(ref.statistic)
    assert r.p_two_sided == pytest.approx(ref.pvalue)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high))
    s = correlation_ci(x, y, method="spearman")
    sref = scipy.stats.spearmanr(x, y)
    assert s.r == pytest.approx(sref.statistic) and s.p_two_sided == pytest.approx(sref.pvalue)
    z, se = np.arctanh(s.r), math.sqrt((1 + s.r**2 / 2) / 22)
    assert (s.ci_low, s.ci_high) == pytest.approx((np.tanh(z - 1.959964 * se), np.tanh(z + 1.959964 * se)))
    with pytest.raises(UserError, match="constant"):
        correlation_ci(x, np.ones(25))


def test_compare_effects_bootstrap_se_and_direction():
    rng = np.random.default_rng(12)
    n = 200
    dpo = rng.normal(0.0, 1.0, n)
    rl = [rng.normal(0.8, 1.0, n), rng.normal(0.6, 1.0, n)]
    r = compare_effects(dpo, rl, +1, n_boot=4000, seed=3)
    # delta-method variance of d_z: (1 + d^2/2) / n, per pair
    se = math.sqrt((1 + r.effect_dpo**2 / 2) / n + sum((1 + e**2 / 2) / n for e in r.effect_rl_each) / 4)
    width = (r.ci_high - r.ci_low) / (2 * 1.959964)
    assert width == pytest.approx(se, rel=0.15)
    assert r.difference < 0 and r.ci_high < 0 and r.p_weaker < 0.01
    flipped = compare_effects(-dpo, [-x for x in rl], -1, n_boot=4000, seed=3)
    assert flipped.difference == pytest.approx(r.difference)
    stronger = compare_effects(rl[0], [dpo], +1, n_boot=2000, seed=3)
    assert stronger.p_weaker > 0.9


def test_pooled_intensity_ci_equals_paired_test_on_per_sample_values():
    """Pooled intensity is the mean of per-sample intensities, so both bootstraps must coincide."""
    rng = np.random.default_rng(13)
    mask = np.tril(np.ones((5, 8), bool), 3)
    base = rng.normal(size=(40, 5, 8))
    post = base * rng.uniform(0.9, 1.3, (40, 1, 1))
    config = MetricConfig()
    pooled = pooled_test(base, post, mask, "intensity", config, n_boot=2000, seed=4)
    values = per_sample_values("intensity", base, post, mask, config)
    paired = paired_test(values.base, values.post, +1, n_boot=2000, seed=4)
    assert pooled.diff == pytest.approx(paired.mean_diff)
    assert (pooled.ci_low, pooled.ci_high) == pytest.approx((paired.ci_low, paired.ci_high))
    assert pooled.p_permutation < 0.01 and pooled.config["bins"] == 100


def test_decide_verdict_rules():
    base = paired_test(np.zeros(20), np.linspace(-1, 3, 20), +1)
    cases = [
        (0.01, 0.99, True, Verdict.SUPPORTED),
        (0.99, 0.01, True, Verdict.REFUTED),
        (0.2, 0.8, True, Verdict.INCONCLUSIVE),
        (0.01, 0.99, False, Verdict.INVALID),
        (math.nan, 0.5, True, Verdict.INVALID),
    ]
    for p, p_opp, fidelity, label in cases:
        v = decide_verdict(base, p, p_opp, alpha=0.05, min_n=10, fidelity_ok=fidelity)
        assert v.label is label, (p, p_opp, fidelity)
        assert "Holm" in v.rule and "0.05" in v.rule
    assert decide_verdict(base, 0.01, 0.99, min_n=30).label is Verdict.INVALID
    degenerate = paired_test(np.zeros(20), np.zeros(20), +1)
    no_change = decide_verdict(degenerate, 1.0, 1.0)
    assert no_change.label is Verdict.INCONCLUSIVE and no_change.reason.startswith("no change")


def test_family_verdicts_apply_holm_and_count_no_change_as_inconclusive():
    rng = np.random.default_rng(14)
    tests = [paired_test(np.zeros(30), rng.normal(mu, 1.0, 30), +1) for mu in (0.8, 0.45, 0.0)]
    tests.append(paired_test(np.zeros(30), np.zeros(30), +1))
    tests.append(paired_test(np.zeros(2), np.ones(2), +1))   # too few questions: invalid
    verdicts = family_verdicts(tests, alpha=0.05)
    # one Holm pass over both directions of the four usable cells (2m = 8 hypotheses); the
    # unchanged cell enters with p = 1 in both directions and is INCONCLUSIVE: no change
    both = holm([t.p_wilcoxon for t in tests[:4]] + [t.p_opposite for t in tests[:4]])
    expected = both[:4]
    assert [v.p_adjusted for v in verdicts[:4]] == pytest.approx(expected)
    assert [v.p_adjusted_opposite for v in verdicts[:4]] == pytest.approx(both[4:])
    assert {v.holm_m for v in verdicts} == {8}
    assert verdicts[3].label is Verdict.INCONCLUSIVE and verdicts[3].reason.startswith("no change")
    assert verdicts[4].label is Verdict.INVALID
    for v, p in zip(verdicts[:3], expected[:3]):
        assert (v.label is Verdict.SUPPORTED) == (p < 0.05)


def test_paired_test_fields_are_complete():
    fields = set(PairedTest.__dataclass_fields__)
    assert {"n", "n_zero", "mean_base", "mean_post", "mean_diff", "ci_low", "ci_high", "ci_method", "hedges_dz",
            "p_wilcoxon", "p_permutation", "alternative", "zero_method"} <= fields


@pytest.mark.parametrize("policy", ["joint", "per_model", "fixed"])
@pytest.mark.parametrize("metric", ["intensity", "complexity", "kurtosis", "diversity", "node_entropy", "mass_entropy"])
def test_swap_null_equals_recomputing_on_swapped_models(metric, policy):
    """The permutation machinery reproduces the pooled difference of explicitly swapped samples."""
    rng = np.random.default_rng(15)
    mask = np.tril(np.ones((4, 7), bool), 2)
    base = rng.normal(size=(9, 4, 7))
    post = rng.normal(size=(9, 4, 7)) * 1.4
    config = MetricConfig(bins=13, range_policy=policy, fixed_range=(0.0, 20.0) if policy == "fixed" else None)
    swaps = np.array([[0] * 9, [1, 0, 0, 1, 1, 0, 1, 0, 0]], dtype=float)
    null = _swap_null(METRICS[metric], *as_pair(base, post, mask), config, swaps)
    for pattern, value in zip(swaps.astype(bool), null):
        b = np.where(pattern[:, None, None], post, base)
        p = np.where(pattern[:, None, None], base, post)
        ref = pooled_values(metric, b, p, mask, config)
        assert value == pytest.approx(ref.post - ref.base, abs=1e-12)
