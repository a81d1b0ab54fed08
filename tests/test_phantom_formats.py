"""The phantom in the real formats (issue 12): ``png16`` and ``dicom`` phantoms decode to exactly
the 8-bit PNG phantom's pixels with the default image policy, carry the same labels and truth,
and a run on the DICOM phantom predicts exactly what the same run on the PNG phantom predicts; the
policy reaches the run's provenance and the cache; bad DICOMs are refused or excluded before
training; ``cxrkit synth --format`` and a study's ``phantom: {format: dicom}``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

import cxrkit.training.fold as training_fold
import cxrkit.training.setup as training_setup
from cxrkit.cli import main
from cxrkit.data.datasets import DataError, create_dataset, fingerprint
from cxrkit.data.images import ImagePolicy, load_image
from cxrkit.data.splits import load_splits, make_splits, save_splits
from cxrkit.phantom.generate import generate
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import prepare
from cxrkit.training.loop import train
from cxrkit.utils.params import ConfigError


def _with_folds(root: Path) -> Path:
    """Folds as the tiny phantom's (conftest): patient-grouped, 3 folds, test 0.2, seed 0."""
    table = create_dataset("gxs", root=root, check_images=False).table
    splits = make_splits(table, table.attrs["labels"], n_folds=3, test_size=0.2, seed=0, group="patient")
    save_splits(splits, root / "folds.csv", {"seed": 0, "n_folds": 3, "test_size": 0.2, "group": "patient",
                                             "fingerprint": fingerprint(table)})
    return root


@pytest.fixture(scope="module")
def twins(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny phantom (conftest) and its 16-bit PNG and DICOM twins (same arguments), with folds."""
    roots = {"png": tiny_phantom}
    for fmt in ("png16", "dicom"):
        root = tmp_path_factory.mktemp(fmt)
        generate(root, n_patients=90, size=48, seed=7, workers=1, progress=False, overwrite=True, image_format=fmt)
        roots[fmt] = _with_folds(root)
    return roots


def _names(root: Path) -> list[str]:
    return pd.read_csv(root / "train.csv", dtype=str)["Image_name"].tolist()


def test_every_format_decodes_to_the_png_phantoms_pixels_with_the_same_tables(twins) -> None:
    png = twins["png"]
    for fmt in ("png16", "dicom"):
        suffix = ".dcm" if fmt == "dicom" else ".png"
        assert [n.replace(suffix, ".png") for n in _names(twins[fmt])] == _names(png)
        for table in ("train.csv", "truth.csv"):  # the same labels and truth; only the DICOM names differ
            assert (twins[fmt] / table).read_text().replace(suffix, ".png") == (png / table).read_text()
        for name in _names(png):
            twin = twins[fmt] / "images" / name.replace(".png", suffix)
            np.testing.assert_array_equal(load_image(twin), load_image(png / "images" / name), err_msg=str(twin))
    assert json.loads((twins["dicom"] / "phantom.json").read_text())["format"] == "dicom"


def test_dicom_phantom_headers_as_scanners_write_them(twins) -> None:
    train_csv = pd.read_csv(twins["dicom"] / "train.csv", dtype=str).set_index("Image_name")
    seen: Counter = Counter()
    studies = set()
    for name, row in train_csv.iterrows():
        ds = pydicom.dcmread(twins["dicom"] / "images" / name)
        assert (ds.PatientID, ds.ViewPosition, ds.PatientSex, ds.StudyID) == (
            row["Patient_ID"], row["ViewPosition"], row["Sex"], row["Study"])
        assert (ds.Modality, ds.BitsStored, ds.BitsAllocated, ds.RescaleSlope, ds.RescaleIntercept) == (
            "CR", 12, 16, 0.5, -100)
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID and ds.WindowWidth == 2041
        studies.add(ds.StudyInstanceUID)
        seen[ds.PhotometricInterpretation] += 1
        seen[ds.file_meta.TransferSyntaxUID.name] += 1
    assert len(studies) == len(train_csv)  # each phantom image is its own study
    assert {"MONOCHROME1", "MONOCHROME2", "Explicit VR Little Endian", "RLE Lossless",
            "JPEG 2000 Image Compression (Lossless Only)"} <= set(seen), seen


def test_a_run_on_the_dicom_phantom_predicts_what_it_does_on_the_png_phantom(twins, tiny_cfg, tmp_path,
                                                                            monkeypatch) -> None:
    folds = {fmt: load_splits(twins[fmt] / "folds.csv") for fmt in ("png", "dicom")}
    assert folds["dicom"]["image"].str.replace(".dcm", ".png").tolist() == folds["png"]["image"].tolist()
    assert folds["dicom"]["fold"].tolist() == folds["png"]["fold"].tolist()
    monkeypatch.setattr(training_fold, "data_dir", lambda: tmp_path)  # the DICOM run builds its uint8 cache here
    monkeypatch.setattr(training_setup, "data_dir", lambda: tmp_path)
    outs = {}
    for fmt, cache in (("png", False), ("dicom", True)):  # PNGs decoded every epoch, DICOMs cached once
        cfg = dataclasses.replace(tiny_cfg, data=str(twins[fmt]), splits=str(twins[fmt] / "folds.csv"), epochs=1,
                                  cache=cache, out=str(tmp_path / fmt))
        outs[fmt] = Path(train(cfg)["out"])
    for pred in ("pred_val.csv", "pred_test.csv"):
        dicom, png = (pd.read_csv(outs[f] / pred, dtype={"image": str}) for f in ("dicom", "png"))
        dicom["image"] = dicom["image"].str.replace(".dcm", ".png")
        pd.testing.assert_frame_equal(dicom, png, check_exact=True)  # bit-identical
    decoding = json.loads((outs["dicom"] / "provenance.json").read_text())["image_decoding"]
    assert decoding["policy"] == ImagePolicy().as_dict() == {"dicom_window": "header", "percentiles": [0.5, 99.5],
                                                               "png16": "full"}
    assert set(decoding["images"]) == {"DICOM MONOCHROME1, window centre/width",
                                       "DICOM MONOCHROME2, window centre/width"}
    assert sum(decoding["images"].values()) == len(_names(twins["dicom"]))
    cache_json = json.loads(next((tmp_path / "cache").glob("u8_32px_*.json")).read_text())
    assert cache_json["image_policy"] == decoding["policy"] and cache_json["decoder_version"] == decoding["decoder_version"]


def test_bad_dicoms_are_refused_or_excluded_with_the_reason_before_training(twins, tmp_path) -> None:
    root = Path(shutil.copytree(twins["dicom"], tmp_path / "data"))
    names = _names(root)
    frames, colour = root / "images" / names[3], root / "images" / names[5]
    for path, changes in ((frames, {"NumberOfFrames": 2}), (colour, {"PhotometricInterpretation": "RGB"})):
        ds = pydicom.dcmread(path)
        for key, value in changes.items():
            setattr(ds, key, value)
        ds.save_as(path)
    with pytest.raises(DataError) as err:
        create_dataset("gxs", root=root)
    assert f"{frames} (multi-frame DICOM (2 frames)" in str(err.value)
    assert f"{colour} (colour DICOM (photometric interpretation RGB" in str(err.value)
    ds = create_dataset("gxs", root=root, on_bad_image="exclude", report_dir=tmp_path / "report")
    excluded = pd.read_csv(tmp_path / "report" / "excluded_images.csv", dtype=str)
    assert excluded["image"].tolist() == [names[3], names[5]]
    assert excluded["reason"].str.contains("multi-frame|colour DICOM").all()
    assert sum(ds.decoding.values()) == len(names) - 2


def test_synth_writes_each_format_byte_identically(tmp_path: Path) -> None:
    args = ["synth", "--patients", "3", "--size", "16", "--workers", "1", "--quiet", "--format"]
    for out in ("a", "b"):
        assert main([*args, "dicom", "--out", str(tmp_path / out)]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "images").iterdir())
    assert files and all(f.suffix == ".dcm" for f in files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert main([*args, "png16", "--out", str(tmp_path / "c")]) == 0
    assert load_image(next((tmp_path / "c" / "images").iterdir())).dtype == np.uint8


def test_a_study_generates_its_phantom_in_the_format_it_names(tmp_path: Path) -> None:
    def study(**changes) -> StudyConfig:
        values = {"name": "fmt", "data": str(tmp_path / "phantom"), "runs": str(tmp_path / "runs"),
                  "phantom": {"patients": 30, "size": 16, "seed": 0, "format": "dicom"}, **changes}
        return StudyConfig(**values).validate()

    with pytest.raises(ConfigError, match=r"phantom\.format: 'tiff' is not one of \('png', 'png16', 'dicom'\)"):
        study(phantom={"format": "tiff"})
    with pytest.raises(ConfigError, match=r"variants\[1\]\.image_policy: set it once in train\.image_policy"):
        study(variants=["none", {"name": "p", "refiner": "sparse", "image_policy": {"png16": "percentile"}}])
    with pytest.raises(ConfigError, match=r"image_policy\.percentiles"):
        study(train={"image_policy": {"percentiles": [50, 5]}})
    cfg = study(train={"image_policy": {"png16": "percentile"}})
    assert cfg.image_policy == ImagePolicy(png16="percentile")
    summary = prepare(cfg, progress=False)
    images = sorted((tmp_path / "phantom" / "images").iterdir())
    assert images and {p.suffix for p in images} == {".dcm"} and summary["n_images"] == len(images)
