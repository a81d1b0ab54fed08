"""The study layer: parameter files, the papermill command of the design card, the whole smoke
study with its report, skipping of unchanged steps and failures naming the notebook and cell."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from study_helpers import fake_study as _fake_study
from study_helpers import smoke_copy as _smoke_copy
from study_helpers import tiny_gxs as _tiny_gxs

from cxrkit.study import StudyError, load_study, plan, run_study
from cxrkit.utils.params import ConfigError
from cxrkit.utils.paths import project_root

ROOT = project_root()


PARAM_FILES = sorted((ROOT / "params").glob("*.yaml"))


def test_every_parameter_file_is_covered():
    assert {p.stem for p in PARAM_FILES} >= {"smoke", "default", "paper", "lambda_sweep"}


@pytest.mark.parametrize("path", PARAM_FILES, ids=[p.stem for p in PARAM_FILES])
def test_shipped_parameter_files_validate(path):
    cfg = load_study(path).validate()
    assert cfg.name == path.stem
    for name, spec in cfg.variant_specs().items():
        assert cfg.train_config(0, name).refiner == spec["refiner"]


def test_paper_file_is_the_paper_configuration():
    t = load_study(ROOT / "params" / "paper.yaml").validate().train_config(0, "sparse")
    assert (t.backbone, t.image_size, t.batch_size, t.epochs, t.loss, t.ema_decay, t.tta) == (
        "seresnext101_32x4d", 380, 24, 3, "asl", 0.999, True)
    assert (t.lr, t.weight_decay, t.alpha, t.l1_lambda, t.grad_clip, t.drop_rate) == (2e-4, 1e-4, 0.3, 1e-3, 1.0, 0.4)
    # the semantics of the authors' code (crxml/train.py, losses.py, models/ema.py) and their seed
    assert (t.loss_reduction, t.focal_grad, t.ema_warmup, t.ema_refiner, t.weight_decay_all, t.seed) == (
        "mean", True, False, False, True, 42)
    study = load_study(ROOT / "params" / "paper.yaml")
    assert (study.split_seed, study.group, study.n_folds) == (42, "patient", 3)


@pytest.mark.parametrize("change,match", [
    ({"n_fold": 3}, "unknown parameter 'n_fold'.*'n_folds'"),
    ({"train": {"epoch": 2}}, "unknown parameter 'epoch'"),
    ({"train": {"fold": 1}}, "train.fold: set by the study"),
    ({"variants": ["none", "sparce"]}, "unknown refiner"),
    ({"phantom": {"patient": 3}}, "phantom: unknown key"),
    ({"n_folds": "3"}, "'n_folds' must be int"),
    ({"dataset": "chexpret"}, "dataset: unknown dataset 'chexpret'"),
    ({"dataset_options": {"uncertian": "ones"}}, r"dataset_options.uncertian: not an option of dataset 'gxs' "
                                                 r"\(did you mean 'uncertain'\?\)"),
    ({"dataset_options": {"frontal_only": True}}, "dataset_options.frontal_only: not an option of dataset 'gxs'"),
    ({"dataset_options": {"on_bad_image": "exclude"}}, r"dataset_options.on_bad_image: set by 'on_bad_image' "
                                                       r"\(train.on_bad_image"),
    ({"variants": ["none", {"name": "s", "refiner": "sparse", "on_bad_image": "exclude"}]},
     r"variants\[1\].on_bad_image: set it once in train.on_bad_image"),
    ({"phantom": {"patients": 0, "size": 64, "seed": 0}}, "phantom.patients: must be an integer >= 1, got 0"),
    ({"phantom": {"patients": "120", "size": 64, "seed": 0}}, "phantom.patients: must be an integer >= 1, got '120'"),
    ({"phantom": {"patients": 120, "size": 8, "seed": 0}}, "phantom.size: must be an integer >= 16"),
    ({"phantom": {"patients": 120, "size": 64.0, "seed": 0}}, "phantom.size: must be an integer >= 16"),
    ({"phantom": {"patients": 120, "size": 64, "seed": -1}}, "phantom.seed: must be an integer >= 0"),
    ({"phantom": {"patients": 120, "size": 64, "seed": True}}, "phantom.seed: must be an integer >= 0"),
    ({"calibration_bins": 1}, "calibration_bins: must be an integer >= 2, got 1"),
    ({"calibration_bins": 10.0}, "'calibration_bins' must be int"),
    ({"target_sensitivity": 1.0}, r"target_sensitivity: must be in \(0, 1\), got 1.0"),
    ({"age_bands": [65, 50]}, r"age_bands: must be a non-empty list of increasing ages \(band edges\), got \[65, 50\]"),
    ({"age_bands": []}, "age_bands: must be a non-empty list"),
    ({"age_bands": ["50"]}, "age_bands: must be a non-empty list"),
])
def test_bad_study_parameters_fail_before_anything_runs(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        load_study(_smoke_copy(tmp_path, **change)).validate()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_loader_options_of_the_chosen_dataset_validate(tmp_path):
    cfg = load_study(_smoke_copy(tmp_path, dataset="chexpert", phantom=None,
                                 dataset_options={"frontal_only": True, "uncertain": "ones"})).validate()
    assert cfg.train_config(0, "sparse").dataset_options == {"frontal_only": True, "uncertain": "ones"}
    cfg = load_study(_smoke_copy(tmp_path, train={"on_bad_image": "exclude"})).validate()
    assert cfg.on_bad_image == "exclude" and cfg.train_config(1, "none").on_bad_image == "exclude"
    assert load_study(_smoke_copy(tmp_path)).on_bad_image == "error"


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
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "smoke" / "none" / "fold2"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and (run / "pred_test.csv").is_file()
    assert json.loads((run / "params.json").read_text())["fold"] == 2
    assert "validation macro AUC" in out.read_text()


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_study")
def test_smoke_study_writes_the_report(smoke_study):
    params, result = smoke_study
    cfg = load_study(params)
    report = cfg.report_dir
    index = Path(result["index"]).read_text()
    steps = json.loads((report / "steps.json").read_text())
    assert len(steps) == 2 + cfg.n_folds * len(cfg.variant_names) + 6  # 04-09 with 07_external (smoke has one)
    assert all(s["status"] == "ok" for s in steps.values())
    for name in steps:
        assert (report / "notebooks" / f"{name}.html").is_file()
        assert f"notebooks/{name}.html" in index
    figures = {p.stem for p in (report / "figures").glob("*.png")}
    for fig in ("fig2_label_prevalence", "fig3_sample_images", "fig4_fold_agreement", "fig5a_label_correlation",
                "fig5b_prediction_correlation", "fig6_across_fold_std", "fig7_coupling_sparse",
                "fig8_probability_histograms", "ablation_paired_differences", "coupling_true_vs_learned",
                "fig7_coupling_cooc_gcn", "coupling_side_by_side", "gain_vs_cooccurrence_sparse_vs_none",
                "calibration_ece", "reliability_pooled", "reliability_per_label", "operating_points", "subgroup_gaps",
                "saliency_examples", "saliency_pointing_game"):
        assert fig in figures, fig
        assert f"figures/{fig}.png" in index
    tables = {p.stem for p in (report / "tables").glob("*.csv")}
    assert {"fold_balance", "table_i", "final_test_auc", "ablation_per_fold", "coupling_recovery",
            "oracle_by_split", "image_split_leakage", "data_quality", "ablation_threshold_metrics",
            "gain_vs_cooccurrence", "excluded_images", "ablation_per_label_delta_ap",
            "gain_vs_cooccurrence_trend", "ablation_coupling_recovery", "calibration_overview",
            "calibration_per_label", "calibration_maps", "operating_points", "subgroup_auc", "subgroup_gaps",
            "subgroup_operating_points", "cardiomegaly_by_view",
            "saliency_pointing_game", "saliency_energy_share", "saliency_summary", "saliency_scores"} <= tables
    # every file in figures/ and tables/ was written by a step of this study and is listed
    manifest = json.loads((report / "outputs.json").read_text())
    assert set(manifest) <= set(steps)
    assert figures == {Path(f).stem for m in manifest.values() for f in m["figures"]}
    assert tables == {Path(f).stem for m in manifest.values() for f in m["tables"]}
    paired = (report / "tables" / "ablation_paired_differences.csv").read_text()
    assert "sparse - cooc_gcn, test ensemble" in paired  # the learned-vs-prior question is answered
    assert "sparse - none, test ensemble (no TTA)" in paired and "sparse - cooc_gcn, test ensemble (no TTA)" in paired
    summary = pd.read_csv(report / "tables" / "ablation_test_summary.csv", index_col=0)
    assert summary.loc["ensemble 95% CI low", ["none", "none (no TTA)", "sparse (no TTA)"]].notna().all()
    trend = pd.read_csv(report / "tables" / "gain_vs_cooccurrence_trend.csv", index_col=[0, 1])
    assert set(trend.index) == {(c, g) for c in ("sparse - none", "cooc_gcn - none", "sparse_l0 - none", "sparse - cooc_gcn")
                                for g in ("ΔAP", "ΔAUC")}
    assert trend["spearman rho"].between(-1, 1).all() and trend["p-value"].between(0, 1).all()
    gain = pd.read_csv(report / "tables" / "gain_vs_cooccurrence.csv", index_col=0)
    assert {"top-3 conditional", "ΔAP (sparse - none)", "ΔAUC (sparse - none)"} <= set(gain.columns)
    recovery = pd.read_csv(report / "tables" / "ablation_coupling_recovery.csv", index_col=0)
    assert list(recovery.index) == ["sparse", "cooc_gcn", "sparse_l0"]
    assert json.loads((report / "headlines.json").read_text())["05_ablation"]["best_recovery"] in recovery.index
    assert "Training runs" in index and index.count("<td>sparse</td>") == cfg.n_folds
    heads = json.loads((report / "headlines.json").read_text())
    assert 0 < heads["05_ablation"]["test_oracle"] <= 1
    assert set(heads["09_saliency"]) == {f"pointing_game_{v}" for v in [*cfg.variant_names, "centre"]}
    assert all(0 <= v <= 1 for v in heads["09_saliency"].values())
    # 07_external: every variant at the smoke study's phantom site_b, against its oracle
    assert {f"external_macro_auc_{v}" for v in cfg.variant_names} | {"external_oracle"} <= set(heads["07_external"])
    assert {f"gain_change_{v}" for v in cfg.variant_names[1:]} <= set(heads["07_external"])
    external = pd.read_csv(report / "tables" / "external_macro_auc.csv", index_col=0)
    assert list(external.index) == [*cfg.variant_names, "oracle"] and external["external"].between(0, 1).all()
    assert {"external_gain", "external_per_label_auc", "external_prevalence", "external_prevalence_summary"} <= tables
    assert {"ece_macro_sparse", "ece_macro_oracle", "operating_points_sparse_youden", "cardiomegaly_by_view"} <= set(
        heads["08_trust"])
    ops = pd.read_csv(report / "tables" / "operating_points.csv")  # the table to ship with the model
    assert list(ops.columns[:4]) == ["variant", "label", "method", "threshold"] and len(ops) == 2 * 14
    top = (report.parent / "index.html").read_text()  # reports/index.html: the whole study, links into smoke/
    assert cfg.description in top and "href='smoke/index.html'" in top
    for name in steps:
        assert f"href='smoke/notebooks/{name}.html'" in top
    for fig in figures:
        assert f"smoke/figures/{fig}.png" in top
    for tab in tables:
        assert f"smoke/tables/{tab}.csv" in top
    assert "test_oracle: " in top and top.count("class='ok'>ok") == len(steps)
    prov = json.loads((report / "provenance.json").read_text())
    assert prov["params"]["name"] == "smoke" and "torch" in prov["packages"] and prov["jobs"] == 2
    assert "min wall time, 2 parallel job(s))" in index
    # the smoke study's lambda sweep (sparse at l1_lambda 0 and 1e-3) is reported by 05
    sweep = pd.read_csv(report / "tables" / "lambda_sweep.csv", index_col=0)
    assert sorted(sweep["l1_lambda"]) == [0.0, 0.001] and sweep["non-zero couplings"].between(0, 1).all()
    assert (report / "figures" / "lambda_sweep.png").is_file()


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_study")
def test_rerun_skips_unchanged_steps(smoke_study, capsys):
    params, _ = smoke_study
    cfg = load_study(params)
    run_study(params, progress=True)
    out = capsys.readouterr().out
    assert "[run ]" not in out and out.count("[skip]") == 2 + cfg.n_folds * len(cfg.variant_names) + 6


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


def test_parallel_jobs_run_training_notebooks_at_the_same_time(tmp_path, fake_notebooks):
    """With --jobs 2, training notebooks run two at a time: every stand-in 03_train step waits at a
    two-party barrier, which only opens when another training step runs at the same time (a
    sequential runner would leave it waiting). Order of events, not wall-clock time."""
    import threading

    fake_notebooks.train_barrier = threading.Barrier(2, timeout=600)  # a hang guard only: passing never waits long
    params = _fake_study(tmp_path, variants=["none", "sparse"])  # 2 folds x 2 variants: 4 training steps
    result = run_study(params, progress=False, jobs=2)
    train = [s for s in result["steps"] if s.startswith("03_train")]
    assert len(train) == 4 and all(s["status"] == "ok" for s in result["steps"].values())
    events = fake_notebooks.events
    for first, second in zip(train[::2], train[1::2]):  # each pair started before either ended
        starts = {events.index(("start", first)), events.index(("start", second))}
        assert max(starts) < min(events.index(("end", first)), events.index(("end", second)))
    assert fake_notebooks.ran[:2] == ["01_explore", "02_folds"] and fake_notebooks.ran[-5:] == [
        "04_coupling", "05_ablation", "06_fold_agreement", "08_trust", "09_saliency"]  # the other steps one at a time, in order
    assert json.loads((Path(result["report_dir"]) / "provenance.json").read_text())["jobs"] == 2


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


# --- report bookkeeping, with the notebooks replaced by a stand-in (no kernel, seconds) -----------
def test_rerun_replaces_outputs_and_removed_steps_leave_the_report(tmp_path, fake_notebooks):
    run = fake_notebooks
    params = _fake_study(tmp_path, n_folds=3)
    cfg = load_study(params)
    report = cfg.report_dir
    run.extra = {"only_in_first_run": 1.0}
    run_study(params, progress=False)
    assert len(run.ran) == 2 + 3 * 3 + 5
    gcn = "03_train_fold1_refinercooc_gcn"
    assert (report / "tables" / f"table_{gcn}_v1.csv").is_file()
    manifest = json.loads((report / "outputs.json").read_text())
    assert manifest["05_ablation"] == {"figures": ["fig_05_ablation_v1.png"], "tables": ["table_05_ablation_v1.csv"]}

    # a re-run step: its old files and headline values are replaced, not merged
    run.version, run.extra = 2, {}
    run_study(params, progress=False, force=True, only=["05"])
    heads = json.loads((report / "headlines.json").read_text())
    assert heads["05_ablation"] == {"version": 2}
    assert heads["04_coupling"] == {"version": 1, "only_in_first_run": 1.0}  # not re-run: kept
    assert not (report / "tables" / "table_05_ablation_v1.csv").exists()
    assert not (report / "figures" / "fig_05_ablation_v1.png").exists()
    assert (report / "tables" / "table_05_ablation_v2.csv").is_file()
    index = (report / "index.html").read_text()
    assert "figures/fig_05_ablation_v2.png" in index and "fig_05_ablation_v1" not in index

    # a variant and a fold removed from the study: their steps leave steps.json, the index,
    # the headlines, the manifest, the notebooks folder, and their figures and tables are deleted
    params = _fake_study(tmp_path, variants=["none", "sparse"], n_folds=2)
    run_study(params, progress=False)  # changed parameters: every step re-runs (version 2)
    steps = json.loads((report / "steps.json").read_text())
    assert list(steps) == ["01_explore", "02_folds", "03_train_fold0_refinernone", "03_train_fold1_refinernone",
                           "03_train_fold0_refinersparse", "03_train_fold1_refinersparse", "04_coupling",
                           "05_ablation", "06_fold_agreement", "08_trust", "09_saliency"]
    for where in ("headlines.json", "outputs.json", "index.html"):
        assert "cooc_gcn" not in (report / where).read_text(), where
    assert not list(report.glob("**/*cooc_gcn*")) and not list(report.glob("**/*fold2*"))
    assert "cooc_gcn" not in (report.parent / "index.html").read_text()
    assert sorted(p.name for p in (report / "tables").iterdir()) == sorted(f"table_{s}_v2.csv" for s in steps)
    assert sorted(p.name for p in (report / "figures").iterdir()) == sorted(f"fig_{s}_v2.png" for s in steps)


def test_changed_data_reruns_every_step(tmp_path, fake_notebooks):
    run = fake_notebooks
    params = _fake_study(tmp_path, variants=["none"])
    n_steps = 2 + 2 + 5
    run_study(params, progress=False)
    assert len(run.ran) == n_steps
    run.ran.clear()
    run_study(params, progress=False)
    assert run.ran == []  # nothing changed: everything skipped
    _tiny_gxs(tmp_path / "data", flip=3)  # one label of one image changed in train.csv
    run_study(params, progress=False)
    assert len(run.ran) == n_steps
    run.ran.clear()
    _tiny_gxs(tmp_path / "data", n=8, flip=3)  # two more images
    run_study(params, progress=False)
    assert len(run.ran) == n_steps


def test_a_deleted_run_is_trained_again_and_read_again(tmp_path, fake_notebooks):
    run = fake_notebooks
    params = _fake_study(tmp_path, variants=["none", "sparse"])
    run_study(params, progress=False)
    cfg = load_study(params)
    run.ran.clear()
    shutil.rmtree(cfg.train_dir(1, "sparse"))  # the user deletes one run to train it again
    run_study(params, progress=False)
    after = [st.name for st in plan(cfg, str(params)) if st.notebook > "03_train"]
    assert run.ran == ["03_train_fold1_refinersparse", *after]  # the other runs are kept
    run.ran.clear()
    run_study(params, progress=False)
    assert run.ran == []  # and then nothing is left to do


def test_step_key_depends_on_the_data_fingerprint(tmp_path):
    from cxrkit.study import data_fingerprint, plan
    from cxrkit.study.runner import _step_key

    cfg = load_study(_fake_study(tmp_path)).validate()
    step = plan(cfg, "p.yaml")[0]
    assert _step_key(step, "text", "", "aaaa") != _step_key(step, "text", "", "bbbb")
    first = data_fingerprint(cfg)
    _tiny_gxs(tmp_path / "data", flip=0)
    assert data_fingerprint(cfg) != first and len(first) == 16
    missing = load_study(_fake_study(tmp_path, data=str(tmp_path / "nowhere")))
    assert data_fingerprint(missing).startswith("unavailable (")


def test_top_level_index_carries_every_study(tmp_path, fake_notebooks):
    a = _fake_study(tmp_path, file="a.yaml", name="study_a", description="First <study> & more", variants=["none"])
    b = _fake_study(tmp_path, file="b.yaml", name="study_b", description="Second study", variants=["none", "sparse"])
    run_study(a, progress=False)
    run_study(b, progress=False)
    top = (tmp_path / "reports" / "index.html").read_text()
    assert "First &lt;study&gt; &amp; more" in top and "Second study" in top
    for cfg in (load_study(a), load_study(b)):
        steps = json.loads((cfg.report_dir / "steps.json").read_text())
        for name, e in steps.items():
            assert f"href='{cfg.name}/notebooks/{name}.html'" in top
            assert f"{cfg.name}/figures/fig_{name}_v1.png" in top and f"{cfg.name}/tables/table_{name}_v1.csv" in top
            assert f"<code>{json.dumps(e['parameters'])}</code>".replace('"', "&quot;") in top
        assert f"href='{cfg.name}/index.html'" in top and (cfg.report_dir / "index.html").is_file()
    # status, duration and headline of each step, in that study's section
    section_b = top[top.index("<section id='study_b'>"):]
    assert section_b.count("class='ok'>ok") == 2 + 2 * 2 + 5 and "version: 1" in section_b
    assert top.index("<section id='study_a'>") < top.index("<section id='study_b'>")


def test_split_leakage_raises_for_patient_groups_and_counts_for_image_groups(tmp_path):
    from cxrkit.data.splits import LeakageError
    from cxrkit.study import split_leakage

    splits = pd.DataFrame({"image": ["a", "b", "c", "d", "e"], "patient_id": ["p1", "p1", "p2", "p3", "p3"],
                           "split": ["train", "test", "train", "train", "train"], "fold": [0, -1, 1, 0, 0]})
    patient = load_study(_smoke_copy(tmp_path, group="patient"))
    with pytest.raises(LeakageError, match="'p1' in fold 0, test"):
        split_leakage(patient, splits)
    image = load_study(_smoke_copy(tmp_path, group="image"))
    report = split_leakage(image, splits)
    assert list(report["patient_id"]) == ["p1"]
    assert "1 of 3 patients (2 of 5 images) are in more than one fold or in both test and train" in report.attrs["message"]
    clean = splits.assign(fold=[0, 0, 1, 0, 0], split="train")
    assert len(split_leakage(patient, clean)) == 0 and "none of the 3 patients" in split_leakage(patient, clean).attrs["message"]


def test_best_recovery_prefers_the_highest_rank_correlation():
    from cxrkit.study import best_recovery

    rec = pd.DataFrame({"spearman": [0.1, 0.3, 0.9, float("nan"), 0.5]},
                       index=pd.MultiIndex.from_tuples([("sparse", "fold 0"), ("sparse", "mean"), ("cooc_gcn", "fold 0"),
                                                        ("cooc_gcn", "mean"), ("sparse_prior", "mean")]))
    assert best_recovery(rec) == "sparse_prior"  # by the mean matrices only; NaN counts as lowest


@pytest.mark.slow
def test_study_excludes_a_corrupted_image_and_reports_image_level_leakage(tmp_path):
    """`train: {on_bad_image: exclude}` holds for the whole study: 01_explore decodes every image
    with it, drops the corrupted one and lists it with its reason in the data-quality tables.
    And a study with `group: image` (the paper's splits) runs 02_folds, reporting the patients
    its own folds leak instead of failing the leakage check. (01 and 02 only: about 40 s.)"""
    from cxrkit.study import prepare

    train = {**yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())["train"], "on_bad_image": "exclude"}
    params = _smoke_copy(tmp_path, phantom={"patients": 30, "size": 32, "seed": 0}, train=train, group="image")
    cfg = load_study(params).validate()
    prepare(cfg, progress=False)
    bad = sorted((Path(cfg.data) / "images").glob("*.png"))[3]
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    result = run_study(params, progress=False, only=["01", "02"])
    assert list(result["steps"]) == ["01_explore", "02_folds"]
    assert all(s["status"] == "ok" for s in result["steps"].values())
    tables = cfg.report_dir / "tables"
    excluded = pd.read_csv(tables / "excluded_images.csv")
    assert list(excluded.columns) == ["image", "reason"] and len(excluded) == 1
    assert excluded["image"].iloc[0].endswith(bad.name) and excluded["reason"].iloc[0]
    quality = pd.read_csv(tables / "data_quality.csv", index_col=0)
    kept = len(pd.read_csv(Path(cfg.data) / "train.csv")) - 1
    assert list(quality.loc["images: kept / excluded / all labels unknown"])[:2] == [kept, 1]
    heads = json.loads((cfg.report_dir / "headlines.json").read_text())["01_explore"]
    assert heads["excluded_images"] == 1 and heads["images"] == kept
    leak = pd.read_csv(tables / "study_split_leakage.csv")
    folds = json.loads((cfg.report_dir / "headlines.json").read_text())["02_folds"]
    assert folds["patients_crossing_study_splits"] == len(leak) > 0 and (leak["n_parts"] > 1).all()
    assert "are in more than one fold or in both test and train" in (cfg.report_dir / "notebooks" / "02_folds.ipynb").read_text()
