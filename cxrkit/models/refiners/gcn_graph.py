"""Graphs of the co-occurrence GCN refiner (``cooc_gcn``, :class:`cxrkit.models.refiners.gcn.CooccurrenceGCNRefiner`).

Both forms start from the conditional-probability prior of Rawlekar et al. (2024), eq. 1-2,
``A[m, n] = c_mn / c_mm = P(n | m)`` (:func:`cxrkit.data.cooccurrence.conditional_matrix`, from the
training fold's labels only), and turn it into the matrix ``A_hat`` each GCN layer multiplies by
(``H^l = rho(A_hat H^{l-1} W^l)``):

* :func:`normalized_adjacency` -- cxrkit's ``row`` form: ``A`` with its diagonal set to 1, then
  ``D^-1 A`` (``"row"``), ``D^-1/2 A D^-1/2`` (``"sym"``, Kipf & Welling 2017) or ``A`` as printed
  (``"none"``), ``D`` its row sums.
* :func:`reweighted_adjacency` -- the ``official`` form: the graph of Rawlekar et al.'s code
  (github.com/SamyakR99/MLR-GCN, ``models/mlrgcn.py``, ``Mlrgcn.__init__``), a variant of ML-GCN's
  re-weighting (Chen et al., CVPR 2019, eq. 8).

How the official graph relates to ML-GCN's (megvii-research/ML-GCN, ``util.py``): ML-GCN's
``gen_A`` divides the counts by the label counts (``P(n | m)``), binarises them at a threshold
``t`` (0/1), spreads ``p / (1 - p) = 0.25`` over each *column* (``sum(0)``) and adds the
identity; ``gen_adj`` then normalises symmetrically, ``D^-1/2 A^T D^-1/2``. Rawlekar et al.'s code
keeps the weights (its ``topk`` mask has ``k = L`` and so keeps every entry: no threshold),
normalises each *row*'s off-diagonal entries to sum to ``p = 0.2``, sets the diagonal to
``1 - p``, divides by the diagonal (off-diagonal rows then sum to ``p / (1 - p) = 0.25``) and
finally sets the diagonal back to ``1 - p = 0.8``; there is no ``gen_adj`` step. The resulting
matrix is what :func:`reweighted_adjacency` returns.
"""

from __future__ import annotations

import numpy as np

__all__ = ["normalized_adjacency", "reweighted_adjacency"]


def _square(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square (L, L) matrix, got shape {a.shape}")
    return a


def normalized_adjacency(cond: np.ndarray, normalize: str = "row") -> tuple[np.ndarray, np.ndarray]:
    """cxrkit's ``row`` form of the GCN graph: the prior with a unit diagonal, normalised.

    Args:
        cond: ``(L, L)`` conditional probabilities ``P(column | row)``; NaN (no evidence) counts as 0.
        normalize: ``"row"`` (``D^-1 A``), ``"sym"`` (``D^-1/2 A D^-1/2``) or ``"none"``.

    Returns:
        ``(prior, a_hat)``: the prior with its diagonal set to 1 (``P(m | m) = 1``, also for labels
        without positives) and the matrix the layers use, both ``(L, L)`` float64.

    Raises:
        ValueError: for a non-square matrix or another ``normalize``.
    """
    a = np.nan_to_num(_square(cond, "cond"), nan=0.0).copy()
    np.fill_diagonal(a, 1.0)
    if normalize == "row":
        return a, a / a.sum(axis=1, keepdims=True)
    if normalize == "sym":
        d = 1.0 / np.sqrt(a.sum(axis=1))
        return a, d[:, None] * a * d[None, :]
    if normalize == "none":
        return a, a.copy()
    raise ValueError(f"normalize must be 'row', 'sym' or 'none', got {normalize!r}")


def reweighted_adjacency(cond: np.ndarray, p: float = 0.2) -> np.ndarray:
    """The ``official`` GCN graph of Rawlekar et al.'s code (see the module docstring).

    ``A_hat[m, n] = p / (1 - p) * A[m, n] / sum_{k != m} A[m, k]`` for ``m != n`` and
    ``A_hat[m, m] = 1 - p``: each label keeps weight ``1 - p`` on itself and its neighbours share
    ``p / (1 - p)`` (0.8 and 0.25 with the code's ``p = 0.2``). Row-normalising the conditional
    probabilities ``c_mn / c_mm`` equals row-normalising the counts ``c_mn`` (what the code loads),
    the row's ``1 / c_mm`` cancelling; with unknown labels, cxrkit's pairwise-estimated
    probabilities are used. A label without any co-occurring label (a zero off-diagonal row,
    where the authors' code divides by zero and stops on the NaN) keeps only its self-weight.

    Args:
        cond: ``(L, L)`` non-negative co-occurrence weights of ``column`` given ``row`` (counts or
            conditional probabilities); NaN counts as 0, the diagonal is ignored.
        p: Re-weighting parameter, ``0 < p < 1`` (the code: 0.2).

    Returns:
        ``(L, L)`` float64 matrix; not symmetric in general.

    Raises:
        ValueError: for a non-square matrix, negative entries or ``p`` outside ``(0, 1)``.
    """
    a = np.nan_to_num(_square(cond, "cond"), nan=0.0).copy()
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if (a < 0).any():
        raise ValueError("cond must be non-negative")
    np.fill_diagonal(a, 0.0)
    rows = a.sum(axis=1, keepdims=True)
    a_hat = np.divide(a, rows, out=np.zeros_like(a), where=rows > 0) * (p / (1 - p))
    np.fill_diagonal(a_hat, 1 - p)
    return a_hat
