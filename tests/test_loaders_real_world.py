"""PadChest and VinDr-CXR loaders, the ``views`` option of every loader, CheXpert's ages of 0 and
valid.csv (small hand-made tables; the real label tables are read in tests/test_real_tables.py)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_datasets import _chexpert, _csv, _gxs, _img, _labels_row, _mimic, _nan_eq, _nih

from cxrkit.data.datasets import (
    MIMICCXRJPG,
    CheXpert,
    DataError,
    GrandXRaySlam,
    NIHChestXray14,
    PadChest,
    VinDrCXR,
    check_dataset_options,
)
from cxrkit.data.datasets.padchest_terms import PADCHEST_KNOWN_BAD, PADCHEST_TERMS
from cxrkit.data.labels import LABELS
from cxrkit.utils.params import ConfigError


@pytest.fixture
def gxs_root(tmp_path: Path) -> Path:
    """The three-image Grand X-Ray Slam folder of tests/test_datasets.py."""
    return _gxs(tmp_path / "gxs")

# ----------------------------------------------------------------------------- PadChest

PC_COLS = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
           "Projection", "Labels"]
KNOWN = next(iter(PADCHEST_KNOWN_BAD))
PC_ROWS = [  # ImageID, ImageDir, date, study, patient, birth, sex, projection, Labels
    ["a.png", "0", "20140915", "s1", "p1", "1930.0", "F", "PA", "['normal']"],
    ["b.png", "0", "20140915", "s1", "p1", "1930.0", "F", "L", "['cardiomegaly', ' pleural effusion', 'NSG tube']"],
    ["c.png", "1", "20150101", "s2", "p2", "", "M", "AP_horizontal", "['pseudonodule', 'pericardial effusion']"],
    ["d.png", "1", "20150101", "s3", "p3", "1950.0", "nan", "AP", "['unchanged']"],
    ["e.png", "2", "20160101", "s4", "p4", "None", "O", "UNK", "nan"],
    ["f.png", "2", "20160101", "s5", "p5", "1960.0", "M", "COSTAL", "['normal', 'NSG tube', '']"],
    [KNOWN, "3", "20160101", "s6", "p6", "1960.0", "M", "PA", "['nodule', 'callus rib fracture']"],
]


def _padchest(tmp_path: Path, rows: list[list[str]] | None = None, flat: bool = False) -> Path:
    root = tmp_path / "padchest"
    rows = rows or PC_ROWS
    _csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", PC_COLS, rows)
    for r in rows:
        _img(root / r[0] if flat else root / r[1] / r[0])
    return root


def test_padchest_table_terms_views_and_ages(tmp_path: Path) -> None:
    ds = PadChest(_padchest(tmp_path))
    t = ds.table
    assert t.columns[:7].tolist() == ["image", "path", "patient_id", "study", "view", "sex", "age"]
    assert ds.labels == list(PadChest.all_labels) and "Lung Opacity" not in ds.labels and "Mass" in ds.labels
    assert t["view"].tolist()[:4] == ["PA", "LATERAL", "AP_SUPINE", "AP"] and pd.isna(t["view"].iloc[4])
    assert t["path"].iloc[2] == str(ds.root / "1" / "c.png")
    assert t["age"].tolist()[:2] == [84.0, 84.0] and math.isnan(t["age"].iloc[2]) and math.isnan(t["age"].iloc[4])
    assert t["sex"].tolist()[:3] == ["F", "F", "M"] and pd.isna(t["sex"].iloc[3])
    row = t.set_index("image")
    assert row.loc["a.png", "No Finding"] == 1.0 and row.loc["a.png", ds.labels].sum() == 1.0
    assert row.loc["b.png", ["Cardiomegaly", "Pleural Effusion", "Support Devices", "No Finding"]].tolist() == \
        [1.0, 1.0, 1.0, 0.0]
    assert row.loc["c.png", ds.labels].sum() == 0  # a nodule mimic and a pericardial effusion map to nothing
    assert row.loc[["d.png", "e.png"], ds.labels].isna().all().all()  # 'unchanged', empty cell: every label unknown
    assert row.loc["f.png", "No Finding"] == 1.0 and row.loc["f.png", "Support Devices"] == 1.0
    assert row.loc[KNOWN, ["Nodule", "Lung Lesion", "Fracture", "Mass"]].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert ds.quality["labels"] == {"images": 7, "no_labels_cell": 1, "only_uninformative_terms": 1,
                                    "all_labels_nan": 2}
    assert ds.quality["projection_unknown"] == 1


def test_padchest_flat_layout_and_views(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _padchest(tmp_path, flat=True)
    with caplog.at_level(logging.INFO, logger="cxrkit.datasets"):
        ds = PadChest(root, views=["PA"])
    assert ds.table["image"].tolist() == ["a.png", KNOWN] and ds.table["path"].iloc[0] == str(ds.root / "a.png")
    assert ds.quality["views"] == {"views": ["PA"], "kept": 2, "dropped": 5, "dropped_views": {
        "LATERAL": 1, "AP_SUPINE": 1, "AP": 1, "(not recorded)": 1, "COSTAL": 1}}
    assert "views ['PA'] kept 2 of 7 images, dropped 5" in caplog.text
    assert PadChest(root, views="frontal", check_images=False).table["view"].tolist() == ["PA", "AP_SUPINE", "AP", "PA"]
    assert len(PadChest(root, views=["pa", "AP_SUPINE"], check_images=False)) == 3
    with pytest.raises(ConfigError, match=r"padchest.views: 'LL' is not a view dataset 'padchest' records"):
        PadChest(root, views=["LL"])


def test_padchest_malformed_labels_and_projection_named(tmp_path: Path) -> None:
    rows = [r.copy() for r in PC_ROWS]
    rows[2][-1] = "['cardiomegaly'"
    rows[4][-1] = "['a', 1]"
    with pytest.raises(DataError, match=r"'Labels' is not a list of terms .* line 4: .*line 6: \"\['a', 1\]\""):
        PadChest(_padchest(tmp_path, rows), check_images=False)
    rows = [r.copy() for r in PC_ROWS]
    rows[1][7] = "LATERAL_ODD"
    with pytest.raises(DataError, match=r"unknown 'Projection' .* line 3: 'LATERAL_ODD'"):
        PadChest(_padchest(tmp_path / "b", rows), check_images=False)


def test_padchest_known_unreadable_images(tmp_path: Path) -> None:
    root = _padchest(tmp_path)
    PadChest(root)  # the known name decodes here: nothing to refuse
    known_file = root / "3" / KNOWN
    known_file.write_bytes(known_file.read_bytes()[:40])  # truncated, as in the release
    with pytest.raises(DataError, match=r"1 image\(s\) known to be unreadable in the public release .*"
                                        r"listed by torchxrayvision's PC_Dataset"):
        PadChest(root)
    ds = PadChest(root, on_bad_image="exclude", report_dir=tmp_path / "report")
    assert len(ds.table) == 6 and ds.excluded["image"].tolist() == [KNOWN]
    assert "torchxrayvision's PC_Dataset" in ds.excluded["reason"].iloc[0]
    assert "torchxrayvision" in pd.read_csv(tmp_path / "report" / "excluded_images.csv")["reason"].iloc[0]


def test_padchest_terms_are_exact_and_documented() -> None:
    for lab, terms in PADCHEST_TERMS.items():
        assert lab in PadChest.all_labels and terms and len(set(terms)) == len(terms)
    assert "pseudonodule" not in PADCHEST_TERMS["Nodule"] and "subcutaneous emphysema" not in PADCHEST_TERMS["Emphysema"]
    assert len(PADCHEST_KNOWN_BAD) == 21


# ----------------------------------------------------------------------------- VinDr-CXR

FINDINGS = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
            "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
            "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
            "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
            "Other diseases", "No finding"]


def _reader(image: str, rad: str | None, *positive: str) -> list[object]:
    row = [1 if f in positive else 0 for f in FINDINGS]
    return [image, *([rad] if rad else []), *row]


def _vindr(tmp_path: Path, train: list[list[object]] | None = None) -> Path:
    root = tmp_path / "vindr"
    train = train or [
        _reader("img1", "R1", "Cardiomegaly"), _reader("img1", "R2", "Cardiomegaly"), _reader("img1", "R3", "No finding"),
        _reader("img2", "R1", "Rib fracture"), _reader("img2", "R4", "No finding"), _reader("img2", "R5", "No finding"),
        _reader("img3", "R2", "No finding"), _reader("img3", "R3", "No finding"), _reader("img3", "R4", "No finding"),
    ]
    _csv(root / "annotations" / "image_labels_train.csv", ["image_id", "rad_id", *FINDINGS], train)
    _csv(root / "annotations" / "image_labels_test.csv", ["image_id", *FINDINGS],
         [_reader("t1", None, "Nodule/Mass", "Pneumonia")])
    return root


def test_vindr_official_format_and_aggregation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _vindr(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cxrkit.datasets"):
        ds = VinDrCXR(root, check_images=False)
    assert "no patient ids" in caplog.text and "leakage across the images of one patient cannot be checked" in caplog.text
    t = ds.table.set_index("image")
    assert t.index.tolist() == ["img1", "img2", "img3", "t1"] and (t["patient_id"] == t.index).all()
    assert t["official_split"].tolist() == ["train"] * 3 + ["test"] and t["view"].isna().all()
    assert t.loc["img1", "path"] == str(ds.root / "train" / "img1.dicom")
    assert t.loc["t1", "path"] == str(ds.root / "test" / "t1.dicom")
    assert ds.labels == list(VinDrCXR.all_labels) and "Lung Lesion" in ds.labels
    assert t.loc["img1", ["Cardiomegaly", "No Finding"]].tolist() == [1.0, 0.0]  # 2 of 3
    assert t.loc["img2", ["Fracture", "No Finding"]].tolist() == [0.0, 1.0]
    assert t.loc["t1", ["Lung Lesion", "Pneumonia", "No Finding"]].tolist() == [1.0, 1.0, 0.0]
    assert ds.quality["readers"]["train"]["readers_per_image"] == {3: 3} and ds.quality["readers"]["test"]["reads"] == 1
    any_ = VinDrCXR(root, check_images=False, aggregation="any").table.set_index("image")
    assert any_.loc["img2", ["Fracture", "No Finding"]].tolist() == [1.0, 0.0]  # No Finding needs every reader
    assert any_.loc["img3", "No Finding"] == 1.0
    cons = VinDrCXR(root, check_images=False, aggregation="consensus").table.set_index("image")
    assert math.isnan(cons.loc["img1", "Cardiomegaly"]) and cons.loc["img3", "Cardiomegaly"] == 0.0
    assert cons.loc["t1", "Lung Lesion"] == 1.0  # one consensus row: the same under every policy


def test_vindr_quality_counts_reader_disagreement_and_what_each_policy_makes_nan(tmp_path: Path) -> None:
    """img1: 2 of 3 readers mark Cardiomegaly (the third: No finding); img2: 1 of 3 a rib fracture;
    img4: two readers, one Cardiomegaly, one No finding (a tie); img3 and the test image agree."""
    train = [
        _reader("img1", "R1", "Cardiomegaly"), _reader("img1", "R2", "Cardiomegaly"), _reader("img1", "R3", "No finding"),
        _reader("img2", "R1", "Rib fracture"), _reader("img2", "R4", "No finding"), _reader("img2", "R5", "No finding"),
        _reader("img3", "R2", "No finding"), _reader("img3", "R3", "No finding"), _reader("img3", "R4", "No finding"),
        _reader("img4", "R1", "Cardiomegaly"), _reader("img4", "R2", "No finding"),
    ]
    root = _vindr(tmp_path, train)
    by_policy = {p: VinDrCXR(root, check_images=False, aggregation=p) for p in ("majority", "any", "consensus")}
    for policy, ds in by_policy.items():
        readers = ds.quality["readers"]
        assert readers["train"]["aggregation"] == policy
        assert readers["train"]["disagreement"] == {"images": 3, "values": 6}  # (Cardiomegaly or Fracture, No Finding) x 3
        assert readers["train"]["made_nan"] == {"any": 0, "majority": 2, "consensus": 6}
        assert readers["test"]["disagreement"] == {"images": 0, "values": 0}  # one consensus row
        assert readers["test"]["made_nan"] == {"any": 0, "majority": 0, "consensus": 0}
        labels = ds.labels
        made_nan = int(ds.table.loc[ds.table["official_split"] == "train", labels].isna().to_numpy().sum())
        assert made_nan == readers["train"]["made_nan"][policy]  # every label is annotated by the file
    assert by_policy["majority"].quality["readers"]["train"]["made_nan_labels"] == {"Cardiomegaly": 1, "No Finding": 1}
    assert by_policy["consensus"].quality["readers"]["train"]["made_nan_labels"] == {
        "Cardiomegaly": 2, "Fracture": 1, "No Finding": 3}
    assert by_policy["any"].quality["readers"]["train"]["made_nan_labels"] == {}


def test_vindr_box_format(tmp_path: Path) -> None:
    root = tmp_path / "kaggle"
    cols = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
    rows = [["i1", "Cardiomegaly", 3, "R1", 1, 1, 2, 2], ["i1", "Cardiomegaly", 3, "R1", 3, 3, 4, 4],
            ["i1", "Nodule/Mass", 8, "R2", 1, 1, 2, 2], ["i1", "No finding", 14, "R3", "", "", "", ""],
            ["i2", "No finding", 14, "R1", "", "", "", ""], ["i2", "No finding", 14, "R2", "", "", "", ""],
            ["i2", "No finding", 14, "R3", "", "", "", ""]]
    _csv(root / "train.csv", cols, rows)
    _img(root / "train" / "i1.dicom"), _img(root / "train" / "i2.dicom")
    ds = VinDrCXR(root, check_images=False, aggregation="any")
    t = ds.table.set_index("image")
    assert ds.quality["not_annotated"] == ["Edema", "Fracture", "Pneumonia", "Emphysema"]
    assert "Edema" not in ds.labels and "Cardiomegaly" in ds.labels  # the Kaggle classes only
    assert t.loc["i1", ["Cardiomegaly", "Lung Lesion", "No Finding"]].tolist() == [1.0, 1.0, 0.0]
    assert t.loc["i2", "No Finding"] == 1.0 and t.loc["i2", "Cardiomegaly"] == 0.0
    asked = VinDrCXR(root, check_images=False, labels=["Edema", "Cardiomegaly"]).table
    assert asked["Edema"].isna().all() and asked["Cardiomegaly"].tolist() == [0.0, 0.0]  # one reader of three
    rows.append(["i2", "Pneumothorax", 12, "R3", 1, 1, 2, 2])
    _csv(root / "train.csv", cols, rows)
    with pytest.raises(DataError, match=r"both 'No finding' and a finding for image\(s\) i2 by R3"):
        VinDrCXR(root, check_images=False)
    rows[-1][1] = "Pneumothorx"
    _csv(root / "train.csv", cols, rows)
    with pytest.raises(DataError, match=r"unknown 'class_name' at line 9: 'Pneumothorx'"):
        VinDrCXR(root, check_images=False)


def test_vindr_refusals(tmp_path: Path) -> None:
    root = _vindr(tmp_path)
    with pytest.raises(ConfigError, match="vindr.views: dataset 'vindr' records no view per image"):
        VinDrCXR(root, views=["PA"])
    with pytest.raises(ConfigError, match=r"dataset_options.aggregation: 'vote' is not one of"):
        check_dataset_options("vindr", {"aggregation": "vote"})
    with pytest.raises(ConfigError, match=r"dataset_options.views: dataset 'vindr' records no view"):
        check_dataset_options("vindr", {"views": "frontal"})
    bad = [_reader("img1", "R1"), _reader("img1", "R1")]
    with pytest.raises(DataError, match=r"image_id and rad_id on several rows at line 2, line 3"):
        VinDrCXR(_vindr(tmp_path / "dup", bad), check_images=False)
    odd = [_reader("img1", "R1")]
    odd[0][5] = 2
    with pytest.raises(DataError, match=r"invalid label values .*column 'Cardiomegaly': line 2: '2'"):
        VinDrCXR(_vindr(tmp_path / "odd", odd), check_images=False)
    root = tmp_path / "typo"
    _csv(root / "image_labels_train.csv", ["image_id", "rad_id", "Cardiomegally", "No finding"], [["i", "R1", 1, 0]])
    with pytest.raises(DataError, match=r"unknown column\(s\) \['Cardiomegally'\]"):
        VinDrCXR(root, check_images=False)


# ----------------------------------------------------------------------------- views, CheXpert


def test_views_of_every_loader(tmp_path: Path, gxs_root: Path) -> None:
    nih = NIHChestXray14(_nih(tmp_path), views=["PA"])
    assert nih.table["view"].tolist() == ["PA", "PA"] and nih.quality["views"]["dropped_views"] == {"AP": 2}
    with pytest.raises(ConfigError, match=r"'LATERAL' is not a view dataset 'nih' records; its views: \['PA', 'AP'\]"):
        NIHChestXray14(_nih(tmp_path / "b"), views=["PA", "LATERAL"])
    with pytest.raises(ConfigError, match="dataset 'nih' has no lateral views"):
        check_dataset_options("nih", {"views": "lateral"})
    mimic = MIMICCXRJPG(_mimic(tmp_path), views="lateral")
    assert mimic.table["image"].str.endswith("d2.jpg").tolist() == [True]
    assert mimic.quality["views"]["dropped_views"] == {"PA": 1, "AP": 1, "(not recorded)": 1}
    assert GrandXRaySlam(gxs_root, views="frontal").table["image"].tolist() == ["a.png", "c.png"]
    chex = CheXpert(_chexpert(tmp_path), views=["PA", "AP"])
    assert chex.table["view"].tolist() == ["AP", "PA"]
    with pytest.raises(ConfigError, match="give either frontal_only or views"):
        check_dataset_options("chexpert", {"frontal_only": True, "views": "frontal"})
    with pytest.raises(ConfigError, match="dataset_options.views: '' is not a view dataset 'gxs' records"):
        check_dataset_options("gxs", {"views": ""})
    for bad in ([], [1], {"PA": 1}):
        with pytest.raises(ConfigError, match="dataset_options.views: need a view or a list"):
            check_dataset_options("gxs", {"views": bad})
    root = tmp_path / "noview"
    _csv(root / "train.csv", ["Image_name", *LABELS], [["x.png", *_labels_row()]])
    with pytest.raises(DataError, match=r"train.csv: views \['PA'\] asked for, but no image of it records a view"):
        GrandXRaySlam(root, views=["PA"], check_images=False)


def test_chexpert_age_zero_views_and_valid(tmp_path: Path) -> None:
    root = _chexpert(tmp_path)
    rows = [r.split(",") for r in (root / "train.csv").read_text().splitlines()]
    rows[1][2] = "0"  # an age of 0
    rows[3][4] = "LL"  # a frontal image whose AP/PA says left lateral
    _csv(root / "train.csv", rows[0], rows[1:])
    _csv(root / "valid.csv", rows[0], [[rows[1][0].replace("train/patient00001", "valid/patient64541"), *rows[1][1:]]])
    _img(root / "valid/patient64541/study1/view1_frontal.jpg")
    ds = CheXpert(root)
    assert math.isnan(ds.table["age"].iloc[0]) and ds.quality["age_zero"] == 1
    assert ds.table["view"].tolist() == ["AP", "LATERAL", "FRONTAL"] and ds.quality["view_replaced"] == 1
    assert "official_split" not in ds.table.columns
    full = CheXpert(root, include_valid=True)
    assert full.table["official_split"].tolist() == ["train", "train", "train", "test"]
    assert full.table["patient_id"].iloc[3] == "patient64541" and full.source_files[1].name == "valid.csv"
    assert all(map(_nan_eq, full.table["Edema"].tolist(), [1.0, math.nan, 0.0, 1.0]))
    (root / "valid.csv").unlink()
    with pytest.raises(DataError, match="include_valid: no valid.csv next to"):
        CheXpert(root, include_valid=True)


def test_label_matrix_of_new_loaders_is_float_with_nan(tmp_path: Path) -> None:
    t = PadChest(_padchest(tmp_path), check_images=False).table
    assert all(t[lab].dtype == np.float64 for lab in PadChest.all_labels)
