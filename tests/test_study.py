"""The study layer: parameter files, the papermill command of the design card, the whole smoke
study with its report, skipping of unchanged steps and failures naming the notebook and cell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cxrkit.config import ConfigError
from cxrkit.paths import project_root
from cxrkit.study import StudyError, load_study, run_study

ROOT = project_root()


def _smoke_copy(tmp_path: Path, **changes) -> Path:
    """params/smoke.yaml with data, runs and reports under tmp_path (so tests do not share outputs)."""
    values = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    values.update(data=str(tmp_path / "data"), runs=str(tmp_path / "runs"), reports=str(tmp_path / "reports"))
    values.update(changes)
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("name", ["smoke", "default", "paper"])
def test_shipped_parameter_files_validate(name):
    cfg = load_study(ROOT / "params" / f"{name}.yaml").validate()
    assert cfg.name == name and cfg.train_config(0, cfg.variants[-1]).refiner == cfg.variants[-1]


def test_paper_file_is_the_paper_configuration():
    t = load_study(ROOT / "params" / "paper.yaml").validate().train_config(0, "sparse")
    assert (t.backbone, t.image_size, t.batch_size, t.epochs, t.loss, t.ema_decay, t.tta) == (
        "seresnext101_32x4d", 380, 24, 3, "asl", 0.999, True)
    assert (t.lr, t.weight_decay, t.alpha, t.l1_lambda, t.grad_clip, t.drop_rate) == (2e-4, 1e-4, 0.3, 1e-3, 1.0, 0.4)


@pytest.mark.parametrize("change,match", [
    ({"n_fold": 3}, "unknown parameter 'n_fold'.*'n_folds'"),
    ({"train": {"epoch": 2}}, "unknown parameter 'epoch'"),
    ({"train": {"fold": 1}}, "train.fold: set by the study"),
    ({"variants": ["none", "sparce"]}, "unknown refiner"),
    ({"phantom": {"patient": 3}}, "phantom: unknown key"),
    ({"n_folds": "3"}, "'n_folds' must be int"),
])
def test_bad_study_parameters_fail_before_anything_runs(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        load_study(_smoke_copy(tmp_path, **change)).validate()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_papermill_command_of_the_design_card(tmp_path):
    """`papermill notebooks/03_train.ipynb out.ipynb -p fold 2` from the repo root (and another cwd)."""
    params = _smoke_copy(tmp_path)
    exe = Path(sys.executable).parent / "papermill"
    from cxrkit.study import ensure_kernel

    ensure_kernel()
    out = tmp_path / "out.ipynb"
    res = subprocess.run([str(exe), str(ROOT / "notebooks" / "03_train.ipynb"), str(out), "-p", "fold", "2",
                          "-p", "params_file", str(params), "-p", "refiner", "none"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "smoke" / "none" / "fold2"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and (run / "pred_test.csv").is_file()
    assert json.loads((run / "params.json").read_text())["fold"] == 2
    assert "validation macro AUC" in out.read_text()


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    params = _smoke_copy(tmp)
    return params, run_study(params, progress=False)


@pytest.mark.slow
def test_smoke_study_writes_the_report(smoke_study):
    params, result = smoke_study
    cfg = load_study(params)
    report = cfg.report_dir
    index = Path(result["index"]).read_text()
    steps = json.loads((report / "steps.json").read_text())
    assert len(steps) == 2 + cfg.n_folds * len(cfg.variant_names) + 3
    assert all(s["status"] == "ok" for s in steps.values())
    for name in steps:
        assert (report / "notebooks" / f"{name}.html").is_file()
        assert f"notebooks/{name}.html" in index
    figures = {p.stem for p in (report / "figures").glob("*.png")}
    for fig in ("fig2_label_prevalence", "fig3_sample_images", "fig4_fold_agreement", "fig5a_label_correlation",
                "fig5b_prediction_correlation", "fig6_across_fold_std", "fig7_coupling_sparse",
                "fig8_probability_histograms", "ablation_paired_differences", "coupling_true_vs_learned",
                "fig7_coupling_cooc_gcn", "coupling_side_by_side", "gain_vs_cooccurrence_sparse_vs_none"):
        assert fig in figures, fig
        assert f"figures/{fig}.png" in index
    tables = {p.stem for p in (report / "tables").glob("*.csv")}
    assert {"fold_balance", "table_i", "final_test_auc", "ablation_per_fold", "coupling_recovery",
            "oracle_by_split", "image_split_leakage", "data_quality", "ablation_threshold_metrics",
            "gain_vs_cooccurrence"} <= tables
    paired = (report / "tables" / "ablation_paired_differences.csv").read_text()
    assert "sparse - cooc_gcn, test ensemble" in paired  # the learned-vs-prior question is answered
    assert "Training runs" in index and index.count("<td>sparse</td>") == cfg.n_folds
    heads = json.loads((report / "headlines.json").read_text())
    assert 0 < heads["05_ablation"]["test_oracle"] <= 1
    assert (report.parent / "index.html").is_file()
    prov = json.loads((report / "provenance.json").read_text())
    assert prov["params"]["name"] == "smoke" and "torch" in prov["packages"]


@pytest.mark.slow
def test_rerun_skips_unchanged_steps(smoke_study, capsys):
    params, _ = smoke_study
    cfg = load_study(params)
    run_study(params, progress=True)
    out = capsys.readouterr().out
    assert "[run ]" not in out and out.count("[skip]") == 2 + cfg.n_folds * len(cfg.variant_names) + 3


@pytest.mark.slow
def test_failure_names_notebook_and_cell_and_keeps_partial_output(tmp_path):
    params = _smoke_copy(tmp_path, phantom=None, data=str(tmp_path / "no-such-dataset"))
    with pytest.raises(StudyError, match=r"01_explore.ipynb .* failed in cell \d+: FileNotFoundError"):
        run_study(params, progress=False)
    report = load_study(params).report_dir
    assert (report / "notebooks" / "01_explore.ipynb").is_file()
    steps = json.loads((report / "steps.json").read_text())
    assert steps["01_explore"]["status"] == "failed" and "02_folds" not in steps


def test_prepare_regenerates_a_stale_phantom_and_its_folds(tmp_path):
    from cxrkit.study import prepare

    params = _smoke_copy(tmp_path, phantom={"patients": 30, "size": 32, "seed": 0})
    cfg = load_study(params).validate()
    first = prepare(cfg, progress=False)
    assert prepare(cfg, progress=False) == first  # unchanged: nothing rebuilt
    meta = json.loads((Path(cfg.data) / "phantom.json").read_text())
    meta["code_digest"] = "0" * 16  # as if the generator code had changed
    (Path(cfg.data) / "phantom.json").write_text(json.dumps(meta))
    assert prepare(cfg, progress=False)["data_fingerprint"] == first["data_fingerprint"]  # same code, same data
    cfg2 = load_study(_smoke_copy(tmp_path, phantom={"patients": 40, "size": 32, "seed": 0})).validate()
    second = prepare(cfg2, progress=False)
    assert second["data_fingerprint"] != first["data_fingerprint"] and second["n_images"] > first["n_images"]
    folds = pd.read_csv(cfg2.splits_path)
    assert len(folds) == second["n_images"]


@pytest.mark.slow
def test_parallel_jobs_and_a_lambda_sweep(tmp_path):
    params = _smoke_copy(tmp_path, n_folds=2,
                         variants=["none", {"name": "sparse_l0", "refiner": "sparse", "l1_lambda": 0.0}, "sparse"])
    result = run_study(params, progress=False, jobs=2)
    steps = result["steps"]
    train_steps = [s for s in steps.values() if s["notebook"] == "03_train"]
    assert len(train_steps) == 6 and all(s["status"] == "ok" for s in steps.values())
    sweep = pd.read_csv(Path(result["report_dir"]) / "tables" / "lambda_sweep.csv", index_col=0)
    assert list(sweep["l1_lambda"]) == [0.0, 0.001] and sweep["non-zero couplings"].between(0, 1).all()
    assert (Path(result["report_dir"]) / "figures" / "lambda_sweep.png").is_file()
    # with 2 jobs at least two training notebooks overlapped in time
    import datetime as dt

    spans = sorted((dt.datetime.fromisoformat(s["started"]).timestamp(), s["seconds"]) for s in train_steps)
    assert any(b[0] < a[0] + a[1] for a, b in zip(spans, spans[1:]))
    assert json.loads((Path(result["report_dir"]) / "provenance.json").read_text())["jobs"] == 2
    assert "min wall time, 2 parallel job(s))" in Path(result["index"]).read_text()


@pytest.mark.parametrize("jobs", [0, "two", 1.5, True])
def test_bad_jobs_fail_before_anything_runs(tmp_path, jobs):
    with pytest.raises(ConfigError, match="jobs: must be an integer >= 1 or 'auto'"):
        run_study(_smoke_copy(tmp_path), progress=False, jobs=jobs)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_auto_jobs_uses_every_gpu_or_two_cpu_processes(monkeypatch):
    import torch

    from cxrkit import study

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert study.auto_jobs() == 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert study.auto_jobs() == 2
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert study.auto_jobs() == 1
