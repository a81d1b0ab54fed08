"""Where a run's time goes: seconds per phase, summed over the run (``timings`` in
``metrics.json``; cxrkit issue 15).

Phases: ``start`` (devices, the run folder, ``last.pt`` read, trackers), ``data`` (the table, the
folds and the image check, :func:`cxrkit.training.fold.load_fold`), ``set_up`` (model, uint8
cache built or opened, loaders, optimiser, EMA; and a saved state restored), per epoch
``train_data_wait`` (waiting for the loader's next batch), ``train_compute`` (forward, backward,
optimiser step, the rest of the step), ``ema`` (the EMA update, inside the step), ``validation``,
``checkpoint`` (``best.pt`` and ``last.pt``), then ``final_predictions`` (the best checkpoint
reloaded, both splits predicted with and without TTA, the coupling matrices written) and
``other`` (the rest of ``total``: records, trackers, history). A resumed run counts this process
only. On a GPU each phase boundary waits for the device (:meth:`Clock.phase`), so the seconds are
the device's too; within an epoch the loss's ``.item()`` synchronises every step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")


class Clock:
    """Seconds per phase of a run, summed (module docstring)."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.start = self._mark = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.device = device

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to phase ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def mark(self) -> None:
        """Start the next :meth:`lap` now."""
        self._mark = time.perf_counter()

    def lap(self, name: str) -> None:
        """Add the time since the last :meth:`lap` or :meth:`mark` (or the start) to ``name``."""
        self._sync()
        now = time.perf_counter()
        self.add(name, now - self._mark)
        self._mark = now

    def timed(self, items: Iterable[T], name: str) -> Iterator[T]:
        """``items``, adding the time spent waiting for each to phase ``name``."""
        it = iter(items)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self.add(name, time.perf_counter() - t0)
            yield item

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (waiting for a CUDA device at its end)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.add(name, time.perf_counter() - t0)

    def summary(self) -> dict[str, float]:
        """Every phase's seconds, ``other`` (the rest) and ``total`` since the clock started."""
        total = time.perf_counter() - self.start
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        out["other"] = round(max(0.0, total - sum(self.seconds.values())), 3)
        out["total"] = round(total, 3)
        return out
