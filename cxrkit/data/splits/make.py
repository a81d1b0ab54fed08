"""Making the splits: a held-out test set and K folds, grouped by patient or image-level."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrkit.data.splits.leakage import LeakageError
from cxrkit.data.splits.stratify import assign_grouped, assign_mis
from cxrkit.data.splits.table import (
    GROUPS,
    TEST_SPLITS,
    check_table,
    first,
    splits_frame,
    table_labels,
    units,
)


def make_splits(table: pd.DataFrame, labels: Sequence[str] | None = None, n_folds: int = 3,
                test_size: float = 0.2, seed: int = 0, group: str = "patient",
                test_split: str = "stratified") -> pd.DataFrame:
    """Split a data table into a held-out test set and ``n_folds`` stratified folds.

    Label value 1 is positive, 0 negative and NaN unknown. With ``group="patient"`` whole
    patients are assigned so that each part's share of the images, and each label's prevalence
    in it (positives / images with a known value), are close to the overall ones
    (:func:`cxrkit.data.splits.stratify.assign_grouped`); the test set is split off first, the same way, so it
    does not depend on ``n_folds``. With ``group="image"`` images are stratified by ``iterstrat``
    (NaN counting as negative). Units (patients or images) are taken in sorted id order, so the
    result depends on the data and the seed, not on the row order of ``table``.

    With ``test_split="official"`` the test split is the dataset's official test images (the
    rows whose ``official_split`` is ``"test"``: NIH's test_list.txt, MIMIC's split file, CheXpert's
    valid.csv, VinDr's test file) and the folds are made from the other rows, the same way;
    ``test_size`` is not used (``attrs["test_size"]`` records the official test's share of the
    images).

    Args:
        table: data table (``image``, ``patient_id``, label columns).
        labels: label columns to stratify on; default ``table.attrs["labels"]``.
        n_folds: number of cross-validation folds, >= 2.
        test_size: fraction of the images held out for test, in ``[0, 1)`` (for
            ``group="patient"`` met as closely as whole patients allow); 0 makes no test split.
        seed: random state (ties are broken at random).
        group: ``"patient"`` (no patient crosses splits) or ``"image"`` (leaks patients).
        test_split: ``"stratified"`` (``test_size`` of the images) or ``"official"``.

    Returns:
        The splits table (columns ``image, patient_id, split, fold``) in table row order;
        ``attrs["test_split"]`` is set with ``"official"``.

    Raises:
        ValueError: invalid arguments, missing or duplicated ids, too few units for the folds; with
            ``test_split="official"``, a table without official test images (naming its dataset).
        LeakageError: the official test set shares patients with the other images (naming some).
    """
    _check_arguments(n_folds, test_size, group, test_split)
    labels = table_labels(table, labels)
    check_table(table)
    if test_split == "official":
        return _official(table, labels, int(n_folds), int(seed), group)

    values = table[labels].to_numpy(dtype=float)
    if group == "patient":
        inverse = units(table["patient_id"])
        n_units = inverse.max() + 1
        counts, known = (np.zeros((n_units, len(labels)), dtype=np.int64) for _ in range(2))
        np.add.at(counts, inverse, values == 1)
        np.add.at(known, inverse, ~np.isnan(values))
        is_test, fold = assign_grouped(counts, known, np.bincount(inverse), int(n_folds), float(test_size),
                                       int(seed))
    else:
        inverse = units(table["image"])
        order = np.argsort(inverse)
        is_test, fold = assign_mis(values[order] == 1, int(n_folds), float(test_size), int(seed), "image")
    return splits_frame(table, is_test[inverse], fold[inverse],
                         dict(n_folds=int(n_folds), test_size=float(test_size), seed=int(seed), group=group,
                              labels=labels))


def _check_arguments(n_folds: int, test_size: float, group: str, test_split: str) -> None:
    """Raise ValueError naming the first of :func:`make_splits`'s arguments out of range."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds: need an integer >= 2, got {n_folds!r}")
    if not 0 <= test_size < 1:
        raise ValueError(f"test_size: need 0 <= test_size < 1, got {test_size!r}")
    if group not in GROUPS:
        raise ValueError(f"group: need one of {GROUPS}, got {group!r}")
    if test_split not in TEST_SPLITS:
        raise ValueError(f"test_split: need one of {TEST_SPLITS}, got {test_split!r}")


def official_test_rows(table: pd.DataFrame) -> np.ndarray:
    """Whether each row is an official test image (``official_split == "test"``), checked to share
    no patient with the other rows.

    Raises:
        ValueError: no ``official_split`` column or no test row (naming ``attrs["dataset"]``).
        LeakageError: patients with images on both sides, named with their counts.
    """
    dataset = table.attrs.get("dataset", "this dataset")
    if "official_split" not in table.columns or not (table["official_split"] == "test").any():
        raise ValueError(f"test_split official: {dataset!r} has no official test images here (no rows with "
                         f"official_split 'test'; see README, 'Splits')")
    is_test = (table["official_split"] == "test").to_numpy()
    pid = table["patient_id"].astype(str)
    shared = sorted(set(pid[is_test]) & set(pid[~is_test]))
    if shared:
        raise LeakageError(f"test_split official: the official test set of {dataset!r} shares {len(shared)} patient(s) "
                           f"with the other images, e.g. {first(shared)}; its folds cannot be patient-grouped")
    return is_test


def _official(table: pd.DataFrame, labels: list[str], n_folds: int, seed: int, group: str) -> pd.DataFrame:
    """The official test images as the test split, folds of the rest (as :func:`make_splits`)."""
    is_test = official_test_rows(table)
    rest = table.loc[~is_test].reset_index(drop=True)
    rest.attrs = dict(table.attrs)
    folds = make_splits(rest, labels, n_folds=n_folds, test_size=0.0, seed=seed, group=group)
    fold = np.full(len(table), -1, dtype=int)
    fold[~is_test] = folds["fold"].to_numpy()
    return splits_frame(table, is_test, fold, dict(n_folds=n_folds, test_size=float(is_test.mean()), seed=seed,
                                                   group=group, labels=labels, test_split="official"))
