"""Tests of cxrkit.phantom.model: table layout, label logic, determinism, persistence, noise."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from cxrkit.data.labels import LABELS
from cxrkit.phantom.model import (
    CAUSE_PRIOR,
    CAUSES,
    DRAWABLE,
    LUNG_OPACITY_CHILDREN,
    META_COLUMNS,
    PATHOLOGIES,
    PERSISTENCE,
    SEVERITY_RANGE,
    STUDIES_PER_PATIENT,
    PhantomConfig,
)
from cxrkit.phantom.sampling import sample_studies, split_table


@pytest.fixture(scope="module")
def studies() -> pd.DataFrame:
    return sample_studies(3000, seed=7)


@pytest.fixture(scope="module")
def big() -> pd.DataFrame:
    return sample_studies(20000, seed=11)


def test_column_order(studies: pd.DataFrame) -> None:
    expected = (
        list(META_COLUMNS)
        + list(LABELS)
        + [f"cause_{c}" for c in CAUSES]
        + [f"true_{lab}" for lab in LABELS]
        + [f"drawn_{lab}" for lab in DRAWABLE]
        + [f"sev_{lab}" for lab in DRAWABLE]
        + ["hab_width", "hab_height", "hab_rotation", "hab_brightness", "image_seed"]
    )
    assert list(studies.columns) == expected
    assert len(DRAWABLE) == 13 and "No Finding" not in DRAWABLE
    assert len(PATHOLOGIES) == 12 and "Support Devices" not in PATHOLOGIES


def test_names_and_metadata(studies: pd.DataFrame) -> None:
    assert studies["Image_name"].is_unique
    for name, pid, study in studies[["Image_name", "Patient_ID", "Study"]].itertuples(index=False):
        assert re.fullmatch(r"P\d{6}", pid)
        assert name == f"{pid}_{study}_1.png"
    per_patient = studies.groupby("Patient_ID")["Study"].agg(["min", "max", "count"])
    assert (per_patient["min"] == 1).all()
    assert (per_patient["max"] == per_patient["count"]).all()
    assert per_patient["count"].between(1, 4).all()
    assert studies.groupby("Patient_ID")["Sex"].nunique().eq(1).all()
    assert set(studies["Sex"]) == {"M", "F"}
    assert studies["Age"].between(18, 95).all()
    assert (studies.groupby("Patient_ID")["Age"].diff().dropna() >= 0).all()
    assert (studies["ViewCategory"] == "Frontal").all()
    assert set(studies["ViewPosition"]) == {"AP", "PA"}
    assert sample_studies(123456, 0)["Patient_ID"].str.len().max() == 7  # width grows as needed


def test_studies_per_patient_mean(big: pd.DataFrame) -> None:
    counts = big.groupby("Patient_ID").size()
    mean = sum(k * p for k, p in STUDIES_PER_PATIENT.items())
    assert mean == pytest.approx(1.8)
    assert abs(counts.mean() - mean) < 5 * counts.std() / np.sqrt(len(counts))


def test_label_logic(studies: pd.DataFrame) -> None:
    obs = studies[list(PATHOLOGIES)].to_numpy()
    assert set(np.unique(studies[list(LABELS)].to_numpy())) <= {0, 1}
    np.testing.assert_array_equal(studies["No Finding"], (obs == 0).all(axis=1))
    true_path = studies[[f"true_{p}" for p in PATHOLOGIES]].to_numpy()
    np.testing.assert_array_equal(studies["true_No Finding"], (true_path == 0).all(axis=1))
    np.testing.assert_array_equal(studies["Support Devices"], studies["true_Support Devices"])
    for lab in DRAWABLE:
        drawn = studies[f"drawn_{lab}"].to_numpy() == 1
        sev = studies[f"sev_{lab}"].to_numpy()
        assert (studies.loc[drawn, f"true_{lab}"] == 1).all(), lab
        assert (sev[~drawn] == 0).all() and (sev[drawn] >= SEVERITY_RANGE[0]).all()
        assert (sev[drawn] <= SEVERITY_RANGE[1]).all()
    any_child = studies[[f"true_{c}" for c in LUNG_OPACITY_CHILDREN]].to_numpy().any(axis=1)
    haze = studies["drawn_Lung Opacity"].to_numpy() == 1
    assert not (haze & any_child).any()
    assert haze.any()


def test_no_report_noise_keeps_true_labels() -> None:
    df = sample_studies(500, 3, PhantomConfig(report_noise=False))
    for lab in LABELS:
        np.testing.assert_array_equal(df[lab], df[f"true_{lab}"], err_msg=lab)


def test_report_noise_rates(big: pd.DataFrame) -> None:
    true = big[[f"true_{p}" for p in PATHOLOGIES]].to_numpy().ravel()
    obs = big[list(PATHOLOGIES)].to_numpy().ravel()
    for t, expected in ((1, 0.03), (0, 0.005)):
        flipped = (obs[true == t] != t).mean()
        se = np.sqrt(expected * (1 - expected) / (true == t).sum())
        assert abs(flipped - expected) < 5 * se, (t, flipped)


def test_habitus_is_per_patient(studies: pd.DataFrame) -> None:
    multi = studies[studies.groupby("Patient_ID")["Study"].transform("size") > 1]
    within = multi.groupby("Patient_ID")["hab_width"].std().mean()
    between = studies.groupby("Patient_ID")["hab_width"].first().std()
    assert within < 0.5 * between
    assert studies["hab_rotation"].between(-4, 4).all()
    assert studies["hab_width"].between(0.85, 1.15).all()


def test_view_position_depends_on_critical(big: pd.DataFrame) -> None:
    ap = big["ViewPosition"] == "AP"
    critical = big["cause_critical"] == 1
    assert abs(ap[critical].mean() - 0.8) < 0.02
    assert abs(ap[~critical].mean() - 0.25) < 0.02


def test_determinism() -> None:
    a = sample_studies(300, seed=5)
    pd.testing.assert_frame_equal(a, sample_studies(300, seed=5))
    b = sample_studies(300, seed=6)
    assert not a[list(LABELS)].equals(b[list(LABELS)])
    assert not a["image_seed"].equals(b["image_seed"])


@pytest.mark.parametrize("cause", CAUSES)
def test_persistence(big: pd.DataFrame, cause: str) -> None:
    later = big["Study"].to_numpy() > 1
    c = big[f"cause_{cause}"].to_numpy()
    same = c[later] == c[np.flatnonzero(later) - 1]
    p, keep = CAUSE_PRIOR[cause], PERSISTENCE[cause]
    expected = keep + (1 - keep) * (p**2 + (1 - p) ** 2)
    se = np.sqrt(expected * (1 - expected) / same.size)
    assert abs(same.mean() - expected) < 5 * se
    # The marginal stays the prior on first and on second studies (independent across patients).
    for k in (1, 2):
        ck = c[big["Study"].to_numpy() == k]
        assert abs(ck.mean() - p) < 5 * np.sqrt(p * (1 - p) / ck.size), k


def test_chronic_causes_persist_more_than_chance(big: pd.DataFrame) -> None:
    later = np.flatnonzero(big["Study"].to_numpy() > 1)
    for cause in ("cardiac", "neoplasm", "pleural_chronic"):
        c = big[f"cause_{cause}"].to_numpy()
        kept_pos = c[later][c[later - 1] == 1].mean()  # P(c_t = 1 | c_{t-1} = 1)
        assert kept_pos > 0.8 > CAUSE_PRIOR[cause]


def test_uncertain_labels() -> None:
    base = sample_studies(2000, 9)
    unc = sample_studies(2000, 9, PhantomConfig(uncertain_rate=0.5))
    labs = [lab for lab in LABELS if lab != "No Finding"]
    u = unc[labs].to_numpy()
    assert (u == -1).any() and set(np.unique(u)) == {-1, 0, 1}
    keep = u != -1
    np.testing.assert_array_equal(u[keep], base[labs].to_numpy()[keep])
    # Uncertain entries are occult positives or negatives, never drawn positives.
    drawn = unc[[f"drawn_{lab}" for lab in labs]].to_numpy()
    pos = base[labs].to_numpy() == 1
    assert not (~keep & pos & (drawn == 1)).any()
    # No Finding: CheXpert rule, positive only when no pathology is positive or uncertain.
    np.testing.assert_array_equal(unc["No Finding"], (unc[list(PATHOLOGIES)] == 0).all(axis=1))
    assert (unc["No Finding"] == -1).sum() == 0
    with pytest.raises(ValueError):
        PhantomConfig(uncertain_rate=1.5)


def test_split_table(studies: pd.DataFrame) -> None:
    train, truth = split_table(studies)
    assert list(train.columns) == list(META_COLUMNS) + list(LABELS)
    assert truth.columns[0] == "Image_name"
    assert set(train.columns) | set(truth.columns) == set(studies.columns)
    assert set(train.columns) & set(truth.columns) == {"Image_name"}
    assert (train[list(LABELS)].dtypes.map(lambda t: t.kind) == "i").all()
    with pytest.raises(KeyError):
        split_table(studies.drop(columns=["Age"]))
