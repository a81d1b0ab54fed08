"""Learned sparse label couplings (Srivastava et al. 2025): ``sparse`` and ``sparse_prior``."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from cxrkit.models.refiners.base import Refiner, register_refiner


@register_refiner("sparse")
class SparseCouplingRefiner(Refiner):
    """Learned sparse label couplings (Srivastava et al. 2025, Sec. III.B).

    ``z' = z + alpha * sigmoid(z) @ (A * (1 - I))``: row ``i`` of ``A`` says how label ``i``'s
    probability pushes the logit of every target label ``j``. ``A`` starts at zero (the model
    starts as an independent predictor); the diagonal is masked in the forward, so it never
    contributes even if the raw parameter drifts. Sparsity comes from
    ``lam * sum |A_ij|, i != j``, which replaces weight decay on ``A``.

    Args:
        num_labels: Number of labels ``L``.
        alpha: Fixed coupling strength (a buffer, saved with the weights).
        lam: L1 strength of :meth:`penalty`.
    """

    def __init__(self, num_labels: int, alpha: float = 0.3, lam: float = 1e-3) -> None:
        super().__init__(num_labels)
        self.lam = lam
        self.A = nn.Parameter(torch.zeros(num_labels, num_labels))
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("off_diagonal", 1.0 - torch.eye(num_labels), persistent=False)

    def masked_coupling(self) -> Tensor:
        """``A`` with its diagonal zeroed (differentiable)."""
        return self.A * self.off_diagonal

    def forward(self, z: Tensor) -> Tensor:
        """Return ``z + alpha * sigmoid(z) @ masked A``."""
        self._check_input(z)
        coupling = self.masked_coupling()
        return z + self.alpha * (torch.sigmoid(z).to(coupling.dtype) @ coupling)

    def penalty(self) -> Tensor:
        """``lam * sum |A_ij|`` over the off-diagonal entries."""
        return self.lam * self.masked_coupling().abs().sum()

    def coupling(self) -> np.ndarray:
        """The masked ``A`` (zero diagonal) as a float32 array; the logit push is ``alpha`` times it."""
        return self.masked_coupling().detach().cpu().float().numpy()

    def no_weight_decay(self) -> set[str]:
        """``{"A"}``: ``A`` is regularised by the L1 penalty only."""
        return {"A"}

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}, alpha={self.alpha.item():g}, lam={self.lam:g}"


@register_refiner("sparse_prior")
class SparsePriorRefiner(SparseCouplingRefiner):
    """The sparse refiner ("sparse+prior") initialised from the training labels instead of zero.

    ``A`` starts at the couplings a dependency network fits on the training fold's labels: for
    every target ``j``, an L2-regularised logistic regression of ``y_j`` on the other labels
    gives coefficients ``beta_ij`` (log odds change of ``j`` when ``i`` is present), and
    ``A_ij = clip(beta_ij, -clip, clip) / alpha`` so that a confidently present source moves the
    target's logit by about ``beta_ij``, as in the data. Training then proceeds exactly as for
    ``sparse`` (same L1 pull towards zero).

    Why initialise rather than regularise towards the prior: the prior lives in the same units
    as ``A`` (logit pushes), so it is a meaningful starting point, while the paper's L1 penalty
    towards zero, kept unchanged, still removes couplings the images do not support; a penalty
    towards the prior would instead keep label-only dependencies the image already explains.

    Args:
        num_labels: Number of labels ``L``.
        alpha: Coupling strength.
        lam: L1 strength.
        prior_c: Inverse L2 strength of the logistic regressions.
        prior_clip: Bound on ``|beta_ij|`` (logically exclusive pairs would diverge).
    """

    def __init__(self, num_labels: int, alpha: float = 0.3, lam: float = 1e-3, prior_c: float = 1.0,
                 prior_clip: float = 4.0) -> None:
        super().__init__(num_labels, alpha=alpha, lam=lam)
        self.prior_c, self.prior_clip = prior_c, prior_clip

    def fit_prior(self, train_labels: np.ndarray) -> None:
        """Fit the per-target logistic regressions and initialise ``A`` from them."""
        super().fit_prior(train_labels)
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(train_labels, dtype=float)
        beta = np.zeros((self.num_labels, self.num_labels))
        for j in range(self.num_labels):
            others = [i for i in range(self.num_labels) if i != j]
            rows = np.isfinite(y[:, j])
            x = np.nan_to_num(y[rows][:, others], nan=0.0)  # unknown sources count as absent
            target = y[rows, j]
            if len(np.unique(target)) < 2:
                continue
            coef = LogisticRegression(C=self.prior_c, max_iter=1000).fit(x, target).coef_[0]
            beta[others, j] = coef
        init = np.clip(beta, -self.prior_clip, self.prior_clip) / float(self.alpha)
        with torch.no_grad():
            self.A.copy_(torch.as_tensor(init, dtype=self.A.dtype))


@register_refiner("sparse_centred")
class SparseCentredRefiner(SparseCouplingRefiner):
    """The sparse refiner on centred probabilities (cxrkit issue 15).

    ``z' = z + alpha * (sigmoid(z) - prevalence) @ (A * (1 - I))``, where ``prevalence`` ``(L,)``
    is each label's prevalence on the training fold (known entries only). The paper's refiner
    (Srivastava et al. 2025, ``z' = z + alpha * sigmoid(z) @ A``) never centres the
    probabilities, so ``sigmoid(z) @ A`` has the mean ``prevalence @ A`` per target: ``A`` can
    learn a per-target bias through whole columns of one sign instead of couplings. Centred, an
    image at the training prevalences keeps ``z' = z``, and ``A_ij`` only says how source ``i``'s
    departure from its prevalence moves target ``j``'s logit. ``A`` starts at zero, with the same
    zero diagonal and L1 penalty as ``sparse``.

    ``prevalence`` is a buffer saved with the weights (a checkpoint predicts as trained); it is 0
    (the ``sparse`` refiner) until :meth:`fit_prior` receives the training labels, and stays 0
    for a label without a known training entry.

    Args:
        num_labels: Number of labels ``L``.
        alpha: Coupling strength.
        lam: L1 strength of :meth:`penalty`.
    """

    def __init__(self, num_labels: int, alpha: float = 0.3, lam: float = 1e-3) -> None:
        super().__init__(num_labels, alpha=alpha, lam=lam)
        self.register_buffer("prevalence", torch.zeros(num_labels))

    def fit_prior(self, train_labels: np.ndarray) -> None:
        """Set ``prevalence`` to the training labels' per-label mean over known (non-NaN) entries."""
        super().fit_prior(train_labels)
        y = np.asarray(train_labels, dtype=float)
        known = np.isfinite(y).sum(axis=0)
        prev = np.where(known > 0, np.nansum(y, axis=0) / np.maximum(known, 1), 0.0)
        with torch.no_grad():
            self.prevalence.copy_(torch.as_tensor(prev, dtype=self.prevalence.dtype))

    def forward(self, z: Tensor) -> Tensor:
        """Return ``z + alpha * (sigmoid(z) - prevalence) @ masked A``."""
        self._check_input(z)
        coupling = self.masked_coupling()
        centred = torch.sigmoid(z).to(coupling.dtype) - self.prevalence.to(coupling.dtype)
        return z + self.alpha * (centred @ coupling)
