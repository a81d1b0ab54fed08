"""Tests of cxrkit.splits on small synthetic tables with several images per patient."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxrkit.splits import (
    LeakageError,
    balance_table,
    check_leakage,
    fold_indices,
    leakage_report,
    load_splits,
    make_splits,
    save_splits,
    test_indices,
)

LABS = ["Atelectasis", "Cardiomegaly", "Edema", "Pleural Effusion", "Pneumothorax"]
PREVALENCE = np.array([0.3, 0.2, 0.15, 0.25, 0.08])


def make_table(n_patients: int = 150, seed: int = 0) -> pd.DataFrame:
    """1-5 images per patient; a patient's findings recur on most of their images; 10% NaN."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        has = rng.random(len(LABS)) < PREVALENCE
        for k in range(int(rng.integers(1, 6))):
            lab = np.where(has, rng.random(len(LABS)) < 0.8, rng.random(len(LABS)) < 0.03).astype(float)
            lab[rng.random(len(LABS)) < 0.1] = np.nan
            rows.append({"image": f"p{p:04d}_{k}", "path": f"img/p{p:04d}_{k}.png",
                         "patient_id": f"p{p:04d}", "study": f"s{k}", "view": "PA",
                         **dict(zip(LABS, lab, strict=True))})
    table = pd.DataFrame(rows)
    table.attrs["labels"] = LABS
    return table


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture(scope="module")
def splits(table: pd.DataFrame) -> pd.DataFrame:
    return make_splits(table, n_folds=3, test_size=0.2, seed=0)


def part_of(splits: pd.DataFrame) -> pd.Series:
    return splits["split"] + ":" + splits["fold"].astype(str)


def test_layout(table: pd.DataFrame, splits: pd.DataFrame) -> None:
    assert list(splits.columns) == ["image", "patient_id", "split", "fold"]
    assert splits["image"].tolist() == table["image"].tolist()
    assert set(splits["split"]) == {"train", "test"}
    assert (splits.loc[splits["split"] == "test", "fold"] == -1).all()
    assert set(splits.loc[splits["split"] == "train", "fold"]) == {0, 1, 2}
    assert splits.attrs["n_folds"] == 3 and splits.attrs["group"] == "patient"


def test_patient_group_never_crosses(splits: pd.DataFrame) -> None:
    assert (splits.assign(part=part_of(splits)).groupby("patient_id")["part"].nunique() == 1).all()
    check_leakage(splits)
    assert len(leakage_report(splits)) == 0


def test_image_group_leaks_and_is_reported(table: pd.DataFrame) -> None:
    image_splits = make_splits(table, n_folds=3, test_size=0.2, seed=0, group="image")
    report = leakage_report(image_splits)
    truth = image_splits.assign(part=part_of(image_splits)).groupby("patient_id")["part"].nunique()
    assert set(report["patient_id"]) == set(truth[truth > 1].index)
    assert len(report) > 0
    summary = report.attrs["summary"]
    assert summary["patients"] == len(report)
    assert summary["images"] == int(image_splits["patient_id"].isin(report["patient_id"]).sum())
    with pytest.raises(LeakageError):
        check_leakage(image_splits)


def test_patient_level_label_balance(table: pd.DataFrame, splits: pd.DataFrame) -> None:
    # Iterative stratification of patients: per label, the positive patients of each fold are
    # within one of the even share.
    per_patient = (table[LABS] == 1).groupby(table["patient_id"]).any()
    fold = splits.groupby("patient_id")["fold"].first()
    counts = per_patient[fold >= 0].groupby(fold[fold >= 0]).sum()
    assert (counts.sub(counts.mean()).abs() <= 1).all().all(), counts


def test_image_level_label_balance_for_image_group(table: pd.DataFrame) -> None:
    image_splits = make_splits(table, n_folds=3, test_size=0.2, seed=0, group="image")
    train = image_splits["split"] == "train"
    counts = (table.loc[train, LABS] == 1).groupby(image_splits.loc[train, "fold"]).sum()
    assert (counts.sub(counts.mean()).abs() <= np.maximum(2, 0.1 * counts.mean())).all().all(), counts


def test_sizes(table: pd.DataFrame, splits: pd.DataFrame) -> None:
    assert abs((splits["split"] == "test").mean() - 0.2) < 0.04  # by images
    assert splits.loc[splits["split"] == "test", "patient_id"].nunique() == 30  # ceil(0.2 * 150)
    sizes = splits.loc[splits["split"] == "train", "fold"].value_counts()
    assert (sizes / sizes.mean() - 1).abs().max() < 0.2


def test_deterministic_and_seeded(table: pd.DataFrame, splits: pd.DataFrame) -> None:
    again = make_splits(table, n_folds=3, test_size=0.2, seed=0)
    pd.testing.assert_frame_equal(splits, again)
    other = make_splits(table, n_folds=3, test_size=0.2, seed=1)
    assert (other["fold"] != splits["fold"]).any()
    assert (other["split"] != splits["split"]).any()


@pytest.mark.parametrize("group", ["patient", "image"])
def test_independent_of_row_order(table: pd.DataFrame, group: str) -> None:
    shuffled = table.sample(frac=1, random_state=3).reset_index(drop=True)
    shuffled.attrs["labels"] = LABS
    a = make_splits(table, seed=5, group=group).set_index("image")
    b = make_splits(shuffled, seed=5, group=group)
    assert b["image"].tolist() == shuffled["image"].tolist()
    pd.testing.assert_frame_equal(a.loc[b["image"]], b.set_index("image"))


def test_no_test_split(table: pd.DataFrame) -> None:
    s = make_splits(table, n_folds=4, test_size=0, seed=0)
    assert (s["split"] == "train").all()
    assert set(s["fold"]) == {0, 1, 2, 3}
    assert len(test_indices(s)) == 0


def test_single_label(table: pd.DataFrame) -> None:
    s = make_splits(table, labels=["Edema"], n_folds=2, test_size=0.3, seed=0)
    check_leakage(s)
    edema = (table["Edema"] == 1).groupby(table["patient_id"]).any()
    fold = s.groupby("patient_id")["fold"].first()
    counts = edema[fold >= 0].groupby(fold[fold >= 0]).sum()
    assert abs(counts[0] - counts[1]) <= 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_folds": 1}, "n_folds"),
    ({"n_folds": 2.5}, "n_folds"),
    ({"test_size": 1.0}, "test_size"),
    ({"test_size": -0.1}, "test_size"),
    ({"group": "study"}, "group"),
    ({"labels": ["Edema", "Hernia"]}, "Hernia"),
])
def test_invalid_arguments(table: pd.DataFrame, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_splits(table, **kwargs)


def test_missing_patient_ids_are_named(table: pd.DataFrame) -> None:
    bad = table.copy()
    bad.loc[[3, 7], "patient_id"] = None
    names = ", ".join(repr(i) for i in table["image"][[3, 7]])
    with pytest.raises(ValueError, match=rf"2 row\(s\) have no patient_id \(rows 3, 7; images {names}\)"):
        make_splits(bad)


def test_duplicate_images_rejected(table: pd.DataFrame) -> None:
    bad = pd.concat([table, table.iloc[[5]]], ignore_index=True)
    with pytest.raises(ValueError, match=f"duplicated: '{table['image'][5]}'"):
        make_splits(bad, labels=LABS)


def test_too_few_patients() -> None:
    small = make_table(n_patients=4)
    with pytest.raises(ValueError, match="n_folds=5 needs at least 5 patients"):
        make_splits(small, n_folds=5, test_size=0)
    with pytest.raises(ValueError, match="n_folds=4 needs at least 4 patients in train"):
        make_splits(small, n_folds=4, test_size=0.2)


def test_check_leakage_names_patient() -> None:
    s = pd.DataFrame({
        "image": ["a1", "a2", "b1", "c1", "c2"],
        "patient_id": ["A", "A", "B", "C", "C"],
        "split": ["train", "train", "train", "train", "test"],
        "fold": [0, 1, 1, 0, -1],
    })
    with pytest.raises(LeakageError, match=r"2 patient\(s\).*'A' in fold 0, fold 1; 'C' in fold 0, test"):
        check_leakage(s)
    report = leakage_report(s)
    assert report["patient_id"].tolist() == ["A", "C"]
    assert report["n_images"].tolist() == [2, 2]
    assert report.attrs["summary"] == {"patients": 2, "images": 4, "patients_total": 3, "images_total": 5}


def test_balance_table(table: pd.DataFrame, splits: pd.DataFrame) -> None:
    b = balance_table(table, splits, LABS)
    assert list(b.index) == ["images", "patients", *LABS]
    parts = ["fold 0", "fold 1", "fold 2", "test"]
    assert list(b.columns.get_level_values(0).unique()) == [*parts, "all"]
    n = b.xs("n", axis=1, level=1)
    assert (n[parts].sum(axis=1) == n["all"]).all()  # patients never cross: the counts add up
    assert n.loc["images", "all"] == len(table)
    assert n.loc[LABS, "all"].tolist() == (table[LABS] == 1).sum().tolist()
    test = splits["split"] == "test"
    expected = (table.loc[test, "Edema"] == 1).sum() / table.loc[test, "Edema"].notna().sum()
    assert b.loc["Edema", ("test", "frac")] == pytest.approx(expected)


def test_fold_indices(splits: pd.DataFrame) -> None:
    test = test_indices(splits)
    seen = []
    for k in range(3):
        train, val = fold_indices(splits, k)
        assert set(train).isdisjoint(val) and set(train).isdisjoint(test)
        assert len(train) + len(val) + len(test) == len(splits)
        assert (splits["fold"].to_numpy()[val] == k).all()
        seen.extend(val)
    assert sorted(seen) == sorted(set(range(len(splits))) - set(test))
    for bad in (3, -1):
        with pytest.raises(ValueError, match=r"0\.\.2"):
            fold_indices(splits, bad)


def test_save_load_roundtrip(tmp_path, table: pd.DataFrame, splits: pd.DataFrame) -> None:
    csv = save_splits(splits, tmp_path / "out", {"fingerprint": "abc123"})
    assert csv == tmp_path / "out" / "folds.csv"
    record = json.loads((tmp_path / "out" / "folds.json").read_text())
    assert record["fingerprint"] == "abc123"
    assert (record["seed"], record["n_folds"], record["test_size"], record["group"]) == (0, 3, 0.2, "patient")
    assert record["counts"]["test"]["patients"] == 30
    assert sum(c["images"] for c in record["counts"].values()) == len(splits)

    loaded = load_splits(tmp_path / "out", table)
    pd.testing.assert_frame_equal(loaded, splits, check_dtype=False)
    assert loaded.attrs["fingerprint"] == "abc123"
    pd.testing.assert_frame_equal(load_splits(csv), loaded)  # the .csv path works too

    shuffled = table.sample(frac=1, random_state=1)
    reordered = load_splits(csv, shuffled)  # returned in table order: positions index the table
    assert reordered["image"].tolist() == shuffled["image"].tolist()


def test_save_rejects_bad_meta(tmp_path, splits: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        save_splits(splits, tmp_path, {})
    with pytest.raises(ValueError, match="seed"):
        save_splits(splits, tmp_path, {"fingerprint": "x", "seed": 7})


def test_load_checks_table(tmp_path, table: pd.DataFrame, splits: pd.DataFrame) -> None:
    save_splits(splits, tmp_path, {"fingerprint": "x"})
    with pytest.raises(ValueError, match=r"1 image\(s\) of folds.csv are not in the table: 'p0000_0'"):
        load_splits(tmp_path, table.iloc[1:])
    extra = pd.concat([table, table.iloc[[0]].assign(image="new_image")], ignore_index=True)
    with pytest.raises(ValueError, match="not in folds.csv: 'new_image'"):
        load_splits(tmp_path, extra)
    moved = table.copy()
    moved.loc[0, "patient_id"] = "p9999"
    with pytest.raises(ValueError, match="patient_id differs.*'p0000_0'"):
        load_splits(tmp_path, moved)


def test_load_detects_leakage(tmp_path, splits: pd.DataFrame) -> None:
    tampered = splits.copy()
    sizes = tampered["patient_id"].value_counts()
    patient = sorted(sizes.index[sizes > 1])[0]
    row = tampered.index[tampered["patient_id"] == patient][0]
    moved_to = ["train", 0] if tampered.loc[row, "split"] == "test" else ["test", -1]
    tampered.loc[row, ["split", "fold"]] = moved_to
    save_splits(tampered, tmp_path, {"fingerprint": "x"})
    with pytest.raises(LeakageError, match=repr(patient)):
        load_splits(tmp_path)
