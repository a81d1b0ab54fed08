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
replicates is reported (``replicates_rejected``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

_CHUNK = 4_000_000  # weight-matrix elements per bootstrap block (32 MB of float64)
_MAX_DRAWS = 10  # a bootstrap gives up after drawing this many times n_boot replicates

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


def _sampler(n: int, seed: int, groups: Any) -> tuple[Callable[[int], np.ndarray], int]:
    """A seeded stream of bootstrap image weights and a memory-bounded block size.

    Each replicate draws G units (images, or the groups of ``groups``) with replacement; an
    image's weight is the number of times its unit was drawn. ``draw(b)`` returns the next ``b``
    replicates as (b, N) weights; the stream does not depend on how it is cut into blocks.

    Args:
        n: number of images N.
        seed: seed of the stream.
        groups: optional (N,) group id per image; groups are resampled whole.

    Returns:
        ``(draw, block)``: the draw function and a block size of about ``_CHUNK`` elements.

    Raises:
        ValueError: ``groups`` of the wrong length or with a missing id.
    """
    if groups is None:
        codes, n_units = np.arange(n), n
    else:
        g = pd.Series(np.asarray(groups, dtype=object).ravel())
        if len(g) != n:
            raise ValueError(f"groups: need one group per row ({n}), got {len(g)}")
        if g.isna().any():
            raise ValueError(f"groups: missing group id at row(s) {np.flatnonzero(g.isna())[:10].tolist()}")
        codes, uniques = pd.factorize(g)
        n_units = len(uniques)
    rng = np.random.default_rng(seed)

    def draw(b: int) -> np.ndarray:
        draws = rng.integers(0, n_units, size=(b, n_units)) + n_units * np.arange(b)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n_units).reshape(b, n_units)
        return counts[:, codes].astype(float)

    return draw, max(1, _CHUNK // max(n, n_units))


def _fixed_set_replicates(t: np.ndarray, plans: list[list[_Plan]], n_boot: int, seed: int,
                          groups: Any, labels: Sequence[str] | None = None) -> tuple[np.ndarray, int]:
    """Macro AUCs of the first ``n_boot`` replicates in which every label scorable on the full
    data stays scorable (has positive and negative weight), for one or more models.

    Scorability depends on the labels and the weights only, so it is the same for every model
    and is checked on the first. A rejected replicate is replaced by the next one of the same
    seeded stream; blocks are sized from the acceptance rate so far (sizes never change results).

    Args:
        t: (N, L) 1/0/NaN labels.
        plans: per model, the :func:`_plans` of its (N, L) scores against ``t``.
        n_boot: replicates to keep.
        seed: seed of the resampling.
        groups: optional (N,) group id per image.
        labels: names of the L labels, for the error message (default: column numbers).

    Returns:
        ``(macro, rejected)``: (M, n_boot) macro AUCs, one row per model, and how many replicates
        were rejected before the ``n_boot``-th kept one.

    Raises:
        ValueError: ``_MAX_DRAWS * n_boot`` replicates drawn without keeping ``n_boot``.
    """
    scorable = ~np.isnan(_auc(plans[0], np.ones((1, len(t))))[0])
    draw, block = _sampler(len(t), seed, groups)
    limit = _MAX_DRAWS * n_boot
    kept: list[list[np.ndarray]] = [[] for _ in plans]
    lost = np.zeros(int(scorable.sum()), dtype=int)  # per scorable label: draws where it failed
    n_kept = drawn = 0
    while n_kept < n_boot:
        if drawn >= limit:
            raise _too_rare(t, scorable, lost, drawn, n_kept, n_boot, labels)
        need = n_boot - n_kept
        rate = max(n_kept / drawn if drawn else 1.0, 1 / _MAX_DRAWS)  # acceptance so far
        spare = int(1.1 * need * (1 / rate - 1)) + 1 if drawn else 0  # expected rejections
        w = draw(min(block, limit - drawn, need + spare))
        first = _auc(plans[0], w)
        bad = np.isnan(first[:, scorable])
        ok = np.flatnonzero(~bad.any(axis=1))[:need]
        used = ok[-1] + 1 if ok.size == need else len(w)  # replicates up to the n_boot-th kept one
        lost += bad[:used].sum(axis=0)
        drawn, n_kept = drawn + used, n_kept + ok.size
        kept[0].append(_macro(first[ok]))
        w_ok = w if ok.size == len(w) else w[ok]
        for m, model in enumerate(plans[1:], 1):
            kept[m].append(_macro(_auc(model, w_ok)))
    return np.array([np.concatenate(k) for k in kept]), int(drawn - n_boot)


def _too_rare(t: np.ndarray, scorable: np.ndarray, lost: np.ndarray, drawn: int, n_kept: int,
              n_boot: int, labels: Sequence[str] | None = None) -> ValueError:
    """The error of a bootstrap that hit its draw limit, naming the labels that caused it."""
    cols = np.flatnonzero(scorable)
    names = [repr(labels[c]) if labels is not None else f"column {c}" for c in range(t.shape[1])]
    detail = ", ".join(f"{names[cols[i]]} ({int((t[:, cols[i]] == 1).sum())} positive, "
                       f"{int((t[:, cols[i]] == 0).sum())} negative; unscorable in {lost[i] / drawn:.0%} "
                       f"of draws)" for i in np.argsort(-lost, kind="stable")[:5] if lost[i])
    return ValueError(f"bootstrap: only {n_kept} of {n_boot} replicates kept every scorable label "
                      f"scorable after {drawn} draws (the limit is {_MAX_DRAWS} x n_boot); labels too "
                      f"rare for this resampling: {detail}. Leave such labels out, or evaluate on "
                      f"more images or patients.")


def _check_boot(n_boot: int, alpha: float) -> None:
    """Validate the bootstrap size and the CI level."""
    if n_boot < 2:
        raise ValueError(f"n_boot: need at least 2 replicates, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: need 0 < alpha < 1, got {alpha}")


def _interval(reps: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval of the finite replicates (NaN, NaN when there are none)."""
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_macro_auc(y_true: Any, y_score: Any, n_boot: int = 1000, seed: int = 0,
                        alpha: float = 0.05, groups: Any = None,
                        labels: Sequence[str] | None = None) -> dict[str, float]:
    """Percentile-bootstrap confidence interval of the macro ROC-AUC over a fixed label set.

    Each replicate resamples images with replacement, or whole groups (e.g. patients) when
    ``groups`` is given. The estimand is the macro AUC over the labels scorable on the full data
    (both classes among their known entries), and every replicate averages over exactly that
    set: a replicate in which one of these labels has no positive or no negative is rejected
    and replaced by the next draw of the same seeded stream until ``n_boot`` are kept, i.e. the
    bootstrap conditional on every label keeping both classes (conditional resampling, Efron &
    Tibshirani 1993, *An Introduction to the Bootstrap*). Averaging such a replicate over fewer
    labels instead would mix estimands (a rare label's replicates would fall back to the others'
    mean). With no rejection the result is the plain percentile bootstrap.

    Args:
        y_true: (N, L) 1/0/NaN.
        y_score: (N, L) scores.
        n_boot: number of replicates kept.
        seed: seed of the resampling (same seed, same result, rejections included).
        alpha: the interval covers 1 - alpha.
        groups: optional (N,) group id per row; groups are resampled whole.
        labels: optional names of the L labels, used in error messages.

    Returns:
        ``estimate`` (macro AUC of the data), ``low``/``high`` (the alpha/2 and 1 - alpha/2
        quantiles of the kept replicates), ``se`` (their standard deviation) and
        ``replicates_rejected`` (int: replicates drawn and rejected). All NaN but the count when
        no label is scorable.

    Raises:
        ValueError: bad shapes, labels or scores (see :func:`per_label_auc`), ``n_boot < 2``,
            ``alpha`` outside (0, 1), bad ``groups``, or ``_MAX_DRAWS * n_boot`` draws without
            ``n_boot`` kept (the message names the labels too rare for the resampling).
    """
    _check_boot(n_boot, alpha)
    t, s = _check(y_true, y_score)
    plans = _plans(t, s)
    names = None if labels is None else list(_index(labels, t.shape[1]))
    reps, rejected = _fixed_set_replicates(t, [plans], n_boot, seed, groups, names)
    low, high = _interval(reps[0], alpha)
    finite = reps[0][~np.isnan(reps[0])]
    return {
        "estimate": float(_macro(_auc(plans, np.ones((1, len(t)))))[0]),
        "low": low,
        "high": high,
        "se": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        "replicates_rejected": rejected,
    }


def paired_bootstrap_diff(y_true: Any, score_a: Any, score_b: Any, n_boot: int = 1000, seed: int = 0,
                          alpha: float = 0.05, groups: Any = None,
                          labels: Sequence[str] | None = None) -> dict[str, float]:
    """Paired bootstrap of the macro ROC-AUC difference over a fixed label set, b minus a.

    Both models are scored on the same resampled images (or groups) in every replicate, so the
    shared sampling noise cancels. The estimand is the difference of the macro AUCs over the
    labels scorable on the full data; as in :func:`bootstrap_macro_auc`, a replicate in which one
    of them has no positive or no negative (the same for both models: it depends on the labels
    only) is rejected and replaced by the next draw until ``n_boot`` are kept (the bootstrap
    conditional on every label keeping both classes, Efron & Tibshirani 1993). The interval
    covers the sampling of the evaluated images only: the two score sets are fixed, so the
    variability of training the models (another seed, another run) is not in it. The p-value
    is two-sided, from the percentile bootstrap:
    ``p = min(1, 2 * min(1 + #(d* <= 0), 1 + #(d* >= 0)) / (B + 1))`` over the B kept
    replicate differences ``d*``; it is below alpha about when the percentile interval excludes
    0, and the +1 terms keep it above 0 for a finite B.

    Args:
        y_true: (N, L) 1/0/NaN.
        score_a: (N, L) scores of model a.
        score_b: (N, L) scores of model b.
        n_boot: number of replicates kept.
        seed: seed of the resampling (same seed, same result, rejections included).
        alpha: the interval covers 1 - alpha.
        groups: optional (N,) group id per row; groups are resampled whole.
        labels: optional names of the L labels, used in error messages.

    Returns:
        ``diff`` (on the data), ``low``/``high`` (percentile interval), ``p_value`` and
        ``replicates_rejected`` (int: replicates drawn and rejected).

    Raises:
        ValueError: as :func:`bootstrap_macro_auc`.
    """
    _check_boot(n_boot, alpha)
    t, a = _check(y_true, score_a)
    _, b = _check(y_true, score_b)
    plans_a, plans_b = _plans(t, a), _plans(t, b)
    names = None if labels is None else list(_index(labels, t.shape[1]))
    (rep_a, rep_b), rejected = _fixed_set_replicates(t, [plans_a, plans_b], n_boot, seed, groups, names)
    reps = rep_b - rep_a
    ones = np.ones((1, len(t)))
    diff = float((_macro(_auc(plans_b, ones)) - _macro(_auc(plans_a, ones)))[0])
    low, high = _interval(reps, alpha)
    finite = reps[~np.isnan(reps)]
    if finite.size == 0:
        p_value = float("nan")
    else:
        tail = min((finite <= 0).sum(), (finite >= 0).sum()) + 1
        p_value = float(min(1.0, 2 * tail / (finite.size + 1)))
    return {"diff": diff, "low": low, "high": high, "p_value": p_value, "replicates_rejected": rejected}


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
