"""Resuming an interrupted run: ``last.pt`` is read back, refused when it was written with other
parameters or on other data, and its state (weights, EMA, optimiser, LR schedule, loss scaler
and the epochs' progress) restored, so the run ends with the same result as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cxrkit.training.setup import Run

#: Parameters that may change between an interrupted run and its resumption (none changes the result
#: beyond the last bits a device or a kernel's order of operations changes).
RESUMABLE_CHANGES = {"progress", "workers", "device", "out", "tracking", "compile", "channels_last"}


class TrainingError(RuntimeError):
    """Training cannot go on (too many non-finite losses, incompatible checkpoint, ...)."""


@dataclass
class Progress:
    """What the epochs have done so far; saved in ``last.pt`` with the weights.

    Attributes:
        history: one row per epoch run (``history.csv``).
        best: ``epoch`` (1-based; -1 before any) and ``val_macro_auc`` of the best epoch.
        bad_epochs: epochs since the best one (early stopping after ``patience``).
        nonfinite: steps skipped for a non-finite loss or gradient, in total.
        overflow: fp16 steps GradScaler skipped on overflow, in total.
        epoch: epochs done.
        done: whether training is over (all epochs, or early stopping).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": -1, "val_macro_auc": -math.inf})
    bad_epochs: int = 0
    nonfinite: int = 0
    overflow: int = 0
    epoch: int = 0
    done: bool = False


def _comparable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in RESUMABLE_CHANGES}


def _defaults() -> dict[str, Any]:
    from cxrkit.training.config import TrainConfig
    from cxrkit.utils.params import to_dict

    return to_dict(TrainConfig())


def read_last(last_path: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The state saved in ``last.pt`` (None when there is none), checked to have been written with
    the same parameters (but those of :data:`RESUMABLE_CHANGES`).

    Raises:
        TrainingError: naming the parameters that differ.
    """
    state = torch.load(last_path, map_location="cpu", weights_only=False) if last_path.is_file() else None
    if state is not None:  # a parameter added since the file was written had its default
        state["params"] = {**_defaults(), **state["params"]}
    if state is not None and _comparable(state["params"]) != _comparable(params):
        diff = {k: (state["params"].get(k), v) for k, v in _comparable(params).items()
                if state["params"].get(k) != v}
        raise TrainingError(f"{last_path} was written with other parameters {diff} (old, new); "
                            f"use another --out or delete the folder to start over")
    return state


def check_same_data(state: dict[str, Any] | None, identity: dict[str, str], last_path: Path) -> None:
    """Refuse to resume a run that was trained on other data or folds (``identity``: the
    fingerprints of the data and the folds)."""
    if state is not None and state.get("data", identity) != identity:
        raise TrainingError(f"{last_path} was trained on other data or folds ({state['data']}, now {identity}); "
                            f"use another --out or delete the folder to start over")


def restore(run: Run, state: dict[str, Any] | None) -> Progress:
    """Load a saved state into the run's model, EMA, optimiser, schedule and scaler, and return
    its progress; a fresh :class:`Progress` without one."""
    if state is None:
        return Progress()
    run.model.load_state_dict(state["model"])
    if run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    return Progress(history=state["history"], best=state["best"], bad_epochs=state["bad_epochs"],
                    nonfinite=state["nonfinite"], overflow=state.get("overflow", 0), epoch=state["epoch"],
                    done=bool(state.get("done")))
