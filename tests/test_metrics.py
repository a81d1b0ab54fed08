"""Tests of cxrkit.evaluation.metrics and .bootstrap against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrkit.evaluation.bootstrap import bootstrap_macro_auc, paired_bootstrap_diff
from cxrkit.evaluation.metrics import (
    _auc,
    _plans,
    average_precision,
    evaluate,
    macro_auc,
    mean_average_precision,
    per_label_auc,
    threshold_metrics,
)

nan = np.nan


def synthetic(n: int, n_labels: int = 4, seed: int = 0, signal: float = 1.0,
              masked: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ~25% positives, scores = signal * label + noise, a fraction masked (NaN)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < 0.25).astype(float)
    s = signal * y + rng.normal(size=y.shape)
    y[rng.random(y.shape) < masked] = nan
    return y, s


# --- hand-computed examples -------------------------------------------------------------------

def test_auc_by_hand() -> None:
    # positives score 0.9, 0.4; negatives 0.8, 0.3, 0.4.
    # pairs: 0.9 beats all 3 negatives -> 3; 0.4 loses to 0.8 (0), beats 0.3 (1), ties 0.4 (1/2)
    # AUC = (3 + 1.5) / (2 * 3) = 0.75
    auc = per_label_auc([1, 0, 1, 0, 0], [0.9, 0.8, 0.4, 0.3, 0.4], labels=["Edema"])
    assert auc["Edema"] == pytest.approx(0.75)


def test_average_precision_by_hand() -> None:
    # ranking by score: 0.9 (pos), 0.8 (neg), 0.5 (neg), 0.4 (pos), 0.3 (neg)
    # precision at each positive: 1/1 and 2/4; each adds recall 1/2
    # AP = 1/2 * 1 + 1/2 * 0.5 = 0.75
    ap = average_precision([1, 0, 1, 0, 0], [0.9, 0.8, 0.4, 0.3, 0.5])
    assert ap[0] == pytest.approx(0.75)


def test_threshold_metrics_by_hand() -> None:
    y = np.array([
        [1, 0, 0, 1],
        [1, 1, 0, 0],
        [0, 1, 0, 0],
        [0, 1, 0, 0],
        [nan, 0, 0, 0],
    ])
    s = np.array([
        [0.9, 0.4, 0.6, 0.1],
        [0.2, 0.7, 0.1, 0.1],
        [0.6, 0.8, 0.1, 0.1],
        [0.1, 0.9, 0.1, 0.1],
        [0.9, 0.5, 0.1, 0.1],
    ])
    # class 0 (row 4 masked): predicted rows 0, 2 -> TP 1, FP 1, FN 1: CP 1/2, CR 1/2
    # class 1: predicted rows 1, 2, 3, 4 (0.5 >= 0.5) -> TP 3, FP 1, FN 0: CP 3/4, CR 1
    # class 2: no positive -> left out of CP/CR; its FP (row 0) counts in OP
    # class 3: nothing predicted -> TP 0, FP 0, FN 1: CP 0 (no predicted positive), CR 0
    # CP = (1/2 + 3/4 + 0) / 3 = 5/12; CR = (1/2 + 1 + 0) / 3 = 1/2
    # CF1 = 2 * 5/12 * 1/2 / (5/12 + 1/2) = (5/12) / (11/12) = 5/11
    # OP = (1 + 3 + 0 + 0) / (2 + 4 + 1 + 0) = 4/7; OR = 4 / (2 + 3 + 0 + 1) = 2/3
    # OF1 = 2 * 4/7 * 2/3 / (4/7 + 2/3) = (16/21) / (26/21) = 8/13
    m = threshold_metrics(y, s, threshold=0.5)
    expected = {"CP": 5 / 12, "CR": 1 / 2, "CF1": 5 / 11, "OP": 4 / 7, "OR": 2 / 3, "OF1": 8 / 13}
    assert m == pytest.approx(expected)


def test_threshold_metrics_edge_cases() -> None:
    none_positive = threshold_metrics(np.zeros((3, 2)), np.full((3, 2), 0.9))
    assert np.isnan(none_positive["CP"]) and np.isnan(none_positive["CR"]) and np.isnan(none_positive["OR"])
    assert none_positive["OP"] == 0.0
    nothing_predicted = threshold_metrics(np.ones((3, 2)), np.zeros((3, 2)))
    assert nothing_predicted == {"CP": 0.0, "CR": 0.0, "CF1": 0.0, "OP": 0.0, "OR": 0.0, "OF1": 0.0}


# --- skipping and masking ------------------------------------------------------------------------

def test_single_class_label_skipped() -> None:
    y, s = synthetic(60, n_labels=3)
    y[:, 1] = 0.0
    y[0, 1] = nan  # a masked entry does not make it scorable
    auc = per_label_auc(y, s)
    assert np.isnan(auc[1]) and auc.notna().sum() == 2
    assert macro_auc(y, s) == pytest.approx(np.mean([auc[0], auc[2]]))
    ap = average_precision(y, s)
    assert np.isnan(ap[1])
    assert mean_average_precision(y, s) == pytest.approx(np.mean([ap[0], ap[2]]))
    assert np.isnan(macro_auc(np.zeros((4, 2)), np.zeros((4, 2))))


def test_masked_entries_ignored() -> None:
    y, s = synthetic(80, n_labels=3, masked=0.3)
    s_masked_nan = s.copy()
    s_masked_nan[np.isnan(y)] = nan  # scores at masked entries are never read
    s_masked_big = np.where(np.isnan(y), 100.0, s)
    for j in range(3):
        known = ~np.isnan(y[:, j])
        sub_auc = per_label_auc(y[known, j], s[known, j])[0]
        sub_ap = average_precision(y[known, j], s[known, j])[0]
        assert per_label_auc(y, s)[j] == pytest.approx(sub_auc)
        assert per_label_auc(y, s_masked_nan)[j] == pytest.approx(sub_auc)
        assert average_precision(y, s_masked_big)[j] == pytest.approx(sub_ap)
        assert sub_auc == pytest.approx(roc_auc_score(y[known, j], s[known, j]))
        assert sub_ap == pytest.approx(average_precision_score(y[known, j], s[known, j]))
    assert threshold_metrics(y, s_masked_big, 0.5) == threshold_metrics(y, s, 0.5)


def test_rank_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((500, 6)) < 0.3).astype(float)
    s = np.round(y * 0.4 + rng.random(y.shape), 1)  # coarse scores: many ties
    ours = per_label_auc(y, s)
    for j in range(6):
        assert ours[j] == pytest.approx(roc_auc_score(y[:, j], s[:, j]), abs=1e-12)


def test_weighted_auc_equals_resampled_data() -> None:
    # the bootstrap scores a replicate through image weights = how often each image was drawn
    rng = np.random.default_rng(2)
    y = (rng.random((40, 2)) < 0.4).astype(float)
    s = np.round(rng.random(y.shape), 1)
    counts = rng.integers(0, 4, size=(3, 40)).astype(float)
    got = _auc(_plans(y, s), counts)
    for b in range(3):
        idx = np.repeat(np.arange(40), counts[b].astype(int))
        for j in range(2):
            assert got[b, j] == pytest.approx(roc_auc_score(y[idx, j], s[idx, j]), abs=1e-12)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="same"):
        macro_auc(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        macro_auc(np.array([[0.0], [2.0]]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="non-finite"):
        macro_auc(np.array([[0.0], [1.0]]), np.array([[0.1], [nan]]))
    with pytest.raises(ValueError, match="labels"):
        per_label_auc(np.zeros((3, 2)), np.zeros((3, 2)), labels=["Edema"])


def test_evaluate() -> None:
    y, s = synthetic(100)
    labels = ["Atelectasis", "Cardiomegaly", "Edema", "Pneumothorax"]
    out = evaluate(y, s, labels, threshold=0.0)
    assert list(out["auc"].index) == labels
    assert out["macro_auc"] == pytest.approx(macro_auc(y, s))
    assert out["mAP"] == pytest.approx(mean_average_precision(y, s))
    assert out["CF1"] == threshold_metrics(y, s, 0.0)["CF1"]


# --- bootstrap -----------------------------------------------------------------------------------

def test_bootstrap_ci_contains_estimate_and_shrinks() -> None:
    y, s = synthetic(200, seed=3)
    small = bootstrap_macro_auc(y, s, n_boot=300, seed=0)
    assert small["estimate"] == pytest.approx(macro_auc(y, s))
    assert small["low"] < small["estimate"] < small["high"]
    assert small["se"] > 0
    y, s = synthetic(3000, seed=3)
    large = bootstrap_macro_auc(y, s, n_boot=300, seed=0)
    assert large["low"] < large["estimate"] < large["high"]
    assert large["high"] - large["low"] < 0.5 * (small["high"] - small["low"])  # ~ sqrt(200/3000)


def test_bootstrap_deterministic_for_seed() -> None:
    y, s = synthetic(150, seed=4)
    a = bootstrap_macro_auc(y, s, n_boot=200, seed=7)
    assert a == bootstrap_macro_auc(y, s, n_boot=200, seed=7)
    assert a != bootstrap_macro_auc(y, s, n_boot=200, seed=8)


def test_bootstrap_over_groups_resamples_patients() -> None:
    # every patient's image appears 5 times: resampling images treats copies as independent
    # and understates the spread; resampling patients matches the 1-copy data set
    y, s = synthetic(150, seed=5, masked=0.0)
    y5, s5, patients = np.repeat(y, 5, axis=0), np.repeat(s, 5, axis=0), np.repeat(np.arange(150), 5)
    single = bootstrap_macro_auc(y, s, n_boot=400, seed=0)
    by_image = bootstrap_macro_auc(y5, s5, n_boot=400, seed=0)
    by_patient = bootstrap_macro_auc(y5, s5, n_boot=400, seed=0, groups=patients.astype(str))
    assert by_patient["estimate"] == pytest.approx(single["estimate"])
    assert by_patient["se"] > 1.6 * by_image["se"]  # ~ sqrt(5)
    assert by_patient["se"] == pytest.approx(single["se"], rel=0.25)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_macro_auc(y, s, groups=np.arange(10))


def test_bootstrap_keeps_label_set_fixed_small() -> None:
    # label 1: two positives, perfectly ranked (AUC 1); label 0: weak (AUC ~0.58). About 10% of
    # replicates draw neither positive of label 1; averaged over label 0 alone (~0.58) they would
    # pull the lower bound below 0.65. They are rejected and redrawn instead (low ~0.71).
    rng = np.random.default_rng(6)
    y = np.zeros((60, 2))
    y[:, 0] = rng.random(60) < 0.4
    y[:2, 1] = 1.0
    s = np.c_[0.3 * y[:, 0] + rng.normal(size=60), np.r_[5.0, 5.0, np.zeros(58)]]
    auc = per_label_auc(y, s)
    assert auc[1] == 1.0 and auc[0] < 0.65
    out = bootstrap_macro_auc(y, s, n_boot=300, seed=0)
    assert out["estimate"] == pytest.approx((auc[0] + 1) / 2)
    assert 0.65 < out["low"] < out["estimate"] < out["high"]
    assert 10 < out["replicates_rejected"] < 90  # ~ 300 * 0.12 / 0.88 expected


# The reference below resamples exactly as documented, one replicate at a time and without the
# library's weights or blocks: replicate r draws G patient indices (codes in order of first
# appearance) from ``default_rng(seed)`` and repeats each drawn patient's images.

def _rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC from average ranks; NaN with a single class."""
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return nan
    return float((rankdata(s)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def reference_replicates(y: np.ndarray, models: list[np.ndarray], patients: np.ndarray, n_draws: int,
                         seed: int) -> np.ndarray:
    """Per-label AUCs of the first ``n_draws`` replicates, shape (draws, models, labels)."""
    rng = np.random.default_rng(seed)
    n_patients = int(patients.max()) + 1
    out = np.full((n_draws, len(models), y.shape[1]), nan)
    for r in range(n_draws):
        idx = np.repeat(np.arange(len(y)), np.bincount(rng.integers(0, n_patients, n_patients),
                                                       minlength=n_patients)[patients])
        for j in range(y.shape[1]):
            known = idx[~np.isnan(y[idx, j])]
            for m, s in enumerate(models):
                out[r, m, j] = _rank_auc(y[known, j], s[known, j])
    return out


def fixed_set(aucs: np.ndarray, scorable: np.ndarray, n_boot: int) -> tuple[np.ndarray, int]:
    """Macro AUCs (n_boot, models) of the first n_boot replicates with every scorable label
    scorable, and the number of replicates rejected before the n_boot-th of them."""
    ok = np.flatnonzero(~np.isnan(aucs[:, 0, scorable]).any(axis=1))
    assert ok.size >= n_boot, "reference: draw more replicates"
    return aucs[ok[:n_boot]][:, :, scorable].mean(axis=2), int(ok[n_boot - 1] + 1 - n_boot)


def three_label_example(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """~400 images of 200 patients; labels with 111, 75 and 3 positives (the 3 in 2 patients,
    so ~13% of patient replicates have no rare positive). Model a ranks labels 0 and 1 weakly
    (AUC ~0.7) and the rare label perfectly (AUC 1); model b is better on label 0."""
    rng = np.random.default_rng(seed)
    sizes = np.r_[2, 1, rng.integers(1, 4, size=198)]  # images per patient
    patients = np.repeat(np.arange(200), sizes)
    n = len(patients)
    y = np.zeros((n, 3))
    y[rng.choice(n, 111, replace=False), 0] = 1
    y[rng.choice(n, 75, replace=False), 1] = 1
    y[:3, 2] = 1  # patient 0 (two images) and patient 1
    y[rng.choice(np.flatnonzero(y[:, 0] == 0), 8, replace=False), 0] = nan  # a few unknown negatives
    noise = rng.normal(size=(n, 3))
    a = np.c_[0.8 * np.nan_to_num(y[:, :2]) + noise[:, :2], 4 * y[:, 2] + 0.1 * noise[:, 2]]
    b = a.copy()
    b[:, 0] = 1.6 * np.nan_to_num(y[:, 0]) + noise[:, 0]
    return y, a, b, patients


def test_bootstrap_interval_is_over_fixed_label_set() -> None:
    y, s, _, patients = three_label_example()
    auc = per_label_auc(y, s)
    assert auc[2] == 1.0 and auc[0] < 0.8 and auc[1] < 0.8
    n_boot = 600
    out = bootstrap_macro_auc(y, s, n_boot=n_boot, seed=3, groups=patients)
    ref = reference_replicates(y, [s], patients, 800, seed=3)
    # (a) the old behaviour mixed estimands: some of the first n_boot replicates lose the rare
    # label, and averaging them over the two others pulls the lower bound far down
    old = np.nanmean(ref[:n_boot, 0], axis=1)
    assert np.isnan(ref[:n_boot, 0, 2]).sum() > 30
    assert np.quantile(old, 0.025) < out["low"] - 0.05
    # (b) the interval is the percentile interval of the fixed-label-set replicates only
    macro, rejected = fixed_set(ref, np.ones(3, bool), n_boot)
    assert out["low"] == pytest.approx(np.quantile(macro[:, 0], 0.025), abs=1e-9)
    assert out["high"] == pytest.approx(np.quantile(macro[:, 0], 0.975), abs=1e-9)
    assert out["se"] == pytest.approx(macro[:, 0].std(ddof=1), abs=1e-9)
    assert out["estimate"] == pytest.approx(auc.mean())
    # (c) the count is reported and equals the independent count
    assert out["replicates_rejected"] == rejected > 30
    # (d) same seed, same result; another seed, another
    assert bootstrap_macro_auc(y, s, n_boot=n_boot, seed=3, groups=patients) == out
    assert bootstrap_macro_auc(y, s, n_boot=n_boot, seed=4, groups=patients) != out


def test_bootstrap_unaffected_data_unchanged() -> None:
    # (e) no replicate loses a label: count 0 and the plain percentile bootstrap
    y, s = synthetic(150, seed=11)
    patients = np.arange(150) // 2
    out = bootstrap_macro_auc(y, s, n_boot=200, seed=5, groups=patients)
    ref = reference_replicates(y, [s], patients, 200, seed=5)
    assert not np.isnan(ref).any()
    plain = ref[:, 0].mean(axis=1)
    assert out["replicates_rejected"] == 0
    assert [out["low"], out["high"]] == pytest.approx(np.quantile(plain, [0.025, 0.975]), abs=1e-9)
    image_level = bootstrap_macro_auc(y, s, n_boot=200, seed=5)
    ref = reference_replicates(y, [s], np.arange(150), 200, seed=5)
    assert image_level["replicates_rejected"] == 0
    assert image_level["low"] == pytest.approx(np.quantile(ref[:, 0].mean(axis=1), 0.025), abs=1e-9)


def test_paired_diff_over_fixed_label_set() -> None:
    y, a, b, patients = three_label_example(seed=1)
    n_boot = 500
    out = paired_bootstrap_diff(y, a, b, n_boot=n_boot, seed=2, groups=patients)
    ref = reference_replicates(y, [a, b], patients, 700, seed=2)
    assert np.isnan(ref[:n_boot, 0, 2]).sum() > 30  # the old behaviour mixed label sets
    macro, rejected = fixed_set(ref, np.ones(3, bool), n_boot)
    d = macro[:, 1] - macro[:, 0]
    assert np.abs(d).min() > 1e-6  # no replicate difference at 0: the p-value is not a float tie
    assert out["replicates_rejected"] == rejected > 30
    assert out["diff"] == pytest.approx(macro_auc(y, b) - macro_auc(y, a))
    assert [out["low"], out["high"]] == pytest.approx(np.quantile(d, [0.025, 0.975]), abs=1e-9)
    tail = min((d <= 0).sum(), (d >= 0).sum()) + 1
    assert out["p_value"] == pytest.approx(min(1.0, 2 * tail / (n_boot + 1)))
    # the same resamples as the single-model bootstrap with the same seed
    assert bootstrap_macro_auc(y, a, n_boot=n_boot, seed=2, groups=patients)["replicates_rejected"] == rejected
    assert paired_bootstrap_diff(y, a, b, n_boot=n_boot, seed=2, groups=patients) == out
    # unaffected data: count 0 and the plain paired bootstrap
    y, s = synthetic(120, seed=12, masked=0.0)
    s2 = s + 0.5 * y
    out = paired_bootstrap_diff(y, s, s2, n_boot=150, seed=1)
    ref = reference_replicates(y, [s, s2], np.arange(120), 150, seed=1)
    d = ref[:, 1].mean(axis=1) - ref[:, 0].mean(axis=1)
    assert out["replicates_rejected"] == 0
    assert [out["low"], out["high"]] == pytest.approx(np.quantile(d, [0.025, 0.975]), abs=1e-9)


def test_bootstrap_too_rare_labels_is_an_error() -> None:
    # six labels with one positive patient each among 100: a replicate keeps all six with
    # probability ~0.63^6 ~ 6%, under the 1 in 10 the draw limit allows
    y = np.zeros((100, 6))
    y[np.arange(6) * 7, np.arange(6)] = 1.0
    s = y + np.random.default_rng(0).normal(size=y.shape)
    with pytest.raises(ValueError, match=r"too rare.*column \d \(1 positive, 99 negative"):
        bootstrap_macro_auc(y, s, n_boot=50, seed=0)
    with pytest.raises(ValueError, match="too rare"):
        paired_bootstrap_diff(y, s, s, n_boot=50, seed=0)
    names = [f"Finding {c}" for c in "ABCDEF"]  # with label names, the error names them
    with pytest.raises(ValueError, match=r"too rare.*'Finding [A-F]' \(1 positive, 99 negative"):
        bootstrap_macro_auc(y, s, n_boot=50, seed=0, labels=names)
    with pytest.raises(ValueError, match=r"too rare.*'Finding [A-F]' \(1 positive"):
        paired_bootstrap_diff(y, s, s, n_boot=50, seed=0, labels=names)
    nothing = bootstrap_macro_auc(np.zeros((20, 2)), np.zeros((20, 2)), n_boot=20)  # no scorable label
    assert np.isnan([nothing["estimate"], nothing["low"], nothing["high"]]).all()
    assert nothing["replicates_rejected"] == 0


def test_paired_diff_of_model_with_itself_is_zero() -> None:
    y, s = synthetic(200, seed=7)
    out = paired_bootstrap_diff(y, s, s.copy(), n_boot=200, seed=0)
    assert out == {"diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0, "replicates_rejected": 0}


def test_paired_diff_detects_better_model() -> None:
    rng = np.random.default_rng(8)
    y, _ = synthetic(400, seed=8)
    weak = 0.3 * np.nan_to_num(y) + rng.normal(size=y.shape)
    strong = 2.0 * np.nan_to_num(y) + rng.normal(size=y.shape)
    out = paired_bootstrap_diff(y, weak, strong, n_boot=500, seed=0)
    assert out["diff"] == pytest.approx(macro_auc(y, strong) - macro_auc(y, weak))
    assert 0 < out["low"] < out["diff"] < out["high"]
    assert out["p_value"] == pytest.approx(2 / 501)  # no replicate at or below 0
    reverse = paired_bootstrap_diff(y, strong, weak, n_boot=500, seed=0)
    assert reverse["diff"] == pytest.approx(-out["diff"]) and reverse["high"] < 0


def test_bootstrap_does_not_depend_on_memory_blocks(monkeypatch) -> None:
    """Replicates are drawn in memory-bounded blocks; the block size must not change the result
    (its speed is measured by ``make bench``, never asserted here)."""
    import cxrkit.evaluation.bootstrap as M

    y, s = synthetic(300, n_labels=6, seed=9)
    groups = np.arange(300) // 3
    whole = bootstrap_macro_auc(y, s, n_boot=50, seed=4, groups=groups)
    y3, a, b, patients = three_label_example()  # with rejected replicates
    rare = bootstrap_macro_auc(y3, a, n_boot=120, seed=1, groups=patients)
    paired = paired_bootstrap_diff(y3, a, b, n_boot=120, seed=1, groups=patients)
    assert rare["replicates_rejected"] > 0
    monkeypatch.setattr(M, "_CHUNK", 7 * 300)  # blocks of 7 replicates
    assert bootstrap_macro_auc(y, s, n_boot=50, seed=4, groups=groups) == whole
    monkeypatch.setattr(M, "_CHUNK", 5 * len(y3))  # blocks of 5
    assert bootstrap_macro_auc(y3, a, n_boot=120, seed=1, groups=patients) == pytest.approx(rare, abs=1e-12)
    assert paired_bootstrap_diff(y3, a, b, n_boot=120, seed=1, groups=patients) == pytest.approx(paired, abs=1e-12)


def test_paired_diff_returns_its_replicates_on_request() -> None:
    # label 0: a reversed (AUC 0), b perfect (AUC 1); label 1: the same scores for both. Every kept
    # replicate keeps both classes of both labels, so every replicate difference is (1 - 0) / 2 = 0.5
    y = np.array([[1, 1], [1, 0], [0, 1], [0, 0]] * 5, dtype=float)
    a = np.c_[1 - y[:, 0], np.tile([0.3, 0.1, 0.4, 0.2], 5)]
    b = np.c_[y[:, 0], a[:, 1]]
    plain = paired_bootstrap_diff(y, a, b, n_boot=30, seed=3)
    assert "replicates" not in plain
    out = paired_bootstrap_diff(y, a, b, n_boot=30, seed=3, return_replicates=True)
    assert out["replicates"].shape == (30,) and np.allclose(out["replicates"], 0.5)
    assert {k: v for k, v in out.items() if k != "replicates"} == plain
    # with replicates that vary: the interval is their percentile interval
    y, s = synthetic(120, seed=12, masked=0.0)
    out = paired_bootstrap_diff(y, s, s + 0.5 * y, n_boot=150, seed=1, return_replicates=True)
    assert [out["low"], out["high"]] == pytest.approx(np.quantile(out["replicates"], [0.025, 0.975]))
