"""The memory format of models and their input batches: channels-last (NHWC) by default on CUDA,
opt-in (``channels_last: true``) on CPUs.

On CUDA it is the layout tensor cores want (timm's ``--channels-last``). On the 2-core development
CPU (oneDNN convolutions; test_resnet, 96 px, 1 thread) it made a training step of 32 images
1.37x faster (159 -> 117 ms) and a prediction of 64 images 2.1x (127 -> 58 ms), and the default
study 1.4x (16.1 -> 11.7 min), but the runs were not bit-reproducible: the same smoke study run
twice gave predictions up to 1.1e-4 apart, where NCHW gives the same bits every time. The kit's
runs are deterministic for a seed, so on a CPU it stays off unless asked for."""

from __future__ import annotations

import torch

#: devices on which models and batches are channels-last unless a run's ``channels_last`` says otherwise
CHANNELS_LAST_DEVICES = ("cuda",)


def channels_last_default(device: torch.device) -> bool:
    """Whether ``device`` runs channels-last by default (:data:`CHANNELS_LAST_DEVICES`)."""
    return device.type in CHANNELS_LAST_DEVICES
