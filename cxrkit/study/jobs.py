"""Training notebooks as cluster jobs through submitit (``cxrkit study --executor slurm`` or
``local-submitit``): each ``03_train`` step is one job (:func:`make_executor`) that runs papermill on
its node with the parameters the local runner uses (:func:`notebook_job`); :class:`JobLauncher`
submits it, shows its state and waits for it, and names its log files and the failing cell when
it fails. The job's files (submission script, logs, pickled call and result) are in
``reports/<name>/jobs/<job id>/``.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxrkit.study.cluster import EXECUTORS, EXTRA, ClusterConfig
from cxrkit.study.steps import NotebookFailed, Step
from cxrkit.utils.params import ConfigError
from cxrkit.utils.paths import project_root

#: seconds between two looks at a job's state (submitit also throttles its sacct calls)
POLL_S = {"local-submitit": 0.2, "slurm": 15.0}
#: test hook: the notebook executor the jobs call instead of ``papermill.execute_notebook``
NOTEBOOK_EXECUTE: Callable[..., Any] | None = None


def make_executor(kind: str, cluster: ClusterConfig, folder: Path, name: str) -> Any:
    """A ``submitit.AutoExecutor`` for one job named ``name``, its logs in ``folder/<job id>/``:
    SLURM for ``slurm``, submitit's local processes for ``local-submitit`` (the same parameters;
    those prefixed ``slurm_`` apply on SLURM only).

    Raises:
        ConfigError: submitit cannot be imported (naming the extra to install).
    """
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError(f"--executor {kind}: submitit cannot be imported ({exc}); {EXTRA}") from None
    python = {f"{EXECUTORS[kind]}_python": cluster.python} if cluster.python else {}
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=EXECUTORS[kind], **python)
    params = {"name": name, "timeout_min": cluster.time_min, "nodes": 1, "tasks_per_node": 1,
              "cpus_per_task": cluster.cpus_per_job, "gpus_per_node": cluster.gpus_per_job or None, "mem_gb": cluster.mem_gb,
              "slurm_partition": cluster.partition, "slurm_account": cluster.account, "slurm_qos": cluster.qos,
              "slurm_setup": list(cluster.setup) or None, "slurm_additional_parameters": dict(cluster.sbatch) or None}
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def notebook_job(notebook: str, output: str, parameters: dict[str, Any], kernel: str, cwd: str,
                 execute: Callable[..., Any] | None = None) -> dict[str, Any]:
    """What a job runs on its node: the notebook executed with papermill (its cells' output goes
    to the job's log). Returns ``{"status": "ok"}`` or, when a cell fails, ``{"status": "failed",
    "cell", "ename", "evalue"}``; any other error (a dead kernel) fails the job itself."""
    import papermill as pm

    log = logging.getLogger("papermill")  # the cells as they run and their output, in the job's log
    if not log.handlers:
        log.addHandler(logging.StreamHandler(sys.stdout))
        log.setLevel(logging.INFO)
    try:
        (execute or pm.execute_notebook)(notebook, output, parameters=parameters, kernel_name=kernel, cwd=cwd,
                                         progress_bar=False, log_output=True)
    except pm.PapermillExecutionError as exc:
        return {"status": "failed", "cell": exc.exec_count, "ename": exc.ename, "evalue": exc.evalue,
                "host": socket.gethostname()}
    return {"status": "ok", "host": socket.gethostname()}


def running_cell(ipynb: Path) -> int | None:
    """The execution count of the cell papermill was running when a notebook stopped (None when
    the partial notebook does not say)."""
    try:
        cells = json.loads(ipynb.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return None
    for cell in cells:
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            return cell.get("execution_count")
    return None


class JobLauncher:
    """Runs training notebooks as submitit jobs and waits for them; called from one thread per
    job (:func:`cxrkit.study.runner.run_study`). :meth:`stop` (the study interrupted) cancels
    the jobs still queued or running."""

    def __init__(self, kind: str, cluster: ClusterConfig, folder: Path, study: str, progress: bool) -> None:
        self.kind, self.cluster, self.folder, self.study, self.progress = kind, cluster, folder, study, progress
        self.stopping = threading.Event()

    @property
    def runtime(self) -> dict[str, Any]:
        """The notebook's runtime parameters in a job: its own device, ``cpus_per_job`` threads."""
        return {"device": "auto", "threads": self.cluster.cpus_per_job or 0}

    def stop(self) -> None:
        """Cancel the jobs: each waiting thread cancels its own and raises KeyboardInterrupt."""
        self.stopping.set()

    def run(self, step: Step, notebook: Path, output: Path, kernel: str, entry: dict[str, Any],
            save: Callable[[], None]) -> None:
        """Submit ``step``'s notebook as a job, record it in ``entry`` (``job``: id and log files,
        then saved), print its state changes and wait for it.

        Raises:
            NotebookFailed: the scheduler refused the job, a cell failed, or the job ended without a
                result (naming its logs).
            KeyboardInterrupt: :meth:`stop` was called (the job is cancelled).
        """
        if self.stopping.is_set():  # interrupted before this job was submitted
            raise KeyboardInterrupt
        executor = make_executor(self.kind, self.cluster, self.folder, f"{self.study}:{step.name}")
        try:
            job = executor.submit(notebook_job, str(notebook), str(output), {**step.parameters, **self.runtime},
                                  kernel, str(project_root()), NOTEBOOK_EXECUTE)
        except Exception as exc:  # the scheduler refused it (an unknown partition or account, ...)
            raise NotebookFailed(f"submission: {' '.join(str(exc).split())[:500]}") from None
        entry["job"] = {"id": str(job.job_id), "executor": self.kind, "stdout": str(job.paths.stdout),
                        "stderr": str(job.paths.stderr)}
        save()
        self._say(f"[job ] {step.name}: job {job.job_id} submitted ({self.kind}; log {job.paths.stdout})")
        self._wait(job, step)
        result = self._result(job, output)
        entry["job"]["host"] = result.get("host")
        if result["status"] != "ok":
            raise NotebookFailed(f"cell {result['cell']}: {result['ename']}: {result['evalue']}",
                                 f"job {job.job_id} on {result.get('host')}; logs: {job.paths.stdout}, {job.paths.stderr}")

    def _say(self, line: str) -> None:
        if self.progress:
            print(line, flush=True)

    def _wait(self, job: Any, step: Step) -> None:
        """Until the job is done (printing its state when it changes), or cancel it on :meth:`stop`."""
        last = None
        while not job.done():
            if self.stopping.wait(POLL_S[self.kind]):
                job.cancel(check=False)
                self._say(f"       {step.name}: job {job.job_id} cancelled")
                raise KeyboardInterrupt
            state = job.state
            if state != last and state not in ("UNKNOWN", "NO PROCESS AND NO RESULT"):
                self._say(f"       {step.name}: job {job.job_id} {state}")
                last = state

    def _result(self, job: Any, output: Path) -> dict[str, Any]:
        """What :func:`notebook_job` returned.

        Raises:
            NotebookFailed: the job failed (the last line of its traceback) or ended without a
                result (its state and the cell the partial notebook was running), naming its logs.
        """
        from submitit.core.utils import FailedJobError, UncompletedJobError

        logs = f"job {job.job_id}; logs: {job.paths.stdout}, {job.paths.stderr}"
        try:
            return job.result()
        except FailedJobError as exc:  # the job's Python raised (a dead kernel, ...): the last line of its traceback
            trace = str(exc).split("\n----------------------\nYou can check")[0]
            lines = [ln for ln in trace.splitlines() if ln.strip() and not ln.startswith("----")]
            raise NotebookFailed(f"job {job.job_id}: {lines[-1] if lines else exc}", logs) from None
        except UncompletedJobError:  # killed (time limit, memory, node failure) or cancelled
            cell = running_cell(output)
            where = f" while running cell {cell}" if cell is not None else ""
            raise NotebookFailed(f"job {job.job_id}, which ended without a result ({job.state}){where}", logs) from None
