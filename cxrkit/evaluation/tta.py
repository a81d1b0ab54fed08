"""Model predictions with and without the paper's flip TTA: sigmoid probabilities of a batch
(:func:`probabilities`, :func:`plain_and_tta`) and of a loader's images (:func:`predict_probs`,
:func:`predict_probs_both`), under the configured autocast precision
(:func:`cxrkit.utils.amp.autocast_context`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from cxrkit.data.pipeline import to_model_input
from cxrkit.utils.amp import autocast_context
from cxrkit.utils.memory_format import channels_last_default


@torch.no_grad()
def predict_probs(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, *,
                  mean: Sequence[float], std: Sequence[float], amp: str = "auto", tta: bool = False,
                  progress: bool = False) -> np.ndarray:
    """Sigmoid probabilities ``(N, L)`` in loader order; with ``tta`` the mean of the image's and
    its horizontal flip's probabilities (the paper's flip TTA averages probabilities)."""
    return _predict(model, loader, device, mean, std, amp, progress, lambda x: (probabilities(model, x, tta),))[0]


@torch.no_grad()
def predict_probs_both(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, *,
                       mean: Sequence[float], std: Sequence[float], amp: str = "auto",
                       progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``(N, L)`` without and with flip TTA from one pass over ``loader`` (two
    forwards per batch, the image and its flip): the first equal :func:`predict_probs` with
    ``tta=False``, the second with ``tta=True``, bit for bit (:func:`plain_and_tta`)."""
    return _predict(model, loader, device, mean, std, amp, progress, lambda x: plain_and_tta(model, x))


def _predict(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
             mean: Sequence[float], std: Sequence[float], amp: str, progress: bool,
             views: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]) -> tuple[np.ndarray, ...]:
    """``views(x)`` of every normalised batch ``x`` of ``loader`` in eval mode under autocast,
    each ``(B, L)``, concatenated in loader order."""
    from tqdm import tqdm

    model.eval()
    out: list[tuple[torch.Tensor, ...]] = []
    for images, _, _ in tqdm(loader, disable=not progress, desc="predict", leave=False):
        x = to_model_input(images, mean, std, device, channels_last=channels_last_default(device))
        with autocast_context(device, amp):
            out.append(tuple(p.float().cpu() for p in views(x)))
    if not out:
        return (np.zeros((0, 0), dtype=np.float32),) * 2
    return tuple(torch.cat(parts).numpy() for parts in zip(*out))


def probabilities(model: torch.nn.Module, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Sigmoid probabilities ``(B, L)`` of a normalised batch ``x`` ``(B, 3, S, S)``; with ``tta``
    the mean of the image's and its horizontal flip's (the paper's flip TTA averages
    probabilities, not logits). Call under ``torch.no_grad()`` and the autocast context."""
    return plain_and_tta(model, x)[1] if tta else torch.sigmoid(model(x).float())


def plain_and_tta(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p, p_tta)``, each ``(B, L)``, of a normalised batch ``x`` ``(B, 3, S, S)`` from two
    forwards: ``p = sigmoid(model(x))`` and ``p_tta = (p + sigmoid(model(flip(x)))) / 2``, the
    paper's flip TTA (the mean of probabilities, not of logits)."""
    p = torch.sigmoid(model(x).float())
    return p, 0.5 * (p + torch.sigmoid(model(torch.flip(x, dims=[3])).float()))
