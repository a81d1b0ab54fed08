"""The memory format of models and their input batches: channels-last (NHWC) by default where it
was measured faster, on CUDA and on CPUs.

Measured on the 2-core development CPU (oneDNN convolutions; test_resnet, 96 px, 1 thread): a
training step of 32 images 159 -> 117 ms, a prediction of 64 images 127 -> 58 ms; on 2 threads
90 -> 54 ms a step. On CUDA it is the layout tensor cores want (timm's ``--channels-last``). Not
on MPS, where it was not measured. It changes the order of floating-point operations, so results
differ from NCHW in the last bits, as another thread count does (never beyond the float
tolerance the tests check)."""

from __future__ import annotations

import torch

#: devices on which models and batches are channels-last unless a run's ``channels_last`` says otherwise
CHANNELS_LAST_DEVICES = ("cuda", "cpu")


def channels_last_default(device: torch.device) -> bool:
    """Whether ``device`` runs channels-last by default (:data:`CHANNELS_LAST_DEVICES`)."""
    return device.type in CHANNELS_LAST_DEVICES
