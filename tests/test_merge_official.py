"""Merging datasets (``dataset: merged``) and the official test protocols (``test_split: official``,
``cxrkit folds --test official``), from the loader to the study and the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_datasets import CHX_META, NIH_COLS, _csv, _gxs, _img, _labels_row
from test_loaders_real_world import PC_COLS, PC_ROWS, _padchest, _vindr

from cxrkit.cli import main
from cxrkit.data.datasets import (
    DataError,
    MergedDataset,
    check_dataset_options,
    check_test_split,
    create_dataset,
    fingerprint,
)
from cxrkit.data.labels import LABELS, VOCABULARY
from cxrkit.data.splits import LeakageError, check_leakage, make_splits
from cxrkit.study.config import StudyConfig
from cxrkit.utils.params import ConfigError

FINDINGS = ("Effusion", "No Finding", "Mass|Nodule", "Cardiomegaly", "Infiltration", "No Finding", "Atelectasis",
            "Pneumothorax")


def _nih(root: Path, patients: int = 8, test: tuple[int, ...] = (7, 8), shared: bool = False) -> Path:
    """NIH ChestX-ray14 with ``patients`` patients of two images each; ``test`` patients' images in
    test_list.txt (with ``shared``, also the first image of patient 1)."""
    rows, names = [], []
    for p in range(1, patients + 1):
        for k in range(2):
            name = f"{p:08d}_{k:03d}.png"
            names.append((p, name))
            rows.append([name, FINDINGS[(2 * p + k) % len(FINDINGS)], k, p, 40 + p, "MF"[k], "PA" if k else "AP", 1, 1])
            _img(root / "images" / name)
    _csv(root / "Data_Entry_2017_v2020.csv", NIH_COLS, rows)
    in_test = {n for p, n in names if p in test} | ({names[0][1]} if shared else set())
    (root / "test_list.txt").write_text("\n".join(n for _, n in names if n in in_test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(n for _, n in names if n not in in_test) + "\n")
    return root


def _sources(**padchest: object) -> list[dict[str, object]]:
    return [{"dataset": "nih", "data": "nih"}, {"dataset": "padchest", "data": "padchest", **padchest}]


@pytest.fixture
def merged_root(tmp_path: Path) -> Path:
    _nih(tmp_path / "nih")
    _padchest(tmp_path)
    return tmp_path



@pytest.fixture
def gxs_root(tmp_path: Path) -> Path:
    """The three-image Grand X-Ray Slam folder of tests/test_datasets.py."""
    return _gxs(tmp_path / "gxs")

# ----------------------------------------------------------------------------- merging


def test_merged_table_aligns_labels_and_keeps_ids_apart(merged_root: Path) -> None:
    ds = MergedDataset(merged_root, sources=_sources(views=["PA"]))
    t = ds.table
    assert len(t) == 16 + 2 and t["source"].tolist() == ["nih"] * 16 + ["padchest"] * 2
    assert t["image"].iloc[0] == "nih:00000001_000.png" and t["patient_id"].iloc[-1] == "padchest:p6"
    assert t["path"].iloc[-1] == str(merged_root / "padchest" / "3" / t["image"].iloc[-1].split(":", 1)[1])
    assert t.columns[:9].tolist() == ["image", "path", "patient_id", "study", "view", "source", "sex", "age",
                                      "official_split"]
    assert ds.labels == [lab for lab in VOCABULARY if lab in {*ds.parts["nih"].labels, *ds.parts["padchest"].labels}]
    nih, pc = t[t["source"] == "nih"], t[t["source"] == "padchest"]
    assert nih["Fracture"].isna().all() and nih["Support Devices"].isna().all()  # NIH does not annotate them
    assert pc["Fracture"].tolist() == [0.0, 1.0] and not nih["Infiltration"].isna().any()
    assert pc["official_split"].isna().all() and (nih["official_split"] == "test").sum() == 4
    assert ds.quality["sources"]["padchest"]["views"]["kept"] == 2
    assert ds.quality["sources"]["nih"]["not_annotated"][:2] == ["Consolidation", "Edema"] or \
        "Fracture" in ds.quality["sources"]["nih"]["not_annotated"]
    assert {p.name for p in ds.source_files} == {"Data_Entry_2017_v2020.csv", "test_list.txt", "train_val_list.txt",
                                                 "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"}
    assert len(ds.excluded) == 0  # every image of both sources decoded


def test_merged_fingerprint_covers_every_source(merged_root: Path) -> None:
    def fp() -> str:
        return fingerprint(create_dataset("merged", root=merged_root, check_images=False, sources=_sources()).table)

    before = fp()
    rows = [r.copy() for r in PC_ROWS]
    rows[0][-1] = "['cardiomegaly']"
    _csv(merged_root / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", PC_COLS, rows)
    after_padchest = fp()
    data_entry = merged_root / "nih" / "Data_Entry_2017_v2020.csv"
    data_entry.write_text(data_entry.read_text().replace("Effusion", "Edema", 1))
    assert len({before, after_padchest, fp()}) == 3


def test_merged_labels_asked_for(merged_root: Path) -> None:
    t = MergedDataset(merged_root, labels=["Fracture", "Mass"], sources=_sources(), check_images=False).table
    assert t.columns[-2:].tolist() == ["Fracture", "Mass"]
    nih = t["source"] == "nih"
    assert t.loc[nih, "Fracture"].isna().all() and not t.loc[nih, "Mass"].isna().any()
    assert t.loc[~nih, "Mass"].isna().sum() == 2  # PadChest's 'unchanged' and empty rows
    with pytest.raises(DataError, match=r"merged: label\(s\) \['Lung Opacity'\] are not provided"):
        MergedDataset(merged_root, labels=["Lung Opacity"], sources=_sources(), check_images=False)
    with pytest.raises(DataError, match=r"merged source 'padchest' \(padchest, .*nowhere\).*not a directory"):
        MergedDataset(merged_root, sources=[_sources()[0], {"dataset": "padchest", "data": "nowhere"}])


@pytest.mark.parametrize(("options", "message"), [
    ({}, r"dataset_options.sources: need a list of at least two sources"),
    ({"sources": [{"dataset": "nih", "data": "nih"}]}, "at least two sources"),
    ({"sources": [{"dataset": "nih", "data": "a"}, {"dataset": "merged", "data": "b"}]},
     r"sources\[1\].dataset: 'merged' is not a single-format dataset"),
    ({"sources": [{"dataset": "nih", "data": "a"}, {"dataset": "padchest"}]}, r"sources\[1\].data: need the source"),
    ({"sources": [{"dataset": "nih", "data": "a"}, {"dataset": "chexpert", "data": "b", "uncertian": "ones"}]},
     r"sources\[1\].uncertian: not an option of dataset 'chexpert' \(did you mean 'uncertain'\?\)"),
    ({"sources": [{"dataset": "nih", "data": "a", "on_bad_image": "exclude"}, {"dataset": "gxs", "data": "b"}]},
     r"sources\[0\].on_bad_image: set for the merged dataset as a whole"),
    ({"sources": [{"dataset": "gxs", "data": "a"}, {"dataset": "gxs", "data": "b"}]},
     r"several sources named \['gxs'\]; give each a different 'name'"),
    ({"sources": [{"dataset": "nih", "data": "a"}, {"dataset": "vindr", "data": "b", "views": ["PA"]}]},
     r"dataset_options.sources\[1\].views: dataset 'vindr' records no view"),
    ({"sources": _sources(), "csv": "x.csv"}, r"dataset_options.csv: not an option of dataset 'merged'"),
    ({"sources": _sources(), "views": "frontal"}, r"dataset_options.views: not an option of dataset 'merged'"),
])
def test_merged_options_checked_before_anything_runs(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_dataset_options("merged", options)


def test_merged_through_a_study_and_training_data(merged_root: Path, tmp_path: Path) -> None:
    from cxrkit.study.data import prepare
    from cxrkit.training.config import TrainConfig
    from cxrkit.training.fold import load_fold

    two = [{"dataset": "gxs", "data": "a", "name": "site a"}, {"dataset": "gxs", "data": "b", "name": "site b"}]
    StudyConfig(dataset="merged", dataset_options={"sources": two}, phantom=None).validate()
    cfg = StudyConfig(name="m", data=str(merged_root), dataset="merged", dataset_options={"sources": _sources()},
                      phantom=None, n_folds=2, test_size=0.25, runs=str(tmp_path / "runs")).validate()
    summary = prepare(cfg, progress=False)
    folds = pd.read_csv(cfg.splits_path, dtype=str)
    assert summary["n_images"] == 16 + 7 and folds["image"].str.startswith(("nih:", "padchest:")).all()
    check_leakage(folds.assign(fold=folds["fold"].astype(int)))
    train_cfg = TrainConfig(data=str(merged_root), dataset="merged", dataset_options={"sources": _sources()},
                            splits=str(cfg.splits_path), cache=False).validate()
    data = load_fold(train_cfg, tmp_path / "run")
    assert data.data_fingerprint == summary["data_fingerprint"] and len(data.csv_digest) == 16
    assert set(data.table["source"]) == {"nih", "padchest"}
    sources = data.quality["sources"]  # the loader's counts, written to the run's provenance.json
    assert (sources["nih"]["images"], sources["padchest"]["images"]) == (16, 7)
    assert sources["padchest"]["labels"] == {"images": 7, "no_labels_cell": 1, "only_uninformative_terms": 1,
                                             "all_labels_nan": 2} and sources["padchest"]["projection_unknown"] == 1


# ----------------------------------------------------------------------------- official test splits


def test_official_split_nih(tmp_path: Path) -> None:
    root = _nih(tmp_path / "nih")
    table = create_dataset("nih", root=root, check_images=False).table
    splits = make_splits(table, n_folds=3, seed=0, test_split="official")
    assert splits.loc[splits["split"] == "test", "image"].tolist() == \
        table.loc[table["official_split"] == "test", "image"].tolist()
    assert splits.attrs["test_split"] == "official" and splits.attrs["test_size"] == 0.25
    assert sorted(splits.loc[splits["split"] == "train", "fold"].unique()) == [0, 1, 2]
    check_leakage(splits)
    assert make_splits(table.sample(frac=1, random_state=1), n_folds=3, test_split="official") \
        .set_index("image")["fold"].sort_index().equals(splits.set_index("image")["fold"].sort_index())


def test_official_split_refusals(tmp_path: Path, gxs_root: Path) -> None:
    shared = create_dataset("nih", root=_nih(tmp_path / "shared", shared=True), check_images=False).table
    with pytest.raises(LeakageError, match=r"official test set of 'nih' shares 1 patient\(s\) with the other images, "
                                           r"e.g. '1'"):
        make_splits(shared, test_split="official")
    gxs = create_dataset("gxs", root=gxs_root, check_images=False).table
    with pytest.raises(ValueError, match="test_split official: 'gxs' has no official test images"):
        make_splits(gxs, test_split="official")
    for name, options, message in (
            ("gxs", {}, "dataset 'gxs' has no official test split"),
            ("padchest", {}, "dataset 'padchest' has no official test split"),
            ("chexpert", {}, "chexpert's official test set is valid.csv: set dataset_options include_valid: true"),
            ("merged", {"sources": _sources()}, r"source 1 \('padchest'\): dataset 'padchest' has no official test")):
        with pytest.raises(ConfigError, match=rf"test_split: official: {message}"):
            check_test_split(name, options, "official")
    check_test_split("chexpert", {"include_valid": True}, "official")
    check_test_split("merged", {"sources": [{"dataset": "nih", "data": "a"}, {"dataset": "vindr", "data": "b"}]},
                     "official")
    with pytest.raises(ConfigError, match=r"test_split: 'random' is not one of \['stratified', 'official'\]"):
        StudyConfig(test_split="random").validate()
    with pytest.raises(ConfigError, match="test_split: official: dataset 'gxs' has no official test split"):
        StudyConfig(test_split="official").validate()


def test_official_split_vindr_and_merged(tmp_path: Path) -> None:
    vindr = create_dataset("vindr", root=_vindr(tmp_path), check_images=False).table
    splits = make_splits(vindr, n_folds=2, test_split="official")
    assert splits.loc[splits["split"] == "test", "image"].tolist() == ["t1"]
    _nih(tmp_path / "nih")
    sources = [{"dataset": "nih", "data": "nih"}, {"dataset": "vindr", "data": "vindr"}]
    merged = create_dataset("merged", root=tmp_path, check_images=False, sources=sources).table
    splits = make_splits(merged, n_folds=3, test_split="official")
    assert sorted(splits.loc[splits["split"] == "test", "image"]) == \
        sorted(["vindr:t1", *(f"nih:0000000{p}_00{k}.png" for p in (7, 8) for k in (0, 1))])


def _mimic_split(root: Path, shared: bool = False) -> Path:
    """MIMIC-CXR-JPG with 6 subjects of one study and two images each; the split file puts
    subjects 5 and 6 in test, subject 1 in validate, the rest in train (with ``shared``, one image
    of subject 5 in train too)."""
    studies, dicoms = [], []
    for s in range(1, 7):
        subject, study = f"1000000{s}", f"5000000{s}"
        studies.append([subject, study, *_labels_row(Cardiomegaly=s % 2, Edema=(s + 1) % 2, Atelectasis=int(s < 4))])
        split = "test" if s >= 5 else "validate" if s == 1 else "train"
        for k, view in enumerate(("PA", "LATERAL")):
            dicoms.append([f"d{s}{k}", subject, study, view, "train" if shared and s == 5 and k else split])
    _csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *LABELS], studies)
    _csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
         [d[:4] for d in dicoms])
    _csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"],
         [[d[0], d[2], d[1], d[4]] for d in dicoms])
    return root


def _chexpert_valid(root: Path, shared: bool = False) -> Path:
    """CheXpert: train.csv with patients 1-6 (a frontal and a lateral image each), valid.csv with
    patients 64541-64542 (with ``shared``, also an image of patient 1)."""
    def row(split: str, patient: int, view: str, **labels: object) -> list[object]:
        side = "Frontal" if view == "frontal" else "Lateral"
        return [f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study1/view1_{view}.jpg", "Female", 50, side,
                "PA" if side == "Frontal" else "", *_labels_row(**labels)]

    train = [row("train", p, v, Cardiomegaly=p % 2, Edema=int(p < 4)) for p in range(1, 7) for v in ("frontal", "lateral")]
    valid = [row("valid", p, v, Cardiomegaly=p % 2, Edema=1) for p in (64541, 64542) for v in ("frontal", "lateral")]
    if shared:
        valid.append(row("valid", 1, "frontal", Edema=1))
    _csv(root / "train.csv", [*CHX_META, *LABELS], train)
    _csv(root / "valid.csv", [*CHX_META, *LABELS], valid)
    return root


def _official_and_grouped(table: pd.DataFrame, n_folds: int = 2) -> pd.DataFrame:
    """The official folds of ``table``, checked: the official test images (and only they) in test,
    every other image in a fold, each patient in one part."""
    splits = make_splits(table, n_folds=n_folds, seed=0, test_split="official")
    official = (table["official_split"] == "test").to_numpy()
    assert splits["image"].tolist() == table["image"].tolist()
    assert ((splits["split"] == "test").to_numpy() == official).all()
    assert (splits.loc[~official, "fold"] >= 0).all() and sorted(splits.loc[~official, "fold"].unique()) == [0, 1]
    assert splits.attrs["test_split"] == "official" and splits.attrs["test_size"] == official.mean()
    check_leakage(splits)
    parts = splits["split"] + splits["fold"].astype(str)
    assert (parts.groupby(splits["patient_id"]).nunique() == 1).all()  # patient-grouped
    return splits


def test_official_split_mimic_split_file(tmp_path: Path) -> None:
    table = create_dataset("mimic", root=_mimic_split(tmp_path / "mimic"), check_images=False).table
    assert table["official_split"].value_counts().to_dict() == {"train": 6, "test": 4, "validate": 2}
    splits = _official_and_grouped(table)
    assert sorted(splits.loc[splits["split"] == "test", "image"].str.rsplit("/", n=1).str[-1]) == \
        ["d50.jpg", "d51.jpg", "d60.jpg", "d61.jpg"]
    assert (splits.loc[table["official_split"] == "validate", "split"] == "train").all()  # validate: in the folds
    shared = create_dataset("mimic", root=_mimic_split(tmp_path / "shared", shared=True), check_images=False).table
    with pytest.raises(LeakageError, match=r"official test set of 'mimic' shares 1 patient\(s\) with the other images, "
                                           r"e.g. '10000005'"):
        make_splits(shared, test_split="official")


def test_official_split_chexpert_valid_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _chexpert_valid(tmp_path / "CheXpert-v1.0-small")
    with pytest.raises(ValueError, match="test_split official: 'chexpert' has no official test images"):
        make_splits(create_dataset("chexpert", root=root, check_images=False).table, test_split="official")
    table = create_dataset("chexpert", root=root, check_images=False, include_valid=True).table
    splits = _official_and_grouped(table)
    assert sorted(splits.loc[splits["split"] == "test", "patient_id"].unique()) == ["patient64541", "patient64542"]
    assert main(["folds", "--data", str(root), "--dataset", "chexpert", "--dataset-options", '{"include_valid": true}',
                 "--test", "official", "--n-folds", "2"]) == 0
    record = json.loads((root / "folds.json").read_text())
    assert record["test_split"] == "official" and record["counts"]["test"] == {"images": 4, "patients": 2}
    assert pd.read_csv(root / "folds.csv", dtype=str)["split"].tolist() == splits["split"].tolist()
    capsys.readouterr()
    shared = _chexpert_valid(tmp_path / "shared", shared=True)
    with pytest.raises(LeakageError, match=r"official test set of 'chexpert' shares 1 patient\(s\) with the other "
                                           r"images, e.g. 'patient00001'"):
        make_splits(create_dataset("chexpert", root=shared, check_images=False, include_valid=True).table,
                    test_split="official")
    assert main(["folds", "--data", str(shared), "--dataset", "chexpert", "--dataset-options",
                 '{"include_valid": true}', "--test", "official"]) != 0
    assert "shares 1 patient(s)" in capsys.readouterr().err and not (shared / "folds.csv").exists()


def test_cli_folds_official(tmp_path: Path, gxs_root: Path, capsys: pytest.CaptureFixture) -> None:
    root = _nih(tmp_path / "nih")
    assert main(["folds", "--data", str(root), "--dataset", "nih", "--test", "official", "--n-folds", "2"]) == 0
    record = json.loads((root / "folds.json").read_text())
    assert record["test_split"] == "official" and record["test_size"] == 0.25
    assert record["counts"]["test"] == {"images": 4, "patients": 2}
    folds = pd.read_csv(root / "folds.csv", dtype=str)
    assert set(folds.loc[folds["split"] == "test", "patient_id"]) == {"7", "8"}
    assert main(["folds", "--data", str(root), "--dataset", "nih", "--test", "official", "--test-size", "0.3"]) == 2
    assert "--test-size: not used with --test official" in capsys.readouterr().err
    assert main(["folds", "--data", str(gxs_root), "--dataset", "gxs", "--test", "official"]) == 2
    assert "--test: official: dataset 'gxs' has no official test split" in capsys.readouterr().err
    assert not (gxs_root / "folds.csv").exists()
    assert main(["folds", "--data", str(root), "--dataset", "nih", "--dataset-options", '{"views": ["PA"]}',
                 "--n-folds", "2"]) == 0
    assert '"views": {"views": ["PA"], "kept": 8, "dropped": 8' in capsys.readouterr().out


def test_study_official_protocol(tmp_path: Path) -> None:
    from cxrkit.study.data import prepare

    root = _nih(tmp_path / "nih")
    cfg = StudyConfig(name="o", data=str(root), dataset="nih", phantom=None, n_folds=2, test_split="official",
                      runs=str(tmp_path / "runs")).validate()
    prepare(cfg, progress=False)
    record = json.loads(cfg.splits_path.with_suffix(".json").read_text())
    assert record["test_split"] == "official" and math.isclose(record["test_size"], 0.25)
    first = cfg.splits_path.stat().st_mtime_ns
    prepare(cfg, progress=False)  # unchanged: the folds are kept
    assert cfg.splits_path.stat().st_mtime_ns == first
    stratified = StudyConfig(name="o", data=str(root), dataset="nih", phantom=None, n_folds=2, test_size=0.25,
                             runs=str(tmp_path / "runs")).validate()
    prepare(stratified, progress=False)  # another protocol: the folds are made again
    assert "test_split" not in json.loads(cfg.splits_path.with_suffix(".json").read_text())
    assert np.isfinite(record["test_size"])
