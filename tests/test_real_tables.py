"""Each loader on its dataset's real label table, as torchxrayvision ships it (no images).

The tables are read where torchxrayvision is installed (a dev dependency), through a temporary
dataset folder that links to them (:mod:`cxrkit.tools.real_tables`); they are never copied into
the repository. Checked: the rows, patients and label counts as published, the views parsed,
patient-grouped folds of the full table with no patient crossing parts (each table's made once;
NIH's by ``make bench``'s function, on the table loaded here), and the figures ``make bench``
reports: how many patients image-level MIS puts in several parts of real CheXpert.

Published figures: NIH ChestX-ray14, 112,120 images of 30,805 patients and the per-finding
counts of NIH's release notes (Wang et al., CVPR 2017; the Kaggle "NIH Chest X-rays" page);
CheXpert, 223,414 training images of 64,540 patients (Irvin et al., AAAI 2019; the counts of
each label value are those of its train.csv); PadChest, 160,868 images of 67,625 patients and
109,931 studies in the paper (Bustos et al., Medical Image Analysis 2020), of which its label
file (PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv) lists 160,861: the 7 missing images
are absent from the release's label file, not dropped by the loader, which keeps every row;
VinDr-CXR, 15,000 training images, each read by 3 of 17 radiologists (Nguyen et al., Scientific
Data 2022; the Kaggle VinBigData train.csv), 10,606 of them "No finding" for all three.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrkit.data.datasets import create_dataset
from cxrkit.data.splits import LeakageError, check_leakage, leakage_report, make_splits
from cxrkit.tools.real_tables import missing_reason, real_table_bench, stage

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Each dataset, loaded once from its real table (check_images=False: there are no images)."""
    folder = tmp_path_factory.mktemp("real")
    cache: dict[str, object] = {}

    def load(name: str, **options: object) -> object:
        key = f"{name} {sorted(options.items())}"
        if key not in cache:
            cache[key] = create_dataset(name, **stage(name, folder), **options)
        return cache[key]

    return {"load": load}


@pytest.fixture(scope="module")
def bench(tables: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict[str, pd.DataFrame]]:
    """``make bench``'s real-table rows, on the tables loaded above, and the folds it made."""
    folds: dict[str, pd.DataFrame] = {}
    rows = real_table_bench(tmp_path_factory.mktemp("bench"), folds=folds,
                            datasets={"nih": tables["load"]("nih"), "chexpert": tables["load"]("chexpert")})
    return rows, folds


def _counts(table: pd.DataFrame, labels: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per label: (positives, negatives, unknown)."""
    return {lab: (int((table[lab] == 1).sum()), int((table[lab] == 0).sum()), int(table[lab].isna().sum()))
            for lab in labels}


def _grouped_folds_do_not_leak(table: pd.DataFrame, labels: list[str], splits: pd.DataFrame | None = None) -> None:
    """The patient-grouped folds of ``table`` (3 folds, test 0.2, seed 0; made here unless given):
    no patient in two parts, folds of equal size, test 20% of the images."""
    if splits is None:
        splits = make_splits(table, labels, n_folds=3, test_size=0.2, seed=0)
    assert len(splits) == len(table)
    check_leakage(splits)
    assert leakage_report(splits).empty
    sizes = splits.loc[splits["split"] == "train", "fold"].value_counts()
    assert len(sizes) == 3 and sizes.max() - sizes.min() <= 0.01 * len(table)
    assert abs((splits["split"] == "test").mean() - 0.2) < 0.005


NIH_POSITIVES = {"Atelectasis": 11559, "Cardiomegaly": 2776, "Pleural Effusion": 13317, "Infiltration": 19894,
                 "Mass": 5782, "Nodule": 6331, "Pneumonia": 1431, "Pneumothorax": 5302, "Consolidation": 4667,
                 "Edema": 2303, "Emphysema": 2516, "Fibrosis": 1686, "Pleural Thickening": 3385, "Hernia": 227,
                 "No Finding": 60361}


def test_nih_real_table(tables: dict) -> None:
    ds = tables["load"]("nih")
    t = ds.table
    assert len(t) == 112_120 and t["patient_id"].nunique() == 30_805 and t["image"].is_unique
    assert {lab: p for lab, (p, _, _) in _counts(t, ds.labels).items()} == NIH_POSITIVES
    assert not t[ds.labels].isna().any().any()
    assert t["view"].value_counts().to_dict() == {"PA": 67_310, "AP": 44_810}
    assert t["patient_id"].str.fullmatch(r"\d+").all() and t["image"].iloc[0] == "00000001_000.png"
    # its patient-grouped folds: test_real_table_bench (the bench makes them; they are made once)


CHEXPERT_COUNTS = {  # label: positives, negatives (0 and blank, blank: zeros), unknown (-1, ignore)
    "Atelectasis": (33376, 156299, 33739), "Cardiomegaly": (27000, 188327, 8087),
    "Consolidation": (14783, 180889, 27742), "Edema": (52246, 158184, 12984),
    "Enlarged Cardiomediastinum": (10798, 200213, 12403), "Fracture": (9040, 213732, 642),
    "Lung Lesion": (9186, 212740, 1488), "Lung Opacity": (105581, 112235, 5598), "No Finding": (22381, 201033, 0),
    "Pleural Effusion": (86187, 125599, 11628), "Pleural Other": (3523, 217238, 2653),
    "Pneumonia": (6039, 198605, 18770), "Pneumothorax": (19448, 200821, 3145), "Support Devices": (116001, 106334, 1079),
}


def test_chexpert_real_table(tables: dict) -> None:
    ds = tables["load"]("chexpert")
    t = ds.table
    assert len(t) == 223_414 and t["patient_id"].nunique() == 64_540 and t["study"].notna().all()
    assert _counts(t, ds.labels) == CHEXPERT_COUNTS
    assert t["view"].value_counts().to_dict() == {"AP": 161_590, "LATERAL": 32_387, "PA": 29_420, "FRONTAL": 17}
    assert ds.quality == {"age_zero": 3, "view_replaced": 17} and t["age"].isna().sum() == 3


@pytest.mark.slow
def test_chexpert_real_policies_and_views(tables: dict) -> None:
    ones = tables["load"]("chexpert", uncertain="ones", blank="nan")
    assert _counts(ones.table, ["Atelectasis"]) == {"Atelectasis": (33376 + 33739, 1328, 154971)}
    frontal = tables["load"]("chexpert", views="frontal")
    assert len(frontal.table) == 191_027 and frontal.quality["views"]["dropped_views"] == {"LATERAL": 32_387}


@pytest.mark.slow
def test_chexpert_real_folds(tables: dict) -> None:
    ds = tables["load"]("chexpert")
    _grouped_folds_do_not_leak(ds.table, ds.labels)


def test_padchest_real_table(tables: dict) -> None:
    ds = tables["load"]("padchest")
    t = ds.table
    assert len(t) == 160_861 and t["patient_id"].nunique() == 67_625 and t["study"].nunique() == 109_931
    assert t["view"].value_counts(dropna=False).to_dict() == {
        "PA": 91_728, "LATERAL": 49_579, "AP_SUPINE": 14_346, "AP": 4_559, "COSTAL": 630, "EXCLUDE": 11, np.nan: 8}
    assert ds.quality["labels"] == {"images": 160_861, "no_labels_cell": 103, "only_uninformative_terms": 6_199,
                                    "all_labels_nan": 6_302}
    counts = _counts(t, ds.labels)
    assert all(n == 6_302 for _, _, n in counts.values())
    assert {lab: counts[lab][0] for lab in ("Cardiomegaly", "Pleural Effusion", "No Finding", "Pneumothorax",
                                            "Nodule", "Hernia")} == {
        "Cardiomegaly": 15_022, "Pleural Effusion": 9_986, "No Finding": 50_408, "Pneumothorax": 573,
        "Nodule": 4_072, "Hernia": 2_363}
    known = t["image"].isin(ds.known_bad)
    assert known.sum() == 21  # kept without images to check; refused or excluded by the image check


@pytest.mark.slow
def test_padchest_real_folds_and_views(tables: dict) -> None:  # ~30 s: the local search makes ~225 swap rounds
    ds = tables["load"]("padchest")
    _grouped_folds_do_not_leak(ds.table, ds.labels)
    pa = tables["load"]("padchest", views=["PA"])
    assert len(pa.table) == 91_728 and pa.quality["views"]["dropped"] == 160_861 - 91_728


def test_vindr_real_table(tables: dict) -> None:
    ds = tables["load"]("vindr")
    t = ds.table
    assert len(t) == 15_000 and (t["patient_id"] == t["image"]).all() and (t["official_split"] == "train").all()
    assert ds.quality["readers"]["train"] == {
        "file": "vinbigdata-train.csv.gz", "images": 15_000, "reads": 45_000, "readers_per_image": {3: 15_000},
        "aggregation": "majority", "disagreement": {"images": 3_278, "values": 7_059},
        "made_nan": {"any": 0, "majority": 0, "consensus": 7_059}, "made_nan_labels": {}}  # 3 readers: no tie
    assert ds.quality["not_annotated"] == ["Edema", "Fracture", "Pneumonia", "Emphysema"]
    assert t["No Finding"].sum() == 10_606 and t["Cardiomegaly"].sum() == 1_817  # majority of 3
    assert t["path"].iloc[0].endswith(f"train/{t['image'].iloc[0]}.dicom")
    by_policy = {p: tables["load"]("vindr", aggregation=p).table["Cardiomegaly"] for p in ("any", "consensus")}
    assert by_policy["any"].sum() == 2_300 and by_policy["consensus"].sum() == 1_297
    assert by_policy["consensus"].isna().sum() == 1_003  # 1 or 2 of 3 readers
    assert ds.quality["readers"]["train"]["made_nan"]["consensus"] == 7_059 == sum(
        tables["load"]("vindr", aggregation="consensus").quality["readers"]["train"]["made_nan_labels"].values())
    _grouped_folds_do_not_leak(t, ds.labels)


@pytest.mark.slow
def test_real_table_bench(tables: dict, bench: tuple[list[dict], dict[str, pd.DataFrame]]) -> None:
    """``make bench``'s rows: the NIH folds (checked here: patient-grouped, no leak) and the
    patients image-level MIS leaks on real CheXpert, as the README states them."""
    rows, folds = bench
    nih_row, leak_row = rows
    assert nih_row["setting"] == "30805 patients, 112120 images, 15 labels, 3 folds + test 0.2"
    assert nih_row["seconds"] > 0 and nih_row["images/s"] == pytest.approx(112_120 / nih_row["seconds"])
    nih = tables["load"]("nih")
    _grouped_folds_do_not_leak(nih.table, nih.labels, folds["nih"])
    assert leak_row["setting"] == "64540 patients, 223414 images, 3 folds + test 0.2"
    assert (leak_row["patients_crossing"], leak_row["images_of_crossing_patients"]) == (36_861, 189_979)
    image_level = folds["chexpert"]  # the folds those figures are of
    assert image_level.attrs["group"] == "image" and len(image_level) == 223_414
    with pytest.raises(LeakageError, match=r"^36861 patient\(s\) appear in more than one fold or in both test and "
                                           r"train \(189979 images\)"):
        check_leakage(image_level)


def test_real_tables_are_linked_not_copied(tmp_path: Path) -> None:
    args = stage("nih", tmp_path)
    link = Path(args["root"]) / "Data_Entry_2017_v2020.csv.gz"
    assert link.is_symlink() and "torchxrayvision" in str(link.resolve())
