"""Stacking headroom (cxrkit issue 15): how much macro AUC a per-label logistic regression over
*all* labels' logits adds to each variant, an upper-bound-style yardstick for what any label
coupling learned after the backbone could add.

For each label ``j`` a logistic regression of ``y_j`` on the logits of every label is fitted on
the variant's out-of-fold validation predictions (each training-part image once, predicted by
the fold that held it out) and applied to each fold's test logits, the kind of logits it was
fitted on (a single fold's); the stacked probabilities are averaged over the folds as the fold
ensemble averages the probabilities. The stacked and unstacked test ensembles are then compared
by a paired patient bootstrap. (Applying the stacker to the logit of the ensemble's mean
probability instead would feed it logits of another scale: averaging probabilities pulls them
towards 0, and for the sparse_prior variant of the default study the "stacked" ensemble lost
0.11 macro AUC that way.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cxrkit.evaluation.bootstrap import paired_bootstrap_diff
from cxrkit.evaluation.metrics import macro_auc
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import patient_ids, true_labels
from cxrkit.study.runs import fold_predictions, same_images

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit.
EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` of probabilities clipped to ``[EPS, 1 - EPS]``."""
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def stacked_scores(val_logits: np.ndarray, y_val: np.ndarray, test_logits: np.ndarray,
                   c: float = 1.0) -> np.ndarray:
    """Per-label stacking: for each label ``j``, an L2-regularised logistic regression
    (``C = c``, sklearn) of ``y_val[:, j]`` on all of ``val_logits`` (rows with an unknown
    ``y_j`` left out), applied to ``test_logits``.

    Args:
        val_logits: ``(N, L)`` validation logits (the features).
        y_val: ``(N, L)`` 1/0/NaN validation labels.
        test_logits: ``(M, L)`` test logits.
        c: inverse L2 strength.

    Returns:
        ``(M, L)`` stacked test scores (the regressions' decision function, in logit units);
        a label without both classes on validation keeps its own test logit.
    """
    from sklearn.linear_model import LogisticRegression

    val_logits, test_logits = np.asarray(val_logits, dtype=float), np.asarray(test_logits, dtype=float)
    y_val = np.asarray(y_val, dtype=float)
    if val_logits.shape != y_val.shape or test_logits.shape[1:] != val_logits.shape[1:]:
        raise ValueError(f"stacked_scores: validation logits {val_logits.shape}, labels {y_val.shape} and test "
                         f"logits {test_logits.shape} must share the labels (and validation its rows)")
    out = test_logits.copy()
    for j in range(y_val.shape[1]):
        rows = np.isfinite(y_val[:, j])
        if len(np.unique(y_val[rows, j])) < 2:
            continue
        model = LogisticRegression(C=c, max_iter=2000).fit(val_logits[rows], y_val[rows, j])
        out[:, j] = model.decision_function(test_logits)
    return out


def stacked_fold_ensemble(val_logits: np.ndarray, y_val: np.ndarray, fold_test_probs: np.ndarray,
                          c: float = 1.0) -> np.ndarray:
    """The stacked fold ensemble: the stacker of :func:`stacked_scores` (fitted on the single folds'
    out-of-fold ``val_logits``) applied to each fold's test logits, its probabilities averaged
    over the folds.

    Args:
        val_logits: ``(N, L)`` out-of-fold validation logits.
        y_val: ``(N, L)`` 1/0/NaN validation labels.
        fold_test_probs: ``(F, M, L)`` each fold's test probabilities.
        c: inverse L2 strength.

    Returns:
        ``(M, L)`` stacked ensemble probabilities.
    """
    fold_test_probs = np.asarray(fold_test_probs, dtype=float)
    n_folds, m, n_labels = fold_test_probs.shape
    z = stacked_scores(val_logits, y_val, logit(fold_test_probs.reshape(-1, n_labels)), c)
    return (1 / (1 + np.exp(-z))).reshape(n_folds, m, n_labels).mean(axis=0)


def headroom_row(y_test: np.ndarray, test_scores: np.ndarray, stacked: np.ndarray,
                 boot: dict[str, Any]) -> dict[str, Any]:
    """Test macro AUC of ``test_scores`` and ``stacked`` (``(M, L)`` each; per-label AUCs, so
    probabilities and logits may be mixed) and their paired bootstrap difference, stacked minus
    unstacked (:func:`cxrkit.evaluation.bootstrap.paired_bootstrap_diff` with ``boot``)."""
    d = paired_bootstrap_diff(y_test, test_scores, stacked, **boot)
    return {"test macro AUC": macro_auc(y_test, test_scores), "stacked test macro AUC": macro_auc(y_test, stacked),
            "gain": d["diff"], "95% CI low": d["low"], "95% CI high": d["high"], "p_value": d["p_value"],
            "replicates_rejected": int(d["replicates_rejected"])}


def stacking_headroom(cfg: StudyConfig, c: float = 1.0) -> pd.DataFrame:
    """The stacking headroom of every variant of the study (module docstring), with flip TTA.

    Returns:
        One row per variant: ``test macro AUC`` (its test fold ensemble), ``stacked test macro
        AUC``, ``gain`` (stacked minus unstacked) with its paired patient-bootstrap 95% CI
        (``cfg.bootstrap`` replicates, the seed of the ablation's intervals), ``p_value``,
        ``replicates_rejected``, ``validation images`` (out-of-fold rows fitted on) and
        ``CI covers`` (test-set sampling only; the stacker is fitted once).

    Raises:
        StudyError: a variant's folds did not predict the same test images.
    """
    rows = {}
    seed = int(cfg.train.get("seed", 0))
    for v in cfg.variant_names:
        val = pd.concat(list(fold_predictions(cfg, v, "val").values()))
        tests = fold_predictions(cfg, v, "test")
        images = same_images(tests)
        labels = list(tests[0].columns)
        per_fold = np.stack([f.loc[images, labels].to_numpy() for f in tests.values()])  # (F, M, L)
        ens = per_fold.mean(axis=0)
        y_test = true_labels(cfg, images, labels)
        stacked = stacked_fold_ensemble(logit(val[labels].to_numpy()), true_labels(cfg, val.index, labels),
                                        per_fold, c)
        boot = {"n_boot": cfg.bootstrap, "seed": seed, "groups": patient_ids(cfg, images), "labels": labels}
        rows[v] = {**headroom_row(y_test, ens, stacked, boot), "validation images": len(val),
                   "CI covers": "test-set sampling (patient bootstrap); the stacker fitted once"}
    return pd.DataFrame(rows).T
