"""Backbones and label-coupling refiners for multilabel chest X-ray classification.

The predictor is ``image -> timm backbone -> logits z -> refiner -> refined logits z'``
(Srivastava et al. 2025, Sec. III.B-C). Refiners share one interface (:class:`Refiner`) and a
small timm-style registry (:data:`REFINERS`, :func:`register_refiner`, :func:`create_refiner`):

* ``none``: identity (the paper's ablation baseline).
* ``sparse``: learned sparse label couplings ``z' = z + alpha * sigmoid(z) @ A`` with a zero
  diagonal enforced in the forward and an L1 penalty on the off-diagonal entries of ``A``.
* ``sparse_prior``: the same, ``A`` initialised from the training labels' dependencies.
* ``cooc_gcn``: the co-occurrence GCN of Rawlekar et al. (2024), cxrkit's ``row`` form or the
  authors' ``official`` one (graphs in :mod:`cxrkit.gcn_graph`).

A refiner that needs the training fold's labels (e.g. a co-occurrence prior) receives them once
through :meth:`Refiner.fit_prior` before training.

Backbone weights are never downloaded: ``pretrained`` is a local state-dict file.
"""

from __future__ import annotations

import difflib
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_data_config
from torch import Tensor, nn

from cxrkit.gcn_graph import normalized_adjacency, reweighted_adjacency
from cxrkit.registry import Registry

__all__ = [
    "REFINERS",
    "CXRModel",
    "CooccurrenceGCNRefiner",
    "IdentityRefiner",
    "Refiner",
    "SparseCouplingRefiner",
    "count_parameters",
    "create_model",
    "create_refiner",
    "load_backbone_weights",
    "register_refiner",
]

logger = logging.getLogger(__name__)


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


@register_refiner("cooc_gcn")
class CooccurrenceGCNRefiner(Refiner):
    """Co-occurrence GCN refiner (Rawlekar et al. 2024, Sec. 3.2), in two forms.

    ``A_mn = c_mn / c_mm`` (P(n | m)) is computed once from the TRAINING fold's labels
    (:meth:`fit_prior`; unknown labels excluded pairwise) and kept fixed. Each image's logits
    are the node features (one scalar per label): ``H^0 = z`` as ``(B, L, 1)``, then
    ``H^l = rho(A_hat H^{l-1} W^l)`` for ``l = 1..layers`` with widths ``1 -> hidden -> ... -> 1``
    (no bias), and ``z' = z + H^L``.

    ``form="row"`` (cxrkit's, the default): ``A_hat`` from ``normalize``
    (:func:`cxrkit.gcn_graph.normalized_adjacency`; ``"row"`` = ``D^-1 A``: rows of ``A`` sum to
    the expected number of labels given the row label, and three unnormalised layers would scale
    the logits by that cubed), ``rho`` = LeakyReLU after every layer, hidden weights Xavier-uniform
    and the last one zero, so the refiner starts as the identity.

    ``form="official"``: as Rawlekar et al.'s code (github.com/SamyakR99/MLR-GCN,
    ``models/mlrgcn.py``): ``A_hat`` re-weighted with ``p`` (:func:`cxrkit.gcn_graph.reweighted_adjacency`:
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
        from cxrkit.analysis import conditional_matrix

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


class CXRModel(nn.Module):
    """A timm backbone followed by a label refiner.

    Args:
        backbone: A timm classification model with ``num_classes == refiner.num_labels``.
        refiner: The label refiner.

    Attributes:
        data_config: The backbone's timm data config (``input_size``, ``interpolation``,
            ``mean``, ``std``, ``crop_pct``, ``crop_mode``); the image pipeline normalises with
            its ``mean``/``std``.
    """

    def __init__(self, backbone: nn.Module, refiner: Refiner) -> None:
        super().__init__()
        if backbone.num_classes != refiner.num_labels:
            raise ValueError(
                f"backbone has {backbone.num_classes} outputs but the refiner expects "
                f"{refiner.num_labels} labels"
            )
        self.backbone = backbone
        self.refiner = refiner
        self.data_config: dict[str, Any] = resolve_data_config({}, model=backbone)

    @property
    def num_labels(self) -> int:
        """Number of labels ``L``."""
        return self.refiner.num_labels

    def forward(self, x: Tensor) -> Tensor:
        """Return refined logits ``(B, L)`` for images ``x`` of shape ``(B, 3, H, W)``."""
        return self.refiner(self.backbone(x))

    def forward_with_raw(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(raw backbone logits, refined logits)``, both ``(B, L)``."""
        raw = self.backbone(x)
        return raw, self.refiner(raw)

    def penalty(self) -> Tensor:
        """The refiner's regularisation term (add it to the supervised loss)."""
        return self.refiner.penalty()

    def coupling(self) -> np.ndarray | None:
        """The refiner's ``L x L`` coupling matrix, or None."""
        return self.refiner.coupling()

    def fit_prior(self, train_labels: np.ndarray) -> None:
        """Pass the training fold's ``(N, L)`` labels (NaN = unknown) to the refiner."""
        self.refiner.fit_prior(train_labels)

    def no_weight_decay(self) -> set[str]:
        """Full parameter names AdamW must not decay (backbone's own exclusions + refiner's)."""
        backbone_names = getattr(self.backbone, "no_weight_decay", set)()
        return {f"backbone.{n}" for n in backbone_names} | {
            f"refiner.{n}" for n in self.refiner.no_weight_decay()
        }


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a state dict (or a checkpoint holding one) from a local file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{path}: not a plain tensor checkpoint (torch.load(weights_only=True) refused it); "
                "save just the state dict"
            ) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{path}: expected a state dict of tensors (optionally under 'state_dict' or 'model')"
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a local state dict into a timm ``backbone``, keeping its own classifier head
    wherever the file's head is absent or has a different shape.

    Everything except the head must match exactly (names and shapes).

    Args:
        backbone: A timm classification model.
        path: ``.pth``/``.pt``/``.bin``/``.safetensors`` state dict, or a checkpoint holding one
            under ``'state_dict'`` or ``'model'``; a ``module.`` prefix is stripped.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file and the missing / unexpected / mis-shaped keys when the
            weights do not fit the backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    state = _read_state_dict(path)
    own = backbone.state_dict()
    head = backbone.get_classifier()
    head_name = next(name for name, module in backbone.named_modules() if module is head)
    head_keys = {f"{head_name}.{k}" for k in head.state_dict()}
    dropped = sorted(k for k in head_keys & state.keys() if state[k].shape != own[k].shape)
    state = {k: v for k, v in state.items() if k not in dropped}
    # BatchNorm fills a missing ``num_batches_tracked`` itself (older torchvision files lack it).
    missing = sorted(
        k for k in own.keys() - state.keys() - head_keys if not k.endswith("num_batches_tracked")
    )
    unexpected = sorted(state.keys() - own.keys())
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state.keys() & own.keys()
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"weights in {path} do not fit backbone {type(backbone).__name__}: "
            f"missing keys {missing[:20]} ({len(missing)} total), "
            f"unexpected keys {unexpected[:20]} ({len(unexpected)} total), "
            f"shape mismatches {mismatched[:20]} ({len(mismatched)} total)"
        )
    backbone.load_state_dict(state, strict=False)
    kept_head = sorted(head_keys - state.keys())
    logger.info("loaded %s; classifier head left at its initialisation: %s", path, kept_head)


def create_model(
    backbone: str,
    num_labels: int,
    refiner: str = "none",
    pretrained: str | Path | None = None,
    drop_rate: float = 0.4,
    refiner_kwargs: dict[str, Any] | None = None,
) -> CXRModel:
    """Build a :class:`CXRModel` from a timm backbone name and a refiner name.

    Never touches the network: the backbone is created with ``pretrained=False`` and, when
    ``pretrained`` is given, loaded from that local file (see :func:`load_backbone_weights`).

    Args:
        backbone: timm model name (``timm.list_models()``), optionally with a pretrained tag
            (``"resnet50.a1_in1k"``) selecting the data config.
        num_labels: Number of labels ``L`` (the classifier's width).
        refiner: Refiner registry name (see :data:`REFINERS`).
        pretrained: Local weights file for the backbone, or None for random initialisation.
        drop_rate: Dropout before the classifier head.
        refiner_kwargs: Extra constructor arguments of the refiner.

    Returns:
        The model, with ``model.data_config`` holding the backbone's expected ``mean``/``std``.

    Raises:
        ValueError: for an unknown backbone (with close timm names) or refiner, or weights that
            do not fit.
        FileNotFoundError: if ``pretrained`` does not exist.
    """
    if not timm.is_model(backbone):
        close = difflib.get_close_matches(backbone, timm.list_models(), n=5, cutoff=0.6)
        raise ValueError(f"unknown timm backbone {backbone!r}; close names: {close}")
    refiner_module = create_refiner(refiner, num_labels, **(refiner_kwargs or {}))
    net = timm.create_model(
        backbone, pretrained=False, num_classes=num_labels, drop_rate=drop_rate, in_chans=3
    )
    if pretrained is not None:
        load_backbone_weights(net, pretrained)
    return CXRModel(net, refiner_module)


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


def count_parameters(model: CXRModel) -> dict[str, int]:
    """Number of parameters of the ``backbone``, the ``refiner`` and in ``total``."""
    counts = {
        "backbone": sum(p.numel() for p in model.backbone.parameters()),
        "refiner": sum(p.numel() for p in model.refiner.parameters()),
    }
    counts["total"] = counts["backbone"] + counts["refiner"]
    return counts
