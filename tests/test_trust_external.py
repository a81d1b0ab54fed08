"""08_trust and the ensembles on the hand-made study of test_study_analyses: the operating points
scored at the external site from 07's cached predictions, true labels matched to the prediction
columns by name, and fold prediction files of different images refused by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_study_analyses import ACTIVE, LA, LABELS, LB, LD, TEST_IMAGES, study  # noqa: F401  (the fixture)

from cxrkit import study as S
from cxrkit.study.config import StudyError

TARGET = "sensitivity>=0.90"
COUNTS = ["TP", "FP", "TN", "FN"]


def _copy(hand: S.StudyConfig, tmp_path: Path, **changes: object) -> S.StudyConfig:
    """A copy of the hand-made study (data, folds, runs) with ``changes`` to its parameters."""
    root = tmp_path / "copy"
    shutil.copytree(Path(hand.data).parent, root)
    return S.load_study(root / "hand.yaml", data=str(root / "data"), runs=str(root / "runs"),
                        reports=str(root / "reports"), **changes).validate()


def _external_site(root: Path) -> Path:
    """Four images e0-e3, one patient each: Atelectasis (A) positive on e0 and e1, every other label 0."""
    rows = [{"Image_name": f"e{i}", "Patient_ID": f"ep{i}", **{lab: 0 for lab in LABELS}} for i in range(4)]
    for i in (0, 1):
        rows[i][LA] = 1
    root.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def _cache_external(cfg: S.StudyConfig, variant: str, fingerprint: str | None = None) -> None:
    """What 07_external leaves for ``variant``: its predictions at the site, with the sidecar of the
    data, the checkpoints (a stand-in best.pt per fold) and TTA. Scores: A .75 .25 .75 .25, D .5,
    the others 1/16."""
    from cxrkit.data.datasets import fingerprint as data_fingerprint
    from cxrkit.evaluation.predictions import write_predictions
    from cxrkit.evaluation.sources import file_sha256

    runs = [cfg.train_dir(k, variant) for k in range(cfg.n_folds)]
    for run in runs:
        (run / "best.pt").write_bytes(b"stand-in checkpoint")
    scores = np.full((4, len(LABELS)), 0.0625)
    scores[:, LABELS.index(LA)] = [0.75, 0.25, 0.75, 0.25]
    scores[:, LABELS.index(LD)] = 0.5
    fp = fingerprint or data_fingerprint(S.external_dataset(cfg)[0].table)
    write_predictions(S.external_folder(cfg) / f"{variant}.csv", [f"e{i}" for i in range(4)], list(LABELS), scores,
                      {"data_fingerprint": fp, "split": "external", "fold": None, "variant": variant,
                       "tta": cfg.train_config(0, variant).tta, "runs": [{"sha256": file_sha256(r / "best.pt")}
                                                                         for r in runs]})


def test_operating_points_are_scored_at_the_external_site(study, tmp_path):  # noqa: F811
    cfg = _copy(study, tmp_path, external={"data": str(_external_site(tmp_path / "ext")), "dataset": "gxs"})
    _cache_external(cfg, "sparse")
    ops = S.operating_points(cfg)
    assert ops.attrs["external"] == ("external site 'gxs': 4 images, 4 patients; thresholds scored on the 14 "
                                     "label(s) it annotates")
    ops = ops.set_index(["label", "method"])
    # the thresholds are those chosen on validation (test_trust_operating_points): A .75, D .75 and .375
    # A at .75: e0 (+ .75) TP, e1 (+ .25) FN, e2 (- .75) FP, e3 (- .25) TN
    assert ops.loc[(LA, "youden"), [f"external {c}" for c in COUNTS]].tolist() == [1, 1, 1, 1]
    assert ops.loc[(LA, "youden"), ["external sensitivity", "external specificity", "external PPV",
                                    "external NPV"]].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5])
    # D has no positive there; its .5 is under .75 (4 TN) and over .375 (4 FP)
    assert ops.loc[(LD, "youden"), [f"external {c}" for c in COUNTS]].tolist() == [0, 0, 4, 0]
    assert ops.loc[(LD, TARGET), [f"external {c}" for c in COUNTS]].tolist() == [0, 4, 0, 0]
    assert ops.loc[(LD, TARGET), "external specificity"] == 0 and np.isnan(ops.loc[(LD, TARGET), "external sensitivity"])
    assert {"external sensitivity low", "external sensitivity high"} <= set(ops.columns)
    # the test columns are unchanged (test_trust_operating_points: D at .75 on test)
    assert ops.loc[(LD, "youden"), [f"test {c}" for c in COUNTS]].tolist() == [1, 1, 4, 2]


def test_operating_points_skip_an_external_site_without_current_predictions(study, tmp_path):  # noqa: F811
    assert S.operating_points(study).attrs["external"] == "no external site (the study has no 'external:' block)"
    cfg = _copy(study, tmp_path, external={"data": str(_external_site(tmp_path / "ext")), "dataset": "gxs"})
    ops = S.operating_points(cfg)
    assert "run 07_external first" in ops.attrs["external"] and not any(c.startswith("external") for c in ops.columns)
    _cache_external(cfg, "sparse", fingerprint="0" * 16)  # made on other data: stale
    ops = S.operating_points(cfg)
    assert "run 07_external first" in ops.attrs["external"] and not any(c.startswith("external") for c in ops.columns)


def test_true_labels_in_the_order_asked_for(study):  # noqa: F811
    images = ["t1", "t6", "t0"]
    # TEST_IMAGES (A, B, C, D): t1 (1, 1, 0, 1), t6 (0, 0, 1, 1), t0 (1, 1, 1, 0)
    assert S.true_labels(study, images, [LD, LA]).tolist() == [[1, 1], [1, 0], [0, 1]]
    assert S.true_labels(study, images).shape == (3, len(LABELS))  # default: the table's labels
    with pytest.raises(StudyError, match=r"no true labels for \['Nope'\]"):
        S.true_labels(study, images, [LA, "Nope"])


def _reorder_columns(cfg: S.StudyConfig) -> None:
    """Rewrite every prediction file of every run with its label columns in reverse order."""
    from cxrkit.evaluation.predictions import read_predictions, write_predictions

    for v in cfg.variant_names:
        for k in range(cfg.n_folds):
            for f in cfg.train_dir(k, v).glob("pred_*.csv"):
                df, meta = read_predictions(f)
                cols = list(reversed(LABELS))
                write_predictions(f, df["image"], cols, df[cols].to_numpy(float),
                                  {key: val for key, val in meta.items() if key not in ("labels", "n")})


def test_scores_and_true_labels_are_matched_by_label_name(study, tmp_path):  # noqa: F811
    """Prediction files whose columns are in another order than the dataset table's give the same
    operating points, calibration and stacking headroom (values of test_study_analyses)."""
    cfg = _copy(study, tmp_path)
    _reorder_columns(cfg)
    ops = S.operating_points(cfg).set_index(["label", "method"])
    assert ops.loc[[(lab, m) for lab in ACTIVE for m in ("youden", TARGET)], "threshold"].tolist() == [
        .75, .75, .75, .75, .75, .75, .75, .375]
    assert ops.loc[(LD, "youden"), [f"test {c}" for c in COUNTS]].tolist() == [1, 1, 4, 2]
    assert ops.loc[(LA, "youden"), [f"test {c}" for c in COUNTS]].tolist() == [0, 4, 0, 4]
    # calibration of `none`'s test ensemble: B .25 everywhere with 4 of 8 positive -> ECE .25
    table = S.calibration(cfg)["table"]
    assert table.loc[("none", "none", LB), "ECE"] == pytest.approx(0.25)
    # headroom: the unstacked test macro AUC of sparse is its ensemble's, 2/3 (test_trust_subgroups)
    assert S.stacking_headroom(cfg).loc["sparse", "test macro AUC"] == pytest.approx(2 / 3)


def test_folds_predicting_other_images_are_refused_by_name(study, tmp_path):  # noqa: F811
    from cxrkit.evaluation.predictions import read_predictions, write_predictions

    cfg = _copy(study, tmp_path)
    for v in cfg.variant_names:  # fold 1 lost the test image t7
        f = cfg.train_dir(1, v) / "pred_test.csv"
        df, meta = read_predictions(f)
        df = df[df["image"] != "t7"]
        write_predictions(f, df["image"], list(LABELS), df[list(LABELS)].to_numpy(float),
                          {key: val for key, val in meta.items() if key not in ("labels", "n")})
    assert "t7" in TEST_IMAGES
    match = r"none/fold1/pred_test\.csv: the fold's predictions are not of the same images .*missing \['t7'\]"
    with pytest.raises(StudyError, match=match):
        S.calibration(cfg)
    with pytest.raises(StudyError, match=match):
        S.stacking_headroom(cfg)
