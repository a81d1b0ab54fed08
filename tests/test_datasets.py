"""Tests for cxrkit.data.datasets: the four loaders, validation, image checks and helpers."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from cxrkit.data.datasets import (
    DATASETS,
    MIMICCXRJPG,
    CheXpert,
    DataError,
    GrandXRaySlam,
    NIHChestXray14,
    check_images,
    create_dataset,
    fingerprint,
    label_matrix,
    load_image,
)
from cxrkit.data.labels import LABELS, NIH_LABELS

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- fixtures


def _image_bytes(fmt: str, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((RNG.random((size, size)) * 255).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _img(path: Path, fmt: str | None = None, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or ("JPEG" if path.suffix == ".jpg" else "PNG")
    path.write_bytes(_image_bytes(fmt, size))
    return path


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.getvalue().encode()))
    else:
        path.write_text(text.getvalue())
    return path


def _labels_row(**values: object) -> list[object]:
    return [values.get(lab, 0) for lab in LABELS]


GXS_META = ["Image_name", "Patient_ID", "Study", "Sex", "Age", "ViewCategory", "ViewPosition"]


def _gxs(root: Path, rows: list[list[object]] | None = None, images: bool = True) -> Path:
    rows = rows or [
        ["a.png", "p1", "s1", "M", 50, "Frontal", "PA", *_labels_row(Cardiomegaly=1)],
        ["b.png", "p1", "s2", "M", 51, "Lateral", "lateral", *_labels_row(**{"No Finding": 1})],
        ["c.png", "p2", "s3", "F", "", "Frontal", "", *_labels_row(Edema=1, Fracture=1)],
    ]
    _csv(root / "train.csv", GXS_META + list(LABELS), rows)
    if images:
        for r in rows:
            _img(root / "images" / str(r[0]))
    return root


@pytest.fixture
def gxs_root(tmp_path: Path) -> Path:
    return _gxs(tmp_path / "gxs")


CHX_META = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]


def _chexpert(tmp_path: Path) -> Path:
    """``tmp/CheXpert-v1.0-small/{train.csv, train/...}`` with the official Path prefix."""
    ds = tmp_path / "CheXpert-v1.0-small"
    rows = [
        [
            "train/patient00001/study1/view1_frontal.jpg",
            "Female",
            68,
            "Frontal",
            "AP",
            *_labels_row(Atelectasis=-1, Edema=1, **{"Pleural Effusion": ""}),
        ],
        [
            "train/patient00001/study1/view2_lateral.jpg",
            "Female",
            68,
            "Lateral",
            "",
            *_labels_row(Atelectasis=1, Edema=-1, **{"Pleural Effusion": ""}),
        ],
        [
            "train/patient00002/study2/view1_frontal.jpg",
            "Male",
            40,
            "Frontal",
            "PA",
            *_labels_row(Atelectasis=0, Edema="", **{"Pleural Effusion": -1}),
        ],
    ]
    for r in rows:
        _img(ds / str(r[0]))
        r[0] = "CheXpert-v1.0-small/" + str(r[0])
    _csv(ds / "train.csv", CHX_META + list(LABELS), rows)
    return ds


NIH_COLS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
]


def _nih(tmp_path: Path, findings: tuple[str, ...] | None = None, splits: bool = True) -> Path:
    root = tmp_path / "nih"
    findings = findings or (
        "Effusion|Pleural_Thickening",
        "No Finding",
        "Mass|Nodule|Hernia",
        "Cardiomegaly",
    )
    names = [f"0000000{i // 2 + 1}_00{i % 2}.png" for i in range(len(findings))]
    rows = [
        [n, f, i % 2, i // 2 + 1, 30 + i, "MF"[i % 2], "PA" if i % 2 else "AP", 1024, 1024]
        for i, (n, f) in enumerate(zip(names, findings, strict=True))
    ]
    _csv(root / "Data_Entry_2017_v2020.csv", NIH_COLS, rows)
    for i, n in enumerate(names):
        _img(root / f"images_00{i % 2 + 1}" / "images" / n)
    if splits:
        (root / "train_val_list.txt").write_text("\n".join(names[:3]) + "\n")
        (root / "test_list.txt").write_text(names[3] + "\n")
    return root


MIMIC_STUDIES = [
    ["10000032", "50414267", *_labels_row(Edema=1, Atelectasis=-1)],
    ["10000032", "53189527", *_labels_row(**{"No Finding": 1, "Pleural Effusion": ""})],
    ["11000011", "56699142", *_labels_row(Pneumonia=1)],
]
MIMIC_DICOMS = [  # dicom_id, subject_id, study_id, ViewPosition, split
    ["d1", "10000032", "50414267", "PA", "train"],
    ["d2", "10000032", "50414267", "LATERAL", "train"],
    ["d3", "10000032", "53189527", "AP", "validate"],
    ["d4", "11000011", "56699142", "", "test"],
]


def _mimic(tmp_path: Path, dicoms: list[list[str]] | None = None) -> Path:
    root = tmp_path / "mimic"
    dicoms = dicoms or MIMIC_DICOMS
    _csv(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *LABELS], MIMIC_STUDIES
    )
    _csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "ViewPosition"],
        [d[:4] for d in dicoms],
    )
    _csv(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[d[0], d[2], d[1], d[4]] for d in dicoms],
    )
    for d, subj, study, *_ in dicoms:
        _img(root / "files" / f"p{subj[:2]}" / f"p{subj}" / f"s{study}" / f"{d}.jpg")
    return root


def _nan_eq(a: object, b: object) -> bool:
    return (
        isinstance(a, float) and math.isnan(a) and isinstance(b, float) and math.isnan(b)
    ) or a == b


# ----------------------------------------------------------------------------- Grand X-Ray Slam


def test_gxs_common_table(gxs_root: Path) -> None:
    ds = GrandXRaySlam(gxs_root)
    t = ds.table
    assert list(t.columns) == [
        "image",
        "path",
        "patient_id",
        "study",
        "view",
        "sex",
        "age",
        *LABELS,
    ]
    assert isinstance(t.index, pd.RangeIndex) and len(t) == 3
    assert t["image"].tolist() == ["a.png", "b.png", "c.png"]
    assert t["path"].tolist() == [str((gxs_root / "images" / n).resolve()) for n in t["image"]]
    assert t["patient_id"].tolist() == ["p1", "p1", "p2"]
    # row c: ViewCategory Frontal, ViewPosition blank -> FRONTAL (cxrkit.data.views)
    assert t["view"].tolist() == ["PA", "LATERAL", "FRONTAL"] and ds.quality["view_replaced"] == 0
    assert t["age"].iloc[0] == 50.0 and pd.isna(t["age"].iloc[2])
    assert all(t[lab].dtype == np.float64 for lab in LABELS)
    assert t.loc[2, ["Edema", "Fracture", "Cardiomegaly"]].tolist() == [1.0, 1.0, 0.0]
    assert t.attrs == {
        "labels": list(LABELS),
        "dataset": "gxs",
        "source": str(gxs_root / "train.csv"),
    }
    assert ds.labels == list(LABELS) and ds.excluded.empty


def test_gxs_label_subset_and_images_in_root(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    _gxs(root, images=False)
    for n in ("a.png", "b.png", "c.png"):
        _img(root / n)
    ds = GrandXRaySlam(root, labels=["Edema", "Cardiomegaly"])
    assert ds.table.columns[-2:].tolist() == ["Edema", "Cardiomegaly"]
    assert label_matrix(ds.table).tolist() == [[0, 1], [0, 0], [1, 0]]
    assert ds.table["path"].iloc[0] == str((root / "a.png").resolve())


def test_gxs_without_patient_id_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "nopid"
    _csv(
        root / "train.csv",
        ["Image_name", *LABELS],
        [["x.png", *_labels_row()], ["y.png", *_labels_row()]],
    )
    _img(root / "x.png"), _img(root / "y.png")
    with caplog.at_level(logging.WARNING, logger="cxrkit.datasets"):
        t = GrandXRaySlam(root).table
    assert "no Patient_ID" in caplog.text
    assert t["patient_id"].tolist() == ["x.png", "y.png"]
    assert t["view"].isna().all() and "sex" not in t.columns


def test_gxs_uncertain_is_error_by_default_and_policy_when_given(tmp_path: Path) -> None:
    rows = [
        ["a.png", "p1", "s1", "M", 50, "Frontal", "PA", *_labels_row(Edema=-1)],
        ["b.png", "p2", "s2", "M", 50, "Frontal", "PA", *_labels_row(Edema="")],
    ]
    root = _gxs(tmp_path / "u", rows)
    with pytest.raises(DataError) as e:
        GrandXRaySlam(root)
    msg = str(e.value)
    assert "train.csv" in msg and "'Edema'" in msg and "line 2: '-1'" in msg and "line 3: ''" in msg
    t = GrandXRaySlam(root, uncertain="ones").table
    assert t["Edema"].tolist() == [1.0, 0.0]  # blank -> zeros once a policy is given
    t = GrandXRaySlam(root, uncertain="ignore", blank="nan").table
    assert t["Edema"].isna().all()


@pytest.mark.parametrize("value", ["2", "0.5", "yes"])
def test_label_values_outside_accepted_set(tmp_path: Path, value: str) -> None:
    rows = [["a.png", "p1", "s1", "M", 1, "F", "PA", *_labels_row()] for _ in range(1)]
    rows += [
        [f"{i}.png", "p1", "s1", "M", 1, "F", "PA", *_labels_row(Fracture=value)] for i in range(12)
    ]
    root = _gxs(tmp_path / "v", rows, images=False)
    with pytest.raises(DataError) as e:
        GrandXRaySlam(root, uncertain="zeros", check_images=False)
    msg = str(e.value)
    assert str(root / "train.csv") in msg and "'Fracture'" in msg
    assert f"line 3: {value!r}" in msg and "(12 in total)" in msg and "line 14" not in msg


def test_missing_column_suggests_spelling(tmp_path: Path) -> None:
    header = [
        "Image_name",
        *[lab if lab != "Pleural Effusion" else "Pleural Efusion" for lab in LABELS],
    ]
    _csv(tmp_path / "train.csv", header, [["a.png", *_labels_row()]])
    with pytest.raises(DataError) as e:
        GrandXRaySlam(tmp_path, check_images=False)
    msg = str(e.value)
    assert "train.csv" in msg and "'Pleural Effusion'" in msg and "found 'Pleural Efusion'" in msg


def test_labels_argument_checked(gxs_root: Path) -> None:
    with pytest.raises(DataError, match="Cardiomegally.*did you mean 'Cardiomegaly'"):
        GrandXRaySlam(gxs_root, labels=["Cardiomegally"])
    with pytest.raises(DataError, match="'Hernia'.*not provided by this format"):
        GrandXRaySlam(gxs_root, labels=["Hernia"])


def test_duplicate_images_and_missing_patient_ids(tmp_path: Path) -> None:
    row = ["a.png", "p1", "s1", "M", 1, "F", "PA", *_labels_row()]
    root = _gxs(tmp_path / "dup", [row, ["b.png", *row[1:]], list(row)])
    with pytest.raises(DataError, match=r"duplicate image name\(s\) 'a.png' at line 2, line 4"):
        GrandXRaySlam(root)
    root = _gxs(tmp_path / "pid", [row, ["b.png", " ", *row[2:]]])
    with pytest.raises(DataError, match="missing patient id at line 3"):
        GrandXRaySlam(root)


def test_bad_options_and_exclude_needs_report_dir(gxs_root: Path) -> None:
    with pytest.raises(DataError, match="unknown option.*frontal"):
        GrandXRaySlam(gxs_root, frontal=True)
    with pytest.raises(DataError, match="unknown uncertainty policy"):
        GrandXRaySlam(gxs_root, uncertain="maybe")
    with pytest.raises(DataError, match="requires report_dir"):
        GrandXRaySlam(gxs_root, on_bad_image="exclude")
    with pytest.raises(DataError, match="no CSV found"):
        GrandXRaySlam(gxs_root / "images")


def test_check_dataset_options_names_the_key() -> None:
    from cxrkit.data.datasets import check_dataset_options, dataset_option_names
    from cxrkit.utils.params import ConfigError

    check_dataset_options("gxs", {"uncertain": "ones", "blank": "nan", "csv": "train.csv", "images": "img"})
    check_dataset_options("chexpert", {"frontal_only": True, "workers": 2})
    assert "labeler" in dataset_option_names("mimic") and "labeler" not in dataset_option_names("gxs")
    with pytest.raises(ConfigError, match=r"dataset_options.uncertian: not an option of dataset 'gxs' "
                                          r"\(did you mean 'uncertain'\?\)"):
        check_dataset_options("gxs", {"uncertian": "ones"})
    with pytest.raises(ConfigError, match=r"dataset_options.frontal_only: not an option of dataset 'gxs'"):
        check_dataset_options("gxs", {"frontal_only": True})
    for key, where in (("on_bad_image", "train.on_bad_image"), ("labels", "train.labels"), ("root", "'data'")):
        with pytest.raises(ConfigError, match=rf"dataset_options.{key}: set by .*{where}"):
            check_dataset_options("gxs", {key: "x"})
    with pytest.raises(ConfigError, match="dataset: unknown dataset 'chexpret'"):
        check_dataset_options("chexpret", {})


def test_training_refuses_on_bad_image_given_twice(tmp_path: Path, monkeypatch) -> None:
    """on_bad_image in dataset_options as well as the run's own parameter: a ConfigError naming
    the key when the parameters are read, before any data is (it used to be a TypeError from the
    loader call)."""
    import cxrkit.training.loop as T
    from cxrkit.training.config import TrainConfig
    from cxrkit.utils.params import ConfigError, from_dict

    values = {"data": str(tmp_path / "not-read"), "on_bad_image": "exclude",
              "dataset_options": {"on_bad_image": "exclude"}, "out": str(tmp_path / "run")}
    match = r"dataset_options.on_bad_image: set by 'on_bad_image'"
    with pytest.raises(ConfigError, match=match):
        from_dict(TrainConfig, values)
    monkeypatch.setattr(T, "load_fold", lambda *a, **k: pytest.fail("data was read"))
    with pytest.raises(ConfigError, match=match):
        T.train(TrainConfig(**values))


# ----------------------------------------------------------------------------- CheXpert


@pytest.mark.parametrize("as_parent", [False, True])
def test_chexpert_table_and_path_resolution(tmp_path: Path, as_parent: bool) -> None:
    ds_dir = _chexpert(tmp_path)
    if as_parent:  # root = parent: the CSV is found under CheXpert-v1.0*/, paths join directly
        ds = CheXpert(tmp_path)
    else:  # root = the dataset folder itself: the leading folder is dropped
        ds = CheXpert(ds_dir)
    t = ds.table
    assert t["image"].iloc[0] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert t["path"].iloc[0] == str(
        (ds_dir / "train/patient00001/study1/view1_frontal.jpg").resolve()
    )
    assert t["patient_id"].tolist() == ["patient00001", "patient00001", "patient00002"]
    assert t["study"].tolist() == ["study1", "study1", "study2"]
    assert t["view"].tolist() == ["AP", "LATERAL", "PA"]
    assert t["sex"].tolist() == ["Female", "Female", "Male"]


@pytest.mark.parametrize(
    ("uncertain", "atelectasis", "edema"),
    [
        ("ones", [1, 1, 0], [1, 1, 0]),
        ("zeros", [0, 1, 0], [1, 0, 0]),
        ("ignore", [np.nan, 1, 0], [1, np.nan, 0]),
        ({"Atelectasis": "ones", "default": "zeros"}, [1, 1, 0], [1, 0, 0]),
        ({"Atelectasis": "zeros"}, [0, 1, 0], [1, np.nan, 0]),  # others: ignore
    ],
)
def test_chexpert_uncertainty_policies(
    tmp_path: Path, uncertain: object, atelectasis: list, edema: list
) -> None:
    t = CheXpert(_chexpert(tmp_path), uncertain=uncertain).table
    assert all(map(_nan_eq, t["Atelectasis"].tolist(), [float(v) for v in atelectasis]))
    assert all(map(_nan_eq, t["Edema"].tolist(), [float(v) for v in edema]))


def test_chexpert_blank_policies_and_frontal_only(tmp_path: Path) -> None:
    root = _chexpert(tmp_path)
    t = CheXpert(root).table  # blank -> zeros by default, -1 -> NaN
    assert all(map(_nan_eq, t["Pleural Effusion"].tolist(), [0.0, 0.0, math.nan]))
    assert t["Edema"].iloc[2] == 0.0
    t = CheXpert(root, blank="nan", uncertain="ones").table
    assert all(map(_nan_eq, t["Pleural Effusion"].tolist(), [math.nan, math.nan, 1.0]))
    t = CheXpert(root, frontal_only=True).table
    assert t["view"].tolist() == ["AP", "PA"] and isinstance(t.index, pd.RangeIndex)


def test_chexpert_policy_errors(tmp_path: Path) -> None:
    root = _chexpert(tmp_path)
    with pytest.raises(DataError, match="not among the labels"):
        CheXpert(root, uncertain={"Hernia": "ones"})
    with pytest.raises(DataError, match="unknown blank policy"):
        CheXpert(root, blank="ones")


def test_chexpert_unparsable_path(tmp_path: Path) -> None:
    _csv(tmp_path / "train.csv", ["Path", *LABELS], [["train/x/view1.jpg", *_labels_row()]])
    with pytest.raises(DataError, match="patientNNNNN.*line 2: 'train/x/view1.jpg'"):
        CheXpert(tmp_path, check_images=False)


# ----------------------------------------------------------------------------- NIH


def test_nih_labels_synonyms_and_split(tmp_path: Path) -> None:
    root = _nih(tmp_path)
    ds = NIHChestXray14(root)
    t = ds.table
    assert list(t.columns) == [
        "image",
        "path",
        "patient_id",
        "study",
        "view",
        "sex",
        "age",
        "official_split",
        *NIH_LABELS,
        "No Finding",
    ]
    assert t["image"].tolist() == [
        "00000001_000.png",
        "00000001_001.png",
        "00000002_000.png",
        "00000002_001.png",
    ]
    assert t["path"].iloc[1] == str(root / "images_002" / "images" / "00000001_001.png")
    assert t.loc[0, ["Pleural Effusion", "Pleural Thickening", "Mass"]].tolist() == [1.0, 1.0, 0.0]
    assert t.loc[1, "No Finding"] == 1.0 and t.loc[1, list(NIH_LABELS)].sum() == 0
    assert t.loc[2, ["Mass", "Nodule", "Hernia"]].tolist() == [1.0, 1.0, 1.0]
    assert not np.isnan(label_matrix(t)).any()
    assert t["official_split"].tolist() == ["train_val", "train_val", "train_val", "test"]
    assert t["patient_id"].tolist() == ["1", "1", "2", "2"] and t["study"].tolist() == [
        "0",
        "1",
        "0",
        "1",
    ]
    assert t["view"].tolist() == ["AP", "PA", "AP", "PA"] and t["age"].tolist() == [30, 31, 32, 33]


def test_nih_without_split_files(tmp_path: Path) -> None:
    assert "official_split" not in NIHChestXray14(_nih(tmp_path, splits=False)).table.columns


def test_nih_unknown_finding_names_rows(tmp_path: Path) -> None:
    root = _nih(tmp_path, findings=("Mass", "Effusion|Pneumonitis", "No Finding", "Cardiomegaly"))
    with pytest.raises(DataError) as e:
        NIHChestXray14(root)
    msg = str(e.value)
    assert "Data_Entry_2017_v2020.csv" in msg and "'Pneumonitis'" in msg and "line 3" in msg


def test_nih_split_naming_unknown_image(tmp_path: Path) -> None:
    root = _nih(tmp_path)
    (root / "test_list.txt").write_text("00000002_001.png\n99999999_000.png\n")
    with pytest.raises(DataError, match=r"test_list.txt: 1 image\(s\) not in .*99999999_000.png"):
        NIHChestXray14(root)


# ----------------------------------------------------------------------------- MIMIC


def test_mimic_join_paths_and_split(tmp_path: Path) -> None:
    root = _mimic(tmp_path)
    t = MIMICCXRJPG(root).table
    assert t["image"].tolist()[0] == "files/p10/p10000032/s50414267/d1.jpg"
    assert t["path"].iloc[3] == str(root.resolve() / "files/p11/p11000011/s56699142/d4.jpg")
    assert t["patient_id"].tolist() == ["10000032"] * 3 + ["11000011"]
    assert t["study"].tolist() == ["50414267", "50414267", "53189527", "56699142"]
    assert t["view"].tolist()[:3] == ["PA", "LATERAL", "AP"] and pd.isna(t["view"].iloc[3])
    assert t["official_split"].tolist() == ["train", "train", "validate", "test"]
    assert t["Edema"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert all(map(_nan_eq, t["Atelectasis"].tolist(), [math.nan, math.nan, 0.0, 0.0]))
    assert t.attrs["source"].endswith("mimic-cxr-2.0.0-chexpert.csv.gz")


def test_mimic_negbio_plain_csv_and_unlabelled_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _mimic(tmp_path, MIMIC_DICOMS + [["d5", "12000000", "59999999", "PA", "train"]])
    (root / "mimic-cxr-2.0.0-chexpert.csv.gz").rename(root / "mimic-cxr-2.0.0-negbio.csv")
    (root / "mimic-cxr-2.0.0-negbio.csv").write_bytes(
        gzip.decompress((root / "mimic-cxr-2.0.0-negbio.csv").read_bytes())
    )
    with pytest.raises(DataError, match="no CSV found"):
        MIMICCXRJPG(root)
    with caplog.at_level(logging.WARNING, logger="cxrkit.datasets"):
        t = MIMICCXRJPG(root, labeler="negbio", uncertain="zeros").table
    assert "dropped 1 image(s)" in caplog.text and "d5" in caplog.text
    assert len(t) == 4 and t["Atelectasis"].tolist()[:2] == [0.0, 0.0]


def test_mimic_bad_ids_and_split(tmp_path: Path) -> None:
    root = _mimic(tmp_path)
    _csv(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "split"],
        [["d1", "train"], ["zz", "test"]],
    )
    with pytest.raises(DataError, match="split.csv.gz: dicom_id.*line 3: 'zz'"):
        MIMICCXRJPG(root)
    _csv(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz",
        ["subject_id", "study_id", *LABELS],
        MIMIC_STUDIES + [["1e7", "5", *_labels_row()]],
    )
    with pytest.raises(DataError, match="'subject_id' must be digits, at line 5: '1e7'"):
        MIMICCXRJPG(root)


# ----------------------------------------------------------------------------- images


def test_check_images_reasons(tmp_path: Path) -> None:
    good_png, good_jpg = _img(tmp_path / "g.png"), _img(tmp_path / "g.jpg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all" * 10)
    cut = {}
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        data = _image_bytes(fmt, size=64)
        cut[fmt] = tmp_path / f"cut.{ext}"
        cut[fmt].write_bytes(data[: len(data) // 2])
    paths = [good_png, tmp_path / "missing.png", empty, cut["PNG"], good_jpg, cut["JPEG"], garbage]
    bad = check_images([str(p) for p in paths], workers=2)
    assert list(bad.columns) == ["path", "reason"]
    reasons = dict(zip(bad["path"], bad["reason"], strict=True))
    assert str(good_png) not in reasons and str(good_jpg) not in reasons
    assert reasons[str(tmp_path / "missing.png")] == "missing"
    assert reasons[str(empty)] == "empty file (0 bytes)"
    assert reasons[str(cut["PNG"])] == "truncated" and reasons[str(cut["JPEG"])] == "truncated"
    assert reasons[str(garbage)].startswith("cannot decode:")
    assert check_images([str(good_png)]).empty


def test_check_images_refuses_when_truncated_loading_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="LOAD_TRUNCATED_IMAGES"):
        check_images([str(_img(tmp_path / "a.png"))])


def test_bad_images_error_names_files(gxs_root: Path) -> None:
    (gxs_root / "images" / "b.png").write_bytes(b"")
    (gxs_root / "images" / "c.png").unlink()
    with pytest.raises(DataError) as e:
        GrandXRaySlam(gxs_root)
    msg = str(e.value)
    assert (
        "2 of 3 images" in msg
        and "b.png (empty file (0 bytes))" in msg
        and "c.png (missing)" in msg
    )


def test_exclude_mode_writes_report(
    gxs_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (gxs_root / "images" / "b.png").write_bytes(b"\x89PNG garbage")
    report = tmp_path / "report"
    with caplog.at_level(logging.WARNING, logger="cxrkit.datasets"):
        ds = GrandXRaySlam(gxs_root, on_bad_image="exclude", report_dir=report)
    assert ds.table["image"].tolist() == ["a.png", "c.png"] and isinstance(
        ds.table.index, pd.RangeIndex
    )
    assert ds.excluded["image"].tolist() == ["b.png"]
    written = pd.read_csv(report / "excluded_images.csv")
    assert list(written.columns) == ["image", "path", "reason"] and written["image"].tolist() == [
        "b.png"
    ]
    assert written["reason"].iloc[0].startswith("cannot decode")
    assert "excluded 1 unusable image" in caplog.text


def test_image_directory_mismatch(gxs_root: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError) as e:
        GrandXRaySlam(gxs_root, images=tmp_path / "elsewhere")
    msg = str(e.value)
    assert "does not match" in msg and str(tmp_path / "elsewhere") in msg and "a.png" in msg


def test_load_image(tmp_path: Path) -> None:
    rgb = tmp_path / "rgb.jpg"
    Image.fromarray((RNG.random((40, 30, 3)) * 255).astype(np.uint8)).save(rgb)
    arr = load_image(rgb)
    assert arr.shape == (40, 30) and arr.dtype == np.uint8
    assert load_image(rgb, size=16).shape == (16, 16)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"xx")
    with pytest.raises(DataError, match="bad.png"):
        load_image(bad)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 4000, dtype=np.uint16)).save(deep)
    with pytest.raises(DataError, match="deep.png: every pixel of the 16-bit image has the value 4000"):
        load_image(deep)


# ----------------------------------------------------------------------------- helpers


def test_registry_and_create_dataset(gxs_root: Path) -> None:
    from cxrkit.data.datasets import MergedDataset, PadChest, VinDrCXR

    assert DATASETS == {
        "gxs": GrandXRaySlam,
        "chexpert": CheXpert,
        "nih": NIHChestXray14,
        "mimic": MIMICCXRJPG,
        "padchest": PadChest,
        "vindr": VinDrCXR,
        "merged": MergedDataset,
    }
    assert len(create_dataset("gxs", root=gxs_root)) == 3
    with pytest.raises(ValueError, match=r"unknown dataset 'cxr'.*'chexpert'"):
        create_dataset("cxr", root=gxs_root)


def test_fingerprint_stable_and_sensitive(gxs_root: Path) -> None:
    t = GrandXRaySlam(gxs_root).table
    fp = fingerprint(t)
    assert fp == fingerprint(GrandXRaySlam(gxs_root).table) and len(fp) == 16
    changed = t.copy()
    changed.loc[0, "Edema"] = np.nan
    assert fingerprint(changed) != fp
    changed = t.copy()
    changed.loc[0, "patient_id"] = "p9"
    assert fingerprint(changed) != fp
