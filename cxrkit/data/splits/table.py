"""The splits table and its helpers: one row per image (``image``, ``patient_id``, ``split``,
``fold``), the parts it names (``fold k``, ``test``) and the positions of a fold's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.data.tables import bad_keys

GROUPS = ("patient", "image")
#: The assignment algorithm of each ``group``, recorded in ``folds.json`` (``method``): folds made
#: by another algorithm are stale for a study that asks for the same parameters. These names are
#: compared with existing folds, so they stay as written (the algorithm now lives in
#: :mod:`cxrkit.data.splits.stratify`; the name is unchanged because the algorithm is).
SPLIT_METHODS = {"patient": "grouped image-count stratification v1 (cxrkit.stratify)",
                 "image": "multilabel iterative stratification (iterstrat)"}
SPLIT_COLUMNS = ["image", "patient_id", "split", "fold"]
#: How the test split is made: ``test_size`` of the images, stratified, or the dataset's official test.
TEST_SPLITS = ("stratified", "official")
PARAMS = ("n_folds", "test_size", "seed", "group")
SHOW = 10  # ids named in an error message


def first(values: Sequence[Any], n: int = SHOW) -> str:
    """``values`` as a short comma-separated list: the first ``n`` and how many more."""
    values = list(values)
    head = ", ".join(repr(v) for v in values[:n])
    return head + (f" and {len(values) - n} more" if len(values) > n else "")


def table_labels(table: pd.DataFrame, labels: Sequence[str] | None) -> list[str]:
    """The label columns to use: ``labels`` or ``table.attrs["labels"]``, checked to be columns."""
    if labels is None:
        labels = table.attrs.get("labels")
        if labels is None:
            raise ValueError("no labels given and table.attrs['labels'] is not set")
    labels = list(labels)
    if not labels:
        raise ValueError("labels: need at least one label column")
    missing = [lab for lab in labels if lab not in table.columns]
    if missing:
        raise ValueError(f"label column(s) {missing} not in the table; columns: {list(table.columns)}")
    return labels


def check_table(table: pd.DataFrame) -> None:
    """Check the id columns: present, ``image`` unique, no missing patient ids."""
    for col in ("image", "patient_id"):
        if col not in table.columns:
            raise ValueError(f"table has no {col!r} column; columns: {list(table.columns)}")
    if len(table) == 0:
        raise ValueError("table is empty")
    _, repeated = bad_keys(table["image"])
    if repeated:  # named in the order of their second rows
        dup = sorted(repeated, key=lambda key: repeated[key][1])
        raise ValueError(f"image ids must be unique; duplicated: {first(dup)}")
    bad = table["patient_id"].isna().to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{bad.sum()} row(s) have no patient_id (rows {first(rows.tolist())}; "
            f"images {first(table['image'].to_numpy()[rows].tolist())}); every image needs a patient"
        )


def units(key: pd.Series) -> np.ndarray:
    """Unit index of each row: the rank of its id (as a string) among the sorted unique ids."""
    return np.unique(key.astype(str).to_numpy(), return_inverse=True)[1].reshape(-1)


def splits_frame(table: pd.DataFrame, is_test: np.ndarray, fold: np.ndarray,
                  attrs: dict[str, Any]) -> pd.DataFrame:
    """The splits table of ``table`` from each row's ``is_test`` and ``fold``."""
    splits = pd.DataFrame({
        "image": table["image"].to_numpy(),
        "patient_id": table["patient_id"].to_numpy(),
        "split": np.where(is_test, "test", "train"),
        "fold": fold,
    })
    splits.attrs.update(attrs)
    if attrs.get("group") in SPLIT_METHODS:
        splits.attrs["method"] = SPLIT_METHODS[attrs["group"]]
    return splits


def n_folds_of(splits: pd.DataFrame) -> int:
    """K: ``splits.attrs["n_folds"]`` or, when absent, one more than the largest fold."""
    return int(splits.attrs.get("n_folds", splits["fold"].max() + 1))


def row_parts(splits: pd.DataFrame) -> pd.Series:
    """The part of each row: ``"fold k"`` or ``"test"``."""
    return pd.Series(np.where(splits["split"].to_numpy() == "test", "test",
                              "fold " + splits["fold"].astype(str).to_numpy()),
                     index=splits.index)


def part_order(part: str) -> tuple[bool, int]:
    """Sort key of part names: folds by number, then test."""
    return part == "test", int(part.split()[1]) if part != "test" else 0


def fold_indices(splits: pd.DataFrame, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Positional indices of train and validation rows for fold ``fold``.

    Train is every train row not in fold ``fold``; test rows are in neither.

    Raises:
        ValueError: ``fold`` outside ``0..K-1``.
    """
    k = n_folds_of(splits)
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < k:
        raise ValueError(f"fold: need an integer in 0..{k - 1} (n_folds={k}), got {fold!r}")
    f = splits["fold"].to_numpy()
    train = (splits["split"].to_numpy() == "train")
    return np.flatnonzero(train & (f != fold)), np.flatnonzero(train & (f == fold))


def test_indices(splits: pd.DataFrame) -> np.ndarray:
    """Positional indices of the test rows (empty when there is no test split)."""
    return np.flatnonzero(splits["split"].to_numpy() == "test")


test_indices.__test__ = False  # not a pytest test despite the name
