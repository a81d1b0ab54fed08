"""Shared fixtures: a tiny phantom dataset with folds, and a fast training configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("CXRKIT_QUIET", "1")


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 90-patient, 48 px phantom with patient-grouped 3-fold splits and a test split."""
    from cxrkit.data.datasets import create_dataset, fingerprint
    from cxrkit.data.splits import make_splits, save_splits
    from cxrkit.phantom.generate import generate

    root = tmp_path_factory.mktemp("phantom")
    generate(root, n_patients=90, size=48, seed=7, workers=1, progress=False, overwrite=True)
    table = create_dataset("gxs", root=root).table
    splits = make_splits(table, table.attrs["labels"], n_folds=3, test_size=0.2, seed=0, group="patient")
    save_splits(splits, root / "folds.csv", {"seed": 0, "n_folds": 3, "test_size": 0.2, "group": "patient",
                                             "fingerprint": fingerprint(table)})
    return root


@pytest.fixture
def tiny_cfg(tiny_phantom: Path, tmp_path: Path):
    """A TrainConfig that trains in seconds on CPU."""
    from cxrkit.training.config import TrainConfig

    return TrainConfig(data=str(tiny_phantom), splits=str(tiny_phantom / "folds.csv"), backbone="test_resnet",
                       image_size=32, batch_size=16, eval_batch_size=32, epochs=2, lr=1e-3, refiner="sparse",
                       ema_decay=0.9, cache=False, workers=0, progress=False, out=str(tmp_path / "run"))


@pytest.fixture
def fake_notebooks(monkeypatch):
    """run_study with every notebook replaced by :class:`study_helpers.FakeNotebooks` (no kernel:
    seconds instead of minutes), for the study's bookkeeping."""
    import papermill
    from study_helpers import FakeNotebooks

    from cxrkit.study import runner as study

    fake = FakeNotebooks()
    monkeypatch.setattr(papermill, "execute_notebook", fake.execute)
    monkeypatch.setattr(study, "_render_html", lambda ipynb, page: Path(page).write_text("<html></html>"))
    monkeypatch.setattr(study, "ensure_kernel", lambda: "cxrkit")
    return fake


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory):
    """The one real smoke study of a test session (params/smoke.yaml, outputs under a temporary
    folder), run with two parallel training jobs: ``(params_file, run_study result)``. Tests that
    use it carry ``@pytest.mark.xdist_group("smoke_study")`` so one pytest-xdist worker runs it."""
    from study_helpers import smoke_copy

    from cxrkit.study import run_study

    params = smoke_copy(tmp_path_factory.mktemp("study"))
    return params, run_study(params, progress=False, jobs=2)
