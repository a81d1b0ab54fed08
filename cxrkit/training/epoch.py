"""One epoch of training (:func:`train_one_epoch`) and the validation after it (:func:`validate`),
timm style.

Non-finite steps: a step whose loss *or* gradient norm is not finite is skipped and counted
(``max_nonfinite`` stops the run past that); with fp16 loss scaling, GradScaler's own overflow
skips are counted separately.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cxrkit.data.pipeline import to_model_input
from cxrkit.evaluation.metrics import macro_auc
from cxrkit.training.distributed import predict_gathered
from cxrkit.training.ema import update_ema
from cxrkit.training.resume import Progress, TrainingError
from cxrkit.training.setup import Run
from cxrkit.training.timing import Clock
from cxrkit.utils.amp import autocast_context

#: ``(global_step, loss) -> loss``, a test hook applied to every training loss.
FaultHook = Callable[[int, torch.Tensor], torch.Tensor]


def train_one_epoch(run: Run, progress: Progress, fault_hook: FaultHook | None = None,
                    clock: Clock | None = None) -> dict[str, Any]:
    """Train epoch ``progress.epoch`` (0-based): dropout and the batches are functions of (seed,
    epoch), so a resumed run repeats them. Updates ``progress.nonfinite``/``overflow``, and
    ``clock``'s ``train_data_wait`` and ``ema`` (:mod:`cxrkit.training.timing`).

    Returns:
        ``train_loss`` (mean over the steps taken), ``nonfinite_skipped`` and
        ``amp_overflow_steps`` of this epoch.

    Raises:
        TrainingError: more than ``max_nonfinite`` non-finite steps in the run.
    """
    from tqdm import tqdm

    cfg, epoch, clock = run.cfg, progress.epoch, clock or Clock()
    torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout etc.: a function of (seed, epoch) -> resumable
    run.train_loader.sampler.set_epoch(epoch)
    run.model.train()
    losses, skipped, overflow_at_start = [], 0, progress.overflow
    bar = tqdm(run.train_loader, disable=not cfg.progress, desc=f"fold {cfg.fold} epoch {epoch + 1}/{cfg.epochs}",
               leave=False)
    for images, target, mask in clock.timed(bar, "train_data_wait"):
        step = epoch * run.steps_per_epoch + len(losses) + skipped
        loss = _step(run, progress, (images, target, mask), step, fault_hook, clock)
        if loss is None:
            skipped += 1
            continue
        losses.append(loss)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    return {"train_loss": float(np.mean(losses)) if losses else float("nan"), "nonfinite_skipped": skipped,
            "amp_overflow_steps": progress.overflow - overflow_at_start}


def _step(run: Run, progress: Progress, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], step: int,
          fault_hook: FaultHook | None, clock: Clock) -> float | None:
    """One optimiser step on a batch ``(images, target, mask)``: the loss's value, or None when
    the step was skipped for a non-finite loss or gradient."""
    cfg, device, dist, model = run.cfg, run.device, run.dist, run.model
    images, target, mask = batch
    x = to_model_input(images, run.mean, run.std, device, channels_last=run.channels_last)
    target, mask = target.to(device, non_blocking=True), mask.to(device, non_blocking=True)
    with autocast_context(device, cfg.amp):
        logits = run.net(x)
    loss = run.criterion(logits.float(), target, mask) + model.penalty()
    if fault_hook is not None:
        loss = fault_hook(step, loss)
    run.optimizer.zero_grad(set_to_none=True)
    if not dist.all_finite(loss):
        _count_nonfinite(cfg.max_nonfinite, progress, "loss", step)
        return None
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    # the gradient norm (after unscaling; identical on every rank after DDP's all-reduce)
    # also catches a finite loss whose gradient is not finite
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    grads_finite = dist.all_finite(grad_norm)
    if not grads_finite and not run.scaler.is_enabled():
        _count_nonfinite(cfg.max_nonfinite, progress, "gradient", step)
        run.optimizer.zero_grad(set_to_none=True)
        return None
    run.scaler.step(run.optimizer)  # with fp16 loss scaling, skips the update itself on overflow
    run.scaler.update()
    run.scheduler.step()
    if not grads_finite:  # fp16 overflow: GradScaler skipped the step and lowered its scale
        progress.overflow += 1
    elif run.ema is not None:
        with clock.phase("ema"):
            update_ema(run.ema, cfg, model, step)
    return loss.item()


def _count_nonfinite(limit: int, progress: Progress, what: str, step: int) -> None:
    """Count a skipped step; stop the run past ``limit`` (``max_nonfinite``)."""
    progress.nonfinite += 1
    if progress.nonfinite > limit:
        raise TrainingError(f"{progress.nonfinite} non-finite losses or gradients (limit max_nonfinite={limit}); "
                            f"the last, a non-finite {what}, at epoch {progress.epoch + 1}, step {step}; "
                            f"the run is stopped")


def validate(run: Run) -> dict[str, Any]:
    """Validate the evaluated model on the fold's validation images (no TTA), gathered from
    every rank.

    Returns:
        ``val_loss`` (without the coupling penalty), ``val_macro_auc`` and ``coupling_nonzero``
        (the share of off-diagonal couplings above 1e-3; NaN without a coupling matrix).
    """
    cfg = run.cfg
    val_probs = predict_gathered(run.dist, run.eval_model, run.val_loader, run.device, run.mean, run.std, cfg.amp,
                                 False, False)
    y_val = run.y[run.data.val_idx]
    val_auc = macro_auc(y_val, val_probs)
    coupling = run.eval_model.coupling()
    return {"val_loss": _val_loss(run.criterion, val_probs, y_val, run.device), "val_macro_auc": val_auc,
            "coupling_nonzero": float(np.mean(np.abs(_offdiag(coupling)) > 1e-3)) if coupling is not None
            else float("nan")}


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
