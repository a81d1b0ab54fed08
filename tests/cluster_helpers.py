"""The notebook stand-in of the study tests (:class:`study_helpers.FakeNotebooks`) inside submitit
jobs: pickled into the job's process (``tests/`` on its PYTHONPATH), it appends one JSON line per
event to a log file the test reads back, and can fail a cell, fail the job itself, or wait to be
cancelled."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import nbformat
from study_helpers import FakeNotebooks


class JobNotebooks(FakeNotebooks):
    """FakeNotebooks for jobs. ``fail``: a step whose notebook fails in cell 3 (ValueError: boom);
    ``crash``: a step whose job raises outside the notebook (RuntimeError: kernel died);
    ``block``: a step that waits (up to ``block_s``) until it is cancelled."""

    def __init__(self, log: Path) -> None:
        super().__init__()
        self.log = Path(log)
        self.fail: str | None = None
        self.crash: str | None = None
        self.block: str | None = None
        self.block_s = 1800.0  # a hang guard: the test cancels the job as soon as it has started

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_lock")
        state["train_barrier"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _write(self, event: str, name: str, parameters: dict) -> None:
        with open(self.log, "a") as f:
            f.write(json.dumps({"event": event, "step": name, "pid": os.getpid(), "parameters": parameters}) + "\n")

    def execute(self, input_path, output_path, parameters, **kwargs) -> None:
        import papermill as pm

        from cxrkit import study

        name = study.Step(Path(input_path).stem, {k: v for k, v in parameters.items()
                                                  if k not in ("device", "threads")}).name
        self._write("start", name, parameters)
        if name == self.fail:
            Path(output_path).write_text(nbformat.writes(nbformat.v4.new_notebook()))
            raise pm.PapermillExecutionError(2, 3, "x = 1 / 0", "ValueError", "boom", [])
        if name == self.crash:
            raise RuntimeError("kernel died")
        if name == self.block:
            t0 = time.monotonic()
            while time.monotonic() - t0 < self.block_s:  # a bound, not a timing: the job is cancelled long before
                time.sleep(0.05)
        super().execute(input_path, output_path, parameters, **kwargs)
        self._write("end", name, parameters)

    def events_logged(self) -> list[dict]:
        """The events the jobs logged, in order."""
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.is_file() else []

    def ran_in_jobs(self) -> list[str]:
        """The steps whose notebook finished in a job, sorted."""
        return sorted(e["step"] for e in self.events_logged() if e["event"] == "end")
