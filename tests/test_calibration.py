"""Calibration metrics and post-hoc recalibration (cxrkit.evaluation.calibration) on examples worked
out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.calibration import calibration_curve

from cxrkit.evaluation.calibration import (
    MACRO,
    POOLED,
    TEMPERATURE_BOUNDS,
    apply_calibration,
    brier_score,
    calibration_table,
    expected_calibration_error,
    fit_calibrators,
    fit_platt,
    fit_temperature,
    reliability,
)

TOL = 1e-12
# eight distinct scores, 4 equal-mass bins of two:
#   percentile edges at positions 0, 1.75, 3.5, 5.25, 7 of the sorted scores: 0.1, 0.275, 0.5, 0.725, 0.9
#   bin 0 {0.1, 0.2}: y (0, 0) -> observed 0,   mean predicted 0.15 -> |0 - 0.15|   = 0.15
#   bin 1 {0.3, 0.4}: y (1, 0) -> observed 0.5, mean predicted 0.35 -> |0.5 - 0.35| = 0.15
#   bin 2 {0.6, 0.7}: y (1, 0) -> 0.5 vs 0.65 -> 0.15;  bin 3 {0.8, 0.9}: y (1, 1) -> 1 vs 0.85 -> 0.15
#   ECE = sum (2/8) * 0.15 = 0.15
#   Brier = (0.01 + 0.04 + 0.49 + 0.16 + 0.16 + 0.49 + 0.04 + 0.01) / 8 = 1.4 / 8 = 0.175
P8 = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
Y8 = np.array([0, 0, 1, 0, 1, 0, 1, 1], dtype=float)


def test_equal_mass_bins_ece_and_brier_by_hand():
    bins = reliability(Y8, P8, n_bins=4)
    assert list(bins["entries"]) == [2, 2, 2, 2]
    assert bins["mean predicted"].to_numpy() == pytest.approx([0.15, 0.35, 0.65, 0.85], abs=TOL)
    assert bins["observed"].to_numpy() == pytest.approx([0, 0.5, 0.5, 1], abs=TOL)
    assert expected_calibration_error(Y8, P8, n_bins=4) == pytest.approx(0.15, abs=TOL)
    assert brier_score(Y8, P8) == pytest.approx(0.175, abs=TOL)


def test_bins_are_sklearn_calibration_curves_quantile_bins():
    rng = np.random.default_rng(3)
    p = rng.random(101)
    y = (rng.random(101) < p).astype(float)
    for n_bins in (3, 7, 10):
        prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
        bins = reliability(y, p, n_bins)
        assert bins["observed"].to_numpy() == pytest.approx(prob_true, abs=TOL)
        assert bins["mean predicted"].to_numpy() == pytest.approx(prob_pred, abs=TOL)
        assert bins["entries"].sum() == 101


def test_wilson_interval_of_a_bin():
    # bin 1 above: 1 positive of 2. Wilson 95%: centre (k + z^2/2) / (n + z^2), half-width
    # z sqrt(k (n - k) / n + z^2 / 4) / (n + z^2); k = 1, n = 2 -> centre 0.5
    z = 1.959963984540054
    half = z * math.sqrt(1 * 1 / 2 + z * z / 4) / (2 + z * z)
    row = reliability(Y8, P8, n_bins=4).iloc[1]
    assert (row["observed low"], row["observed high"]) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-9)


def test_ties_share_a_bin_and_masked_entries_are_skipped():
    # a constant score: every edge equal, every entry in bin 0 -> ECE = |3/4 - 0.4| = 0.35
    y = np.array([1, 1, 1, 0, np.nan])
    p = np.array([0.4, 0.4, 0.4, 0.4, 0.9])
    bins = reliability(y, p, n_bins=10)
    assert list(bins["entries"]) == [4]
    assert expected_calibration_error(y, p, 10) == pytest.approx(0.35, abs=TOL)
    # Brier over the four known entries: 3 * 0.36 + 0.16 = 1.24 -> 0.31
    assert brier_score(y, p) == pytest.approx(0.31, abs=TOL)
    assert np.isnan(expected_calibration_error([np.nan], [0.5])) and np.isnan(brier_score([np.nan], [0.5]))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="n_bins"):
        reliability(Y8, P8, 0)
    with pytest.raises(ValueError, match="probabilities"):
        reliability(Y8, P8 + 0.5, 4)
    with pytest.raises(ValueError, match="method"):
        apply_calibration(pd.DataFrame(), P8[:, None], ["A"], "isotonic")


def test_calibration_table_per_label_macro_and_pooled():
    # label A: Y8 / P8 (ECE 0.15 with 4 bins, Brier 0.175); label B: constant 0.4 with y (1, 1, 1, 0, ...)
    y = np.c_[Y8, [1, 1, 1, 0, np.nan, np.nan, np.nan, np.nan]]
    p = np.c_[P8, [0.4] * 8]
    table = calibration_table(y, p, ["A", "B"], n_bins=4)
    assert list(table.index) == ["A", "B", MACRO, POOLED]
    assert list(table.columns) == ["entries", "positives", "mean predicted", "observed", "ECE", "Brier", "bins"]
    assert table.loc["A", ["entries", "positives"]].tolist() == [8, 4]
    assert table.loc["B", ["entries", "positives"]].tolist() == [4, 3]
    assert table.loc["A", ["ECE", "Brier"]].tolist() == pytest.approx([0.15, 0.175], abs=TOL)
    assert table.loc["B", ["ECE", "Brier", "observed"]].tolist() == pytest.approx([0.35, 0.31, 0.75], abs=TOL)
    # macro: the mean of the labels' values; entries and positives are summed
    assert table.loc[MACRO, ["ECE", "Brier"]].tolist() == pytest.approx([0.25, 0.2425], abs=TOL)
    assert table.loc[MACRO, ["entries", "positives"]].tolist() == [12, 7]
    # pooled: the 12 known entries as one sample; Brier = (1.4 + 1.24) / 12 = 0.22
    assert table.loc[POOLED, "Brier"] == pytest.approx(2.64 / 12, abs=TOL)
    assert table.loc[POOLED, "entries"] == 12 and (table["bins"] == 4).all()


def test_temperature_fit_reaches_the_known_optimum():
    # logits +-log 9 (p 0.9 and 0.1), four images each; 3 of 4 positive at +log 9, 1 of 4 at -log 9.
    # sigmoid(log 9 / T) = 3/4 <=> log 9 / T = log 3 <=> T = 2 matches both frequencies exactly, so it is
    # the maximum-likelihood temperature.
    p = np.array([0.9] * 4 + [0.1] * 4)
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=float)
    assert fit_temperature(y, p) == pytest.approx(2.0, rel=1e-6)


def test_platt_fit_reaches_the_known_optimum():
    # logits 0 (p 0.5: 1 of 4 positive) and log 3 (p 0.75: 3 of 4 positive). Two logit values, two
    # parameters: the MLE matches both frequencies, sigmoid(b) = 1/4 -> b = -log 3 and
    # sigmoid(a log 3 - log 3) = 3/4 -> (a - 1) log 3 = log 3 -> a = 2.
    p = np.array([0.5] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=float)
    a, b = fit_platt(y, p)
    assert (a, b) == pytest.approx((2.0, -math.log(3)), rel=1e-6)


def test_fit_calibrators_and_apply_them():
    p = np.c_[[0.9] * 4 + [0.1] * 4, [0.5] * 4 + [0.75] * 4, [0.3] * 8]
    y = np.c_[[1, 1, 1, 0, 1, 0, 0, 0], [1, 0, 0, 0, 1, 1, 1, 0], [0] * 7 + [np.nan]].astype(float)
    maps = fit_calibrators(y, p, ["A", "B", "C"])
    assert list(maps.columns) == ["temperature", "platt a", "platt b", "fitted", "entries", "positives"]
    assert maps.loc["A", "temperature"] == pytest.approx(2.0, rel=1e-6)
    assert maps.loc["B", ["platt a", "platt b"]].tolist() == pytest.approx([2.0, -math.log(3)], rel=1e-6)
    # C has no positive: not fitted, the identity map
    assert maps.loc["C", ["temperature", "platt a", "platt b"]].tolist() == [1.0, 1.0, 0.0]
    assert maps["fitted"].tolist() == [True, True, False]
    assert maps["entries"].tolist() == [8, 8, 7] and maps["positives"].tolist() == [4, 4, 0]
    new = np.array([[0.9, 0.5, 0.3], [0.5, 0.75, 0.6]])
    # temperature of A: sigmoid(log 9 / 2) = sigmoid(log 3) = 3/4; 0.5 stays 0.5
    assert apply_calibration(maps, new, ["A", "B", "C"], "temperature")[:, 0] == pytest.approx([0.75, 0.5], abs=1e-6)
    # Platt of B: 0.5 -> sigmoid(-log 3) = 1/4, 0.75 -> 3/4 (the frequencies it was fitted to)
    assert apply_calibration(maps, new, ["A", "B", "C"], "platt")[:, 1] == pytest.approx([0.25, 0.75], abs=1e-6)
    # the identity map leaves C unchanged, and "none" everything
    for method in ("temperature", "platt"):
        assert apply_calibration(maps, new, ["A", "B", "C"], method)[:, 2] == pytest.approx([0.3, 0.6], abs=1e-9)
    assert np.array_equal(apply_calibration(maps, new, ["A", "B", "C"], "none"), new)
    # columns are matched by label name
    swapped = apply_calibration(maps, new[:, [1, 0]], ["B", "A"], "temperature")
    assert swapped[:, 1] == pytest.approx([0.75, 0.5], abs=1e-6)
    with pytest.raises(ValueError, match="no calibration map"):
        apply_calibration(maps, new, ["A", "B", "Z"], "platt")


def test_fits_on_degenerate_data_stay_finite():
    # one tied score, half positive: any map sending it to 1/2 is optimal. Temperature: sigmoid(z / T)
    # -> 1/2 needs T -> infinity: it stops at the upper bound. Platt: a z + b = 0.
    y = np.array([1, 0] * 6, dtype=float)
    p = np.full(12, 0.375)
    assert fit_temperature(y, p) == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-9)
    a, b = fit_platt(y, p)
    assert expit(a * logit(0.375) + b) == pytest.approx(0.5, abs=1e-6)
    # separable: no finite optimum; the fit still returns finite numbers that rank as the scores do
    a, b = fit_platt([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert np.isfinite(a) and a > 0 and np.isfinite(fit_temperature([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]))
