"""Devices and data-parallel processes: the device a run uses, the process group ``torchrun``
starts (:class:`Dist`; only rank 0 writes files, every rank computes and gathers the metrics),
and predictions gathered from every rank."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cxrkit.evaluation.inference import predict_probs


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class Dist:
    """Data-parallel context: launched by ``torchrun`` (``WORLD_SIZE`` > 1) or a single process.

    Only rank 0 writes files; every rank computes and gathers the metrics.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank (so all ranks skip a step together)."""
        flag = torch.isfinite(loss.detach()).float().reshape(1)
        if self.enabled:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def gather_rows(self, idx: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
        """Reassemble per-rank rows (dataset positions ``idx``) into the full ``(n, ...)`` array."""
        if not self.enabled:
            return values
        parts: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(parts, (np.asarray(idx), values))
        full = np.empty((n, *values.shape[1:]), dtype=values.dtype)
        for i, v in parts:
            full[i] = v
        return full


def init_distributed() -> tuple[Dist, torch.device | None]:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(rank, world, local_rank), device


def predict_gathered(dist: Dist, model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
                     mean: Any, std: Any, amp: str, tta: bool, progress: bool) -> np.ndarray:
    """Probabilities for the whole (unsharded) dataset of ``loader``, gathered from every rank."""
    probs = predict_probs(model, loader, device, mean=mean, std=std, amp=amp, tta=tta, progress=progress)
    return dist.gather_rows(loader.sampler.indices(), probs, len(loader.dataset))
