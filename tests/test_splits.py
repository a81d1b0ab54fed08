"""Tests of cxrkit.data.splits on small synthetic tables with several images per patient."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxrkit.data.splits import (
    LeakageError,
    balance_gaps,
    balance_table,
    check_leakage,
    fold_indices,
    leakage_report,
    load_splits,
    make_splits,
    save_splits,
    split_comparison,
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


HEAVY_LABS = ["A", "B", "C", "D", "E", "F", "G", "H"]
HEAVY_PREVALENCE = np.array([0.35, 0.25, 0.2, 0.15, 0.1, 0.06, 0.03, 0.01])  # of patients


def make_heavy_table(n_patients: int = 600, seed: int = 0) -> pd.DataFrame:
    """Heavy-tailed patients (1-30 images, mean ~3.8) with correlated labels; 5% NaN.

    A latent "sickness" per patient raises both the number of images (log-normal, clipped to
    1..30) and every label (shared factor, correlation ~0.36 between label latents); a patient's
    findings recur on 70% of their images, other images are positive at 1%.
    """
    rng = np.random.default_rng(seed)
    sick = rng.normal(size=n_patients)
    n_img = np.clip(np.rint(np.exp(0.9 + 0.5 * sick + 0.87 * rng.normal(size=n_patients))), 1, 30).astype(int)
    latent = 0.6 * sick[:, None] + 0.8 * rng.normal(size=(n_patients, len(HEAVY_LABS)))
    has = latent > [np.quantile(latent[:, j], 1 - p) for j, p in enumerate(HEAVY_PREVALENCE)]
    pid = np.repeat(np.arange(n_patients), n_img)
    shot = np.concatenate([np.arange(m) for m in n_img])
    draw = rng.random((len(pid), len(HEAVY_LABS)))
    y = np.where(has[pid], draw < 0.7, draw < 0.01).astype(float)
    y[rng.random(y.shape) < 0.05] = np.nan
    table = pd.DataFrame(y, columns=HEAVY_LABS)
    table.insert(0, "patient_id", [f"h{p:04d}" for p in pid])
    table.insert(0, "image", [f"h{p:04d}_{k:02d}" for p, k in zip(pid, shot, strict=True)])
    table.attrs["labels"] = HEAVY_LABS
    return table


def make_phantom_table(n_patients: int = 400, seed: int = 0) -> pd.DataFrame:
    """The label table of a small phantom (1-4 images per patient, 14 coupled labels), no images."""
    from cxrkit.phantom.model import LABELS
    from cxrkit.phantom.sampling import sample_studies, split_table

    public, _ = split_table(sample_studies(n_patients, seed))
    table = public.rename(columns={"Image_name": "image", "Patient_ID": "patient_id"})
    table.attrs["labels"] = list(LABELS)
    return table


def worst_fold_gap(table: pd.DataFrame, splits: pd.DataFrame) -> float:
    """Max over folds and labels of |prevalence in the fold - prevalence in all images|."""
    return float(balance_gaps(table, splits).drop("test", errors="ignore").max())


def fold_images(splits: pd.DataFrame) -> pd.Series:
    return splits.loc[splits["split"] == "train", "fold"].value_counts().sort_index()


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


def test_patient_group_balances_images(table: pd.DataFrame, splits: pd.DataFrame) -> None:
    # Whole patients, balanced per image: every label's prevalence (positives / known images) in
    # each part within 0.005 of the overall one, i.e. about half an image in a fold of 120.
    assert balance_gaps(table, splits).max() < 0.005
    counts = (table[LABS] == 1).groupby(splits["fold"]).sum().drop(index=-1)
    assert (counts.max() - counts.min() <= 2).all(), counts


def test_image_level_label_balance_for_image_group(table: pd.DataFrame) -> None:
    image_splits = make_splits(table, n_folds=3, test_size=0.2, seed=0, group="image")
    train = image_splits["split"] == "train"
    counts = (table.loc[train, LABS] == 1).groupby(image_splits.loc[train, "fold"]).sum()
    assert (counts.sub(counts.mean()).abs() <= np.maximum(2, 0.1 * counts.mean())).all().all(), counts


def test_sizes(table: pd.DataFrame, splits: pd.DataFrame) -> None:
    # test_size and the folds are shares of the images: met within whole patients
    assert abs((splits["split"] == "test").mean() - 0.2) < 0.01
    sizes = fold_images(splits)
    assert sizes.max() - sizes.min() <= 2, sizes


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
    assert balance_gaps(table, s, ["Edema"]).max() < 0.005
    sizes = fold_images(s)
    assert abs(sizes[0] - sizes[1]) <= 2


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
    test = splits["split"] == "test"
    assert record["counts"]["test"] == {"images": int(test.sum()),
                                        "patients": splits.loc[test, "patient_id"].nunique()}
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


# --- patient-grouped folds balanced in images: heavy-tailed patients and the phantom ------------
@pytest.fixture(scope="module")
def heavy() -> pd.DataFrame:
    """Like the issue's heavy-tailed table: 950 patients, mean 4.1 images, up to 30."""
    return make_heavy_table(950, seed=1)


@pytest.fixture(scope="module")
def phantom() -> pd.DataFrame:
    """The default study's phantom (params/default.yaml: 1,700 patients, seed 0)."""
    return make_phantom_table(1700, seed=0)


def test_heavy_tailed_generator(heavy: pd.DataFrame) -> None:
    per_patient = heavy.groupby("patient_id").size()
    assert 3.5 < per_patient.mean() < 4.5 and per_patient.max() == 30 and per_patient.min() == 1
    positive = (heavy[HEAVY_LABS] == 1).groupby(heavy["patient_id"]).any()
    assert (positive.corr().to_numpy()[np.triu_indices(len(HEAVY_LABS), 1)] > 0).mean() > 0.8
    assert positive.any(axis=1).groupby(per_patient > per_patient.median()).mean().is_monotonic_increasing


@pytest.mark.parametrize("name", ["heavy", "phantom"])
def test_grouped_folds_balance_images_like_image_level_mis(request, name: str) -> None:
    data = request.getfixturevalue(name)
    splits = make_splits(data, n_folds=3, test_size=0.2, seed=0)
    check_leakage(splits)
    by_image = make_splits(data, n_folds=3, test_size=0.2, seed=0, group="image")
    gap, mis_gap = worst_fold_gap(data, splits), worst_fold_gap(data, by_image)
    assert gap <= 1.5 * mis_gap, (gap, mis_gap)
    assert balance_gaps(data, splits)["test"] <= 1.5 * balance_gaps(data, by_image)["test"]
    # fold sizes within 1% of their mean (whole patients of up to 30 images notwithstanding)
    sizes = fold_images(splits)
    assert (sizes / sizes.mean() - 1).abs().max() < 0.01, sizes
    assert abs((splits["split"] == "test").mean() - 0.2) < 0.01


def test_grouped_folds_deterministic(heavy: pd.DataFrame) -> None:
    a = make_splits(heavy, seed=4)
    pd.testing.assert_frame_equal(a, make_splits(heavy, seed=4))
    shuffled = heavy.sample(frac=1, random_state=9).reset_index(drop=True)
    shuffled["patient_id"] = shuffled["patient_id"].astype(object)
    b = make_splits(shuffled, HEAVY_LABS, seed=4)
    pd.testing.assert_frame_equal(a.set_index("image").loc[b["image"]], b.set_index("image"))
    assert (make_splits(heavy, seed=5)["fold"] != a["fold"]).mean() > 0.3


def test_test_split_does_not_depend_on_n_folds(heavy: pd.DataFrame) -> None:
    three, five = make_splits(heavy, n_folds=3, seed=2), make_splits(heavy, n_folds=5, seed=2)
    assert (three["split"] == five["split"]).all()
    sizes = fold_images(five)
    assert (sizes / sizes.mean() - 1).abs().max() < 0.02, sizes


def test_balance_gaps(table: pd.DataFrame, splits: pd.DataFrame) -> None:
    gaps = balance_gaps(table, splits)
    assert list(gaps.index) == ["fold 0", "fold 1", "fold 2", "test"]
    test = splits["split"] == "test"
    prevalence = (table[LABS] == 1).sum() / table[LABS].notna().sum()
    in_test = (table.loc[test, LABS] == 1).sum() / table.loc[test, LABS].notna().sum()
    assert gaps["test"] == pytest.approx((in_test - prevalence).abs().max())


def test_split_comparison(heavy: pd.DataFrame) -> None:
    splits = make_splits(heavy, n_folds=3, test_size=0.2, seed=0)
    cmp = split_comparison(heavy, splits)
    assert list(cmp.index) == ["this split (group=patient)", "random patients", "image-level MIS"]
    assert list(cmp.columns) == ["worst_fold_gap", "test_gap", "fold_images_min", "fold_images_max",
                                 "patients_crossing"]
    ours, rand, mis = (cmp.iloc[i] for i in range(3))
    assert ours["worst_fold_gap"] == pytest.approx(worst_fold_gap(heavy, splits))
    assert mis["worst_fold_gap"] == pytest.approx(
        worst_fold_gap(heavy, make_splits(heavy, n_folds=3, test_size=0.2, seed=0, group="image")))
    assert ours["worst_fold_gap"] <= 1.5 * mis["worst_fold_gap"] < rand["worst_fold_gap"]
    assert ours["patients_crossing"] == rand["patients_crossing"] == 0 < mis["patients_crossing"]
    sizes = fold_images(splits)
    assert (ours["fold_images_min"], ours["fold_images_max"]) == (sizes.min(), sizes.max())
    assert rand["fold_images_max"] - rand["fold_images_min"] > ours["fold_images_max"] - ours["fold_images_min"]
    shuffled = heavy.sample(frac=1, random_state=1)  # the references are made the same way from any row order
    pd.testing.assert_frame_equal(split_comparison(shuffled, splits.sample(frac=1, random_state=2)), cmp)


def test_split_comparison_without_test_split(table: pd.DataFrame) -> None:
    cmp = split_comparison(table, make_splits(table, n_folds=4, test_size=0, seed=1))
    assert cmp["test_gap"].isna().all() and (cmp["worst_fold_gap"] > 0).all()


def test_label_with_a_single_positive_patient(heavy: pd.DataFrame) -> None:
    data = heavy.assign(Rare=np.where(heavy["patient_id"] == "h0007", 1.0, 0.0))
    data.attrs["labels"] = [*HEAVY_LABS, "Rare"]
    splits = make_splits(data, seed=0)
    check_leakage(splits)
    assert splits.loc[data["Rare"] == 1, "fold"].nunique() == 1
    sizes = fold_images(splits)
    assert (sizes / sizes.mean() - 1).abs().max() < 0.01


def test_more_folds_than_positive_patients(table: pd.DataFrame) -> None:
    # three patients positive for "Rare" with 5 folds: each lands in a different part
    rare = table["patient_id"].isin(["p0003", "p0010", "p0042"])
    data = table.assign(Rare=rare.astype(float))
    splits = make_splits(data, [*LABS, "Rare"], n_folds=5, test_size=0, seed=0)
    check_leakage(splits)
    assert splits.loc[rare, "fold"].nunique() == 3
    assert set(splits["fold"]) == set(range(5))


def test_patient_with_30_images(table: pd.DataFrame) -> None:
    # 30 images, a third of them positive for Atelectasis (fewer than a fold's share of its positives)
    big = pd.DataFrame({"image": [f"big_{k:02d}" for k in range(30)], "patient_id": "big",
                        **{lab: 0.0 for lab in LABS}, "Atelectasis": np.arange(30) % 3 == 0})
    data = pd.concat([table, big], ignore_index=True)
    data.attrs["labels"] = LABS
    splits = make_splits(data, seed=0)
    check_leakage(splits)
    assert splits.loc[splits["patient_id"] == "big", "fold"].nunique() == 1
    sizes = fold_images(splits)
    assert sizes.max() - sizes.min() <= 2, sizes
    assert balance_gaps(data, splits).max() < 0.01


def test_as_many_patients_as_parts() -> None:
    small = make_table(n_patients=5)
    splits = make_splits(small, n_folds=4, test_size=0.2, seed=0)
    check_leakage(splits)
    per_part = splits.groupby(part_of(splits))["patient_id"].nunique()
    assert len(per_part) == 5 and (per_part == 1).all()


def test_labels_without_positives_or_values(table: pd.DataFrame) -> None:
    data = table.assign(Never=0.0, Unknown=np.nan)
    splits = make_splits(data, [*LABS, "Never", "Unknown"], seed=0)
    check_leakage(splits)
    assert balance_gaps(data, splits, LABS).max() < 0.005
