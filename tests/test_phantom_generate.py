"""Tests of cxrkit.phantom.generate: layout on disk, reproducibility, renderer plumbing, safety."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrkit import __version__
from cxrkit.data.labels import LABELS
from cxrkit.phantom.generate import MARKER, generate
from cxrkit.phantom.model import DRAWABLE, HABITUS_KEYS, META_COLUMNS, PhantomConfig


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a generated dataset but its provenance record (which holds the time)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "provenance.json"
    }


def test_writes_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    info = generate(out, n_patients=20, size=64, seed=3, workers=1, progress=False)
    train = pd.read_csv(out / "train.csv")
    truth = pd.read_csv(out / "truth.csv")
    assert list(train.columns) == list(META_COLUMNS) + list(LABELS)
    assert all(train[lab].dtype.kind == "i" for lab in LABELS)
    assert train["Patient_ID"].nunique() == 20
    assert truth["Image_name"].tolist() == train["Image_name"].tolist()
    assert {f"drawn_{lab}" for lab in DRAWABLE} <= set(truth.columns)
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == sorted(train["Image_name"])
    for name in train["Image_name"].iloc[:5]:
        with Image.open(out / "images" / name) as img:
            assert img.format == "PNG" and img.mode == "L" and img.size == (64, 64)
    meta = json.loads((out / MARKER).read_text())
    assert meta["complete"] is True
    assert (meta["seed"], meta["size"], meta["n_patients"], meta["version"]) == (
        3,
        64,
        20,
        __version__,
    )
    assert meta["counts"]["images"] == len(train) == info["counts"]["images"]
    assert meta["counts"]["positives"] == {lab: int(train[lab].sum()) for lab in LABELS}
    assert meta["model"]["cause_prior"]["critical"] == 0.45
    assert info["out"] == str(out) and info["seconds"] > 0
    prov = json.loads((out / "provenance.json").read_text())  # who made it, when, with which code
    assert prov["parameters"]["seed"] == 3 and "commit" in prov["git"] and prov["packages"]["numpy"]
    assert "time" in prov and "time" not in meta  # phantom.json stays deterministic


def test_same_seed_is_byte_identical_across_worker_counts(tmp_path: Path) -> None:
    generate(tmp_path / "a", n_patients=12, size=48, seed=5, workers=1, progress=False)
    generate(tmp_path / "b", n_patients=12, size=48, seed=5, workers=2, progress=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 4
    assert a == b
    generate(tmp_path / "c", n_patients=12, size=48, seed=6, workers=1, progress=False)
    c = _files(tmp_path / "c")
    assert c["train.csv"] != a["train.csv"]


def test_renderer_receives_drawn_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, dict, dict, bool, int]] = []

    def fake_render(size, findings, habitus, view_ap, rng):
        value = int(rng.integers(0, 2**31))
        calls.append((size, dict(findings), dict(habitus), view_ap, value))
        return np.full((size, size), value % 256, dtype=np.uint8)

    fake = types.ModuleType("cxrkit.phantom.render")
    fake.render = fake_render
    monkeypatch.setitem(sys.modules, "cxrkit.phantom.render", fake)
    out = tmp_path / "ph"
    generate(out, n_patients=15, size=32, seed=2, workers=1, progress=False)
    train = pd.read_csv(out / "train.csv")
    truth = pd.read_csv(out / "truth.csv")
    assert len(calls) == len(truth)
    drawn_any = 0
    for i, (size, findings, habitus, view_ap, value) in enumerate(calls):  # in-process: row order
        rec = truth.iloc[i]
        assert size == 32
        assert set(findings) == {lab for lab in DRAWABLE if rec[f"drawn_{lab}"] == 1}
        for lab, sev in findings.items():
            assert sev == rec[f"sev_{lab}"] and 0.3 <= sev <= 1.0
        assert habitus == {k: rec[f"hab_{k}"] for k in HABITUS_KEYS}
        assert view_ap == (train["ViewPosition"].iloc[i] == "AP")
        assert value == np.random.default_rng(int(rec["image_seed"])).integers(0, 2**31)
        drawn_any += bool(findings)
    assert drawn_any > 0


def test_rejects_bad_renderer_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("cxrkit.phantom.render")
    fake.render = lambda size, findings, habitus, view_ap, rng: np.zeros((size, size + 1), np.uint8)
    monkeypatch.setitem(sys.modules, "cxrkit.phantom.render", fake)
    with pytest.raises(ValueError, match="expected uint8"):
        generate(tmp_path / "ph", n_patients=2, size=16, seed=0, workers=1, progress=False)


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=str(foreign)):
            generate(foreign, n_patients=2, size=16, workers=1, progress=False, overwrite=overwrite)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError):
        generate(a_file, n_patients=2, size=16, workers=1, progress=False)


def test_rerun_same_parameters_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    generate(out, n_patients=10, size=32, seed=1, workers=1, progress=False)
    first = _files(out)
    generate(out, n_patients=10, size=32, seed=1, workers=1, progress=False)  # idempotent
    assert _files(out) == first
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate(out, n_patients=4, size=32, seed=1, workers=1, progress=False)
    with pytest.raises(FileExistsError):
        generate(
            out,
            n_patients=10,
            size=32,
            seed=1,
            config=PhantomConfig(report_noise=False),
            workers=1,
            progress=False,
        )
    generate(out, n_patients=4, size=32, seed=1, workers=1, progress=False, overwrite=True)
    train = pd.read_csv(out / "train.csv")
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(train["Image_name"])
    assert json.loads((out / MARKER).read_text())["n_patients"] == 4
