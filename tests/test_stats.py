"""Statistics against independent computations (brute force, closed forms) and scipy/statsmodels."""

import itertools
import math
import time

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from harness.analysis.metrics import (
    METRICS,
    MetricConfig,
    as_pair,
    per_sample_values,
    pooled_values,
)
from harness.analysis.stats.multiplicity import benjamini_hochberg, holm
from harness.analysis.stats.paired import PairedTest, hedges_correction, paired_test
from harness.analysis.stats.pooled import _swap_statistic, pooled_test
from harness.audit.claims.common import FamilyTest
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


def normal_wilcoxon_by_hand(d, zero_method):
    """One-sided p (greater) of the signed-rank sum by the normal approximation, tie- and (pratt)
    zero-corrected, no continuity correction."""
    d = d[d != 0] if zero_method == "wilcox" else d
    n, n_zero = d.size, int(np.sum(d == 0))
    t_plus = scipy.stats.rankdata(np.abs(d))[d > 0].sum()
    _, ties = np.unique(np.abs(d[d != 0]), return_counts=True)
    mean = (n * (n + 1) - n_zero * (n_zero + 1)) / 4
    var = (n * (n + 1) * (2 * n + 1) - n_zero * (n_zero + 1) * (2 * n_zero + 1)) / 24 - np.sum(ties**3 - ties) / 48
    return scipy.stats.norm.sf((t_plus - mean) / math.sqrt(var))


@pytest.mark.parametrize("n", [9, 30, 70])
@pytest.mark.parametrize("zero_method", ["wilcox", "pratt"])
@pytest.mark.parametrize("with_ties", [False, True])
def test_wilcoxon_with_zeros_and_ties_matches_independent_references(n, zero_method, with_ties):
    rng = np.random.default_rng(n)
    d = rng.normal(0.3, 1.0, n)
    if with_ties:
        d = np.round(d, 1)
        d[:3] = 0.0
        d[3:5] = 0.7
    r = paired_test(np.zeros(n), d, +1, zero_method=zero_method)
    exact = r.wilcoxon_method.startswith("exact")
    assert exact == (not with_ties and n <= 50)
    if exact and n <= 12:
        assert r.p_wilcoxon == pytest.approx(brute_force_wilcoxon(d), rel=1e-12)
        assert r.p_wilcoxon_opposite == pytest.approx(brute_force_wilcoxon(-d), rel=1e-12)
    elif not exact:
        assert r.p_wilcoxon == pytest.approx(normal_wilcoxon_by_hand(d, zero_method), rel=1e-9)
        assert r.p_wilcoxon_opposite == pytest.approx(normal_wilcoxon_by_hand(-d, zero_method), rel=1e-9)
    else:   # exact at n = 30: 2^30 patterns are too many to list; the normal approximation is close
        assert r.p_wilcoxon == pytest.approx(normal_wilcoxon_by_hand(d, zero_method), abs=0.01)


def brute_force_sign_flip(d):
    """Exact one-sided p (greater) of the mean over all 2^n sign patterns."""
    sums = np.array([np.dot(signs, d) for signs in itertools.product([-1.0, 1.0], repeat=d.size)])
    return np.mean(sums >= d.sum() - 1e-9)


def test_sign_flip_exact_matches_brute_force_both_tails():
    rng = np.random.default_rng(3)
    base = rng.normal(size=10)
    post = base + rng.normal(0.5, 1.0, 10)
    post[4] = base[4]   # a zero difference: left out of the flips, the p-value is unchanged
    d = post - base
    r = paired_test(base, post, +1)
    assert r.permutation_method == "exact over 512 sign flips"
    assert r.p_permutation == pytest.approx(brute_force_sign_flip(d), rel=1e-12)
    assert r.p_permutation_opposite == pytest.approx(brute_force_sign_flip(-d), rel=1e-12)


def test_sign_flip_monte_carlo_close_to_large_reference():
    rng = np.random.default_rng(4)
    base = rng.normal(size=40)
    post = base + rng.normal(0.3, 1.0, 40)
    d = post - base
    r = paired_test(base, post, +1, n_perm=20000, seed=1)
    signs = np.random.default_rng(9).choice([-1.0, 1.0], size=(200000, 40))
    ref = np.mean(signs @ d >= d.sum() - 1e-12)
    assert r.permutation_method.startswith("Monte Carlo")
    assert abs(r.p_permutation - ref) < 4 * math.sqrt(ref * (1 - ref) / 20000) + 1e-4
    assert abs(r.p_permutation_opposite - np.mean(signs @ d <= d.sum() + 1e-12)) < 4 * math.sqrt(0.25 / 20000)


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


def test_too_few_questions_are_invalid_and_no_change_or_a_constant_shift_are_not():
    x = np.arange(12.0)
    unchanged = paired_test(x, x, +1)
    assert unchanged.invalid_reason is None and unchanged.no_change
    assert (unchanged.p_claimed, unchanged.p_opposite, unchanged.mean_diff) == (1.0, 1.0, 0.0)
    shifted = paired_test(x, x + 1, +1, n_perm=10000)
    assert shifted.invalid_reason is None and (shifted.ci_low, shifted.ci_high) == (1.0, 1.0)
    assert shifted.p_claimed == shifted.min_p == 2.0 ** -12 and shifted.p_opposite == 1.0
    assert "only 2" in paired_test([1.0, 2.0], [2.0, 3.5], +1).invalid_reason


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














def test_pooled_intensity_ci_agrees_with_scipy_bca_on_per_sample_values():
    """Pooled intensity is the mean of per-sample intensities, so the pooled test's hand-written
    weight bootstrap must give scipy.stats.bootstrap's BCa interval of those values (the streams
    differ: within Monte Carlo error, 5 % of the width)."""
    rng = np.random.default_rng(13)
    mask = np.tril(np.ones((5, 8), bool), 3)
    base = rng.normal(size=(40, 5, 8))
    post = base * rng.uniform(0.9, 1.3, (40, 1, 1))
    config = MetricConfig()
    pooled = pooled_test(base, post, mask, "intensity", config, n_boot=10000, seed=4)
    values = per_sample_values("intensity", base, post, mask, config)
    paired = paired_test(values.base, values.post, +1, n_boot=10000, seed=4)
    assert pooled.diff == pytest.approx(paired.mean_diff)
    width = paired.ci_high - paired.ci_low
    assert abs(pooled.ci_low - paired.ci_low) < 0.05 * width and abs(pooled.ci_high - paired.ci_high) < 0.05 * width
    assert pooled.p_permutation < 0.01 and pooled.config["bins"] == 100


def test_decide_verdict_rules():
    base = paired_test(np.zeros(20), np.linspace(-1, 3, 20), +1)
    cases = [
        (0.01, 0.99, Verdict.SUPPORTED),
        (0.99, 0.01, Verdict.REFUTED),
        (0.2, 0.8, Verdict.INCONCLUSIVE),
        (math.nan, 0.5, Verdict.INVALID),
    ]
    for p, p_opp, label in cases:   # fidelity gates nothing: it is reported beside the verdict
        v = decide_verdict(base, p, p_opp, significance=0.05, min_n=10)
        assert v.label is label, (p, p_opp)
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
    verdicts = family_verdicts(tests, significance=0.05)
    # one Holm pass over both directions of the four usable cells (2m = 8 hypotheses); the
    # unchanged cell enters with p = 1 in both directions and is INCONCLUSIVE: no change
    both = holm([t.p_permutation for t in tests[:4]] + [t.p_permutation_opposite for t in tests[:4]])
    expected = both[:4]
    assert [v.p_adjusted for v in verdicts[:4]] == pytest.approx(expected)
    assert [v.p_adjusted_opposite for v in verdicts[:4]] == pytest.approx(both[4:])
    assert {v.holm_m for v in verdicts} == {8}
    assert verdicts[3].label is Verdict.INCONCLUSIVE and verdicts[3].reason.startswith("no change")
    assert verdicts[4].label is Verdict.INVALID
    for v, p in zip(verdicts[:3], expected[:3]):
        assert (v.label is Verdict.SUPPORTED) == (p < 0.05)


def test_cell_is_decided_by_the_mean_when_the_pseudo_median_disagrees():
    """Many small falls and a few large rises: the mean rises, the pseudo-median falls. The cell is
    decided on the mean (the paper's statistic), so its p-value, its CI and its effect agree in sign;
    the Wilcoxon test, which would have REFUTED the rise, is only reported."""
    rng = np.random.default_rng(17)
    d = np.concatenate([-rng.uniform(0.05, 0.15, 60), rng.uniform(1.2, 1.8, 12)])
    base = rng.normal(5.0, 1.0, d.size)
    r = paired_test(base, base + d, +1)
    assert r.mean_diff > 0 and r.hodges_lehmann < 0
    walsh = [(a + b) / 2 for i, a in enumerate(d) for b in d[i:]]
    assert r.hodges_lehmann == pytest.approx(np.median(walsh))
    assert r.p_claimed == r.p_permutation < 0.025 and r.p_opposite == r.p_permutation_opposite > 0.9
    assert 0 < r.ci_low < r.mean_diff < r.ci_high
    assert r.p_wilcoxon > 0.9 and r.p_wilcoxon_opposite < 0.025
    (verdict,) = family_verdicts([r])
    assert verdict.label is Verdict.SUPPORTED
    (by_wilcoxon,) = family_verdicts([FamilyTest(r.n, r.p_wilcoxon, r.p_wilcoxon_opposite)])
    assert by_wilcoxon.label is Verdict.REFUTED
    falls = paired_test(base, base + d, -1)   # claimed fall: the same null, the tails swapped
    assert (falls.p_claimed, falls.p_opposite) == (r.p_opposite, r.p_claimed)
    assert family_verdicts([falls])[0].label is Verdict.REFUTED


def test_no_change_and_invalid_cells_keep_their_p_values():
    x = np.arange(12.0)
    unchanged = paired_test(x, x, -1)
    assert unchanged.no_change and (unchanged.p_permutation, unchanged.p_permutation_opposite) == (1.0, 1.0)
    assert (unchanged.p_wilcoxon, unchanged.p_wilcoxon_opposite, unchanged.hodges_lehmann) == (1.0, 1.0, 0.0)
    too_few = paired_test(x[:2], x[:2] + 1, +1)
    assert too_few.invalid_reason is not None
    assert all(math.isnan(v) for v in (too_few.p_claimed, too_few.p_opposite, too_few.hodges_lehmann))


def test_paired_test_fields_are_complete():
    fields = set(PairedTest.__dataclass_fields__)
    assert {"n", "n_zero", "mean_base", "mean_post", "mean_diff", "ci_low", "ci_high", "ci_method", "hedges_dz",
            "p_permutation", "p_permutation_opposite", "p_wilcoxon", "p_wilcoxon_opposite", "hodges_lehmann",
            "alternative", "zero_method"} <= fields


@pytest.mark.parametrize("policy", ["joint", "per_model", "fixed"])
@pytest.mark.parametrize("metric", ["intensity", "complexity", "kurtosis", "diversity", "node_entropy", "mass_entropy"])
def test_swap_null_equals_recomputing_on_swapped_models(metric, policy):
    """The permutation machinery reproduces the pooled difference of explicitly swapped samples."""
    rng = np.random.default_rng(15)
    mask = np.tril(np.ones((4, 7), bool), 2)
    base = rng.normal(size=(9, 4, 7))
    post = rng.normal(size=(9, 4, 7)) * 1.4
    config = MetricConfig(bins=13, range_policy=policy, fixed_range=(0.0, 20.0) if policy == "fixed" else None)
    swaps = np.array([[0] * 9, [1, 0, 0, 1, 1, 0, 1, 0, 0]], dtype=bool)
    index = np.arange(9)
    statistic = _swap_statistic(METRICS[metric], *as_pair(base, post, mask), config)
    null = statistic(np.where(swaps, index + 9, index), np.where(swaps, index, index + 9))
    for pattern, value in zip(swaps, null):
        b = np.where(pattern[:, None, None], post, base)
        p = np.where(pattern[:, None, None], base, post)
        ref = pooled_values(metric, b, p, mask, config)
        assert value == pytest.approx(ref.post - ref.base, abs=1e-12)


# --------------------------------------------------------------------------- pinned numbers
# Outputs of the hand-written implementations at bbcf753, recorded before they were replaced by
# scipy/statsmodels calls: the library versions must give the same numbers (exactly for exact
# tests, within Monte Carlo error where the random streams differ).


def pinned_paired_inputs():
    out = {}
    rng = np.random.default_rng(100)
    b = rng.normal(size=12)
    out["exact12"] = (b, b + rng.normal(0.4, 1.0, 12))
    rng = np.random.default_rng(101)
    b = rng.normal(size=40)
    p = b + np.round(rng.normal(0.2, 1.0, 40), 1)
    p[:4] = b[:4]
    out["ties40"] = (b, p)
    rng = np.random.default_rng(102)
    b = rng.gamma(2.0, size=40)
    out["gamma40"] = (b, b + rng.gamma(1.0, size=40) - 0.9)
    rng = np.random.default_rng(103)
    b = rng.normal(size=15)
    p = b + rng.normal(-0.3, 1.0, 15)
    p[[1, 7]] = b[[1, 7]]
    out["zeros15"] = (b, p)
    return out


PINNED_PAIRED = {  # key: (p_wilcoxon, p_wilcoxon_opposite, wilcoxon exact?, p_permutation, permutation exact?)
    'exact12/wilcox/1': (0.574951171875, 0.454833984375, True, 0.48779296875, True),
    'exact12/wilcox/-1': (0.454833984375, 0.574951171875, True, 0.512451171875, True),
    'exact12/pratt/1': (0.574951171875, 0.454833984375, True, 0.48779296875, True),
    'exact12/pratt/-1': (0.454833984375, 0.574951171875, True, 0.512451171875, True),
    'ties40/wilcox/1': (0.3144103509492002, 0.6855896490507998, False, 0.3361663833616638, False),
    'ties40/wilcox/-1': (0.6855896490507998, 0.3144103509492002, False, 0.6773322667733227, False),
    'ties40/pratt/1': (0.38355381391243, 0.6164461860875701, False, 0.3361663833616638, False),
    'ties40/pratt/-1': (0.6164461860875701, 0.38355381391243, False, 0.6773322667733227, False),
    'gamma40/wilcox/1': (0.4080194908829071, 0.5971365080258693, True, 0.20087991200879912, False),
    'gamma40/wilcox/-1': (0.5971365080258693, 0.4080194908829071, True, 0.7992200779922007, False),
    'gamma40/pratt/1': (0.4080194908829071, 0.5971365080258693, True, 0.20087991200879912, False),
    'gamma40/pratt/-1': (0.5971365080258693, 0.4080194908829071, True, 0.7992200779922007, False),
    'zeros15/wilcox/1': (0.7291259765625, 0.2939453125, True, 0.6732177734375, True),
    'zeros15/wilcox/-1': (0.2939453125, 0.7291259765625, True, 0.326904296875, True),
    'zeros15/pratt/1': (0.743597714388077, 0.256402285611923, False, 0.6732177734375, True),
    'zeros15/pratt/-1': (0.256402285611923, 0.743597714388077, False, 0.326904296875, True),
}
PINNED_CI = {  # (ci_low, ci_high, hedges_dz) at seed 7, n_boot 2000
    'exact12': (-0.47061014700680326, 0.6320974078409425, 0.008182460361301094),
    'ties40': (-0.2234386156303033, 0.375, 0.06926453180202694),
    'gamma40': (-0.08688301016972347, 0.719120311565069, 0.14163365110266402),
    'zeros15': (-0.7093568055949986, 0.3937248787263248, -0.11348519080631767),
}


def mc_tolerance(p, n_draws):
    """Four standard errors of the difference of two independent Monte Carlo p-values."""
    return 4 * math.sqrt(2 * p * (1 - p) / n_draws) + 1e-4


@pytest.mark.parametrize("key", sorted(PINNED_PAIRED))
def test_paired_test_reproduces_pinned_numbers(key):
    name, zero_method, direction = key.split("/")
    base, post = pinned_paired_inputs()[name]
    r = paired_test(base, post, int(direction), zero_method=zero_method, seed=7)
    p_w, p_w_opp, w_exact, p_perm, perm_exact = PINNED_PAIRED[key]
    assert (r.p_wilcoxon, r.p_wilcoxon_opposite) == pytest.approx((p_w, p_w_opp), rel=1e-12)
    assert r.wilcoxon_method.startswith("exact") == w_exact
    assert r.permutation_method.startswith("exact") == perm_exact
    p_perm_opp = PINNED_PAIRED[f"{name}/{zero_method}/{-int(direction)}"][3]   # the claimed p of the other direction
    if perm_exact:
        assert (r.p_permutation, r.p_permutation_opposite) == pytest.approx((p_perm, p_perm_opp), rel=1e-12)
    else:
        assert abs(r.p_permutation - p_perm) < mc_tolerance(p_perm, 10000)
        assert abs(r.p_permutation_opposite - p_perm_opp) < mc_tolerance(p_perm_opp, 10000)
    low, high, dz = PINNED_CI[name]
    width = high - low
    assert abs(r.ci_low - low) < 0.05 * width and abs(r.ci_high - high) < 0.05 * width
    assert r.hedges_dz == pytest.approx(dz, rel=1e-12)


PINNED_TOST = {  # seed, shift, margin_rel: (p_lower, p_upper, p_tost, ci_low, ci_high, equivalent)
    (9, 0.1, 0.05): (4.7366313380475775e-07, 2.388947333459272e-08, 4.7366313380475775e-07,
                     -0.16890219463828435, 0.08537448005886747, True),
    (10, 0.0, 0.02): (0.08400028353340828, 0.0005866078526787498, 0.08400028353340828,
                      -0.21672246795593875, 0.0470843080127817, False),
    (11, 0.6, 0.05): (1.1051709614572942e-14, 0.9361723917419671, 0.9361723917419671,
                      0.481979358446998, 0.7525958590216555, False),
}




PINNED_RATE = {  # k, n, p0: (ci_low, ci_high, p_above, p_below)
    (39, 41, 0.95): (0.8346666465821697, 0.9940368817589572, 0.6628521759673747, 0.6144635303046905),
    (0, 10, 0.5): (0.0, 0.3084971078187607, 1.0, 0.0009765625),
    (10, 10, 0.3): (0.6915028921812392, 1.0, 5.9048999999999975e-06, 1.0),
    (7, 20, 0.5): (0.1539092047845412, 0.5921885345328282, 0.9423408508300781, 0.13158798217773438),
    (30, 41, 0.9): (0.5705552947339179, 0.8577869966591287, 0.9995102769102149, 0.0018290556132852724),
}




PINNED_TREND = {  # name: (alphas, effects, direction, rho, p_increasing, p_two_sided)
    "four": ([0.03, 0.1, 0.3, 0.5], [-0.2, 0.1, 0.05, 0.4], 1, 0.8, 1 / 6, 1 / 3),
    "ties6": ([0.01, 0.03, 0.1, 0.3, 0.5, 1.0], [0.1, 0.3, 0.3, 0.2, 0.5, 0.5], 1, 0.7944613465542745, 1 / 30, 1 / 15),
    "down5": ([0.01, 0.03, 0.1, 0.3, 0.5], [0.9, 0.7, 0.8, 0.2, 0.1], -1, 0.9, 1 / 24, 1 / 12),
}






def test_kurtosis_reproduces_pinned_numbers():
    rng = np.random.default_rng(16)
    mask = np.tril(np.ones((5, 9), bool), 3)
    W = rng.standard_t(3, size=(6, 5, 9))
    W[2] = 0.25   # constant on the real edges: undefined without structural zeros
    with_zeros = per_sample_values("kurtosis", W, W, mask, MetricConfig(include_structural_zeros=True)).base
    real_only = per_sample_values("kurtosis", W, W, mask, MetricConfig(include_structural_zeros=False)).base
    assert with_zeros == pytest.approx([10.362246471692302, 3.167214633778226, -1.5, 7.1856006571265105,
                                        0.5092778701732956, 0.9537815056407863], rel=1e-12)
    assert np.isnan(real_only[2])
    assert np.delete(real_only, 2) == pytest.approx([5.820656696464095, 1.18625993355937, 3.720662984415962,
                                                     -0.6093426990270037, 0.09730734576921174], rel=1e-12)


def test_the_cluster_bootstrap_keeps_its_pinned_numbers() -> None:
    """Pinned before clustered_share moved to scipy.stats.bootstrap over cluster indices: the same
    seed draws the same clusters, so the interval is unchanged to the last bit."""
    from harness.analysis.stats.clustered import clustered_share

    hits = [True, True, False, True, False, True, True, False, True, True, False, True, True]
    clusters = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "e", "f", "f"]
    share = clustered_share(hits, clusters, n_boot=999, seed=7, ci_level=0.9)
    assert (share.ci_low, share.ci_high, share.n_clusters) == (0.5384615384615384, 0.8333333333333334, 6)


def pinned_pooled_inputs():
    out = {}
    for name, n, seed, scale in [("n14", 14, 200, 1.15), ("n8", 8, 201, 1.3), ("n30", 30, 202, 0.97)]:
        rng = np.random.default_rng(seed)
        mask = np.tril(np.ones((5, 9), bool), 3)
        base = rng.normal(size=(n, 5, 9))
        post = base * rng.uniform(0.8, 1.2, (n, 1, 1)) * scale + rng.normal(0, 0.3, (n, 5, 9))
        out[name] = (base, post, mask)
    return out


# pooled_test at 92f3dc8 (hand-written weight bootstrap, BCa and swap draws), seed 7, 2000 + 2000 draws, 20 bins:
# (diff, ci_low, ci_high, p_permutation, p_permutation_opposite)
PINNED_POOLED = {
    'n14/intensity/joint': (0.07625748485008566, 0.03198273803634758, 0.12509770391727254, 0.005997001499250375, 0.9945027486256871),
    'n14/complexity/joint': (0.06282423245590785, 0.0033479402587719208, 0.12734324317053575, 0.063968015992004, 0.9365317341329336),
    'n14/complexity/per_model': (-0.08199420489954523, -0.14490685196326952, -0.005975659582941295, 0.5707146426786607, 0.42978510744627685),
    'n14/kurtosis/joint': (0.08403048422135406, -0.0972692163726754, 0.32858158927869435, 0.782608695652174, 0.2178910544727636),
    'n14/diversity/joint': (-0.0015599641728565317, -0.028977101562501516, 0.021203569155939385, 0.5912043978010995, 0.40929535232383807),
    'n8/intensity/joint': (0.20380376740249162, 0.14674455021342137, 0.25261757763914383, 0.0034982508745627187, 1.0),
    'n8/complexity/joint': (0.2317670585187055, 0.18438320483878412, 0.34922750122186924, 0.0034982508745627187, 1.0),
    'n8/complexity/per_model': (0.007568190538570718, -0.04173181042128085, 0.13250691549683258, 0.456271864067966, 0.5472263868065967),
    'n8/kurtosis/joint': (-0.11490822092709851, -0.2875888657928679, 0.07567878521582737, 0.14492753623188406, 0.8585707146426786),
    'n8/diversity/joint': (0.010902463718069022, -0.0349452195465192, 0.049175487982539255, 0.23338330834582707, 0.7701149425287356),
    'n30/intensity/joint': (0.01765706507992737, -0.008258379169180865, 0.04240820157161517, 0.0944527736131934, 0.9060469765117442),
    'n30/complexity/joint': (0.016644185990688065, -0.02792327362114305, 0.05564347110343893, 0.22488755622188905, 0.7756121939030485),
    'n30/complexity/per_model': (-0.09580365161255555, -0.14325517018877432, -0.05555519176729579, 0.8150924537731135, 0.1854072963518241),
    'n30/kurtosis/joint': (0.04091597756548859, -0.10874858435341435, 0.18732308669388809, 0.7006496751624188, 0.29985007496251875),
    'n30/diversity/joint': (-0.0003104508185469701, -0.01323179589172444, 0.01263677720043613, 0.5317341329335332, 0.4687656171914043),
}


@pytest.mark.parametrize("key", sorted(PINNED_POOLED))
def test_pooled_test_reproduces_pinned_numbers(key):
    """scipy.stats.bootstrap over question indices draws the same resamples as the hand-written weight
    bootstrap it replaced (rng.integers(0, n, (B, n))), so the BCa interval is the same to rounding; the
    swap test's draws differ (scipy's paired permutations; exact for n = 8), so p within Monte Carlo error."""
    name, metric, policy = key.split("/")
    base, post, mask = pinned_pooled_inputs()[name]
    r = pooled_test(base, post, mask, metric, MetricConfig(bins=20, range_policy=policy), n_boot=2000, n_perm=2000,
                    seed=7)
    diff, low, high, p, p_opp = PINNED_POOLED[key]
    assert r.diff == pytest.approx(diff, rel=1e-9, abs=1e-12)
    if metric != "complexity":   # complexity's interval now re-derives the histogram range per resample (below)
        assert (r.ci_low, r.ci_high) == pytest.approx((low, high), rel=1e-9, abs=1e-12)
    assert abs(r.p_permutation - p) < mc_tolerance(p, 2000)
    assert abs(r.p_permutation_opposite - p_opp) < mc_tolerance(p_opp, 2000)
    assert r.permutation_method.startswith("swap permutation within questions, exact") == (name == "n8")


def test_pooled_swap_test_is_exact_for_few_questions():
    """With 2^n <= n_perm the swap test enumerates every pattern: a post that rises on every one of n = 6
    questions is the largest of 64 swap sums, p = 1/64 exactly, and the opposite side p = 1."""
    rng = np.random.default_rng(21)
    mask = np.ones((3, 4), bool)
    base = rng.normal(size=(6, 3, 4))
    r = pooled_test(base, base * 1.5, mask, "intensity", MetricConfig(), n_perm=2000, seed=1)
    assert r.p_permutation == 1 / 64 and r.p_permutation_opposite == 1.0 and r.min_p == 1 / 64


@pytest.mark.parametrize("direction", [1, -1])
def test_one_nonzero_difference_is_a_test_result_not_a_crash(direction):
    """Twelve ties and one question moved by 2e-4 (a histogram bin flipped by rounding): the exact sign-flip
    null is {d, -d}, so the claimed side's p is 1/2 when d points the claimed way, else 1; scipy's
    permutation_test refuses one observation, so this case is computed directly."""
    base = np.ones(12)
    post = base.copy()
    post[3] += 2e-4
    r = paired_test(base, post, direction)
    assert (r.p_permutation, r.p_permutation_opposite) == ((0.5, 1.0) if direction > 0 else (1.0, 0.5))
    assert r.permutation_method == "exact over 2 sign flips" and r.min_p == 0.5


@pytest.mark.parametrize("policy", ["joint", "per_model"])
def test_complexity_interval_re_derives_the_histogram_range_per_resample(policy):
    """The pooled complexity's BCa interval equals scipy's bootstrap of the metric recomputed from scratch
    (pooled_values on the resampled W, its min-max range re-derived) with the same draws; under the
    per-model range it is wider than the interval that held the full data's range fixed (pinned above)."""
    from harness.analysis.metrics import pooled_values

    base, post, mask = pinned_pooled_inputs()["n14"]
    config = MetricConfig(bins=20, range_policy=policy)
    r = pooled_test(base, post, mask, "complexity", config, n_boot=300, n_perm=50, seed=7)

    def from_scratch(drawn):
        values = pooled_values("complexity", base[drawn], post[drawn], mask, config)
        return values.post - values.base

    reference = scipy.stats.bootstrap((np.arange(14),), from_scratch, n_resamples=300, method="BCa",
                                      vectorized=False, rng=np.random.default_rng(7)).confidence_interval
    assert (r.ci_low, r.ci_high) == pytest.approx((reference.low, reference.high), rel=1e-9)
    if policy == "per_model":
        _, fixed_low, fixed_high, _, _ = PINNED_POOLED["n14/complexity/per_model"]
        assert r.ci_high - r.ci_low > 1.5 * (fixed_high - fixed_low)
