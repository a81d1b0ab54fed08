"""The optimiser's parameter groups (weight decay) and the per-step learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


def cosine_with_warmup(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor per optimiser step (0-based): linear warm-up, then cosine decay (paper III.E).

    As Srivastava et al.'s ``build_scheduler`` (``crxml/train.py``, a ``LambdaLR`` stepped after
    every optimiser step)::

        step < warmup_steps:  step / warmup_steps      (the first step has LR 0)
        otherwise:            0.5 * (1 + cos(pi * progress)),
                              progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)

    ``progress`` is capped at 1 (ours: the factor stays 0 past ``total_steps``, which a run does
    not reach).
    """
    warmup_steps = max(1, warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict[str, Any]]:
    """AdamW parameter groups with weight decay ``weight_decay`` (paper III.E: 1e-4).

    By default (cxrkit's) decay on the weights only, none on biases and norm weights (timm's
    usual practice; the paper does not say) nor on the coupling matrix, whose L1 penalty replaces
    it (paper III.B). ``decay_all`` (``weight_decay_all``): one group decaying every parameter,
    ``A`` included, as Srivastava et al.'s code (``crxml/train.py``:
    ``AdamW(list(model.parameters()) + list(refiner.parameters()), weight_decay=...)``).
    """
    if decay_all:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
