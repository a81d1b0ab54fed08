"""Bad inputs from public bug reports (issue 10, section 7): each one a test, the whole kind fixed.

1. A JPEG (or PNG) with an EXIF orientation is decoded upright wherever images are decoded
   (``load_image``, the image check, the uint8 cache), and the images it applies to are listed
   (``CXRDataset.reoriented``, ``reoriented_images.csv`` beside the run, ``data_quality`` in the
   run's ``provenance.json``); one saved in colour is decoded to grey and counted (the dataset's
   ``quality``, ``dataset_quality`` and ``image_decoding`` in ``provenance.json``).
2. Numeric image names with leading zeros (``000700``) and a name pandas reads as missing
   (``NA``) stay text through folds, train, predict (ensemble), evaluate and oracle.
3. A table the kit reads back with a key on several rows is refused, naming the keys: prediction
   files, the truth sidecar, splits, coupling matrices.
4. A label subset trains on folds made for all labels (by ``cxrkit folds`` or make_splits /
   save_splits); folds that really do not fit are refused naming what differs.
5. ``cxrkit folds`` / ``cxrkit synth`` into a read-only folder, and an unwritable uint8 cache, are
   refused before any work, saying how to write elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import cxrkit.data.datasets as datasets
import cxrkit.data.datasets.base as datasets_base
import cxrkit.training.fold as cxtrain
from cxrkit.cli import main
from cxrkit.data.datasets import (
    DataError,
    check_images,
    create_dataset,
    fingerprint,
    load_image,
    scan_images,
)
from cxrkit.data.pipeline import UInt8Cache
from cxrkit.data.splits import load_splits, make_splits, save_splits
from cxrkit.evaluation.predictions import read_coupling, read_predictions, write_predictions
from cxrkit.phantom.files import phantom_tables
from cxrkit.training.fold import load_fold
from cxrkit.training.loop import train
from cxrkit.utils.files import NotWritableError, check_writable
from cxrkit.utils.params import ConfigError

SUBSET = ["Lung Opacity", "Pleural Effusion"]
ORIENTATION = 0x0112  # EXIF tag


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def data(tiny_phantom: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny phantom (with its folds), to be changed by the test."""
    return Path(shutil.copytree(tiny_phantom, tmp_path / "data"))


def _cfg(tiny_cfg, root: Path, tmp_path: Path, **changes):
    values = {"data": str(root), "splits": str(root / "folds.csv"), "epochs": 1, "out": str(tmp_path / "run")}
    return dataclasses.replace(tiny_cfg, **{**values, **changes})


def _raw(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _upright(h: int = 32, w: int = 48) -> np.ndarray:
    """An asymmetric image: a bright block in the top-left corner on a left-to-right ramp."""
    img = np.tile(np.linspace(20, 120, w), (h, 1))
    img[: h // 4, : w // 4] = 250
    return img.astype(np.uint8)


def _save_with_orientation(path: Path, stored: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    fmt = "JPEG" if path.suffix == ".jpg" else "PNG"
    Image.fromarray(stored).save(path, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def _stored(path: Path) -> np.ndarray:
    """The pixels as stored (no orientation applied)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def _tripwire(monkeypatch: pytest.MonkeyPatch, module, name: str) -> None:
    def boom(*args, **kwargs):
        raise AssertionError(f"{name} reached despite the bad input")

    monkeypatch.setattr(module, name, boom)


# ----------------------------------------------------------------------------- 1. EXIF orientation


def test_load_image_applies_exif_orientation_6_of_a_jpeg(tmp_path: Path) -> None:
    upright = _upright()
    path = _save_with_orientation(tmp_path / "sideways.jpg", np.rot90(upright, k=1).copy(), 6)
    stored = _stored(path)
    assert stored.shape == (48, 32)  # stored sideways
    decoded = load_image(path)
    np.testing.assert_array_equal(decoded, np.rot90(stored, k=-1))  # orientation 6: 90 degrees clockwise
    assert decoded.shape == upright.shape
    small = load_image(path, 16).astype(float)  # the reduced JPEG decoding (draft) too
    assert small[:4, :4].mean() > small[8:, 8:].mean() + 60  # the bright block is top-left


def test_load_image_applies_exif_orientation_of_a_png(tmp_path: Path) -> None:
    upright = _upright()
    path = _save_with_orientation(tmp_path / "flipped.png", np.rot90(upright, k=2).copy(), 3)
    np.testing.assert_array_equal(load_image(path), upright)  # lossless: exactly the upright image


def test_image_scan_and_cache_apply_and_list_the_orientation(tmp_path: Path) -> None:
    turned = _save_with_orientation(tmp_path / "a.jpg", np.rot90(_upright(), k=1).copy(), 6)
    plain = tmp_path / "b.png"
    Image.fromarray(_upright()).save(plain)
    scan = scan_images([str(turned), str(plain)])
    assert scan.bad.empty and check_images([str(turned), str(plain)]).empty
    assert scan.reoriented.to_dict("records") == [
        {"path": str(turned), "exif_orientation": 6, "applied": "rotated 90 degrees clockwise"}]
    cache = UInt8Cache([str(turned), str(plain)], 24, tmp_path / "cache")
    np.testing.assert_array_equal(cache[0], load_image(turned, 24))
    assert cache[0][:6, :6].mean() > cache[0][12:, 12:].mean() + 60


def test_dataset_lists_reoriented_images_and_the_run_counts_them(data, tiny_cfg, tmp_path, caplog) -> None:
    """Also: an image saved in colour (RGB) is decoded to grey levels, counted in the dataset's
    quality and the run's provenance, as are the loader's other counts."""
    table = create_dataset("gxs", root=data, check_images=False).table
    name = table["image"].iloc[5]
    image = data / "images" / name
    _save_with_orientation(image, np.rot90(_stored(image), k=1).copy(), 6)  # the same name, now sideways
    colour = data / "images" / table["image"].iloc[7]
    grey = _stored(colour)
    Image.fromarray(np.dstack([grey, grey, grey])).save(colour)  # a grey radiograph saved as RGB

    with caplog.at_level("WARNING", logger="cxrkit.datasets"):
        ds = create_dataset("gxs", root=data, report_dir=tmp_path / "report")
    assert ds.reoriented[["image", "exif_orientation"]].to_dict("records") == [{"image": name, "exif_orientation": 6}]
    report = _raw(tmp_path / "report" / "reoriented_images.csv")
    assert report["image"].tolist() == [name] and report["applied"].tolist() == ["rotated 90 degrees clockwise"]
    rgb = "PNG 8-bit, colour (RGB) converted to grey"
    assert ds.quality == {"view_replaced": 0, "converted_to_grey": 1} and ds.decoding == {"PNG 8-bit": len(table) - 1, rgb: 1}
    assert f"gxs: 1 image(s) stored in colour, with a palette or with alpha, decoded to grey levels: {{'{rgb}': 1}}" \
        in caplog.text
    np.testing.assert_array_equal(load_image(colour), grey)  # equal channels: their luma is the grey level

    cfg = _cfg(tiny_cfg, data, tmp_path)
    train(cfg)
    out = Path(cfg.out)
    assert _raw(out / "reoriented_images.csv")["image"].tolist() == [name]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["data_quality"] == {"excluded_images": 0, "reoriented_images": 1}
    assert provenance["dataset_quality"] == {"view_replaced": 0, "converted_to_grey": 1}
    assert provenance["image_decoding"]["images"] == {"PNG 8-bit": len(table) - 1, rgb: 1}


# ----------------------------------------------------------------------------- 2. numeric ids


@pytest.fixture(scope="module")
def numeric_data(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny phantom with extension-less numeric image names (``000700``...), one image named
    ``NA`` and numeric patient ids with leading zeros; no folds yet."""
    root = Path(shutil.copytree(tiny_phantom, tmp_path_factory.mktemp("numeric") / "data"))
    train_csv, truth = _raw(root / "train.csv"), _raw(root / "truth.csv")
    names = {old: f"{700 + i:06d}" for i, old in enumerate(train_csv["Image_name"])}
    names[train_csv["Image_name"].iloc[3]] = "NA"
    patients = {old: f"{i:05d}" for i, old in enumerate(dict.fromkeys(train_csv["Patient_ID"]))}
    for old, new in names.items():
        (root / "images" / old).rename(root / "images" / new)
    train_csv["Image_name"] = train_csv["Image_name"].map(names)
    train_csv["Patient_ID"] = train_csv["Patient_ID"].map(patients)
    truth["Image_name"] = truth["Image_name"].map(names)
    train_csv.to_csv(root / "train.csv", index=False)
    truth.to_csv(root / "truth.csv", index=False)
    (root / "folds.csv").unlink()
    (root / "folds.json").unlink()
    return root


def test_numeric_ids_stay_text_through_folds_train_predict_evaluate(numeric_data, tiny_cfg, tmp_path, capsys):
    root = numeric_data
    names = set(_raw(root / "train.csv")["Image_name"])
    assert "000700" in names and "NA" in names
    assert main(["folds", "--data", str(root), "--n-folds", "3", "--test-size", "0.2", "--seed", "0"]) == 0
    folds = _raw(root / "folds.csv")
    assert set(folds["image"]) == names and folds["patient_id"].str.len().eq(5).all()
    test_images = set(folds.loc[folds["split"] == "test", "image"])

    runs = []
    for fold in (0, 1):
        cfg = _cfg(tiny_cfg, root, tmp_path, fold=fold, out=str(tmp_path / f"fold{fold}"))
        train(cfg)
        runs.append(cfg.out)
        pred, _ = read_predictions(Path(cfg.out) / "pred_test.csv")
        assert set(pred["image"]) == test_images
        val, _ = read_predictions(Path(cfg.out) / "pred_val.csv")
        assert set(val["image"]) == set(folds.loc[folds["fold"] == str(fold), "image"])

    ens = tmp_path / "ensemble.csv"
    assert main(["predict", *runs, "--out", str(ens)]) == 0
    assert set(_raw(ens)["image"]) == test_images  # written back with the ids as they were
    capsys.readouterr()
    for file in (ens, Path(runs[0]) / "pred_val.csv"):
        assert main(["evaluate", str(file), "--data", str(root), "--bootstrap", "20"]) == 0, capsys.readouterr().err
    assert f"n={len(test_images)}" in capsys.readouterr().out
    assert main(["oracle", str(root), "--split", str(root / "folds.csv")]) == 0


# ----------------------------------------------------------------------------- 3. duplicate keys


def test_prediction_file_listing_each_image_twice_is_refused(data, tmp_path, capsys) -> None:
    table = create_dataset("gxs", root=data, check_images=False).table
    images, labels = table["image"].iloc[:12].tolist(), table.attrs["labels"]
    path = write_predictions(tmp_path / "pred.csv", images, labels, np.full((12, len(labels)), 0.5),
                             {"data_fingerprint": fingerprint(table), "split": "test", "fold": 0})
    twice = _raw(path)
    pd.concat([twice, twice]).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        read_predictions(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: 'image' is not unique: {images[0]!r} on lines 2 and 14, "
                          f"{images[1]!r} on lines 3 and 15, ")
    assert msg.endswith("(12 in total)")
    capsys.readouterr()
    assert main(["evaluate", str(path), "--data", str(data), "--bootstrap", "20"]) == 2
    assert f"cxrkit evaluate: error: {path}: 'image' is not unique" in capsys.readouterr().err


def test_prediction_file_with_an_empty_image_id_is_refused(tmp_path) -> None:
    path = write_predictions(tmp_path / "pred.csv", ["a", "", "c"], ["Edema"], np.zeros((3, 1)), {})
    with pytest.raises(DataError, match=r"pred.csv: empty 'image' at line 3"):
        read_predictions(path)


def _pair(root: Path, names: list[str], truth_names: list[str]) -> Path:
    root.mkdir()
    pd.DataFrame({"Image_name": names, "Patient_ID": "007", "Edema": 0}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Image_name": truth_names, "cause_cardiac": 0}).to_csv(root / "truth.csv", index=False)
    return root


def test_truth_sidecar_with_an_image_twice_or_other_images_is_refused(tmp_path) -> None:
    root = _pair(tmp_path / "a", ["001", "002", "003"], ["001", "002", "002", "003"])
    with pytest.raises(DataError, match=r"truth.csv: 'Image_name' is not unique: '002' on lines 3 and 4$"):
        phantom_tables(root)
    root = _pair(tmp_path / "b", ["001", "002", "003", "003"], ["001", "002", "003"])
    with pytest.raises(DataError, match=r"train.csv: 'Image_name' is not unique: '003'"):
        phantom_tables(root)
    root = _pair(tmp_path / "c", ["001", "002", "003"], ["001", "002"])
    with pytest.raises(DataError, match=r"truth.csv: 1 image\(s\) of the other file are missing: '003'"):
        phantom_tables(root)
    labels_df, truth = phantom_tables(_pair(tmp_path / "d", ["001", "NA"], ["NA", "001"]))
    assert labels_df["Image_name"].tolist() == ["001", "NA"] and labels_df["Patient_ID"].tolist() == ["007"] * 2


def test_oracle_refuses_a_truth_sidecar_with_an_image_twice(data, capsys) -> None:
    truth = _raw(data / "truth.csv")
    pd.concat([truth, truth.iloc[[4]]]).to_csv(data / "truth.csv", index=False)
    capsys.readouterr()
    assert main(["oracle", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{data / 'truth.csv'}: 'Image_name' is not unique: {truth['Image_name'].iloc[4]!r}" in err


def test_splits_listing_an_image_twice_are_refused(data) -> None:
    folds = _raw(data / "folds.csv")
    pd.concat([folds, folds.iloc[[7]]]).to_csv(data / "folds.csv", index=False)
    name = folds["image"].iloc[7]
    expected = f"'image' is not unique: {name!r} on lines 9 and {len(folds) + 2}"
    with pytest.raises(DataError, match="folds.csv") as info:
        load_splits(data / "folds.csv")
    assert expected in str(info.value)
    table = create_dataset("gxs", root=data, check_images=False).table
    with pytest.raises(DataError, match="not unique"):
        load_splits(data / "folds.csv", table)


def test_splits_with_an_empty_or_non_integer_fold_are_refused(data) -> None:
    folds = _raw(data / "folds.csv")
    folds.loc[2, "fold"] = ""
    folds.to_csv(data / "folds.csv", index=False)
    with pytest.raises(DataError, match=rf"'fold' is not an integer for image\(s\) {folds['image'].iloc[2]!r} \(lines 4"):
        load_splits(data / "folds.csv")


def test_coupling_table_with_a_label_twice_is_refused(tmp_path) -> None:
    labels = ["Edema", "Atelectasis", "Pneumonia"]
    good = pd.DataFrame(np.arange(9.0).reshape(3, 3), index=labels, columns=labels)
    good.to_csv(tmp_path / "coupling.csv")
    pd.testing.assert_frame_equal(read_coupling(tmp_path / "coupling.csv"), good)
    rows = pd.DataFrame(np.zeros((3, 3)), index=["Edema", "Edema", "Pneumonia"], columns=labels)
    rows.to_csv(tmp_path / "rows.csv")
    with pytest.raises(DataError, match=r"rows.csv: 'row label' is not unique: 'Edema'"):
        read_coupling(tmp_path / "rows.csv")
    (tmp_path / "cols.csv").write_text(",Edema,Edema,Pneumonia\nEdema,0,0,0\nAtelectasis,0,0,0\nPneumonia,0,0,0\n")
    with pytest.raises(DataError, match=r"cols.csv: column label\(s\) \['Edema'\] appear more than once"):
        read_coupling(tmp_path / "cols.csv")
    good.loc[labels[::-1]].to_csv(tmp_path / "order.csv")
    with pytest.raises(DataError, match="must name the same labels in the same order"):
        read_coupling(tmp_path / "order.csv")


# ----------------------------------------------------------------------------- 4. label subsets and folds


def test_label_subset_trains_on_folds_made_by_cxrkit_folds(data, tiny_cfg, tmp_path) -> None:
    assert main(["folds", "--data", str(data), "--n-folds", "3", "--test-size", "0.2", "--seed", "0"]) == 0
    cfg = _cfg(tiny_cfg, data, tmp_path, labels=SUBSET)
    train(cfg)
    pred, meta = read_predictions(Path(cfg.out) / "pred_val.csv")
    assert list(pred.columns) == ["image", *SUBSET] and meta["labels"] == SUBSET
    # and `cxrkit evaluate` scores the run on the labels it predicts
    from cxrkit.evaluation.evaluate import evaluate_files

    result = evaluate_files([Path(cfg.out) / "pred_val.csv"], data=data, n_boot=20)
    assert [i for i in result["table"].index if i.startswith("AUC ")] == [
        *(f"AUC {lab}" for lab in SUBSET), *(f"AUC {lab} {end}" for lab in SUBSET for end in ("low", "high"))]  # and CIs


def test_label_subset_loads_folds_made_by_make_splits_and_save_splits(data, tiny_cfg, tmp_path) -> None:
    # as `cxrkit folds` makes them: stratified on all labels, with the fingerprint of the whole table
    table = create_dataset("gxs", root=data, check_images=False).table
    splits = make_splits(table, table.attrs["labels"], n_folds=3, test_size=0.2, seed=1)
    save_splits(splits, data / "folds.csv", {"fingerprint": fingerprint(table), "dataset": "gxs"})
    assert json.loads((data / "folds.json").read_text())["labels"] == table.attrs["labels"]
    fold = load_fold(_cfg(tiny_cfg, data, tmp_path, labels=SUBSET), tmp_path / "report")
    assert fold.labels == SUBSET and len(fold.val_idx) > 0
    reordered = _raw(data / "train.csv").iloc[::-1]  # another row order is the same data
    reordered.to_csv(data / "train.csv", index=False)
    assert load_fold(_cfg(tiny_cfg, data, tmp_path, labels=SUBSET), tmp_path / "report").labels == SUBSET


def _edit(root: Path, edit) -> str:
    """Rewrite root/train.csv through ``edit(df) -> (df, name of the image changed)``."""
    df, name = edit(_raw(root / "train.csv"))
    df.to_csv(root / "train.csv", index=False)
    return name


def _remove_image(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    return df.drop(index=8), df.loc[8, "Image_name"]


def _change_patient(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    df.loc[5, "Patient_ID"] = "someone else"
    return df, df.loc[5, "Image_name"]


def _flip_other_label(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    df.loc[3, "Edema"] = "1" if df.loc[3, "Edema"] == "0" else "0"  # not among SUBSET
    return df, ""


@pytest.mark.parametrize(("edit", "exc", "expected"), [
    (_remove_image, ValueError, "1 image(s) of folds.csv are not in the table: {name!r}"),
    (_change_patient, ValueError, "patient_id differs between folds.csv and the table for image(s) {name!r}"),
    (_flip_other_label, ConfigError, "was made for other data (fingerprint"),
])
def test_folds_that_do_not_fit_are_refused_naming_the_mismatch(edit, exc, expected, data, tiny_cfg, tmp_path,
                                                                monkeypatch) -> None:
    name = _edit(data, edit)
    _tripwire(monkeypatch, datasets_base, "_scan_image_files")  # refused before any image is decoded
    with pytest.raises(exc) as info:
        load_fold(_cfg(tiny_cfg, data, tmp_path, labels=SUBSET), tmp_path / "report")
    assert expected.format(name=name) in str(info.value)
    if edit is _flip_other_label:
        assert "the images and patient ids are the same" in str(info.value) and "Edema" in str(info.value)


# ----------------------------------------------------------------------------- 5. read-only outputs


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """os.access reports ``folder`` as not writable (what a read-only mount does, also for root)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_check_writable(tmp_path, monkeypatch) -> None:
    assert check_writable(tmp_path / "new" / "deeper", "x") == tmp_path / "new" / "deeper"
    (tmp_path / "file").write_text("")
    with pytest.raises(NotWritableError, match=r"cannot write x to .*file/sub \(.*file is not a folder\)"):
        check_writable(tmp_path / "file" / "sub", "x")
    _read_only(monkeypatch, tmp_path)
    with pytest.raises(NotWritableError, match=rf"cannot write what to {tmp_path} \(it is read-only\); use --out"):
        check_writable(tmp_path, "what", "use --out")
    with pytest.raises(NotWritableError, match=rf"cannot write what to {tmp_path / 'a' / 'b'} \({tmp_path} is read-only\)"):
        check_writable(tmp_path / "a" / "b", "what")


def test_folds_into_a_read_only_data_folder_says_use_out(data, tmp_path, monkeypatch, capsys) -> None:
    _read_only(monkeypatch, data)
    with monkeypatch.context() as m:
        _tripwire(m, datasets, "create_dataset")  # refused before the data is even read
        capsys.readouterr()
        assert main(["folds", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cxrkit folds: error: cannot write the folds to {data} (it is read-only); write them "
                          f"elsewhere with --out")
    assert "--out" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "elsewhere" / "folds.csv"
    assert main(["folds", "--data", str(data), "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()


def test_folds_into_a_chmod_read_only_folder(data, tmp_path, capsys) -> None:
    os.chmod(data, 0o555)
    try:
        if os.access(data, os.W_OK):
            pytest.skip("chmod does not make the folder read-only here (running as root)")
        capsys.readouterr()
        assert main(["folds", "--data", str(data)]) == 2
        assert "--out" in capsys.readouterr().err
        assert main(["folds", "--data", str(data), "--out", str(tmp_path / "folds.csv")]) == 0
    finally:
        os.chmod(data, 0o755)


def test_synth_into_a_read_only_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    _read_only(monkeypatch, target)
    import cxrkit.phantom.generate as generate

    _tripwire(monkeypatch, generate, "generate")
    capsys.readouterr()
    assert main(["synth", "--out", str(target), "--patients", "3", "--quiet"]) == 2
    assert f"cxrkit synth: error: cannot write the phantom to {target} (it is read-only); choose a writable folder " \
           f"with --out" in \
        capsys.readouterr().err
    _read_only(monkeypatch, tmp_path)  # a folder to be created inside a read-only one
    assert main(["synth", "--out", str(tmp_path / "new"), "--patients", "3", "--quiet"]) == 2


def test_unwritable_cache_is_refused_before_decoding(data, tiny_cfg, tmp_path, monkeypatch) -> None:
    cache_dir = tmp_path / "project" / "data" / "cache"
    cache_dir.mkdir(parents=True)
    monkeypatch.setattr(cxtrain, "data_dir", lambda: cache_dir.parent)
    _read_only(monkeypatch, cache_dir)
    _tripwire(monkeypatch, cxtrain, "create_dataset")
    with pytest.raises(NotWritableError, match=r"cannot write the uint8 image cache \(cache: true\) to .*--no-cache"):
        load_fold(_cfg(tiny_cfg, data, tmp_path, cache=True), tmp_path / "run")
    import cxrkit.data.pipeline as pipeline

    _tripwire(monkeypatch, pipeline, "load_image")
    with pytest.raises(NotWritableError, match="--no-cache"):
        UInt8Cache([str(p) for p in sorted((data / "images").iterdir())[:3]], 16, cache_dir)


def test_read_only_run_folder_is_refused_before_the_data_loads(data, tiny_cfg, tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    out.mkdir()  # exists already (a previous run's folder), but is read-only
    _read_only(monkeypatch, out)
    _tripwire(monkeypatch, cxtrain, "create_dataset")
    with pytest.raises(NotWritableError, match=rf"cannot write the run \(checkpoints, predictions\) to {out} "
                                               r"\(it is read-only\); choose another --out"):
        train(_cfg(tiny_cfg, data, tmp_path, out=str(out)))
