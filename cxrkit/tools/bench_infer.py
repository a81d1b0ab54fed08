"""``make bench``: inference on new images as ``cxrkit infer`` runs it, end to end (image check,
content fingerprint, decoding, the fold ensemble with flip TTA), for the default study's model.

The speed of inference does not depend on what the weights learned, so the runs are stand-ins:
one folder per fold with the ``best.pt`` of a freshly initialised default model (test_resnet at
128 px unless the parameters say otherwise) and a ``metrics.json``, as a finished run leaves them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from cxrkit.models import create_model
from cxrkit.training.config import TrainConfig, refiner_kwargs
from cxrkit.training.trained import infer
from cxrkit.utils.files import write_json
from cxrkit.utils.params import to_dict


def stand_in_runs(out: Path, labels: list[str], folds: int = 3, cfg: TrainConfig | None = None) -> list[Path]:
    """``folds`` run folders ``out/fold<k>`` holding a ``best.pt`` of a freshly initialised model
    (seed ``k``) of ``cfg`` (default: :class:`TrainConfig`'s defaults) and a ``metrics.json``.

    Returns:
        The run folders.
    """
    cfg = cfg or TrainConfig()
    runs = []
    for k in range(folds):
        run_cfg = dataclasses.replace(cfg, fold=k, out=str(out / f"fold{k}"))
        torch.manual_seed(k)
        model = create_model(cfg.backbone, len(labels), refiner=cfg.refiner, drop_rate=cfg.drop_rate,
                             refiner_kwargs=refiner_kwargs(cfg))
        run = out / f"fold{k}"
        run.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "epoch": 0, "val_macro_auc": None, "labels": labels,
                    "params": to_dict(run_cfg)}, run / "best.pt")
        write_json(run / "metrics.json", {"stand_in": "untrained weights, for timing only"})
        runs.append(run)
    return runs


def infer_rates(images: Path, labels: list[str], out: Path, quick: bool = False) -> list[dict[str, Any]]:
    """Images/s of :func:`cxrkit.training.trained.infer` on the folder ``images`` (every step a
    user waits for, on the CPU): the 3-fold ensemble with flip TTA with 0 and 2 DataLoader
    workers, and one run without TTA for comparison.

    Returns:
        Bench rows (``benchmark``, ``setting``, ``images/s``).
    """
    cfg = TrainConfig()
    runs = stand_in_runs(out / "infer_runs", labels, cfg=cfg)
    settings = [(runs, True, 0), (runs[:1], False, 0)] + ([] if quick else [(runs, True, 2)])
    rows = []
    for members, tta, workers in settings:
        t0 = time.perf_counter()
        table, _ = infer(members, images=images, out=out / "infer.csv", device="cpu", batch_size=cfg.eval_batch_size,
                         workers=workers, tta=tta, progress=False)
        rate = len(table) / (time.perf_counter() - t0)
        what = f"{len(members)}-fold ensemble x flip TTA" if tta else "1 run, no TTA"
        rows.append({"benchmark": f"infer {cfg.backbone} {cfg.image_size}px, {what} (cxrkit infer, end to end)",
                     "setting": f"folder of {len(table)} PNGs, cpu, {torch.get_num_threads()} threads, {workers} workers, "
                                f"batch {cfg.eval_batch_size}", "images/s": rate})
    return rows
