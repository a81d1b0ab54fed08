"""Training of one fold and one refiner (paper III.C-E), resumable and deterministic on CPU.

A run folder holds: ``params.json`` and ``provenance.json`` (parameters, git revision, package
versions, device, data fingerprint), ``history.csv`` (one row per epoch), ``last.pt`` (written
atomically after every epoch; an interrupted run resumes from it), ``best.pt`` (the evaluated
model of the epoch with the best validation macro AUC: the EMA, or with ``ema_refiner: false``
the EMA backbone and the live refiner), ``pred_val.csv`` / ``pred_test.csv`` (with flip
TTA) and ``*_notta.csv`` (without), ``coupling.csv`` (learned matrix, when the refiner has one)
and ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrkit.config import ConfigError, TrainConfig, to_dict
from cxrkit.datasets import DataError, create_dataset, fingerprint, label_matrix
from cxrkit.losses import create_loss
from cxrkit.metrics import macro_auc, per_label_auc
from cxrkit.models import CXRModel, create_model, effective_coupling
from cxrkit.paths import data_dir, resolve
from cxrkit.pipeline import Augment, CXRImages, UInt8Cache, make_loader, to_model_input
from cxrkit.predict import autocast_context, predict_probs, resolve_amp, write_predictions
from cxrkit.provenance import atomic_write, check_writable, write_json, write_run_record
from cxrkit.splits import fold_indices, load_splits, test_indices

#: Parameters that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"progress", "workers", "device", "out"}


class TrainingError(RuntimeError):
    """Training cannot go on (too many non-finite losses, incompatible checkpoint, ...)."""


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
    import os

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


def file_digest(path: str | Path) -> str:
    """Short sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


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


@dataclass
class FoldData:
    """The dataset table, its labels and the fold's row indices."""

    table: pd.DataFrame
    labels: list[str]
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    data_fingerprint: str
    splits_fingerprint: str
    csv_digest: str = ""


def _check_cache_dir(cfg: TrainConfig) -> None:
    """With ``cache: true``, that the uint8 cache can be built where :func:`train` puts it, unless
    one at this image size is already there (it may be read-only then).

    Raises:
        NotWritableError: naming the folder and how to train without the cache.
    """
    cache_dir = data_dir() / "cache"  # where train() builds the UInt8Cache
    if not any(cache_dir.glob(f"u8_{cfg.image_size}px_*.npy")):
        check_writable(cache_dir, "the uint8 image cache (cache: true)",
                       "train with --no-cache (cache: false) to decode the images every epoch instead")


def _fitting_folds(cfg: TrainConfig, root: Path, splits_path: Path) -> pd.DataFrame:
    """The splits, checked to fit the data as written (no image is decoded): the same images with
    the same patient ids (:func:`load_splits` names any added, removed or changed), and label
    values equal to those they were made from, over the labels they were stratified on (which
    may be more or other than the run's ``labels``: training on a subset is fine). Row order may
    differ. Returns the splits in table row order.

    Raises:
        ValueError: images added or removed, patient ids changed (named).
        ConfigError: other label values (the fingerprints), or stratification labels the data
            cannot provide.
    """
    options = cfg.dataset_options
    listed = create_dataset(cfg.dataset, root=root, labels=cfg.labels, check_images=False, **options).table
    splits = load_splits(splits_path, listed)
    made_for, made_on = splits.attrs.get("fingerprint"), splits.attrs.get("labels")
    if made_for is None:
        return splits
    if made_on is not None and list(made_on) != list(listed.attrs["labels"]):
        try:
            listed = create_dataset(cfg.dataset, root=root, labels=made_on, check_images=False, **options).table
        except DataError as exc:
            raise ConfigError(f"{splits_path} was stratified on labels {list(made_on)}, which the data at {root} "
                              f"cannot provide: {exc}") from exc
    file_order = load_splits(splits_path)["image"].to_numpy()  # the fingerprint is over the rows in this order
    as_made = listed.set_index("image").loc[file_order].reset_index()
    as_made.attrs["labels"] = list(listed.attrs["labels"])
    if fingerprint(as_made) != made_for:
        raise ConfigError(f"{splits_path} was made for other data (fingerprint {made_for}, the data at {root} has "
                          f"{fingerprint(as_made)}): the images and patient ids are the same, but the values of the "
                          f"labels the folds were stratified on ({', '.join(as_made.attrs['labels'])}) differ "
                          f"(an edited label file, or other dataset_options); run `cxrkit folds` again")
    return splits


def load_fold(cfg: TrainConfig, report_dir: Path) -> FoldData:
    """Load and validate the dataset and the splits; every data error is raised here, before training.

    The folds are checked first, before any image is decoded (:func:`_fitting_folds`); then every
    image is decoded (``on_bad_image``; reports go to ``report_dir``).

    Raises:
        FileNotFoundError: no splits file.
        NotWritableError: ``cache: true`` and the cache folder cannot be written.
        DataError: bad data (files, rows, images).
        ValueError, ConfigError: folds that do not fit the data (naming what differs), a fold
            out of range, or a validation fold without any label having both classes.
    """
    root = resolve(cfg.data)
    splits_path = resolve(cfg.splits)
    if not splits_path.is_file():
        raise FileNotFoundError(f"splits file not found: {splits_path} (make it with `cxrkit folds`)")
    if cfg.cache:
        _check_cache_dir(cfg)
    splits = _fitting_folds(cfg, root, splits_path)
    ds = create_dataset(cfg.dataset, root=root, labels=cfg.labels, on_bad_image=cfg.on_bad_image,
                        report_dir=report_dir, **cfg.dataset_options)
    table = ds.table  # without the excluded images, if any
    splits = splits.set_index("image").loc[table["image"]].reset_index()
    train_idx, val_idx = fold_indices(splits, cfg.fold)
    y_val = label_matrix(table)[np.asarray(val_idx, dtype=int)]
    if not any(len(np.unique(col[np.isfinite(col)])) == 2 for col in y_val.T):
        raise ConfigError(f"validation fold {cfg.fold} of {splits_path} ({len(val_idx)} images): no label has both "
                          f"positives and negatives, so its macro AUC (the model-selection metric) is undefined")
    return FoldData(table, ds.labels, np.asarray(train_idx), np.asarray(val_idx), np.asarray(test_indices(splits)),
                    fingerprint(ds.table_before_exclusion), file_digest(splits_path), file_digest(ds.csv))


#: TrainConfig fields passed to each refiner's constructor (refiner argument -> config field).
REFINER_OPTIONS: dict[str, dict[str, str]] = {
    "none": {},
    "sparse": {"alpha": "alpha", "lam": "l1_lambda"},
    "sparse_prior": {"alpha": "alpha", "lam": "l1_lambda"},
    "cooc_gcn": {"layers": "gcn_layers", "hidden": "gcn_hidden", "normalize": "gcn_normalize",
                 "form": "gcn_form", "p": "gcn_p"},
}
#: TrainConfig fields passed to each loss (None values fall back to the loss's own defaults);
#: every loss also gets ``reduction=cfg.loss_reduction`` where it is built.
LOSS_OPTIONS: dict[str, tuple[str, ...]] = {"asl": ("gamma_pos", "gamma_neg", "clip", "focal_grad"),
                                            "rasl": ("gamma_pos", "gamma_neg", "clip", "focal_grad"), "bce": ()}


def refiner_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Constructor arguments of the configured refiner."""
    return {arg: getattr(cfg, field) for arg, field in REFINER_OPTIONS.get(cfg.refiner, {}).items()}


def loss_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Constructor arguments of the configured loss (only those set)."""
    return {k: getattr(cfg, k) for k in LOSS_OPTIONS.get(cfg.loss, ()) if getattr(cfg, k) is not None}


def _param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict[str, Any]]:
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


def _create_ema(cfg: TrainConfig, model: CXRModel) -> tuple[Any, torch.nn.Module]:
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


def _update_ema(ema: Any, cfg: TrainConfig, model: CXRModel, step: int) -> None:
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


def _comparable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in RESUMABLE_CHANGES}


def _save(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def train(cfg: TrainConfig, *, fault_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """Train one fold of one refiner variant, resuming from ``out/last.pt`` when present.

    Args:
        cfg: Run parameters.
        fault_hook: Test hook ``(global_step, loss) -> loss`` applied to every training loss
            (used to inject non-finite values).

    Returns:
        Summary with the best epoch, best validation macro AUC and output paths.
    """
    cfg.validate()
    t_start = time.time()
    out = resolve(cfg.out)
    check_writable(out, "the run (checkpoints, predictions)", "choose another --out")  # before any data loads
    out.mkdir(parents=True, exist_ok=True)
    params = to_dict(cfg)
    last_path, best_path = out / "last.pt", out / "best.pt"
    state = torch.load(last_path, map_location="cpu", weights_only=False) if last_path.is_file() else None
    if state is not None and _comparable(state["params"]) != _comparable(params):
        diff = {k: (state["params"].get(k), v) for k, v in _comparable(params).items()
                if state["params"].get(k) != v}
        raise TrainingError(f"{last_path} was written with other parameters {diff} (old, new); "
                            f"use another --out or delete the folder to start over")

    dist, dist_device = init_distributed()
    if cfg.batch_size % dist.world or cfg.eval_batch_size % dist.world:
        raise ConfigError(f"batch_size {cfg.batch_size} and eval_batch_size {cfg.eval_batch_size} (global batches) "
                          f"must be divisible by the {dist.world} processes")
    device = dist_device or pick_device(cfg.device)
    amp_dtype = resolve_amp(device, cfg.amp)  # fp16 where it cannot be loss-scaled fails here, before any work
    if cfg.pretrained and not resolve(cfg.pretrained).is_file():
        raise FileNotFoundError(f"pretrained: weight file not found: {resolve(cfg.pretrained)}")
    data = load_fold(cfg, out)
    identity = {"data_fingerprint": data.data_fingerprint, "splits_fingerprint": data.splits_fingerprint}
    if state is not None and state.get("data", identity) != identity:
        raise TrainingError(f"{last_path} was trained on other data or folds ({state['data']}, now {identity}); "
                            f"use another --out or delete the folder to start over")
    if dist.main:
        write_run_record(out, params, device=str(device), extra={
            "data_fingerprint": data.data_fingerprint, "splits_fingerprint": data.splits_fingerprint,
            "csv_sha256": data.csv_digest, "n_train": len(data.train_idx), "n_val": len(data.val_idx), "n_test": len(data.test_idx),
            "world_size": dist.world, "resumed_from_epoch": state["epoch"] if state else None})

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    y = label_matrix(data.table).astype(np.float32)
    model = create_model(cfg.backbone, len(data.labels), refiner=cfg.refiner,
                         pretrained=resolve(cfg.pretrained) if cfg.pretrained else None,
                         drop_rate=cfg.drop_rate,
                         refiner_kwargs=refiner_kwargs(cfg))
    model.fit_prior(y[data.train_idx])
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    mean, std = model.data_config["mean"], model.data_config["std"]
    criterion = create_loss(cfg.loss, train_labels=y[data.train_idx], reduction=cfg.loss_reduction,
                            **loss_kwargs(cfg)).to(device)

    paths = data.table["path"].tolist()
    cache = None
    if cfg.cache:  # rank 0 builds the cache file, the others then open it
        if dist.main:
            cache = UInt8Cache(paths, cfg.image_size, data_dir() / "cache", progress=cfg.progress)
        dist.barrier()
        cache = cache or UInt8Cache(paths, cfg.image_size, data_dir() / "cache")

    def subset(idx: np.ndarray, augment: Augment | None) -> CXRImages:
        c = None
        if cache is not None:
            c = _Indexed(cache, idx)
        return CXRImages([paths[i] for i in idx], y[idx], cfg.image_size, augment=augment, cache=c, seed=cfg.seed)

    aug = Augment(cfg.image_size, cfg.rrc_scale, cfg.hflip, cfg.rotate, cfg.color_jitter)
    pin = device.type == "cuda"
    shard = {"rank": dist.rank, "world": dist.world}
    train_loader = make_loader(subset(data.train_idx, aug), cfg.batch_size // dist.world, shuffle=True,
                               seed=cfg.seed, workers=cfg.workers, drop_last=len(data.train_idx) > cfg.batch_size,
                               pin_memory=pin, **shard)
    val_loader = make_loader(subset(data.val_idx, None), cfg.eval_batch_size // dist.world, shuffle=False,
                             seed=cfg.seed, workers=cfg.workers, pin_memory=pin, pad=False, **shard)

    steps_per_epoch = len(train_loader)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay, cfg.weight_decay_all), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(
        max(1, round(cfg.warmup_epochs * steps_per_epoch)), cfg.epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # fp16: cuda or mps
    ema, eval_model = _create_ema(cfg, model)
    net = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    history: list[dict[str, Any]] = []
    best = {"epoch": -1, "val_macro_auc": -math.inf}
    bad_epochs = nonfinite = overflow = start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, best, bad_epochs = state["history"], state["best"], state["bad_epochs"]
        nonfinite, start_epoch, overflow = state["nonfinite"], state["epoch"], state.get("overflow", 0)
    done = bool(state and state.get("done"))

    from tqdm import tqdm

    def check_nonfinite(count: int, what: str, epoch: int, step: int) -> None:
        if count > cfg.max_nonfinite:
            raise TrainingError(f"{count} non-finite losses or gradients (limit max_nonfinite={cfg.max_nonfinite}); "
                                f"the last, a non-finite {what}, at epoch {epoch + 1}, step {step}; the run is stopped")

    epoch = start_epoch
    while not done and epoch < cfg.epochs:
        t0 = time.time()
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout etc.: a function of (seed, epoch) -> resumable
        train_loader.sampler.set_epoch(epoch)
        model.train()
        losses, skipped, overflow_at_start = [], 0, overflow
        bar = tqdm(train_loader, disable=not cfg.progress, desc=f"fold {cfg.fold} epoch {epoch + 1}/{cfg.epochs}",
                   leave=False)
        for images, target, mask in bar:
            step = epoch * steps_per_epoch + len(losses) + skipped
            x = to_model_input(images, mean, std, device, channels_last=device.type == "cuda")
            target, mask = target.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            with autocast_context(device, cfg.amp):
                logits = net(x)
            loss = criterion(logits.float(), target, mask) + model.penalty()
            if fault_hook is not None:
                loss = fault_hook(step, loss)
            optimizer.zero_grad(set_to_none=True)
            if not dist.all_finite(loss):
                skipped += 1
                nonfinite += 1
                check_nonfinite(nonfinite, "loss", epoch, step)
                continue
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            # the gradient norm (after unscaling; identical on every rank after DDP's all-reduce)
            # also catches a finite loss whose gradient is not finite
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            grads_finite = dist.all_finite(grad_norm)
            if not grads_finite and not scaler.is_enabled():
                skipped += 1
                nonfinite += 1
                check_nonfinite(nonfinite, "gradient", epoch, step)
                optimizer.zero_grad(set_to_none=True)
                continue
            scaler.step(optimizer)  # with fp16 loss scaling, skips the update itself on overflow
            scaler.update()
            scheduler.step()
            if not grads_finite:  # fp16 overflow: GradScaler skipped the step and lowered its scale
                overflow += 1
            elif ema is not None:
                _update_ema(ema, cfg, model, step)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.close()
        t_train = time.time() - t0

        val_probs = _predict(dist, eval_model, val_loader, device, mean, std, cfg.amp, False, False)
        y_val = y[data.val_idx]
        val_auc = macro_auc(y_val, val_probs)
        coupling = eval_model.coupling()
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "val_loss": _val_loss(criterion, val_probs, y_val, device), "val_macro_auc": val_auc,
               "lr": optimizer.param_groups[0]["lr"], "nonfinite_skipped": skipped,
               "amp_overflow_steps": overflow - overflow_at_start,
               "coupling_nonzero": float(np.mean(np.abs(_offdiag(coupling)) > 1e-3)) if coupling is not None else float("nan"),
               "train_seconds": t_train, "seconds": time.time() - t0}
        history.append(row)
        epoch += 1
        if val_auc > best["val_macro_auc"]:
            best = {"epoch": epoch, "val_macro_auc": val_auc}
            bad_epochs = 0
            if dist.main:
                _save(best_path, {"model": eval_model.state_dict(), "epoch": epoch, "val_macro_auc": val_auc,
                                  "labels": data.labels, "params": params})
        else:
            bad_epochs += 1
        done = epoch >= cfg.epochs or bad_epochs >= cfg.patience
        if dist.main:
            pd.DataFrame(history).to_csv(out / "history.csv", index=False)
            _save(last_path, {"model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                              "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                              "scaler": scaler.state_dict(), "epoch": epoch, "history": history, "best": best,
                              "bad_epochs": bad_epochs, "nonfinite": nonfinite, "overflow": overflow,
                              "params": params, "done": done,
                              "data": identity})
        dist.barrier()
        if cfg.progress and dist.main:
            print(f"fold {cfg.fold} {cfg.refiner}: epoch {epoch} val macro AUC {val_auc:.4f} "
                  f"(best {best['val_macro_auc']:.4f} @ {best['epoch']})", flush=True)

    if best["epoch"] < 0:
        raise TrainingError(f"validation macro AUC was undefined in all {len(history)} epoch(s) "
                            f"(history: {out / 'history.csv'}); no best checkpoint was kept")
    summary = finish(cfg, data, eval_model, best_path, device, mean, std, subset, dist)
    summary.update({"best_epoch": best["epoch"], "best_val_macro_auc": best["val_macro_auc"],
                    "epochs_run": len(history), "nonfinite_skipped": nonfinite, "amp_overflow_steps": overflow,
                    "world_size": dist.world,
                    "wall_seconds": time.time() - t_start, "out": str(out)})
    if dist.main:
        write_json(out / "metrics.json", summary)
    dist.barrier()
    return summary


def _predict(dist: Dist, model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
             mean: Any, std: Any, amp: str, tta: bool, progress: bool) -> np.ndarray:
    """Probabilities for the whole (unsharded) dataset of ``loader``, gathered from every rank."""
    probs = predict_probs(model, loader, device, mean=mean, std=std, amp=amp, tta=tta, progress=progress)
    return dist.gather_rows(loader.sampler.indices(), probs, len(loader.dataset))


class _Indexed:
    """A view of a cache restricted to rows ``idx`` (so subsets share one memmap)."""

    def __init__(self, cache: UInt8Cache, idx: np.ndarray) -> None:
        self.cache, self.idx = cache, idx

    def __getitem__(self, i: int) -> np.ndarray:
        return self.cache[int(self.idx[i])]


def _offdiag(a: np.ndarray) -> np.ndarray:
    return a[~np.eye(len(a), dtype=bool)]


def _val_loss(criterion: torch.nn.Module, probs: np.ndarray, y: np.ndarray, device: torch.device) -> float:
    """Validation loss (without the coupling penalty) from probabilities, logits recovered by logit()."""
    if not len(y):
        return float("nan")
    p = torch.from_numpy(np.clip(probs, 1e-6, 1 - 1e-6)).float().to(device)
    logits = torch.log(p) - torch.log1p(-p)
    target = torch.from_numpy(np.nan_to_num(y, nan=0.0)).float().to(device)
    mask = torch.from_numpy(np.isfinite(y).astype(np.float32)).to(device)
    with torch.no_grad():
        return float(criterion(logits, target, mask))


def finish(cfg: TrainConfig, data: FoldData, model: torch.nn.Module, best_path: Path, device: torch.device,
           mean: Any, std: Any, subset: Callable[[np.ndarray, Any], CXRImages], dist: Dist | None = None) -> dict[str, Any]:
    """Load the best checkpoint, save validation (out-of-fold) and test predictions and the coupling matrix."""
    dist = dist or Dist()
    out = resolve(cfg.out)
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    model.to(device)
    images = data.table["image"].to_numpy()
    y = label_matrix(data.table)
    meta = {"data_fingerprint": data.data_fingerprint, "splits_fingerprint": data.splits_fingerprint,
            "fold": cfg.fold, "variant": cfg.refiner, "backbone": cfg.backbone, "seed": cfg.seed,
            "best_epoch": best["epoch"]}
    summary: dict[str, Any] = {}
    for split, idx in (("val", data.val_idx), ("test", data.test_idx)):
        if len(idx) == 0:
            continue
        loader = make_loader(subset(idx, None), cfg.eval_batch_size // dist.world, shuffle=False, seed=cfg.seed,
                             workers=cfg.workers, pin_memory=device.type == "cuda", rank=dist.rank,
                             world=dist.world, pad=False)
        for tta in ((False, True) if cfg.tta else (False,)):
            probs = _predict(dist, model, loader, device, mean, std, cfg.amp, tta, cfg.progress and dist.main)
            name = f"pred_{split}{'' if tta or not cfg.tta else '_notta'}.csv"
            if dist.main:
                write_predictions(out / name, images[idx], data.labels, probs,
                                  {**meta, "split": split, "tta": tta})
            key = f"{split}_macro_auc{'' if tta or not cfg.tta else '_notta'}"
            summary[key] = macro_auc(y[idx], probs)
            if split == "val" and (tta or not cfg.tta):
                summary["val_per_label_auc"] = per_label_auc(y[idx], probs, data.labels).to_dict()
    coupling = model.coupling()
    if coupling is not None and dist.main:
        pd.DataFrame(coupling, index=data.labels, columns=data.labels).to_csv(out / "coupling.csv",
                                                                              float_format="%.6f")
        prev = np.clip(np.nanmean(y[data.train_idx], axis=0), 0.01, 0.99)
        effective = effective_coupling(model.refiner, np.log(prev / (1 - prev)))
        pd.DataFrame(effective, index=data.labels, columns=data.labels).to_csv(out / "effective_coupling.csv",
                                                                               float_format="%.6f")
    return summary
