"""Patient-grouped multilabel stratified splits: a held-out test set plus K cross-validation folds.

With ``group="patient"`` (the default) whole patients are assigned, so no patient is in two
folds or in both test and train, stratified on what the folds are used for: each patient's
positive *image* counts per label, and the parts' sizes in images (own grouped count
stratification, see :mod:`cxrkit.stratify`: iterative stratification generalised to counts,
then a local search). ``group="image"`` stratifies images with multilabel iterative
stratification (Sechidis et al. 2011, via ``iterstrat``) as in the paper; it leaks patients
across folds, which :func:`leakage_report` measures. :func:`split_comparison` sets the worst
label-prevalence gap of a split against random patient folds and image-level MIS.

A splits table has one row per image, in the order of the data table it was made from:

* ``image``, ``patient_id``: ids copied from the data table;
* ``split``: ``"train"`` or ``"test"``;
* ``fold``: for train rows the fold ``0..K-1`` in which the row is in *validation*; ``-1`` for
  test rows.

``splits.attrs`` holds ``n_folds``, ``test_size``, ``seed``, ``group`` and ``labels``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.paths import resolve
from cxrkit.provenance import atomic_write, write_json
from cxrkit.stratify import assign_grouped, assign_mis, assign_random

GROUPS = ("patient", "image")
#: The assignment algorithm of each ``group``, recorded in ``folds.json`` (``method``): folds made
#: by another algorithm are stale for a study that asks for the same parameters.
SPLIT_METHODS = {"patient": "grouped image-count stratification v1 (cxrkit.stratify)",
                 "image": "multilabel iterative stratification (iterstrat)"}
SPLIT_COLUMNS = ["image", "patient_id", "split", "fold"]
_PARAMS = ("n_folds", "test_size", "seed", "group")
_SHOW = 10  # ids named in an error message


class LeakageError(ValueError):
    """A patient appears in more than one fold, or in both test and train."""


def _first(values: Sequence[Any], n: int = _SHOW) -> str:
    """``values`` as a short comma-separated list: the first ``n`` and how many more."""
    values = list(values)
    head = ", ".join(repr(v) for v in values[:n])
    return head + (f" and {len(values) - n} more" if len(values) > n else "")


def _table_labels(table: pd.DataFrame, labels: Sequence[str] | None) -> list[str]:
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


def _check_table(table: pd.DataFrame) -> None:
    """Check the id columns: present, ``image`` unique, no missing patient ids."""
    for col in ("image", "patient_id"):
        if col not in table.columns:
            raise ValueError(f"table has no {col!r} column; columns: {list(table.columns)}")
    if len(table) == 0:
        raise ValueError("table is empty")
    dup = table["image"][table["image"].duplicated()].unique()
    if len(dup):
        raise ValueError(f"image ids must be unique; duplicated: {_first(dup)}")
    bad = table["patient_id"].isna().to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{bad.sum()} row(s) have no patient_id (rows {_first(rows.tolist())}; "
            f"images {_first(table['image'].to_numpy()[rows].tolist())}); every image needs a patient"
        )


def make_splits(table: pd.DataFrame, labels: Sequence[str] | None = None, n_folds: int = 3,
                test_size: float = 0.2, seed: int = 0, group: str = "patient") -> pd.DataFrame:
    """Split a data table into a held-out test set and ``n_folds`` stratified folds.

    Label value 1 is positive, 0 negative and NaN unknown. With ``group="patient"`` whole
    patients are assigned so that each part's share of the images, and each label's prevalence
    in it (positives / images with a known value), are close to the overall ones
    (:func:`cxrkit.stratify.assign_grouped`); the test set is split off first, the same way, so it
    does not depend on ``n_folds``. With ``group="image"`` images are stratified by ``iterstrat``
    (NaN counting as negative). Units (patients or images) are taken in sorted id order, so the
    result depends on the data and the seed, not on the row order of ``table``.

    Args:
        table: data table (``image``, ``patient_id``, label columns).
        labels: label columns to stratify on; default ``table.attrs["labels"]``.
        n_folds: number of cross-validation folds, >= 2.
        test_size: fraction of the images held out for test, in ``[0, 1)`` (for
            ``group="patient"`` met as closely as whole patients allow); 0 makes no test split.
        seed: random state (ties are broken at random).
        group: ``"patient"`` (no patient crosses splits) or ``"image"`` (leaks patients).

    Returns:
        The splits table (columns ``image, patient_id, split, fold``) in table row order.

    Raises:
        ValueError: invalid arguments, missing or duplicated ids, too few units for the folds.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds: need an integer >= 2, got {n_folds!r}")
    if not 0 <= test_size < 1:
        raise ValueError(f"test_size: need 0 <= test_size < 1, got {test_size!r}")
    if group not in GROUPS:
        raise ValueError(f"group: need one of {GROUPS}, got {group!r}")
    labels = _table_labels(table, labels)
    _check_table(table)

    values = table[labels].to_numpy(dtype=float)
    if group == "patient":
        inverse = _units(table["patient_id"])
        n_units = inverse.max() + 1
        counts, known = (np.zeros((n_units, len(labels)), dtype=np.int64) for _ in range(2))
        np.add.at(counts, inverse, values == 1)
        np.add.at(known, inverse, ~np.isnan(values))
        is_test, fold = assign_grouped(counts, known, np.bincount(inverse), int(n_folds), float(test_size),
                                       int(seed))
    else:
        inverse = _units(table["image"])
        order = np.argsort(inverse)
        is_test, fold = assign_mis(values[order] == 1, int(n_folds), float(test_size), int(seed), "image")
    return _splits_frame(table, is_test[inverse], fold[inverse],
                         dict(n_folds=int(n_folds), test_size=float(test_size), seed=int(seed), group=group,
                              labels=labels))


def _units(key: pd.Series) -> np.ndarray:
    """Unit index of each row: the rank of its id (as a string) among the sorted unique ids."""
    return np.unique(key.astype(str).to_numpy(), return_inverse=True)[1].reshape(-1)


def _splits_frame(table: pd.DataFrame, is_test: np.ndarray, fold: np.ndarray,
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


def _n_folds(splits: pd.DataFrame) -> int:
    """K: ``splits.attrs["n_folds"]`` or, when absent, one more than the largest fold."""
    return int(splits.attrs.get("n_folds", splits["fold"].max() + 1))


def _parts(splits: pd.DataFrame) -> pd.Series:
    """The part of each row: ``"fold k"`` or ``"test"``."""
    return pd.Series(np.where(splits["split"].to_numpy() == "test", "test",
                              "fold " + splits["fold"].astype(str).to_numpy()),
                     index=splits.index)


def _part_order(part: str) -> tuple[bool, int]:
    """Sort key of part names: folds by number, then test."""
    return part == "test", int(part.split()[1]) if part != "test" else 0


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
    labels = _table_labels(table, labels)
    data = table.set_index(table["image"].astype(str))  # ids read back by load_splits are str
    ids = splits["image"].astype(str)
    missing = ids[~ids.isin(data.index)]
    if len(missing):
        raise ValueError(f"{len(missing)} image(s) of the splits are not in the table: {_first(missing)}")
    values = data.loc[ids, labels].to_numpy(dtype=float)
    parts = _parts(splits).to_numpy()
    order = [f"fold {k}" for k in range(_n_folds(splits))] + (["test"] if (parts == "test").any() else [])
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
    labels = _table_labels(table, labels)
    k, t, seed = int(splits.attrs["n_folds"]), float(splits.attrs["test_size"]), int(splits.attrs["seed"])
    data = table.set_index(table["image"].astype(str)).loc[splits["image"].astype(str)].reset_index(drop=True)
    inverse = _units(data["patient_id"])
    is_test, fold = assign_random(inverse.max() + 1, k, t, seed)
    others = {
        "random patients": _splits_frame(data, is_test[inverse], fold[inverse], {"n_folds": k}),
        "image-level MIS": make_splits(data, labels, n_folds=k, test_size=t, seed=seed, group="image"),
    }
    rows = {}
    for name, s in {f"this split (group={splits.attrs['group']})": splits, **others}.items():
        gaps, sizes = balance_gaps(data, s, labels), s.loc[s["fold"] >= 0, "fold"].value_counts()
        rows[name] = {"worst_fold_gap": gaps.drop("test", errors="ignore").max(),
                      "test_gap": gaps.get("test", np.nan), "fold_images_min": int(sizes.min()),
                      "fold_images_max": int(sizes.max()), "patients_crossing": len(leakage_report(s))}
    return pd.DataFrame.from_dict(rows, orient="index")


def leakage_report(splits: pd.DataFrame) -> pd.DataFrame:
    """Patients found in more than one part (a fold or the test set), without raising.

    Returns:
        One row per crossing patient, most parts first: ``patient_id``, ``n_images``,
        ``n_parts`` and ``parts`` (e.g. ``"fold 0, test"``). Empty when nothing leaks.
        ``attrs["summary"]`` holds the number of leaking patients and their images, and the
        totals of the splits table.
    """
    frame = pd.DataFrame({"patient_id": splits["patient_id"], "part": _parts(splits)})
    per_patient = frame.groupby("patient_id").agg(n_images=("part", "size"), n_parts=("part", "nunique"))
    report = per_patient[per_patient["n_parts"] > 1].reset_index()
    crossing = frame[frame["patient_id"].isin(report["patient_id"])].drop_duplicates()
    where = crossing.groupby("patient_id")["part"].agg(lambda p: ", ".join(sorted(p, key=_part_order)))
    report["parts"] = report["patient_id"].map(where)
    report = report.sort_values(["n_parts", "patient_id"], ascending=[False, True], ignore_index=True)
    report.attrs["summary"] = {
        "patients": len(report), "images": int(report["n_images"].sum()),
        "patients_total": len(per_patient), "images_total": len(splits),
    }
    return report


def check_leakage(splits: pd.DataFrame) -> None:
    """Raise if any patient crosses folds or test/train.

    Raises:
        LeakageError: naming up to 10 crossing patients and where they appear.
    """
    report = leakage_report(splits)
    if len(report):
        where = "; ".join(f"{p!r} in {parts}" for p, parts in
                          zip(report["patient_id"][:_SHOW], report["parts"][:_SHOW], strict=True))
        more = f" and {len(report) - _SHOW} more" if len(report) > _SHOW else ""
        raise LeakageError(
            f"{len(report)} patient(s) appear in more than one fold or in both test and train "
            f"({report['n_images'].sum()} images): {where}{more}"
        )


def _split_files(path: str | Path) -> tuple[Path, Path]:
    """``(csv, json)`` for a folder (``folds.csv``/``folds.json`` in it) or a ``.csv`` path."""
    p = resolve(path)
    if p.suffix == ".csv":
        return p, p.with_suffix(".json")
    return p / "folds.csv", p / "folds.json"


def _counts(splits: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images and patients per part."""
    grouped = splits.groupby(_parts(splits))
    return {part: {"images": int(len(g)), "patients": int(g["patient_id"].nunique())}
            for part, g in grouped}


def save_splits(splits: pd.DataFrame, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``folds.csv`` (the splits table) and ``folds.json`` (parameters and counts).

    ``folds.json`` holds ``seed``, ``n_folds``, ``test_size``, ``group`` (from ``meta`` or else
    ``splits.attrs``), ``labels``, the ``fingerprint`` of the data, images/patients per part, and
    any other ``meta`` entries. Both files are written atomically.

    Args:
        splits: a splits table (from :func:`make_splits`).
        path: a folder, or the ``.csv`` path (the JSON goes next to it with suffix ``.json``).
        meta: must hold ``fingerprint`` (a string identifying the data table); may hold the
            split parameters.

    Returns:
        The path of the CSV file.

    Raises:
        ValueError: missing fingerprint or parameter, or ``meta`` contradicting ``splits.attrs``.
    """
    missing = [c for c in SPLIT_COLUMNS if c not in splits.columns]
    if missing:
        raise ValueError(f"splits table lacks column(s) {missing}")
    if not isinstance(meta.get("fingerprint"), str):
        raise ValueError("meta['fingerprint']: need the data fingerprint string")
    record: dict[str, Any] = {}
    for key in _PARAMS:
        if key in meta and key in splits.attrs and meta[key] != splits.attrs[key]:
            raise ValueError(f"meta[{key!r}]={meta[key]!r} contradicts splits.attrs[{key!r}]={splits.attrs[key]!r}")
        if key not in meta and key not in splits.attrs:
            raise ValueError(f"{key!r}: not in meta nor in splits.attrs")
        record[key] = meta.get(key, splits.attrs.get(key))
    if "labels" in splits.attrs:
        record["labels"] = list(splits.attrs["labels"])
    if "method" in splits.attrs:
        record["method"] = splits.attrs["method"]
    record.update({k: v for k, v in meta.items() if k not in record})
    record["counts"] = _counts(splits)

    csv_path, json_path = _split_files(path)
    atomic_write(csv_path, lambda tmp: splits[SPLIT_COLUMNS].to_csv(tmp, index=False))
    write_json(json_path, record)
    return csv_path


def _check_ids(splits: pd.DataFrame, csv_path: Path) -> None:
    """In place: each image once with a patient id, ``fold`` an integer (ids stay text).

    Raises:
        ValueError (DataError): an empty or repeated image id, an empty patient id or a fold that
            is not an integer, naming the ids and CSV lines.
    """
    from cxrkit.datasets import DataError, check_keys

    check_keys(splits["image"], csv_path, "image")
    lines = splits.index + 2
    no_pid = splits["patient_id"].str.strip() == ""
    if no_pid.any():
        raise DataError(f"{csv_path}: empty 'patient_id' for image(s) {_first(splits.loc[no_pid, 'image'])} "
                        f"(lines {_first(lines[no_pid].tolist())})")
    fold = pd.to_numeric(splits["fold"].str.strip(), errors="coerce")
    bad = fold.isna() | (fold != fold.round())
    if bad.any():
        raise DataError(f"{csv_path}: 'fold' is not an integer for image(s) {_first(splits.loc[bad, 'image'])} "
                        f"(lines {_first(lines[bad].tolist())}: {_first(splits.loc[bad, 'fold'])})")
    splits["fold"] = fold.astype(int)


def load_splits(path: str | Path, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read splits written by :func:`save_splits`; ids are read as strings.

    With ``table``: checks that the splits and the table hold the same images with the same
    patient ids, returns the splits in *table row order* (so :func:`fold_indices` positions index
    the table), and for ``group="patient"`` re-runs :func:`check_leakage`.

    Args:
        path: the folder or the ``.csv`` path given to :func:`save_splits`.
        table: the data table the splits are used with.

    Returns:
        The splits table; ``attrs`` holds the contents of ``folds.json``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: malformed splits (an image on several rows, an empty id, a fold that is not
            an integer, ...: naming the ids and lines), or splits and table that do not match
            (naming the images added or removed and those whose patient id changed).
        LeakageError: a patient crosses parts in patient-grouped splits.
    """
    csv_path, json_path = _split_files(path)
    for p in (csv_path, json_path):
        if not p.is_file():
            raise FileNotFoundError(f"no splits file {p}")
    splits = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False)
    record = json.loads(json_path.read_text())
    absent = [k for k in _PARAMS if k not in record]
    if absent:
        raise ValueError(f"{json_path}: missing key(s) {absent}")
    missing = [c for c in SPLIT_COLUMNS if c not in splits.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {missing}")
    _check_ids(splits, csv_path)
    n_folds = int(record["n_folds"])
    is_test = splits["split"] == "test"
    bad = ~splits["split"].isin(["train", "test"]) | (is_test != (splits["fold"] == -1)) | \
        (~is_test & ~splits["fold"].between(0, n_folds - 1))
    if bad.any():
        raise ValueError(f"{csv_path}: invalid split/fold on image(s) {_first(splits.loc[bad, 'image'])} "
                         f"(train rows need fold 0..{n_folds - 1}, test rows fold -1)")

    if table is not None:
        _check_table(table)
        ids = table["image"].astype(str)
        not_in_table = splits.loc[~splits["image"].isin(ids), "image"]
        if len(not_in_table):
            raise ValueError(f"{len(not_in_table)} image(s) of {csv_path.name} are not in the table: "
                             f"{_first(not_in_table)}")
        not_in_splits = ids[~ids.isin(splits["image"])]
        if len(not_in_splits):
            raise ValueError(f"{len(not_in_splits)} image(s) of the table are not in {csv_path.name}: "
                             f"{_first(not_in_splits)}")
        splits = splits.set_index("image").loc[ids.to_numpy()].reset_index()
        other = splits["patient_id"].to_numpy() != table["patient_id"].astype(str).to_numpy()
        if other.any():
            raise ValueError(f"patient_id differs between {csv_path.name} and the table for image(s) "
                             f"{_first(splits.loc[other, 'image'])}")
    splits.attrs.update(record)
    if record["group"] == "patient":
        check_leakage(splits)
    return splits


def fold_indices(splits: pd.DataFrame, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Positional indices of train and validation rows for fold ``fold``.

    Train is every train row not in fold ``fold``; test rows are in neither.

    Raises:
        ValueError: ``fold`` outside ``0..K-1``.
    """
    k = _n_folds(splits)
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < k:
        raise ValueError(f"fold: need an integer in 0..{k - 1} (n_folds={k}), got {fold!r}")
    f = splits["fold"].to_numpy()
    train = (splits["split"].to_numpy() == "train")
    return np.flatnonzero(train & (f != fold)), np.flatnonzero(train & (f == fold))


def test_indices(splits: pd.DataFrame) -> np.ndarray:
    """Positional indices of the test rows (empty when there is no test split)."""
    return np.flatnonzero(splits["split"].to_numpy() == "test")


test_indices.__test__ = False  # not a pytest test despite the name
