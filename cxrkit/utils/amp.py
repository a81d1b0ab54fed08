"""Mixed precision: the autocast dtype of an ``amp`` setting (auto|fp16|bf16|off) on a device, and
its autocast context. Training (:mod:`cxrkit.training`) and prediction
(:mod:`cxrkit.evaluation.tta`, :mod:`cxrkit.evaluation.run_ensemble`) both use it."""

from __future__ import annotations

import contextlib

import torch


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The autocast context for ``amp`` in auto|fp16|bf16|off on ``device``."""
    dtype = resolve_amp(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


#: Devices on which fp16 training gets dynamic loss scaling (torch.amp.GradScaler).
LOSS_SCALED_DEVICES = ("cuda", "mps")


def resolve_amp(device: torch.device, amp: str) -> torch.dtype | None:
    """Autocast dtype: ``auto`` is fp16 on CUDA (with loss scaling in training) and off elsewhere
    (fp32; MPS and CPU users may ask for ``bf16``, or ``fp16`` on MPS).

    Raises:
        ValueError: for ``fp16`` on a device without loss scaling (CPU), where fp16 gradients
            would underflow silently.
    """
    table = {"fp16": torch.float16, "bf16": torch.bfloat16, "off": None}
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else None
    if amp == "fp16" and device.type not in LOSS_SCALED_DEVICES:
        raise ValueError(f"amp: fp16 on {device.type} has no loss scaling (its gradients underflow); "
                         f"use amp: bf16 or off there")
    return table[amp]
