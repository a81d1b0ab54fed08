"""Running a study: the notebooks executed in order with papermill, skipped when nothing they
depend on changed, training notebooks in parallel jobs (local processes, or cluster jobs through
submitit: :mod:`cxrkit.study.jobs`); then the HTML report.

``cxrkit study -f params/default.yaml`` executes the numbered notebooks in order (``03_train``
once per fold and variant) into ``reports/<name>/``, renders each to HTML and writes
``reports/index.html``. Steps whose notebook, parameters and inputs did not change are skipped.
"""

from __future__ import annotations

import hashlib
import json
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cxrkit.study.cluster import check_executor
from cxrkit.study.config import StudyConfig, StudyError, load_study
from cxrkit.study.data import data_fingerprint, external_fingerprint
from cxrkit.study.jobs import JobLauncher
from cxrkit.study.outputs import HEADLINES, MANIFEST, forget_step, read_json
from cxrkit.study.report import write_index
from cxrkit.study.steps import NotebookFailed, Step, plan
from cxrkit.study.terminal import StudyProgress, quiet_kernel_loggers, quiet_kernel_manager
from cxrkit.study.tracking import create_study_experiment, track_study
from cxrkit.utils.files import write_json
from cxrkit.utils.params import ConfigError, load_yaml, to_dict
from cxrkit.utils.paths import project_root, resolve
from cxrkit.utils.provenance import environment

KERNEL_NAME = "cxrkit"


def ensure_kernel() -> str:
    """Register the ``cxrkit`` Jupyter kernel in this environment when it is not there yet."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL_NAME, display_name="Python (cxrkit)", prefix=sys.prefix)
    return KERNEL_NAME


def _code_digest() -> bytes:
    """The digest of the package's code (every module's source): part of every step's key."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted((project_root() / "cxrkit").rglob("*.py")))).digest()


def _step_key(step: Step, params_text: str, upstream: str, data: str = "") -> str:
    """Hash of what a step's result depends on: its notebook, the package code, the parameter
    file, the step's parameters, the upstream steps' keys and the data fingerprint ``data``."""
    nb = (project_root() / "notebooks" / f"{step.notebook}.ipynb").read_bytes()
    code = _code_digest()
    h = hashlib.sha256()
    for part in (nb, code, params_text.encode(), json.dumps(step.parameters, sort_keys=True).encode(), upstream.encode(),
                 data.encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def key_text(params_path: Path) -> str:
    """The study file as far as the steps' results depend on it, for their keys: its parameters
    without ``cluster`` (where the training notebooks run) and ``train.tracking`` (where the runs
    are logged), so that moving a study to a cluster or turning tracking on re-runs nothing."""
    values = load_yaml(params_path)
    values.pop("cluster", None)
    if isinstance(values.get("train"), dict):
        values["train"] = {k: v for k, v in values["train"].items() if k != "tracking"}
    return json.dumps(values, sort_keys=True, default=str)


def _render_html(ipynb: Path, out: Path) -> None:
    """An executed notebook as an HTML page (JupyterLab's template) without its code cells' inputs:
    markdown and outputs only (the notebook keeps the code)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    out.write_text(body)


def _runtime_slots(jobs: int) -> list[dict[str, Any]]:
    """Per parallel job: the device and CPU threads its training notebook uses (one GPU per job
    when GPUs are present, round robin; on CPU the cores are shared out)."""
    import os

    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        return [{"device": f"cuda:{i % gpus}", "threads": 0} for i in range(jobs)]
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    return [{"device": "auto", "threads": threads} for _ in range(jobs)]


def auto_jobs() -> int:
    """Parallel training jobs for ``--jobs auto``: one per GPU when GPUs are present, else two on
    a CPU with at least two cores (two single-threaded processes feed small CPU models about 25%
    faster than one process with two threads; see ``make bench``), else one."""
    import os

    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        return gpus
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def run_study(params_file: str | Path, *, force: bool = False, only: Sequence[str] | None = None,
              progress: bool = True, jobs: int | str | None = None, executor: str = "local") -> dict[str, Any]:
    """Execute every step of the study with papermill and write the HTML report.

    Args:
        params_file: The study parameter file.
        force: Re-run steps even when their inputs did not change.
        only: Run only the steps whose name starts with one of these prefixes.
        progress: Print one line per step, with the study's progress (steps done of the steps
            to run, elapsed, estimated time left: :class:`cxrkit.study.terminal.StudyProgress`).
        jobs: Training notebooks (``03_train``, one per fold and variant) run this many at a
            time, each as its own papermill job (one GPU each when GPUs are present);
            ``"auto"`` picks :func:`auto_jobs`; None: 1, or with a cluster executor all at once.
        executor: Where training notebooks run (:data:`cxrkit.study.cluster.EXECUTORS`): ``local``
            (papermill here), ``slurm`` (a SLURM job each, through submitit, as the study file's
            ``cluster:`` block asks) or ``local-submitit`` (the same jobs as local processes).

    Raises:
        StudyError: naming the failing notebook and cell (and a job's log files); the partial
            outputs are kept.
        ConfigError: before anything runs, for a bad parameter, executor or ``cluster:`` block.
    """
    params_path = resolve(params_file)
    cfg = load_study(params_path).validate()
    cluster = check_executor(executor, cfg.cluster)  # before anything runs
    jobs = _check_jobs(jobs, cluster is not None)
    params_arg = str(params_path.relative_to(project_root())) if params_path.is_relative_to(project_root()) else str(params_path)
    kernel = ensure_kernel()
    out = cfg.report_dir
    steps = plan(cfg, params_arg)
    state = _open_report(out, params_path, steps)
    data_fp = data_fingerprint(cfg, progress=progress)  # once per invocation; part of every step's key
    step_data = {"07_external": external_fingerprint(cfg, progress=progress)}  # "" without external:
    launcher = JobLauncher(executor, cluster, out / "jobs", cfg.name, progress) if cluster else None
    todo = _steps_to_run(steps, state, out, key_text(params_path), data_fp, force=force, only=only,
                         progress=progress, step_data=step_data, gone=lambda st: _run_gone(cfg, st))
    quiet_kernel_loggers()  # the kernels' routine warnings stay out of the terminal, errors do not
    create_study_experiment(cfg)  # with train.tracking.mlflow: before parallel training runs race to create it
    tracker = StudyProgress([st.notebook for st, _ in todo], jobs or len(todo) or 1)
    if progress:
        print(f"{cfg.name}: {len(todo)} of {len(steps)} steps to run", flush=True)
    runner = _Executor(out, steps, state, kernel, jobs or len(todo) or 1, progress, launcher, tracker)
    t_study = time.time()
    try:
        _run_in_order(todo, jobs or len(todo), runner.execute, launcher.stop if launcher else lambda: None)
    finally:
        write_json(out / "provenance.json", {"params_file": str(params_path), "params": to_dict(cfg), "jobs": jobs,
                                              "executor": executor,
                                              "wall_seconds_this_invocation": round(time.time() - t_study, 1),
                                              **environment()})
        write_index(cfg)
        track_study(cfg, out, state)  # with train.tracking.mlflow: the report's tables in a study-level run
    return {"index": str(out / "index.html"), "report_dir": str(out), "steps": state}


def _check_jobs(jobs: int | str | None, cluster: bool) -> int | None:
    """Training notebooks at a time: ``auto`` is :func:`auto_jobs` locally and every one at once on
    a cluster (None), None is 1 locally.

    Raises:
        ConfigError: not an integer >= 1, ``auto`` or None.
    """
    if jobs is None or jobs == "auto":
        return None if cluster else (1 if jobs is None else auto_jobs())
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs: must be an integer >= 1 or 'auto', got {jobs!r}")
    return jobs


def _open_report(out: Path, params_path: Path, steps: list[Step]) -> dict[str, Any]:
    """Make the report folder, copy the parameter file into it and return the recorded state of
    the planned steps (``steps.json``, in plan order). Steps no longer in the plan (a removed
    variant, fewer folds) leave the report: their entry in ``steps.json``, their figures, tables
    and headline metrics, and their executed notebooks."""
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copy(params_path, out / "params.yaml")
    state_file = out / "steps.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    names = {st.name for st in steps}
    for name in (set(state) | set(read_json(out / MANIFEST)) | set(read_json(out / HEADLINES))) - names:
        forget_step(out, name)
    for f in (out / "notebooks").glob("*"):
        if f.suffix in (".ipynb", ".html") and f.stem not in names:
            f.unlink()
    state = {st.name: state[st.name] for st in steps if st.name in state}  # in plan order
    write_json(state_file, state)
    return state


def _run_gone(cfg: StudyConfig, step: Step) -> bool:
    """Whether ``step`` is a training notebook whose run has no ``metrics.json`` any more (its run
    folder deleted or moved since the step ran)."""
    if step.notebook != "03_train":
        return False
    p = step.parameters
    return not (cfg.train_dir(p["fold"], p["refiner"], p.get("seed")) / "metrics.json").is_file()


def _steps_to_run(steps: list[Step], state: dict[str, Any], out: Path, params_text: str, data_fp: str, *,
                  force: bool, only: Sequence[str] | None, progress: bool,
                  step_data: dict[str, str] | None = None,
                  gone: Callable[[Step], bool] = lambda step: False) -> list[tuple[Step, str]]:
    """The steps that must run, with their keys: keys chain through the plan, so a changed step
    re-runs everything after it; a step whose key, status and notebook are unchanged is skipped,
    unless ``gone(step)`` (a training step whose run was deleted: it trains it again, and the
    notebooks after the training notebooks, which read that run, run again too).
    ``step_data`` adds the fingerprint of further data to one notebook's key (``07_external``: the
    external site's)."""
    todo: list[tuple[Step, str]] = []
    upstream, retrained = "", False
    for step in steps:
        key = _step_key(step, params_text, upstream, data_fp + (step_data or {}).get(step.notebook, ""))
        upstream = hashlib.sha256((upstream + key).encode()).hexdigest()
        if only and not any(step.name.startswith(o) for o in only):
            continue
        prev = state.get(step.name, {})
        retrained = retrained or gone(step)
        if not force and prev.get("key") == key and prev.get("status") == "ok" \
                and (out / "notebooks" / f"{step.name}.ipynb").is_file() and not gone(step) \
                and not (retrained and step.notebook > "03_train"):
            if progress:
                print(f"[skip] {step.name} (unchanged)", flush=True)
            continue
        todo.append((step, key))
    return todo


def _run_in_order(todo: list[tuple[Step, str]], jobs: int, execute: Callable[[Step, str], None],
                  stop: Callable[[], None] = lambda: None) -> None:
    """Run the steps in order; consecutive training notebooks ``jobs`` at a time. Interrupted while
    waiting for them, ``stop`` is called (a cluster executor cancels its jobs)."""
    from concurrent.futures import ThreadPoolExecutor, wait

    i = 0
    while i < len(todo):
        group = [todo[i]]
        while jobs > 1 and todo[i][0].notebook == "03_train" and i + len(group) < len(todo) \
                and todo[i + len(group)][0].notebook == "03_train":
            group.append(todo[i + len(group)])
        if len(group) == 1:
            execute(*group[0])
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(execute, st, k) for st, k in group]
                try:
                    wait(futures)
                except BaseException:
                    stop()
                    raise
                errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise errors[0]
        i += len(group)


class _Executor:
    """Executes steps with papermill (from several threads for parallel training notebooks), each
    training notebook on a runtime slot of :func:`_runtime_slots` or, with a ``launcher``, as a
    cluster job, keeping ``steps.json`` current."""

    def __init__(self, out: Path, steps: list[Step], state: dict[str, Any], kernel: str, jobs: int,
                 progress: bool, launcher: JobLauncher | None = None, tracker: StudyProgress | None = None) -> None:
        self.out, self.steps, self.state, self.kernel, self.progress = out, steps, state, kernel, progress
        self.launcher, self.tracker = launcher, tracker or StudyProgress([st.notebook for st in steps], jobs)
        self.lock = threading.Lock()
        self.slots: queue.Queue = queue.Queue()
        for slot in (_runtime_slots(jobs) if launcher is None else []):
            self.slots.put(slot)

    def save_state(self) -> None:
        """Write ``steps.json`` (the planned steps' state, in plan order)."""
        with self.lock:
            write_json(self.out / "steps.json",
                       {st.name: self.state[st.name] for st in self.steps if st.name in self.state})  # plan order

    def execute(self, step: Step, key: str) -> None:
        """Run one step; its old figures, tables and headline go first, the notebook writes them anew.

        Raises:
            StudyError: naming the notebook and the failing cell (the partial notebook is kept) and,
                for a cluster job, its log files.
        """
        out = self.out
        ipynb, page = out / "notebooks" / f"{step.name}.ipynb", out / "notebooks" / f"{step.name}.html"
        if self.progress:
            print(f"[run ] {step.name} {step.parameters} ({self.tracker.begin()})", flush=True)
        t0 = time.time()
        entry = {"key": key, "notebook": step.notebook, "parameters": step.parameters, "status": "running",
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        with self.lock:
            self.state[step.name] = entry
        self.save_state()
        forget_step(out, step.name)  # its old figures, tables and headline go; the notebook writes them anew
        try:
            self._notebook(step, ipynb, entry)
        except NotebookFailed as exc:
            entry.update(status="failed", seconds=round(time.time() - t0, 1), error=exc.error)
            self.save_state()
            if ipynb.is_file():
                _render_html(ipynb, page)
            where = f"; {exc.where}" if exc.where else ""
            raise StudyError(f"{step.notebook}.ipynb {step.parameters} failed in {exc.error} "
                             f"(partial notebook: {ipynb}{where})") from None
        except BaseException:
            entry.update(status="interrupted", seconds=round(time.time() - t0, 1))
            self.save_state()
            raise
        _render_html(ipynb, page)
        entry.update(status="ok", seconds=round(time.time() - t0, 1))
        self.save_state()
        if self.progress:
            print(f"       {step.name} done in {entry['seconds']:.0f} s; "
                  f"{self.tracker.end(step.notebook, entry['seconds'])}", flush=True)

    def _notebook(self, step: Step, ipynb: Path, entry: dict[str, Any]) -> None:
        """Execute ``step``'s notebook into ``ipynb``: a training notebook as a job of the launcher
        (a cluster executor) or with papermill here on a runtime slot; the others here.

        Raises:
            NotebookFailed: naming the failing cell (and a job's logs).
        """
        import papermill as pm

        source = project_root() / "notebooks" / f"{step.notebook}.ipynb"
        if self.launcher is not None and step.notebook == "03_train":
            self.launcher.run(step, source, ipynb, self.kernel, entry, self.save_state)
            return
        runtime = self.slots.get() if step.notebook == "03_train" else {}
        try:
            pm.execute_notebook(str(source), str(ipynb), parameters={**step.parameters, **runtime},
                                kernel_name=self.kernel, cwd=str(project_root()), progress_bar=False, log_output=False,
                                kernel_manager_class=quiet_kernel_manager())
        except pm.PapermillExecutionError as exc:
            raise NotebookFailed(f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}") from None
        finally:
            if runtime:
                self.slots.put(runtime)
