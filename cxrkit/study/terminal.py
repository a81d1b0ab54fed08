"""What ``cxrkit study`` shows in the terminal: the study's overall progress (steps done of the
steps to run, time elapsed, estimated time left: :class:`StudyProgress`) and the notebook kernels'
stderr without their routine noise (:func:`is_kernel_noise`, :class:`KernelNoiseFilter`,
:func:`quiet_kernel_manager`), real errors kept.

The noise: every kernel ipykernel starts logs ``[IPKernelApp] WARNING | Kernel is running over
TCP without encryption ...`` to its stderr (the terminal of the study), and a kernel interrupted
with the study (Ctrl-C reaches the whole process group) logs ``KeyboardInterrupt caught in
kernel``. Neither tells the user anything; every other line of a kernel's stderr (a crash's
traceback, a real error of the kernel) is passed on unchanged.
"""

from __future__ import annotations

import logging
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import IO, Any

#: Kernel messages that are routine, not errors (matched anywhere in a line or log message).
KERNEL_NOISE = (
    re.compile(r"Kernel is running over TCP without encryption"),
    re.compile(r"KeyboardInterrupt caught in kernel"),
)
#: Loggers of this process that pass kernel messages on (papermill's, which nbclient logs to;
#: jupyter_client's kernel managers log through traitlets'): :func:`quiet_kernel_loggers`.
KERNEL_LOGGERS = ("papermill", "traitlets", "jupyter_client", "nbclient")


def is_kernel_noise(text: str) -> bool:
    """Whether a kernel's line or log message is one of the routine :data:`KERNEL_NOISE`."""
    return any(p.search(text) for p in KERNEL_NOISE)


class KernelNoiseFilter(logging.Filter):
    """A :class:`logging.Filter` dropping the records of :data:`KERNEL_NOISE`, whatever their
    level (``KeyboardInterrupt caught in kernel`` is logged as an error); every other record
    passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_kernel_noise(record.getMessage())


_FILTER = KernelNoiseFilter()


def quiet_kernel_loggers() -> None:
    """Attach :class:`KernelNoiseFilter` to the :data:`KERNEL_LOGGERS` (once; idempotent)."""
    for name in KERNEL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def forward_stderr(stream: IO[bytes], write: Callable[[str], Any] | None = None) -> None:
    """Pass a kernel's stderr on, line by line, without :data:`KERNEL_NOISE`, until it closes.

    Args:
        stream: The kernel process's stderr pipe (bytes).
        write: Where the other lines go; default ``sys.stderr.write`` (looked up per line).
    """
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        if not is_kernel_noise(line):
            (write or sys.stderr.write)(line)
    stream.close()


@lru_cache(maxsize=1)
def quiet_kernel_manager() -> type:
    """jupyter_client's ``AsyncKernelManager`` with the kernel's stderr piped through
    :func:`forward_stderr`, for papermill's ``kernel_manager_class`` (built on first use: importing
    this module does not import jupyter_client)."""
    from jupyter_client import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            kw["stderr"] = subprocess.PIPE
            await super()._async_launch_kernel(kernel_cmd, **kw)
            process = getattr(self.provisioner, "process", None)
            if process is not None and process.stderr is not None:
                threading.Thread(target=forward_stderr, args=(process.stderr,), daemon=True,
                                 name="kernel-stderr").start()

    return QuietKernelManager


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 04 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class StudyProgress:
    """Steps done of the steps to run, elapsed time and the estimated time left, for one
    invocation of a study (thread-safe: parallel training steps report from several threads).

    The estimate: each step left is expected to last as long as the mean of the finished steps
    of its kind in this invocation: training notebooks (``03_train``, one fold of one variant:
    they cost alike) or the others (a kind with none finished yet takes the mean of every
    finished step); the training steps left are shared among the ``jobs`` parallel jobs. There is
    no estimate before the first step has finished.

    Args:
        notebooks: The notebook of every step to run, in order.
        jobs: Training notebooks run at a time.
        clock: Seconds (monotonic), replaceable in tests.
    """

    def __init__(self, notebooks: Sequence[str], jobs: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.kinds = [_kind(nb) for nb in notebooks]
        self.jobs, self.clock = max(1, jobs), clock
        self.start = clock()
        self.started = 0
        self.finished: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    @property
    def total(self) -> int:
        """Steps to run in this invocation."""
        return len(self.kinds)

    def begin(self) -> str:
        """The number of the step starting now: ``step 3/9``."""
        with self.lock:
            self.started += 1
            return f"step {self.started}/{self.total}"

    def end(self, notebook: str, seconds: float) -> str:
        """Record a finished step; ``3/9 steps done, 1 min 02 s elapsed, about 4 min 10 s left``."""
        with self.lock:
            self.finished.append((_kind(notebook), seconds))
            done, elapsed, left = len(self.finished), self.clock() - self.start, self.eta()
        tail = "" if left is None or done == self.total else f", about {_duration(left)} left"
        return f"{done}/{self.total} steps done, {_duration(elapsed)} elapsed{tail}"

    def eta(self) -> float | None:
        """Seconds left (see the class), or None before any step has finished."""
        if not self.finished:
            return None
        mean_all = sum(s for _, s in self.finished) / len(self.finished)
        left = {"train": 0, "other": 0}
        for kind in self.kinds:
            left[kind] += 1
        for kind, _ in self.finished:
            left[kind] -= 1
        total = 0.0
        for kind, n in left.items():
            times = [s for k, s in self.finished if k == kind]
            mean = sum(times) / len(times) if times else mean_all
            total += mean * (math.ceil(n / self.jobs) if kind == "train" else n)
        return total


def _kind(notebook: str) -> str:
    return "train" if notebook == "03_train" else "other"
