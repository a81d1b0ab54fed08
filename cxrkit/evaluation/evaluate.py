"""Evaluation of saved prediction files against a dataset's labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.data.datasets import create_dataset, fingerprint, label_matrix
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
    y = label_matrix(rows.reset_index()).astype(float)
    scores = preds[list(labels)].to_numpy(dtype=float)
    if not np.isfinite(scores).all():
        bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))[:5]
        raise PredictionMismatch(f"{name}: non-finite scores in rows {[int(i) + 2 for i in bad]} (CSV lines)")
    return y, scores, rows["patient_id"].to_numpy()


def evaluate_files(paths: Sequence[str | Path], *, data: str | Path, dataset: str = "gxs",
                   dataset_options: dict[str, Any] | None = None, threshold: float = 0.5, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """Per-label and macro AUC (patient-bootstrap CI), mAP and CP/CR/CF1/OP/OR/OF1 of each file;
    with two files, also the paired bootstrap difference (second minus first). Every interval
    is over the labels scorable on the evaluated images (:func:`cxrkit.evaluation.bootstrap.bootstrap_macro_auc`)
    and its line says how many replicates were rejected and redrawn to keep that label set; the
    paired line also says that its CI covers the sampling of the evaluated images only (each
    file is one trained model, one training seed).

    The labels scored are those the files predict (their sidecar's ``labels``: a run trained on
    a label subset is scored on that subset). Refuses files made on other data (fingerprint in
    the sidecar) or, for a pair, other folds or labels.
    """
    if not 1 <= len(paths) <= 2:
        raise ValueError("give one prediction file, or two for a paired comparison")
    loaded = [read_predictions(p) for p in paths]
    # a run trained on a label subset predicts (and fingerprinted its data with) those labels only
    labels = loaded[0][1].get("labels")
    ds = create_dataset(dataset, root=data, check_images=False, labels=labels, **(dataset_options or {}))
    fp = fingerprint(ds.table)
    for p, (_, meta) in zip(paths, loaded):
        if meta.get("data_fingerprint") not in (None, fp):
            raise PredictionMismatch(f"{p} was made on data with fingerprint {meta['data_fingerprint']}, "
                                     f"but {data} has {fp}")
    if len(paths) == 2:
        check_compatible([m for _, m in loaded], [str(p) for p in paths])
        if set(loaded[0][0]["image"]) != set(loaded[1][0]["image"]):
            raise PredictionMismatch(f"{paths[0]} and {paths[1]} predict different images")
    labels = ds.labels
    columns, lines = {}, []
    scores_of = []
    for p, (preds, _) in zip(paths, loaded):
        if len(paths) == 2:
            preds = preds.set_index("image").loc[loaded[0][0]["image"]].reset_index()
        y, s, groups = aligned(ds.table, labels, preds, str(p))
        scores_of.append(s)
        per = per_label_auc(y, s, labels)
        ci = bootstrap_macro_auc(y, s, n_boot=n_boot, seed=seed, groups=groups, labels=labels)
        thr = threshold_metrics(y, s, threshold=threshold)
        col = {**{f"AUC {k}": v for k, v in per.items()}, "macro AUC": ci["estimate"],
               "macro AUC low": ci["low"], "macro AUC high": ci["high"],
               "mAP": mean_average_precision(y, s), **{f"{k}@{threshold:g}": v for k, v in thr.items()}}
        columns[Path(p).name if Path(p).name not in columns else str(p)] = col
        lines.append(f"{p}: macro AUC {ci['estimate']:.4f} (95% CI {ci['low']:.4f}-{ci['high']:.4f}, "
                     f"patient bootstrap n={n_boot}, {ci['replicates_rejected']} replicate(s) rejected and "
                     f"redrawn for a label without both classes), mAP {col['mAP']:.4f}, n={len(y)}")
    table = pd.DataFrame(columns)
    if len(paths) == 2:
        d = paired_bootstrap_diff(y, scores_of[0], scores_of[1], n_boot=n_boot, seed=seed, groups=groups,
                                  labels=labels)
        lines.append(f"paired difference (second - first): {d['diff']:+.4f} "
                     f"(95% CI {d['low']:+.4f} to {d['high']:+.4f}, p={d['p_value']:.3f}, "
                     f"{d['replicates_rejected']} replicate(s) rejected and redrawn); CI covers: sampling of the "
                     f"evaluated images only (patient bootstrap); one training seed per file, so training "
                     f"variability is not in it")
        table["difference"] = table.iloc[:, 1] - table.iloc[:, 0]
    with pd.option_context("display.width", 200, "display.max_rows", 100, "display.float_format", "{:.4f}".format):
        text = table.to_string() + "\n\n" + "\n".join(lines)
    return {"text": text, "table": table, "lines": lines}
