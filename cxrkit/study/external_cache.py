"""The cached external predictions of a study: every variant's fold ensemble at the ``external:``
site, written by ``07_external`` (:func:`cxrkit.study.external.external_predictions`) to
``<runs>/<name>/external/<site>/<variant>.csv`` and valid while its sidecar records the same
external data (fingerprint), the same checkpoints (sha256) and TTA; read back by ``08_trust``
without inferring anything."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.data.datasets import fingerprint
from cxrkit.evaluation.predictions import read_predictions
from cxrkit.evaluation.sources import file_sha256
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import external_dataset
from cxrkit.study.inference import variant_runs


def external_folder(cfg: StudyConfig) -> Path:
    """``<runs>/<name>/external/<site name>/``: the cached external predictions."""
    return cfg.run_dir / "external" / cfg.external_spec["name"]


def cached(path: Path, data_fp: str, runs: Sequence[Path], tta: bool) -> pd.DataFrame | None:
    """The prediction file at ``path`` when its sidecar records this data, these checkpoints and TTA."""
    if not path.is_file():
        return None
    table, meta = read_predictions(path)
    shas = [r.get("sha256") for r in meta.get("runs") or []]
    if meta.get("data_fingerprint") != data_fp or meta.get("tta") != tta or \
            shas != [file_sha256(Path(r) / "best.pt") for r in runs]:
        return None
    return table


def cached_external_predictions(cfg: StudyConfig, variant: str) -> tuple[pd.DataFrame, Any, Any] | None:
    """A variant's external predictions as ``07_external`` cached them, indexed by image, with the
    external dataset and its label alignment (:func:`cxrkit.study.data.external_dataset`); None when
    the study has no ``external:`` block, or the file is missing or stale (other data, checkpoints
    or TTA: run ``07_external`` again)."""
    if cfg.external_spec is None:
        return None
    path = external_folder(cfg) / f"{variant}.csv"
    if not path.is_file():
        return None
    ds, alignment = external_dataset(cfg)
    table = cached(path, fingerprint(ds.table), variant_runs(cfg, variant), cfg.train_config(0, variant).tta)
    return None if table is None else (table.set_index("image"), ds, alignment)
