"""Grad-CAM saliency maps of a :class:`~cxrkit.models.CXRModel`'s labels, with pytorch-grad-cam
(``grad-cam`` on PyPI, Gildenblat et al.).

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017, Eq. 1-2) weights each channel ``k`` of a convolutional layer's
activations ``A^k`` by the spatial mean of the gradient of the target score ``y`` with respect to
it, ``alpha_k = mean_ij dy / dA^k_ij``, and keeps ``ReLU(sum_k alpha_k A^k)``; pytorch-grad-cam
then scales each map to [0, 1] (minus its minimum, over its maximum) and resizes it bilinearly to
the input's side (:func:`grad_cam`). The minimum's subtraction changes how concentrated a map looks
(a coarse map positive everywhere loses its floor), so what is scored (:func:`raw_grad_cam`) is the
un-normalised ReLU map, resized with the same bilinear interpolation, and :func:`peak_scaled`
divides it by its maximum only (no subtraction: every share of its total is kept). The target
score of a label is its *refined* logit, the model's output
``z' = refiner(backbone(x))``: the gradient runs through the refiner, so what a label's map shows
includes the evidence the refiner's couplings bring in from the other labels.

The layer (:func:`target_layer`): the backbone's last feature stage as timm reports it
(``backbone.feature_info[-1]["module"]``, e.g. ``layer4`` of a ResNet), the last convolutional
stage Selvaraju et al. use (Sec. 3: "the final convolutional layer"). Only CNNs qualify: a layer
whose output is not ``(B, C, H, W)`` (a vision transformer's tokens) is refused.
"""

from __future__ import annotations

import cv2
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


class RawGradCAM(GradCAM):
    """pytorch-grad-cam's Grad-CAM without its min-max scaling: each layer's ``ReLU(sum_k alpha_k
    A^k)`` resized bilinearly to the input (``cv2.resize``, as ``scale_cam_image`` does), layers
    averaged."""

    def compute_cam_per_layer(self, input_tensor: torch.Tensor, targets: list, eigen_smooth: bool) -> list:
        """The un-normalised ReLU CAM of each target layer, ``(B, 1, H, W)``."""
        acts = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
        grads = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
        size = self.get_target_width_height(input_tensor)
        out = []
        for layer, a, g in zip(self.target_layers, acts, grads):
            cam = np.maximum(self.get_cam_image(input_tensor, layer, targets, a, g, eigen_smooth), 0)
            out.append(upsample_cams(cam, size)[:, None])
        return out

    def aggregate_multi_layers(self, cam_per_target_layer: list) -> np.ndarray:
        """The mean over the layers, not rescaled."""
        return np.mean(np.concatenate(cam_per_target_layer, axis=1), axis=1)


def upsample_cams(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(B, h, w)`` maps resized bilinearly to ``size`` = (width, height), values kept (no scaling)."""
    return np.stack([cv2.resize(np.float32(c), size) for c in cams]).astype(np.float32)


def raw_grad_cam(model: nn.Module, images: torch.Tensor, label: int, layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM maps of one label as :func:`grad_cam`, but un-normalised: ``ReLU(sum_k alpha_k
    A^k)`` resized bilinearly to the input (:class:`RawGradCAM`), the map the energy share is
    computed on.

    Returns:
        ``(B, H, W)`` float32 non-negative maps in the units of the target's gradient times activation.
    """
    layer = target_layer(model)[1] if layer is None else layer
    with RawGradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(label))] * len(images))
    return np.asarray(maps, dtype=np.float32)


def peak_scaled(maps: np.ndarray) -> np.ndarray:
    """Each ``(H, W)`` map of ``(B, H, W)`` divided by its maximum (an all-zero map stays zero):
    in [0, 1] with every share of its total unchanged (no minimum subtracted)."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = maps.reshape(len(maps), -1).max(axis=1) if maps.size else np.zeros(len(maps), np.float32)
    return np.divide(maps, peak[:, None, None], out=np.zeros_like(maps), where=peak[:, None, None] > 0)
