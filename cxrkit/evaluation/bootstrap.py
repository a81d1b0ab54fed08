"""Percentile bootstrap confidence intervals of the macro AUC, resampling images or patients,
and the paired bootstrap of the difference of two models on the same resamples.

A replicate that draws image ``i`` ``c_i`` times is the data set with weights ``c_i``, so the
AUC core of :mod:`cxrkit.evaluation.metrics` (scores sorted once per label) gives every
replicate in a few array passes. The estimand is fixed: a replicate in which a label scorable on
the full data loses all its positives or negatives is rejected and redrawn (at most
:data:`_MAX_DRAWS` times ``n_boot`` draws), and their number is reported (``replicates_rejected``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.evaluation.metrics import (  # the shared AUC core
    _auc,
    _check,
    _index,
    _macro,
    _Plan,
    _plans,
)

_CHUNK = 4_000_000  # weight-matrix elements per bootstrap block (32 MB of float64)
_MAX_DRAWS = 10  # a bootstrap gives up after drawing this many times n_boot replicates


class LabelsTooRare(ValueError):
    """A bootstrap drew ``_MAX_DRAWS * n_boot`` replicates without keeping ``n_boot`` in which every
    label scorable on the full data stays scorable; the message names the labels."""


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
              n_boot: int, labels: Sequence[str] | None = None) -> LabelsTooRare:
    """The error of a bootstrap that hit its draw limit, naming the labels that caused it."""
    cols = np.flatnonzero(scorable)
    names = [repr(labels[c]) if labels is not None else f"column {c}" for c in range(t.shape[1])]
    detail = ", ".join(f"{names[cols[i]]} ({int((t[:, cols[i]] == 1).sum())} positive, "
                       f"{int((t[:, cols[i]] == 0).sum())} negative; unscorable in {lost[i] / drawn:.0%} "
                       f"of draws)" for i in np.argsort(-lost, kind="stable")[:5] if lost[i])
    return LabelsTooRare(f"bootstrap: only {n_kept} of {n_boot} replicates kept every scorable label "
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
            ``alpha`` outside (0, 1), bad ``groups``; :class:`LabelsTooRare` (a ValueError):
            ``_MAX_DRAWS * n_boot`` draws without ``n_boot`` kept (the message names the labels
            too rare for the resampling).
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
                          alpha: float = 0.05, groups: Any = None, labels: Sequence[str] | None = None,
                          return_replicates: bool = False) -> dict[str, Any]:
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
        return_replicates: also return the kept replicate differences (e.g. to combine two
            independent samples' bootstraps replicate by replicate).

    Returns:
        ``diff`` (on the data), ``low``/``high`` (percentile interval), ``p_value`` and
        ``replicates_rejected`` (int: replicates drawn and rejected); with ``return_replicates``
        also ``replicates``, the (n_boot,) kept replicate differences b - a in draw order.

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
    out: dict[str, Any] = {"diff": diff, "low": low, "high": high, "p_value": p_value,
                           "replicates_rejected": rejected}
    if return_replicates:
        out["replicates"] = reps
    return out


def seed_bootstrap_diff(y_true: Any, scores_a: Sequence[Any], scores_b: Sequence[Any], n_boot: int = 1000,
                        seed: int = 0, alpha: float = 0.05, groups: Any = None,
                        labels: Sequence[str] | None = None) -> dict[str, float]:
    """Bootstrap of the macro ROC-AUC difference, b minus a, over training seeds and test patients.

    Model a and b were each trained once per training seed (S seeds, the same seeds for both:
    seed s of a and of b share their initialisation and data order, so they are paired). The
    estimand is the mean over seeds of the macro AUC difference of the two models trained with
    that seed. Each replicate resamples the test images (or the groups of ``groups``) as
    :func:`paired_bootstrap_diff` does and, independently, S seeds with replacement (the
    two-stage, hierarchical bootstrap of Davison & Hinkley 1997, sec. 3.8: the top level, the
    training seed, is resampled, then the units under it), and averages the seeds' differences
    on the resampled images. So the interval covers the variability of training (another seed)
    as well as the sampling of the test images; with one seed it is the interval of
    :func:`paired_bootstrap_diff` (same resamples for the same ``seed``). With few seeds the
    seed level is coarse (S = 3 seeds give 10 distinct seed multisets): read the interval as
    indicative, and the seeds' own differences (``per_seed``) beside it.

    Args:
        y_true: (N, L) 1/0/NaN.
        scores_a: S arrays (N, L): model a's scores, one per training seed.
        scores_b: S arrays (N, L): model b's scores, same seeds in the same order.
        n_boot: number of replicates kept.
        seed: seed of the resampling (patients and seeds).
        alpha: the interval covers 1 - alpha.
        groups: optional (N,) group id per row; groups are resampled whole.
        labels: optional names of the L labels, used in error messages.

    Returns:
        ``diff`` (mean over seeds of the difference on the data), ``low``/``high`` (percentile
        interval), ``per_seed`` (list of the S differences), ``seeds`` (S) and
        ``replicates_rejected``.

    Raises:
        ValueError: as :func:`paired_bootstrap_diff`; no seed, or a different number of seeds
            for a and b.
    """
    _check_boot(n_boot, alpha)
    if not len(scores_a) or len(scores_a) != len(scores_b):
        raise ValueError(f"seed bootstrap: need the same number (>= 1) of seeds for both models, got "
                         f"{len(scores_a)} and {len(scores_b)}")
    n_seeds = len(scores_a)
    t, _ = _check(y_true, scores_a[0])
    plans = [_plans(t, _check(y_true, s)[1]) for s in [*scores_a, *scores_b]]
    names = None if labels is None else list(_index(labels, t.shape[1]))
    reps, rejected = _fixed_set_replicates(t, plans, n_boot, seed, groups, names)
    per_rep = reps[n_seeds:] - reps[:n_seeds]  # (S, n_boot): each seed's difference per replicate
    ones = np.ones((1, len(t)))
    per_seed = [float(_macro(_auc(plans[n_seeds + s], ones))[0] - _macro(_auc(plans[s], ones))[0])
                for s in range(n_seeds)]
    if n_seeds > 1:
        pick = np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_boot, n_seeds))
        per_rep = per_rep[pick, np.arange(n_boot)[:, None]].mean(axis=1)[None]
    low, high = _interval(per_rep[0], alpha)
    return {"diff": float(np.mean(per_seed)), "low": low, "high": high, "per_seed": per_seed,
            "seeds": n_seeds, "replicates_rejected": rejected}
