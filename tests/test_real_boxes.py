"""The radiologists' boxes of NIH ChestX-ray14 (``BBox_List_2017.csv``) and VinDr-CXR (the Kaggle
VinBigData ``train.csv``) read by their loaders' ``boxes()``, from the tables torchxrayvision ships
(linked into a temporary dataset folder, never copied; skipped without torchxrayvision).

Published: NIH's box list holds 984 boxes on 880 images for 8 findings (Wang et al., CVPR 2017,
Sec. 3.3); the VinBigData train.csv 36,096 boxes (67,914 rows less 31,818 "No finding"), of which
24,771 are of the 10 classes with a label of the kit's vocabulary (its class counts as published
on the challenge's data page)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrkit.data.boxes import BOX_COLUMNS, REF_COLUMNS
from cxrkit.data.datasets import create_dataset
from cxrkit.data.tables import DataError
from cxrkit.tools.real_tables import missing_reason, stage, xrv_data_dir

NIH_BOXES = "BBox_List_2017.csv.gz"
pytestmark = pytest.mark.skipif(
    missing_reason() is not None or not (xrv_data_dir() and (xrv_data_dir() / NIH_BOXES).is_file()),
    reason=str(missing_reason() or f"torchxrayvision lacks {NIH_BOXES}"))


def _nih(folder: Path, **options):
    args = stage("nih", folder)
    link = args["root"] / NIH_BOXES
    if not link.exists():
        link.symlink_to(xrv_data_dir() / NIH_BOXES)
    return create_dataset("nih", **args, **options)


def test_nih_boxes_as_published(tmp_path: Path) -> None:
    boxes = _nih(tmp_path).boxes()
    assert list(boxes.columns) == [*BOX_COLUMNS, *REF_COLUMNS]
    assert len(boxes) == 984 and boxes["image"].nunique() == 880 and set(boxes["source"]) == {"nih"}
    assert boxes["label"].value_counts().to_dict() == {
        "Atelectasis": 180, "Pleural Effusion": 153, "Cardiomegaly": 146, "Infiltration": 123, "Pneumonia": 120,
        "Pneumothorax": 98, "Mass": 85, "Nodule": 79}  # the list's Effusion and Infiltrate, in the vocabulary
    first = boxes.iloc[0]  # 00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661
    assert (first["image"], first["label"]) == ("00013118_008.png", "Atelectasis")
    assert first["x0"] == pytest.approx(225.084745762712) and first["x1"] == pytest.approx(225.084745762712 + 86.7796610169491)
    assert first["y0"] == pytest.approx(547.019216763771) and first["y1"] == pytest.approx(547.019216763771 + 79.1864406779661)
    assert (boxes[["x0", "y0"]] >= 0).all().all() and (boxes[["x1", "y1"]] <= 1024 + 1).all().all()


def test_nih_boxes_follow_the_labels_asked_for(tmp_path: Path) -> None:
    boxes = _nih(tmp_path, labels=["Cardiomegaly", "Nodule"]).boxes()
    assert boxes["label"].value_counts().to_dict() == {"Cardiomegaly": 146, "Nodule": 79}


def test_nih_without_its_box_list_says_so(tmp_path: Path) -> None:
    ds = create_dataset("nih", **stage("nih", tmp_path / "plain"))
    with pytest.raises(DataError, match="no box list .*BBox_List_2017.csv"):
        ds.boxes()


def test_vindr_boxes_one_row_per_reader(tmp_path: Path) -> None:
    ds = create_dataset("vindr", **stage("vindr", tmp_path))
    boxes = ds.boxes()
    assert list(boxes.columns) == [*BOX_COLUMNS, *REF_COLUMNS] and len(boxes) == 24771
    assert boxes["label"].value_counts().to_dict() == {
        "Cardiomegaly": 5427, "Pleural Thickening": 4842, "Fibrosis": 4655, "Lung Lesion": 2580, "Lung Opacity": 2483,
        "Pleural Effusion": 2476, "Infiltration": 1247, "Consolidation": 556, "Atelectasis": 279, "Pneumothorax": 226}
    assert boxes["source"].str.fullmatch(r"vindr R\d+").all()
    row = boxes.iloc[0]  # 9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R10,691.0,1375.0,1653.0,1831.0
    assert (row["image"], row["label"], row["source"]) == ("9a5094b2563a1ef3ff50dc5c7ff71345", "Cardiomegaly", "vindr R10")
    assert [row[c] for c in ("x0", "y0", "x1", "y1")] == [691.0, 1375.0, 1653.0, 1831.0]
    assert set(boxes["image"]) <= set(ds.table["image"]) and set(boxes["label"]) <= set(ds.labels)
