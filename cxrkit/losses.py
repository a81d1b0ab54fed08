"""Supervised multilabel losses with masks for unknown labels.

Every loss is called as ``loss(logits, targets, mask=None) -> scalar`` with ``logits`` and
``targets`` of shape ``(B, L)``, targets 0/1 (NaN allowed where unknown) and ``mask`` 1/True where
the label is known. An entry is used only where ``mask`` is 1 AND the target is not NaN; other
entries contribute nothing to the loss or its gradient.

Reduction (all losses, ``reduction=`` of the constructor / :func:`create_loss`):

* ``"sum"`` (default): **sum over the known labels of an image, mean over the B images of the
  batch** -- the per-element losses are summed and divided by ``B``, the number of images,
  including images whose labels are all unknown. This is the official ASL's ``-loss.sum()``
  (Ridnik et al., ``src/loss_functions/losses.py``) divided by the batch size.
* ``"mean"``: **mean over the known (unmasked) entries** -- the summed per-element losses are
  divided by the number of known entries (``B * L`` when every label is known). This is
  Srivastava et al.'s code (``crxml/losses.py``: ``-loss.mean()`` over the ``B x L`` entries, every
  label known there). A batch without any known entry gives 0.

Under data-parallel training each process reduces its share of the batch and the gradients are
averaged (for ``"mean"``: the mean over the whole batch when every process holds as many known
entries). Neither depends on the batch size, but they differ by the factor ``L`` (labels per image, with
every label known): ``mean = sum / L``. Whatever is added to the loss or applied to its gradient
at a fixed strength (the sparse refiner's L1 ``l1_lambda * sum|A_ij|``, gradient clipping at
``grad_clip``) is therefore ``L`` times stronger, relative to the data term, under ``"mean"``;
``"mean"`` with ``l1_lambda`` and ``grad_clip`` is the balance of the authors' runs; ``"sum"``
with ``l1_lambda * L`` and ``grad_clip * L`` scales the whole gradient by ``L`` and so gives the
same AdamW updates (up to its ``eps``) when every label is known.

Losses are computed in float32 whatever the logits' dtype (safe under AMP).

Registry: :data:`LOSSES`, :func:`register_loss`, :func:`create_loss` (``"asl"``, ``"rasl"``,
``"bce"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cxrkit.utils.registry import Registry

__all__ = [
    "LOSSES",
    "REDUCTIONS",
    "AsymmetricLoss",
    "MultilabelLoss",
    "WeightedBCE",
    "create_loss",
    "pos_weight_from_labels",
    "register_loss",
]


#: Reductions every loss accepts (see the module docstring).
REDUCTIONS = ("sum", "mean")


class MultilabelLoss(nn.Module):
    """Base class: masking, float32 casting and the reduction; subclasses give per-element losses.

    Args:
        reduction: ``"sum"`` (sum over known labels / ``B``) or ``"mean"`` (mean over the known
            entries); see the module docstring.

    Raises:
        ValueError: for another ``reduction``.
    """

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Per-element loss ``(B, L)`` for float32 ``logits`` and finite 0/1 ``targets``."""
        raise NotImplementedError

    @classmethod
    def from_train_labels(cls, train_labels: np.ndarray | None, **kwargs: Any) -> MultilabelLoss:
        """Build the loss, using the training fold's ``(N, L)`` labels if it needs them (default: not)."""
        return cls(**kwargs)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """Return the scalar loss (float32): ``sum`` over known labels / ``B``, or the ``mean``
        over the known entries (``self.reduction``).

        Args:
            logits: ``(B, L)`` logits.
            targets: ``(B, L)`` 0/1 targets; NaN marks an unknown label.
            mask: ``(B, L)`` bool/float, 1 = known; None = every non-NaN target is known.

        Raises:
            ValueError: if ``logits`` and ``targets`` are not both ``(B, L)``.
        """
        if logits.ndim != 2 or logits.shape != targets.shape:
            raise ValueError(
                f"logits and targets must both be (B, L), got {tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        targets = targets.float()
        known = ~torch.isnan(targets)
        if mask is not None:
            known = known & mask.bool()
        targets = torch.where(known, targets, torch.zeros_like(targets))
        per_element = self.elementwise(logits.float(), targets)
        total = torch.where(known, per_element, torch.zeros_like(per_element)).sum()
        if self.reduction == "mean":
            return total / known.sum().clamp(min=1)
        return total / logits.shape[0]


#: Registry of loss classes by name.
LOSSES: Registry[type[MultilabelLoss]] = Registry("loss")
#: Class decorator registering a :class:`MultilabelLoss` subclass under a name.
register_loss = LOSSES.register


def create_loss(name: str, train_labels: np.ndarray | None = None, reduction: str = "sum",
                **kwargs: Any) -> MultilabelLoss:
    """Instantiate the loss registered as ``name``.

    Args:
        name: Registry name (see :data:`LOSSES`).
        train_labels: The training fold's ``(N, L)`` labels (NaN = unknown), for losses that
            derive weights from them (``"bce"``, ``"rasl"``); ignored by the others.
        reduction: ``"sum"`` or ``"mean"`` (see the module docstring).
        **kwargs: Passed to the loss's constructor.

    Raises:
        ValueError: for an unknown name (listing the known ones) or reduction, or missing
            ``train_labels`` where the loss needs them.
    """
    return LOSSES.lookup(name).from_train_labels(train_labels, reduction=reduction, **kwargs)


@register_loss("asl")
class AsymmetricLoss(MultilabelLoss):
    """Asymmetric Loss (Ridnik et al., ICCV 2021), as the official ``AsymmetricLoss``.

    With ``p = sigmoid(logit)`` and the shifted probability ``p_m = max(p - clip, 0)``::

        positive: -(1 - p) ** gamma_pos * log(max(p, eps))
        negative: -p_m ** gamma_neg * log(max(1 - p_m, eps))

    By default the focusing weights ``(1 - p) ** gamma_pos`` / ``p_m ** gamma_neg`` are computed
    without gradient (the official ``disable_torch_grad_focal_loss=True``); ``focal_grad=True``
    lets the gradient flow through them, as Srivastava et al.'s ``crxml/losses.py`` does (it has
    no ``no_grad`` around the weight; with ``gamma_neg > 0`` this adds
    ``gamma_neg * p_m ** (gamma_neg - 1) * (-log(1 - p_m))`` times ``dp_m/dz`` to every negative's
    gradient). Reduction: see the module docstring.

    Args:
        gamma_pos: Focusing exponent on positives.
        gamma_neg: Focusing exponent on negatives.
        clip: Probability shift on negatives (0 disables it).
        eps: Lower clamp inside the logarithms.
        focal_grad: Differentiate through the focusing weight.
        reduction: ``"sum"`` or ``"mean"``.
    """

    def __init__(
        self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8,
        focal_grad: bool = False, reduction: str = "sum",
    ) -> None:
        super().__init__(reduction)
        self.gamma_pos = gamma_pos
        self.gamma_neg = gamma_neg
        self.clip = clip
        self.eps = eps
        self.focal_grad = focal_grad

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Per-element ASL."""
        p = torch.sigmoid(logits)
        p_neg = (1 - p + self.clip).clamp(max=1)  # 1 - p_m
        loss = targets * torch.log(p.clamp(min=self.eps)) + (1 - targets) * torch.log(
            p_neg.clamp(min=self.eps)
        )
        with torch.set_grad_enabled(self.focal_grad and torch.is_grad_enabled()):
            pt = p * targets + p_neg * (1 - targets)
            gamma = self.gamma_pos * targets + self.gamma_neg * (1 - targets)
            weight = torch.pow(1 - pt, gamma)
        return -loss * weight

    def extra_repr(self) -> str:
        return (f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, eps={self.eps}, "
                f"focal_grad={self.focal_grad}, reduction={self.reduction!r}")


@register_loss("rasl")
class ReweightedAsymmetricLoss(AsymmetricLoss):
    """Re-weighted ASL (Rawlekar et al. 2024, eq. 4-5): per-label weight ``alpha_j`` times ASL.

    The paper writes ``alpha_j = (a_jj / sum_j a_jj)^-1`` with ``a`` its conditional-probability
    matrix; but ``a_jj = c_jj / c_jj = 1``, which would make every weight ``L``. We use the
    evident intent, the co-occurrence diagonal ``c_jj`` (positives of label ``j`` in the training
    fold): ``alpha_j = sum_k c_kk / c_jj``, inverse relative frequency (``weights="counts"``;
    ``"literal"`` gives the printed formula). With ``normalize=True`` (default) the weights are
    rescaled to mean 1 (ours), which keeps the loss on the scale the learning rate, gradient
    clipping and the refiners' L1 strength were set for; the relative weights are the paper's.
    A label without training positives gets the *smallest* weight: its count is taken as 15
    times the largest count before inverting, as the authors' code does (SamyakR99/MLR-GCN,
    ``utils/asymmetric_loss.py``, ``AsymmetricLoss_imbalanced``: ``weighting_vector[weighting_vector
    == 0] += 15 * weighting_vector.max()``, then ``loss = (1 / weighting_vector) * ...``; their
    weights are ``reweigh_n / c_jj``, unnormalised, which differ from ours by a constant factor).
    Defaults follow the paper: ``gamma_neg=3, gamma_pos=1, clip=0.05``.

    Args:
        weights: ``(L,)`` per-label weights.
        gamma_pos, gamma_neg, clip, eps, focal_grad, reduction: As in :class:`AsymmetricLoss`.
    """

    def __init__(self, weights: Tensor, gamma_pos: float = 1.0, gamma_neg: float = 3.0, clip: float = 0.05,
                 eps: float = 1e-8, focal_grad: bool = False, reduction: str = "sum") -> None:
        super().__init__(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, eps=eps, focal_grad=focal_grad,
                         reduction=reduction)
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32))

    @staticmethod
    def label_weights(train_labels: np.ndarray, weights: str = "counts", normalize: bool = True) -> Tensor:
        """``alpha_j = sum_k c_kk / c_jj`` from the training fold's labels (NaN = unknown, not
        counted), ``c_jj`` taken as ``15 * max_k c_kk`` for a label without positives (Rawlekar
        et al.'s ``utils/asymmetric_loss.py``; see the class docstring); all 1 when no label has
        a positive. ``normalize``: rescaled to mean 1 (ours)."""
        y = np.asarray(train_labels, dtype=float)
        counts = np.nansum(y == 1, axis=0).astype(float)
        if weights == "literal":
            alpha = np.full(y.shape[1], float(y.shape[1]))
        elif weights == "counts":
            if counts.max() > 0:
                alpha = counts.sum() / np.where(counts > 0, counts, 15 * counts.max())
            else:
                alpha = np.ones(y.shape[1])
        else:
            raise ValueError(f"weights must be 'counts' or 'literal', got {weights!r}")
        if normalize:
            alpha = alpha / alpha.mean()
        return torch.as_tensor(alpha, dtype=torch.float32)

    @classmethod
    def from_train_labels(cls, train_labels: np.ndarray | None, weights: str = "counts", normalize: bool = True,
                          **kwargs: Any) -> ReweightedAsymmetricLoss:
        if train_labels is None:
            raise ValueError("loss 'rasl' needs the training fold's labels (train_labels) for its weights")
        return cls(cls.label_weights(train_labels, weights, normalize), **kwargs)

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Per-element ASL times the label's weight."""
        return super().elementwise(logits, targets) * self.weights.to(logits.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", weights={[round(w, 3) for w in self.weights.tolist()]}"


def pos_weight_from_labels(
    train_labels: np.ndarray, min_weight: float = 1.0, max_weight: float = 10.0
) -> Tensor:
    """Per-label ``pos_weight = n_neg / n_pos`` from training labels, clipped to ``[min, max]``.

    Unknown (NaN) entries are not counted. A label with no positive gets ``max_weight``.

    Args:
        train_labels: ``(N, L)`` array of 0/1 with NaN for unknown.
        min_weight: Lower clip (paper: 1).
        max_weight: Upper clip (paper: 10).

    Returns:
        float32 tensor of shape ``(L,)``.

    Raises:
        ValueError: if the array is not 2-D or holds values other than 0, 1 and NaN.
    """
    labels = np.asarray(train_labels, dtype=float)
    if labels.ndim != 2:
        raise ValueError(f"train_labels must be (N, L), got shape {labels.shape}")
    known = labels[~np.isnan(labels)]
    if not np.isin(known, (0.0, 1.0)).all():
        raise ValueError(
            f"train_labels must hold 0, 1 or NaN, found {np.unique(known)[:10].tolist()}"
        )
    n_pos = (labels == 1).sum(axis=0)
    n_neg = (labels == 0).sum(axis=0)
    ratio = np.divide(n_neg, n_pos, out=np.full(labels.shape[1], max_weight), where=n_pos > 0)
    return torch.as_tensor(np.clip(ratio, min_weight, max_weight), dtype=torch.float32)


@register_loss("bce")
class WeightedBCE(MultilabelLoss):
    """Binary cross-entropy with logits and a per-label ``pos_weight`` on the positive term.

    Reduction (see the module docstring): ``"sum"`` is
    ``BCEWithLogitsLoss(pos_weight=..., reduction="sum") / B`` without a mask, ``"mean"`` is
    ``BCEWithLogitsLoss(pos_weight=...)`` (its default mean over the ``B x L`` entries).

    Args:
        pos_weight: ``(L,)`` weights of the positive terms (a buffer: moves with ``.to()``).
        reduction: ``"sum"`` or ``"mean"``.
    """

    def __init__(self, pos_weight: Tensor, reduction: str = "sum") -> None:
        super().__init__(reduction)
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32))

    @classmethod
    def from_train_labels(
        cls,
        train_labels: np.ndarray | None,
        min_weight: float = 1.0,
        max_weight: float = 10.0,
        reduction: str = "sum",
    ) -> WeightedBCE:
        """Build with :func:`pos_weight_from_labels` on the training fold's labels.

        Raises:
            ValueError: if ``train_labels`` is None.
        """
        if train_labels is None:
            raise ValueError(
                "loss 'bce' needs train_labels (the training fold's labels) for pos_weight"
            )
        return cls(pos_weight_from_labels(train_labels, min_weight, max_weight), reduction=reduction)

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Per-element weighted BCE."""
        return F.binary_cross_entropy_with_logits(
            logits, targets, pos_weight=self.pos_weight, reduction="none"
        )
