"""The set-up phase of a run: model, loss, image pipeline, loaders, optimiser, LR schedule, loss
scaler, EMA and the data-parallel wrapper, built in a fixed order from the run's seed.

The order matters: with the same seed, the same calls in the same order draw the same random
numbers, so a run is reproducible and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrkit.data.images import ImagePolicy
from cxrkit.data.pipeline import Augment, CXRImages, UInt8Cache, make_loader
from cxrkit.data.tables import label_matrix
from cxrkit.losses import create_loss
from cxrkit.models import CXRModel, create_model
from cxrkit.training.config import TrainConfig, loss_kwargs, refiner_kwargs
from cxrkit.training.distributed import Dist
from cxrkit.training.ema import create_ema
from cxrkit.training.fold import FoldData
from cxrkit.training.optim import cosine_with_warmup, param_groups
from cxrkit.utils.memory_format import channels_last_default
from cxrkit.utils.paths import data_dir, resolve

#: ``subset(row indices, augmentation or None)``: the images of those rows of the dataset table.
Subset = Callable[[np.ndarray, Any], CXRImages]


@dataclass
class Run:
    """Everything a run trains with, as :func:`set_up` builds it.

    Attributes:
        cfg: the run's parameters; ``out`` its resolved folder, ``params`` them as a dict.
        data: the fold's data; ``y`` its (N, L) float32 labels (NaN = unknown).
        model: the model being trained; ``net`` the same, wrapped for data-parallel training;
            ``eval_model`` what is validated, kept in ``best.pt`` and predicts (the EMA's copy,
            or the model itself without EMA); ``ema`` timm's EMA or None.
        mean, std: the backbone's input normalisation.
        subset: the images of some rows (:data:`Subset`), sharing one cache.
        channels_last: the model, and so the training batches, in channels-last memory format.
    """

    cfg: TrainConfig
    out: Path
    params: dict[str, Any]
    dist: Dist
    device: torch.device
    data: FoldData
    y: np.ndarray
    model: CXRModel
    net: torch.nn.Module
    eval_model: torch.nn.Module
    ema: Any
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    steps_per_epoch: int
    mean: Any
    std: Any
    subset: Subset
    channels_last: bool = False

    @property
    def last_path(self) -> Path:
        """``last.pt``: written after every epoch; an interrupted run resumes from it."""
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        """``best.pt``: the evaluated model of the best epoch so far."""
        return self.out / "best.pt"


class _Indexed:
    """A view of a cache restricted to rows ``idx`` (so subsets share one memmap)."""

    def __init__(self, cache: UInt8Cache, idx: np.ndarray) -> None:
        self.cache, self.idx = cache, idx

    def __getitem__(self, i: int) -> np.ndarray:
        return self.cache[int(self.idx[i])]


def set_up(cfg: TrainConfig, data: FoldData, dist: Dist, device: torch.device, amp_dtype: torch.dtype | None,
           out: Path, params: dict[str, Any]) -> Run:
    """Seed, then build the model, the loss, the loaders and the optimisation of a run.

    Args:
        cfg: the run's parameters.
        data: the fold's data (:func:`cxrkit.training.fold.load_fold`).
        dist: the data-parallel context; ``device`` this process's device.
        amp_dtype: the autocast dtype (:func:`cxrkit.utils.amp.resolve_amp`); fp16
            enables the loss scaler.
        out: the run folder; ``params`` the parameters as written to it.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    y = label_matrix(data.table).astype(np.float32)
    model = create_model(cfg.backbone, len(data.labels), refiner=cfg.refiner,
                         pretrained=resolve(cfg.pretrained) if cfg.pretrained else None,
                         drop_rate=cfg.drop_rate, pretrained_layout=cfg.pretrained_layout,
                         refiner_kwargs=refiner_kwargs(cfg))
    model.fit_prior(y[data.train_idx])
    model.to(device)
    channels_last = channels_last_default(device) if cfg.channels_last is None else cfg.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    criterion = create_loss(cfg.loss, train_labels=y[data.train_idx], reduction=cfg.loss_reduction,
                            **loss_kwargs(cfg)).to(device)
    subset = _subsets(cfg, data, dist, y)
    train_loader, val_loader = _loaders(cfg, data, dist, device, subset)
    steps_per_epoch = len(train_loader)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.weight_decay_all), lr=cfg.lr,
                                  fused=device.type == "cuda" or None)  # one kernel per step on CUDA
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(
        max(1, round(cfg.warmup_epochs * steps_per_epoch)), cfg.epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # fp16: cuda or mps
    ema, eval_model = create_ema(cfg, model)
    net: torch.nn.Module = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:  # after DDP, as timm's train.py; ``model`` (what checkpoints save) stays uncompiled
        net = torch.compile(net, mode=cfg.compile if isinstance(cfg.compile, str) else None)
    return Run(cfg, out, params, dist, device, data, y, model, net, eval_model, ema, criterion, optimizer, scheduler,
               scaler, train_loader, val_loader, steps_per_epoch, model.data_config["mean"], model.data_config["std"],
               subset, channels_last)


def _subsets(cfg: TrainConfig, data: FoldData, dist: Dist, y: np.ndarray) -> Subset:
    """The images of any rows, from the pre-resized uint8 cache (``cache: true``; rank 0 builds it,
    the others then open it) or decoded from their files, under the run's ``image_policy``."""
    paths = data.table["path"].tolist()
    policy = ImagePolicy.parse(cfg.image_policy)
    cache = None
    if cfg.cache:  # rank 0 builds the cache file, the others then open it
        if dist.main:
            cache = UInt8Cache(paths, cfg.image_size, data_dir() / "cache", progress=cfg.progress, policy=policy)
        dist.barrier()
        cache = cache or UInt8Cache(paths, cfg.image_size, data_dir() / "cache", policy=policy)

    def subset(idx: np.ndarray, augment: Augment | None) -> CXRImages:
        c = None
        if cache is not None:
            c = _Indexed(cache, idx)
        return CXRImages([paths[i] for i in idx], y[idx], cfg.image_size, augment=augment, cache=c, seed=cfg.seed,
                         policy=policy)

    return subset


def _loaders(cfg: TrainConfig, data: FoldData, dist: Dist, device: torch.device,
             subset: Subset) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """The training loader (augmented, shuffled, this rank's share) and the validation loader."""
    aug = Augment(cfg.image_size, cfg.rrc_scale, cfg.hflip, cfg.rotate, cfg.color_jitter)
    pin = device.type == "cuda"
    shard = {"rank": dist.rank, "world": dist.world}
    train_loader = make_loader(subset(data.train_idx, aug), cfg.batch_size // dist.world, shuffle=True,
                               seed=cfg.seed, workers=cfg.workers, drop_last=len(data.train_idx) > cfg.batch_size,
                               pin_memory=pin, **shard)
    val_loader = make_loader(subset(data.val_idx, None), cfg.eval_batch_size // dist.world, shuffle=False,
                             seed=cfg.seed, workers=cfg.workers, pin_memory=pin, pad=False, **shard)
    return train_loader, val_loader
