"""Prediction files: ``pred_*.csv`` (``image`` + one probability column per label) with a JSON
sidecar naming what they were made on, the coupling matrices a run writes, and the check that
predictions can be compared or combined."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.data.tables import DataError, check_keys, read_keyed_csv
from cxrkit.utils.files import atomic_write


class PredictionMismatch(ValueError):
    """Prediction files that cannot be combined or compared (other data, folds or labels)."""


def write_predictions(path: str | Path, images: Sequence[str], labels: Sequence[str], probs: np.ndarray,
                      meta: dict[str, Any]) -> Path:
    """Write ``image`` + one probability column per label as CSV, and ``<path>.json`` with ``meta``.

    ``meta`` should hold at least ``data_fingerprint``, ``split``, ``fold``, ``variant``, ``tta``.
    """
    path = Path(path)
    df = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=list(labels))
    df.insert(0, "image", list(images))
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6f"))
    meta = {**meta, "labels": list(labels), "n": len(df)}
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return path


def read_predictions(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a prediction CSV and its metadata sidecar; image ids stay text (``000700``, ``NA``).

    Raises:
        FileNotFoundError: the prediction file does not exist.
        DataError: it has no ``image`` column, an empty image id, or an image on several rows
            (naming them and their CSV lines), or its sidecar is not valid JSON.
    """
    path = Path(path)
    table = read_keyed_csv(path, "image", what="prediction file")
    meta_file = path.with_suffix(".json")
    try:
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except ValueError as exc:
        raise DataError(f"{meta_file}: not valid JSON ({exc})") from exc
    return table, meta


def read_coupling(path: str | Path) -> pd.DataFrame:
    """Read a coupling matrix a run wrote (``coupling.csv``, ``effective_coupling.csv``): one row
    and one column per label, in the same order.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: a label on several rows or columns (naming it), rows and columns naming other
            labels or another order, or a value that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"coupling matrix not found: {path}")
    try:
        with open(path, newline="") as fh:
            columns = next(csv.reader(fh), [])[1:]
        rows = pd.read_csv(path, usecols=[0], dtype=str, keep_default_na=False).iloc[:, 0]
        table = pd.read_csv(path, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    check_keys(rows, path, "row label")
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise DataError(f"{path}: column label(s) {twice} appear more than once in the header")
    if list(rows) != columns:
        raise DataError(f"{path}: rows {list(rows)} and columns {columns} must name the same labels in the same order")
    try:
        values = table.to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: a value is not a number ({exc})") from exc
    return pd.DataFrame(values, index=pd.Index(list(rows)), columns=columns)


def check_compatible(metas: Sequence[dict[str, Any]], names: Sequence[str], *, same_fold: bool = True) -> None:
    """Refuse to combine predictions made on different data, splits, labels or (optionally) folds,
    or whose ``.json`` sidecar (what they were made on) is missing."""
    lacking = [n for n, m in zip(names, metas) if not m.get("data_fingerprint")]
    if lacking:
        raise PredictionMismatch(f"no metadata sidecar (.json with the data fingerprint and fold) for {lacking}: "
                                 f"predictions of unknown origin cannot be compared or combined")
    keys = ["data_fingerprint", "splits_fingerprint", "labels", "split"] + (["fold"] if same_fold else [])
    for key in keys:
        values = {json.dumps(m.get(key), sort_keys=True) for m in metas}
        if len(values) > 1:
            detail = ", ".join(f"{n}: {m.get(key)!r}" for n, m in zip(names, metas))
            raise PredictionMismatch(f"predictions differ in {key!r} and cannot be compared: {detail}")
