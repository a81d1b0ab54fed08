"""The two-stage bootstrap over training seeds and test patients (seed_bootstrap_diff)."""

from __future__ import annotations

import numpy as np
import pytest

from cxrkit.evaluation.bootstrap import paired_bootstrap_diff, seed_bootstrap_diff


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = (rng.random((240, 3)) < 0.3).astype(float)
    a = [y + rng.normal(0, 1.0, y.shape) for _ in range(3)]
    b = [y + rng.normal(0, 0.8, y.shape) for _ in range(3)]
    return y, a, b


def test_one_seed_is_the_paired_bootstrap(data):
    y, a, b = data
    one = seed_bootstrap_diff(y, a[:1], b[:1], n_boot=300, seed=4)
    paired = paired_bootstrap_diff(y, a[0], b[0], n_boot=300, seed=4)
    assert (one["diff"], one["low"], one["high"]) == (paired["diff"], paired["low"], paired["high"])
    assert one["seeds"] == 1 and one["per_seed"] == [paired["diff"]]


def test_identical_seeds_add_no_seed_variation(data):
    """Three copies of one seed's scores: resampling seeds changes nothing, the interval is the
    single seed's."""
    y, a, b = data
    three = seed_bootstrap_diff(y, [a[0]] * 3, [b[0]] * 3, n_boot=300, seed=4)
    one = seed_bootstrap_diff(y, a[:1], b[:1], n_boot=300, seed=4)
    assert three["diff"] == pytest.approx(one["diff"], abs=1e-12)
    assert three["low"] == pytest.approx(one["low"], abs=1e-12) and three["high"] == pytest.approx(one["high"], abs=1e-12)


def test_seed_level_variation_reaches_the_interval(data):
    """b is perfect (AUC 1 on every resample). a is perfect with seed 0 and imperfect with seeds 1
    and 2: the test-sampling interval of seeds 1, 2 excludes 0, but a replicate that draws seed 0
    three times (probability 1/27 > 2.5%) has a difference of exactly 0, so the seed-covering
    interval's lower end is 0 by hand computation."""
    y, a, _ = data
    perfect = y.copy()
    imperfect = a[1]
    result = seed_bootstrap_diff(y, [perfect, imperfect, imperfect], [perfect] * 3, n_boot=2000, seed=1)
    only_imperfect = paired_bootstrap_diff(y, imperfect, perfect, n_boot=2000, seed=1)
    assert only_imperfect["low"] > 0.05
    assert result["low"] == 0.0 and result["per_seed"][0] == 0.0
    assert result["diff"] == pytest.approx(2 * only_imperfect["diff"] / 3, abs=1e-12)


def test_seed_counts_must_match(data):
    y, a, b = data
    with pytest.raises(ValueError, match="same number .* of seeds"):
        seed_bootstrap_diff(y, a[:2], b[:3], n_boot=10)
    with pytest.raises(ValueError, match="same number .* of seeds"):
        seed_bootstrap_diff(y, [], [], n_boot=10)
