"""An ensemble of trained runs predicting new images: the runs checked to agree on what they predict
and how they see an image (:func:`check_members`), their ensemble with flip TTA
(:func:`predict_ensemble`) and the prediction file with its provenance (:func:`write_inference`).

A run is given here as a :class:`Member`: its model, loaded from ``best.pt``, and the
preprocessing it was trained with. :mod:`cxrkit.training.trained` reads run folders into members
and runs the whole inference (:func:`cxrkit.training.trained.infer`, ``cxrkit infer``); the
images come from :mod:`cxrkit.evaluation.sources`.

The ensemble is the mean of the members' probabilities, each with flip TTA the mean of the
image's and its mirror's probabilities: what :func:`cxrkit.evaluation.ensemble.ensemble` makes
of the runs' own ``pred_*.csv``. Each image is decoded once per batch and fed to every member.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrkit.data.images import DECODE_VERSION, ImagePolicy
from cxrkit.data.pipeline import CXRImages, make_loader, to_model_input
from cxrkit.evaluation.predictions import write_predictions
from cxrkit.evaluation.sources import ImageSource
from cxrkit.evaluation.tta import probabilities
from cxrkit.utils.amp import autocast_context
from cxrkit.utils.memory_format import channels_last_default
from cxrkit.utils.provenance import environment

#: What the members of an ensemble must agree on, with its name in the refusal.
AGREEMENT: dict[str, str] = {
    "labels": "labels (names and order)",
    "image_size": "image size (image_size)",
    "mean": "input normalisation mean (the backbone's timm data config)",
    "std": "input normalisation std (the backbone's timm data config)",
    "image_policy": "image decoding policy (image_policy)",
}


class RunMismatch(ValueError):
    """Runs that cannot predict together (other labels or preprocessing), or a run given twice."""


@dataclass
class Member:
    """One trained run, ready to predict.

    Attributes:
        run: its folder.
        model: its model in eval mode (``best.pt``: the EMA, or the EMA backbone with the live
            refiner under ``ema_refiner: false``), on the inference device.
        labels: the ``L`` labels it predicts, in order.
        image_size: side of the square images it takes, in pixels.
        mean, std: its input normalisation (the backbone's timm data config); the pipeline
            resizes to ``image_size`` itself, so timm's input size, crop and interpolation do
            not apply.
        image_policy: how it decodes images of more than 8 bits.
        record: what the prediction file's sidecar keeps of it (checkpoint, sha256, epoch, fold,
            refiner, backbone, the full data config, the data it was trained on).
    """

    run: Path
    model: torch.nn.Module
    labels: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_policy: ImagePolicy
    record: dict[str, Any] = field(default_factory=dict)

    def preprocessing(self) -> dict[str, Any]:
        """The keys of :data:`AGREEMENT` with plain values."""
        return {"labels": list(self.labels), "image_size": int(self.image_size),
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "image_policy": self.image_policy.as_dict()}


def check_members(members: Sequence[Member]) -> dict[str, Any]:
    """Check that the runs can predict together: each given once, with the same labels in the
    same order and the same preprocessing (:data:`AGREEMENT`).

    Args:
        members: the runs.

    Returns:
        Their common :meth:`Member.preprocessing`.

    Raises:
        RunMismatch: naming what differs, the first run's value and the differing run's (for
            labels, which ones it lacks or adds), or the run given twice.
    """
    if not members:
        raise RunMismatch("no run to predict with: give at least one run folder")
    seen: set[Path] = set()
    for m in members:
        key = Path(m.run).resolve()
        if key in seen:
            raise RunMismatch(f"run {m.run} is given twice")
        seen.add(key)
    ref = members[0].preprocessing()
    for m in members[1:]:
        own = m.preprocessing()
        for key, what in AGREEMENT.items():
            if own[key] != ref[key]:
                detail = _label_difference(ref[key], own[key]) if key == "labels" else ""
                raise RunMismatch(f"runs disagree on the {what} and cannot predict together: {members[0].run} "
                                  f"has {_shown(key, ref[key])}, {m.run} has {_shown(key, own[key])}{detail}")
    return ref


def _shown(key: str, value: Any) -> str:
    """A value in a refusal (labels are long: their count)."""
    return f"{len(value)} labels" if key == "labels" else json.dumps(value)


def _label_difference(ref: list[str], other: list[str]) -> str:
    """What the second run's labels lack or add, or that only their order differs."""
    lacks, adds = [lab for lab in ref if lab not in other], [lab for lab in other if lab not in ref]
    if not lacks and not adds:
        return f" (the same labels in another order: {other})"
    return f" (it lacks {lacks}, adds {adds})"


@torch.no_grad()
def predict_ensemble(members: Sequence[Member], paths: Sequence[str], device: torch.device, *,
                     batch_size: int = 64, workers: int = 0, tta: bool = True, amp: str = "auto",
                     progress: bool = False) -> np.ndarray:
    """The members' mean probabilities on the images ``paths``.

    Each batch is decoded once (:func:`cxrkit.data.images.load_image` under the members' image
    policy, resized to their image size, no uint8 cache), normalised once and fed to every member.

    Args:
        members: runs that agree (:func:`check_members`), models on ``device``.
        paths: image files, in output order.
        device: where the models are.
        batch_size: images per batch; ``workers`` DataLoader worker processes.
        tta: flip TTA (:func:`cxrkit.evaluation.tta.probabilities`).
        amp: autocast precision (:func:`cxrkit.utils.amp.resolve_amp`).
        progress: a tqdm bar over the batches.

    Returns:
        ``(N, L)`` float64 probabilities.
    """
    from tqdm import tqdm

    first = members[0]
    images = CXRImages(list(paths), np.zeros((len(paths), len(first.labels)), dtype=np.float32), first.image_size,
                       policy=first.image_policy)
    loader = make_loader(images, batch_size, shuffle=False, seed=0, workers=workers,
                         pin_memory=device.type == "cuda", pad=False)
    for m in members:
        m.model.eval()
    out = []
    bar = tqdm(loader, disable=not progress, desc=f"infer ({len(members)} run(s){', flip TTA' if tta else ''})",
               unit="batch")
    for batch, _, _ in bar:
        x = to_model_input(batch, first.mean, first.std, device, channels_last=channels_last_default(device))
        with autocast_context(device, amp):
            total = sum(probabilities(m.model, x, tta).double() for m in members)
        out.append((total / len(members)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(first.labels)))


def write_inference(out: str | Path, source: ImageSource, labels: Sequence[str], probs: np.ndarray,
                    meta: dict[str, Any], *, on_bad_image: str = "error") -> Path:
    """Write the prediction file (:func:`cxrkit.evaluation.predictions.write_predictions`; ids as
    text) with ``meta`` (:func:`inference_meta`) in its sidecar, and beside it
    ``<stem>_excluded.csv`` (with ``on_bad_image: exclude``, also when empty) and
    ``<stem>_reoriented.csv`` (when an image was turned upright). A list this call does not
    write is removed, so the folder describes this inference.

    Args:
        out: the prediction CSV.
        source: the images predicted (:class:`cxrkit.evaluation.sources.ImageSource`).
        labels: the ``L`` labels; ``probs`` the ``(N, L)`` probabilities in ``source.ids`` order.
        meta: the sidecar's content.
        on_bad_image: how unusable images were handled.

    Returns:
        ``out`` as a Path.
    """
    out = Path(out)
    lists = {"excluded": (source.excluded, on_bad_image == "exclude"),
             "reoriented": (source.reoriented, len(source.reoriented) > 0)}
    for name, (table, written) in lists.items():
        path = out.with_name(f"{out.stem}_{name}.csv")
        if written:
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(table).to_csv(path, index=False)
        else:
            path.unlink(missing_ok=True)
    return write_predictions(out, source.ids, labels, probs, meta)


def inference_meta(source: ImageSource, members: Sequence[Member], *, tta: bool,
                   settings: dict[str, Any]) -> dict[str, Any]:
    """The sidecar of an inference prediction file: the data fingerprint and what it is of, the
    runs (checkpoint with sha256), the preprocessing, the image decoding, the label alignment with
    a dataset, the settings and the environment (code version, packages, device)."""
    refiners = sorted({str(m.record.get("refiner")) for m in members})
    first = members[0]
    return {
        "data_fingerprint": source.fingerprint, "fingerprint_of": source.description["fingerprint_of"],
        "splits_fingerprint": None, "split": "inference",
        "fold": first.record.get("fold") if len(members) == 1 else "ensemble",
        "variant": refiners[0] if len(refiners) == 1 else "mixed: " + ", ".join(refiners),
        "tta": tta, "members": [str(m.run) for m in members], "source": source.description,
        "runs": [m.record for m in members], "preprocessing": first.preprocessing(),
        "image_decoding": {"policy": first.image_policy.as_dict(), "decoder_version": DECODE_VERSION,
                           "images": source.decoding},
        "excluded": len(source.excluded), "reoriented": len(source.reoriented),
        "label_alignment": source.alignment.as_dict() if source.alignment is not None else None,
        "settings": settings, "provenance": environment(str(settings.get("device"))),
    }
