"""Devices and data-parallel processes: the device a run uses, the process group ``torchrun``
starts on one node or several (:class:`Dist`; only global rank 0 writes files, every rank computes
and gathers the metrics; :func:`check_shared_folder` checks the nodes share the run folder), and
predictions gathered from every rank."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrkit.evaluation.tta import predict_probs, predict_probs_both


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


class DistributedError(RuntimeError):
    """The processes of a data-parallel run cannot work together (too many per node, a run folder
    the nodes do not share)."""


def init_distributed(device: str = "auto") -> tuple[Dist, torch.device | None]:
    """Join the process group when launched by torchrun, on one node or several.

    ``RANK`` (global) decides who writes, ``LOCAL_RANK`` (on this node) which GPU the process
    takes. NCCL on GPUs, gloo on CPUs (also with GPUs present when ``device`` is ``cpu``).

    Args:
        device: the run's ``device`` parameter.

    Raises:
        DistributedError: more processes on this node than it has GPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device.split(":")[0] in ("auto", "cuda")
    if cuda and local_rank >= torch.cuda.device_count():
        raise DistributedError(f"process {local_rank} of node {socket.gethostname()} (LOCAL_RANK) has no GPU: "
                               f"{torch.cuda.device_count()} visible; start at most that many processes per node "
                               f"(torchrun --nproc-per-node)")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    device_ = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device_)
    return Dist(rank, world, local_rank), device_


def check_shared_folder(dist: Dist, folder: Path) -> None:
    """Check that every process sees the files rank 0 writes in ``folder`` (the run folder): rank 0
    writes a marker, every rank looks for it. Ranks on several nodes need one file system mounted
    at the same path (rank 0 alone writes checkpoints, the cache and the predictions; every rank
    reads ``last.pt`` to resume).

    Raises:
        DistributedError: on every rank, naming the ranks and hosts that do not see the marker.
    """
    if not dist.enabled:
        return
    token = [uuid.uuid4().hex if dist.main else None]
    torch.distributed.broadcast_object_list(token, src=0)
    marker = folder / f".shared-{token[0]}"
    if dist.main:
        marker.write_text(socket.gethostname())
    dist.barrier()
    seen: list[Any] = [None] * dist.world
    torch.distributed.all_gather_object(seen, (dist.rank, socket.gethostname(), marker.is_file()))
    dist.barrier()
    if dist.main:
        marker.unlink()
    blind = [f"rank {r} on {host}" for r, host, ok in seen if not ok]
    if blind:
        raise DistributedError(f"{', '.join(blind)} cannot see the run folder {folder} that rank 0 writes on "
                               f"{seen[0][1]}: with several nodes, the data, the folds, the run folder and the "
                               f"image cache must be on a file system every node mounts at the same path")


def predict_gathered(dist: Dist, model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
                     mean: Any, std: Any, amp: str, tta: bool, progress: bool) -> np.ndarray:
    """Probabilities for the whole (unsharded) dataset of ``loader``, gathered from every rank."""
    probs = predict_probs(model, loader, device, mean=mean, std=std, amp=amp, tta=tta, progress=progress)
    return dist.gather_rows(loader.sampler.indices(), probs, len(loader.dataset))


def predict_gathered_both(dist: Dist, model: torch.nn.Module, loader: torch.utils.data.DataLoader,
                          device: torch.device, mean: Any, std: Any, amp: str,
                          progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_gathered` without and with flip TTA from one pass
    (:func:`cxrkit.evaluation.tta.predict_probs_both`)."""
    plain, tta = predict_probs_both(model, loader, device, mean=mean, std=std, amp=amp, progress=progress)
    idx, n = loader.sampler.indices(), len(loader.dataset)
    return dist.gather_rows(idx, plain, n), dist.gather_rows(idx, tta, n)
