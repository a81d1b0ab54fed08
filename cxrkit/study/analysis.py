"""Computations behind the study's figures and tables (no plotting here; see
:mod:`cxrkit.study.plots`): label statistics of a dataset table, coupling matrices, fold agreement.

The label co-occurrence estimate (:func:`conditional_probability`) lives in the data layer
(:mod:`cxrkit.data.cooccurrence`) and is re-exported here for the notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from cxrkit.data.cooccurrence import conditional_probability

__all__ = [
    "across_fold_std",
    "conditional_probability",
    "data_quality_table",
    "dataset_summary",
    "fold_agreement",
    "gain_trend",
    "label_correlation",
    "per_label_delta",
    "prevalence",
    "recovery_scores",
    "sparsity",
    "strongest_couplings",
    "top_k_conditional",
]


def prevalence(table: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Positives, known entries and prevalence per label (paper Fig. 2)."""
    y = table[list(labels)]
    out = pd.DataFrame({"positives": (y == 1).sum(), "known": y.notna().sum()})
    out["prevalence"] = out["positives"] / out["known"]
    return out


def dataset_summary(table: pd.DataFrame, labels: Sequence[str]) -> pd.Series:
    """Counts of images, patients, studies and views, and labels per image."""
    y = table[list(labels)]
    studies = table.groupby("patient_id")["study"].nunique()
    return pd.Series({
        "images": len(table), "patients": table["patient_id"].nunique(),
        "studies": int(studies.sum()), "studies per patient (mean)": float(studies.mean()),
        "views": ", ".join(f"{k}: {v}" for k, v in table["view"].value_counts(dropna=False).items()),
        "positive labels per image (mean)": float((y == 1).sum(axis=1).mean()),
        "unknown label entries": int(y.isna().sum().sum()),
    })


def label_correlation(y: np.ndarray | pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Pearson correlation between label columns (pairwise over known entries; paper Fig. 5)."""
    return pd.DataFrame(np.asarray(y, dtype=float), columns=list(labels)).corr(method="pearson", min_periods=2)


def top_k_conditional(cond: pd.DataFrame, k: int = 3) -> pd.Series:
    """Mean of each label's k largest conditional probabilities P(label | other) (Rawlekar et al. Fig. 2)."""
    vals = {}
    for lab in cond.columns:
        col = cond[lab].drop(index=lab).dropna().sort_values(ascending=False)
        vals[lab] = float(col.head(k).mean()) if len(col) else float("nan")
    return pd.Series(vals)


def strongest_couplings(coupling: pd.DataFrame, n: int = 10, resolution: float = 0.01) -> pd.DataFrame:
    """The n off-diagonal entries of largest magnitude: source, target, value.

    The ranking is stable across machines and thread counts: magnitudes are compared rounded to
    ``resolution`` times the largest one (entries that differ only by floating-point noise tie),
    and ties are ordered by source, then target label name.
    """
    values = coupling.to_numpy(dtype=float, copy=True)
    np.fill_diagonal(values, np.nan)
    s = pd.DataFrame(values, index=coupling.index, columns=coupling.columns).stack().rename("value").reset_index()
    s.columns = ["source", "target", "value"]
    s = s.dropna(subset=["value"])  # the diagonal (and any undefined entry)
    s["source"], s["target"] = s["source"].astype(str), s["target"].astype(str)
    top = s["value"].abs().max()
    scale = top * resolution if np.isfinite(top) and top > 0 else 1.0
    s["_rank"] = -np.round(s["value"].abs() / scale)
    s = s.sort_values(["_rank", "source", "target"], kind="stable")
    return s.drop(columns="_rank").head(n).reset_index(drop=True)


def gain_trend(x: pd.Series, gains: pd.DataFrame) -> pd.DataFrame:
    """Per column of ``gains`` (per-label gains, e.g. ΔAP): the Spearman rank correlation with
    ``x`` (e.g. each label's mean top-3 conditional probability, Rawlekar et al. Fig. 2) over the
    labels where both are finite: ``labels``, ``spearman rho`` and its two-sided ``p-value``
    (NaN with fewer than 3 labels or a constant variable)."""
    rows = {}
    for col in gains.columns:
        both = pd.concat([x.rename("x"), gains[col].rename("y")], axis=1, join="inner").dropna()
        rho = p = float("nan")
        if len(both) >= 3 and both["x"].nunique() > 1 and both["y"].nunique() > 1:
            res = spearmanr(both["x"], both["y"])
            rho, p = float(res.statistic), float(res.pvalue)
        rows[col] = {"labels": len(both), "spearman rho": rho, "p-value": p}
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["labels", "spearman rho", "p-value"])
    return out.astype({"labels": int})


def sparsity(coupling: pd.DataFrame | np.ndarray, tol: float = 1e-3) -> float:
    """Fraction of off-diagonal couplings with |A_ij| <= tol."""
    a = np.asarray(coupling, dtype=float)
    off = a[~np.eye(len(a), dtype=bool)]
    return float(np.mean(np.abs(off) <= tol))


def recovery_scores(learned: pd.DataFrame, true: pd.DataFrame, top: int = 20) -> dict[str, float]:
    """How well a learned coupling matrix recovers the true one.

    The true matrix (log odds ratios of the observed labels) has two kinds of entries: finite
    ones, and -inf for logically exclusive pairs (No Finding with any pathology). On the ``top``
    finite pairs of largest magnitude we report the sign agreement and the Spearman rank
    correlation of learned vs true values; on the exclusive pairs, the fraction the learned
    matrix makes negative.
    """
    labels = [lab for lab in learned.index if lab in true.index]
    t = true.loc[labels, labels].to_numpy(dtype=float)
    a = learned.loc[labels, labels].to_numpy(dtype=float)
    off = ~np.eye(len(labels), dtype=bool)
    fin = off & np.isfinite(t)
    tv, av = t[fin], a[fin]
    order = np.argsort(-np.abs(tv), kind="stable")[:top]
    tv, av = tv[order], av[order]
    rho = float(spearmanr(tv, av).statistic) if np.ptp(av) > 0 and np.ptp(tv) > 0 else float("nan")
    excl = off & np.isinf(t)
    return {"pairs": int(len(tv)), "sign_agreement": float(np.mean(np.sign(av) == np.sign(tv))),
            "spearman": rho,
            "exclusive_pairs_negative": float(np.mean(a[excl] < 0)) if excl.any() else float("nan")}


def fold_agreement(fold_probs: Mapping[str, np.ndarray], threshold: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Between every two folds' test predictions: Pearson correlation of the probabilities and the
    fraction of (image, label) decisions at ``threshold`` on which they agree (paper Fig. 4)."""
    names = list(fold_probs)
    corr = pd.DataFrame(index=names, columns=names, dtype=float)
    agree = corr.copy()
    for a in names:
        for b in names:
            pa, pb = fold_probs[a].ravel(), fold_probs[b].ravel()
            corr.loc[a, b] = float(np.corrcoef(pa, pb)[0, 1])
            agree.loc[a, b] = float(np.mean((pa >= threshold) == (pb >= threshold)))
    return corr, agree


def across_fold_std(fold_probs: Mapping[str, np.ndarray], labels: Sequence[str]) -> pd.Series:
    """Per label: the across-fold standard deviation of predicted probabilities, averaged over images (Fig. 6)."""
    stack = np.stack(list(fold_probs.values()))  # (K, N, L)
    return pd.Series(stack.std(axis=0, ddof=0).mean(axis=0), index=list(labels))


def per_label_delta(a: pd.Series, b: pd.Series) -> pd.DataFrame:
    """Per-label AUC of two variants and their difference b - a."""
    return pd.DataFrame({"a": a, "b": b, "delta": b - a})


def data_quality_table(table: pd.DataFrame, labels: Sequence[str], excluded: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per label: positives, negatives, unknown (NaN, masked) entries; plus excluded images."""
    y = table[list(labels)]
    out = pd.DataFrame({"positive": (y == 1).sum(), "negative": (y == 0).sum(), "unknown (masked)": y.isna().sum()})
    n_excl = 0 if excluded is None else len(excluded)
    out.loc["(all images)"] = [len(table), n_excl, int(y.isna().all(axis=1).sum())]
    out = out.rename(index={"(all images)": "images: kept / excluded / all labels unknown"})
    return out


def loader_report(quality: dict[str, Any], decoding: dict[str, int]) -> pd.DataFrame:
    """What the loader did to the table and the images, one row per item: the loader's counts
    (``ds.quality``: views kept and dropped, ages of 0 read as missing, views replaced, images
    without labels, per source of a merged dataset, ...) and how many images were decoded each way
    (``ds.decoding``: PNG, JPEG with its EXIF orientation, DICOM with the window used, ...).

    Returns:
        Columns ``what``, ``item``, ``value`` (ints or short texts); empty when there is nothing.
    """
    rows: list[dict[str, Any]] = []

    def add(what: str, value: Any, item: str = "") -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                add(what if not item else f"{what}: {item}", sub, str(key))
        else:
            rows.append({"what": what, "item": item, "value": value if isinstance(value, (int, float)) else str(value)})

    for key, value in quality.items():
        add(str(key), value)
    for way, n in decoding.items():
        rows.append({"what": "images decoded as", "item": way, "value": int(n)})
    return pd.DataFrame(rows, columns=["what", "item", "value"])
