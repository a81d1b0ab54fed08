"""The learned couplings across a study's variants: how well each recovers the phantom's true
structure, how much of each matrix is per-target columns (:func:`column_shares`), and the sparse
refiner's lambda sweep."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from cxrkit.evaluation.metrics import macro_auc
from cxrkit.study.analysis import recovery_scores, sparsity
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import true_labels
from cxrkit.study.oracle import true_coupling
from cxrkit.study.runs import coupled_variants, fold_couplings, fold_predictions


def lambda_sweep(cfg: StudyConfig) -> pd.DataFrame | None:
    """Per sparse variant with its own ``l1_lambda``: its ``loss_reduction`` (``sum`` or ``mean``,
    :mod:`cxrkit.losses`; the same lambda is L times stronger relative to the data term under
    ``mean``), validation macro AUC (mean, sd over folds), test ensemble macro AUC and the fraction
    of non-zero couplings; sorted by reduction, then lambda. None unless some reduction has at
    least two lambdas."""
    rows = {}
    for v in cfg.variant_names:
        t = cfg.train_config(0, v)
        if t.refiner not in ("sparse", "sparse_prior", "sparse_centred"):
            continue
        aucs = [json.loads((cfg.train_dir(k, v) / "metrics.json").read_text())["val_macro_auc"]
                for k in range(cfg.n_folds)]
        folds = fold_predictions(cfg, v, "test")
        images = folds[0].index
        ens = sum(f.loc[images].to_numpy() for f in folds.values()) / len(folds)
        nonzero = [1 - sparsity(a) for a in fold_couplings(cfg, v, "raw").values()]
        rows[v] = {"refiner": t.refiner, "l1_lambda": t.l1_lambda, "loss_reduction": t.loss_reduction,
                   "val macro AUC (mean)": float(np.mean(aucs)),
                   "val macro AUC (sd)": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else float("nan"),
                   "test ensemble macro AUC": macro_auc(true_labels(cfg, images), ens),
                   "non-zero couplings": float(np.mean(nonzero))}
    table = pd.DataFrame(rows).T
    if len(table) < 2 or table.groupby("loss_reduction")["l1_lambda"].nunique().max() < 2:
        return None
    return table.sort_values(["loss_reduction", "l1_lambda"], ascending=[False, True])


def coupling_recovery(cfg: StudyConfig) -> pd.DataFrame | None:
    """Phantom only (None otherwise, or without coupled variants): how well each coupled
    variant's effective coupling recovers the true structure (:func:`cxrkit.study.analysis.recovery_scores`),
    per fold and for the mean over folds; index (variant, ``fold k`` | ``mean``)."""
    true, variants = true_coupling(cfg), coupled_variants(cfg)
    if true is None or not variants:
        return None
    rows = {}
    for v in variants:
        mats = fold_couplings(cfg, v)
        rows |= {(v, f"fold {k}"): recovery_scores(a, true) for k, a in mats.items()}
        rows[(v, "mean")] = recovery_scores(sum(mats.values()) / len(mats), true)
    return pd.DataFrame(rows).T


def best_recovery(recovery: pd.DataFrame) -> str:
    """The variant whose mean coupling over folds ranks the strongest true pairs best (highest
    Spearman correlation; a variant without one counts as lowest; the first in the study on ties)."""
    means = recovery.xs("mean", level=1)
    return str(means["spearman"].astype(float).fillna(-2.0).idxmax())


def column_share(coupling: pd.DataFrame | np.ndarray) -> float:
    """Share of a coupling matrix ``A`` ``(L, L)`` (rows sources, columns targets) that is one value
    per target column: ``1 - ||A - c||^2 / ||A||^2`` over the off-diagonal entries, ``c_j`` the
    mean of column ``j`` without its diagonal entry (cxrkit issue 15). 1: every column is
    constant, i.e. a per-target bias learned through ``sigmoid(z) @ A`` (the probabilities are
    never centred); 0: the columns' means are 0. NaN for an all-zero matrix."""
    a = np.asarray(coupling, dtype=float)
    off = ~np.eye(len(a), dtype=bool)
    if len(a) < 2:
        return float("nan")
    total = float((a[off] ** 2).sum())
    if total == 0.0:
        return float("nan")
    col_mean = np.where(off, a, 0.0).sum(axis=0) / (len(a) - 1)
    resid = np.where(off, a - col_mean[None, :], 0.0)
    return 1.0 - float((resid ** 2).sum()) / total


def column_shares(cfg: StudyConfig) -> pd.DataFrame | None:
    """:func:`column_share` of the raw coupling of every coupled variant (A for the sparse
    refiners, the co-occurrence prior for ``cooc_gcn``): rows ``fold k`` and ``mean matrix`` (the
    mean over folds), one column per variant; None without coupled variants."""
    variants = coupled_variants(cfg)
    if not variants:
        return None
    rows: dict[str, dict[str, float]] = {}
    for v in variants:
        raw = fold_couplings(cfg, v, "raw")
        for k, a in raw.items():
            rows.setdefault(f"fold {k}", {})[v] = column_share(a)
        rows.setdefault("mean matrix", {})[v] = column_share(sum(raw.values()) / len(raw))
    return pd.DataFrame(rows).T
