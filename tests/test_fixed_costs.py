"""Issue 15 (A): a run's fixed costs. Predictions with and without flip TTA from one pass, the image
check recorded and not repeated for unchanged files, and the seconds of each phase in metrics.json."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cxrkit.data.images.scan as scan_module
from cxrkit.data.datasets import create_dataset, label_matrix
from cxrkit.data.images import ImagePolicy
from cxrkit.data.images.checked import record_file, scan_images_once
from cxrkit.data.pipeline import CXRImages, make_loader
from cxrkit.evaluation.tta import predict_probs, predict_probs_both
from cxrkit.models import create_model

# --- TTA and no TTA from one pass -----------------------------------------------------------------


def _loader_and_model(root: Path):
    table = create_dataset("gxs", root=root, check_images=False).table
    y = label_matrix(table)[:40]
    loader = make_loader(CXRImages(table["path"].tolist()[:40], y, 32), 16, shuffle=False, seed=0, workers=0,
                         pad=False)
    torch.manual_seed(0)
    model = create_model("test_resnet", y.shape[1], refiner="sparse")
    with torch.no_grad():
        model.refiner.A.normal_(0, 1)
    return loader, model


def test_one_pass_gives_the_predictions_of_two_separate_passes(tiny_phantom):
    loader, model = _loader_and_model(tiny_phantom)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    stats = {"mean": model.data_config["mean"], "std": model.data_config["std"], "amp": "off"}
    plain, tta = predict_probs_both(model, loader, torch.device("cpu"), **stats)
    assert len(calls) == 2 * len(loader)  # the image and its flip, once each
    alone = predict_probs(model, loader, torch.device("cpu"), tta=False, **stats)
    alone_tta = predict_probs(model, loader, torch.device("cpu"), tta=True, **stats)
    assert plain.shape == tta.shape == (40, alone.shape[1])
    np.testing.assert_allclose(plain, alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(tta, alone_tta, rtol=0, atol=1e-6)
    assert np.array_equal(plain, alone) and np.array_equal(tta, alone_tta)  # the same batches: bit for bit
    assert not np.allclose(plain, tta)  # the flip does change the model's output


def test_a_run_saves_no_tta_predictions_equal_to_a_separate_pass(tiny_cfg):
    from cxrkit.training.loop import train

    tiny_cfg.epochs = 1
    summary = train(tiny_cfg)
    out = Path(tiny_cfg.out)
    timings = summary["timings"]
    for phase in ("start", "data", "set_up", "train_data_wait", "train_compute", "ema", "validation", "checkpoint",
                  "final_predictions", "other", "total"):
        assert timings[phase] >= 0, phase
    assert sum(v for k, v in timings.items() if k != "total") == pytest.approx(timings["total"], abs=0.05)
    table = create_dataset("gxs", root=tiny_cfg.data, check_images=False).table
    saved = pd.read_csv(out / "pred_val_notta.csv").set_index("image")
    paths = table.set_index("image").loc[saved.index, "path"].tolist()
    model = create_model(tiny_cfg.backbone, saved.shape[1], refiner=tiny_cfg.refiner)
    model.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=False)["model"])
    loader = make_loader(CXRImages(paths, np.zeros((len(paths), saved.shape[1])), tiny_cfg.image_size), 32,
                         shuffle=False, seed=0, workers=0, pad=False)
    stats = {"mean": model.data_config["mean"], "std": model.data_config["std"], "amp": tiny_cfg.amp}
    for name, tta in (("pred_val_notta.csv", False), ("pred_val.csv", True)):
        again = predict_probs(model, loader, torch.device("cpu"), tta=tta, **stats)
        np.testing.assert_allclose(pd.read_csv(out / name).set_index("image").to_numpy(), again, rtol=0, atol=1e-6)


# --- the image check, recorded --------------------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch):
    """Count the image check's decodes."""
    calls = []
    real = scan_module.decode

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(scan_module, "decode", counting)
    return calls


def _same_scan(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x.reset_index(drop=True), y.reset_index(drop=True))


def test_image_check_is_recorded_and_skipped_while_the_files_do_not_change(tiny_phantom, tmp_path, decodes):
    paths = sorted(str(p) for p in (tiny_phantom / "images").iterdir())[:10]
    first, used = scan_images_once(paths, tmp_path / "cache")
    assert used is None and len(decodes) == 10
    assert record_file(tmp_path / "cache", paths, ImagePolicy()).is_file()
    again, used = scan_images_once(paths, tmp_path / "cache")
    assert used == record_file(tmp_path / "cache", paths, ImagePolicy()) and len(decodes) == 10  # none decoded
    _same_scan(first, again)
    # another policy is another check
    scan_images_once(paths, tmp_path / "cache", policy=ImagePolicy.parse({"png16": "percentile"}))
    assert len(decodes) == 20


def test_a_changed_image_file_is_checked_again(tiny_phantom, tmp_path, decodes):
    folder = tmp_path / "images"
    shutil.copytree(tiny_phantom / "images", folder)
    paths = sorted(str(p) for p in folder.iterdir())[:6]
    scan_images_once(paths, tmp_path / "cache")
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # same size, newer
    _, used = scan_images_once(paths, tmp_path / "cache")
    assert used is None and len(decodes) == 12
    Path(paths[3]).write_bytes(b"not an image")  # replaced: recorded as unusable, then found again
    scan, _ = scan_images_once(paths, tmp_path / "cache")
    assert scan.bad["path"].tolist() == [paths[3]] and len(decodes) == 18
    again, used = scan_images_once(paths, tmp_path / "cache")
    assert used is not None and len(decodes) == 18
    _same_scan(scan, again)


def test_an_unwritable_record_folder_only_means_checking_again(tiny_phantom, tmp_path, decodes, monkeypatch):
    import cxrkit.data.images.checked as checked

    def refuse(*_):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(checked, "atomic_write", refuse)
    paths = sorted(str(p) for p in (tiny_phantom / "images").iterdir())[:4]
    for _ in range(2):
        _, used = scan_images_once(paths, tmp_path / "cache")
        assert used is None
    assert len(decodes) == 8


def test_excluded_images_are_reported_the_same_when_the_check_is_skipped(tiny_phantom, tmp_path, decodes):
    root = tmp_path / "data"
    shutil.copytree(tiny_phantom, root, ignore=shutil.ignore_patterns("folds.*"))
    table = create_dataset("gxs", root=root, check_images=False).table
    bad = table["path"].iloc[5]
    Path(bad).write_bytes(b"\x89PNG truncated")
    loads = []
    for k in range(2):
        ds = create_dataset("gxs", root=root, on_bad_image="exclude", report_dir=tmp_path / f"report{k}",
                            check_record=tmp_path / "cache")
        loads.append((ds, len(decodes)))
    (first, n_first), (second, n_second) = loads
    assert n_first == len(table) and n_second == n_first  # the second load decoded nothing
    assert first.check_recorded is None and second.check_recorded is not None
    assert first.excluded["path"].tolist() == [bad]
    pd.testing.assert_frame_equal(first.excluded, second.excluded)
    pd.testing.assert_frame_equal(first.table, second.table)
    assert first.decoding == second.decoding
    assert (tmp_path / "report0" / "excluded_images.csv").read_text() == \
        (tmp_path / "report1" / "excluded_images.csv").read_text()


def test_training_records_the_check_in_the_cache_folder(tiny_cfg, tmp_path, decodes, monkeypatch):
    import cxrkit.training.fold as fold

    monkeypatch.setattr(fold, "data_dir", lambda: tmp_path / "project_data")
    tiny_cfg.cache = True
    first = fold.load_fold(tiny_cfg, tmp_path / "report")
    n = len(decodes)
    assert n >= len(first.table) and first.check_recorded is None
    second = fold.load_fold(tiny_cfg, tmp_path / "report")
    assert len(decodes) == n and second.check_recorded.startswith(str(tmp_path / "project_data" / "cache"))
    assert second.decoding == first.decoding
    tiny_cfg.cache = False  # without the cache, nothing is recorded: the images are decoded
    assert fold.load_fold(tiny_cfg, tmp_path / "report").check_recorded is None and len(decodes) > n
