"""A study in the experiment tracker: with ``train.tracking.mlflow`` set, every training run is an
MLflow run of the study's experiment (named after the study by default, tagged with the study and
the variant) and the study itself is one more run, ``<name> (study)``, holding the report's tables
and figures, ``steps.json``, ``headlines.json`` and the parameter file as artifacts and the steps'
numeric headline metrics as metrics (one step per ``cxrkit study`` invocation). The report
folder's ``tracking.json`` records that run, so a re-run study continues it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cxrkit.study.config import StudyConfig
from cxrkit.study.outputs import HEADLINES, read_json
from cxrkit.training.trackers import MlflowTracker
from cxrkit.training.tracking import STATE_FILE, TrackingConfig
from cxrkit.utils.files import write_json
from cxrkit.utils.params import to_dict

#: the report's records sent as artifacts (the notebooks' HTML pages are not: they are large)
RECORDS = ("steps.json", HEADLINES, "params.yaml", "provenance.json")


def headline_metrics(headlines: dict[str, Any]) -> dict[str, float]:
    """The steps' numeric headline metrics as ``<step>/<name>``."""
    return {f"{step}/{k}": float(v) for step, heads in headlines.items() for k, v in (heads or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


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
