"""How balanced a split is: images, patients and label prevalences per part, the worst gaps,
and the comparison with random patient folds and image-level MIS."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrkit.data.splits.leakage import leakage_report
from cxrkit.data.splits.make import make_splits
from cxrkit.data.splits.stratify import assign_random
from cxrkit.data.splits.table import first, n_folds_of, row_parts, splits_frame, table_labels, units


def balance_table(table: pd.DataFrame, splits: pd.DataFrame,
                  labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Images, patients and positives per label in each fold, the test set and overall.

    Rows are ``images``, ``patients`` and one per label; columns are ``(part, "n")`` and
    ``(part, "frac")`` for each part (``fold 0 .. fold K-1``, ``test`` if any, ``all``). For
    ``images``/``patients`` ``frac`` is the part's share of all images/patients; for a label it
    is the prevalence in the part: positives / images with a known (non-NaN) value.

    Args:
        table: the data table the splits were made from (matched on ``image``).
        splits: a splits table.
        labels: label columns; default ``table.attrs["labels"]``.

    Raises:
        ValueError: an image of the splits is not in the table.
    """
    labels = table_labels(table, labels)
    data = table.set_index(table["image"].astype(str))  # ids read back by load_splits are str
    ids = splits["image"].astype(str)
    missing = ids[~ids.isin(data.index)]
    if len(missing):
        raise ValueError(f"{len(missing)} image(s) of the splits are not in the table: {first(missing)}")
    values = data.loc[ids, labels].to_numpy(dtype=float)
    parts = row_parts(splits).to_numpy()
    order = [f"fold {k}" for k in range(n_folds_of(splits))] + (["test"] if (parts == "test").any() else [])
    n_img, n_pat = len(splits), splits["patient_id"].nunique()

    columns = {}
    for part in order + ["all"]:
        sel = np.ones(len(parts), dtype=bool) if part == "all" else parts == part
        v = values[sel]
        pos = (v == 1).sum(axis=0)
        known = (~np.isnan(v)).sum(axis=0)
        images, patients = int(sel.sum()), int(splits.loc[sel, "patient_id"].nunique())
        columns[(part, "n")] = [images, patients, *pos.tolist()]
        columns[(part, "frac")] = [images / n_img, patients / n_pat,
                                   *np.divide(pos, known, out=np.full(len(labels), np.nan),
                                              where=known > 0).tolist()]
    out = pd.DataFrame(columns, index=["images", "patients", *labels])
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["part", ""])
    return out


def balance_gaps(table: pd.DataFrame, splits: pd.DataFrame,
                 labels: Sequence[str] | None = None) -> pd.Series:
    """Worst label-prevalence gap of each part: max over labels of |prevalence in the part -
    prevalence in all images|, prevalence per image as in :func:`balance_table`."""
    frac = balance_table(table, splits, labels).xs("frac", axis=1, level=1).iloc[2:]
    gaps = frac.drop(columns="all").sub(frac["all"], axis=0).abs().max()
    gaps.name = "worst_gap"
    return gaps


def split_comparison(table: pd.DataFrame, splits: pd.DataFrame,
                     labels: Sequence[str] | None = None) -> pd.DataFrame:
    """``splits`` against random patient folds and image-level MIS with its parameters and seed.

    One row per split (``splits`` first); columns ``worst_fold_gap`` (max over folds of
    :func:`balance_gaps`), ``test_gap`` (NaN without a test split), ``fold_images_min``/``_max``
    and ``patients_crossing`` (patients in more than one part).

    Args:
        table: the data table the splits were made from.
        splits: a splits table whose ``attrs`` hold ``n_folds``, ``test_size``, ``seed``, ``group``.
        labels: label columns; default ``table.attrs["labels"]``.
    """
    labels = table_labels(table, labels)
    k, t, seed = int(splits.attrs["n_folds"]), float(splits.attrs["test_size"]), int(splits.attrs["seed"])
    data = table.set_index(table["image"].astype(str)).loc[splits["image"].astype(str)].reset_index(drop=True)
    inverse = units(data["patient_id"])
    is_test, fold = assign_random(inverse.max() + 1, k, t, seed)
    others = {
        "random patients": splits_frame(data, is_test[inverse], fold[inverse], {"n_folds": k}),
        "image-level MIS": make_splits(data, labels, n_folds=k, test_size=t, seed=seed, group="image"),
    }
    rows = {}
    for name, s in {f"this split (group={splits.attrs['group']})": splits, **others}.items():
        gaps, sizes = balance_gaps(data, s, labels), s.loc[s["fold"] >= 0, "fold"].value_counts()
        rows[name] = {"worst_fold_gap": gaps.drop("test", errors="ignore").max(),
                      "test_gap": gaps.get("test", np.nan), "fold_images_min": int(sizes.min()),
                      "fold_images_max": int(sizes.max()), "patients_crossing": len(leakage_report(s))}
    return pd.DataFrame.from_dict(rows, orient="index")
