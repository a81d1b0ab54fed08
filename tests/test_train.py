from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxrkit.models import create_model
from cxrkit.training.ema import create_ema as _create_ema
from cxrkit.training.ema import update_ema as _update_ema
from cxrkit.training.loop import TrainingError, train
from cxrkit.training.optim import cosine_with_warmup
from cxrkit.training.optim import param_groups as _param_groups

#: The settings of Srivastava et al.'s code that params/paper.yaml sets (crxml/train.py, models/ema.py).
AUTHORS = {"ema_refiner": False, "ema_warmup": False, "weight_decay_all": True}


def _preds(out, name="pred_val.csv"):
    return pd.read_csv(out / name)


def test_cosine_with_warmup_shape():
    """The factors of Srivastava et al.'s build_scheduler (crxml/train.py), by hand: step / 10 during
    the 10 warm-up steps, then 0.5 (1 + cos(pi (step - 10) / 100))."""
    f = cosine_with_warmup(10, 110)
    assert f(0) == 0.0 and f(1) == pytest.approx(0.1) and f(5) == pytest.approx(0.5) and f(9) == pytest.approx(0.9)
    assert f(10) == pytest.approx(1.0) and f(35) == pytest.approx(0.5 * (1 + math.sqrt(0.5)))
    assert f(60) == pytest.approx(0.5) and f(85) == pytest.approx(0.5 * (1 - math.sqrt(0.5)))
    assert f(110) == pytest.approx(0.0) and f(200) == pytest.approx(0.0)
    assert all(f(s) < f(s + 1) for s in range(10)) and all(f(s) >= f(s + 1) for s in range(10, 110))
    # under LambdaLR the first optimiser step has LR 0, the second lr / warmup_steps
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 1e-4, 2e-4])
    assert cosine_with_warmup(0, 5)(0) == 0.0 and cosine_with_warmup(0, 5)(1) == 1.0  # at least one warm-up step


def test_run_writes_every_output(tiny_cfg):
    summary = train(tiny_cfg)
    out = Path(tiny_cfg.out)
    for name in ("params.json", "provenance.json", "history.csv", "last.pt", "best.pt", "metrics.json",
                 "pred_val.csv", "pred_val_notta.csv", "pred_test.csv", "pred_test_notta.csv", "coupling.csv"):
        assert (out / name).is_file(), name
    hist = pd.read_csv(out / "history.csv")
    assert list(hist["epoch"]) == [1, 2] and hist["val_macro_auc"].between(0, 1).all()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["params"]["fold"] == tiny_cfg.fold and "torch" in prov["packages"]
    assert len(prov["data_fingerprint"]) >= 8 and "commit" in prov["git"]
    assert prov["dataset_quality"] == {"view_replaced": 0}  # the loader's counts (CXRDataset.quality)
    meta = json.loads((out / "pred_test.json").read_text())
    assert meta["split"] == "test" and meta["tta"] is True and meta["data_fingerprint"] == prov["data_fingerprint"]
    val, test = _preds(out), _preds(out, "pred_test.csv")
    assert val.shape[1] == 15 and val.iloc[:, 1:].to_numpy().min() >= 0 and val.iloc[:, 1:].to_numpy().max() <= 1
    assert set(val["image"]).isdisjoint(set(test["image"]))
    # flip TTA changes the predictions
    assert not np.allclose(test.iloc[:, 1:], _preds(out, "pred_test_notta.csv").iloc[:, 1:])
    coupling = pd.read_csv(out / "coupling.csv", index_col=0).to_numpy()
    assert np.all(np.diag(coupling) == 0) and np.abs(coupling).sum() > 0
    assert summary["best_epoch"] in (1, 2) and math.isfinite(summary["best_val_macro_auc"])


def test_same_seed_same_result_and_other_seed_differs(tiny_cfg, tmp_path):
    a = dataclasses.replace(tiny_cfg, epochs=1, out=str(tmp_path / "a"))
    b = dataclasses.replace(a, out=str(tmp_path / "b"))
    c = dataclasses.replace(a, out=str(tmp_path / "c"), seed=1)
    ra, rb = train(a), train(b)
    train(c)
    assert ra["best_val_macro_auc"] == rb["best_val_macro_auc"]
    pa, pb, pc = (_preds(tmp_path / n) for n in "abc")
    pd.testing.assert_frame_equal(pa, pb)
    assert not np.allclose(pa.iloc[:, 1:], pc.iloc[:, 1:])


@pytest.mark.parametrize("settings", [{}, AUTHORS], ids=["cxrkit", "authors"])
def test_interrupted_run_resumes_to_the_same_result(tiny_cfg, tmp_path, settings):
    full = dataclasses.replace(tiny_cfg, epochs=3, out=str(tmp_path / "full"), **settings)
    cut = dataclasses.replace(full, out=str(tmp_path / "cut"))
    train(full)

    class Killed(Exception):
        pass

    def kill_in_second_epoch(step, loss):
        if step >= _steps_per_epoch(tmp_path / "cut") + 1:
            raise Killed
        return loss

    with pytest.raises(Killed):
        train(cut, fault_hook=kill_in_second_epoch)
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and not state["done"]
    assert len(state["optimizer"]["param_groups"]) == (1 if settings.get("weight_decay_all") else 2)
    summary = train(cut)  # resume
    assert summary["epochs_run"] == 3
    pd.testing.assert_frame_equal(_preds(tmp_path / "full"), _preds(tmp_path / "cut"))
    timings = ["seconds", "train_seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "history.csv").drop(columns=timings),
                                  pd.read_csv(tmp_path / "cut" / "history.csv").drop(columns=timings))


def _steps_per_epoch(out):
    prov = json.loads((out / "provenance.json").read_text())
    return prov["n_train"] // prov["params"]["batch_size"]


def test_resume_refuses_changed_parameters(tiny_cfg):
    train(dataclasses.replace(tiny_cfg, epochs=1))
    with pytest.raises(TrainingError, match="other parameters.*'lr'"):
        train(dataclasses.replace(tiny_cfg, epochs=1, lr=5e-4))


def test_nonfinite_losses_are_skipped_and_counted(tiny_cfg):
    bad = {1, 3}
    summary = train(dataclasses.replace(tiny_cfg, epochs=1),
                    fault_hook=lambda step, loss: loss * float("nan") if step in bad else loss)
    assert summary["nonfinite_skipped"] == 2
    hist = pd.read_csv(Path(tiny_cfg.out) / "history.csv")
    assert hist["nonfinite_skipped"].sum() == 2 and np.isfinite(hist["train_loss"]).all()


def test_too_many_nonfinite_losses_stop_the_run(tiny_cfg):
    with pytest.raises(TrainingError, match="3 non-finite losses.*max_nonfinite=2"):
        train(dataclasses.replace(tiny_cfg, epochs=1, max_nonfinite=2),
              fault_hook=lambda step, loss: loss + float("inf"))
    assert not (Path(tiny_cfg.out) / "best.pt").exists()


def test_fold_out_of_range_fails_before_training(tiny_cfg):
    with pytest.raises(ValueError, match="fold"):
        train(dataclasses.replace(tiny_cfg, fold=3))
    assert not (Path(tiny_cfg.out) / "last.pt").exists()


def test_resume_refuses_a_run_made_on_other_data(tiny_cfg, tmp_path):
    import shutil

    from cxrkit.cli import main

    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.data, data)
    cfg = dataclasses.replace(tiny_cfg, data=str(data), splits=str(data / "folds.csv"), epochs=1)
    train(cfg)
    csv = pd.read_csv(data / "train.csv")
    csv.loc[3, "Edema"] = 1 - csv.loc[3, "Edema"]
    csv.to_csv(data / "train.csv", index=False)
    assert main(["folds", "--data", str(data), "--n-folds", "3", "--test-size", "0.2"]) == 0
    with pytest.raises(TrainingError, match="trained on other data"):
        train(cfg)


def _nan_gradient(loss):
    """The same (finite) loss value with a NaN gradient: the unselected branch of ``where`` is NaN."""
    return torch.where(torch.tensor(True), loss, torch.sqrt(-loss - 1.0))


def test_nonfinite_gradients_of_a_finite_loss_are_skipped_and_counted(tiny_cfg):
    bad = {0, 2}
    summary = train(dataclasses.replace(tiny_cfg, epochs=1),
                    fault_hook=lambda step, loss: _nan_gradient(loss) if step in bad else loss)
    assert summary["nonfinite_skipped"] == 2
    state = torch.load(Path(tiny_cfg.out) / "last.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    with pytest.raises(TrainingError, match="non-finite gradient"):
        train(dataclasses.replace(tiny_cfg, epochs=1, max_nonfinite=1, out=str(Path(tiny_cfg.out) / "limit")),
              fault_hook=lambda step, loss: _nan_gradient(loss))


def test_early_stopping_after_patience_epochs_keeps_the_best(tiny_cfg, monkeypatch):
    import cxrkit.training.epoch as T

    scripted = iter([0.60, 0.70, 0.65, 0.69, 0.68, 0.99])  # best at epoch 2, then 3 epochs without gain
    real = T.macro_auc
    calls = {"n": 0}

    def fake_macro_auc(y, p):
        calls["n"] += 1
        return next(scripted) if calls["n"] <= 5 else real(y, p)

    monkeypatch.setattr(T, "macro_auc", fake_macro_auc)
    summary = train(dataclasses.replace(tiny_cfg, epochs=8, patience=3))
    assert summary["epochs_run"] == 5 and summary["best_epoch"] == 2
    assert summary["best_val_macro_auc"] == 0.70
    assert torch.load(Path(tiny_cfg.out) / "best.pt", weights_only=False)["epoch"] == 2


def test_ema_averages_the_refiner_too(tiny_cfg):
    train(dataclasses.replace(tiny_cfg, epochs=1, ema_decay=0.9))
    out = Path(tiny_cfg.out)
    last, best = (torch.load(out / n, weights_only=False) for n in ("last.pt", "best.pt"))
    ema_a, raw_a = last["ema"]["module.refiner.A"], last["model"]["refiner.A"]
    assert ema_a.abs().sum() > 0 and not torch.allclose(ema_a, raw_a)  # the EMA lags the raw coupling
    torch.testing.assert_close(best["model"]["refiner.A"], ema_a)  # the kept model is the EMA, refiner included


def test_ema_of_the_backbone_only_keeps_and_validates_with_the_live_refiner(tiny_cfg):
    """ema_refiner false (the authors' code): the EMA holds the backbone only; best.pt holds the EMA
    backbone and the live refiner, the model validation and the predictions used."""
    summary = train(dataclasses.replace(tiny_cfg, epochs=1, ema_decay=0.9, ema_refiner=False))
    out = Path(tiny_cfg.out)
    last, best = (torch.load(out / n, weights_only=False) for n in ("last.pt", "best.pt"))
    backbone = [k for k in last["model"] if k.startswith("backbone.")]
    assert sorted(last["ema"]) == sorted("module." + k.removeprefix("backbone.") for k in backbone)
    assert sorted(best["model"]) == sorted(last["model"])  # the same layout as with the whole-model EMA
    raw_a = last["model"]["refiner.A"]
    assert raw_a.abs().sum() > 0
    torch.testing.assert_close(best["model"]["refiner.A"], raw_a)  # the live refiner
    for k in backbone:
        torch.testing.assert_close(best["model"][k], last["ema"]["module." + k.removeprefix("backbone.")])
    weight = "backbone.conv1.0.weight"
    assert not torch.allclose(best["model"][weight], last["model"][weight])  # the EMA backbone, not the raw one
    # the validation of epoch 1 scored the model that best.pt holds and the predictions come from
    val_auc = pd.read_csv(out / "history.csv")["val_macro_auc"].iloc[0]
    assert summary["best_val_macro_auc"] == val_auc == pytest.approx(summary["val_macro_auc_notta"], abs=1e-12)


def _moved(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Shift every float entry of the state dict (parameters and buffers); return the new values."""
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.add_(torch.linspace(0.5, 1.5, v.numel()).reshape(v.shape))
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("ema_refiner", [True, False])
def test_ema_without_warmup_uses_the_decay_from_the_first_update(tiny_cfg, ema_refiner):
    """ema_warmup false: after one update from a known model, EMA = 0.999 init + 0.001 new (the
    authors' crxml/models/ema.py), not a copy, which timm's ModelEmaV3 makes of its first two updates
    whenever it is given a step (get_decay), even with use_warmup=False."""
    torch.manual_seed(0)
    model = create_model("test_resnet", 14, refiner="sparse")
    cfg = dataclasses.replace(tiny_cfg, ema_decay=0.999, ema_warmup=False, ema_refiner=ema_refiner)
    ema, evaluated = _create_ema(cfg, model)
    assert [ema.get_decay(0), ema.get_decay(1), ema.get_decay(None)] == [0.0, 0.0, 0.999]
    init = {k: v.clone() for k, v in model.state_dict().items()}
    new = _moved(model)
    _update_ema(ema, cfg, model, step=0)
    for k, v in evaluated.state_dict().items():
        averaged = ema_refiner or k.startswith("backbone.")
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.999 * init[k] + 0.001 * new[k] if averaged else new[k])
    assert (evaluated.refiner is model.refiner) != ema_refiner  # without ema_refiner: the live refiner itself
    # the default (timm's warm-up from the step) copies the weights on the first update
    warm = dataclasses.replace(cfg, ema_warmup=True, ema_refiner=True)
    ema, evaluated = _create_ema(warm, model)
    newer = _moved(model)
    _update_ema(ema, warm, model, step=0)
    for k, v in evaluated.state_dict().items():
        torch.testing.assert_close(v, newer[k])


def test_weight_decay_skips_biases_norms_and_coupling_unless_all():
    model = create_model("test_resnet", 14, refiner="sparse")
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = _param_groups(model, 1e-4)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (1e-4, 0.0)
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"refiner.A", "backbone.bn1.weight", "backbone.bn1.bias", "backbone.fc.bias"} <= skipped
    assert all(p.ndim > 1 for p in decay["params"]) and "backbone.fc.weight" not in skipped
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)
    # weight_decay_all (the authors' AdamW over model + refiner parameters): one group, everything decayed
    (everything,) = _param_groups(model, 1e-4, decay_all=True)
    assert everything["weight_decay"] == 1e-4
    assert [names[id(p)] for p in everything["params"]] == [n for n, _ in model.named_parameters()]


def test_fp16_without_loss_scaling_is_refused_before_loading_data(tiny_cfg, monkeypatch):
    import cxrkit.training.loop as T

    monkeypatch.setattr(T, "load_fold", lambda *a, **k: pytest.fail("data was loaded"))
    with pytest.raises(ValueError, match="fp16 on cpu"):
        train(dataclasses.replace(tiny_cfg, amp="fp16", device="cpu"))


def test_rawlekar_method_trains_end_to_end_with_its_loss(tiny_cfg, tmp_path):
    """cooc_gcn with the re-weighted ASL: the prior and the loss weights come from the training
    fold, the run completes, and the loss really is RASL (other predictions than with ASL)."""
    gcn = dataclasses.replace(tiny_cfg, refiner="cooc_gcn", epochs=1)
    summary = train(dataclasses.replace(gcn, loss="rasl", out=str(tmp_path / "rasl")))
    train(dataclasses.replace(gcn, loss="asl", out=str(tmp_path / "asl")))
    assert math.isfinite(summary["best_val_macro_auc"])
    assert np.isfinite(pd.read_csv(tmp_path / "rasl" / "history.csv")["train_loss"]).all()
    params = json.loads((tmp_path / "rasl" / "params.json").read_text())
    assert params["loss"] == "rasl" and params["refiner"] == "cooc_gcn"
    prior = pd.read_csv(tmp_path / "rasl" / "coupling.csv", index_col=0)
    assert (np.diag(prior) == 0).all() and prior.to_numpy().max() <= 1 and prior.to_numpy().sum() > 0
    assert not np.allclose(_preds(tmp_path / "rasl").iloc[:, 1:], _preds(tmp_path / "asl").iloc[:, 1:])
