"""The exponential moving average of the weights (timm's ``ModelEmaV3``): of the whole model, or
of the backbone only with the live refiner (Srivastava et al.'s code)."""

from __future__ import annotations

from typing import Any

import torch

from cxrkit.models import CXRModel
from cxrkit.training.config import TrainConfig


def create_ema(cfg: TrainConfig, model: CXRModel) -> tuple[Any, torch.nn.Module]:
    """The EMA (timm's ``ModelEmaV3``, decay ``ema_decay``; None when it is 0) and the model that
    is validated, kept in ``best.pt`` and predicts.

    ``ema_refiner`` (cxrkit's): the EMA of the whole model, refiner included; its copy is that
    model. Otherwise as Srivastava et al.'s code (``crxml/train.py``: ``ema = ModelEMA(model)`` of
    the backbone, ``validate(ema.ema, refiner, ...)``, the best checkpoint holds
    ``ema.ema.state_dict()`` and ``refiner.state_dict()``): the EMA of the backbone only, and a
    :class:`CXRModel` of the EMA backbone and the live refiner (``model.refiner`` itself), whose
    state dict has the keys of ``model``'s.
    """
    if cfg.ema_decay <= 0:
        return None, model
    from timm.utils import ModelEmaV3

    if cfg.ema_refiner:
        ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup)
        return ema, ema.module
    ema = ModelEmaV3(model.backbone, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup)
    return ema, CXRModel(ema.module, model.refiner)


def update_ema(ema: Any, cfg: TrainConfig, model: CXRModel, step: int) -> None:
    """One EMA update after optimiser step ``step`` (of the whole model, or of the backbone
    without ``ema_refiner``).

    With ``ema_warmup``, timm's warm-up from the step (``ModelEmaV3.get_decay``: decay 0, a copy,
    at steps 0 and 1, then ``min(ema_decay, 1 - step ** (-2/3))``). Without it no step is passed:
    ``get_decay(None)`` is ``ema_decay`` from the first update, ``ema = decay * ema + (1 - decay) *
    model`` (parameters and float buffers), as Srivastava et al.'s ``crxml/models/ema.py``
    (timm copies the weights on the first two updates whenever it is given a step, even with
    ``use_warmup=False``).
    """
    ema.update(model if cfg.ema_refiner else model.backbone, step=step if cfg.ema_warmup else None)
