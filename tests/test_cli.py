"""The scripted path of the README, end to end on a tiny phantom: synth, folds, train, predict,
evaluate, oracle."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cxrkit.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "phantom"
    assert main(["synth", "--out", str(data), "--patients", "60", "--size", "48", "--seed", "3",
                 "--workers", "1", "--quiet"]) == 0
    assert main(["folds", "--data", str(data), "--n-folds", "2", "--test-size", "0.25", "--seed", "0"]) == 0
    runs = {}
    for fold in (0, 1):
        for refiner in ("none", "sparse"):
            out = root / f"{refiner}_f{fold}"
            assert main(["train", "--data", str(data), "--splits", str(data / "folds.csv"), "--fold", str(fold),
                         "--refiner", refiner, "--backbone", "test_resnet", "--image-size", "32",
                         "--batch-size", "16", "--epochs", "1", "--no-progress", "--no-cache",
                         "--out", str(out)]) == 0
            runs[(refiner, fold)] = out
    return root, data, runs


def test_folds_file_written(workspace):
    _, data, _ = workspace
    folds = pd.read_csv(data / "folds.csv")
    assert set(folds["split"]) == {"train", "test"} and set(folds["fold"]) == {-1, 0, 1}


def test_predict_ensembles_folds_and_evaluate_compares(workspace, capsys):
    root, data, runs = workspace
    for refiner in ("none", "sparse"):
        assert main(["predict", str(runs[(refiner, 0)]), str(runs[(refiner, 1)]), "--split", "test",
                     "--out", str(root / f"ens_{refiner}.csv")]) == 0
    ens = pd.read_csv(root / "ens_sparse.csv").set_index("image")
    f0 = pd.read_csv(runs[("sparse", 0)] / "pred_test.csv").set_index("image")
    f1 = pd.read_csv(runs[("sparse", 1)] / "pred_test.csv").set_index("image")
    pd.testing.assert_frame_equal(ens, ((f0 + f1.loc[f0.index]) / 2).round(6), atol=2e-6)
    capsys.readouterr()
    assert main(["evaluate", str(root / "ens_none.csv"), str(root / "ens_sparse.csv"), "--data", str(data),
                 "--bootstrap", "50", "--out", str(root / "eval.csv")]) == 0
    text = capsys.readouterr().out
    assert "paired difference" in text and "macro AUC" in text
    table = pd.read_csv(root / "eval.csv", index_col=0)
    assert {"macro AUC", "mAP", "CF1@0.5", "OF1@0.5"} <= set(table.index)


def test_evaluate_refuses_predictions_from_other_folds(workspace, capsys):
    _, data, runs = workspace
    code = main(["evaluate", str(runs[("none", 0)] / "pred_val.csv"), str(runs[("sparse", 1)] / "pred_val.csv"),
                 "--data", str(data), "--bootstrap", "10"])
    assert code == 2 and "fold" in capsys.readouterr().err


def test_evaluate_refuses_predictions_made_on_other_data(workspace, tmp_path, capsys):
    _, data, runs = workspace
    pred = tmp_path / "p.csv"
    pred.write_text((runs[("none", 0)] / "pred_val.csv").read_text())
    meta = json.loads((runs[("none", 0)] / "pred_val.json").read_text())
    pred.with_suffix(".json").write_text(json.dumps({**meta, "data_fingerprint": "0" * 16}))
    assert main(["evaluate", str(pred), "--data", str(data), "--bootstrap", "10"]) == 2
    assert "fingerprint" in capsys.readouterr().err


def test_oracle_command(workspace, capsys):
    root, data, _ = workspace
    capsys.readouterr()
    assert main(["oracle", str(data), "--split", str(data / "folds.csv"), "--out", str(root / "oracle.csv")]) == 0
    table = pd.read_csv(root / "oracle.csv", index_col=[0, 1])
    assert ("test", "oracle") in table.index and ("test", "marginal oracle") in table.index
    assert table["macro"].between(0.5, 1.0).all()
    printed = capsys.readouterr().out
    for label in ("Atelectasis", "Pneumonia", "No Finding", "macro"):  # per-label rows, not only the macro AUC
        assert label in printed, label
    assert "commit" in json.loads((root / "oracle.json").read_text())["git"]


@pytest.mark.parametrize("problem", ["two variants", "fold twice", "no sidecar"])
def test_predict_refuses_what_is_not_a_fold_ensemble(problem, workspace, tmp_path, capsys):
    _, _, runs = workspace
    a, b = runs[("sparse", 0)], {"two variants": runs[("none", 1)], "fold twice": runs[("sparse", 0)],
                                 "no sidecar": tmp_path}[problem]
    if problem == "no sidecar":
        (tmp_path / "pred_test.csv").write_text((runs[("sparse", 1)] / "pred_test.csv").read_text())
    capsys.readouterr()
    assert main(["predict", str(a), str(b), "--out", str(tmp_path / "ens.csv")]) == 2
    err = capsys.readouterr().err
    assert {"two variants": "variant", "fold twice": "same fold", "no sidecar": "sidecar"}[problem] in err
    assert not (tmp_path / "ens.csv").exists()


def test_train_bad_parameter_exits_2_naming_key(workspace, capsys):
    _, data, _ = workspace
    assert main(["train", "--data", str(data), "--epochs", "zero"]) == 2
    assert "'epochs'" in capsys.readouterr().err
