"""AUC within subgroups (sex, age band, view position, ...) and the gaps between them, with
patient-bootstrap confidence intervals.

Per group g and label j the AUC is the ROC-AUC of the images of g alone (Mann-Whitney with half
credit for ties, as :func:`cxrkit.evaluation.metrics.per_label_auc`). The macro AUC of a group
averages a label set K fixed for the whole attribute: the labels with at least ``min_cases``
positive and ``min_cases`` negative cases (distinct patients when patients are given) in *every*
group, so that two groups' macro AUCs average the same labels and their gap compares like with
like. The gap of group g is AUC(g) - AUC(reference), per label of K and for the macro AUC.

Confidence intervals: percentile intervals of the patient bootstrap of all evaluated images
(patients resampled whole, :func:`cxrkit.evaluation.bootstrap._sampler`; a patient whose studies
fall in several groups, e.g. an AP and a PA film, moves all of them together, and a gap is paired
within each replicate). As in :func:`cxrkit.evaluation.bootstrap.bootstrap_macro_auc`, the
estimand is fixed: a replicate in which a label of K loses its positives or negatives in some
group is rejected and redrawn (the bootstrap conditional on every group keeping both classes of
every label of K; Efron & Tibshirani 1993) and the number rejected is reported. Labels outside K
get their point AUC (when they have both classes in the group) but no interval. The gap's p-value
is the two-sided percentile-bootstrap one of :func:`cxrkit.evaluation.bootstrap.paired_bootstrap_diff`.
Subgroup gaps are associations: a gap says where the model is worse, not why (on the phantom,
``notebooks/08_trust`` separates the AP view's confounding from the model's own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.evaluation.bootstrap import _MAX_DRAWS, _check_boot, _interval, _sampler
from cxrkit.evaluation.metrics import _auc, _check, _index, _plans

MACRO = "macro"  #: the label name of the macro AUC rows


def age_bands(ages: Any, edges: Sequence[float]) -> pd.Series:
    """Ages cut into ordered bands at ``edges`` (each band includes its lower edge): ``[40, 60]``
    gives ``<40``, ``40-<60`` and ``>=60``; a missing age stays missing.

    Raises:
        ValueError: ``edges`` empty or not strictly increasing.
    """
    edges = [float(e) for e in edges]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"age band edges must be a non-empty increasing list, got {edges}")
    names = [f"<{edges[0]:g}"] + [f"{a:g}-<{b:g}" for a, b in zip(edges, edges[1:])] + [f">={edges[-1]:g}"]
    cut = pd.cut(pd.Series(np.asarray(ages, dtype=float)), [-np.inf, *edges, np.inf], right=False, labels=names)
    return cut


def _codes(groups: Any) -> tuple[np.ndarray, list[str]]:
    """Group code per row (-1: no group) and the group names in order (a categorical's order, else
    sorted)."""
    g = groups if isinstance(groups, pd.Series) else pd.Series(np.asarray(groups, dtype=object))
    if isinstance(g.dtype, pd.CategoricalDtype):
        names = [str(c) for c in g.cat.categories if (g == c).any()]
    else:
        names = sorted({str(v) for v in g.dropna()})
    lookup = {n: i for i, n in enumerate(names)}
    codes = np.array([-1 if pd.isna(v) else lookup[str(v)] for v in g], dtype=int)
    return codes, names


def _cases(t: np.ndarray, rows: np.ndarray, patients: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the positive and negative cases among ``rows``: images, or distinct patients."""
    pos, neg = np.zeros(t.shape[1], dtype=int), np.zeros(t.shape[1], dtype=int)
    for j in range(t.shape[1]):
        y = t[rows, j]
        if patients is None:
            pos[j], neg[j] = int((y == 1).sum()), int((y == 0).sum())
        else:
            pos[j], neg[j] = len(set(patients[rows][y == 1])), len(set(patients[rows][y == 0]))
    return pos, neg


def _replicates(t: np.ndarray, s: np.ndarray, rows: list[np.ndarray], keep: np.ndarray, n_boot: int,
                seed: int, patients: Any) -> tuple[np.ndarray, int]:
    """(n_boot, G, L) AUCs of the kept replicates (every label of ``keep`` scorable in every group),
    and the number rejected."""
    plans = [_plans(t[r], s[r]) for r in rows]
    draw, block = _sampler(len(t), seed, patients)
    kept: list[np.ndarray] = []
    n_kept = drawn = 0
    while n_kept < n_boot:
        if drawn >= _MAX_DRAWS * n_boot:
            raise ValueError(f"subgroup bootstrap: only {n_kept} of {n_boot} replicates kept every label of the macro "
                             f"set scorable in every group after {drawn} draws; raise min_cases")
        w = draw(min(block, 2 * (n_boot - n_kept) + 8))
        auc = np.stack([_auc(p, w[:, r]) for p, r in zip(plans, rows, strict=True)], axis=1)  # (b, G, L)
        ok = ~np.isnan(auc[:, :, keep]).any(axis=(1, 2))
        take = np.flatnonzero(ok)[: n_boot - n_kept]
        used = take[-1] + 1 if take.size == n_boot - n_kept else len(w)
        kept.append(auc[take])
        n_kept, drawn = n_kept + take.size, drawn + used
    return np.concatenate(kept), drawn - n_boot


def subgroup_auc(y_true: Any, y_score: Any, groups: Any, labels: Sequence[str] | None = None, patients: Any = None,
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, min_cases: int = 5) -> dict[str, Any]:
    """Per-label and macro AUC within each group, and each group's gap to the first (reference)
    group, with patient-bootstrap intervals (see the module docstring).

    Args:
        y_true: (N, L) 1/0/NaN.
        y_score: (N, L) scores.
        groups: (N,) group name per image (NaN: in no group, left out); a categorical keeps its
            order, other names are sorted; the first group is the reference.
        labels: names of the L labels.
        patients: optional (N,) patient id per image (resampled whole; cases counted as patients).
        n_boot: bootstrap replicates kept.
        seed: seed of the resampling.
        alpha: the intervals cover 1 - alpha.
        min_cases: a label is in the macro set K with at least this many positive and negative cases
            in every group.

    Raises:
        ValueError: no image in a group, bad shapes or bootstrap arguments, or ``_MAX_DRAWS * n_boot``
            replicates drawn without ``n_boot`` kept.

    Returns:
        ``auc``: index (``group``, ``label``), the labels then :data:`MACRO`; columns ``images``,
        ``positives``, ``negatives`` (images), ``observed`` (prevalence), ``mean predicted``, ``AUC``,
        ``low``, ``high``, ``in macro``. ``gap``: index (``comparison`` "g - reference", ``label``), the
        labels of K then :data:`MACRO`; columns ``gap``, ``low``, ``high``, ``p_value``.
        ``replicates_rejected`` (int) and ``reference`` (the reference group's name).
    """
    _check_boot(n_boot, alpha)
    t, s = _check(y_true, y_score)
    names = list(_index(labels, t.shape[1]))
    codes, group_names = _codes(groups)
    if len(codes) != len(t):
        raise ValueError(f"groups: need one group per row ({len(t)}), got {len(codes)}")
    pid = None if patients is None else np.asarray(patients, dtype=object).ravel()
    rows = [np.flatnonzero(codes == g) for g in range(len(group_names))]
    cases = [_cases(t, r, pid) for r in rows]
    if not rows:
        raise ValueError("groups: no image is in a group")
    keep = np.array([all(p[j] >= min_cases and n[j] >= min_cases for p, n in cases) for j in range(len(names))],
                    dtype=bool)
    ones = np.array([_auc(_plans(t[r], s[r]), np.ones((1, len(r))))[0] for r in rows])
    if keep.any():
        reps, rejected = _replicates(t, s, rows, keep, n_boot, seed, patients)
    else:  # no label with enough cases in every group: point estimates only
        reps, rejected = np.full((1, len(rows), len(names)), np.nan), 0
    auc_rows: dict[tuple[str, str], dict[str, Any]] = {}
    for g, (name, r) in enumerate(zip(group_names, rows, strict=True)):
        auc_rows |= {(name, lab): row for lab, row in _group_rows(t[r], s[r], ones[g], reps[:, g], keep, names,
                                                                  alpha).items()}
    gap_rows = {(f"{group_names[g]} - {group_names[0]}", lab): row for g in range(1, len(group_names))
                for lab, row in _gaps(ones[[0, g]], reps[:, [0, g]], keep, names, alpha).items()}
    auc = pd.DataFrame.from_dict(auc_rows, orient="index").astype({"positives": "Int64", "negatives": "Int64"})
    auc.index = auc.index.set_names(["group", "label"])
    gap = pd.DataFrame.from_dict(gap_rows, orient="index", columns=["gap", "low", "high", "p_value"])
    if len(gap):
        gap.index = gap.index.set_names(["comparison", "label"])
    return {"auc": auc, "gap": gap, "replicates_rejected": int(rejected),
            "reference": group_names[0] if group_names else None}


def _group_rows(t: np.ndarray, s: np.ndarray, point: np.ndarray, reps: np.ndarray, keep: np.ndarray,
                names: list[str], alpha: float) -> dict[str, dict[str, Any]]:
    """The rows of one group (its images' labels and scores, point AUCs (L,), replicates (B, L)):
    one per label, then the macro over ``keep``."""
    out = {}
    for j, lab in enumerate(names):
        y = t[:, j]
        known = ~np.isnan(y)
        low, high = _interval(reps[:, j], alpha) if keep[j] else (np.nan, np.nan)
        out[lab] = {"images": len(t), "positives": int((y == 1).sum()), "negatives": int((y == 0).sum()),
                    "observed": float(y[known].mean()) if known.any() else np.nan,
                    "mean predicted": float(s[known, j].mean()) if known.any() else np.nan,
                    "AUC": point[j], "low": low, "high": high, "in macro": bool(keep[j])}
    low, high = _interval(reps[:, keep].mean(axis=1), alpha) if keep.any() else (np.nan, np.nan)
    out[MACRO] = {"images": len(t), "AUC": float(point[keep].mean()) if keep.any() else np.nan, "low": low,
                  "high": high, "in macro": bool(keep.any())}
    return out


def _gaps(point: np.ndarray, reps: np.ndarray, keep: np.ndarray, names: list[str],
          alpha: float) -> dict[str, dict[str, float]]:
    """Group minus reference (point (2, L), replicates (B, 2, L), reference first), per label of
    ``keep`` and for their macro."""
    out = {}
    for j in np.flatnonzero(keep):
        out[names[j]] = {"gap": float(point[1, j] - point[0, j]), **_gap_interval(reps[:, 1, j] - reps[:, 0, j], alpha)}
    if keep.any():
        macro = reps[:, :, keep].mean(axis=2)
        out[MACRO] = {"gap": float(point[1, keep].mean() - point[0, keep].mean()),
                      **_gap_interval(macro[:, 1] - macro[:, 0], alpha)}
    return out


def _gap_interval(reps: np.ndarray, alpha: float) -> dict[str, float]:
    """Percentile interval and two-sided bootstrap p-value of replicate differences
    (p = min(1, 2 min(1 + #(d* <= 0), 1 + #(d* >= 0)) / (B + 1)), as paired_bootstrap_diff)."""
    low, high = _interval(reps, alpha)
    finite = reps[~np.isnan(reps)]
    p = float(min(1.0, 2 * (min((finite <= 0).sum(), (finite >= 0).sum()) + 1) / (finite.size + 1))) \
        if finite.size else float("nan")
    return {"low": low, "high": high, "p_value": p}


def group_shift(y_true: Any, y_score: Any, groups: Any, cls: int = 0, patients: Any = None, strata: Any = None,
                n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """How far one label's score depends on the group among the images of one class: for each group
    g after the first (reference) r, the AUC of the score for telling g from r among the images whose
    label is ``cls``, P(s_g > s_r) + P(s_g = s_r) / 2 over (g, r) pairs (Mann-Whitney, as
    :func:`cxrkit.evaluation.metrics.per_label_auc`), with a patient-bootstrap percentile interval.

    0.5 when the score does not depend on the group given the label, the separation criterion
    (Hardt, Price & Srebro 2016, *Equality of Opportunity in Supervised Learning*, NeurIPS) read
    without a threshold: among negatives (``cls`` 0) above 0.5 means more false positives in g at
    any threshold, among positives more true positives. With ``strata`` only pairs within the same
    stratum count (the pairs of a stratified Wilcoxon comparison, van Elteren 1960, *On the
    combination of independent two-sample tests of Wilcoxon*, weighted by pairs): e.g. strata of
    equal evidence (the phantom oracle's posterior) leave out what the case mix of the groups
    explains. Replicates without a pair are left out of the interval.

    Args:
        y_true: (N,) 1/0/NaN labels of one label.
        y_score: (N,) its scores.
        groups: (N,) group names (NaN: left out); order as :func:`subgroup_auc`.
        cls: the class whose images are compared (0: negatives, 1: positives).
        patients: optional (N,) patient ids, resampled whole.
        strata: optional (N,) stratum per image.
        n_boot, seed, alpha: the bootstrap's.

    Returns:
        Index ``comparison`` ("g vs r"); columns ``images`` and ``mean score`` (of g), ``reference
        images`` and ``reference mean score`` (of r), ``pairs`` (compared pairs), ``AUC``, ``low``,
        ``high`` (NaN without a pair).
    """
    _check_boot(n_boot, alpha)
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.asarray(y_score, dtype=float).ravel()
    codes, names = _codes(groups)
    strata_codes = np.zeros(len(y), dtype=int) if strata is None else pd.factorize(pd.Series(strata))[0]
    rows = {}
    for g in range(1, len(names)):
        keep = np.flatnonzero((y == cls) & np.isin(codes, (0, g)))
        target = (codes[keep] == g).astype(float)
        pid = None if patients is None else np.asarray(patients, dtype=object).ravel()[keep]
        point, reps = _stratified_auc(target, s[keep], strata_codes[keep], pid, n_boot, seed)
        low, high = _interval(reps, alpha)
        rows[f"{names[g]} vs {names[0]}"] = {
            "images": int(target.sum()), "reference images": int((target == 0).sum()),
            "mean score": float(s[keep][target == 1].mean()) if target.any() else np.nan,
            "reference mean score": float(s[keep][target == 0].mean()) if (target == 0).any() else np.nan,
            "pairs": int(point[1]), "AUC": point[0], "low": low, "high": high}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "comparison"
    return out


def _stratified_auc(target: np.ndarray, s: np.ndarray, strata: np.ndarray, patients: Any, n_boot: int,
                    seed: int) -> tuple[tuple[float, float], np.ndarray]:
    """The AUC of ``s`` for ``target`` over within-stratum pairs: sum_k AUC_k P_k / sum_k P_k with
    P_k the (weighted) pairs of stratum k; ``((AUC, pairs), (n_boot,) replicates)``."""
    members = [np.flatnonzero(strata == k) for k in np.unique(strata)]
    plans = [_plans(target[m][:, None], s[m][:, None]) for m in members]

    def pooled(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        num = np.zeros(len(w))
        den = np.zeros(len(w))
        for m, plan in zip(members, plans, strict=True):
            wm = w[:, m]
            pairs = (wm * target[m]).sum(axis=1) * (wm * (1 - target[m])).sum(axis=1)
            num += np.nan_to_num(_auc(plan, wm)[:, 0]) * pairs
            den += pairs
        return np.divide(num, den, out=np.full(len(w), np.nan), where=den > 0), den

    auc, pairs = pooled(np.ones((1, len(target))))
    if len(target) == 0:
        return (float("nan"), 0.0), np.full(1, np.nan)
    draw, block = _sampler(len(target), seed, patients)
    reps = []
    while sum(len(r) for r in reps) < n_boot:
        reps.append(pooled(draw(min(block, n_boot - sum(len(r) for r in reps))))[0])
    return (float(auc[0]), float(pairs[0])), np.concatenate(reps)
