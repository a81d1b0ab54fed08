"""Calibration of predicted probabilities: reliability bins, the expected calibration error (ECE)
with equal-mass bins, the Brier score, and post-hoc recalibration per label (temperature and Platt
scaling) fitted by maximum likelihood.

Inputs follow :mod:`cxrkit.evaluation.metrics`: ``y_true`` (N, L) with 1, 0 or NaN (masked) and
``y_score`` (N, L) probabilities; every quantity of a label uses its known entries only.

* **Bins.** ``n_bins`` equal-mass (quantile) bins, formed exactly as
  ``sklearn.calibration.calibration_curve(strategy="quantile")`` forms them: the edges are the
  ``k / n_bins`` percentiles of the scores (linear interpolation) and a score goes to the first
  bin whose upper edge is >= it (``np.searchsorted(edges[1:-1], p)``). Tied scores always share a
  bin, so bins can hold unequal counts or be empty (empty bins are dropped).
* **ECE** = sum over bins b of (n_b / N) |o_b - p_b|, with o_b the observed frequency of positives
  and p_b the mean predicted probability in bin b (Naeini, Cooper & Hauskrecht 2015, *Obtaining
  well calibrated probabilities using Bayesian binning*, AAAI; equal-mass bins as in Nixon et al.
  2019, *Measuring Calibration in Deep Learning*, CVPR workshops, and Roelofs et al. 2022,
  *Mitigating Bias in Calibration Error Estimation*, AISTATS). It estimates E|E[Y | p] - p| and
  is biased upward by sampling noise: a perfectly calibrated score has an ECE > 0 on a finite
  sample (the phantom's exact oracle shows how much).
* **Brier score** = mean (p - y)^2 (Brier 1950; ``sklearn.metrics.brier_score_loss``).
* **Temperature scaling** (Guo et al. 2017, *On Calibration of Modern Neural Networks*, ICML), per
  label: p' = sigmoid(z / T) with z = logit(p), one T > 0 per label.
* **Platt scaling** (Platt 1999, *Probabilistic outputs for support vector machines*), per label on
  the logit: p' = sigmoid(a z + b).

Both maps are fitted by minimising the mean negative log-likelihood (binary cross-entropy) of the
known entries with ``scipy.optimize.minimize`` (L-BFGS-B, analytic gradient). The likelihood is
convex in 1/T and in (a, b); on separable data it has no finite minimum, and the fit stops where
the likelihood no longer improves measurably, within the bounds :data:`TEMPERATURE_BOUNDS` /
:data:`PLATT_BOUNDS`. A label without both classes among its
known entries is not fitted: its map is the identity (T = 1, a = 1, b = 0) and ``fitted`` False.
Probabilities are clipped to [:data:`EPS`, 1 - :data:`EPS`] before the logit (prediction files
hold 6 decimals, so 0 and 1 occur).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, logit
from scipy.stats import binomtest
from sklearn.metrics import brier_score_loss

from cxrkit.evaluation.metrics import _check, _index

EPS = 1e-6  #: probabilities are clipped to [EPS, 1 - EPS] before taking the logit
TEMPERATURE_BOUNDS = (1e-2, 1e2)  #: the fitted temperature stays within these
PLATT_BOUNDS = (-1e2, 1e2)  #: Platt's a and b stay within these
POOLED, MACRO = "pooled (all entries)", "macro (mean over labels)"  #: summary rows besides the labels
METHODS = ("none", "temperature", "platt")  #: the recalibrations :func:`apply_calibration` knows


def _known(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """The known entries of one label as float arrays (NaN labels left out)."""
    y, p = np.asarray(y, dtype=float).ravel(), np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} and {p.size}")
    keep = ~np.isnan(y)
    return y[keep], p[keep]


def reliability(y_true: Any, y_prob: Any, n_bins: int = 10) -> pd.DataFrame:
    """The equal-mass reliability bins of one label (or of pooled entries); NaN labels are skipped.

    Returns:
        One row per non-empty bin: ``entries``, ``mean predicted`` (p_b), ``observed`` (o_b), and
        ``observed low`` / ``observed high``, the Wilson score 95% interval of o_b
        (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``; Wilson 1927), which a
        calibrated score's point (p_b, p_b) falls within about 95% of the time.

    Raises:
        ValueError: ``n_bins`` < 1, or scores outside [0, 1].
    """
    if n_bins < 1:
        raise ValueError(f"n_bins: need at least 1 bin, got {n_bins}")
    y, p = _known(y_true, y_prob)
    cols = ["entries", "mean predicted", "observed", "observed low", "observed high"]
    if p.size == 0:
        return pd.DataFrame(columns=cols)
    if p.min() < 0 or p.max() > 1:
        raise ValueError("scores must be probabilities in [0, 1]")
    edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    ids = np.searchsorted(edges[1:-1], p)  # sklearn.calibration.calibration_curve's binning
    rows = []
    for b in np.unique(ids):
        yb, pb = y[ids == b], p[ids == b]
        ci = binomtest(int(yb.sum()), yb.size).proportion_ci(method="wilson")
        rows.append([yb.size, pb.mean(), yb.mean(), ci.low, ci.high])
    return pd.DataFrame(rows, columns=cols).astype({"entries": int})


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b / N) |o_b - p_b| over the equal-mass bins of :func:`reliability`; NaN
    without known entries."""
    bins = reliability(y_true, y_prob, n_bins)
    if bins.empty:
        return float("nan")
    w = bins["entries"] / bins["entries"].sum()
    return float((w * (bins["observed"] - bins["mean predicted"]).abs()).sum())


def brier_score(y_true: Any, y_prob: Any) -> float:
    """Mean squared difference between probability and outcome over the known entries
    (``sklearn.metrics.brier_score_loss``); NaN without known entries."""
    y, p = _known(y_true, y_prob)
    return float(brier_score_loss(y, p, labels=[0, 1])) if y.size else float("nan")


def calibration_table(y_true: Any, y_prob: Any, labels: Sequence[str] | None = None,
                      n_bins: int = 10) -> pd.DataFrame:
    """Per label, their macro mean and all known entries pooled: the calibration of (N, L) scores.

    Returns:
        Index: the labels, then :data:`MACRO` (the mean of the labels' values) and :data:`POOLED`
        (every known (image, label) entry as one sample). Columns ``entries``, ``positives``,
        ``mean predicted``, ``observed`` (prevalence), ``ECE``, ``Brier`` and ``bins`` (the equal-mass
        bin count asked for; ties can leave fewer non-empty bins).
    """
    t, s = _check(y_true, y_prob)
    index = list(_index(labels, t.shape[1]))
    rows = {}
    for j, name in enumerate(index):
        rows[name] = _row(t[:, j], s[:, j], n_bins)
    per_label = pd.DataFrame.from_dict(rows, orient="index")
    macro = per_label.mean(numeric_only=True)
    macro[["entries", "positives"]] = per_label[["entries", "positives"]].sum()
    out = pd.concat([per_label, macro.rename(MACRO).to_frame().T,
                     pd.DataFrame.from_dict({POOLED: _row(t.ravel(), s.ravel(), n_bins)}, orient="index")])
    out["bins"] = n_bins
    return out.astype({"entries": int, "positives": int, "bins": int})


def _row(y: np.ndarray, p: np.ndarray, n_bins: int) -> dict[str, float]:
    """The calibration numbers of one label's (or the pooled) entries."""
    yk, pk = _known(y, p)
    return {"entries": yk.size, "positives": int(yk.sum()),
            "mean predicted": float(pk.mean()) if pk.size else float("nan"),
            "observed": float(yk.mean()) if yk.size else float("nan"),
            "ECE": expected_calibration_error(yk, pk, n_bins), "Brier": brier_score(yk, pk)}


def _nll(theta: np.ndarray, z: np.ndarray, y: np.ndarray, platt: bool) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy of sigmoid(u), u = beta z (temperature, beta = 1/T) or a z + b
    (Platt), and its gradient: log(1 + e^u) - y u, d/du = sigmoid(u) - y."""
    u = theta[0] * z + (theta[1] if platt else 0.0)
    loss = float(np.mean(np.logaddexp(0.0, u) - y * u))
    r = expit(u) - y
    grad = np.array([np.mean(r * z), np.mean(r)]) if platt else np.array([np.mean(r * z)])
    return loss, grad


def _fit(y: np.ndarray, p: np.ndarray, platt: bool) -> np.ndarray | None:
    """The maximum-likelihood parameters (beta, or a and b) of one label, None when it lacks a class."""
    y, p = _known(y, p)
    if y.size == 0 or y.min() == y.max():
        return None
    z = logit(np.clip(p, EPS, 1 - EPS))
    bounds = [PLATT_BOUNDS, PLATT_BOUNDS] if platt else [(1 / TEMPERATURE_BOUNDS[1], 1 / TEMPERATURE_BOUNDS[0])]
    x0 = np.array([1.0, 0.0]) if platt else np.array([1.0])
    res = minimize(_nll, x0, args=(z, y, platt), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 1000})
    return np.asarray(res.x, dtype=float)


def fit_temperature(y_true: Any, y_prob: Any) -> float:
    """The temperature T of one label minimising the mean NLL of sigmoid(logit(p) / T) over its
    known entries (Guo et al. 2017); NaN when the label lacks a class."""
    beta = _fit(np.asarray(y_true, dtype=float), np.asarray(y_prob, dtype=float), platt=False)
    return float("nan") if beta is None else float(1.0 / beta[0])


def fit_platt(y_true: Any, y_prob: Any) -> tuple[float, float]:
    """Platt's (a, b) of one label minimising the mean NLL of sigmoid(a logit(p) + b) over its known
    entries (Platt 1999, on the logit, without target smoothing); NaNs when it lacks a class."""
    ab = _fit(np.asarray(y_true, dtype=float), np.asarray(y_prob, dtype=float), platt=True)
    return (float("nan"), float("nan")) if ab is None else (float(ab[0]), float(ab[1]))


def fit_calibrators(y_true: Any, y_prob: Any, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Temperature and Platt maps of every label, fitted on (N, L) scores (e.g. out-of-fold
    validation predictions).

    Returns:
        Index: the labels. Columns ``temperature``, ``platt a``, ``platt b`` (the identity, 1, 1, 0,
        where not fitted), ``fitted`` (the label has both classes among its known entries),
        ``entries`` and ``positives`` (the known entries the fit used).
    """
    t, s = _check(y_true, y_prob)
    rows = {}
    for j, name in enumerate(_index(labels, t.shape[1])):
        temp = fit_temperature(t[:, j], s[:, j])
        a, b = fit_platt(t[:, j], s[:, j])
        fitted = not np.isnan(temp)
        known = ~np.isnan(t[:, j])
        rows[name] = {"temperature": temp if fitted else 1.0, "platt a": a if fitted else 1.0,
                      "platt b": b if fitted else 0.0, "fitted": fitted, "entries": int(known.sum()),
                      "positives": int(np.nansum(t[:, j]))}
    return pd.DataFrame.from_dict(rows, orient="index")


def apply_calibration(maps: pd.DataFrame, y_prob: Any, labels: Sequence[str], method: str) -> np.ndarray:
    """(N, L) probabilities recalibrated with the maps of :func:`fit_calibrators`, column by column
    by label name: ``temperature`` sigmoid(logit(p) / T), ``platt`` sigmoid(a logit(p) + b), ``none``
    unchanged.

    Raises:
        ValueError: an unknown method, or a label without a map.
    """
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {METHODS}")
    p = np.asarray(y_prob, dtype=float)
    if method == "none":
        return p.copy()
    missing = [lab for lab in labels if lab not in maps.index]
    if missing:
        raise ValueError(f"no calibration map for label(s) {missing}")
    z = logit(np.clip(p, EPS, 1 - EPS))
    m = maps.loc[list(labels)]
    if method == "temperature":
        return expit(z / m["temperature"].to_numpy(dtype=float))
    return expit(z * m["platt a"].to_numpy(dtype=float) + m["platt b"].to_numpy(dtype=float))
