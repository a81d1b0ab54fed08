"""Grad-CAM saliency maps of a :class:`~cxrkit.models.CXRModel`'s labels, with pytorch-grad-cam
(``grad-cam`` on PyPI, Gildenblat et al.).

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017, Eq. 1-2) weights each channel ``k`` of a convolutional layer's
activations ``A^k`` by the spatial mean of the gradient of the target score ``y`` with respect to
it, ``alpha_k = mean_ij dy / dA^k_ij``, and keeps ``ReLU(sum_k alpha_k A^k)``; pytorch-grad-cam
then scales each map to [0, 1] (minus its minimum, over its maximum) and resizes it bilinearly to
the input's side. The target score of a label is its *refined* logit, the model's output
``z' = refiner(backbone(x))``: the gradient runs through the refiner, so what a label's map shows
includes the evidence the refiner's couplings bring in from the other labels.

The layer (:func:`target_layer`): the backbone's last feature stage as timm reports it
(``backbone.feature_info[-1]["module"]``, e.g. ``layer4`` of a ResNet), the last convolutional
stage Selvaraju et al. use (Sec. 3: "the final convolutional layer"). Only CNNs qualify: a layer
whose output is not ``(B, C, H, W)`` (a vision transformer's tokens) is refused.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn


def target_layer(model: nn.Module, stage: int = -1) -> tuple[str, nn.Module]:
    """The layer Grad-CAM explains: stage ``stage`` (default the last) of the backbone's timm
    ``feature_info``.

    Args:
        model: a :class:`~cxrkit.models.CXRModel` (its ``backbone`` a timm model).
        stage: index into ``model.backbone.feature_info``.

    Returns:
        ``(name, module)``, the name relative to ``model`` (``backbone.layer4``).

    Raises:
        ValueError: a backbone without timm's ``feature_info``, or no such stage.
    """
    backbone = getattr(model, "backbone", model)
    info = getattr(backbone, "feature_info", None)
    if info is None or not len(info):
        raise ValueError(f"{type(backbone).__name__} has no timm feature_info: cannot choose the Grad-CAM layer")
    try:
        name = info[stage]["module"]
    except IndexError:
        raise ValueError(f"stage {stage}: the backbone has {len(info)} feature stages") from None
    prefix = "backbone." if backbone is not model else ""
    return prefix + name, backbone.get_submodule(name)


def check_cnn_layer(model: nn.Module, layer: nn.Module, side: int) -> tuple[int, ...]:
    """The shape of ``layer``'s output for one ``side`` x ``side`` image, checked to be a CNN's
    ``(1, C, H, W)`` feature map.

    Raises:
        ValueError: another shape (Grad-CAM needs a spatial feature map; a transformer's tokens
            would need a reshape this kit does not guess).
    """
    shapes: list[tuple[int, ...]] = []
    hook = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side, device=next(model.parameters()).device))
    finally:
        hook.remove()
    if len(shapes) != 1 or len(shapes[0]) != 4:
        raise ValueError(f"Grad-CAM needs a CNN layer with a (B, C, H, W) output; the chosen layer gives "
                         f"{shapes[0] if shapes else 'no output'}")
    return shapes[0]


def grad_cam(model: nn.Module, images: torch.Tensor, label: int, layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM maps of one label on a batch of images.

    Args:
        model: the model (its output ``(B, L)`` refined logits); put in eval mode.
        images: ``(B, 3, H, W)`` model inputs (normalised), on the model's device.
        label: the label's index in the model's output.
        layer: the layer to explain; None = :func:`target_layer`.

    Returns:
        ``(B, H, W)`` float32 maps, each scaled to [0, 1] (all zero where nothing is positive).
    """
    layer = target_layer(model)[1] if layer is None else layer
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(label))] * len(images))
    return np.asarray(maps, dtype=np.float32)
