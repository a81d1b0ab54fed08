"""Subgroup AUC and gaps (cxrkit.evaluation.subgroups) on a case small enough to count by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrkit.evaluation.subgroups import MACRO, age_bands, subgroup_auc

TOL = 1e-12
N_BOOT = 60
# Eight images in groups a (0-3) and b (4-7); images 3 and 7 belong to one patient (pz), who is in
# both groups. Labels X, Y, Z:
#   X  a: y (1, 1, 0, 0), scores (.9, .2, .5, .1): pairs .9>.5, .9>.1, .2<.5, .2>.1 -> 3/4
#      b: y (1, 0, 1, 0), scores (.8, .6, .7, .3): both positives above both negatives -> 1
#   Y  a: y (1, 0, 1, 0), perfect (.75 / .25) -> 1;   b: y (0, 1, 0, 1), reversed (.75 on negatives) -> 0
#   Z  a: all 0 -> no AUC;   b: y (1, 0, 0, 0), scores (.6, .4, .4, .4) -> 1
# With min_cases = 1 (2 is the same here: X and Y have 2 positive and 2 negative patients in each
# group), K = {X, Y}: macro a = (3/4 + 1)/2 = 7/8, b = (1 + 0)/2 = 1/2; gaps b - a: X +1/4, Y -1,
# macro -3/8.
Y_TRUE = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0],
                   [1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=float)
SCORES = np.array([[.9, .75, .1], [.2, .25, .1], [.5, .75, .1], [.1, .25, .1],
                   [.8, .75, .6], [.6, .25, .4], [.7, .75, .4], [.3, .25, .4]])
GROUPS = ["a"] * 4 + ["b"] * 4
PATIENTS = ["p0", "p1", "p2", "pz", "p4", "p5", "p6", "pz"]


@pytest.fixture(scope="module")
def result():
    return subgroup_auc(Y_TRUE, SCORES, GROUPS, ["X", "Y", "Z"], patients=PATIENTS, n_boot=N_BOOT, seed=0,
                        min_cases=2)


def test_subgroup_auc_by_hand(result):
    auc = result["auc"]
    assert list(auc.index) == [(g, lab) for g in ("a", "b") for lab in ("X", "Y", "Z", MACRO)]
    assert list(auc.columns) == ["images", "positives", "negatives", "observed", "mean predicted", "AUC", "low",
                                 "high", "in macro"]
    expected = {("a", "X"): 0.75, ("a", "Y"): 1.0, ("a", MACRO): 7 / 8,
                ("b", "X"): 1.0, ("b", "Y"): 0.0, ("b", "Z"): 1.0, ("b", MACRO): 0.5}
    for key, value in expected.items():
        assert auc.loc[key, "AUC"] == pytest.approx(value, abs=TOL), key
    assert np.isnan(auc.loc[("a", "Z"), "AUC"])
    assert auc["in macro"].tolist() == [True, True, False, True] * 2
    # X in a: 2 of 4 positive, mean score (.9 + .2 + .5 + .1) / 4 = 0.425
    assert auc.loc[("a", "X"), ["images", "positives", "negatives"]].tolist() == [4, 2, 2]
    assert auc.loc[("a", "X"), ["observed", "mean predicted"]].tolist() == pytest.approx([0.5, 0.425], abs=TOL)
    assert result["reference"] == "a"


def test_intervals(result):
    auc = result["auc"]
    # Y is perfect in a and reversed in b in every replicate that keeps both classes: the interval is the point
    assert auc.loc[("a", "Y"), ["low", "high"]].tolist() == [1.0, 1.0]
    assert auc.loc[("b", "Y"), ["low", "high"]].tolist() == [0.0, 0.0]
    # Z is outside the macro set: no interval
    assert auc.loc[("b", "Z"), ["low", "high"]].isna().all()
    # X's replicate AUCs lie in [0, 1]; the macro of a in [(0 + 1)/2, (1 + 1)/2]
    assert 0.5 - TOL <= auc.loc[("a", MACRO), "low"] <= 7 / 8 <= auc.loc[("a", MACRO), "high"] <= 1 + TOL
    assert result["replicates_rejected"] >= 0


def test_gaps(result):
    gap = result["gap"]
    assert list(gap.index) == [("b - a", "X"), ("b - a", "Y"), ("b - a", MACRO)]
    assert list(gap.columns) == ["gap", "low", "high", "p_value"]
    assert gap["gap"].tolist() == pytest.approx([0.25, -1.0, -0.375], abs=TOL)
    # Y's gap is -1 in every replicate: the interval collapses and every replicate is below 0,
    # so p = 2 (0 + 1) / (B + 1)
    assert gap.loc[("b - a", "Y"), ["low", "high"]].tolist() == [-1.0, -1.0]
    assert gap.loc[("b - a", "Y"), "p_value"] == pytest.approx(2 / (N_BOOT + 1), abs=TOL)


def test_too_few_cases_leave_no_macro_and_no_gap():
    r = subgroup_auc(Y_TRUE, SCORES, GROUPS, ["X", "Y", "Z"], patients=PATIENTS, n_boot=N_BOOT, min_cases=3)
    auc = r["auc"]
    assert not auc["in macro"].any() and auc.xs(MACRO, level="label")["AUC"].isna().all()
    assert auc.loc[("a", "X"), "AUC"] == pytest.approx(0.75, abs=TOL)  # point estimates stay
    assert r["gap"].empty and r["replicates_rejected"] == 0


def test_groups_order_and_missing_groups():
    # a categorical keeps its order (the first category present is the reference); a missing group is left out
    groups = pd.Series(pd.Categorical(["b"] * 4 + ["a"] * 3 + [None], categories=["b", "a"]))
    r = subgroup_auc(Y_TRUE, SCORES, groups, ["X", "Y", "Z"], n_boot=N_BOOT, min_cases=1)
    assert r["reference"] == "b" and list(r["auc"].index.get_level_values("group").unique()) == ["b", "a"]
    assert r["auc"].loc[("a", "X"), "images"] == 3
    with pytest.raises(ValueError, match="no image is in a group"):
        subgroup_auc(Y_TRUE, SCORES, [None] * 8, ["X", "Y", "Z"], n_boot=N_BOOT)


def test_bootstrap_that_cannot_keep_the_macro_set_says_so():
    # six labels with a single positive patient each, among 20 patients: a replicate keeps all six with
    # probability about (1 - (19/20)^20)^6 = 0.07, below the 1 in 10 the draw limit allows
    y = np.zeros((20, 6))
    for j in range(6):
        y[j, j] = 1
    s = np.random.default_rng(0).random((20, 6))
    with pytest.raises(ValueError, match="raise min_cases"):
        subgroup_auc(y, s, ["g"] * 20, n_boot=50, min_cases=1)


def test_age_bands():
    bands = age_bands([10, 40, 59.5, 60, 90, np.nan], [40, 60])
    assert list(bands.cat.categories) == ["<40", "40-<60", ">=60"]
    assert bands.iloc[:5].tolist() == ["<40", "40-<60", "40-<60", ">=60", ">=60"] and pd.isna(bands.iloc[5])
    for bad in ([], [60, 40], [40, 40]):
        with pytest.raises(ValueError, match="age band edges"):
            age_bands([50], bad)


def test_group_shift_with_and_without_strata():
    from cxrkit.evaluation.subgroups import group_shift

    # negatives (y 0): group a scores 1 and 3, group b scores 2 and 4; a positive (y 1) of b at 0 is not compared.
    # All pairs (b, a): 2>1, 2<3, 4>1, 4>3 -> 3/4. Strata {a 1, b 2} and {a 3, b 4}: within-stratum pairs
    # 2>1 and 4>3 -> 2/2 = 1: the case mix (stratum) explained the rest.
    y = np.array([0, 0, 0, 0, 1])
    s = np.array([1.0, 3.0, 2.0, 4.0, 0.0])
    groups = ["a", "a", "b", "b", "b"]
    strata = ["s1", "s2", "s1", "s2", "s1"]
    plain = group_shift(y, s, groups, cls=0, n_boot=50)
    assert list(plain.index) == ["b vs a"]
    assert list(plain.columns) == ["images", "reference images", "mean score", "reference mean score", "pairs", "AUC",
                                   "low", "high"]
    assert plain.loc["b vs a", ["images", "reference images", "pairs"]].tolist() == [2, 2, 4]
    assert plain.loc["b vs a", ["mean score", "reference mean score", "AUC"]].tolist() == pytest.approx([3, 2, 0.75])
    st = group_shift(y, s, groups, cls=0, strata=strata, n_boot=50)
    assert st.loc["b vs a", ["pairs", "AUC", "low", "high"]].tolist() == [2, 1.0, 1.0, 1.0]  # 1 in every replicate
    # a score constant within each stratum (the oracle's posterior, stratified by itself): exactly 1/2
    flat = group_shift(y, np.array([1.0, 3.0, 1.0, 3.0, 0.0]), groups, cls=0, strata=strata, n_boot=50)
    assert flat.loc["b vs a", ["AUC", "low", "high"]].tolist() == [0.5, 0.5, 0.5]
    # the positives: only one, in b -> no pair
    pos = group_shift(y, s, groups, cls=1, n_boot=50)
    assert pos.loc["b vs a", "pairs"] == 0 and pos.loc["b vs a", ["AUC", "low", "high"]].isna().all()
