"""Fold ensembles: the image-by-image mean of several prediction files of one variant."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.evaluation.predictions import PredictionMismatch, check_compatible, read_predictions


def ensemble(paths: Sequence[str | Path]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Average the probabilities of several prediction files (e.g. one per fold) image by image."""
    frames, metas = zip(*(read_predictions(p) for p in paths))
    names = [str(p) for p in paths]
    check_compatible(metas, names, same_fold=False)
    for key in ("variant", "tta"):  # one model, several folds
        if len({json.dumps(m.get(key)) for m in metas}) > 1:
            raise PredictionMismatch(f"an ensemble averages folds of one variant; {key!r} differs: "
                                     + ", ".join(f"{n}: {m.get(key)!r}" for n, m in zip(names, metas)))
    folds = [m.get("fold") for m in metas]
    if len(set(map(str, folds))) < len(folds):
        raise PredictionMismatch(f"the same fold appears twice among {dict(zip(names, folds))}")
    base = frames[0].set_index("image")
    for p, f in zip(paths[1:], frames[1:]):
        if set(f["image"]) != set(base.index):
            raise PredictionMismatch(f"{p} predicts other images than {paths[0]}")
    mean = sum(f.set_index("image").loc[base.index] for f in frames) / len(frames)
    meta = {**metas[0], "fold": "ensemble", "members": [str(p) for p in paths]}
    return mean.reset_index(), meta
