"""Evaluation of saved prediction files against a dataset's labels: those the files predict and
the dataset annotates, aligned by name (:mod:`cxrkit.evaluation.alignment`), so a model can be
validated on another dataset than the one it was trained on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.data.datasets import fingerprint, label_matrix
from cxrkit.evaluation.alignment import target_dataset
from cxrkit.evaluation.bootstrap import bootstrap_macro_auc, paired_bootstrap_diff
from cxrkit.evaluation.metrics import mean_average_precision, per_label_auc, threshold_metrics
from cxrkit.evaluation.predictions import PredictionMismatch, check_compatible, read_predictions


def aligned(table: pd.DataFrame, labels: Sequence[str], preds: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True labels, scores and patient ids of the predicted images, in prediction order."""
    missing_cols = [lab for lab in labels if lab not in preds.columns]
    if missing_cols:
        raise PredictionMismatch(f"{name}: no column for label(s) {missing_cols}")
    index = table.set_index("image")
    unknown = preds.loc[~preds["image"].isin(index.index), "image"]
    if len(unknown):
        raise PredictionMismatch(f"{name}: {len(unknown)} predicted images are not in the dataset, "
                                 f"e.g. {unknown.head(5).tolist()}")
    rows = index.loc[preds["image"]]
    y = label_matrix(rows.reset_index(), labels).astype(float)
    scores = preds[list(labels)].to_numpy(dtype=float)
    if not np.isfinite(scores).all():
        bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))[:5]
        raise PredictionMismatch(f"{name}: non-finite scores in rows {[int(i) + 2 for i in bad]} (CSV lines)")
    return y, scores, rows["patient_id"].to_numpy()


def evaluate_files(paths: Sequence[str | Path], *, data: str | Path, dataset: str = "gxs",
                   dataset_options: dict[str, Any] | None = None, threshold: float = 0.5, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """Per-label and macro AUC, each with its patient-bootstrap 95% CI (per label:
    :func:`per_label_ci`; rows ``AUC <label> low`` / ``high``), mAP and CP/CR/CF1/OP/OR/OF1 of each file;
    with two files, also the paired bootstrap difference (second minus first). Every interval
    is over the labels scorable on the evaluated images (:func:`cxrkit.evaluation.bootstrap.bootstrap_macro_auc`)
    and its line says how many replicates were rejected and redrawn to keep that label set; the
    paired line also says that its CI covers the sampling of the evaluated images only (each
    file is one trained model, one training seed).

    The labels scored are those the files predict (their sidecar's ``labels``: a run trained on
    a label subset is scored on that subset) that the dataset annotates, aligned by name after
    its loader's mapping (:mod:`cxrkit.evaluation.alignment`: NIH's ``Effusion`` is ``Pleural
    Effusion``). Labels the dataset lacks get a NaN row and are not scored; labels it has that
    the files do not predict are listed; the last line of the text says which are which.

    Returns:
        ``text`` (the table and the summary lines), ``table`` (one column per file),
        ``lines``, ``labels`` (``scored``, ``lacking``, ``extra``), ``per_label`` (file ->
        :func:`per_label_ci` of the shared labels) and ``per_label_json`` (the same, NaN as None).

    Raises:
        PredictionMismatch: a file made on other data (its sidecar's data fingerprint is not the
            dataset's restricted to the shared labels; a file predicted from a folder of images
            has a fingerprint of the files, not of a dataset), no label shared with the dataset,
            or, for a pair, other folds, labels or images.
    """
    if not 1 <= len(paths) <= 2:
        raise ValueError("give one prediction file, or two for a paired comparison")
    loaded = [read_predictions(p) for p in paths]
    if len(paths) == 2:
        check_compatible([m for _, m in loaded], [str(p) for p in paths])
        if set(loaded[0][0]["image"]) != set(loaded[1][0]["image"]):
            raise PredictionMismatch(f"{paths[0]} and {paths[1]} predict different images")
    predicted = loaded[0][1].get("labels") or [c for c in loaded[0][0].columns if c != "image"]
    ds, alignment = target_dataset(dataset, data, dataset_options, predicted, check_images=False)
    if not alignment.shared:
        raise PredictionMismatch(f"{paths[0]} predicts none of the labels {dataset} at {data} annotates: "
                                 f"{alignment.describe(dataset)}")
    _check_fingerprints(paths, [m for _, m in loaded], fingerprint(ds.table), data)
    report = _score(paths, loaded, ds.table, alignment.shared, threshold=threshold, n_boot=n_boot, seed=seed)
    table = report["table"]  # an AUC row per predicted label, in the files' order (NaN where the dataset lacks it)
    report["table"] = table.reindex([f"AUC {lab}" for lab in alignment.model]
                                    + [f"AUC {lab} {end}" for lab in alignment.model for end in ("low", "high")]
                                    + [row for row in table.index if not str(row).startswith("AUC ")])
    report["lines"].append(alignment.describe(dataset))
    with pd.option_context("display.width", 200, "display.max_rows", 100, "display.float_format", "{:.4f}".format):
        report["text"] = report["table"].to_string() + "\n\n" + "\n".join(report["lines"])
    nulls = {f: {lab: {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in c.items()}
                 for lab, c in labs.items()} for f, labs in report["per_label"].items()}
    return {**report, "labels": alignment.as_dict(), "per_label_json": nulls}


def _check_fingerprints(paths: Sequence[str | Path], metas: Sequence[dict[str, Any]], fp: str, data: str | Path) -> None:
    """Refuse a file whose sidecar names another data fingerprint than ``fp`` (saying how to
    predict the dataset itself when the file was predicted from image files)."""
    for p, meta in zip(paths, metas):
        if meta.get("data_fingerprint") in (None, fp):
            continue
        source = meta.get("source") or {}
        hint = ""
        if source.get("kind") in ("folder", "glob", "file"):
            hint = (f"; it was predicted from the image files {source.get('where')} (fingerprint of their content), "
                    f"not from the dataset: predict the dataset itself with `cxrkit infer --data {data} --dataset ...`")
        raise PredictionMismatch(f"{p} was made on data with fingerprint {meta['data_fingerprint']}, "
                                 f"but {data} has {fp}{hint}")


def _score(paths: Sequence[str | Path], loaded: Sequence[tuple[pd.DataFrame, dict[str, Any]]], table: pd.DataFrame,
           labels: list[str], *, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    """The metrics of each file on ``labels`` and, for a pair, their paired difference."""
    columns, lines, per_label = {}, [], {}
    scores_of = []
    for p, (preds, _) in zip(paths, loaded):
        if len(paths) == 2:
            preds = preds.set_index("image").loc[loaded[0][0]["image"]].reset_index()
        y, s, groups = aligned(table, labels, preds, str(p))
        scores_of.append(s)
        per = per_label_auc(y, s, labels)
        ci = bootstrap_macro_auc(y, s, n_boot=n_boot, seed=seed, groups=groups, labels=labels)
        cis = per_label_ci(y, s, groups, labels, n_boot=n_boot, seed=seed)
        thr = threshold_metrics(y, s, threshold=threshold)
        col = {**{f"AUC {k}": v for k, v in per.items()},
               **{f"AUC {k} {end}": c[end] for k, c in cis.items() for end in ("low", "high")},
               "macro AUC": ci["estimate"],
               "macro AUC low": ci["low"], "macro AUC high": ci["high"],
               "mAP": mean_average_precision(y, s), **{f"{k}@{threshold:g}": v for k, v in thr.items()}}
        name = Path(p).name if Path(p).name not in columns else str(p)
        columns[name], per_label[name] = col, cis
        lines.append(f"{p}: macro AUC {ci['estimate']:.4f} (95% CI {ci['low']:.4f}-{ci['high']:.4f}, "
                     f"patient bootstrap n={n_boot}, {ci['replicates_rejected']} replicate(s) rejected and "
                     f"redrawn for a label without both classes), mAP {col['mAP']:.4f}, n={len(y)}")
        lines += [f"{p}: AUC {k}: no CI ({c['note']})" for k, c in cis.items() if c["note"]]
    result = pd.DataFrame(columns)
    if len(paths) == 2:
        d = paired_bootstrap_diff(y, scores_of[0], scores_of[1], n_boot=n_boot, seed=seed, groups=groups,
                                  labels=labels)
        lines.append(f"paired difference (second - first): {d['diff']:+.4f} "
                     f"(95% CI {d['low']:+.4f} to {d['high']:+.4f}, p={d['p_value']:.3f}, "
                     f"{d['replicates_rejected']} replicate(s) rejected and redrawn); CI covers: sampling of the "
                     f"evaluated images only (patient bootstrap); one training seed per file, so training "
                     f"variability is not in it")
        result["difference"] = result.iloc[:, 1] - result.iloc[:, 0]
    return {"table": result, "lines": lines, "per_label": per_label}


def per_label_ci(y: np.ndarray, s: np.ndarray, groups: np.ndarray, labels: Sequence[str], *, n_boot: int,
                 seed: int) -> dict[str, dict[str, Any]]:
    """Each label's AUC with its own patient-bootstrap 95% CI (:func:`bootstrap_macro_auc` on that
    label alone, so a replicate is redrawn only when *it* lacks a class).

    Returns:
        label -> ``auc``, ``low``, ``high``, ``replicates_rejected`` and ``note``: empty, or why the
        CI is NaN (the label has one class only on these images, or is too rare for the
        resampling to keep both classes).
    """
    out: dict[str, dict[str, Any]] = {}
    for j, lab in enumerate(labels):
        try:
            ci = bootstrap_macro_auc(y[:, [j]], s[:, [j]], n_boot=n_boot, seed=seed, groups=groups, labels=[lab])
        except ValueError as exc:  # too rare: the resampling cannot keep both classes
            out[lab] = {"auc": float("nan"), "low": float("nan"), "high": float("nan"),
                        "replicates_rejected": None, "note": f"too rare for the bootstrap: {exc}"}
            continue
        note = "" if np.isfinite(ci["estimate"]) else "not scorable: one class only among the evaluated images"
        out[lab] = {"auc": ci["estimate"], "low": ci["low"], "high": ci["high"],
                    "replicates_rejected": int(ci["replicates_rejected"]), "note": note}
    return out
