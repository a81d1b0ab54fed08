"""Operating points: per-label decision thresholds chosen on one set of predictions (a model's
out-of-fold validation predictions) and the sensitivity, specificity, PPV and NPV they give on any
other set (the test split, an external site), with patient-bootstrap confidence intervals.

A known entry is called positive when its score is >= the threshold (the convention of
``sklearn.metrics.roc_curve``, whose thresholds are the candidates). Masked (NaN) labels count
nowhere. With TP, FP, TN, FN the counts at a threshold:

* sensitivity = TP / (TP + FN), specificity = TN / (TN + FP), PPV = TP / (TP + FP),
  NPV = TN / (TN + FN) (e.g. Altman & Bland 1994, *Diagnostic tests 1 and 2*, BMJ 308); NaN when
  the denominator is 0. PPV and NPV depend on the prevalence of the set they are measured on.
* **Youden's J** (Youden 1950, *Index for rating diagnostic tests*, Cancer 3): the threshold
  maximising J = sensitivity + specificity - 1 over the ROC points; among equal J, the highest
  threshold (``inf``, nothing called positive, for a label ranked no better than chance).
* **Target sensitivity**: the highest threshold whose sensitivity is >= the target, i.e. the most
  specific threshold that still detects that share of the positives.

The confidence intervals (:func:`threshold_performance`) are percentile intervals of the patient
bootstrap (images resampled with their patient, :func:`cxrkit.evaluation.bootstrap._sampler`) of
the set the thresholds are applied to, the thresholds held fixed. Estimand: the sensitivity,
specificity, PPV and NPV of that fixed rule on the population the set was sampled from; the
uncertainty of choosing the threshold (on other data) is not in them. A replicate in which a rate's
denominator is 0 (e.g. no positive drawn) is left out of that rate's interval.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from cxrkit.evaluation.bootstrap import _check_boot, _sampler
from cxrkit.evaluation.metrics import _check, _index

RATES = ("sensitivity", "specificity", "PPV", "NPV")  #: what is reported at a threshold
COUNTS = ("TP", "FP", "TN", "FN")
YOUDEN = "youden"


def target_method(target: float) -> str:
    """The method name of a target-sensitivity threshold (``sensitivity>=0.90``)."""
    return f"sensitivity>={target:.2f}"


def _roc(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """fpr, tpr and thresholds of one label's known entries (every point kept), None when the
    label lacks a class."""
    y, s = np.asarray(y_true, dtype=float).ravel(), np.asarray(y_score, dtype=float).ravel()
    keep = ~np.isnan(y)
    y, s = y[keep], s[keep]
    if y.size == 0 or y.min() == y.max():
        return None
    return roc_curve(y, s, drop_intermediate=False)


def youden_threshold(y_true: Any, y_score: Any) -> float:
    """The threshold maximising Youden's J = TPR - FPR over the ROC points of one label (the highest
    among ties); NaN when the label lacks a class."""
    roc = _roc(y_true, y_score)
    if roc is None:
        return float("nan")
    fpr, tpr, thr = roc
    j = tpr - fpr
    best = np.flatnonzero(j >= j.max() - 1e-12)  # equal J up to rounding (2/3 - 0 vs 1 - 1/3) tie
    return float(thr[best[0]])  # thresholds decrease: the first maximum is the highest


def sensitivity_threshold(y_true: Any, y_score: Any, target: float = 0.9) -> float:
    """The highest threshold of one label whose sensitivity (TPR) is >= ``target``; NaN when the
    label lacks a class.

    Raises:
        ValueError: ``target`` outside (0, 1].
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    roc = _roc(y_true, y_score)
    if roc is None:
        return float("nan")
    _, tpr, thr = roc
    return float(thr[int(np.argmax(tpr >= target - 1e-12))])  # tpr rises to 1: a first index exists


def choose_thresholds(y_true: Any, y_score: Any, labels: Sequence[str] | None = None,
                      target_sensitivity: float = 0.9) -> pd.DataFrame:
    """Youden and target-sensitivity thresholds of every label of (N, L) scores.

    Returns:
        Columns ``label``, ``method`` (:data:`YOUDEN`, :func:`target_method`) and ``threshold`` (NaN
        for a label without both classes), one row per label and method.
    """
    t, s = _check(y_true, y_score)
    rows = []
    for j, name in enumerate(_index(labels, t.shape[1])):
        rows.append({"label": name, "method": YOUDEN, "threshold": youden_threshold(t[:, j], s[:, j])})
        rows.append({"label": name, "method": target_method(target_sensitivity),
                     "threshold": sensitivity_threshold(t[:, j], s[:, j], target_sensitivity)})
    return pd.DataFrame(rows, columns=["label", "method", "threshold"])


def rates(tp: Any, fp: Any, tn: Any, fn: Any) -> dict[str, Any]:
    """Sensitivity, specificity, PPV and NPV of counts (scalars or arrays); NaN where a denominator is 0."""
    tp, fp, tn, fn = (np.asarray(x, dtype=float) for x in (tp, fp, tn, fn))

    def ratio(a: np.ndarray, b: np.ndarray) -> Any:
        out = np.divide(a, b, out=np.full(np.shape(a), np.nan), where=b > 0)
        return float(out) if out.ndim == 0 else out

    return {"sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp), "PPV": ratio(tp, tp + fp),
            "NPV": ratio(tn, tn + fn)}


def _indicators(thresholds: pd.DataFrame, t: np.ndarray, s: np.ndarray, names: list[str]) -> np.ndarray:
    """(4, N, R): per row of ``thresholds``, whether each image is a TP, FP, TN or FN."""
    out = np.zeros((4, len(t), len(thresholds)))
    for r, (label, thr) in enumerate(zip(thresholds["label"], thresholds["threshold"], strict=True)):
        j = names.index(label)
        if np.isnan(thr):
            continue
        y, pred = t[:, j], s[:, j] >= thr
        out[:, :, r] = [pred & (y == 1), pred & (y == 0), ~pred & (y == 0), ~pred & (y == 1)]
    return out


def threshold_performance(thresholds: pd.DataFrame, y_true: Any, y_score: Any, labels: Sequence[str],
                          groups: Any = None, n_boot: int | None = 1000, seed: int = 0,
                          alpha: float = 0.05) -> pd.DataFrame:
    """TP, FP, TN, FN, sensitivity, specificity, PPV and NPV of fixed thresholds on (N, L) scores,
    with percentile-bootstrap intervals (see the module docstring for the estimand).

    Works on any prediction file with its labels: the rows of ``thresholds`` (from
    :func:`choose_thresholds`, or read back from a shipped table) whose label is in ``labels`` are
    scored, matched by name; the others are left out.

    Args:
        thresholds: columns ``label``, ``method``, ``threshold``.
        y_true: (N, L) 1/0/NaN.
        y_score: (N, L) scores, columns in the order of ``labels``.
        labels: the names of the L columns.
        groups: optional (N,) patient (or other group) id per row, resampled whole.
        n_boot: bootstrap replicates; None: point estimates only (no interval columns).
        seed: seed of the resampling.
        alpha: the intervals cover 1 - alpha.

    Returns:
        One row per scored threshold row, index (``label``, ``method``): ``threshold``,
        ``positives`` and ``negatives`` (known entries of the label), the counts (missing where the
        threshold is NaN), each rate and (with ``n_boot``) ``<rate> low`` and ``<rate> high``.
    """
    t, s = _check(y_true, y_score)
    names = list(_index(labels, t.shape[1]))
    rows = thresholds[thresholds["label"].isin(names)].reset_index(drop=True)
    ind = _indicators(rows, t, s, names)
    counts = ind.sum(axis=1)  # (4, R)
    counts[:, rows["threshold"].isna().to_numpy()] = np.nan  # no threshold (a label without both classes)
    out = rows.set_index(["label", "method"])[["threshold"]].copy()
    cols = [names.index(lab) for lab in rows["label"]]
    out["positives"] = (t[:, cols] == 1).sum(axis=0)
    out["negatives"] = (t[:, cols] == 0).sum(axis=0)
    for name, c in zip(COUNTS, counts, strict=True):
        out[name] = pd.array(np.where(np.isnan(c), 0, c).astype(int), dtype="Int64")
        out.loc[np.isnan(c), name] = pd.NA
    point = rates(*counts)
    if n_boot is None:
        for name in RATES:
            out[name] = point[name]
        return out
    _check_boot(n_boot, alpha)
    draw, block = _sampler(len(t), seed, groups)
    reps: list[dict[str, np.ndarray]] = []
    done = 0
    while done < n_boot:
        w = draw(min(block, n_boot - done))
        reps.append(rates(*(w @ ind[k] for k in range(4))))  # each (b, R)
        done += len(w)
    for name in RATES:
        r = np.concatenate([rep[name] for rep in reps])
        out[name] = point[name]
        with warnings.catch_warnings():  # a rate undefined in every replicate: NaN, silently
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanquantile(r, [alpha / 2, 1 - alpha / 2], axis=0)
        out[f"{name} low"], out[f"{name} high"] = low, high
    return out


def score_operating_points(table: pd.DataFrame, prefix: str, y_true: Any, y_score: Any, labels: Sequence[str],
                           groups: Any = None, n_boot: int | None = 1000, seed: int = 0) -> pd.DataFrame:
    """``table`` (columns ``label``, ``method``, ``threshold``, ...: a shipped operating-point table)
    with the performance of its thresholds on another prediction set added as ``<prefix> <column>``
    columns (:func:`threshold_performance`); rows whose label the set lacks get NaN there.

    This is the hook for external validation: read the external site's prediction file and labels,
    align the labels by name, and call this with ``prefix="external"``.
    """
    perf = threshold_performance(table[["label", "method", "threshold"]], y_true, y_score, labels, groups=groups,
                                 n_boot=n_boot, seed=seed).drop(columns="threshold")
    perf.columns = [f"{prefix} {c}" for c in perf.columns]
    return table.merge(perf, left_on=["label", "method"], right_index=True, how="left")
