"""A study's trained variants applied to new images: the run folders of a variant's folds
(:func:`variant_runs`) and :func:`infer`, for notebooks::

    from cxrkit import study as S
    cfg = S.load_study("params/default.yaml")
    table, meta = S.infer(S.variant_runs(cfg, "sparse"), images="new/*.png", out="runs/new_sparse.csv")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.study.config import StudyConfig, StudyError
from cxrkit.study.runs import missing_runs
from cxrkit.utils.params import ConfigError


def variant_runs(cfg: StudyConfig, variant: str) -> list[Path]:
    """The run folders of every fold of one variant of a study, each checked to be trained.

    Args:
        cfg: the study (:func:`cxrkit.study.load_study`).
        variant: one of its variant names (``cfg.variant_names``).

    Returns:
        ``<runs>/<name>/<variant>/fold<k>`` for k in 0..n_folds-1.

    Raises:
        ConfigError: an unknown variant, naming the study's.
        StudyError: folds not trained yet, naming them and the command that trains them.
    """
    if variant not in cfg.variant_names:
        raise ConfigError(f"variant: {variant!r} is not a variant of study {cfg.name!r}; its variants: "
                          f"{cfg.variant_names}")
    missing = missing_runs(cfg, [variant])
    if missing:
        raise StudyError(f"study {cfg.name!r}: fold(s) {[k for k, _, _ in missing]} of variant {variant!r} are not "
                         f"trained (no metrics.json under {cfg.run_dir / variant}); run `cxrkit study` on its "
                         f"parameter file first")
    return [cfg.train_dir(k, variant) for k in range(cfg.n_folds)]


def infer(runs: Sequence[str | os.PathLike], *, images: str | os.PathLike | None = None,
          dataset: str | None = None, data: str | os.PathLike | None = None,
          dataset_options: dict[str, Any] | None = None, out: str | os.PathLike | None = None,
          device: str = "auto", batch_size: int = 64, workers: int = 0, tta: bool = True, amp: str = "auto",
          on_bad_image: str = "error", progress: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predict new images with trained runs: :func:`cxrkit.training.trained.infer`, with the same
    arguments, defaults and result (``(table, meta)``; see there). Imported when called, so that
    importing the study does not import torch."""
    from cxrkit.training.trained import infer as infer_runs

    return infer_runs(runs, images=images, dataset=dataset, data=data, dataset_options=dataset_options, out=out,
                      device=device, batch_size=batch_size, workers=workers, tta=tta, amp=amp,
                      on_bad_image=on_bad_image, progress=progress)
