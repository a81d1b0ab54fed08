"""Local backbone weights: a state dict (or a checkpoint holding one) loaded into a timm backbone,
its classifier head kept where the file's does not fit. Nothing is ever downloaded."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger("cxrkit.models")


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
