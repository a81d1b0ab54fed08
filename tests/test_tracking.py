"""Experiment tracking against a real local MLflow store and real TensorBoard event files: a run
interrupted in its second epoch and resumed logs every epoch once, into the same tracker runs,
with the numbers of history.csv, the parameters of params.json and the metrics of metrics.json.
The core imports and trains without the tracking packages."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from cxrkit.training.config import TrainConfig
from cxrkit.training.loop import train
from cxrkit.training.trackers import flat_params
from cxrkit.training.tracking import TrackingConfig, epoch_metrics, final_metrics
from cxrkit.utils.params import ConfigError, from_dict
from cxrkit.utils.paths import project_root


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def tracked_run(tiny_phantom, tmp_path_factory):
    """A 2-epoch run tracked by MLflow (a folder store) and TensorBoard, interrupted and resumed:
    ``(run folder, mlflow client, experiment id, the tracking.json states after the interruption)``."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("tracked")
    store = tmp / "mlruns"
    cfg = TrainConfig(data=str(tiny_phantom), splits=str(tiny_phantom / "folds.csv"), backbone="test_resnet",
                      image_size=32, batch_size=16, eval_batch_size=32, epochs=2, lr=1e-3, refiner="sparse",
                      ema_decay=0.9, cache=False, workers=0, progress=False, out=str(tmp / "run"),
                      tracking={"mlflow": {"uri": str(store), "experiment": "tiny", "tags": {"lab": "x"}},
                                "tensorboard": True})
    out = Path(cfg.out)

    def kill_in_second_epoch(step, loss):
        prov = json.loads((out / "provenance.json").read_text())
        if step >= prov["n_train"] // cfg.batch_size + 1:
            raise Killed
        return loss

    with pytest.raises(Killed):
        train(cfg, fault_hook=kill_in_second_epoch)
    interrupted = json.loads((out / "tracking.json").read_text())
    train(cfg)  # resumed
    client = MlflowClient(tracking_uri=store.as_uri())
    return out, client, client.get_experiment_by_name("tiny").experiment_id, interrupted


def test_mlflow_run_holds_history_params_metrics_and_provenance(tracked_run):
    out, client, experiment, interrupted = tracked_run
    runs = client.search_runs([experiment])
    assert len(runs) == 1, "the resumed run continued the same MLflow run"
    run = runs[0]
    assert run.info.run_id == interrupted["mlflow"]["run_id"] and interrupted["mlflow"]["epochs"] == 1
    assert run.info.status == "FINISHED"
    # the parameters: those of params.json
    assert run.data.params == flat_params(json.loads((out / "params.json").read_text()))
    # per epoch: the numbers of history.csv, each epoch once
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 2
    logged = epoch_metrics(history.iloc[0].to_dict())
    assert {"train_loss", "val_loss", "val_macro_auc", "lr", "coupling_nonzero"} <= set(logged)
    for column in logged:
        points = client.get_metric_history(run.info.run_id, column)
        assert [(m.step, m.value) for m in sorted(points, key=lambda m: m.step)] == \
            list(zip(history["epoch"].tolist(), history[column].tolist())), column
    # the final metrics: those of metrics.json
    metrics = json.loads((out / "metrics.json").read_text())
    finals = final_metrics(metrics)
    assert {"final/val_macro_auc", "final/test_macro_auc", "final/best_epoch"} <= set(finals)
    assert any(k.startswith("final/val_auc/") for k in finals)
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("final/")} == finals
    # provenance as tags and artifacts
    prov = json.loads((out / "provenance.json").read_text())
    assert run.data.tags["cxrkit.data_fingerprint"] == prov["data_fingerprint"]
    assert run.data.tags.get("mlflow.source.git.commit") == prov["git"]["commit"]
    assert run.data.tags["lab"] == "x" and run.data.tags["cxrkit.fold"] == "0"
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"params.json", "provenance.json", "metrics.json", "history.csv", "coupling.csv"} <= artifacts


def test_tensorboard_events_hold_every_epoch_once(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tracked_run[0]
    history = pd.read_csv(out / "history.csv")
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for column in epoch_metrics(history.iloc[0].to_dict()):
        assert column in scalars
        points = events.Scalars(column)
        assert [p.step for p in points] == history["epoch"].tolist(), column
        assert [p.value for p in points] == pytest.approx(history[column].tolist(), rel=1e-6), column
    metrics = json.loads((out / "metrics.json").read_text())
    assert events.Scalars("final/val_macro_auc")[-1].value == pytest.approx(metrics["val_macro_auc"], rel=1e-6)
    assert "params" in " ".join(events.Tags()["tensors"])


@pytest.mark.parametrize("tracking,match", [
    ({"mlfow": {}}, r"tracking.mlfow: unknown tracker \(did you mean 'mlflow'\?\)"),
    ({"mlflow": {"url": "x"}}, r"tracking.mlflow.url: unknown key \(did you mean 'uri'\?\)"),
    ({"mlflow": {"experiment": 3}}, "tracking.mlflow.experiment: must be an experiment name, got 3"),
    ({"tensorboard": "runs/tb"}, "tracking.tensorboard: expected true, false or a mapping"),
    ({"tensorboard": {"dir": ""}}, "tracking.tensorboard.dir: must be a folder"),
])
def test_bad_tracking_parameters_are_refused_naming_the_key(tracking, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(TrainConfig, {"tracking": tracking})


def test_missing_tracker_package_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("mlflow", "sqlalchemy")
                        else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracking.mlflow: the mlflow package is not installed; "
                                          r"pip install 'cxrkit\[tracking\]'"):
        TrackingConfig.parse({"mlflow": True})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sqlalchemy" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracking.mlflow.uri: a database store .* needs the full mlflow"):
        TrackingConfig.parse({"mlflow": {"uri": "sqlite:///runs/mlflow.db"}})
    assert TrackingConfig.parse({"mlflow": False, "tensorboard": None}).enabled is False


def test_core_imports_and_validates_without_the_optional_packages(tmp_path):
    """cxrkit (CLI, training, study) imports and checks parameters with mlflow, tensorboard and
    submitit unimportable; asking for one of them is an error naming the extra."""
    script = textwrap.dedent("""
        import sys
        for name in ("mlflow", "tensorboard", "submitit"):
            sys.modules[name] = None  # unimportable, as when the extras are not installed
        import cxrkit.cli, cxrkit.study, cxrkit.training.loop, cxrkit.study.runner
        from cxrkit.training.config import TrainConfig
        from cxrkit.utils.params import ConfigError, from_dict
        TrainConfig().validate()
        for value in ({"mlflow": True}, {"tensorboard": True}):
            try:
                from_dict(TrainConfig, {"tracking": value})
            except ConfigError as exc:
                print(exc)
        from cxrkit.study import load_study
        from cxrkit.study.cluster import check_executor
        cfg = load_study("params/smoke.yaml", cluster={"time_min": 10}).validate()
        try:
            check_executor("local-submitit", cfg.cluster)
        except ConfigError as exc:
            print(exc)
        loaded = [m for m, mod in sys.modules.items() if m.split(".")[0] in ("mlflow", "tensorboard", "submitit")
                  and mod is not None]
        assert not loaded, loaded
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=project_root(),
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert "tracking.mlflow: the mlflow package is not installed; pip install 'cxrkit[tracking]'" in lines[0]
    assert "tracking.tensorboard: the tensorboard package is not installed" in lines[1]
    assert "pip install 'cxrkit[slurm]'" in lines[2]


def test_tracking_may_change_when_a_run_resumes(tiny_cfg):
    from cxrkit.training.resume import RESUMABLE_CHANGES

    assert "tracking" in RESUMABLE_CHANGES  # turning tracking on for an interrupted run logs its history so far
    assert dataclasses.replace(tiny_cfg, tracking={"tensorboard": True}).validate()


def test_a_study_logs_its_report_to_a_study_run(tmp_path, fake_notebooks):
    """With train.tracking.mlflow, the study is one MLflow run of the study's experiment (its
    tables, figures, records and headline metrics), continued by a re-run; each training run is
    told the study's experiment and tagged with the study and the variant."""
    import yaml
    from mlflow.tracking import MlflowClient
    from study_helpers import fake_study

    from cxrkit.study import load_study, run_study

    store = tmp_path / "mlruns"
    train = {**yaml.safe_load((project_root() / "params" / "smoke.yaml").read_text())["train"],
             "tracking": {"mlflow": {"uri": str(store)}}}
    params = fake_study(tmp_path, variants=["none", "sparse"], train=train)
    cfg = load_study(params)
    tcfg = cfg.train_config(1, "sparse")
    assert tcfg.tracking["mlflow"] == {"uri": str(store), "experiment": "smoke",
                                       "tags": {"cxrkit.study": "smoke", "cxrkit.variant": "sparse"}}
    fake_notebooks.extra = {"test_macro_auc_none (3-fold ensemble, flip TTA)": 0.75}  # as 06 names it
    run_study(params, progress=False)
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("smoke").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.info.run_name == "smoke (study)" and run.info.status == "FINISHED"
    assert run.data.tags["cxrkit.study"] == "smoke" and run.data.params["n_folds"] == "2"
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"steps.json", "headlines.json", "params.yaml", "tables", "figures"} <= artifacts
    tables = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "tables")}
    assert tables == {p.name for p in (cfg.report_dir / "tables").iterdir()} and "table_05_ablation_v1.csv" in tables
    assert run.data.metrics["05_ablation/version"] == 1
    assert run.data.metrics["06_fold_agreement/test_macro_auc_none _3-fold ensemble_ flip TTA_"] == 0.75
    run_study(params, progress=False, force=True)  # a re-run continues the same run
    (again,) = client.search_runs([experiment])
    assert again.info.run_id == run.info.run_id
    assert [m.step for m in client.get_metric_history(run.info.run_id, "05_ablation/version")] == [0, 1]


def test_a_study_creates_its_experiment_before_its_training_jobs(tmp_path, fake_notebooks):
    """Parallel training jobs that each create the study's experiment race, and MLflow's folder
    store then holds two experiments of one name (seen in a local-submitit smoke study: runs split
    between them). The study creates it before the first training notebook starts."""
    import yaml
    from mlflow.tracking import MlflowClient
    from study_helpers import fake_study

    from cxrkit.study import run_study

    store = tmp_path / "mlruns"
    train = {**yaml.safe_load((project_root() / "params" / "smoke.yaml").read_text())["train"],
             "tracking": {"mlflow": {"uri": str(store), "experiment": "race"}}}
    params = fake_study(tmp_path, variants=["none"], train=train)
    seen = []
    execute = fake_notebooks.execute

    def spy(input_path, output_path, parameters, **kwargs):
        if Path(input_path).stem == "03_train":
            seen.append(MlflowClient(tracking_uri=store.as_uri()).get_experiment_by_name("race") is not None)
        return execute(input_path, output_path, parameters, **kwargs)

    import papermill

    papermill.execute_notebook = spy  # fake_notebooks patched it with monkeypatch, which restores it
    run_study(params, progress=False, jobs=2)
    assert seen == [True, True]
    names = [e.name for e in MlflowClient(tracking_uri=store.as_uri()).search_experiments()]
    assert names.count("race") == 1
