"""The finish of a run: the best checkpoint reloaded, its validation (out-of-fold) and test
predictions written with and without flip TTA (both from one pass over each split: two forwards
per image, the image and its flip), and the coupling matrices it learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrkit.data.pipeline import make_loader
from cxrkit.data.tables import label_matrix
from cxrkit.evaluation.metrics import macro_auc, per_label_auc
from cxrkit.evaluation.predictions import write_predictions
from cxrkit.models import effective_coupling
from cxrkit.training.config import TrainConfig
from cxrkit.training.distributed import Dist, predict_gathered, predict_gathered_both
from cxrkit.training.fold import FoldData
from cxrkit.training.setup import Subset
from cxrkit.utils.paths import resolve


def finish(cfg: TrainConfig, data: FoldData, model: torch.nn.Module, best_path: Path, device: torch.device,
           mean: Any, std: Any, subset: Subset, dist: Dist | None = None) -> dict[str, Any]:
    """Load the best checkpoint, save validation (out-of-fold) and test predictions and the coupling matrix."""
    dist = dist or Dist()
    out = resolve(cfg.out)
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    model.to(device)
    images = data.table["image"].to_numpy()
    y = label_matrix(data.table)
    meta = {"data_fingerprint": data.data_fingerprint, "splits_fingerprint": data.splits_fingerprint,
            "fold": cfg.fold, "variant": cfg.refiner, "backbone": cfg.backbone, "seed": cfg.seed,
            "best_epoch": best["epoch"]}
    summary: dict[str, Any] = {}
    for split, idx in (("val", data.val_idx), ("test", data.test_idx)):
        if len(idx) == 0:
            continue
        loader = make_loader(subset(idx, None), cfg.eval_batch_size // dist.world, shuffle=False, seed=cfg.seed,
                             workers=cfg.workers, pin_memory=device.type == "cuda", rank=dist.rank,
                             world=dist.world, pad=False)
        progress = cfg.progress and dist.main
        if cfg.tta:  # one pass: the plain forward gives the no-TTA probabilities, with the flip the TTA ones
            plain, flipped = predict_gathered_both(dist, model, loader, device, mean, std, cfg.amp, progress)
            found = {False: plain, True: flipped}
        else:
            found = {False: predict_gathered(dist, model, loader, device, mean, std, cfg.amp, False, progress)}
        for tta, probs in found.items():
            name = f"pred_{split}{'' if tta or not cfg.tta else '_notta'}.csv"
            if dist.main:
                write_predictions(out / name, images[idx], data.labels, probs,
                                  {**meta, "split": split, "tta": tta})
            key = f"{split}_macro_auc{'' if tta or not cfg.tta else '_notta'}"
            summary[key] = macro_auc(y[idx], probs)
            if split == "val" and (tta or not cfg.tta):
                summary["val_per_label_auc"] = per_label_auc(y[idx], probs, data.labels).to_dict()
    coupling = model.coupling()
    if coupling is not None and dist.main:
        pd.DataFrame(coupling, index=data.labels, columns=data.labels).to_csv(out / "coupling.csv",
                                                                              float_format="%.6f")
        prev = np.clip(np.nanmean(y[data.train_idx], axis=0), 0.01, 0.99)
        effective = effective_coupling(model.refiner, np.log(prev / (1 - prev)))
        pd.DataFrame(effective, index=data.labels, columns=data.labels).to_csv(out / "effective_coupling.csv",
                                                                               float_format="%.6f")
    return summary
