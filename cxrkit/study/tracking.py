"""A study in the experiment tracker: with ``train.tracking.mlflow`` set, every training run is an
MLflow run of the study's experiment (named after the study by default, tagged with the study and
the variant) and the study itself is one more run, ``<name> (study)``, holding the report's tables
and figures, ``steps.json``, ``headlines.json`` and the parameter file as artifacts and the steps'
numeric headline metrics as metrics (one step per ``cxrkit study`` invocation). The report
folder's ``tracking.json`` records that run, so a re-run study continues it."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from cxrkit.study.config import StudyConfig
from cxrkit.study.outputs import HEADLINES, read_json
from cxrkit.training.trackers import MlflowTracker, get_or_create_experiment, mlflow_uri
from cxrkit.training.tracking import STATE_FILE, TrackingConfig
from cxrkit.utils.files import write_json
from cxrkit.utils.params import to_dict

#: the report's records sent as artifacts (the notebooks' HTML pages are not: they are large)
RECORDS = ("steps.json", HEADLINES, "params.yaml", "provenance.json")


def metric_name(name: str) -> str:
    """``name`` as MLflow accepts it: every character other than letters, digits, ``_ - . : /`` and
    space replaced by ``_`` (a headline such as ``test_macro_auc_none (3-fold ensemble, flip TTA)``
    becomes ``test_macro_auc_none _3-fold ensemble_ flip TTA_``)."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def headline_metrics(headlines: dict[str, Any]) -> dict[str, float]:
    """The steps' numeric headline metrics as ``<step>/<name>`` (names made valid for MLflow by
    :func:`metric_name`)."""
    return {metric_name(f"{step}/{k}"): float(v) for step, heads in headlines.items() for k, v in (heads or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def create_study_experiment(cfg: StudyConfig) -> str | None:
    """Create the study's MLflow experiment (``train.tracking.mlflow.experiment``, default the
    study's name) before its training runs start, so that parallel jobs all find it instead of
    racing to create it (MLflow's folder store would then hold two experiments of that name).
    Returns its id (None without MLflow)."""
    spec = TrackingConfig.parse(cfg.train.get("tracking"), where="train.tracking").mlflow
    if spec is None:
        return None
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri(spec.get("uri"))
    if uri.startswith("file:"):  # as MlflowTracker: the folder store is behind MLflow 3's opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return get_or_create_experiment(MlflowClient(tracking_uri=uri), spec.get("experiment", cfg.name))


def track_study(cfg: StudyConfig, report_dir: Path, state: dict[str, Any]) -> str | None:
    """Log the study's report to its MLflow run (when ``train.tracking.mlflow`` is set): tables and
    figures, the records of :data:`RECORDS`, the headline metrics; the run ends ``FINISHED`` when
    every planned step is ok, else ``FAILED``. Returns the run's id (None without MLflow)."""
    spec = TrackingConfig.parse(cfg.train.get("tracking"), where="train.tracking").mlflow
    if spec is None:
        return None
    spec = {"experiment": cfg.name, **{k: v for k, v in spec.items() if k != "run_name"},
            "run_name": f"{cfg.name} (study)"}
    state_file = report_dir / STATE_FILE
    tracker = MlflowTracker(spec, report_dir, to_dict(cfg), read_json(state_file).get("mlflow"),
                            tags={"cxrkit.study": cfg.name, "cxrkit.kind": "study"})
    tracker.log_metrics(headline_metrics(read_json(report_dir / HEADLINES)), tracker.epochs)
    tracker.epochs += 1
    tracker.log_files(report_dir, RECORDS, ("tables", "figures"))
    write_json(state_file, {"mlflow": tracker.state()})
    done = bool(state) and all(e.get("status") == "ok" for e in state.values())
    tracker.close("FINISHED" if done else "FAILED")
    return tracker.run_id
