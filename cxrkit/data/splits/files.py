"""``folds.csv`` and ``folds.json``: writing the splits and reading them back, checked against the
data table they are used with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.data.splits.leakage import check_leakage
from cxrkit.data.splits.table import PARAMS, SPLIT_COLUMNS, check_table, first, row_parts
from cxrkit.data.tables import DataError, check_keys
from cxrkit.utils.files import atomic_write, write_json
from cxrkit.utils.paths import resolve


def _split_files(path: str | Path) -> tuple[Path, Path]:
    """``(csv, json)`` for a folder (``folds.csv``/``folds.json`` in it) or a ``.csv`` path."""
    p = resolve(path)
    if p.suffix == ".csv":
        return p, p.with_suffix(".json")
    return p / "folds.csv", p / "folds.json"


def _counts(splits: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images and patients per part."""
    grouped = splits.groupby(row_parts(splits))
    return {part: {"images": int(len(g)), "patients": int(g["patient_id"].nunique())}
            for part, g in grouped}


def save_splits(splits: pd.DataFrame, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``folds.csv`` (the splits table) and ``folds.json`` (parameters and counts).

    ``folds.json`` holds ``seed``, ``n_folds``, ``test_size``, ``group`` (from ``meta`` or else
    ``splits.attrs``), ``labels``, ``test_split`` (``official`` splits only), the ``fingerprint``
    of the data, images/patients per part, and any other ``meta`` entries. Both files are written atomically.

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
    for key in PARAMS:
        if key in meta and key in splits.attrs and meta[key] != splits.attrs[key]:
            raise ValueError(f"meta[{key!r}]={meta[key]!r} contradicts splits.attrs[{key!r}]={splits.attrs[key]!r}")
        if key not in meta and key not in splits.attrs:
            raise ValueError(f"{key!r}: not in meta nor in splits.attrs")
        record[key] = meta.get(key, splits.attrs.get(key))
    if "labels" in splits.attrs:
        record["labels"] = list(splits.attrs["labels"])
    for key in ("method", "test_split"):
        if key in splits.attrs:
            record[key] = splits.attrs[key]
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
    check_keys(splits["image"], csv_path, "image")
    lines = splits.index + 2
    no_pid = splits["patient_id"].str.strip() == ""
    if no_pid.any():
        raise DataError(f"{csv_path}: empty 'patient_id' for image(s) {first(splits.loc[no_pid, 'image'])} "
                        f"(lines {first(lines[no_pid].tolist())})")
    fold = pd.to_numeric(splits["fold"].str.strip(), errors="coerce")
    bad = fold.isna() | (fold != fold.round())
    if bad.any():
        raise DataError(f"{csv_path}: 'fold' is not an integer for image(s) {first(splits.loc[bad, 'image'])} "
                        f"(lines {first(lines[bad].tolist())}: {first(splits.loc[bad, 'fold'])})")
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
    splits, record = _read_files(csv_path, json_path)
    if table is not None:
        splits = _in_table_order(splits, table, csv_path)
    splits.attrs.update(record)
    if record["group"] == "patient":
        check_leakage(splits)
    return splits


def _read_files(csv_path: Path, json_path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The splits table (ids as text, folds as integers) and the record of ``folds.json``, checked."""
    for p in (csv_path, json_path):
        if not p.is_file():
            raise FileNotFoundError(f"no splits file {p}")
    splits = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False)
    record = json.loads(json_path.read_text())
    absent = [k for k in PARAMS if k not in record]
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
        raise ValueError(f"{csv_path}: invalid split/fold on image(s) {first(splits.loc[bad, 'image'])} "
                         f"(train rows need fold 0..{n_folds - 1}, test rows fold -1)")
    return splits, record


def _in_table_order(splits: pd.DataFrame, table: pd.DataFrame, csv_path: Path) -> pd.DataFrame:
    """The splits in the row order of ``table``, checked to hold its images with its patient ids."""
    check_table(table)
    ids = table["image"].astype(str)
    not_in_table = splits.loc[~splits["image"].isin(ids), "image"]
    if len(not_in_table):
        raise ValueError(f"{len(not_in_table)} image(s) of {csv_path.name} are not in the table: "
                         f"{first(not_in_table)}")
    not_in_splits = ids[~ids.isin(splits["image"])]
    if len(not_in_splits):
        raise ValueError(f"{len(not_in_splits)} image(s) of the table are not in {csv_path.name}: "
                         f"{first(not_in_splits)}")
    splits = splits.set_index("image").loc[ids.to_numpy()].reset_index()
    other = splits["patient_id"].to_numpy() != table["patient_id"].astype(str).to_numpy()
    if other.any():
        raise ValueError(f"patient_id differs between {csv_path.name} and the table for image(s) "
                         f"{first(splits.loc[other, 'image'])}")
    return splits
