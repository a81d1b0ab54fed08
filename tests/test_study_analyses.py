"""Exact numbers of the study's analyses on prediction files with known results (issue #10 §1).

The notebook regression tests compare only the structure of the notebooks' tables, because
trained numbers differ in their last bits from one CPU to another. The numbers are checked here
instead: a small study is built in a temporary folder WITHOUT training (a gxs ``train.csv``, the
folds written with :func:`cxrkit.data.splits.save_splits`, and for every variant and fold the files a
training run leaves: ``pred_{val,test}[_notta].csv`` written with
:func:`cxrkit.evaluation.predictions.write_predictions` and the metadata keys :mod:`cxrkit.training` writes,
``metrics.json``, ``coupling.csv`` and ``effective_coupling.csv``), and every expected value is
worked out by hand in the comments, never by calling the library again.

Scores are multiples of 1/16 (exact in binary and in the 6-decimal CSV), so fold means are exact.
Per label a score column is one of

* P (perfect):  positives 0.75, negatives 0.25      -> AUC 1, AP 1
* R (reversed): positives 0.25, negatives 0.75      -> AUC 0, AP = prevalence
* T (ties):     one constant                        -> AUC 0.5, AP = prevalence
* a small Mann-Whitney case counted pair by pair.

An AUC of P, R or T does not change when the images are resampled (as long as the label keeps
both classes), so a paired difference made only of such labels (and of labels on which both
variants have the same scores) is the same in every bootstrap replicate: its interval collapses
onto the point estimate, and its p-value is 2 / (B + 1) (every replicate on one side of 0) or 1
(every replicate exactly 0).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrkit import study as S
from cxrkit.data.labels import LABELS
from cxrkit.study import analysis as A

LA, LB, LC, LD = LABELS[:4]  # Atelectasis, Cardiomegaly, Consolidation, Edema: the four "active" labels
ACTIVE = [LA, LB, LC, LD]
INACTIVE = list(LABELS[4:])  # 0 on every image: never scorable, NaN conditional rows; scored 1/16 everywhere
N_BOOT = 40
TOL = 1e-12
SQRT_01 = math.sqrt(0.1)

# --- the dataset ----------------------------------------------------------------------------------
# Training part: 12 images, one patient each, 6 per validation fold. Columns A, B, C, D.
FOLD_IMAGES = {
    0: {"a0": (1, 1, 1, 0), "a1": (1, 1, 0, 0), "a2": (1, 1, 0, 1),
        "a3": (0, 0, 1, 1), "a4": (0, 0, 1, 0), "a5": (0, 0, 0, 1)},
    1: {"b0": (1, 1, 1, 0), "b1": (1, 1, 1, 0), "b2": (1, 0, 0, 1),
        "b3": (0, 1, 0, 0), "b4": (0, 0, 1, 1), "b5": (0, 0, 0, 1)},
}
# Each label has 3 positives and 3 negatives in each fold (6 of 12 in the training part).
# Test split: 8 images, 7 patients (t6 and t7 are patient q6).
TEST_IMAGES = {
    "t0": (1, 1, 1, 0), "t1": (1, 1, 0, 1), "t2": (1, 0, 1, 0), "t3": (1, 0, 0, 0),
    "t4": (0, 1, 1, 0), "t5": (0, 1, 0, 0), "t6": (0, 0, 1, 1), "t7": (0, 0, 0, 1),
}
# test: A positive on t0-t3, B on t0 t1 t4 t5, C on t0 t2 t4 t6 (4 of 8 each), D on t1 t6 t7 (3 of 8)
TEST_PATIENT = {f"t{i}": f"q{min(i, 6)}" for i in range(8)}


# Metadata (08_trust's subgroups): every training-part image M, 40, PA; the test split all F, ages 30
# (t0-t3: band <50) and 70 (t4-t7: >=65), AP films t0 t2 t4 t6 and PA films t1 t3 t5 t7 (patient q6
# has one of each: t6 AP, t7 PA).
TEST_META = {f"t{i}": {"Sex": "F", "Age": 30 if i < 4 else 70, "ViewPosition": "AP" if i % 2 == 0 else "PA"}
             for i in range(8)}
TRAIN_META = {"Sex": "M", "Age": 40, "ViewPosition": "PA"}


def _patient(image: str) -> str:
    return TEST_PATIENT.get(image, "p" + image)


def _labels_of(images: dict[str, tuple]) -> dict[str, np.ndarray]:
    return {lab: np.array([v[j] for v in images.values()], dtype=float) for j, lab in enumerate(ACTIVE)}


def _kind(y: np.ndarray, kind: str | float | list) -> np.ndarray:
    """Score column: 'P' perfect, 'R' reversed, a number = ties at that value, a list = as given."""
    if kind == "P":
        return np.where(y == 1, 0.75, 0.25)
    if kind == "R":
        return np.where(y == 1, 0.25, 0.75)
    if isinstance(kind, (int, float)):
        return np.full(len(y), float(kind))
    return np.asarray(kind, dtype=float)


# --- the predictions --------------------------------------------------------------------------------
# Test split, per variant and fold: the score kind of A, B, C, D (every other label 1/16).
# A of `none`: fold 0 and fold 1 each rank it with AUC 0.75, their mean ranks it perfectly
#   images        t0    t1    t2    t3    t4    t5    t6    t7      (A: + + + + - - - -)
#   fold 0       .875  .875  .375  .375  .5    .5    .125  .125   pairs won: 2*4 + 2*2 = 12 of 16 -> 0.75
#   fold 1       .375  .375  .875  .875  .125  .125  .5    .5     same by symmetry               -> 0.75
#   mean         .625  .625  .625  .625  .3125 .3125 .3125 .3125  every positive above every negative -> 1
A_NONE = ([.875, .875, .375, .375, .5, .5, .125, .125], [.375, .375, .875, .875, .125, .125, .5, .5])
# D (positives t1, t6, t7; negatives t0 t2 t3 t4 t5 = .125 .375 .625 .875 .25), the same in every
# variant and fold:
#   t1 .625 beats .125 .375 .25, ties .625 -> 3.5; t6 .375 beats .125 .25, ties .375 -> 2.5;
#   t7 .75 beats .125 .375 .625 .25 -> 4.   AUC = (3.5 + 2.5 + 4) / (3 * 5) = 10/15 = 2/3
D_MW = [.125, .625, .375, .625, .875, .25, .375, .75]
TEST_KINDS = {  # variant -> per fold (A, B, C, D)
    "none": [(A_NONE[0], 0.25, "R", D_MW), (A_NONE[1], 0.25, "R", D_MW)],
    "sparse": [("R", "P", "P", D_MW)] * 2,
    # C of cooc_gcn: fold 0 perfect, fold 1 reversed -> mean 0.5 on every image (ties)
    "cooc_gcn": [("P", "R", "P", D_MW), ("P", "R", "R", D_MW)],
}
TEST_KINDS["sparse_l0"] = TEST_KINDS["none"]
TEST_KINDS["sparse_mean"] = TEST_KINDS["sparse"]
# Without flip TTA (pred_test_notta.csv): the same, except `sparse`, which scores as `none` does.
TEST_KINDS_NOTTA = {**TEST_KINDS, "sparse": TEST_KINDS["none"]}
# Validation fold k, per variant: (A, B, C, D); T = ties at 0.375.
VAL_KINDS = {
    "none": [("P", 0.375, "R", "P"), ("P", 0.375, 0.375, "R")],
    "sparse": [("P", "P", "P", "P"), ("P", "P", "P", 0.375)],
    "cooc_gcn": [("P", "R", 0.375, 0.375), (0.375, "P", "P", "P")],
}
VAL_KINDS["sparse_l0"] = VAL_KINDS["none"]
VAL_KINDS["sparse_mean"] = VAL_KINDS["sparse"]
# hand-computed validation macro AUCs (the mean of 1, 0.5, 0 per P, T, R over A-D):
#   none      fold 0: (1 + .5 + 0 + 1)/4 = .625    fold 1: (1 + .5 + .5 + 0)/4 = .5
#   sparse    fold 0: 4/4 = 1                      fold 1: (1 + 1 + 1 + .5)/4 = .875
#   cooc_gcn  fold 0: (1 + 0 + .5 + .5)/4 = .5     fold 1: (.5 + 1 + 1 + 1)/4 = .875
VAL_AUC = {"none": (0.625, 0.5), "sparse": (1.0, 0.875), "cooc_gcn": (0.5, 0.875)}
VAL_AUC["sparse_l0"], VAL_AUC["sparse_mean"] = VAL_AUC["none"], VAL_AUC["sparse"]


def _coupling(entries: dict[tuple[int, int], float], diagonal: float = 0.0) -> pd.DataFrame:
    m = np.zeros((len(LABELS), len(LABELS)))
    np.fill_diagonal(m, diagonal)  # never counted
    for (i, j), v in entries.items():
        m[i, j] = v
    return pd.DataFrame(m, index=list(LABELS), columns=list(LABELS))


N_L = len(LABELS)  # 14 -> 14 * 13 = 182 off-diagonal entries
# raw coupling.csv (sparsity counts |a| <= 1e-3 as zero, diagonal excluded)
RAW = {
    # fold 0: 14 entries (i, i+1) = 0.5 non-zero, 14 entries (i, i+2) = exactly 0.001 (zero: <= tol)
    # -> 14/182 = 1/13 non-zero; fold 1: (i, i+1) = 0.5 and (i, i+2) = -0.0011 -> 28/182 = 2/13
    "sparse": [_coupling({**{(i, (i + 1) % N_L): 0.5 for i in range(N_L)},
                          **{(i, (i + 2) % N_L): 0.001 for i in range(N_L)}}, diagonal=9.0),
               _coupling({**{(i, (i + 1) % N_L): 0.5 for i in range(N_L)},
                          **{(i, (i + 2) % N_L): -0.0011 for i in range(N_L)}}, diagonal=9.0)],
    # every off-diagonal entry 0.25: 182/182 non-zero in both folds
    "sparse_l0": [_coupling({(i, j): 0.25 for i in range(N_L) for j in range(N_L) if i != j})] * 2,
    # fold 0: nothing off the diagonal; fold 1: 7 entries (i, i+1), i < 7, = -0.01 -> 7/182 = 1/26
    "sparse_mean": [_coupling({}, diagonal=3.0), _coupling({(i, i + 1): -0.01 for i in range(7)})],
    "cooc_gcn": [_coupling({(0, 1): 5 / 6, (1, 0): 5 / 6}, diagonal=1.0)] * 2,
}
# effective_coupling.csv of `sparse`: fold 0 A->B 0.5, C->D -0.25, B->A 0.125; fold 1 A->B 0.25, C->D -0.25,
# D->C 0.0625 -> mean A->B 0.375, C->D -0.25, B->A 0.0625, D->C 0.03125
EFFECTIVE_SPARSE = [_coupling({(0, 1): 0.5, (2, 3): -0.25, (1, 0): 0.125}, diagonal=4.0),
                    _coupling({(0, 1): 0.25, (2, 3): -0.25, (3, 2): 0.0625}, diagonal=4.0)]

VARIANTS = ["none", "sparse", "cooc_gcn",
            {"name": "sparse_l0", "refiner": "sparse", "l1_lambda": 0.0},
            {"name": "sparse_mean", "refiner": "sparse", "l1_lambda": 0.01, "loss_reduction": "mean"}]


def _write_table(root: Path) -> None:
    rows = []
    for images in (*FOLD_IMAGES.values(), TEST_IMAGES):
        for image, active in images.items():
            rows.append({"Image_name": image, "Patient_ID": _patient(image), **TEST_META.get(image, TRAIN_META),
                         **dict(zip(ACTIVE, active, strict=True)), **{lab: 0 for lab in INACTIVE}})
    root.mkdir(parents=True)
    pd.DataFrame(rows, columns=["Image_name", "Patient_ID", *TRAIN_META, *LABELS]).to_csv(root / "train.csv",
                                                                                      index=False)


def _scores(images: dict[str, tuple], kinds: tuple) -> np.ndarray:
    y = _labels_of(images)
    out = np.full((len(images), N_L), 0.0625)
    for j, (lab, kind) in enumerate(zip(ACTIVE, kinds, strict=True)):
        out[:, j] = _kind(y[lab], kind)
    return out


def _write_study(tmp: Path, **changes) -> Path:
    """The parameter file of the hand-made study (its data, folds and runs written once)."""
    params = {"name": "hand", "phantom": None, "data": str(tmp / "data"), "runs": str(tmp / "runs"),
              "reports": str(tmp / "reports"), "n_folds": 2, "test_size": 0.25, "split_seed": 0,
              "variants": VARIANTS, "bootstrap": N_BOOT, "threshold": 0.5, "train": {"seed": 0}, **changes}
    path = tmp / "hand.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    from cxrkit.data.datasets import create_dataset, fingerprint
    from cxrkit.data.splits import save_splits
    from cxrkit.evaluation.predictions import write_predictions
    from cxrkit.utils.files import write_json

    tmp = tmp_path_factory.mktemp("hand_study")
    _write_table(tmp / "data")
    cfg = S.load_study(_write_study(tmp)).validate()
    table = create_dataset("gxs", root=cfg.data, check_images=False).table  # image files need not exist
    data_fp = fingerprint(table)
    fold_of = {im: k for k, images in FOLD_IMAGES.items() for im in images}
    splits = pd.DataFrame({"image": table["image"], "patient_id": table["patient_id"],
                           "split": ["train" if im in fold_of else "test" for im in table["image"]],
                           "fold": [fold_of.get(im, -1) for im in table["image"]]})
    save_splits(splits, cfg.splits_path, {"seed": 0, "n_folds": 2, "test_size": 0.25, "group": "patient",
                                          "fingerprint": data_fp, "dataset": "gxs", "data": cfg.data})
    # cxrkit.training.fold.file_digest: the short sha256 of the folds file
    splits_fp = hashlib.sha256(cfg.splits_path.read_bytes()).hexdigest()[:16]
    for variant in cfg.variant_names:
        t = cfg.train_config(0, variant)
        for k in range(cfg.n_folds):
            out = cfg.train_dir(k, variant)
            out.mkdir(parents=True)
            meta = {"data_fingerprint": data_fp, "splits_fingerprint": splits_fp, "fold": k, "variant": t.refiner,
                    "backbone": t.backbone, "seed": t.seed, "best_epoch": 1}
            files = {("val", True): (FOLD_IMAGES[k], VAL_KINDS[variant][k]),
                     ("val", False): (FOLD_IMAGES[k], VAL_KINDS[variant][k]),
                     ("test", True): (TEST_IMAGES, TEST_KINDS[variant][k]),
                     ("test", False): (TEST_IMAGES, TEST_KINDS_NOTTA[variant][k])}
            for (split, tta), (images, kinds) in files.items():
                write_predictions(out / f"pred_{split}{'' if tta else '_notta'}.csv", list(images), list(LABELS),
                                  _scores(images, kinds), {**meta, "split": split, "tta": tta})
            write_json(out / "metrics.json", {"val_macro_auc": VAL_AUC[variant][k],
                                              "val_macro_auc_notta": VAL_AUC[variant][k],
                                              "best_epoch": 1, "best_val_macro_auc": VAL_AUC[variant][k],
                                              "epochs_run": 1, "out": str(out)})
            if t.refiner != "none":
                raw = RAW[variant][k]
                raw.to_csv(out / "coupling.csv", float_format="%.6f")
                eff = EFFECTIVE_SPARSE[k] if variant == "sparse" else raw
                eff.to_csv(out / "effective_coupling.csv", float_format="%.6f")
    return cfg


@pytest.fixture(scope="module")
def abl(study):
    return S.ablation(study)


# --- the study's own tables -----------------------------------------------------------------------
def test_the_hand_made_study_reads_back_as_written(study):
    assert not S.is_phantom(study) and S.oracle_table(study) is None
    folds = S.fold_predictions(study, "none", "val")
    assert list(folds[0].index) == list(FOLD_IMAGES[0]) and list(folds[1].index) == list(FOLD_IMAGES[1])
    y = S.true_labels(study, ["t6", "b2"])
    assert y.shape == (2, N_L)
    assert list(y[0, :4]) == [0, 0, 1, 1] and list(y[1, :4]) == [1, 0, 0, 1] and not y[:, 4:].any()
    assert S.comparisons(study) == [("none", "sparse"), ("none", "cooc_gcn"), ("none", "sparse_l0"),
                                    ("none", "sparse_mean"), ("cooc_gcn", "sparse")]
    assert S.main_variant(study) == "sparse"
    assert S.coupled_variants(study) == ["sparse", "cooc_gcn", "sparse_l0", "sparse_mean"]


def test_ablation_per_fold_validation_auc(abl):
    per_fold = abl["per_fold"]
    assert list(per_fold.index) == ["fold 0", "fold 1", "mean", "std"]
    assert list(per_fold.columns) == ["none", "sparse", "cooc_gcn", "sparse_l0", "sparse_mean"]
    # VAL_AUC above; mean of two folds; sd (ddof 1) of two values = |x0 - x1| / sqrt(2)
    expected = {"none": (0.625, 0.5, 0.5625, 0.125 / math.sqrt(2)),
                "sparse": (1.0, 0.875, 0.9375, 0.125 / math.sqrt(2)),
                "cooc_gcn": (0.5, 0.875, 0.6875, 0.375 / math.sqrt(2))}
    expected["sparse_l0"], expected["sparse_mean"] = expected["none"], expected["sparse"]
    for v, col in expected.items():
        assert per_fold[v].to_numpy() == pytest.approx(col, abs=TOL), v


def test_ablation_test_summary(abl):
    ts = abl["test_summary"]
    assert list(ts.columns) == ["none", "none (no TTA)", "sparse", "sparse (no TTA)", "cooc_gcn",
                                "cooc_gcn (no TTA)", "sparse_l0", "sparse_l0 (no TTA)", "sparse_mean",
                                "sparse_mean (no TTA)"]
    assert list(ts.index) == ["fold 0", "fold 1", "ensemble", "ensemble 95% CI low", "ensemble 95% CI high",
                              "ensemble CI replicates rejected"]
    # macro over A, B, C, D (the other ten labels have no positive: skipped)
    none_fold = (0.75 + 0.5 + 0 + 2 / 3) / 4       # A 0.75 per fold, B ties, C reversed, D 2/3 -> 23/48
    none_ens = (1 + 0.5 + 0 + 2 / 3) / 4           # A perfect in the mean of the folds       -> 13/24
    sparse = (0 + 1 + 1 + 2 / 3) / 4               # A reversed, B and C perfect, D           -> 2/3
    cooc = ((1 + 0 + 1 + 2 / 3) / 4,               # fold 0: A perfect, B reversed, C perfect -> 2/3
            (1 + 0 + 0 + 2 / 3) / 4,               # fold 1: C reversed                       -> 5/12
            (1 + 0 + 0.5 + 2 / 3) / 4)             # ensemble: C ties at 0.5                  -> 13/24
    assert (none_fold, none_ens, sparse, *cooc) == pytest.approx((23 / 48, 13 / 24, 2 / 3, 2 / 3, 5 / 12, 13 / 24))
    rows = {"none": (none_fold, none_fold, none_ens), "sparse": (sparse, sparse, sparse), "cooc_gcn": cooc}
    rows["sparse_l0"], rows["sparse_mean"] = rows["none"], rows["sparse"]
    expected = {**rows, **{f"{v} (no TTA)": r for v, r in rows.items()},
                "sparse (no TTA)": rows["none"]}  # sparse's no-TTA files score as none's
    for col, values in expected.items():
        assert ts.loc[["fold 0", "fold 1", "ensemble"], col].to_numpy() == pytest.approx(values, abs=TOL), col
    # the interval: only D's AUC varies between replicates (P, R and T labels do not), and D's replicate
    # AUC is in [0, 1], so every replicate of `none` lies in [(1 + .5 + 0)/4, (1 + .5 + 0 + 1)/4]
    bounds = {"none": (0.375, 0.625), "sparse": (0.5, 0.75), "cooc_gcn": (0.375, 0.625)}
    for v, (lo, hi) in bounds.items():
        low, high = ts.loc["ensemble 95% CI low", v], ts.loc["ensemble 95% CI high", v]
        assert lo - TOL <= low <= high <= hi + TOL, v
    rejected = ts.loc["ensemble CI replicates rejected"]
    assert all(float(r).is_integer() and r >= 0 for r in rejected)
    assert abl["headline"] == {"test_ensemble_none": pytest.approx(13 / 24, abs=TOL),
                               "test_ensemble_sparse": pytest.approx(2 / 3, abs=TOL),
                               "test_ensemble_cooc_gcn": pytest.approx(13 / 24, abs=TOL),
                               "test_ensemble_sparse_l0": pytest.approx(13 / 24, abs=TOL),
                               "test_ensemble_sparse_mean": pytest.approx(2 / 3, abs=TOL),
                               # constant difference: the interval collapses onto 2/3 - 13/24 = 1/8
                               "test_diff_sparse_vs_none": "+0.1250 [+0.1250, +0.1250]",
                               "test_diff_cooc_gcn_vs_none": "+0.0000 [+0.0000, +0.0000]",
                               "test_diff_sparse_l0_vs_none": "+0.0000 [+0.0000, +0.0000]",
                               "test_diff_sparse_mean_vs_none": "+0.1250 [+0.1250, +0.1250]",
                               "test_diff_sparse_vs_cooc_gcn": "+0.1250 [+0.1250, +0.1250]"}


def test_ablation_paired_differences(abl):
    paired = abl["paired"]
    comps = ["sparse - none", "cooc_gcn - none", "sparse_l0 - none", "sparse_mean - none", "sparse - cooc_gcn"]
    assert list(paired.index) == ([f"{c}, fold {k} (val)" for k in (0, 1) for c in comps]
                                  + [f"{c}, test ensemble" for c in comps]
                                  + [f"{c}, test ensemble (no TTA)" for c in comps])
    assert list(paired.columns) == ["diff", "low", "high", "p_value", "replicates_rejected", "CI covers"]
    # validation: differences of VAL_AUC; test: of the ensemble macro AUCs 13/24 (none, cooc_gcn,
    # sparse_l0) and 2/3 (sparse, sparse_mean); without TTA sparse scores 13/24 too
    diff = {"val": {0: {"sparse - none": 1 - .625, "cooc_gcn - none": .5 - .625, "sparse_l0 - none": 0.0,
                        "sparse_mean - none": 1 - .625, "sparse - cooc_gcn": 1 - .5},
                    1: {"sparse - none": .875 - .5, "cooc_gcn - none": .875 - .5, "sparse_l0 - none": 0.0,
                        "sparse_mean - none": .875 - .5, "sparse - cooc_gcn": .875 - .875}},
            "test ensemble": {"sparse - none": 1 / 8, "cooc_gcn - none": 0.0, "sparse_l0 - none": 0.0,
                              "sparse_mean - none": 1 / 8, "sparse - cooc_gcn": 1 / 8},
            "test ensemble (no TTA)": {"sparse - none": 0.0, "cooc_gcn - none": 0.0, "sparse_l0 - none": 0.0,
                                       "sparse_mean - none": 1 / 8, "sparse - cooc_gcn": 0.0}}
    rows = {f"{c}, fold {k} (val)": d for k, per in diff["val"].items() for c, d in per.items()}
    rows |= {f"{c}, {part}": d for part in ("test ensemble", "test ensemble (no TTA)") for c, d in diff[part].items()}
    assert paired["diff"].to_dict() == pytest.approx(rows, abs=TOL)
    # every compared label is P, R or T in both variants, or scored alike (D): each replicate's difference
    # equals the point estimate, so the percentile interval is that point
    assert (paired["low"] - paired["diff"]).abs().max() < TOL and (paired["high"] - paired["diff"]).abs().max() < TOL
    # p = min(1, 2 * (min(#d* <= 0, #d* >= 0) + 1) / (B + 1)): all B replicates > 0 (or < 0) -> 2 / (B + 1)
    for name, d in rows.items():
        if abs(d) > 0.01:
            assert paired.loc[name, "p_value"] == pytest.approx(2 / (N_BOOT + 1), abs=TOL), name
    # identical scores (sparse_l0 is none): every replicate difference is exactly 0 -> p = 1
    for name in paired.index:
        if name.startswith("sparse_l0 - none"):
            assert paired.loc[name, ["diff", "low", "high"]].tolist() == [0.0, 0.0, 0.0]
            assert paired.loc[name, "p_value"] == 1.0
    assert paired["replicates_rejected"].dtype.kind == "i" and (paired["replicates_rejected"] >= 0).all()
    covers = paired["CI covers"]
    assert set(covers[covers.index.str.endswith("(val)")]) == {
        "validation-set sampling (patient bootstrap); one training seed per variant"}
    assert set(covers[~covers.index.str.endswith("(val)")]) == {
        "test-set sampling (patient bootstrap); one training seed per variant"}


def test_ablation_per_label_deltas(abl):
    cols = ["sparse - none", "cooc_gcn - none", "sparse_l0 - none", "sparse_mean - none", "sparse - cooc_gcn"]
    # per-label AUC of the test ensembles (A, B, C, D):
    #   none (1, .5, 0, 2/3)   sparse (0, 1, 1, 2/3)   cooc_gcn (1, 0, .5, 2/3)
    auc = {"sparse - none": (-1, 0.5, 1, 0), "cooc_gcn - none": (0, -0.5, 0.5, 0), "sparse_l0 - none": (0, 0, 0, 0),
           "sparse_mean - none": (-1, 0.5, 1, 0), "sparse - cooc_gcn": (-1, 1, 0.5, 0)}
    # average precision (sum over thresholds of precision x recall gained):
    #   P -> 1;  R or T with 4 positives of 8 -> one step to recall 1 at precision 4/8 = 0.5;
    #   D: thresholds .875 (-), .75 (+), .625 (+ -), .375 (+ -): recall 1/3 at precision 1/2, 2/3 at 2/4,
    #      1 at 3/6 -> 3 * (1/3 * 1/2) = 0.5
    #   none (1, .5, .5, .5)   sparse (.5, 1, 1, .5)   cooc_gcn (1, .5, .5, .5)
    ap = {"sparse - none": (-0.5, 0.5, 0.5, 0), "cooc_gcn - none": (0, 0, 0, 0), "sparse_l0 - none": (0, 0, 0, 0),
          "sparse_mean - none": (-0.5, 0.5, 0.5, 0), "sparse - cooc_gcn": (-0.5, 0.5, 0.5, 0)}
    for table, expected in ((abl["per_label_delta"], auc), (abl["per_label_delta_ap"], ap)):
        assert list(table.columns) == cols and list(table.index) == list(LABELS)
        assert table.loc[INACTIVE].isna().all().all()  # no positive on the test split: NaN
        for c in cols:
            assert table.loc[ACTIVE, c].to_numpy() == pytest.approx(expected[c], abs=TOL), c


def test_ablation_threshold_metrics(abl):
    m = abl["metrics"]
    assert list(m.columns) == ["macro AUC", "mAP", "CP@0.5", "CR@0.5", "CF1@0.5", "OP@0.5", "OR@0.5", "OF1@0.5"]
    # test ensemble, predicted present when p >= 0.5; (TP, FP, FN) per label A, B, C, D; the other labels
    # (score 1/16) predict nothing and have no positive, so they count nowhere
    #   none:     A (4,0,0) .625 vs .3125; B (0,0,4) all .25; C (0,4,4) reversed; D (2,2,1): .875- .75+ .625+ .625-
    #   sparse:   A (0,4,4) reversed; B (4,0,0); C (4,0,0); D (2,2,1)
    #   cooc_gcn: A (4,0,0); B (0,4,4) reversed; C (4,4,0): every score exactly 0.5 counts as present; D (2,2,1)
    # CP = mean TP/(TP+FP) (0 with nothing predicted), CR = mean TP/(TP+FN), OP/OR pooled
    def f1(p, r):
        return 2 * p * r / (p + r)
    none = {"CP": (1 + 0 + 0 + .5) / 4, "CR": (1 + 0 + 0 + 2 / 3) / 4,
            "OP": (4 + 0 + 0 + 2) / (4 + 0 + 4 + 4), "OR": (4 + 0 + 0 + 2) / (4 + 4 + 4 + 3)}
    sparse = {"CP": (0 + 1 + 1 + .5) / 4, "CR": (0 + 1 + 1 + 2 / 3) / 4,
              "OP": (0 + 4 + 4 + 2) / (4 + 4 + 4 + 4), "OR": (0 + 4 + 4 + 2) / 15}
    cooc = {"CP": (1 + 0 + .5 + .5) / 4, "CR": (1 + 0 + 1 + 2 / 3) / 4,
            "OP": (4 + 0 + 4 + 2) / (4 + 4 + 8 + 4), "OR": (4 + 0 + 4 + 2) / 15}
    # in closed form: none CP 3/8, CR 5/12, CF1 15/38, OP 1/2, OR 2/5, OF1 4/9; sparse CF1 = OF1 = 20/31;
    # cooc_gcn CF1 = OF1 = 4/7
    assert (f1(none["CP"], none["CR"]), f1(none["OP"], none["OR"])) == pytest.approx((15 / 38, 4 / 9))
    assert (f1(sparse["CP"], sparse["CR"]), f1(cooc["CP"], cooc["CR"])) == pytest.approx((20 / 31, 4 / 7))
    for v, e, auc, map_ in (("none", none, 13 / 24, (1 + .5 + .5 + .5) / 4),
                            ("sparse", sparse, 2 / 3, (.5 + 1 + 1 + .5) / 4),
                            ("cooc_gcn", cooc, 13 / 24, (1 + .5 + .5 + .5) / 4),
                            ("sparse_l0", none, 13 / 24, 0.625), ("sparse_mean", sparse, 2 / 3, 0.75)):
        want = [auc, map_, e["CP"], e["CR"], f1(e["CP"], e["CR"]), e["OP"], e["OR"], f1(e["OP"], e["OR"])]
        assert m.loc[v].to_numpy(dtype=float) == pytest.approx(want, abs=TOL), v


def test_final_test_table(study, abl):
    final = S.final_test_table(study)
    rows = [f"{v} (2-fold ensemble, flip TTA)" for v in study.variant_names]
    assert list(final.index) == rows  # no oracle rows without the phantom
    assert list(final.columns) == ["macro AUC", "95% CI low", "95% CI high", "images", "replicates rejected",
                                   "CI covers"]
    assert final["macro AUC"].to_numpy(dtype=float) == pytest.approx([13 / 24, 2 / 3, 13 / 24, 13 / 24, 2 / 3], abs=TOL)
    assert list(final["images"]) == [8] * 5
    assert str(final["replicates rejected"].dtype) == "Int64" and (final["replicates rejected"] >= 0).all()
    assert set(final["CI covers"]) == {"test-set sampling (patient bootstrap); one training seed per variant"}
    # the same seed as ablation()'s ensemble intervals: the same interval and rejections
    ts = abl["test_summary"]
    for v, row in zip(study.variant_names, rows, strict=True):
        assert final.loc[row, "95% CI low"] == ts.loc["ensemble 95% CI low", v]
        assert final.loc[row, "95% CI high"] == ts.loc["ensemble 95% CI high", v]
        assert final.loc[row, "replicates rejected"] == ts.loc["ensemble CI replicates rejected", v]
        assert final.loc[row, "95% CI low"] <= final.loc[row, "95% CI high"]


def test_lambda_sweep(study):
    sweep = S.lambda_sweep(study)
    # sparse variants only, sorted by reduction (sum first), then lambda
    assert list(sweep.index) == ["sparse_l0", "sparse", "sparse_mean"]
    assert list(sweep.columns) == ["refiner", "l1_lambda", "loss_reduction", "val macro AUC (mean)",
                                   "val macro AUC (sd)", "test ensemble macro AUC", "non-zero couplings"]
    assert list(sweep["refiner"]) == ["sparse"] * 3 and list(sweep["loss_reduction"]) == ["sum", "sum", "mean"]
    assert list(sweep["l1_lambda"]) == [0.0, 1e-3, 1e-2]  # 1e-3: TrainConfig's default
    # val macro AUC from metrics.json: sparse_l0 (.625, .5), sparse and sparse_mean (1, .875)
    assert sweep["val macro AUC (mean)"].to_numpy(dtype=float) == pytest.approx([0.5625, 0.9375, 0.9375], abs=TOL)
    assert sweep["val macro AUC (sd)"].to_numpy(dtype=float) == pytest.approx([0.125 / math.sqrt(2)] * 3, abs=TOL)
    assert sweep["test ensemble macro AUC"].to_numpy(dtype=float) == pytest.approx([13 / 24, 2 / 3, 2 / 3], abs=TOL)
    # raw couplings, mean over folds of the non-zero share of the 182 off-diagonal entries:
    #   sparse_l0 (1 + 1)/2 = 1;  sparse (1/13 + 2/13)/2 = 3/26 (entries of exactly 0.001 are zero);
    #   sparse_mean (0 + 7/182)/2 = 1/52
    assert sweep["non-zero couplings"].to_numpy(dtype=float) == pytest.approx([1.0, 3 / 26, 1 / 52], abs=TOL)


def test_lambda_sweep_needs_two_lambdas_under_one_reduction(study):
    cfg_path = Path(study.data).parent / "hand.yaml"
    one_each = S.load_study(cfg_path, variants=["none", "sparse", VARIANTS[4]]).validate()  # sum 1e-3, mean 1e-2
    assert S.lambda_sweep(one_each) is None
    assert S.lambda_sweep(S.load_study(cfg_path, variants=["none", "cooc_gcn"]).validate()) is None
    two = S.lambda_sweep(S.load_study(cfg_path, variants=["none", VARIANTS[3], "sparse"]).validate())
    assert list(two.index) == ["sparse_l0", "sparse"]


def test_gain_vs_cooccurrence(study, abl):
    gain = S.gain_vs_cooccurrence(study, abl)
    # P(label | other) on the 12 training images (the test split is left out). Every active label has
    # 6 positives there, so P(X | Y) = c_XY / 6 with the co-occurrence counts
    #   c_AB = 5 (a0 a1 a2 b0 b1), c_AC = 3 (a0 b0 b1), c_AD = 2 (a2 b2),
    #   c_BC = 3 (a0 b0 b1),       c_BD = 1 (a2),        c_CD = 2 (a3 b4)
    # The inactive labels have no positive (their rows are NaN, dropped), so each active label's top 3
    # are its three active partners: A (5+3+2)/18 = 5/9, B (5+3+1)/18 = 1/2, C (3+3+2)/18 = 4/9,
    # D (2+1+2)/18 = 5/18. An inactive label: P(it | active) = 0 -> 0.
    top3 = gain["top3"]
    assert top3[ACTIVE].to_numpy() == pytest.approx([5 / 9, 1 / 2, 4 / 9, 5 / 18], abs=TOL)
    assert (top3[INACTIVE] == 0).all()
    table = gain["table"]
    assert list(table.columns) == ["top-3 conditional"] + [
        f"{g} ({c})" for c in ["sparse - none", "cooc_gcn - none", "sparse_l0 - none", "sparse_mean - none",
                                "sparse - cooc_gcn"] for g in ("ΔAP", "ΔAUC")]
    assert table.loc[ACTIVE, "ΔAUC (sparse - none)"].to_numpy() == pytest.approx([-1, 0.5, 1, 0], abs=TOL)
    trend = gain["trend"]
    assert list(trend.columns) == ["labels", "spearman rho", "p-value"] and (trend["labels"] == 4).all()
    # Spearman over A, B, C, D with top-3 ranks A 4, B 3, C 2, D 1 (Pearson of average ranks with ties);
    # for n = 4 the t-test p-value is 1 - |rho| (t with 2 df: P(|T| > t) = 1 - t / sqrt(t^2 + 2) = 1 - |rho|)
    #   ΔAUC sparse - none (-1, .5, 1, 0): ranks (1, 3, 4, 2), d = (3, 0, -2, -1),
    #       rho = 1 - 6 * 14 / (4 * 15) = -0.4
    #   ΔAP sparse - none (-.5, .5, .5, 0): ranks (1, 3.5, 3.5, 2); centred x (1.5, .5, -.5, -1.5),
    #       y (-1.5, 1, 1, -.5): rho = -1.5 / sqrt(5 * 4.5) = -sqrt(0.1)
    #   ΔAUC cooc_gcn - none (0, -.5, .5, 0): ranks (2.5, 1, 4, 2.5); y (0, -1.5, 1.5, 0): rho = -sqrt(0.1)
    #   ΔAUC sparse - cooc_gcn (-1, 1, .5, 0): ranks (1, 4, 3, 2), d = (3, -1, -1, -1), rho = 1 - 72/60 = -0.2
    #   constant gains (all ΔAP of cooc_gcn - none, everything of sparse_l0 - none): NaN
    expected = {("sparse - none", "ΔAUC"): -0.4, ("sparse - none", "ΔAP"): -SQRT_01,
                ("sparse_mean - none", "ΔAUC"): -0.4, ("sparse_mean - none", "ΔAP"): -SQRT_01,
                ("cooc_gcn - none", "ΔAUC"): -SQRT_01, ("sparse - cooc_gcn", "ΔAUC"): -0.2,
                ("sparse - cooc_gcn", "ΔAP"): -SQRT_01}
    for key, rho in expected.items():
        assert trend.loc[key, "spearman rho"] == pytest.approx(rho, abs=TOL), key
        assert trend.loc[key, "p-value"] == pytest.approx(1 - abs(rho), abs=1e-9), key
    for key in [("cooc_gcn - none", "ΔAP"), ("sparse_l0 - none", "ΔAP"), ("sparse_l0 - none", "ΔAUC")]:
        assert np.isnan(trend.loc[key, "spearman rho"]) and np.isnan(trend.loc[key, "p-value"]), key


def test_couplings_as_notebook_04_shows_them(study):
    # coupling recovery needs the phantom's true coupling: None here
    assert S.true_coupling(study) is None and S.coupling_recovery(study) is None
    raw = S.fold_couplings(study, "sparse", "raw")
    assert raw[1].loc[LABELS[0], LABELS[2]] == -0.0011 and raw[0].loc[LABELS[0], LABELS[2]] == 0.001
    # per fold: 168/182 = 12/13 and 154/182 = 11/13 zero; the mean matrix has (i, i+2) = (0.001 - 0.0011)/2
    # = -0.00005, below the tolerance: 14 non-zero of 182 -> 12/13 zero
    assert A.sparsity(raw[0]) == pytest.approx(12 / 13, abs=TOL)
    assert A.sparsity(raw[1]) == pytest.approx(11 / 13, abs=TOL)
    assert A.sparsity(sum(raw.values()) / 2) == pytest.approx(12 / 13, abs=TOL)
    eff = S.fold_couplings(study, "sparse")
    top = A.strongest_couplings(sum(eff.values()) / 2, 3)
    # mean effective coupling: A->B (0.5 + 0.25)/2 = 0.375, C->D -0.25, B->A 0.0625 (diagonal 4 ignored)
    assert list(zip(top["source"], top["target"], top["value"], strict=True)) == [
        (LA, LB, 0.375), (LC, LD, -0.25), (LB, LA, 0.0625)]


# --- studies trained with other settings (bugs: the analyses assume the defaults) ----------------------
def _copy_study(study: S.StudyConfig, tmp_path: Path, **train: object) -> S.StudyConfig:
    """A copy of the hand-made study (data, folds, runs) whose ``train`` section adds ``train``."""
    import shutil

    src = Path(study.data).parent
    shutil.copytree(src, tmp_path / "copy")
    root = tmp_path / "copy"
    return S.load_study(root / "hand.yaml", data=str(root / "data"), runs=str(root / "runs"),
                        reports=str(root / "reports"), train={"seed": 0, **train}).validate()


def test_ablation_of_a_study_trained_without_tta(study, tmp_path):
    cfg = _copy_study(study, tmp_path, tta=False)
    for v in cfg.variant_names:  # what cxrkit.training.finish.finish leaves with tta: false
        for k in range(cfg.n_folds):
            for f in cfg.train_dir(k, v).glob("pred_*_notta.*"):
                f.unlink()
    assert S.final_test_table(cfg)["macro AUC"].iloc[0] == pytest.approx(13 / 24, abs=TOL)  # reads pred_test.csv only
    abl = S.ablation(cfg)  # (used to raise FileNotFoundError: .../none/fold0/pred_test_notta.csv)
    assert abl["test_summary"].loc["ensemble", "none"] == pytest.approx(13 / 24, abs=TOL)
    assert abl["per_fold"].loc["fold 0", "sparse"] == pytest.approx(1.0, abs=TOL)


def test_study_trained_on_a_label_subset(study, tmp_path):
    from cxrkit.evaluation.predictions import read_predictions, write_predictions

    cfg = _copy_study(study, tmp_path, labels=ACTIVE)
    for v in cfg.variant_names:  # what a run with labels [A, B, C, D] writes: four columns, 4 x 4 couplings
        for k in range(cfg.n_folds):
            out = cfg.train_dir(k, v)
            for f in out.glob("pred_*.csv"):
                df, meta = read_predictions(f)
                write_predictions(f, df["image"], ACTIVE, df[ACTIVE].to_numpy(float),
                                  {key: val for key, val in meta.items() if key not in ("labels", "n")})
            for name in ("coupling.csv", "effective_coupling.csv"):
                if (out / name).is_file():
                    m = pd.read_csv(out / name, index_col=0).loc[ACTIVE, ACTIVE]
                    m.to_csv(out / name, float_format="%.6f")
    # the ten dropped labels were never scorable: every macro AUC is as with all 14 labels
    assert S.final_test_table(cfg)["macro AUC"].to_numpy(float) == pytest.approx(
        [13 / 24, 2 / 3, 13 / 24, 13 / 24, 2 / 3], abs=TOL)
    assert S.lambda_sweep(cfg)["test ensemble macro AUC"].to_numpy(float) == pytest.approx(
        [13 / 24, 2 / 3, 2 / 3], abs=TOL)
    abl = S.ablation(cfg)
    assert abl["per_fold"].loc["fold 0"].to_numpy(float) == pytest.approx([0.625, 1.0, 0.5, 0.625, 1.0], abs=TOL)
    assert list(abl["per_label_delta"].index) == ACTIVE


# --- analysis functions of the notebooks, on inputs small enough to do by hand -----------------------
def test_prevalence_and_data_quality_by_hand():
    table = pd.DataFrame({"X": [1, 0, np.nan, 1, 0], "Y": [0, 0, 0, np.nan, np.nan]})
    prev = A.prevalence(table, ["X", "Y"])
    # X: 2 positives of 4 known -> 0.5; Y: 0 of 3 -> 0
    assert prev.to_dict("index") == {"X": {"positives": 2, "known": 4, "prevalence": 0.5},
                                     "Y": {"positives": 0, "known": 3, "prevalence": 0.0}}
    quality = A.data_quality_table(table, ["X", "Y"], excluded=pd.DataFrame({"image": ["z1", "z2"]}))
    # last row: images kept (5), excluded (2), images with every label unknown (none: row 2 has Y = 0)
    assert quality.to_dict("index") == {"X": {"positive": 2, "negative": 2, "unknown (masked)": 1},
                                        "Y": {"positive": 0, "negative": 3, "unknown (masked)": 2},
                                        "images: kept / excluded / all labels unknown":
                                            {"positive": 5, "negative": 2, "unknown (masked)": 0}}


def test_dataset_summary_by_hand():
    table = pd.DataFrame({
        "image": ["i0", "i1", "i2", "i3", "i4", "i5"],
        "patient_id": ["p0", "p0", "p0", "p1", "p1", "p2"],
        "study": ["s0", "s0", "s1", "s2", "s3", "s4"],
        "view": pd.Series(["PA", "PA", "AP", "PA", np.nan, "AP"], dtype=object),
        "X": [1, 0, 1, np.nan, 0, 1], "Y": [1, np.nan, 0, np.nan, 0, 1]})
    s = A.dataset_summary(table, ["X", "Y"])
    # studies per patient: p0 {s0, s1} = 2, p1 {s2, s3} = 2, p2 {s4} = 1 -> 5, mean 5/3
    # positives per image: 2, 0, 1, 0, 0, 2 -> 5/6; unknown entries: 3
    assert s["images"] == 6 and s["patients"] == 3 and s["studies"] == 5
    assert s["studies per patient (mean)"] == pytest.approx(5 / 3, abs=TOL)
    assert s["positive labels per image (mean)"] == pytest.approx(5 / 6, abs=TOL)
    assert s["unknown label entries"] == 3
    assert s["views"] == "PA: 3, AP: 2, nan: 1"


def test_label_correlation_pairwise_over_known_entries():
    y = np.array([[1, 1, 1], [0, 0, 1], [1, 0, 1], [0, np.nan, 1], [np.nan, 1, 1]], dtype=float)
    corr = A.label_correlation(y, ["X", "Y", "Z"])
    # X, Y over rows 0-2: X (1, 0, 1), Y (1, 0, 0); centred (1/3, -2/3, 1/3), (2/3, -1/3, -1/3):
    # sum 2/9 + 2/9 - 1/9 = 1/3, norms^2 6/9 each -> r = (1/3) / (6/9) = 0.5. Z is constant: NaN.
    assert corr.loc["X", "Y"] == pytest.approx(0.5, abs=TOL) and corr.loc["Y", "X"] == pytest.approx(0.5, abs=TOL)
    assert corr.loc["X", "X"] == pytest.approx(1.0, abs=TOL)
    assert corr["Z"].isna().all() and corr.loc["Z"].isna().all()


def test_conditional_probability_and_top_k_by_hand():
    # 5 images x 4 labels; W never positive, Z unknown on image 1
    y = pd.DataFrame({"X": [1, 1, 1, 0, 0], "Y": [1, 1, 0, 1, 0], "Z": [1, np.nan, 0, 1, 1], "W": [0, 0, 0, 0, 0]},
                     dtype=float)
    cond = A.conditional_probability(y, list(y.columns))
    assert list(cond.index) == list(cond.columns) == ["X", "Y", "Z", "W"]
    # P(Y | X) = 2/3; P(Z | X): X positive on 0, 1, 2, Z known on 0 and 2, positive on 0 -> 1/2
    # P(X | Y) = 2/3, P(Z | Y): Y on 0, 1, 3, Z known on 0, 3, positive both -> 1
    # P(X | Z) = 1/3 (Z on 0, 3, 4), P(Y | Z) = 2/3; P(W | .) = 0; row W: no positive -> NaN
    assert cond.loc["X"].to_numpy() == pytest.approx([1, 2 / 3, 1 / 2, 0], abs=TOL)
    assert cond.loc["Y"].to_numpy() == pytest.approx([2 / 3, 1, 1, 0], abs=TOL)
    assert cond.loc["Z"].to_numpy() == pytest.approx([1 / 3, 2 / 3, 1, 0], abs=TOL)
    assert cond.loc["W"].isna().all()
    top = A.top_k_conditional(cond, 2)
    # column of each label without its diagonal and NaN, two largest: X (2/3, 1/3) -> 1/2;
    # Y (2/3, 2/3) -> 2/3; Z (1, 1/2) -> 3/4; W (0, 0) -> 0
    assert top.to_numpy() == pytest.approx([1 / 2, 2 / 3, 3 / 4, 0], abs=TOL)
    # fewer others than k: the mean of those there are (X from Y and Z only, W's row is NaN: (2/3 + 1/3) / 2)
    assert A.top_k_conditional(cond, 5)["X"] == pytest.approx(0.5, abs=TOL)


def test_sparsity_tolerance_is_inclusive_and_ignores_the_diagonal():
    a = np.array([[5.0, 0.001, -0.001], [0.0011, 7.0, 0.0], [-0.002, 1e-4, 0.0]])
    # off-diagonal: 0.001 (zero), -0.001 (zero), 0.0011 (non-zero), 0 (zero), -0.002 (non-zero), 1e-4 (zero)
    assert A.sparsity(a) == pytest.approx(4 / 6, abs=TOL)
    assert A.sparsity(a, tol=0.0015) == pytest.approx(5 / 6, abs=TOL)
    assert A.sparsity(pd.DataFrame(a)) == A.sparsity(a)


def test_fold_agreement_and_across_fold_std_by_hand():
    probs = {"f0": np.array([[.75, .25], [.25, .75]]), "f1": np.array([[.75, .25], [.75, .25]]),
             "f2": np.array([[.5, .25], [.25, .25]])}
    corr, agree = A.fold_agreement(probs, threshold=0.5)
    # flattened: f0 (.75 .25 .25 .75), f1 (.75 .25 .75 .25), f2 (.5 .25 .25 .25)
    # centred: f0 (.25 -.25 -.25 .25), f1 (.25 -.25 .25 -.25), f2 (.1875 -.0625 -.0625 -.0625)
    # f0.f1 = 0 -> r 0; f0.f2 = .046875 + .015625 + .015625 - .015625 = .0625,
    # |f0|^2 = .25, |f2|^2 = .03515625 + 3 * .00390625 = .046875 -> r = .0625 / sqrt(.01171875) = 1/sqrt(3);
    # f1.f2 = .046875 + .015625 - .015625 + .015625 = .0625 -> 1/sqrt(3)
    r3 = 1 / math.sqrt(3)
    assert corr.to_numpy() == pytest.approx(np.array([[1, 0, r3], [0, 1, r3], [r3, r3, 1]]), abs=TOL)
    # decisions at p >= 0.5 (0.5 itself is present): f0 (1 0 0 1), f1 (1 0 1 0), f2 (1 0 0 0)
    assert agree.to_numpy() == pytest.approx(np.array([[1, .5, .75], [.5, 1, .75], [.75, .75, 1]]), abs=TOL)
    std = A.across_fold_std(probs, ["X", "Y"])
    # per entry, population sd over the 3 folds, then the mean over the 2 images:
    #   X: (.75 .75 .5) -> sqrt(1/72); (.25 .75 .25) -> sqrt(1/18) = 2 sqrt(1/72); mean 1.5 sqrt(1/72) = 1/(4 sqrt 2)
    #   Y: (.25 .25 .25) -> 0; (.75 .25 .25) -> sqrt(1/18); mean sqrt(1/18)/2 = 1/(6 sqrt 2)
    assert std.to_dict() == pytest.approx({"X": 1 / (4 * math.sqrt(2)), "Y": 1 / (6 * math.sqrt(2))}, abs=TOL)


def test_recovery_scores_on_a_hand_made_true_matrix():
    labels = ["X", "Y", "Z"]
    ninf = -np.inf
    true = pd.DataFrame([[0, 2.0, ninf], [1.0, 0, -0.5], [ninf, 3.0, 0]], index=labels, columns=labels)
    learned = pd.DataFrame([[9, 0.3, -0.1], [0.2, 9, 0.4], [0.05, 0.6, 9]], index=labels, columns=labels)
    rec = A.recovery_scores(learned, true, top=3)
    # finite off-diagonal true pairs by magnitude: Z->Y 3.0, X->Y 2.0, Y->X 1.0 (Y->Z -0.5 is 4th)
    # learned there: 0.6, 0.3, 0.2 -> same order: Spearman 1, signs all agree;
    # exclusive pairs X->Z (-0.1 < 0) and Z->X (0.05): half negative
    assert rec == {"pairs": 3, "sign_agreement": 1.0, "spearman": pytest.approx(1.0, abs=TOL),
                   "exclusive_pairs_negative": 0.5}
    rec4 = A.recovery_scores(learned, true, top=4)
    # adding Y->Z (true -0.5, learned 0.4): sign agreement 3/4; learned ranks of (3, 2, 1, -.5)-ordered pairs
    # (0.6, 0.3, 0.2, 0.4) -> ranks (4, 2, 1, 3) vs true ranks (4, 3, 2, 1): d = (0, -1, -1, 2), rho = 1 - 36/60
    assert rec4["sign_agreement"] == 0.75 and rec4["spearman"] == pytest.approx(0.4, abs=TOL)


def test_best_recovery_takes_the_first_variant_on_ties():
    rec = pd.DataFrame({"spearman": [0.7, 0.7, float("nan")]},
                       index=pd.MultiIndex.from_tuples([("sparse", "mean"), ("cooc_gcn", "mean"), ("sparse_prior", "mean")]))
    assert S.best_recovery(rec) == "sparse"


def test_loader_report_lists_the_loaders_counts_and_the_decoding():
    quality = {"views": {"views": ["PA"], "kept": 7, "dropped": 3, "dropped_views": {"LATERAL": 3}}, "age_zero": 2}
    report = A.loader_report(quality, {"PNG 8-bit": 5, "DICOM MONOCHROME1, window centre/width": 2})
    rows = [tuple(r) for r in report.itertuples(index=False)]
    assert rows == [("views", "views", "['PA']"), ("views", "kept", 7), ("views", "dropped", 3),
                    ("views: dropped_views", "LATERAL", 3), ("age_zero", "", 2), ("images decoded as", "PNG 8-bit", 5),
                    ("images decoded as", "DICOM MONOCHROME1, window centre/width", 2)]
    assert A.loader_report({}, {}).empty and list(A.loader_report({}, {}).columns) == ["what", "item", "value"]


# --- 08_trust: calibration, operating points, subgroups of the hand-made study ------------------------
def test_trust_calibration_of_the_test_ensembles(study):
    from scipy.special import expit, logit

    cal = S.calibration(study)
    table = cal["table"]
    assert list(table.index.names) == ["variant", "calibration", "label"]
    assert list(table.index.get_level_values("variant").unique()) == study.variant_names  # no oracle: not a phantom
    assert list(table.columns) == ["entries", "positives", "mean predicted", "observed", "ECE", "Brier", "bins"]
    none = table.xs(("none", "none"), level=("variant", "calibration"))
    # `none`'s test ensemble, 10 equal-mass bins (tied scores share a bin):
    #   A  .625 on the 4 positives, .3125 on the 4 negatives: two bins, (|1 - .625| + |0 - .3125|) / 2 = .34375;
    #      Brier (4 * .375^2 + 4 * .3125^2) / 8 = .119140625
    #   B  .25 everywhere, 4 of 8 positive: one bin, |.5 - .25| = .25;  Brier (.75^2 + .25^2) / 2 = .3125
    #   C  reversed (.25 on positives, .75 on negatives): |1 - .25| = |0 - .75| = .75;  Brier .5625
    #   D  D_MW: percentile edges .2125 .3 .375 .375 .5 .625 .625 .7 .7875 -> bins {.125-}, {.25-}, {.375- .375+},
    #      {.625+ .625-}, {.75+}, {.875-}: (.125 + .25 + 2 * .125 + 2 * .125 + .25 + .875) / 8 = .25;
    #      Brier (.125^2 + .375^2 + .375^2 + .625^2 + .875^2 + .25^2 + .625^2 + .25^2) / 8 = 1.96875 / 8
    #   the ten inactive labels: 1/16 on 8 negatives: ECE 1/16, Brier 1/256
    ece = {LA: 0.34375, LB: 0.25, LC: 0.75, LD: 0.25, **{lab: 1 / 16 for lab in INACTIVE}}
    brier = {LA: 0.119140625, LB: 0.3125, LC: 0.5625, LD: 1.96875 / 8, **{lab: 1 / 256 for lab in INACTIVE}}
    for lab in LABELS:
        assert none.loc[lab, ["ECE", "Brier"]].tolist() == pytest.approx([ece[lab], brier[lab]], abs=TOL), lab
    assert none.loc["macro (mean over labels)", "ECE"] == pytest.approx(sum(ece.values()) / 14, abs=TOL)
    # every label has 8 known entries: the pooled Brier is the mean of the labels'
    assert none.loc["pooled (all entries)", "Brier"] == pytest.approx(sum(brier.values()) / 14, abs=TOL)
    assert (table["bins"] == 10).all() and none.loc[LA, ["entries", "positives"]].tolist() == [8, 4]
    # the maps are fitted on the out-of-fold validation predictions: 12 images, each once
    maps = cal["maps"].loc["none"]
    assert maps.loc[ACTIVE, "entries"].tolist() == [12] * 4 and maps.loc[ACTIVE, "positives"].tolist() == [6] * 4
    assert not maps.loc[INACTIVE, "fitted"].any() and (maps.loc[INACTIVE, "temperature"] == 1).all()
    # B of `none` scores .375 on all 12 validation images, 6 positive: the likelihood wants sigmoid(z / T) = 1/2,
    # T -> infinity, so T stops at its bound 100, and Platt sends .375 to 1/2
    assert maps.loc[LB, "temperature"] == pytest.approx(100.0, rel=1e-9)
    assert expit(maps.loc[LB, "platt a"] * logit(0.375) + maps.loc[LB, "platt b"]) == pytest.approx(0.5, abs=1e-6)
    # on test, B (.25 everywhere) becomes sigmoid(logit(.25) / 100) under temperature scaling
    after = table.loc[("none", "temperature", LB), "ECE"]
    assert after == pytest.approx(0.5 - expit(logit(0.25) / 100), abs=1e-9)
    # the inactive labels keep their identity map
    assert table.loc[("none", "platt", INACTIVE[0]), "ECE"] == pytest.approx(1 / 16, abs=1e-9)
    ov = cal["overview"]
    assert list(ov.columns) == ["ECE (macro)", "ECE (pooled)", "Brier (macro)", "Brier (pooled)", "bins"]
    assert ov.loc[("none", "none"), "ECE (macro)"] == pytest.approx(sum(ece.values()) / 14, abs=TOL)
    assert set(cal["headline"]) == {f"ece_macro_{v}" for v in study.variant_names}
    assert cal["headline"]["ece_macro_none"].startswith(f"{sum(ece.values()) / 14:.3f} -> ")


def test_trust_operating_points(study):
    ops = S.operating_points(study)  # the main variant, sparse
    assert list(ops.columns[:4]) == ["variant", "label", "method", "threshold"] and set(ops["variant"]) == {"sparse"}
    ops = ops.set_index(["label", "method"])
    target = "sensitivity>=0.90"
    # out-of-fold validation of sparse: A, B, C perfect (.75 / .25) in both folds -> both thresholds .75.
    # D: fold 0 perfect (3 positives at .75, 3 negatives at .25), fold 1 .375 on all six (3 positive):
    #   threshold .75: TPR 1/2, FPR 0;  .375: TPR 1, FPR 1/2 -> J 1/2 at both: Youden takes the higher, .75;
    #   sensitivity >= .9 first at .375
    assert ops.loc[[(lab, m) for lab in ACTIVE for m in ("youden", target)], "threshold"].tolist() == [
        .75, .75, .75, .75, .75, .75, .75, .375]
    assert ops.loc[[(lab, "youden") for lab in INACTIVE], "threshold"].isna().all()  # no positive: no threshold
    counts = ["TP", "FP", "TN", "FN"]
    # validation (what the thresholds were chosen on): D at .75: TP 3, FP 0, TN 6, FN 3; at .375: 6, 3, 3, 0
    assert ops.loc[(LD, "youden"), [f"val {c}" for c in counts]].tolist() == [3, 0, 6, 3]
    assert ops.loc[(LD, target), [f"val {c}" for c in counts]].tolist() == [6, 3, 3, 0]
    # test ensemble: A reversed (positives .25 < .75): TP 0, FP 4, TN 0, FN 4; B and C perfect
    assert ops.loc[(LA, "youden"), [f"test {c}" for c in counts]].tolist() == [0, 4, 0, 4]
    assert ops.loc[(LB, "youden"), [f"test {c}" for c in counts]].tolist() == [4, 0, 4, 0]
    # D on test (positives t1 .625, t6 .375, t7 .75; negatives .125 .375 .625 .875 .25):
    #   at .75: called t4 (-), t7 (+): TP 1, FP 1, TN 4, FN 2 -> sens 1/3, spec 4/5, PPV 1/2, NPV 2/3
    #   at .375: t1 t6 t7 (+), t2 t3 t4 (-): TP 3, FP 3, TN 2, FN 0 -> sens 1, spec 2/5, PPV 1/2, NPV 1
    rates = ["sensitivity", "specificity", "PPV", "NPV"]
    assert ops.loc[(LD, "youden"), [f"test {c}" for c in counts]].tolist() == [1, 1, 4, 2]
    assert ops.loc[(LD, "youden"), [f"test {r}" for r in rates]].tolist() == pytest.approx([1 / 3, 4 / 5, 1 / 2, 2 / 3])
    assert ops.loc[(LD, target), [f"test {r}" for r in rates]].tolist() == pytest.approx([1, 2 / 5, 1 / 2, 1])
    # where nothing can vary the intervals are points: B perfect, A's sensitivity 0 in every replicate
    assert ops.loc[(LB, "youden"), ["test sensitivity low", "test sensitivity high"]].tolist() == [1.0, 1.0]
    assert ops.loc[(LA, "youden"), ["test sensitivity low", "test sensitivity high"]].tolist() == [0.0, 0.0]
    head = S.operating_point_headline(study, ops.reset_index())
    # Youden over A-D: sensitivity (0 + 1 + 1 + 1/3) / 4 = 7/12, specificity (0 + 1 + 1 + 4/5) / 4 = 0.7;
    # target: sensitivity (0 + 1 + 1 + 1) / 4 = 0.75, B C D reach 0.9 (3 of 4)
    assert head == {"operating_points_sparse_youden": "mean test sensitivity 0.58, specificity 0.70 over 4 labels",
                    "operating_points_sparse_sensitivity": "mean test sensitivity 0.75, specificity 0.60 over 4 "
                                                           "labels; a share of 0.75 of them reach the target on test"}


def test_trust_subgroups(study):
    sub = S.subgroup_analysis(study, min_cases=1)
    auc = sub["auc"].loc["sparse"]
    assert list(auc.index.get_level_values("attribute").unique()) == ["sex", "age band", "view"]
    # view: AP t0 t2 t4 t6, PA t1 t3 t5 t7. sparse: A reversed -> 0, B perfect -> 1, C single-class in each view;
    # D in AP: positive t6 .375 against .125 (win), .375 (tie), .875 (lose) -> 1.5 / 3 = 1/2;
    #   in PA: t1 .625 against .625 (tie), .25 (win); t7 .75 against both (win) -> 3.5 / 4 = 7/8.
    # macro set (min 1 positive and negative patient in each view): A, B, D -> AP 1/2, PA (0 + 1 + 7/8) / 3 = 5/8
    view = auc.loc["view"]
    for (group, lab), value in {("AP", LA): 0, ("AP", LB): 1, ("AP", LD): 0.5, ("AP", "macro"): 0.5,
                                ("PA", LA): 0, ("PA", LB): 1, ("PA", LD): 7 / 8, ("PA", "macro"): 5 / 8}.items():
        assert view.loc[(group, lab), "AUC"] == pytest.approx(value, abs=TOL), (group, lab)
    assert np.isnan(view.loc[("AP", LC), "AUC"]) and not view.loc[("AP", LC), "in macro"]
    gap = sub["gap"].loc[("sparse", "view", "PA - AP")]
    assert list(gap.index) == [LA, LB, LD, "macro"]
    assert gap["gap"].tolist() == pytest.approx([0, 0, 3 / 8, 1 / 8], abs=TOL)
    assert gap.loc[LB, ["low", "high", "p_value"]].tolist() == [0.0, 0.0, 1.0]  # 1 - 1 in every replicate
    # age band: <50 t0-t3, >=65 t4-t7; A is single-class in each. D in <50: t1 .625 against .125 .375 .625
    # -> 2.5 / 3 = 5/6; in >=65: t6 .375 and t7 .75 against .875 (lose), .25 (win) -> 2/4 = 1/2.
    # macro over B, C, D: <50 (1 + 1 + 5/6) / 3 = 17/18, >=65 (1 + 1 + 1/2) / 3 = 5/6
    age = auc.loc["age band"]
    assert age.loc[("<50", "macro"), "AUC"] == pytest.approx(17 / 18, abs=TOL)
    assert age.loc[(">=65", "macro"), "AUC"] == pytest.approx(5 / 6, abs=TOL)
    assert sub["gap"].loc[("sparse", "age band", ">=65 - <50", "macro"), "gap"] == pytest.approx(-1 / 9, abs=TOL)
    # sex: every test image F -> one group, no gap; its macro is the test ensemble's, 2/3
    assert auc.loc[("sex", "F", "macro"), "AUC"] == pytest.approx(2 / 3, abs=TOL)
    assert "sex" not in sub["gap"].index.get_level_values("attribute")


def test_trust_view_confounder_and_group_operating_points(study):
    sub = S.subgroup_analysis(study, min_cases=1)
    ops = S.subgroup_operating_points(study, S.operating_points(study))
    # D at its Youden threshold .75 on the AP films t0 (.125 -), t2 (.375 -), t4 (.875 -), t6 (.375 +):
    # called t4 -> TP 0, FP 1, TN 2, FN 1: sensitivity 0, specificity 2/3
    row = ops.loc[("view", "AP", LD, "youden")]
    assert [row[c] for c in ("TP", "FP", "TN", "FN")] == [0, 1, 2, 1]
    assert (row["sensitivity"], row["specificity"]) == pytest.approx((0, 2 / 3), abs=TOL)
    # Cardiomegaly is label B: perfect in both views (positives .75, negatives .25, threshold .75), half positive
    table = S.view_confounder(sub, ops)
    assert list(table.index) == [("sparse", "AP"), ("sparse", "PA")]
    assert list(table.columns) == ["images", "positives", "observed", "mean predicted", "AUC", "low", "high",
                                   "sensitivity at Youden", "specificity at Youden"]
    assert table.to_numpy(dtype=float) == pytest.approx(np.array([[4, 2, 0.5, 0.5, 1, 1, 1, 1, 1]] * 2), abs=TOL)
    # the view shift of B: on test its negatives t2 t3 t6 t7 (AP, PA, AP, PA) all score .25 and its positives .75:
    # every PA-AP pair ties -> 1/2 in every replicate; out of fold every image is PA: no comparison there
    shift = S.view_shift(study)
    assert list(shift.index) == [("sparse", "test ensemble", "negatives", "PA vs AP"),
                                 ("sparse", "test ensemble", "positives", "PA vs AP")]
    assert shift[["images", "reference images", "pairs", "AUC", "low", "high"]].to_numpy(dtype=float) == pytest.approx(
        np.array([[2, 2, 4, 0.5, 0.5, 0.5]] * 2), abs=TOL)
    assert S.confounder_headline(table, sub, shift) == {
        "cardiomegaly_by_view": "sparse: AUC PA - AP +0.000 [+0.000, +0.000]; mean predicted / observed "
                                "AP 0.50 / 0.50, PA 0.50 / 0.50",
        "cardiomegaly_view_shift": "sparse, test ensemble: Cardiomegaly-negative AP films score above PA films "
                                   "in 0.50 [0.50, 0.50] of pairs"}
    assert S.view_confounder(sub, ops, label="No Such Label") is None and S.confounder_headline(None, sub) == {}
    assert S.view_shift(study, label="No Such Label") is None
