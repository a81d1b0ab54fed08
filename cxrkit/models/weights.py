"""Local backbone weights: a state dict (or a checkpoint holding one) loaded into a timm backbone,
its classifier head kept where the file's does not fit. Nothing is ever downloaded.

Two layouts (``pretrained_layout``): ``timm`` (the file's keys are the backbone's) and ``remap``
(another implementation of the same architecture, e.g. the EfficientNet-PyTorch keys
``_blocks.0._bn1.weight``): the tensors are paired with the backbone's by order, as timm's
``remap_state_dict`` (``timm.models._helpers``) does, every pair checked to have the same shape,
and what went where reported (:func:`remap_state_dict`)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger("cxrkit.models")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a state dict (or a checkpoint holding one) from a local file, in the file's order.

    Raises:
        ValueError: naming ``path`` when it is not a plain state dict of tensors.
    """
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
    for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel, torch.compile
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def remap_state_dict(state: dict[str, Tensor], model: nn.Module, keep: frozenset[str] = frozenset(),
                     source: str = "the weights") -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Pair a foreign-layout state dict with ``model``'s keys by order (timm's rule).

    The i-th tensor of ``state`` becomes the i-th entry of ``model.state_dict()``; unlike timm's
    ``remap_state_dict`` nothing is reshaped: every pair must have the same shape.

    Args:
        state: Tensors in the order of the model's registration (a ``torch.save`` of another
            implementation's ``state_dict()`` keeps it; safetensors files do not).
        model: The model whose keys the tensors take.
        keep: Model keys (the classifier head) whose mis-shaped partner is left out instead of
            refused; the model keeps its own initialisation there.
        source: The file, named in errors.

    Returns:
        ``(remapped state dict, report)``: one report row per pair, ``{"source", "target",
        "shape"}``, with ``"kept": True`` where a ``keep`` key kept its own tensor.

    Raises:
        ValueError: naming ``source`` when the numbers of tensors differ, or the first pairs
            whose shapes differ (a different architecture, or an order that is not the model's).
    """
    own = model.state_dict()
    if len(state) != len(own):
        raise ValueError(f"cannot remap {source} by order onto {type(model).__name__}: the file has {len(state)} "
                         f"tensors, the model {len(own)}")
    out: dict[str, Tensor] = {}
    report: list[dict[str, Any]] = []
    bad: list[str] = []
    for (ks, vs), (kt, vt) in zip(state.items(), own.items()):
        fits = vs.shape == vt.shape
        if not fits and kt not in keep:
            bad.append(f"{ks} {tuple(vs.shape)} -> {kt} {tuple(vt.shape)}")
        elif fits:
            out[kt] = vs
        report.append({"source": ks, "target": kt, "shape": list(vs.shape), **({} if fits else {"kept": True})})
    if bad:
        raise ValueError(f"cannot remap {source} by order onto {type(model).__name__}: {len(bad)} pair(s) of "
                         f"different shapes, the first {bad[:5]}; the file is not this architecture, or its "
                         f"tensors are not in the model's order")
    return out, report


#: ``pretrained_layout`` values: the file's keys are timm's, or paired with them by order.
LAYOUTS = ("timm", "remap")


def load_backbone_weights(backbone: nn.Module, path: str | Path, layout: str = "timm") -> list[dict[str, Any]]:
    """Load a local state dict into a timm ``backbone``, keeping its own classifier head
    wherever the file's head is absent or has a different shape.

    Everything except the head must match exactly (names and shapes).

    Args:
        backbone: A timm classification model.
        path: ``.pth``/``.pt``/``.bin``/``.safetensors`` state dict, or a checkpoint holding one
            under ``'state_dict'`` or ``'model'``; a ``module.`` or ``_orig_mod.`` prefix is stripped.
        layout: ``timm`` (the file's keys are the backbone's) or ``remap`` (another
            implementation's keys, paired by order: :func:`remap_state_dict`; a torch file,
            since safetensors does not keep the order).

    Returns:
        The remapping report (one row per tensor, see :func:`remap_state_dict`); empty for ``timm``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file and the missing / unexpected / mis-shaped keys when the
            weights do not fit the backbone (or the pairs that do not fit, with ``remap``).
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise ValueError(f"pretrained_layout: {layout!r} is not one of {LAYOUTS}")
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    if layout == "remap" and path.suffix == ".safetensors":
        raise ValueError(f"{path}: pretrained_layout remap pairs tensors by order, which a safetensors file "
                         "does not keep; remap the original torch file (cxrkit weights import writes timm keys)")
    state = read_state_dict(path)
    head = backbone.get_classifier()
    head_name = next(name for name, module in backbone.named_modules() if module is head)
    head_keys = {f"{head_name}.{k}" for k in head.state_dict()}
    report: list[dict[str, Any]] = []
    if layout == "remap":
        state, report = remap_state_dict(state, backbone, frozenset(head_keys), source=str(path))
    _load_timm_layout(backbone, state, head_keys, path)
    return report


def _load_timm_layout(backbone: nn.Module, state: dict[str, Tensor], head_keys: set[str], path: Path) -> None:
    """Load ``state`` (timm's keys) into ``backbone``, the head kept where the file's does not fit.

    Raises:
        ValueError: naming ``path`` and the missing / unexpected / mis-shaped keys.
    """
    own = backbone.state_dict()
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
        hint = ("; keys of another implementation in the same order? pretrained_layout: remap pairs them by "
                "order" if len(state) == len(own) and not mismatched and set(state) != set(own) else "")
        raise ValueError(
            f"weights in {path} do not fit backbone {type(backbone).__name__}: "
            f"missing keys {missing[:20]} ({len(missing)} total), "
            f"unexpected keys {unexpected[:20]} ({len(unexpected)} total), "
            f"shape mismatches {mismatched[:20]} ({len(mismatched)} total){hint}"
        )
    backbone.load_state_dict(state, strict=False)
    kept_head = sorted(head_keys - state.keys())
    logger.info("loaded %s; classifier head left at its initialisation: %s", path, kept_head)
