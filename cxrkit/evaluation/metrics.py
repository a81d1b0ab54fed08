"""Multilabel metrics with masked labels, and bootstrap confidence intervals.

Inputs are ``y_true`` of shape ``(N, L)`` with values 1, 0 or NaN (unknown/masked) and
``y_score`` of the same shape. Every metric leaves out the masked entries of each label on its
own; scores at masked entries are never read (they may be NaN).

Ranking metrics skip labels that have a single class among their known entries (as the paper
does): their per-label value is NaN and macro averages are over the remaining labels.

ROC-AUC is computed as the Mann-Whitney statistic with half credit for ties, which equals
``sklearn.metrics.roc_auc_score``. The same computation with per-image weights gives the
bootstrap: a replicate that draws image ``i`` ``c_i`` times is the data set with weights
``c_i``, so the scores are sorted once per label and each replicate costs a few array passes.
Bootstrap intervals keep the label set fixed: a replicate in which a label scorable on the
full data loses all its positives or negatives is rejected and redrawn, and the number of such
replicates is reported (``replicates_rejected``); they are in :mod:`cxrkit.evaluation.bootstrap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

_Plan = tuple[np.ndarray, np.ndarray, np.ndarray]  # known rows by score, positive, tie starts


def _check(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as 2-D float, checked: same shape, labels in {0, 1, NaN}, finite known scores."""
    t = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    if t.ndim == 1:
        t = t[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"y_true and y_score need the same (N, L) shape; got {t.shape} and {s.shape}")
    odd = np.unique(t[~np.isnan(t) & (t != 0) & (t != 1)])
    if odd.size:
        raise ValueError(f"y_true: values must be 0, 1 or NaN (masked); found {odd[:5].tolist()}")
    bad = ~np.isnan(t) & ~np.isfinite(s)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"y_score: {bad.sum()} non-finite score(s) at known labels, first at row {row}, "
                         f"label {col}")
    return t, s


def _index(labels: Sequence[str] | None, n: int) -> pd.Index:
    """The label index of per-label results (``0..L-1`` when ``labels`` is None)."""
    if labels is None:
        return pd.RangeIndex(n)
    if len(labels) != n:
        raise ValueError(f"labels: {len(labels)} names for {n} label columns")
    return pd.Index(list(labels))


def _plans(t: np.ndarray, s: np.ndarray) -> list[_Plan]:
    """Per label: the known rows sorted by score, whether each is positive, tie-group starts."""
    plans = []
    for j in range(t.shape[1]):
        rows = np.flatnonzero(~np.isnan(t[:, j]))
        rows = rows[np.argsort(s[rows, j], kind="stable")]
        sorted_scores = s[rows, j]
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        plans.append((rows, t[rows, j] == 1, starts))
    return plans


def _auc(plans: list[_Plan], w: np.ndarray) -> np.ndarray:
    """ROC-AUC of every label under each row of image weights ``w`` (B, N) -> (B, L).

    AUC = sum over positive-negative pairs of w_p * w_n * ([s_p > s_n] + [s_p == s_n] / 2),
    divided by (total positive weight) * (total negative weight); NaN when either is 0.
    """
    out = np.full((w.shape[0], len(plans)), np.nan)
    for j, (rows, pos, starts) in enumerate(plans):
        if rows.size == 0:
            continue
        wj = w[:, rows]
        w_pos = np.add.reduceat(wj * pos, starts, axis=1)  # per tie group, (B, T)
        w_neg = np.add.reduceat(wj * ~pos, starts, axis=1)
        below = np.cumsum(w_neg, axis=1) - w_neg  # negative weight strictly below each group
        num = (w_pos * (below + 0.5 * w_neg)).sum(axis=1)
        den = w_pos.sum(axis=1) * w_neg.sum(axis=1)
        ok = den > 0
        out[ok, j] = num[ok] / den[ok]
    return out


def _macro(per_label: np.ndarray) -> np.ndarray:
    """Row means over non-NaN entries; NaN for all-NaN rows (without a warning)."""
    n = (~np.isnan(per_label)).sum(axis=1)
    total = np.nansum(per_label, axis=1)
    return np.divide(total, n, out=np.full(len(n), np.nan), where=n > 0)


def per_label_auc(y_true: Any, y_score: Any, labels: Sequence[str] | None = None) -> pd.Series:
    """ROC-AUC per label over its known entries; NaN for a label with a single known class.

    Args:
        y_true: (N, L) 1/0/NaN.
        y_score: (N, L) scores (higher = more likely positive).
        labels: names for the result index; default ``0..L-1``.
    """
    t, s = _check(y_true, y_score)
    auc = _auc(_plans(t, s), np.ones((1, len(t))))[0]
    return pd.Series(auc, index=_index(labels, t.shape[1]), name="auc")


def macro_auc(y_true: Any, y_score: Any) -> float:
    """Mean per-label ROC-AUC over the scorable labels; NaN when no label is scorable."""
    return float(_macro(per_label_auc(y_true, y_score).to_numpy()[None])[0])


def average_precision(y_true: Any, y_score: Any, labels: Sequence[str] | None = None) -> pd.Series:
    """Average precision per label (``sklearn.metrics.average_precision_score``: the sum over
    thresholds of precision times the recall gained, no interpolation) over known entries;
    NaN for a label with a single known class (same skipping as the AUC)."""
    t, s = _check(y_true, y_score)
    ap = np.full(t.shape[1], np.nan)
    for j in range(t.shape[1]):
        known = ~np.isnan(t[:, j])
        y = t[known, j]
        if 0 < y.sum() < y.size:
            ap[j] = average_precision_score(y, s[known, j])
    return pd.Series(ap, index=_index(labels, t.shape[1]), name="ap")


def mean_average_precision(y_true: Any, y_score: Any) -> float:
    """mAP: mean per-label average precision over the scorable labels; NaN if there are none."""
    return float(_macro(average_precision(y_true, y_score).to_numpy()[None])[0])


def threshold_metrics(y_true: Any, y_score: Any, threshold: float = 0.5) -> dict[str, float]:
    """Per-class and overall precision, recall and F1 at a score threshold (ML-GCN, Chen et al.
    2019; Rawlekar et al. 2024).

    A known entry is predicted positive when ``score >= threshold``; masked entries count
    nowhere. With TP_j, FP_j, FN_j the counts of class j:

    * CP_j = TP_j / (TP_j + FP_j), and CP_j = 0 when class j has no predicted positive;
    * CR_j = TP_j / (TP_j + FN_j);
    * CP, CR = means of CP_j, CR_j over the classes with at least one known positive (recall is
      undefined without positives; both means use that same set so CF1 pairs like with like);
    * CF1 = 2 CP CR / (CP + CR);
    * OP = sum TP / sum (TP + FP), OR = sum TP / sum (TP + FN), pooled over all known entries of
      all classes (false positives of a class without positives count in OP);
    * OF1 = 2 OP OR / (OP + OR).

    A precision with no predicted positive is 0; an F1 with P + R = 0 is 0; CP/CR/CF1 are NaN
    when no class has a known positive, OR/OF1 when there is no positive at all. This matches the
    ML-GCN reference code when every class has a positive, except that the reference also adds 1
    to OP's denominator for each class without a predicted positive (a side effect of its
    zero-division guard), which is not done here.

    Returns:
        ``{"CP", "CR", "CF1", "OP", "OR", "OF1"}``.
    """
    t, s = _check(y_true, y_score)
    pred = (s >= threshold) & ~np.isnan(t)
    tp = (pred & (t == 1)).sum(axis=0)
    fp = (pred & (t == 0)).sum(axis=0)
    fn = (~pred & (t == 1)).sum(axis=0)

    def ratio(a: np.ndarray | int, b: np.ndarray | int, empty: float) -> Any:
        return np.divide(a, b, out=np.full(np.shape(a), empty), where=np.asarray(b) > 0)

    def f1(p: float, r: float) -> float:
        return float("nan") if np.isnan(p) or np.isnan(r) else (2 * p * r / (p + r) if p + r > 0 else 0.0)

    scored = tp + fn > 0
    cp = float(ratio(tp, tp + fp, 0.0)[scored].mean()) if scored.any() else float("nan")
    cr = float(ratio(tp, tp + fn, np.nan)[scored].mean()) if scored.any() else float("nan")
    op = float(ratio(tp.sum(), (tp + fp).sum(), 0.0))
    orr = float(ratio(tp.sum(), (tp + fn).sum(), np.nan))
    return {"CP": cp, "CR": cr, "CF1": f1(cp, cr), "OP": op, "OR": orr, "OF1": f1(op, orr)}


def evaluate(y_true: Any, y_score: Any, labels: Sequence[str] | None = None,
             threshold: float = 0.5) -> dict[str, Any]:
    """All point metrics at once.

    Returns:
        ``auc`` (per-label Series), ``macro_auc``, ``ap`` (per-label Series), ``mAP`` and the
        :func:`threshold_metrics` ``CP, CR, CF1, OP, OR, OF1``.
    """
    auc = per_label_auc(y_true, y_score, labels)
    ap = average_precision(y_true, y_score, labels)
    return {
        "auc": auc,
        "macro_auc": float(_macro(auc.to_numpy()[None])[0]),
        "ap": ap,
        "mAP": float(_macro(ap.to_numpy()[None])[0]),
        **threshold_metrics(y_true, y_score, threshold),
    }
