"""Tables the kit reads: errors that name the file, rows and keys; key checks; the label matrix
and the data fingerprint.

Bad input raises :class:`DataError` naming the file, rows (1-based CSV line numbers, header =
line 1) and keys. Identifiers stay text: image names such as ``000700`` or ``NA`` and patient ids
are never read as numbers or missing values (:func:`read_keyed_csv`).
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MAX_LISTED = 10  # offending rows / files named in an error message

#: Cell values read as a missing id (pandas' NA spellings; ids are read as literal strings).
MISSING_SPELLINGS = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "n/a", "null", "NULL", "None", "none",
                               "<NA>", "#N/A", "-nan", "-NaN"})


class DataError(ValueError):
    """Bad dataset input: a file, column, row or image that cannot be used as given."""


def label_matrix(table: pd.DataFrame, labels: Sequence[str] | None = None) -> np.ndarray:
    """(N, L) float64 label matrix with NaN for unknown; columns ``labels`` or ``attrs['labels']``."""
    labels = list(labels) if labels is not None else table.attrs.get("labels")
    if labels is None:
        raise DataError("table has no attrs['labels']; pass labels= explicitly")
    return table[labels].to_numpy(dtype=np.float64)


def fingerprint(table: pd.DataFrame) -> str:
    """Short sha256 hex (16 chars) of image ids, patient ids and labels, in row order."""
    labels = table.attrs["labels"]
    code = {1.0: "1", 0.0: "0"}
    parts = [table["image"].astype(str), table["patient_id"].astype(str)]
    parts += [table[lab].map(code).fillna("").astype(str) for lab in labels]
    rows = parts[0].str.cat(parts[1:], sep="\x1f")
    h = hashlib.sha256("\x1f".join(labels).encode())
    h.update("\n".join(rows.tolist()).encode())
    return h.hexdigest()[:16]


def listing(items: Sequence[str], total: int | None = None) -> str:
    """The first :data:`MAX_LISTED` items, comma-separated, and how many there are in total."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", ... ({total} in total)" if total > MAX_LISTED else "")


def lines_of(
    mask: pd.Series | np.ndarray, lines: pd.Series, values: pd.Series | None = None
) -> str:
    """'line 5: 'x', line 9: 'y', ...' for the rows where ``mask`` is true."""
    mask = np.asarray(mask, dtype=bool)
    sel = np.flatnonzero(mask)
    items = [
        f"line {lines.iloc[i]}" + (f": {values.iloc[i]!r}" if values is not None else "")
        for i in sel[:MAX_LISTED]
    ]
    return listing(items, len(sel))


def read_raw_csv(path: Path) -> pd.DataFrame:
    """A source CSV with every cell as a raw string (blank = ''), index 0..n-1 (CSV line = index + 2)."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return df.reset_index(drop=True)


def bad_keys(keys: pd.Series) -> tuple[np.ndarray, dict[Any, list[int]]]:
    """Where a key column breaks "one row per key": the rows whose key is empty (missing or
    blank), and every repeated key with its row positions (0-based), in order of first appearance.

    The one check behind :func:`check_keys` (tables the kit reads back), the loaders' image names
    (:class:`cxrkit.data.datasets.CXRDataset`) and the splits' image ids
    (:func:`cxrkit.data.splits.make_splits`), each of which words its own error.
    """
    keys = keys.reset_index(drop=True)
    empty = (keys.isna() | (keys.astype(str).str.strip() == "")).to_numpy()
    dup = keys.duplicated(keep=False).to_numpy()
    repeated: dict[Any, list[int]] = {}
    for pos in np.flatnonzero(dup):
        repeated.setdefault(keys.iloc[pos], []).append(int(pos))
    return empty, repeated


def check_keys(keys: pd.Series, file: str | os.PathLike, column: str) -> None:
    """Refuse empty or repeated keys (each row of ``file`` must name a different one).

    Args:
        keys: the key column as text, index 0..n-1 (CSV line = index + 2).
        file: the file named in the message.
        column: the key column's name.

    Raises:
        DataError: naming the file, the column, the repeated keys and their CSV lines.
    """
    empty, repeated = bad_keys(keys)
    lines = pd.Series(np.arange(len(keys)) + 2)
    if empty.any():
        raise DataError(f"{file}: empty {column!r} at {lines_of(empty, lines)}")
    if repeated:
        where = {key: [str(pos + 2) for pos in rows] for key, rows in repeated.items()}
        items = [f"{k!r} on lines {', '.join(v[:-1])} and {v[-1]}" for k, v in where.items()]
        raise DataError(f"{file}: {column!r} is not unique: {listing(items)}")


def read_keyed_csv(path: str | os.PathLike, key: str, *, text: Sequence[str] = (),
                   what: str = "table") -> pd.DataFrame:
    """Read back a table the kit wrote (or a dataset's CSV) with one row per ``key``.

    The ``key`` column and the ``text`` columns present are read as literal text (no NA
    conversion, no numbers: ``000700`` stays ``000700``, ``NA`` stays ``NA``); every other
    column is parsed by pandas as usual (numbers, blank = NaN).

    Args:
        path: the CSV file.
        key: the identifier column; every row must hold a different, non-empty one.
        text: other identifier columns kept as text when present (e.g. ``Patient_ID``).
        what: what the file is, for the missing-file message.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: the file cannot be parsed, has no ``key`` column, or a key is empty or on
            several rows (naming the file, the keys and the CSV lines).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    wanted = {key, *text}
    try:
        table = pd.read_csv(path)
        ids = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, usecols=lambda c: c in wanted)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if key not in table.columns:
        raise DataError(f"{path}: no {key!r} column; the file has {list(table.columns)}")
    for col in ids.columns:
        table[col] = ids[col].to_numpy()
    check_keys(table[key], path, key)
    return table


def require_columns(df: pd.DataFrame, required: Sequence[str], file: Path) -> None:
    """Refuse a table without the ``required`` columns, naming the close spellings it has.

    Raises:
        DataError: naming the file, the missing columns and the columns the file has.
    """
    missing = [c for c in required if c not in df.columns]
    if not missing:
        return
    extra = [c for c in df.columns if c not in required]
    hints = []
    for col in missing:
        close = difflib.get_close_matches(col, extra, n=1, cutoff=0.75)
        hints.append(
            f"{col!r}" + (f" (found {close[0]!r}: did you mean {col!r}?)" if close else "")
        )
    raise DataError(
        f"{file}: missing required column(s) {', '.join(hints)}; the file has {list(df.columns)}"
    )
