"""The co-occurrence GCN refiner of Rawlekar et al. (2024), ``cooc_gcn``: cxrkit's ``row`` form
and the authors' ``official`` one (graphs in :mod:`cxrkit.models.refiners.gcn_graph`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cxrkit.data.cooccurrence import conditional_matrix
from cxrkit.models.refiners.base import Refiner, register_refiner
from cxrkit.models.refiners.gcn_graph import normalized_adjacency, reweighted_adjacency


@register_refiner("cooc_gcn")
class CooccurrenceGCNRefiner(Refiner):
    """Co-occurrence GCN refiner (Rawlekar et al. 2024, Sec. 3.2), in two forms.

    ``A_mn = c_mn / c_mm`` (P(n | m)) is computed once from the TRAINING fold's labels
    (:meth:`fit_prior`; unknown labels excluded pairwise) and kept fixed. Each image's logits
    are the node features (one scalar per label): ``H^0 = z`` as ``(B, L, 1)``, then
    ``H^l = rho(A_hat H^{l-1} W^l)`` for ``l = 1..layers`` with widths ``1 -> hidden -> ... -> 1``
    (no bias), and ``z' = z + H^L``.

    ``form="row"`` (cxrkit's, the default): ``A_hat`` from ``normalize``
    (:func:`cxrkit.models.refiners.gcn_graph.normalized_adjacency`; ``"row"`` = ``D^-1 A``: rows of ``A`` sum to
    the expected number of labels given the row label, and three unnormalised layers would scale
    the logits by that cubed), ``rho`` = LeakyReLU after every layer, hidden weights Xavier-uniform
    and the last one zero, so the refiner starts as the identity.

    ``form="official"``: as Rawlekar et al.'s code (github.com/SamyakR99/MLR-GCN,
    ``models/mlrgcn.py``): ``A_hat`` re-weighted with ``p`` (:func:`cxrkit.models.refiners.gcn_graph.reweighted_adjacency`:
    off-diagonal rows sum to ``p / (1 - p)``, diagonal ``1 - p``), LeakyReLU(0.2) after every layer
    but the last, whose output is added to the logits as it is, and every weight drawn from
    ``U(-1/sqrt(fan_out), 1/sqrt(fan_out))`` (their ``GraphConvolution.reset_parameters``), so it
    does not start as the identity. Their COCO widths are 1-10-10-1 (``hidden=10``); their code
    refines DualCoOp's positive and negative logits with shared weights, cxrkit's single logit.
    cxrkit trains ``W^l`` as the paper says (the repository's ``train.py`` gives SGD only the
    prompt parameters, so as stored its GCN weights would keep their initialisation).

    Args:
        num_labels: Number of labels ``L``.
        layers: Number of GCN layers (paper: 3).
        hidden: Width of the hidden node features.
        negative_slope: LeakyReLU slope (both forms: 0.2).
        normalize: ``"row"``, ``"sym"`` or ``"none"`` (``form="row"`` only).
        form: ``"row"`` or ``"official"``.
        p: Re-weighting parameter of the official graph, in ``(0, 1)``.

    Raises:
        ValueError: for ``layers < 1``, an unknown ``form`` or ``normalize``, ``p`` outside
            ``(0, 1)``, or a ``normalize`` other than ``"row"`` with ``form="official"``.
    """

    def __init__(self, num_labels: int, layers: int = 3, hidden: int = 16, negative_slope: float = 0.2,
                 normalize: str = "row", form: str = "row", p: float = 0.2) -> None:
        super().__init__(num_labels)
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if normalize not in ("row", "sym", "none"):
            raise ValueError(f"normalize must be 'row', 'sym' or 'none', got {normalize!r}")
        if form not in ("row", "official") or (form == "official" and normalize != "row"):
            raise ValueError(f"form must be 'row' or 'official' (which takes no normalize), got {form!r}, "
                             f"normalize {normalize!r}")
        if not 0 < p < 1:
            raise ValueError(f"p must be in (0, 1), got {p!r}")
        widths = [1] + [hidden] * (layers - 1) + [1]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(a, b)) for a, b in zip(widths[:-1], widths[1:])
        )
        if form == "official":
            for w in self.weights:
                nn.init.uniform_(w, -1 / w.shape[1] ** 0.5, 1 / w.shape[1] ** 0.5)
        else:
            for w in self.weights[:-1]:
                nn.init.xavier_uniform_(w)
            nn.init.zeros_(self.weights[-1])
        self.negative_slope, self.normalize, self.form, self.p = negative_slope, normalize, form, p
        self.register_buffer("prior", torch.eye(num_labels))  # A (identity until fit_prior)
        self.register_buffer("adjacency", torch.eye(num_labels))  # A_hat used in the forward

    def fit_prior(self, train_labels: np.ndarray) -> None:
        """Compute ``A`` and ``A_hat`` from the training labels (never validation or test)."""
        super().fit_prior(train_labels)
        a, a_hat = normalized_adjacency(conditional_matrix(train_labels), self.normalize)
        if self.form == "official":
            a_hat = reweighted_adjacency(a, self.p)
        with torch.no_grad():
            self.prior.copy_(torch.as_tensor(a, dtype=self.prior.dtype))
            self.adjacency.copy_(torch.as_tensor(a_hat, dtype=self.adjacency.dtype))

    def forward(self, z: Tensor) -> Tensor:
        """Return ``z + GCN(z)`` for logits ``z`` of shape ``(B, L)``."""
        self._check_input(z)
        h = z.unsqueeze(-1)  # (B, L, 1)
        adj = self.adjacency.to(z.dtype)
        last = len(self.weights) - 1
        for i, w in enumerate(self.weights):
            h = adj @ h @ w.to(z.dtype)
            if i < last or self.form == "row":
                h = F.leaky_relu(h, self.negative_slope)
        return z + h.squeeze(-1)

    def coupling(self) -> np.ndarray:
        """The fixed prior ``A`` (P(column | row)) with its diagonal set to zero, for analysis."""
        a = self.prior.detach().cpu().float().numpy().copy()
        np.fill_diagonal(a, 0.0)
        return a

    def extra_repr(self) -> str:
        return (f"num_labels={self.num_labels}, layers={len(self.weights)}, form={self.form!r}, "
                + (f"p={self.p:g}" if self.form == "official" else f"normalize={self.normalize!r}"))
