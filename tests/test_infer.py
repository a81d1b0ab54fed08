"""Inference with trained runs on new images (issue 13): ``cxrkit infer`` and
``cxrkit.training.trained.infer`` reproduce the runs' own saved test predictions (with flip TTA,
single runs and their fold ensemble) from a folder of copies of the test images, from DICOM
copies of them and from the dataset itself; unusable files are refused or excluded, naming them;
runs that disagree on labels or preprocessing are refused before any weight is loaded; the
predictions of a dataset with other labels are evaluated on the labels it shares.

Two tiny training runs (2 epochs, 32 px) serve the whole module: fold 0 trained through the uint8
cache, fold 1 decoding every epoch with the EMA of the backbone only (``ema_refiner: false``, the
live refiner in ``best.pt``); inference never uses the cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from target_helpers import NIH_SPELLING, write_nih_target

from cxrkit.cli import main
from cxrkit.data.images import ImagePolicy, load_image
from cxrkit.data.tables import DataError
from cxrkit.evaluation.ensemble import ensemble
from cxrkit.evaluation.evaluate import evaluate_files
from cxrkit.evaluation.metrics import per_label_auc
from cxrkit.evaluation.predictions import PredictionMismatch, read_predictions
from cxrkit.evaluation.run_ensemble import RunMismatch
from cxrkit.evaluation.sources import folder_source
from cxrkit.phantom.formats import write_image
from cxrkit.training.config import TrainConfig
from cxrkit.training.loop import train
from cxrkit.training.resume import TrainingError
from cxrkit.training.trained import infer, load_runs
from cxrkit.utils.params import ConfigError

#: Saved predictions are written with 6 decimals (rounding error <= 5e-7); inference must agree
#: with them to this absolute tolerance.
TOL = 1e-5


@pytest.fixture(scope="module")
def runs(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Folds 0 and 1 of one variant, as a study lays them out (``<runs>/tiny/sparse/fold<k>``)."""
    root = tmp_path_factory.mktemp("infer")
    base = {"data": str(tiny_phantom), "splits": str(tiny_phantom / "folds.csv"), "backbone": "test_resnet",
            "image_size": 32, "batch_size": 16, "eval_batch_size": 32, "epochs": 2, "lr": 1e-3, "refiner": "sparse",
            "ema_decay": 0.9, "workers": 0, "progress": False}
    out = [root / "runs" / "tiny" / "sparse" / f"fold{k}" for k in range(2)]
    with pytest.MonkeyPatch.context() as mp:  # the uint8 cache goes under <project root>/data/cache
        mp.setenv("CXRKIT_ROOT", str(root))
        train(TrainConfig(**base, fold=0, cache=True, out=str(out[0])))
    train(TrainConfig(**base, fold=1, cache=False, ema_refiner=False, out=str(out[1])))
    return out


@pytest.fixture(scope="module")
def test_images(runs: list[Path], tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding copies of the test split's images (those of the runs' pred_test.csv)."""
    folder = tmp_path_factory.mktemp("new_images")
    for name in pd.read_csv(runs[0] / "pred_test.csv", dtype={"image": str})["image"]:
        shutil.copy(tiny_phantom / "images" / name, folder / name)
    return folder


def _saved(run: Path) -> pd.DataFrame:
    return read_predictions(run / "pred_test.csv")[0].set_index("image")


def _diff(table: pd.DataFrame, saved: pd.DataFrame) -> float:
    got = table.set_index("image")
    assert set(got.index) == set(saved.index)
    return float(np.abs(got.loc[saved.index, saved.columns].to_numpy() - saved.to_numpy()).max())


def test_each_run_and_the_ensemble_reproduce_the_saved_test_predictions(runs, test_images, tmp_path) -> None:
    for run in runs:
        table, meta = infer([run], images=test_images, progress=False)
        assert _diff(table, _saved(run)) < TOL, run
        assert meta["fold"] == int(run.name[-1]) and meta["tta"] is True
    out = tmp_path / "ens.csv"
    table, meta = infer(runs, images=test_images, out=out, progress=False)
    mean, _ = ensemble([r / "pred_test.csv" for r in runs])
    assert _diff(table, mean.set_index("image")) < TOL
    written, sidecar = read_predictions(out)
    assert written["image"].map(type).eq(str).all() and list(written["image"]) == sorted(written["image"])
    assert sidecar["fold"] == "ensemble" and sidecar["members"] == [str(r) for r in runs]
    assert sidecar["fingerprint_of"].startswith("content") and sidecar["source"]["kind"] == "folder"
    for run, record in zip(runs, sidecar["runs"]):
        assert record["sha256"] == hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    assert [r["ema_refiner"] for r in sidecar["runs"]] == [True, False]
    assert sidecar["preprocessing"]["image_size"] == 32 and sidecar["image_decoding"]["images"] == {
        "PNG 8-bit": len(written)}
    assert "commit" in sidecar["provenance"]["git"] and not (tmp_path / "ens_excluded.csv").exists()


def test_without_tta_matches_the_saved_predictions_without_tta(runs, test_images) -> None:
    table, meta = infer(runs[:1], images=test_images, tta=False, batch_size=5, progress=False)
    assert meta["tta"] is False
    assert _diff(table, read_predictions(runs[0] / "pred_test_notta.csv")[0].set_index("image")) < TOL


def test_a_dicom_copy_predicts_the_same(runs, test_images, tmp_path) -> None:
    """DICOM copies (the phantom's encoding: MONOCHROME1 and 2, uncompressed, RLE and JPEG 2000)
    decode to the same pixels, so every probability is the same."""
    folder = tmp_path / "dicom"
    folder.mkdir()
    for seed, png in enumerate(sorted(test_images.iterdir())):
        header = {"dataset": "test", "image": f"{png.stem}.dcm", "patient_id": png.stem.split("_")[0],
                  "study": 1, "sex": "F", "age": 50, "view": "PA", "seed": seed}
        write_image(folder / f"{png.stem}.dcm", load_image(png), "dicom", header)
    png_table, _ = infer(runs, images=test_images, progress=False)
    dcm_table, meta = infer(runs, images=str(folder / "*.dcm"), progress=False)
    assert list(dcm_table["image"]) == [n.replace(".png", ".dcm") for n in png_table["image"]]
    np.testing.assert_allclose(dcm_table.iloc[:, 1:].to_numpy(), png_table.iloc[:, 1:].to_numpy(), rtol=0, atol=1e-7)
    ways = meta["image_decoding"]["images"]
    assert sum(ways.values()) == len(dcm_table) and all(k.startswith("DICOM") for k in ways)
    assert any("MONOCHROME1" in k for k in ways) and any("MONOCHROME2" in k for k in ways)


def test_folder_fingerprint_is_of_the_content(test_images, tmp_path) -> None:
    policy = ImagePolicy()
    copy = tmp_path / "copy"
    shutil.copytree(test_images, copy)
    a, b = folder_source(test_images, policy), folder_source(copy, policy)
    assert a.fingerprint == b.fingerprint and a.ids == b.ids
    assert folder_source(str(copy / "*.png"), policy).fingerprint == a.fingerprint
    first = sorted(copy.iterdir())[0]
    first.write_bytes(first.read_bytes() + b"\0")  # same image for Pillow, other bytes
    assert folder_source(copy, policy).fingerprint != a.fingerprint
    (copy / "sub").mkdir()
    shutil.copy(first, copy / "sub" / first.name)
    assert f"sub/{first.name}" in folder_source(copy, policy).ids


def test_unusable_files_are_refused_naming_them_or_excluded_with_the_reason(runs, test_images, tmp_path) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(test_images, folder)
    good = sorted(folder.iterdir())[0].read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"2 of .*broken\.png \(truncated.*notes\.txt \(cannot decode.*exclude"):
        infer(runs, images=folder, progress=False)
    out = tmp_path / "p.csv"
    table, meta = infer(runs, images=folder, out=out, on_bad_image="exclude", progress=False)
    excluded = pd.read_csv(tmp_path / "p_excluded.csv", dtype=str)
    assert list(excluded["image"]) == ["broken.png", "notes.txt"] and excluded["reason"].str.len().gt(0).all()
    assert meta["excluded"] == 2 and len(table) == len(list(test_images.iterdir()))
    assert "broken.png" not in set(table["image"])


def _altered(run: Path, dest: Path, change) -> Path:
    """A copy of a run whose best.pt has its parameters or labels changed by ``change(ck)``."""
    shutil.copytree(run, dest)
    ck = torch.load(dest / "best.pt", map_location="cpu", weights_only=True)
    change(ck)
    torch.save(ck, dest / "best.pt")
    return dest


@pytest.mark.parametrize("what, change, message", [
    ("labels", lambda ck: ck.update(labels=ck["labels"][:-1]), r"labels \(names and order\).*lacks \['Support Devices'\]"),
    ("order", lambda ck: ck.update(labels=ck["labels"][::-1]), r"labels.*the same labels in another order"),
    ("size", lambda ck: ck["params"].update(image_size=64), r"image size \(image_size\).*has 32.*has 64"),
    ("backbone", lambda ck: ck["params"].update(backbone="test_efficientnet"),
     r"normalisation mean.*\[0\.5, 0\.5, 0\.5\].*\[0\.485, 0\.456, 0\.406\]"),
    ("policy", lambda ck: ck["params"].update(image_policy={"png16": "percentile"}), r"image decoding policy.*percentile"),
])
def test_runs_that_disagree_are_refused_naming_what_and_which(runs, tmp_path, what, change, message) -> None:
    other = _altered(runs[1], tmp_path / what, change)
    with pytest.raises(RunMismatch, match=message) as err:
        load_runs([runs[0], other], torch.device("cpu"))
    assert str(runs[0]) in str(err.value) and str(other) in str(err.value)


def test_only_the_parameters_that_build_the_model_are_read(runs, test_images, tmp_path) -> None:
    """Training-only settings (data, trackers, a key of a later version) do not stop a run predicting."""
    other = _altered(runs[0], tmp_path / "later", lambda ck: ck["params"].update(
        data="/nowhere", dataset_options={"views": ["nonsense"]}, a_later_option=1))
    table, meta = infer([other], images=test_images, progress=False)
    assert _diff(table, _saved(runs[0])) < TOL and meta["runs"][0]["trained_on"]["data"] == "/nowhere"
    broken = _altered(runs[0], tmp_path / "broken", lambda ck: ck["params"].update(refiner="dense"))
    with pytest.raises(ConfigError, match=r"broken/best.pt \(params\): refiner: unknown refiner 'dense'"):
        load_runs([broken], torch.device("cpu"))


def test_runs_that_cannot_be_loaded_are_refused(runs, tmp_path) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(RunMismatch, match="given twice"):
        load_runs([runs[0], runs[0]], cpu)
    same_norm = _altered(runs[1], tmp_path / "convnext", lambda ck: ck["params"].update(backbone="test_convnext"))
    with pytest.raises(RunMismatch, match=r"convnext/best.pt does not fit the model .*test_convnext"):
        load_runs([runs[0], same_norm], cpu)
    unfinished = shutil.copytree(runs[1], tmp_path / "unfinished")
    (unfinished / "metrics.json").unlink()
    with pytest.raises(TrainingError, match="has not finished"):
        load_runs([unfinished], cpu)
    with pytest.raises(FileNotFoundError, match="no best.pt"):
        load_runs([tmp_path], cpu)


def test_the_dataset_itself_gives_the_training_fingerprint_and_evaluates(runs, tiny_phantom, test_images,
                                                                         tmp_path) -> None:
    out = tmp_path / "all.csv"
    table, meta = infer(runs[:1], data=tiny_phantom, out=out, progress=False)
    assert meta["data_fingerprint"] == read_predictions(runs[0] / "pred_test.csv")[1]["data_fingerprint"]
    saved = _saved(runs[0])
    got = table.set_index("image").loc[saved.index, saved.columns]
    assert np.abs(got.to_numpy() - saved.to_numpy()).max() < TOL
    report = evaluate_files([out], data=tiny_phantom, n_boot=20)
    assert report["labels"]["lacking"] == [] and report["labels"]["extra"] == []
    folder_made = tmp_path / "folder.csv"
    infer(runs[:1], images=test_images, out=folder_made, progress=False)
    with pytest.raises(PredictionMismatch, match=r"predicted from the image files .*cxrkit infer --data"):
        evaluate_files([folder_made], data=tiny_phantom, n_boot=20)


def test_a_target_with_other_labels_is_predicted_and_scored_on_the_shared_ones(runs, tiny_phantom, tmp_path) -> None:
    nih = write_nih_target(tiny_phantom, tmp_path / "nih")
    out = tmp_path / "nih.csv"
    _, meta = infer(runs, dataset="nih", data=nih, out=out, progress=False)
    shared = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "No Finding", "Pleural Effusion",
              "Pneumonia", "Pneumothorax"]
    assert meta["label_alignment"]["scored"] == shared
    assert set(meta["label_alignment"]["extra"]) == {"Infiltration", "Mass", "Nodule", "Emphysema", "Fibrosis",
                                                     "Pleural Thickening", "Hernia"}
    report = evaluate_files([out], data=nih, dataset="nih", n_boot=20)
    col = report["table"].iloc[:, 0]
    assert col[[f"AUC {lab}" for lab in meta["label_alignment"]["lacking"]]].isna().all()
    preds = read_predictions(out)[0]
    truth = pd.read_csv(nih / "Data_Entry_2017.csv", dtype=str).set_index("Image Index").loc[preds["image"]]
    findings = truth["Finding Labels"].str.split("|").tolist()
    spelled = [NIH_SPELLING.get(lab, lab) for lab in shared]  # NIH writes Effusion
    y = np.array([[float(name in f) for name in spelled] for f in findings])
    expected = per_label_auc(y, preds[shared].to_numpy(), shared)
    np.testing.assert_allclose(col[[f"AUC {lab}" for lab in shared]].to_numpy(), expected.to_numpy(), atol=1e-12)
    assert "labels scored (8" in report["text"] and "Support Devices" in report["lines"][-1]


def test_a_dataset_image_that_cannot_be_read_is_refused_or_excluded(runs, tiny_phantom, test_images,
                                                                     tmp_path) -> None:
    names = sorted(p.name for p in test_images.iterdir())
    nih = write_nih_target(tiny_phantom, tmp_path / "nih", images=names)
    (nih / "images" / names[0]).write_bytes(b"")
    with pytest.raises(DataError, match=rf"{names[0]} \(empty file"):
        infer(runs, dataset="nih", data=nih, progress=False)
    out = tmp_path / "nih.csv"
    table, meta = infer(runs, dataset="nih", data=nih, out=out, on_bad_image="exclude", progress=False)
    excluded = pd.read_csv(tmp_path / "nih_excluded.csv", dtype=str)
    assert list(excluded["image"]) == [names[0]] and excluded["reason"].iloc[0].startswith("empty file")
    assert list(table["image"]) == names[1:] and meta["excluded"] == 1 and meta["source"]["listed"] == len(names)
    assert evaluate_files([out], data=nih, dataset="nih", n_boot=10)["labels"]["scored"][0] == "Atelectasis"


def test_cli_end_to_end(runs, tiny_phantom, test_images, tmp_path, capsys) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "tiny", "data": str(tiny_phantom), "phantom": None, "n_folds": 2,
                                     "variants": ["sparse"], "runs": str(runs[0].parents[2]),
                                     "reports": str(tmp_path / "reports")}))
    by_runs, by_study = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["infer", *map(str, runs), "--images", str(test_images), "--out", str(by_runs), "--quiet"]) == 0
    assert main(["infer", "--study", str(study), "--variant", "sparse", "--images", str(test_images),
                 "--out", str(by_study), "--quiet", "--batch-size", "7"]) == 0
    a, b = read_predictions(by_runs)[0], read_predictions(by_study)[0]
    assert list(a["image"]) == list(b["image"]) and np.abs(a.iloc[:, 1:].to_numpy() - b.iloc[:, 1:].to_numpy()).max() < TOL
    assert "wrote" in capsys.readouterr().out
    bad = {"missing folder": ["--images", str(tmp_path / "nowhere")],
           "two sources": ["--images", str(test_images), "--data", str(tmp_path)],
           "dataset without data": ["--images", str(test_images), "--dataset", "nih"],
           "unknown variant": ["--study", str(study), "--variant", "dense", "--images", str(test_images)],
           "no runs": ["--images", str(test_images)]}
    for problem, args in bad.items():
        runs_args = [] if "--study" in args or problem == "no runs" else [str(runs[0])]
        assert main(["infer", *runs_args, *args, "--out", str(tmp_path / "x.csv"), "--quiet"]) == 2, problem
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("cxrkit infer: error:"), (problem, err)
    assert not (tmp_path / "x.csv").exists()
    if not torch.cuda.is_available():
        assert main(["infer", str(runs[0]), "--images", str(test_images), "--device", "cuda",
                     "--out", str(tmp_path / "x.csv"), "--quiet"]) == 2
        assert "CUDA device" in capsys.readouterr().err
    meta = json.loads(by_study.with_suffix(".json").read_text())
    assert meta["settings"]["batch_size"] == 7


def test_the_study_infer_has_the_signature_of_the_real_one_and_passes_every_argument(monkeypatch) -> None:
    """``cxrkit.study.infer`` (torch imported only when called) states the arguments of
    :func:`cxrkit.training.trained.infer`, with the same defaults, and hands each one on."""
    import inspect

    import cxrkit.training.trained as trained
    from cxrkit.study.inference import infer as study_infer

    real = inspect.signature(infer)
    assert inspect.signature(study_infer) == real
    seen: dict = {}
    monkeypatch.setattr(trained, "infer", lambda runs, **kwargs: seen.update(runs=runs, **kwargs) or "result")
    given = {name: f"<{name}>" for name in real.parameters if name != "runs"}
    assert study_infer(["run"], **given) == "result"
    assert seen == {"runs": ["run"], **given}
