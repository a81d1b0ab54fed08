"""Operating points (cxrkit.evaluation.operating_points): thresholds on a tiny ROC worked out by
hand, the counts and rates at a threshold, the bootstrap intervals where they must collapse, and
the hook that scores a shipped table on another prediction set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrkit.evaluation.operating_points import (
    YOUDEN,
    choose_thresholds,
    rates,
    score_operating_points,
    sensitivity_threshold,
    target_method,
    threshold_performance,
    youden_threshold,
)

TOL = 1e-12
# six images, positives at 0.35, 0.7, 0.8; negatives at 0.1, 0.3, 0.4. The ROC points, threshold by
# threshold (called positive when score >= threshold):
#   threshold   inf   0.8   0.7   0.4   0.35  0.3   0.1
#   TPR         0     1/3   2/3   2/3   1     1     1
#   FPR         0     0     0     1/3   1/3   2/3   1
#   J           0     1/3   2/3   1/3   2/3   1/3   0
# Youden: J = 2/3 at 0.7 and at 0.35 (equal, although 1 - 1/3 and 2/3 - 0 differ in the last bit):
# the highest, 0.7. Sensitivity >= 0.9: first reached at 0.35; >= 0.6: at 0.7 (2/3).
Y = np.array([0, 0, 1, 0, 1, 1], dtype=float)
S = np.array([0.1, 0.3, 0.35, 0.4, 0.7, 0.8])


def test_thresholds_on_a_tiny_roc():
    assert youden_threshold(Y, S) == 0.7
    assert sensitivity_threshold(Y, S, 0.9) == 0.35
    assert sensitivity_threshold(Y, S, 0.6) == 0.7
    assert sensitivity_threshold(Y, S, 1.0) == 0.35
    # a label ranked no better than chance: J <= 0 everywhere, its first maximum is at inf (nothing positive)
    assert youden_threshold(Y, 1 - S) == np.inf
    # masked entries count nowhere; a label without both classes has no threshold
    assert youden_threshold(np.r_[Y, np.nan], np.r_[S, 0.99]) == 0.7
    assert np.isnan(youden_threshold([0, 0, np.nan], [0.1, 0.2, 0.3]))
    assert np.isnan(sensitivity_threshold([1, 1], [0.1, 0.2], 0.9))
    with pytest.raises(ValueError, match="target sensitivity"):
        sensitivity_threshold(Y, S, 0.0)


def test_choose_thresholds_table():
    table = choose_thresholds(np.c_[Y, Y], np.c_[S, 1 - S], ["A", "B"], target_sensitivity=0.9)
    assert list(table.columns) == ["label", "method", "threshold"]
    assert list(zip(table["label"], table["method"])) == [("A", YOUDEN), ("A", "sensitivity>=0.90"),
                                                          ("B", YOUDEN), ("B", "sensitivity>=0.90")]
    # B = 1 - S: positives at 0.65, 0.3, 0.2; sensitivity 1 first at 0.2 (0.9 is never reached earlier)
    assert table["threshold"].tolist() == pytest.approx([0.7, 0.35, np.inf, 0.2], abs=TOL)
    assert target_method(0.85) == "sensitivity>=0.85"


def test_counts_and_rates_at_fixed_thresholds():
    #   at 0.7:  called positive 0.7 (+), 0.8 (+)                 -> TP 2, FP 0, TN 3, FN 1
    #            sensitivity 2/3, specificity 1, PPV 1, NPV 3/4
    #   at 0.35: called positive 0.35 (+), 0.4 (-), 0.7, 0.8 (+)  -> TP 3, FP 1, TN 2, FN 0
    #            sensitivity 1, specificity 2/3, PPV 3/4, NPV 1
    thresholds = pd.DataFrame({"label": ["A", "A"], "method": ["at 0.7", "at 0.35"], "threshold": [0.7, 0.35]})
    perf = threshold_performance(thresholds, Y[:, None], S[:, None], ["A"], n_boot=None)
    assert list(perf.columns) == ["threshold", "positives", "negatives", "TP", "FP", "TN", "FN", "sensitivity",
                                  "specificity", "PPV", "NPV"]
    assert perf.loc[("A", "at 0.7"), ["TP", "FP", "TN", "FN"]].tolist() == [2, 0, 3, 1]
    assert perf.loc[("A", "at 0.35"), ["TP", "FP", "TN", "FN"]].tolist() == [3, 1, 2, 0]
    assert perf.loc[("A", "at 0.7"), ["sensitivity", "specificity", "PPV", "NPV"]].tolist() == pytest.approx(
        [2 / 3, 1, 1, 3 / 4], abs=TOL)
    assert perf.loc[("A", "at 0.35"), ["sensitivity", "specificity", "PPV", "NPV"]].tolist() == pytest.approx(
        [1, 2 / 3, 3 / 4, 1], abs=TOL)
    assert perf["positives"].tolist() == [3, 3] and perf["negatives"].tolist() == [3, 3]
    # a denominator of 0 gives NaN: nothing called positive -> PPV undefined
    r = rates(0, 0, 3, 3)
    assert np.isnan(r["PPV"]) and r["sensitivity"] == 0 and r["specificity"] == 1 and r["NPV"] == 0.5


def test_masked_entries_and_missing_thresholds():
    y = np.c_[np.r_[Y, np.nan], [0, 0, 0, 0, 0, 0, 1]]
    s = np.c_[np.r_[S, 0.99], [0.5] * 7]
    thresholds = choose_thresholds(y[:6], s[:6], ["A", "B"])  # B has no positive among the first six
    perf = threshold_performance(thresholds, y, s, ["A", "B"], n_boot=None)
    # A: the masked seventh image (score 0.99) is not a false positive
    assert perf.loc[("A", YOUDEN), ["TP", "FP", "TN", "FN"]].tolist() == [2, 0, 3, 1]
    # B: no threshold -> counts missing, rates NaN; its known classes are still counted
    key = ("B", YOUDEN)
    assert np.isnan(perf.at[key, "threshold"]) and np.isnan(perf.at[key, "sensitivity"])
    assert perf.loc[[key], ["TP", "FP", "TN", "FN"]].isna().all().all()
    assert (perf.at[key, "positives"], perf.at[key, "negatives"]) == (1, 6)


def test_bootstrap_intervals_collapse_where_nothing_can_vary():
    # a perfectly separated label at a threshold between the classes: every replicate (that has the
    # class) gives sensitivity = specificity = PPV = NPV = 1; the reversed label gives 0 everywhere
    y = np.array([0, 0, 0, 1, 1, 1], dtype=float)
    s = np.c_[[0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]]
    thresholds = pd.DataFrame({"label": ["P", "R"], "method": ["m", "m"], "threshold": [0.5, 0.5]})
    perf = threshold_performance(thresholds, np.c_[y, y], s, ["P", "R"], n_boot=200, seed=1)
    for rate in ("sensitivity", "specificity", "PPV", "NPV"):
        assert perf.loc[("P", "m"), [rate, f"{rate} low", f"{rate} high"]].tolist() == [1.0, 1.0, 1.0]
    for rate in ("sensitivity", "specificity"):
        assert perf.loc[("R", "m"), [rate, f"{rate} low", f"{rate} high"]].tolist() == [0.0, 0.0, 0.0]


def test_bootstrap_resamples_whole_patients():
    # every image of one patient: each replicate draws that patient once, so it is the data itself and
    # the interval is the point; resampling images instead spreads it
    thresholds = pd.DataFrame({"label": ["A"], "method": ["m"], "threshold": [0.7]})
    one = threshold_performance(thresholds, Y[:, None], S[:, None], ["A"], groups=["p"] * 6, n_boot=100)
    assert one.loc[("A", "m"), ["sensitivity low", "sensitivity high"]].tolist() == pytest.approx([2 / 3, 2 / 3])
    images = threshold_performance(thresholds, Y[:, None], S[:, None], ["A"], n_boot=100)
    low, high = images.loc[("A", "m"), ["sensitivity low", "sensitivity high"]]
    assert low < 2 / 3 < high
    # seeded: the same seed gives the same interval
    again = threshold_performance(thresholds, Y[:, None], S[:, None], ["A"], n_boot=100)
    assert again.equals(images)


def test_score_operating_points_on_another_set_matches_labels_by_name():
    table = choose_thresholds(np.c_[Y, Y], np.c_[S, S], ["A", "B"], 0.9)
    # another set that has B only, in a column of its own order
    other = score_operating_points(table, "external", Y[:, None], S[:, None], ["B"], n_boot=None)
    assert list(other.columns[:3]) == ["label", "method", "threshold"]
    assert "external sensitivity" in other.columns and "external TP" in other.columns
    b = other[other["label"] == "B"].set_index("method")
    assert b.loc[YOUDEN, ["external TP", "external FP", "external TN", "external FN"]].tolist() == [2, 0, 3, 1]
    assert b.loc["sensitivity>=0.90", "external sensitivity"] == 1.0
    assert other.loc[other["label"] == "A", "external sensitivity"].isna().all()  # A: not in that set
    assert len(other) == 4
