"""The predictor: a timm backbone followed by a label refiner (:class:`CXRModel`), built by
:func:`create_model` from a backbone name and a refiner name."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np
import timm
from timm.data import resolve_data_config
from torch import Tensor, nn

from cxrkit.models.refiners.base import Refiner, create_refiner
from cxrkit.models.weights import load_backbone_weights


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


def create_model(
    backbone: str,
    num_labels: int,
    refiner: str = "none",
    pretrained: str | Path | None = None,
    drop_rate: float = 0.4,
    refiner_kwargs: dict[str, Any] | None = None,
    pretrained_layout: str = "timm",
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
        pretrained_layout: ``timm`` (the file's keys are timm's) or ``remap`` (another
            implementation's, paired with timm's by order; see :func:`load_backbone_weights`).

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
        load_backbone_weights(net, pretrained, layout=pretrained_layout)
    return CXRModel(net, refiner_module)


def count_parameters(model: CXRModel) -> dict[str, int]:
    """Number of parameters of the ``backbone``, the ``refiner`` and in ``total``."""
    counts = {
        "backbone": sum(p.numel() for p in model.backbone.parameters()),
        "refiner": sum(p.numel() for p in model.refiner.parameters()),
    }
    counts["total"] = counts["backbone"] + counts["refiner"]
    return counts
