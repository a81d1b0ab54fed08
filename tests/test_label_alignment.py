"""External validation (issue 13): a model's labels aligned with a target dataset's by name,
after each loader's mapping (NIH's ``Effusion`` is ``Pleural Effusion``), and ``cxrkit evaluate``
on a target with fewer, more and renamed labels: the shared labels scored (per-label and macro
AUC with the patient bootstrap), the ones the target lacks NaN and listed, its extra ones listed;
files made on other data, or sharing no label, still refused. Hand-made prediction files, no
training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from target_helpers import NIH_SHARED, NIH_SPELLING, write_nih_target

from cxrkit.cli import main
from cxrkit.data.datasets import create_dataset, fingerprint
from cxrkit.data.labels import CHEXPERT_LABELS, NIH_LABELS
from cxrkit.evaluation import evaluate as E
from cxrkit.evaluation.alignment import align_labels, dataset_labels, target_dataset
from cxrkit.evaluation.evaluate import evaluate_files, per_label_ci
from cxrkit.evaluation.metrics import per_label_auc
from cxrkit.evaluation.predictions import PredictionMismatch, write_predictions
from cxrkit.utils.params import ConfigError


@pytest.fixture(scope="module")
def nih(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every image of the tiny phantom as an NIH ChestX-ray14 folder (tests/target_helpers.py)."""
    return write_nih_target(tiny_phantom, tmp_path_factory.mktemp("nih"))


def _predictions(path: Path, target: Path, dataset: str, labels: list[str], seed: int = 0) -> pd.DataFrame:
    """Random-but-informative scores of ``labels`` for every image of ``target``, with the sidecar
    ``cxrkit infer --dataset`` would write (the fingerprint of the table on the shared labels)."""
    ds, _ = target_dataset(dataset, target, {}, labels, check_images=False)
    table = ds.table
    rng = np.random.default_rng(seed)
    probs = rng.random((len(table), len(labels)))
    for j, lab in enumerate(labels):
        if lab in table.columns:
            probs[:, j] = 0.6 * table[lab].fillna(0).to_numpy() + 0.7 * probs[:, j]
    write_predictions(path, table["image"], labels, probs, {"data_fingerprint": fingerprint(table), "split": "inference",
                                                           "fold": "ensemble", "variant": "sparse", "tta": True})
    return pd.DataFrame(probs, columns=labels).assign(image=table["image"].to_numpy())


def test_alignment_by_name_after_the_loaders_mapping() -> None:
    nih = dataset_labels("nih")
    assert "Pleural Effusion" in nih and "Effusion" not in nih  # the loader maps NIH's spelling
    a = align_labels(CHEXPERT_LABELS, nih)
    assert a.shared == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "No Finding", "Pleural Effusion",
                        "Pneumonia", "Pneumothorax"]
    assert a.lacking == ["Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity", "Pleural Other",
                         "Support Devices"]
    assert a.extra == [lab for lab in NIH_LABELS if lab not in CHEXPERT_LABELS]
    fewer = align_labels(["Pleural Effusion", "Fracture"], nih)
    assert fewer.shared == ["Pleural Effusion"] and fewer.lacking == ["Fracture"] and len(fewer.extra) == 14
    assert "lacking in nih (1, NaN, not scored): Fracture" in fewer.describe("nih")
    with pytest.raises(ValueError, match=r"'Effusion' \(did you mean 'Pleural Effusion'\?\)"):
        align_labels(["Effusion"], nih)  # an unknown name would never match: refused, not skipped
    merged = {"sources": [{"dataset": "nih", "data": "a"}, {"dataset": "gxs", "data": "b"}]}
    assert set(dataset_labels("merged", merged)) == set(CHEXPERT_LABELS) | set(NIH_LABELS)
    with pytest.raises(ConfigError, match="views"):
        dataset_labels("nih", {"views": ["LATERAL"]})


def test_evaluate_on_a_target_with_renamed_fewer_and_extra_labels(nih, tmp_path) -> None:
    pred = tmp_path / "p.csv"
    scores = _predictions(pred, nih, "nih", list(CHEXPERT_LABELS))
    report = evaluate_files([pred], data=nih, dataset="nih", n_boot=50)
    shared = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "No Finding", "Pleural Effusion",
              "Pneumonia", "Pneumothorax"]
    assert report["labels"]["scored"] == shared and len(report["labels"]["lacking"]) == 6
    col = report["table"].iloc[:, 0]
    assert list(col.index[:14]) == [f"AUC {lab}" for lab in CHEXPERT_LABELS]  # the model's rows, in its order
    assert col[[f"AUC {lab}" for lab in report["labels"]["lacking"]]].isna().all()
    entry = pd.read_csv(nih / "Data_Entry_2017.csv", dtype=str).set_index("Image Index").loc[scores["image"]]
    findings = entry["Finding Labels"].str.split("|").tolist()
    y = np.array([[float(NIH_SPELLING.get(lab, lab) in f) for lab in shared] for f in findings])
    expected = per_label_auc(y, scores[shared].to_numpy(), shared)
    np.testing.assert_allclose(col[[f"AUC {lab}" for lab in shared]].to_numpy(), expected.to_numpy(), atol=1e-12)
    assert col["macro AUC"] == pytest.approx(np.nanmean(expected.to_numpy()))
    assert col["macro AUC low"] <= col["macro AUC"] <= col["macro AUC high"]
    last = report["text"].splitlines()[-1]
    assert last.startswith("labels scored (8, shared by the model and nih)") and "Hernia" in last
    assert set(NIH_SHARED) <= set(shared)


def test_a_model_predicting_labels_the_phantom_lacks(tiny_phantom, tmp_path) -> None:
    """The other direction: an NIH-vocabulary model on the phantom (gxs) scores Pleural Effusion
    only; Mass and Nodule are lacking, and the phantom's other 13 labels extra."""
    pred = tmp_path / "p.csv"
    _predictions(pred, tiny_phantom, "gxs", ["Mass", "Pleural Effusion", "Nodule"])
    report = evaluate_files([pred], data=tiny_phantom, n_boot=50)
    assert report["labels"] == {"scored": ["Pleural Effusion"], "lacking": ["Mass", "Nodule"],
                                "extra": [lab for lab in CHEXPERT_LABELS if lab != "Pleural Effusion"]}
    col = report["table"].iloc[:, 0]
    assert np.isnan(col["AUC Mass"]) and col["macro AUC"] == col["AUC Pleural Effusion"]


def test_files_of_other_data_or_without_a_shared_label_are_still_refused(nih, tiny_phantom, tmp_path) -> None:
    pred = tmp_path / "p.csv"
    _predictions(pred, nih, "nih", list(CHEXPERT_LABELS))
    with pytest.raises(PredictionMismatch, match="fingerprint"):  # made on the NIH target, evaluated on the phantom
        evaluate_files([pred], data=tiny_phantom, n_boot=10)
    meta = json.loads(pred.with_suffix(".json").read_text())
    pred.with_suffix(".json").write_text(json.dumps({**meta, "data_fingerprint": "0" * 16}))
    with pytest.raises(PredictionMismatch, match="fingerprint 0000000000000000"):
        evaluate_files([pred], data=nih, dataset="nih", n_boot=10)
    none = tmp_path / "none.csv"
    _predictions(none, nih, "nih", ["Fracture", "Lung Lesion"])
    with pytest.raises(PredictionMismatch, match="predicts none of the labels"):
        evaluate_files([none], data=nih, dataset="nih", n_boot=10)


def test_training_predictions_keep_their_fingerprint(tiny_phantom) -> None:
    """A model whose labels the dataset all provides: the fingerprint is the table's as training
    computed it (labels in the model's order), so runs' own pred_*.csv still evaluate."""
    subset = ["Pneumonia", "Atelectasis"]
    ds, alignment = target_dataset("gxs", tiny_phantom, {}, subset, check_images=False)
    assert alignment.shared == subset and ds.labels == subset
    assert fingerprint(ds.table) == fingerprint(create_dataset("gxs", root=tiny_phantom, labels=subset,
                                                               check_images=False).table)


def test_cli_evaluate_says_which_labels(nih, tmp_path, capsys) -> None:
    pred = tmp_path / "p.csv"
    _predictions(pred, nih, "nih", list(CHEXPERT_LABELS))
    out = tmp_path / "m.csv"
    assert main(["evaluate", str(pred), "--data", str(nih), "--dataset", "nih", "--bootstrap", "20",
                 "--out", str(out)]) == 0
    assert "lacking in nih (6, NaN, not scored)" in capsys.readouterr().out
    written = json.loads(out.with_suffix(".json").read_text())
    assert written["labels"]["extra"][0] == "Infiltration"
    ci = written["per_label_auc"]["p.csv"]["Atelectasis"]  # each shared label's own patient-bootstrap CI
    assert ci["low"] <= ci["auc"] <= ci["high"] and ci["note"] == "" and "Fracture" not in written["per_label_auc"]["p.csv"]
    table = pd.read_csv(out, index_col=0).iloc[:, 0]
    assert table["AUC Atelectasis low"] == pytest.approx(ci["low"]) and table["AUC Atelectasis high"] == pytest.approx(ci["high"])
    assert table["AUC Atelectasis"] == pytest.approx(ci["auc"]) and np.isnan(table["AUC Fracture low"])
    assert main(["evaluate", str(pred), "--data", str(tmp_path), "--bootstrap", "20"]) == 2
    assert capsys.readouterr().err.startswith("cxrkit evaluate: error:")


def test_per_label_cis_and_labels_too_rare_for_them(monkeypatch) -> None:
    """Hand-checkable: A separates perfectly (AUC 1 in every replicate: CI [1, 1]); B has no
    positive (NaN, not scorable); C's bootstrap gives up (made to, here): NaN with the reason."""
    y = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0]] * 3, dtype=float)
    s = np.array([[0.9, 0.5, 0.2], [0.8, 0.5, 0.3], [0.1, 0.5, 0.4], [0.2, 0.5, 0.1]] * 3)
    real = E.bootstrap_macro_auc

    def boot(yy, ss, **kw):
        if kw["labels"] == ["C"]:
            raise ValueError("bootstrap: labels too rare for this resampling: C")
        return real(yy, ss, **kw)

    monkeypatch.setattr(E, "bootstrap_macro_auc", boot)
    out = per_label_ci(y, s, np.arange(12) // 2, ["A", "B", "C"], n_boot=50, seed=0)
    assert (out["A"]["auc"], out["A"]["low"], out["A"]["high"], out["A"]["note"]) == (1.0, 1.0, 1.0, "")
    assert np.isnan(out["B"]["low"]) and out["B"]["note"].startswith("not scorable: one class only")
    assert np.isnan(out["C"]["high"]) and "too rare for the bootstrap" in out["C"]["note"] and "C" in out["C"]["note"]
