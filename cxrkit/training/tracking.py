"""Experiment tracking of a run, off by default: the parameters, the per-epoch history (the
numbers of ``history.csv``), the final metrics (``metrics.json``) and the provenance, sent to
MLflow and/or TensorBoard as the run goes (:func:`open_tracking`). Only rank 0 logs.

The parameter is ``tracking`` of :class:`~cxrkit.training.config.TrainConfig` (a study sets it
once, in ``train:``)::

    tracking:
      mlflow: {uri: runs/mlruns, experiment: smoke}   # or `mlflow: true`: MLFLOW_TRACKING_URI, else runs/mlruns
      tensorboard: {dir: runs/tensorboard}            # or `tensorboard: true`: <run folder>/tensorboard

Neither backend is a dependency of cxrkit: they are imported when a run uses them, and a missing
one is an error naming the extra to install (``pip install 'cxrkit[tracking]'``) before any data
loads. The tracker runs of a run folder are recorded in its ``tracking.json`` with the epochs
each has received, so a resumed run continues the same MLflow run and TensorBoard log (the epochs
it already logged are not logged again).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrkit.training.trackers import EXTRA, MlflowTracker, TensorBoardTracker
from cxrkit.utils.files import write_json
from cxrkit.utils.params import ConfigError

#: the keys of each tracker's mapping: key -> (accepted types, description)
TRACKER_KEYS: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "mlflow": {"uri": ((str,), "a tracking URI (http://host:5000, file:/path, sqlite:///file.db) or a folder"),
               "experiment": ((str,), "an experiment name"),
               "run_name": ((str,), "a run name (default: the run folder below runs/)"),
               "tags": ((dict,), "a mapping of extra tags")},
    "tensorboard": {"dir": ((str,), "a folder (default: the run folder's tensorboard/)")},
}
#: the Python package each tracker needs
TRACKER_PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboard"}
STATE_FILE = "tracking.json"  #: in the run folder: the tracker runs and the epochs each received


@dataclass(frozen=True)
class TrackingConfig:
    """The trackers a run logs to, checked (:meth:`parse`); a tracker left out is off.

    Attributes:
        mlflow: ``uri``, ``experiment``, ``run_name``, ``tags`` (each optional), or None.
        tensorboard: ``dir`` (optional), or None.
    """

    mlflow: dict[str, Any] | None = None
    tensorboard: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        """Whether any tracker is on."""
        return self.mlflow is not None or self.tensorboard is not None

    @classmethod
    def parse(cls, value: Any, where: str = "tracking") -> TrackingConfig:
        """Check a ``tracking`` mapping (unknown keys, wrong types, a tracker whose package is not
        installed, a database store without SQLAlchemy) and fill in ``true`` as ``{}``.

        Raises:
            ConfigError: naming the key and, for a missing package, the extra to install.
        """
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping such as {{mlflow: {{uri: runs/mlruns}}}}, got {value!r}")
        specs: dict[str, dict[str, Any] | None] = {}
        for name, spec in value.items():
            if name not in TRACKER_KEYS:
                close = difflib.get_close_matches(str(name), TRACKER_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{where}.{name}: unknown tracker{hint}; known: {sorted(TRACKER_KEYS)}")
            specs[name] = _parse_tracker(name, spec, f"{where}.{name}")
        return cls(**specs)


def _parse_tracker(name: str, spec: Any, where: str) -> dict[str, Any] | None:
    """One tracker's mapping checked (``true``: defaults, ``false``/null: off)."""
    if spec is None or spec is False:
        return None
    spec = {} if spec is True else spec
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected true, false or a mapping of {sorted(TRACKER_KEYS[name])}, got {spec!r}")
    for key, val in spec.items():
        if key not in TRACKER_KEYS[name]:
            close = difflib.get_close_matches(str(key), TRACKER_KEYS[name], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}.{key}: unknown key{hint}; known: {sorted(TRACKER_KEYS[name])}")
        types, what = TRACKER_KEYS[name][key]
        if not isinstance(val, types) or (isinstance(val, str) and not val.strip()):
            raise ConfigError(f"{where}.{key}: must be {what}, got {val!r}")
    if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
        raise ConfigError(f"{where}: the {TRACKER_PACKAGES[name]} package is not installed; {EXTRA}")
    if name == "mlflow" and spec.get("uri", "").split(":")[0].split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql") \
            and importlib.util.find_spec("sqlalchemy") is None:
        raise ConfigError(f"{where}.uri: a database store ({spec['uri']}) needs the full mlflow package "
                          f"(pip install mlflow); mlflow-skinny logs to a folder store (a path) or a server (http://...)")
    return dict(spec)


def epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of one ``history.csv`` row that are logged (every finite number but the epoch)."""
    return {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers of ``metrics.json`` as ``final/<name>`` (per label: ``final/val_auc/<label>``)."""
    out = {f"final/{k}": float(v) for k, v in summary.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    for label, auc in (summary.get("val_per_label_auc") or {}).items():
        if auc is not None and math.isfinite(auc):
            out[f"final/val_auc/{label}"] = float(auc)
    return out


@dataclass
class Tracking:
    """The trackers of one run (none on ranks other than 0): each call goes to every tracker, and
    the run folder's ``tracking.json`` keeps what each has received.

    Attributes:
        trackers: tracker name -> its backend (:mod:`cxrkit.training.trackers`).
        state_file: the run folder's ``tracking.json`` (None when nothing is tracked).
    """

    trackers: dict[str, Any] = field(default_factory=dict)
    state_file: Path | None = None

    def _save(self) -> None:
        if self.state_file is not None:
            write_json(self.state_file, {name: t.state() for name, t in self.trackers.items()})

    def history(self, rows: list[dict[str, Any]]) -> None:
        """Log the epochs of ``rows`` (the run's history so far) that a tracker has not received."""
        for t in self.trackers.values():
            for row in rows[t.epochs:]:
                t.log_epoch(int(row["epoch"]), epoch_metrics(row))
                t.epochs += 1
        self._save()

    def record(self, out: Path) -> None:
        """Log the run's record: ``params.json`` and ``provenance.json`` (as tags and artifacts)."""
        for t in self.trackers.values():
            t.log_record(out)

    def final(self, summary: dict[str, Any], out: Path) -> None:
        """Log the final metrics (``metrics.json``) once, and the run's files."""
        for t in self.trackers.values():
            if not t.finished:
                t.log_final(final_metrics(summary), int(summary.get("epochs_run", 0)), out)
                t.finished = True
        self._save()

    def close(self, status: str) -> None:
        """End the tracker runs: ``FINISHED``, ``FAILED`` or ``KILLED`` (a resumed run reopens them)."""
        for t in self.trackers.values():
            t.close(status)

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        """Close with ``FINISHED``, ``KILLED`` (interrupted) or ``FAILED`` (an error)."""
        self.close("FINISHED" if kind is None else "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def open_tracking(value: dict[str, Any], out: Path, params: dict[str, Any], *, main: bool) -> Tracking:
    """The trackers of the run in ``out``: new tracker runs, or those ``tracking.json`` records
    (a resumed run continues them); nothing on ranks other than 0 or with tracking off.

    Raises:
        ConfigError: a tracker's package is missing (naming the extra to install).
    """
    cfg = TrackingConfig.parse(value)
    if not main or not cfg.enabled:
        return Tracking()
    state_file = out / STATE_FILE
    previous = json.loads(state_file.read_text()) if state_file.is_file() else {}
    trackers: dict[str, Any] = {}
    if cfg.mlflow is not None:
        tags = {"cxrkit.fold": str(params.get("fold")), "cxrkit.refiner": str(params.get("refiner"))}
        trackers["mlflow"] = MlflowTracker(cfg.mlflow, out, params, previous.get("mlflow"), tags=tags)
    if cfg.tensorboard is not None:
        trackers["tensorboard"] = TensorBoardTracker(cfg.tensorboard, out, params, previous.get("tensorboard"))
    tracking = Tracking(trackers, state_file)
    tracking._save()
    return tracking
