"""The refiner interface (:class:`Refiner`), its registry and factory (:data:`REFINERS`,
:func:`register_refiner`, :func:`create_refiner`, timm style), the identity baseline and
:func:`effective_coupling`, which measures any refiner's coupling in logit units.

The registry is complete once :mod:`cxrkit.models.refiners` is imported (it imports every
refiner module); import refiners from there or from :mod:`cxrkit.models`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cxrkit.utils.registry import Registry


class Refiner(nn.Module):
    """Base class of the label refiners: maps backbone logits to refined logits.

    Subclasses implement :meth:`forward` and override the hooks they need; the defaults describe
    a refiner with no regularisation, no coupling matrix, no weight-decay exclusions and no prior.

    Args:
        num_labels: Number of labels ``L``.
    """

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.num_labels = num_labels

    def forward(self, z: Tensor) -> Tensor:
        """Return refined logits of shape ``(B, L)`` from backbone logits ``z`` of shape ``(B, L)``."""
        raise NotImplementedError

    def penalty(self) -> Tensor:
        """Scalar regularisation term added to the supervised loss (zero by default)."""
        return torch.zeros(())

    def coupling(self) -> np.ndarray | None:
        """The ``L x L`` label-coupling matrix for analysis (rows = sources, columns = targets), or None."""
        return None

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this module) of parameters AdamW must not decay."""
        return set()

    def fit_prior(self, train_labels: np.ndarray) -> None:
        """Receive the training fold's labels once, before training.

        The base implementation only checks the array; subclasses that build a prior from the
        labels override this and call ``super().fit_prior(train_labels)`` first.

        Args:
            train_labels: ``(N, L)`` array of 0/1 with NaN for unknown labels.

        Raises:
            ValueError: if the array is not ``(N, L)`` or holds values other than 0, 1 and NaN.
        """
        labels = np.asarray(train_labels, dtype=float)
        if labels.ndim != 2 or labels.shape[1] != self.num_labels:
            raise ValueError(
                f"train_labels must have shape (N, {self.num_labels}), got {labels.shape}"
            )
        known = labels[~np.isnan(labels)]
        if not np.isin(known, (0.0, 1.0)).all():
            raise ValueError(
                f"train_labels must hold 0, 1 or NaN, found {np.unique(known)[:10].tolist()}"
            )

    def _check_input(self, z: Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.num_labels:
            raise ValueError(
                f"expected logits of shape (B, {self.num_labels}), got {tuple(z.shape)}"
            )


#: Registry of refiner classes by name.
REFINERS: Registry[type[Refiner]] = Registry("refiner")
#: Class decorator registering a :class:`Refiner` subclass under a name.
register_refiner = REFINERS.register


def create_refiner(name: str, num_labels: int, **kwargs: Any) -> Refiner:
    """Instantiate the refiner registered as ``name``.

    Args:
        name: Registry name (see :data:`REFINERS`).
        num_labels: Number of labels ``L``.
        **kwargs: Passed to the refiner's constructor.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    return REFINERS.lookup(name)(num_labels, **kwargs)


@register_refiner("none")
class IdentityRefiner(Refiner):
    """No refinement: ``z' = z`` (the baseline without label couplings)."""

    def forward(self, z: Tensor) -> Tensor:
        """Return ``z`` unchanged."""
        self._check_input(z)
        return z


@torch.no_grad()
def effective_coupling(refiner: Refiner, base_logits: Tensor | np.ndarray, delta: float = 4.0) -> np.ndarray:
    """The refiner's coupling in logit units, comparable across refiners.

    Entry ``(i, j)``: how much target ``j``'s refined logit moves when source ``i``'s logit goes
    from ``-delta`` to ``+delta`` (absent to present), every other logit held at
    ``base_logits`` (e.g. the logits of the training prevalences). Diagonal 0. For the sparse
    refiner this is ``alpha * A_ij * (sigmoid(delta) - sigmoid(-delta))``.
    """
    z0 = torch.as_tensor(np.asarray(base_logits, dtype=np.float32)).reshape(1, -1)
    n = z0.shape[1]
    device = next((b.device for b in refiner.buffers()), torch.device("cpu"))
    hi = z0.repeat(n, 1)
    lo = hi.clone()
    idx = torch.arange(n)
    hi[idx, idx], lo[idx, idx] = delta, -delta
    was_training = refiner.training
    refiner.eval()
    out = (refiner(hi.to(device)) - refiner(lo.to(device))).float().cpu().numpy()
    refiner.train(was_training)
    np.fill_diagonal(out, 0.0)
    return out
