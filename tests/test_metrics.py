"""Metrics on hand-computed arrays, the structural-zero switch, range policies and bad input."""

import math

import numpy as np
import pytest
import torch

from harness.analysis.metrics import (
    METRICS,
    MetricConfig,
    RangePolicy,
    _histogram_counts,
    as_pair,
    complexity_band,
    node_entropy_by_node,
    per_sample_values,
    pooled_states,
    pooled_values,
)
from harness.errors import UserError

# Two samples on a 2x2 graph whose cell [1, 0] is a structural zero.
MASK = np.array([[True, True], [False, True]])
BASE = np.array([[[1.0, -2.0], [0.0, 3.0]], [[-1.0, 0.5], [0.0, 2.0]]])
NO_ZEROS = MetricConfig(include_structural_zeros=False)
WITH_ZEROS = MetricConfig(include_structural_zeros=True)


def h(*p):
    """Entropy in nats of the probabilities p."""
    return -sum(x * math.log(x) for x in p if x > 0)


def test_intensity_by_hand_and_structural_zero_switch():
    with_zeros = per_sample_values("intensity", BASE, BASE, MASK, WITH_ZEROS).base
    real_only = per_sample_values("intensity", BASE, BASE, MASK, NO_ZEROS).base
    assert with_zeros == pytest.approx([6 / 4, 3.5 / 4])
    assert real_only == pytest.approx([6 / 3, 3.5 / 3])
    pooled = pooled_values("intensity", BASE, BASE, MASK, WITH_ZEROS).base
    assert pooled == pytest.approx(9.5 / 8)


def test_kurtosis_by_hand():
    mask = np.ones((2, 2), bool)
    W = np.array([[[2.0, -2.0], [2.0, -2.0]], [[3.0, -1.0], [-1.0, -1.0]]])
    k = per_sample_values("kurtosis", W, W, mask, WITH_ZEROS).base
    # sample 1: mean 0, m2 = 12/4 = 3, m4 = 84/4 = 21 -> 21/9 - 3
    assert k == pytest.approx([-2.0, 21 / 9 - 3])
    assert pooled_values("kurtosis", W, W, mask, WITH_ZEROS).base == pytest.approx(np.mean([-2.0, 21 / 9 - 3]))


def kurtosis_by_moments(x):
    dev = x - x.mean()
    return np.mean(dev**4) / np.mean(dev**2) ** 2 - 3.0


def test_kurtosis_matches_moments_and_depends_on_structural_zeros():
    rng = np.random.default_rng(1)
    mask = rng.random((6, 9)) < 0.5
    W = np.where(mask, rng.standard_t(5, (4, 6, 9)), 0.0)
    real = per_sample_values("kurtosis", W, W, mask, NO_ZEROS).base
    full = per_sample_values("kurtosis", W, W, mask, WITH_ZEROS).base
    assert real == pytest.approx([kurtosis_by_moments(w[mask]) for w in W], rel=1e-12)
    assert full == pytest.approx([kurtosis_by_moments(w.ravel()) for w in W], rel=1e-12)
    assert not np.allclose(real, full)


def test_complexity_by_hand_pooled():
    config = MetricConfig(bins=2, eps=0.0, range_policy="per_model")
    # all |W| incl. the two structural zeros: 1 2 0 3 1 .5 0 2, range [0, 3], edge 1.5 -> 5 | 3
    assert pooled_values("complexity", BASE, BASE, MASK, config).base == pytest.approx(h(5 / 8, 3 / 8))
    real = MetricConfig(bins=2, eps=0.0, range_policy="per_model", include_structural_zeros=False)
    # real edges only: 1 2 3 1 .5 2, range [.5, 3], edge 1.75 -> 1 1 .5 | 2 3 2
    assert pooled_values("complexity", BASE, BASE, MASK, real).base == pytest.approx(h(1 / 2, 1 / 2))


def test_complexity_range_policies_by_hand():
    mask = np.ones((1, 4), bool)
    base = np.array([[[0.0, 1.0, -2.0, 3.0]]])
    post = np.array([[[0.0, 0.0, 0.0, -6.0]]])
    joint = per_sample_values("complexity", base, post, mask, MetricConfig(bins=2, eps=0.0, range_policy="joint"))
    # joint range [0, 6], edge 3: base 0 1 2 | 3, post 0 0 0 | 6
    assert joint.base == pytest.approx([h(3 / 4, 1 / 4)])
    assert joint.post == pytest.approx([h(3 / 4, 1 / 4)])
    own = per_sample_values("complexity", base, post, mask, MetricConfig(bins=2, eps=0.0, range_policy="per_model"))
    # base's own range [0, 3], edge 1.5: 0 1 | 2 3
    assert own.base == pytest.approx([math.log(2)])
    assert own.post == pytest.approx([h(3 / 4, 1 / 4)])


def test_epsilon_enters_as_written():
    mask = np.ones((1, 2), bool)
    W = np.array([[[0.0, 1.0]]])
    eps = 1e-3
    value = pooled_values("complexity", W, W, mask, MetricConfig(bins=2, eps=eps)).base
    assert value == pytest.approx(-2 * 0.5 * math.log(0.5 + eps))


def test_per_model_range_is_scale_free_and_joint_is_not():
    rng = np.random.default_rng(2)
    mask = np.ones((5, 7), bool)
    base = rng.normal(size=(20, 5, 7))
    post = 2.0 * base
    own = MetricConfig(range_policy=RangePolicy.PER_MODEL, bins=30)
    joint = MetricConfig(range_policy=RangePolicy.JOINT, bins=30)
    v = per_sample_values("complexity", base, post, mask, own)
    assert v.post == pytest.approx(v.base)
    p = pooled_values("complexity", base, post, mask, own)
    assert p.post == pytest.approx(p.base)
    pj = pooled_values("complexity", base, post, mask, joint)
    assert pj.post > pj.base


def test_histogram_counts_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.exponential(size=(5, 200))
    for row in x:
        lo, hi = row.min(), row.max()
        ours = _histogram_counts(row[None], lo, hi, 17)[0]
        ref, _ = np.histogram(row, bins=17, range=(lo, hi))
        assert ours == pytest.approx(ref)


def test_fixed_range_must_cover_the_data():
    config = MetricConfig(range_policy="fixed", fixed_range=(0.0, 1.0))
    with pytest.raises(UserError, match="outside fixed_range"):
        pooled_values("complexity", BASE, BASE, MASK, config)


def test_diversity_by_hand():
    mask = np.ones((1, 3), bool)
    x = np.array([1.0, 2.0, 4.0])
    W = np.stack([x, x, -x])[:, None, :]
    v = per_sample_values("diversity", W, W, mask, WITH_ZEROS).base
    # correlations: (0,1) = 1, (0,2) = (1,2) = -1
    assert v == pytest.approx([1 - 0.0, 1 - 0.0, 1 - (-1.0)])
    assert pooled_values("diversity", W, W, mask, WITH_ZEROS).base == pytest.approx(1 - (-1 / 3))


def test_diversity_structural_zeros_raise_correlation():
    rng = np.random.default_rng(4)
    mask = np.triu(np.ones((6, 6), bool))
    W = np.where(mask, rng.normal(1.0, 1.0, (10, 6, 6)), 0.0)
    with_zeros = pooled_values("diversity", W, W, mask, WITH_ZEROS).base
    real = pooled_values("diversity", W, W, mask, NO_ZEROS).base
    assert with_zeros < real


def test_node_entropy_by_hand_and_unaffected_by_zero_switch():
    # rows |W|: sample 0 (1, 2) and (0, 3); sample 1 (1, .5) and (0, 2)
    by_node = node_entropy_by_node(BASE, MASK, WITH_ZEROS)
    assert by_node == pytest.approx(np.array([[h(1 / 3, 2 / 3), 0.0], [h(2 / 3, 1 / 3), 0.0]]), abs=1e-9)
    for config in (WITH_ZEROS, NO_ZEROS):
        assert per_sample_values("node_entropy", BASE, BASE, MASK, config).base == pytest.approx(by_node.mean(axis=1))
        # pooled rows: (2, 2.5) and (0, 5)
        assert pooled_values("node_entropy", BASE, BASE, MASK, config).base == pytest.approx(
            (h(2 / 4.5, 2.5 / 4.5) + 0.0) / 2
        )


def test_node_entropy_skips_rows_without_mass():
    W = np.array([[[1.0, 1.0], [0.0, 0.0]]])
    assert per_sample_values("node_entropy", W, W, np.ones((2, 2), bool), WITH_ZEROS).base == pytest.approx(
        [math.log(2)]
    )


def test_mass_entropy_by_hand():
    # sample 0: |W| = 1 2 3 over 6; sample 1: 1 .5 2 over 3.5; pooled over 9.5
    v = per_sample_values("mass_entropy", BASE, BASE, MASK, NO_ZEROS).base
    assert v == pytest.approx([h(1 / 6, 2 / 6, 3 / 6), h(1 / 3.5, 0.5 / 3.5, 2 / 3.5)])
    pooled = pooled_values("mass_entropy", BASE, BASE, MASK, WITH_ZEROS).base
    assert pooled == pytest.approx(h(*(np.array([1, 2, 3, 1, 0.5, 2]) / 9.5)))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_pooled_weights_reproduce_the_estimator_on_a_subset(name):
    """Weights 0/1 (the bootstrap's machinery) equal the pooled metric recomputed on that subset."""
    rng = np.random.default_rng(5)
    mask = np.tril(np.ones((4, 6), bool), 2)
    base = rng.normal(size=(8, 4, 6))
    post = rng.normal(size=(8, 4, 6)) * 1.3
    config = MetricConfig(range_policy="fixed", fixed_range=(0.0, 10.0), bins=25)
    spec = METRICS[name]
    keep = np.array([1, 0, 1, 1, 0, 1, 1, 0], bool)
    b, p, m = as_pair(base, post, mask)
    sb, _ = pooled_states(spec, b, p, m, config)
    weighted = spec.combine(sb, keep[None].astype(float))[0]
    direct = pooled_values(name, base[keep], post[keep], mask, config).base
    assert weighted == pytest.approx(direct)


@pytest.mark.parametrize("name", ["intensity", "complexity", "kurtosis", "node_entropy", "mass_entropy"])
def test_integer_weights_equal_duplicated_samples(name):
    rng = np.random.default_rng(6)
    mask = np.ones((3, 4), bool)
    base = rng.normal(size=(5, 3, 4))
    config = MetricConfig(range_policy="fixed", fixed_range=(0.0, 10.0), bins=25)
    counts = np.array([2, 0, 1, 0, 2])
    spec = METRICS[name]
    b, p, m = as_pair(base, base, mask)
    sb, _ = pooled_states(spec, b, p, m, config)
    dup = np.repeat(base, counts, axis=0)
    assert spec.combine(sb, counts[None].astype(float))[0] == pytest.approx(
        pooled_values(name, dup, dup, mask, config).base
    )


def test_complexity_band_matches_single_bin_counts():
    rng = np.random.default_rng(7)
    mask = np.ones((4, 5), bool)
    base = rng.laplace(size=(12, 4, 5))
    post = rng.laplace(size=(12, 4, 5)) * 1.2
    config = MetricConfig(bins_band=(10, 100, 1000))
    band = complexity_band(base, post, mask, config)
    assert band.bins == (10, 100, 1000)
    for b, diff, ps in zip(band.bins, band.pooled_diff, band.per_sample_mean_diff):
        one = MetricConfig(bins=b)
        pv = pooled_values("complexity", base, post, mask, one)
        assert diff == pytest.approx(pv.post - pv.base)
        sv = per_sample_values("complexity", base, post, mask, one)
        assert ps == pytest.approx(np.mean(sv.post - sv.base))
    assert band.diff_min == min(band.pooled_diff) and band.diff_max == max(band.pooled_diff)


def test_torch_and_float32_inputs_agree_with_numpy():
    rng = np.random.default_rng(8)
    W = rng.normal(size=(3, 4, 5)).astype(np.float32)
    mask = np.ones((4, 5), bool)
    for name in METRICS:
        ref = per_sample_values(name, W, W, mask, WITH_ZEROS).base
        via_torch = per_sample_values(name, torch.from_numpy(W), torch.from_numpy(W), torch.from_numpy(mask),
                                      WITH_ZEROS).base
        assert via_torch == pytest.approx(ref)


def test_config_is_recorded():
    config = MetricConfig(bins=50, eps=1e-9, range_policy="per_model", include_structural_zeros=False)
    recorded = per_sample_values("complexity", BASE, BASE, MASK, config).config
    assert recorded["bins"] == 50 and recorded["range_policy"] == "per_model"
    assert recorded["include_structural_zeros"] is False and recorded["eps"] == 1e-9


@pytest.mark.parametrize(
    "base, post, mask, match",
    [
        (np.zeros((2, 2)), np.zeros((2, 2)), MASK, "shape \\[n_samples"),
        (BASE, BASE, MASK.astype(int), "boolean"),
        (BASE, BASE, np.ones((3, 2), bool), "does not match"),
        (BASE, BASE[:1], MASK, "differ in shape"),
        (BASE, np.where(MASK, np.nan, 0.0)[None].repeat(2, 0), MASK, "NaN"),
        (BASE, BASE, np.zeros((2, 2), bool), "no real edge"),
        (BASE.astype(int), BASE, MASK, "floating-point"),
    ],
)
def test_bad_input_is_a_user_error(base, post, mask, match):
    with pytest.raises(UserError, match=match):
        per_sample_values("intensity", base, post, mask, WITH_ZEROS)


def test_bad_config_and_unknown_metric():
    with pytest.raises(UserError, match="bins"):
        MetricConfig(bins=0)
    with pytest.raises(UserError, match="fixed_range"):
        MetricConfig(range_policy="fixed")
    with pytest.raises(UserError, match="range_policy"):
        MetricConfig(range_policy="sideways")
    with pytest.raises(UserError, match="unknown metric"):
        per_sample_values("beauty", BASE, BASE, MASK, WITH_ZEROS)


def test_claimed_directions():
    assert {k: s.direction for k, s in METRICS.items()} == {
        "intensity": 1, "complexity": 1, "kurtosis": -1, "diversity": 1, "node_entropy": 1, "mass_entropy": 1,
    }
