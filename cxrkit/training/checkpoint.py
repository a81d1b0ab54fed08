"""Checkpoints: ``best.pt`` (the evaluated model of the best epoch) and ``last.pt`` (everything
needed to resume), written atomically by rank 0 after every epoch with ``history.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cxrkit.training.resume import Progress
from cxrkit.training.setup import Run
from cxrkit.utils.files import atomic_write


def save(path: Path, obj: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then renamed: a crash never leaves half a checkpoint."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_best(run: Run, epoch: int, val_auc: float) -> None:
    """``best.pt``: the evaluated model (EMA, or EMA backbone with the live refiner) of ``epoch``."""
    save(run.best_path, {"model": run.eval_model.state_dict(), "epoch": epoch, "val_macro_auc": val_auc,
                         "labels": run.data.labels, "params": run.params})


def save_last(run: Run, progress: Progress, identity: dict[str, str]) -> None:
    """``history.csv`` and ``last.pt`` (weights, EMA, optimiser, schedule, scaler, progress, and the
    fingerprints of the data and folds in ``identity``)."""
    pd.DataFrame(progress.history).to_csv(run.out / "history.csv", index=False)
    save(run.last_path, {"model": run.model.state_dict(), "ema": run.ema.state_dict() if run.ema is not None else None,
                         "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                         "scaler": run.scaler.state_dict(), "epoch": progress.epoch, "history": progress.history,
                         "best": progress.best, "bad_epochs": progress.bad_epochs, "nonfinite": progress.nonfinite,
                         "overflow": progress.overflow, "params": run.params, "done": progress.done,
                         "data": identity})
