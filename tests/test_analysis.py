"""Computations behind the study's tables: the ranking of the strongest couplings (stable under
floating-point noise) and the trend statistic of the gain-vs-co-occurrence analysis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrkit.study.analysis import gain_trend, strongest_couplings


def _matrix(entries: dict[tuple[str, str], float], labels=("A", "B", "C", "D")) -> pd.DataFrame:
    m = pd.DataFrame(0.0, index=list(labels), columns=list(labels))
    for (src, tgt), v in entries.items():
        m.loc[src, tgt] = v
    return m


def test_strongest_couplings_ties_within_noise_are_ordered_by_label_names():
    # 0.000748 vs 0.000747 differ only by float noise (another thread count could swap them):
    # they tie and come in (source, target) name order, not in raw-value order
    m = _matrix({("C", "A"): 0.000748, ("B", "A"): 0.000747, ("D", "A"): -0.0007475, ("A", "B"): 0.0005})
    top = strongest_couplings(m, 4)
    assert list(zip(top["source"], top["target"], strict=True)) == [("B", "A"), ("C", "A"), ("D", "A"), ("A", "B")]
    assert top.loc[2, "value"] == pytest.approx(-0.0007475)  # signed value kept, ranked by magnitude
    # the order does not depend on which of the tied entries is (by noise) the largest
    m2 = _matrix({("C", "A"): 0.000747, ("B", "A"): 0.000748, ("D", "A"): -0.0007471, ("A", "B"): 0.0005})
    assert strongest_couplings(m2, 4)[["source", "target"]].equals(top[["source", "target"]])


def test_strongest_couplings_clear_differences_and_diagonal():
    m = _matrix({("A", "B"): 0.5, ("B", "C"): -2.0, ("C", "D"): 1.0, ("D", "A"): 0.2})
    for lab in m.index:
        m.loc[lab, lab] = 9.0  # never reported
    top = strongest_couplings(m, 3)
    assert list(top["value"]) == [-2.0, 1.0, 0.5]
    assert (top["source"] != top["target"]).all()
    assert len(strongest_couplings(m, 100)) == 12  # every off-diagonal entry, zeros included
    # a coarser resolution ties more: in steps of 0.75 * 2.0, |-2.0| and 1.0 tie (B before C)
    coarse = strongest_couplings(m, 4, resolution=0.75)
    assert list(zip(coarse["source"], coarse["target"], strict=True)) == [("B", "C"), ("C", "D"), ("A", "B"), ("A", "C")]


def test_gain_trend_spearman_and_degenerate_cases():
    x = pd.Series([0.1, 0.2, 0.3, 0.4, 0.5], index=list("abcde"))
    gains = pd.DataFrame({"up": [0.0, 0.1, 0.15, 0.3, 0.4], "down": [5, 4, 3, 2, 1], "flat": [1.0] * 5},
                         index=list("abcde"))
    gains.loc["c", "down"] = np.nan  # NaN labels are left out
    t = gain_trend(x, gains)
    assert t.loc["up", "spearman rho"] == pytest.approx(1.0) and t.loc["up", "labels"] == 5
    assert t.loc["down", "spearman rho"] == pytest.approx(-1.0) and t.loc["down", "labels"] == 4
    assert 0 <= t.loc["up", "p-value"] < 0.05
    assert np.isnan(t.loc["flat", "spearman rho"]) and np.isnan(t.loc["flat", "p-value"])
    few = gain_trend(x.iloc[:2], gains)
    assert few["spearman rho"].isna().all() and (few["labels"] == 2).all()
