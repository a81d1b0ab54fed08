"""Robustness: bad input tried on purpose, and faults the training and the study must survive.

Every bad input goes through the real entry point, :func:`cxrkit.training.loop.train` (several also
through ``cxrkit train`` via :func:`cxrkit.cli.main`, exit status 2 and the message on stderr),
on a damaged *copy* of the ``tiny_phantom`` fixture. Each must fail with an error naming the file,
CSV line or key *before* training starts (``cxrkit.training.setup.create_model`` is replaced by a tripwire
that fails the test if reached), and leave no result behind: the run folder is absent or empty
(no ``params.json``, ``provenance.json``, ``last.pt``, ``best.pt``, ``metrics.json``, ``pred_*.csv``).

Bad input tried
---------------
* images: a corrupt image (random bytes), a truncated PNG (first half of the file), a zero-byte
  file, a missing image file (``train``; corrupt and missing also through the CLI);
* ``train.csv``: a label column removed; a misspelled label column (``Cardiomegally``); duplicate
  image names; label values ``yes``, ``2`` and ``-1`` without an uncertainty policy (the message
  names the column and the CSV line; also through the CLI); empty, blank and literal ``NaN``
  ``Patient_ID`` cells (the message names the lines; ``cxrkit folds`` on that file is refused too);
* parameters: a parameter file (``cxrkit train --config file.yaml``) with an unknown key
  (``epoch``), with wrong types (``epochs: "3"``, ``batch_size: 16.5``, ``cache: "no"``); a fold
  index out of range (``fold=3`` with 3 folds, through ``train`` and the CLI);
* image folder not matching the CSV: ``images/`` emptied; ``data`` pointed at a folder whose
  ``images/`` holds other file names;
* ``folds.csv`` made for other data: ``train.csv`` rewritten with one image dropped, and with one
  label flipped, the old ``folds.csv`` kept (with ``on_bad_image="error"``, also through the CLI,
  and with ``on_bad_image="exclude"``);
* ``on_bad_image="exclude"`` with one corrupt image: ``excluded_images.csv`` in the run folder
  names it and its reason; the run trains and predicts on exactly the remaining rows.

Faults survived
---------------
* a ``cxrkit train`` process killed with SIGKILL in its second epoch and started again ends with
  the same best macro AUC, predictions and history as an uninterrupted run (real subprocesses);
* a checkpoint save that dies half-way (``torch.save`` writes half the bytes of ``best.pt`` in
  epoch 2, then raises ``OSError``) leaves the previous ``best.pt`` loadable and intact, no
  temporary file behind, and a run that resumes;
* a study interrupted (``KeyboardInterrupt`` in ``papermill.execute_notebook``) at its 4th notebook
  resumes: the 3 finished steps are skipped, the rest run, every step ends ``ok``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import cxrkit.training.setup as cxtrain
from cxrkit.cli import main
from cxrkit.data.datasets import DataError
from cxrkit.training.loop import train
from cxrkit.utils.params import ConfigError
from cxrkit.utils.paths import project_root

ROOT = project_root()
RESULT_FILES = ("params.json", "provenance.json", "history.csv", "last.pt", "best.pt", "metrics.json")


# ----------------------------------------------------------------------------- helpers


class TrainingStarted(AssertionError):
    """Raised by the tripwire when a bad input got as far as building the model."""


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if training gets as far as building the model."""

    def boom(*args, **kwargs):
        raise TrainingStarted("training started despite the bad input")

    monkeypatch.setattr(cxtrain, "create_model", boom)


@pytest.fixture
def data(tiny_phantom: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny phantom, to be damaged by the test."""
    return Path(shutil.copytree(tiny_phantom, tmp_path / "data"))


def _cfg(tiny_cfg, root: Path, **changes):
    return dataclasses.replace(tiny_cfg, data=str(root), splits=str(root / "folds.csv"), **changes)


def _cli(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(root), "--splits", str(root / "folds.csv"), "--backbone", "test_resnet",
            "--image-size", "32", "--batch-size", "16", "--epochs", "1", "--no-progress", "--no-cache",
            "--out", str(out), *extra]


def assert_no_result(out: Path) -> None:
    """Nothing that looks like a result: the run folder is absent or an empty folder."""
    if not out.exists():
        return
    assert out.is_dir()
    names = sorted(p.name for p in out.iterdir())
    for name in RESULT_FILES:
        assert name not in names, f"{name} written despite the bad input"
    assert not [n for n in names if n.startswith("pred_")], names
    assert names == [], f"run folder not empty after a refused input: {names}"


def _refused(cfg, exc_type=(DataError, ConfigError, ValueError)) -> str:
    """Run train(cfg), expect exc_type, check no result was written; return the message."""
    with pytest.raises(exc_type) as info:
        train(cfg)
    assert_no_result(Path(cfg.out))
    return str(info.value)


def _cli_refused(argv: list[str], out: Path, capsys: pytest.CaptureFixture) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxrkit train: error: "), err
    assert_no_result(out)
    return err


def _edit_csv(root: Path, edit) -> pd.DataFrame:
    """Rewrite root/train.csv (every cell a raw string) through ``edit(df) -> df``."""
    df = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    df = edit(df)
    df.to_csv(root / "train.csv", index=False)
    return df


def _image(root: Path, i: int = 5) -> Path:
    return root / "images" / pd.read_csv(root / "train.csv")["Image_name"].iloc[i]


def _line(i: int) -> str:
    """CSV line of data row i (header = line 1)."""
    return f"line {i + 2}"


# ----------------------------------------------------------------------------- bad images


def _corrupt(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).bytes(max(64, p.stat().st_size)))


def _truncate(p: Path) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])


BAD_IMAGES = {
    "corrupt": (_corrupt, "cannot decode"),
    "truncated": (_truncate, "truncated"),
    "zero-byte": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "missing": (lambda p: p.unlink(), "missing"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_is_refused_naming_the_file(kind, data, tiny_cfg, tripwire):
    damage, reason = BAD_IMAGES[kind]
    bad = _image(data)
    damage(bad)
    msg = _refused(_cfg(tiny_cfg, data), DataError)
    assert f"{bad} ({reason}" in msg, msg
    assert "1 of 164 images are unusable" in msg and "on_bad_image='exclude'" in msg


@pytest.mark.parametrize("kind", ["corrupt", "missing"])
def test_bad_image_through_cli_exits_2(kind, data, tmp_path, capsys, tripwire):
    damage, reason = BAD_IMAGES[kind]
    bad = _image(data, 17)
    damage(bad)
    err = _cli_refused(_cli(data, tmp_path / "run"), tmp_path / "run", capsys)
    assert f"{bad} ({reason}" in err


def test_exclude_mode_drops_the_bad_image_with_a_report(data, tiny_cfg):
    folds = pd.read_csv(data / "folds.csv")
    rows = len(pd.read_csv(data / "train.csv"))
    bad_name = folds.loc[folds["fold"] == 0, "image"].iloc[0]  # a validation image of fold 0
    _corrupt(data / "images" / bad_name)
    cfg = _cfg(tiny_cfg, data, on_bad_image="exclude", epochs=1)
    train(cfg)
    out = Path(cfg.out)

    report = pd.read_csv(out / "excluded_images.csv")
    assert report["image"].tolist() == [bad_name]
    assert report["path"].tolist() == [str(data / "images" / bad_name)]
    assert report["reason"].iloc[0].startswith("cannot decode")

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["n_train"] + prov["n_val"] + prov["n_test"] == rows - 1
    keep = folds[folds["image"] != bad_name]
    assert prov["n_train"] == int(((keep["split"] == "train") & (keep["fold"] != 0)).sum())
    expected = {"val": set(keep.loc[keep["fold"] == 0, "image"]), "test": set(keep.loc[keep["split"] == "test", "image"])}
    preds = sorted(out.glob("pred_*.csv"))
    assert len(preds) == 4
    for f in preds:
        images = pd.read_csv(f)["image"]
        assert bad_name not in set(images), f.name
        assert images.is_unique and set(images) == expected[f.stem.split("_")[1]], f.name


# ----------------------------------------------------------------------------- bad train.csv


def test_removed_label_column_is_named(data, tiny_cfg, tripwire):
    _edit_csv(data, lambda d: d.drop(columns="Edema"))
    msg = _refused(_cfg(tiny_cfg, data), DataError)
    assert msg.startswith(f"{data / 'train.csv'}: missing required column(s) 'Edema'"), msg


def test_misspelled_label_column_is_named_with_a_suggestion(data, tiny_cfg, tripwire):
    _edit_csv(data, lambda d: d.rename(columns={"Cardiomegaly": "Cardiomegally"}))
    msg = _refused(_cfg(tiny_cfg, data), DataError)
    assert f"{data / 'train.csv'}: missing required column(s) 'Cardiomegaly'" in msg
    assert "found 'Cardiomegally': did you mean 'Cardiomegaly'?" in msg


def test_duplicate_image_names_are_named_with_their_lines(data, tiny_cfg, tripwire):
    def dup(d):
        d.loc[7, "Image_name"] = d.loc[3, "Image_name"]
        return d

    df = _edit_csv(data, dup)
    msg = _refused(_cfg(tiny_cfg, data), DataError)
    assert f"{data / 'train.csv'}: duplicate image name(s) {df.loc[3, 'Image_name']!r} at line 5, line 9" in msg


@pytest.mark.parametrize("value", ["yes", "2", "-1"])
def test_invalid_label_value_names_column_and_line(value, data, tiny_cfg, tmp_path, capsys, tripwire):
    def bad(d):
        d.loc[10, "Edema"] = value
        return d

    _edit_csv(data, bad)
    expected = f"invalid label values (accepted: 0, 1) in column 'Edema': {_line(10)}: {value!r}"
    msg = _refused(_cfg(tiny_cfg, data), DataError)
    assert msg == f"{data / 'train.csv'}: {expected}"
    err = _cli_refused(_cli(data, tmp_path / "cli"), tmp_path / "cli", capsys)
    assert expected in err and str(data / "train.csv") in err


@pytest.mark.parametrize("marker", [
    "",
    "   ",
    "NaN",
    "null",
])
def test_missing_patient_id_names_the_lines(marker, data, tiny_cfg, capsys, tripwire):
    def blank(d):
        d.loc[[4, 20], "Patient_ID"] = marker
        return d

    _edit_csv(data, blank)
    expected = f"{data / 'train.csv'}: missing patient id at {_line(4)}, {_line(20)}"
    # remaking the folds for the edited file, as a user would, is refused too
    capsys.readouterr()
    assert main(["folds", "--data", str(data), "--n-folds", "3", "--test-size", "0.2", "--seed", "0"]) == 2
    assert f"cxrkit folds: error: {expected}" in capsys.readouterr().err
    assert _refused(_cfg(tiny_cfg, data), DataError) == expected


# ----------------------------------------------------------------------------- bad parameters


def _param_file(tmp_path: Path, root: Path, out: Path, **values) -> Path:
    base = {"data": str(root), "splits": str(root / "folds.csv"), "backbone": "test_resnet", "image_size": 32,
            "batch_size": 16, "epochs": 1, "progress": False, "cache": False, "out": str(out)}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**base, **values}))
    return path


def test_parameter_file_with_unknown_key(data, tmp_path, capsys, tripwire):
    out = tmp_path / "run"
    f = _param_file(tmp_path, data, out, epoch=2)
    err = _cli_refused(["train", "--config", str(f)], out, capsys)
    assert f"{f}: unknown parameter 'epoch' (did you mean 'epochs'?)" in err


@pytest.mark.parametrize("key,value,shown", [
    ("epochs", "3", "must be int, got '3' (str)"),
    ("batch_size", 16.5, "must be int, got 16.5 (float)"),
    ("cache", "no", "must be bool, got 'no' (str)"),
])
def test_parameter_file_with_wrong_type(key, value, shown, data, tmp_path, capsys, tripwire):
    out = tmp_path / "run"
    f = _param_file(tmp_path, data, out, **{key: value})
    err = _cli_refused(["train", "--config", str(f)], out, capsys)
    assert f"{f}: parameter {key!r} {shown}" in err


def test_fold_out_of_range_is_refused_by_train_and_cli(data, tiny_cfg, tmp_path, capsys, tripwire):
    # extends tests/test_train.py::test_fold_out_of_range_fails_before_training (message, empty folder, CLI)
    expected = "fold: need an integer in 0..2 (n_folds=3), got 3"
    assert _refused(_cfg(tiny_cfg, data, fold=3)) == expected
    err = _cli_refused(_cli(data, tmp_path / "cli", "--fold", "3"), tmp_path / "cli", capsys)
    assert expected in err


# ----------------------------------------------------------------------------- image folder and folds


def test_emptied_image_folder_is_refused(data, tiny_cfg, tripwire):
    for p in (data / "images").iterdir():
        p.unlink()
    msg = _refused(_cfg(tiny_cfg, data), DataError)
    assert f"image directory {data / 'images'} does not match {data / 'train.csv'}" in msg
    assert "none of 50 sampled image files exist" in msg


def test_data_folder_with_other_image_names_is_refused(tiny_phantom, tiny_cfg, tmp_path, capsys, tripwire):
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    for name in ("train.csv", "folds.csv", "folds.json"):
        shutil.copy(tiny_phantom / name, other / name)
    for p in (tiny_phantom / "images").iterdir():
        shutil.copy(p, other / "images" / f"x_{p.name}")
    msg = _refused(_cfg(tiny_cfg, other), DataError)
    assert f"image directory {other / 'images'} does not match {other / 'train.csv'}" in msg
    err = _cli_refused(_cli(other, tmp_path / "cli"), tmp_path / "cli", capsys)
    assert "does not match" in err and str(other / "images") in err


def _drop_one_image(root: Path) -> str:
    name = pd.read_csv(root / "train.csv")["Image_name"].iloc[8]
    _edit_csv(root, lambda d: d.drop(index=8))
    (root / "images" / name).unlink()
    return name


def _flip_one_label(root: Path) -> str:
    def flip(d):
        d.loc[3, "Edema"] = "1" if d.loc[3, "Edema"] == "0" else "0"
        return d

    _edit_csv(root, flip)
    return ""


@pytest.mark.parametrize("change", ["drop_image", "flip_label"])
def test_folds_made_for_other_data_are_refused(change, data, tiny_cfg, tmp_path, capsys, tripwire):
    if change == "drop_image":
        name = _drop_one_image(data)
        expected = f"1 image(s) of folds.csv are not in the table: {name!r}"
    else:
        _flip_one_label(data)
        expected = f"{data / 'folds.csv'} was made for other data (fingerprint"
    msg = _refused(_cfg(tiny_cfg, data))
    assert expected in msg, msg
    err = _cli_refused(_cli(data, tmp_path / "cli"), tmp_path / "cli", capsys)
    assert expected in err


@pytest.mark.parametrize("change", ["drop_image", "flip_label"])
def test_folds_made_for_other_data_are_refused_in_exclude_mode(change, data, tiny_cfg, tripwire):
    (_drop_one_image if change == "drop_image" else _flip_one_label)(data)
    cfg = _cfg(tiny_cfg, data, on_bad_image="exclude")
    with pytest.raises((ConfigError, ValueError), match="folds.csv"):
        train(cfg)
    out = Path(cfg.out)
    assert not [p for p in out.iterdir() if p.name != "excluded_images.csv"]


# ----------------------------------------------------------------------------- faults: SIGKILL


def _train_cmd(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cxrkit.cli", "train", "--data", str(root), "--splits", str(root / "folds.csv"),
            "--backbone", "test_resnet", "--image-size", "32", "--batch-size", "16", "--epochs", "3",
            "--no-progress", "--no-cache", "--out", str(out)]


#: ``python -c`` program: ``cxrkit train`` whose training loss, at the second step after the epoch-1
#: checkpoint was saved (inside epoch 2's training loop), writes a byte to the pipe ``fd`` and hangs,
#: so a test can kill it there at a known place (an event, not a guessed time or a deadline).
_HANG_IN_EPOCH2 = """
import os, pathlib, sys, time
import cxrkit.training.setup as T
from cxrkit.cli import main
out, fd, real, calls = pathlib.Path(sys.argv[1]), int(sys.argv[2]), T.create_loss, []
def create_loss(*args, **kwargs):
    loss = real(*args, **kwargs)
    forward = loss.forward
    def hanging(*a, **k):
        if (out / "last.pt").exists():
            calls.append(1)
            if len(calls) == 2:
                os.write(fd, b"2")
                while True:
                    time.sleep(1)
        return forward(*a, **k)
    loss.forward = hanging
    return loss
T.create_loss = create_loss
sys.exit(main(sys.argv[3:]))
"""


def _popen(cmd: list[str], log: Path, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, pass_fds=pass_fds,
                                env={**os.environ, "CXRKIT_QUIET": "1"})


def _history(out: Path) -> pd.DataFrame:
    h = pd.read_csv(out / "history.csv")
    return h.drop(columns=[c for c in h.columns if c.endswith("seconds")])


def test_sigkilled_run_resumes_to_the_same_result(tiny_phantom, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    p_full = _popen(_train_cmd(tiny_phantom, full), tmp_path / "full.log")
    read_end, write_end = os.pipe()
    p_cut = _popen([sys.executable, "-c", _HANG_IN_EPOCH2, str(cut), str(write_end),
                    *_train_cmd(tiny_phantom, cut)[3:]], tmp_path / "cut.log", pass_fds=(write_end,))
    os.close(write_end)  # the child holds the only write end: reading gets its byte, or EOF if it ends
    try:
        ready, _, _ = select.select([read_end], [], [], 1800)  # a hang guard only: the byte or EOF comes first
        assert ready, f"no sign of epoch 2 and no exit after 30 min: {(tmp_path / 'cut.log').read_text()[-3000:]}"
        reached = os.read(read_end, 1)
        assert reached == b"2", f"run ended before epoch 2: {(tmp_path / 'cut.log').read_text()[-3000:]}"
        os.kill(p_cut.pid, signal.SIGKILL)  # in the middle of epoch 2's training loop
        assert p_cut.wait() == -signal.SIGKILL
    finally:
        os.close(read_end)
        if p_cut.poll() is None:
            p_cut.kill()
    state = torch.load(cut / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and not state["done"], "the run was not killed during epoch 2"
    assert not (cut / "metrics.json").exists()

    resumed = subprocess.run(_train_cmd(tiny_phantom, cut), cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "CXRKIT_QUIET": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert p_full.wait() == 0, (tmp_path / "full.log").read_text()[-3000:]
    assert json.loads((cut / "provenance.json").read_text())["resumed_from_epoch"] == state["epoch"]

    m_full, m_cut = (json.loads((d / "metrics.json").read_text()) for d in (full, cut))
    assert m_cut["best_val_macro_auc"] == m_full["best_val_macro_auc"]
    assert m_cut["best_epoch"] == m_full["best_epoch"] and m_cut["epochs_run"] == m_full["epochs_run"] == 3
    for name in ("pred_val.csv", "pred_test.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(full / name), pd.read_csv(cut / name))
    pd.testing.assert_frame_equal(_history(full), _history(cut))


# ----------------------------------------------------------------------------- faults: half-written checkpoint


def test_checkpoint_save_dying_half_way_keeps_the_previous_one(tiny_cfg, monkeypatch):
    """The first checkpoint save of epoch 2 (best.pt when the epoch improved, else last.pt: whichever
    comes first, so the test does not depend on trained numbers) dies half-way with a full disk:
    both files keep epoch 1, nothing half-written is left, and the resumed run ends as an
    uninterrupted one."""
    out = Path(tiny_cfg.out)
    real_save = torch.save
    injected = []

    def dying_save(obj, f, *args, **kwargs):
        name = Path(f).name if isinstance(f, (str, os.PathLike)) else ""
        if not injected and name.startswith((".best.pt", ".last.pt")) and isinstance(obj, dict) and obj.get("epoch") == 2:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
            injected.append(name)
            raise OSError(28, "No space left on device (injected)")
        return real_save(obj, f, *args, **kwargs)

    # cxrkit.training.checkpoint.save -> utils.files.atomic_write(path, lambda tmp: torch.save(obj, tmp))
    monkeypatch.setattr(cxtrain.torch, "save", dying_save)
    with pytest.raises(OSError, match="injected"):
        train(tiny_cfg)
    assert injected, "no checkpoint was saved in epoch 2: the fault was never injected"
    assert not injected[0].endswith(".pt"), "torch.save wrote straight to the checkpoint, not to a temporary file"

    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert best["epoch"] == 1 and last["epoch"] == 1
    assert best["val_macro_auc"] == last["history"][0]["val_macro_auc"] == last["best"]["val_macro_auc"]
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items()}
    assert best["model"].keys() == ema.keys()
    assert all(torch.equal(v, ema[k]) for k, v in best["model"].items())
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []

    monkeypatch.undo()
    summary = train(tiny_cfg)  # the run resumes from the intact last.pt
    whole = train(dataclasses.replace(tiny_cfg, out=str(out.parent / "uninterrupted")))
    assert summary["epochs_run"] == whole["epochs_run"] == 2
    assert (summary["best_epoch"], summary["best_val_macro_auc"]) == (whole["best_epoch"], whole["best_val_macro_auc"])
    assert torch.load(out / "best.pt", map_location="cpu", weights_only=False)["epoch"] == whole["best_epoch"]


# ----------------------------------------------------------------------------- faults: interrupted study


def test_interrupted_study_resumes_from_finished_steps(tmp_path, fake_notebooks, capsys):
    """A study interrupted in its 4th step (Ctrl-C) records it as not finished; the next run skips
    the three finished steps and runs the rest. The notebooks are stand-ins (the bookkeeping is the
    same for real ones, which tests/test_study.py runs once per session)."""
    from study_helpers import fake_study

    from cxrkit.study import load_study, run_study

    params = fake_study(tmp_path, variants=["none", "sparse"], n_folds=2)
    fake_notebooks.interrupt_at = 4
    with pytest.raises(KeyboardInterrupt):
        run_study(params, progress=True)
    assert fake_notebooks.calls == 4
    first = capsys.readouterr().out
    ran = [line.split()[2] for line in first.splitlines() if line.startswith("[run ]")]
    assert len(ran) == 4 and "[skip]" not in first and fake_notebooks.ran == ran[:3]
    steps_file = load_study(params).report_dir / "steps.json"
    state = json.loads(steps_file.read_text())
    assert [state[s]["status"] for s in ran[:3]] == ["ok", "ok", "ok"]
    assert state[ran[3]]["status"] == "interrupted"  # recorded as such, never as finished

    run_study(params, progress=True)
    out = capsys.readouterr().out
    skipped = [line.split()[1] for line in out.splitlines() if line.startswith("[skip]")]
    rerun = [line.split()[2] for line in out.splitlines() if line.startswith("[run ]")]
    assert skipped == ran[:3]
    assert rerun[0] == ran[3] and len(rerun) == (4 - 1) + 5 and not set(rerun) & set(skipped)  # 3 trainings left + 04, 05, 06, 08, 09
    state = json.loads(steps_file.read_text())
    assert list(state) == ran[:3] + rerun
    assert all(s["status"] == "ok" for s in state.values())
