"""The columns of the common table, parsed from a source CSV's raw text: labels under the
uncertainty and blank policies, ids, views, ages; and the table every loader assembles from them.

Every table starts with :data:`BASE_COLUMNS`, then optional metadata (``sex``, ``age``,
``official_split``), then one float64 column per label holding 1.0, 0.0 or NaN (unknown, masked).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from cxrkit.data.tables import DataError, lines_of

#: Columns every table starts with, in this order.
BASE_COLUMNS: tuple[str, ...] = ("image", "path", "patient_id", "study", "view")

#: Uncertainty policies for -1 labels: value each maps to.
UNCERTAIN_POLICIES: dict[str, float] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}
#: Blank-cell policies: value each maps to.
BLANK_POLICIES: dict[str, float] = {"zeros": 0.0, "nan": np.nan}


def blank_to_nan(s: pd.Series) -> pd.Series:
    """Text cells stripped, blank ones missing (NaN)."""
    s = s.str.strip()
    return s.where(s != "")


def view_column(s: pd.Series) -> pd.Series:
    """A view position column (``PA``, ``AP``, ``LATERAL``, ...): upper case, blank = missing."""
    return blank_to_nan(s).str.upper()


def age_column(s: pd.Series, column: str, file: Path, lines: pd.Series) -> pd.Series:
    """Ages as float64 (blank = NaN).

    Raises:
        DataError: naming the file, the column and the lines of non-numeric ages.
    """
    text = blank_to_nan(s)
    num = pd.to_numeric(text, errors="coerce")
    bad = text.notna() & num.isna()
    if bad.any():
        raise DataError(f"{file}: non-numeric {column!r} at {lines_of(bad, lines, s)}")
    return num.astype(np.float64)


def resolve_policy(policy: str | dict[str, str], labels: Sequence[str]) -> dict[str, str]:
    """Per-label uncertainty policy from a name or a {label: policy, 'default': policy} dict."""
    if isinstance(policy, str):
        per = dict.fromkeys(labels, policy)
    elif isinstance(policy, dict):
        unknown = [k for k in policy if k != "default" and k not in labels]
        if unknown:
            raise DataError(f"uncertain: keys {unknown} are not among the labels {list(labels)}")
        default = policy.get("default", "ignore")
        per = {lab: policy.get(lab, default) for lab in labels}
    else:
        raise DataError(f"uncertain must be a policy name or a dict, got {policy!r}")
    bad = sorted({p for p in per.values() if p not in UNCERTAIN_POLICIES})
    if bad:
        raise DataError(f"unknown uncertainty policy {bad}; known: {list(UNCERTAIN_POLICIES)}")
    return per


def parse_labels(
    raw: pd.DataFrame,
    labels: Sequence[str],
    file: Path,
    *,
    uncertain: str | dict[str, str] | None,
    blank: str | None,
) -> pd.DataFrame:
    """Validate and map raw label strings to float64 1/0/NaN.

    Accepted values: 0 and 1; -1 only with an ``uncertain`` policy; blank only with a ``blank``
    policy. Every violation, in every column, is reported in one DataError.
    """
    per = resolve_policy(uncertain, labels) if uncertain is not None else None
    if blank is not None and blank not in BLANK_POLICIES:
        raise DataError(f"unknown blank policy {blank!r}; known: {list(BLANK_POLICIES)}")
    lines = pd.Series(raw.index + 2)
    accepted = {0.0, 1.0} | ({-1.0} if per is not None else set())
    accepted_text = "0, 1" + (", -1" if per is not None else "") + (", blank" if blank else "")
    out: dict[str, np.ndarray] = {}
    problems = []
    for lab in labels:
        # each distinct cell is parsed once (a label column holds a handful: '1.0', '0', '-1', '')
        codes, distinct = pd.factorize(raw[lab], use_na_sentinel=False)
        text = pd.Series(distinct, dtype=object).str.strip()
        blank_text = (text == "").to_numpy()
        parsed = pd.to_numeric(text.where(~blank_text), errors="coerce").to_numpy(dtype=np.float64)
        is_blank, num = blank_text[codes], parsed[codes]
        bad = ~np.isin(num, list(accepted)) & ~(is_blank & (blank is not None))
        if bad.any():
            problems.append(f"column {lab!r}: {lines_of(bad, lines, raw[lab])}")
            continue
        vals = num.copy()
        if per is not None:
            vals[num == -1.0] = UNCERTAIN_POLICIES[per[lab]]
        if blank is not None:
            vals[is_blank] = BLANK_POLICIES[blank]
        out[lab] = vals
    if problems:
        raise DataError(
            f"{file}: invalid label values (accepted: {accepted_text}) in " + "; ".join(problems)
        )
    return pd.DataFrame(out, index=raw.index)


def assemble(
    image: pd.Series,
    path: pd.Series,
    patient_id: pd.Series,
    study: pd.Series,
    view: pd.Series,
    meta: dict[str, pd.Series],
    labels: pd.DataFrame,
) -> pd.DataFrame:
    """The common table (:data:`BASE_COLUMNS`, metadata, float64 labels) from a loader's columns."""
    cols: dict[str, Any] = {
        "image": image.to_numpy(),
        "path": path.to_numpy(),
        "patient_id": patient_id.to_numpy(),
        "study": study.to_numpy(),
        "view": view.to_numpy(),
    }
    cols.update({k: v.to_numpy() for k, v in meta.items()})
    cols.update({k: labels[k].to_numpy(dtype=np.float64) for k in labels.columns})
    return pd.DataFrame(cols)


def join_paths(base: Path, rel: pd.Series) -> pd.Series:
    """Absolute image paths: ``base`` joined with each relative path (``/`` as the OS separator)."""
    prefix = str(base) + os.sep
    return prefix + rel.str.replace("/", os.sep, regex=False)


class Built(NamedTuple):
    """A loader's table before the common checks, with its rows' source lines."""

    table: pd.DataFrame
    lines: pd.Series  # CSV line number of each row in ``file``
    file: Path
