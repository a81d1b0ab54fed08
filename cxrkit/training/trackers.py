"""The tracker backends of :mod:`cxrkit.training.tracking`: MLflow (through ``MlflowClient``, a
folder store, a database store or a tracking server) and TensorBoard (``torch.utils.tensorboard``).

Each backend keeps ``epochs`` (the history rows it has received) and ``finished`` (whether it
has the final metrics), and reports them with what identifies its run in :meth:`state`, which the
run folder's ``tracking.json`` records; given that record back, it continues the same run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from cxrkit.utils.params import ConfigError
from cxrkit.utils.paths import project_root, resolve, runs_dir

EXTRA = "pip install 'cxrkit[tracking]' (mlflow-skinny and tensorboard)"
DEFAULT_MLFLOW_URI = "runs/mlruns"  #: the folder store used without a uri or MLFLOW_TRACKING_URI
DEFAULT_EXPERIMENT = "cxrkit"

#: the run's files sent to the trackers as artifacts at the end (when present)
FINAL_FILES = ("metrics.json", "history.csv", "coupling.csv", "effective_coupling.csv")
MAX_PARAM_LENGTH = 6000  #: MLflow's limit on a parameter's value (the full values are in params.json)
BATCH = 100  #: MLflow's limit on parameters (and tags) per log_batch call


def mlflow_uri(uri: str | None) -> str:
    """The tracking URI: ``uri`` as given when it has a scheme, a folder (from the project root) as
    a ``file:`` URI; without one, ``MLFLOW_TRACKING_URI``, else :data:`DEFAULT_MLFLOW_URI`."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_URI
    if "://" in uri or uri.startswith(("file:", "databricks", "uc")):
        return uri
    return resolve(uri).as_uri()


def run_label(out: Path) -> str:
    """A run's name in the trackers: its folder below ``runs/`` (``smoke/sparse/fold0``), else
    below the project root, else the folder's name."""
    for base in (runs_dir(), project_root()):
        if out.is_relative_to(base):
            return out.relative_to(base).as_posix()
    return out.name


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Parameters as tracker parameters: nested mappings flattened with dots
    (``image_policy.png16``), strings as they are, every other value as JSON."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return flat


def _provenance_tags(out: Path) -> dict[str, str]:
    """Tags from the run's ``provenance.json``: git commit and dirty flag, data and folds
    fingerprints, device, processes, torch version."""
    prov = json.loads((out / "provenance.json").read_text())
    git, host = prov.get("git") or {}, prov.get("host") or {}
    tags = {"mlflow.source.git.commit": git.get("commit"), "cxrkit.git_dirty": git.get("dirty"),
            "cxrkit.data_fingerprint": prov.get("data_fingerprint"),
            "cxrkit.splits_fingerprint": prov.get("splits_fingerprint"), "cxrkit.device": host.get("device"),
            "cxrkit.world_size": prov.get("world_size"), "cxrkit.torch": (prov.get("packages") or {}).get("torch")}
    return {k: str(v) for k, v in tags.items() if v is not None}


class MlflowTracker:
    """One MLflow run per run folder: parameters when it is created, one step per epoch, the final
    metrics (``final/...``) and the run's files as artifacts."""

    def __init__(self, spec: dict[str, Any], out: Path, params: dict[str, Any], previous: dict[str, Any] | None, *,
                 tags: dict[str, str] | None = None) -> None:
        """Open the run ``previous`` records (``state()`` of an earlier tracker), when it is in the
        same store and not deleted, else a new one with ``params`` and ``tags``.

        Args:
            spec: the ``tracking.mlflow`` mapping (``uri``, ``experiment``, ``run_name``, ``tags``).
            out: the folder whose run this is (names the run unless ``run_name`` is given).
            params: the parameters (flattened: :func:`flat_params`), logged when the run is created.
            previous: the recorded state, or None.
            tags: tags of a new run, besides ``cxrkit.run_dir`` and those of ``spec``.
        """
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError(f"tracking.mlflow: mlflow cannot be imported ({exc}); {EXTRA}") from None
        self.uri = mlflow_uri(spec.get("uri"))
        if self.uri.startswith("file:"):  # the folder store mlflow-skinny writes (MLflow 3 keeps it behind this opt-in)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        previous = previous if previous and previous.get("uri") == self.uri else None
        if previous and self._alive(previous["run_id"]):
            self.run_id, self.experiment_id = previous["run_id"], previous["experiment_id"]
            self.epochs, self.finished = int(previous["epochs"]), bool(previous.get("finished"))
            self.client.update_run(self.run_id, status="RUNNING")
            return
        self.experiment_id = self._experiment(spec.get("experiment", DEFAULT_EXPERIMENT))
        tags = {"cxrkit.run_dir": str(out), **(tags or {}), **{k: str(v) for k, v in spec.get("tags", {}).items()}}
        run = self.client.create_run(self.experiment_id, run_name=spec.get("run_name", run_label(out)), tags=tags)
        self.run_id, self.epochs, self.finished = run.info.run_id, 0, False
        self._log_params(params)

    def _alive(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage != "deleted"
        except MlflowException:
            return False

    def _experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when missing (:func:`get_or_create_experiment`)."""
        return get_or_create_experiment(self.client, name)

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:MAX_PARAM_LENGTH]) for k, v in flat_params(params).items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Metrics at step ``step``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):  # MLflow's limit on metrics per log_batch call
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """One history row, at step ``epoch``."""
        self.log_metrics(metrics, epoch)

    def log_record(self, out: Path) -> None:
        """Provenance as tags; ``params.json`` and ``provenance.json`` as artifacts."""
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in _provenance_tags(out).items()])
        self.log_files(out, ("params.json", "provenance.json"))

    def log_final(self, metrics: dict[str, float], step: int, out: Path) -> None:
        """The final metrics at step ``step`` (the epochs run) and the run's files."""
        self.log_metrics(metrics, step)
        self.log_files(out, FINAL_FILES)

    def log_files(self, folder: Path, names: tuple[str, ...] = (), folders: tuple[str, ...] = ()) -> None:
        """Files ``names`` of ``folder`` (those present) as artifacts, and sub-folders ``folders``
        as artifact folders of the same names."""
        for name in names:
            if (folder / name).is_file():
                self.client.log_artifact(self.run_id, str(folder / name))
        for name in folders:
            if (folder / name).is_dir():
                self.client.log_artifacts(self.run_id, str(folder / name), name)

    def close(self, status: str) -> None:
        """End the MLflow run with ``status``."""
        self.client.set_terminated(self.run_id, status)

    def state(self) -> dict[str, Any]:
        """What identifies the run and what it has received."""
        return {"uri": self.uri, "experiment_id": self.experiment_id, "run_id": self.run_id, "epochs": self.epochs,
                "finished": self.finished}


class TensorBoardTracker:
    """One TensorBoard log folder per run folder: the parameters as text, one scalar per history
    column and epoch, the final metrics (``final/...``) at the last epoch's step."""

    def __init__(self, spec: dict[str, Any], out: Path, params: dict[str, Any], previous: dict[str, Any] | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(f"tracking.tensorboard: tensorboard cannot be imported ({exc}); {EXTRA}") from None
        self.dir = str(resolve(spec["dir"]) / run_label(out) if "dir" in spec else out / "tensorboard")
        same = bool(previous) and previous.get("dir") == self.dir
        self.epochs = int(previous["epochs"]) if same else 0
        self.finished = bool(previous.get("finished")) if same else False
        # a resumed run hides what an interrupted one may have logged past the epochs recorded
        self.writer = SummaryWriter(self.dir, purge_step=self.epochs + 1 if same else None)
        if not same:
            self.writer.add_text("params", "    " + json.dumps(params, indent=1).replace("\n", "\n    "), 0)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """One history row, at step ``epoch``."""
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def log_record(self, out: Path) -> None:
        """Provenance as text."""
        text = (out / "provenance.json").read_text()
        self.writer.add_text("provenance", "    " + text.replace("\n", "\n    "), self.epochs)
        self.writer.flush()

    def log_final(self, metrics: dict[str, float], step: int, out: Path) -> None:
        """The final metrics at step ``step`` (the epochs run)."""
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        """Flush and close the event file."""
        self.writer.close()

    def state(self) -> dict[str, Any]:
        """The log folder and what it has received."""
        return {"dir": self.dir, "epochs": self.epochs, "finished": self.finished}


def get_or_create_experiment(client: Any, name: str) -> str:
    """The id of the MLflow experiment ``name``, created when missing.

    Runs that start at the same time may race to create it: a server refuses the second creation
    (then its id is read back), but the folder store creates two experiments of the same name. A
    study therefore creates its experiment before its training jobs start
    (:func:`cxrkit.study.tracking.create_study_experiment`); training runs started by hand in
    parallel on a new experiment should create it first the same way (``mlflow experiments create``).
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        return client.get_experiment_by_name(name).experiment_id
