"""Label co-occurrence estimated from a label matrix (unknown labels excluded pairwise): the prior
of the co-occurrence GCN refiner and of the study's gain-vs-co-occurrence analysis."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def conditional_matrix(y: np.ndarray) -> np.ndarray:
    """``A[m, n] = c_mn / c_mm``: P(label n = 1 | label m = 1) estimated from a label matrix.

    Rawlekar et al. (2024), eq. 1-2, with unknown labels (NaN) excluded pairwise: ``c_mn``
    counts images where both are positive, ``c_mm`` images where m is positive and n is known.
    Entries without any such image are NaN.
    """
    y = np.asarray(y, dtype=float)
    known = np.isfinite(y).astype(float)
    pos = np.where(known > 0, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos.T @ pos) / (pos.T @ known)


def conditional_probability(y: np.ndarray | pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """:func:`conditional_matrix` as a labelled frame: P(column label = 1 | row label = 1)."""
    return pd.DataFrame(conditional_matrix(np.asarray(y, dtype=float)), index=list(labels), columns=list(labels))
