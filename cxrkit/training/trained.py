"""Finished training runs read back and applied to new images.

:func:`load_runs` reads run folders into :class:`cxrkit.evaluation.run_ensemble.Member` s: each run's
``best.pt`` (the model :func:`cxrkit.training.checkpoint.save_best` keeps: the EMA, or with
``ema_refiner: false`` the EMA backbone and the live refiner, under the same keys) in the model
its parameters build, with the preprocessing it was trained with (image size, the backbone's
normalisation, the image policy). The runs are checked to agree before any weight is loaded.

:func:`infer` (``cxrkit infer``; ``cxrkit.study.infer`` in a notebook) predicts a folder, a glob
pattern or a dataset with them: every image checked up front, the fold ensemble with flip TTA,
the prediction file with its provenance (:mod:`cxrkit.evaluation.run_ensemble`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cxrkit.data.images import ImagePolicy
from cxrkit.data.tables import DataError
from cxrkit.evaluation.run_ensemble import (
    Member,
    RunMismatch,
    check_members,
    inference_meta,
    predict_ensemble,
    write_inference,
)
from cxrkit.evaluation.sources import dataset_source, file_sha256, folder_source
from cxrkit.models import create_model
from cxrkit.training.config import REFINER_OPTIONS, TrainConfig, refiner_kwargs
from cxrkit.training.distributed import pick_device
from cxrkit.training.resume import TrainingError
from cxrkit.utils.amp import resolve_amp
from cxrkit.utils.files import check_writable
from cxrkit.utils.memory_format import channels_last_default
from cxrkit.utils.params import ConfigError, from_dict
from cxrkit.utils.paths import resolve

#: Keys every ``best.pt`` holds (:func:`cxrkit.training.checkpoint.save_best`).
CHECKPOINT_KEYS = ("model", "labels", "params", "epoch")
#: The training parameters that build a run's model and its preprocessing. The others (data,
#: optimisation, experiment tracking, ...) are not needed to predict, and are neither read nor
#: checked: a run predicts where its trackers or data are not installed.
MODEL_PARAMETERS = ("backbone", "drop_rate", "refiner", "image_size", "image_policy", "ema_refiner",
                    *sorted({f for options in REFINER_OPTIONS.values() for f in options.values()}))


def read_run(run: str | os.PathLike) -> tuple[Member, dict[str, torch.Tensor]]:
    """A finished run's member, its model built from the run's parameters but not yet loaded,
    and the weights of its ``best.pt``.

    Args:
        run: the run folder (relative paths resolve from the project root).

    Returns:
        ``(member, state_dict)``.

    Raises:
        FileNotFoundError: no such folder, or no ``best.pt`` in it.
        TrainingError: the run has not finished (no ``metrics.json``: its ``best.pt`` may still
            change).
        DataError: a ``best.pt`` that is not a cxrkit checkpoint.
        ConfigError: model parameters (:data:`MODEL_PARAMETERS`) the kit no longer accepts
            (naming the key and the file).
    """
    folder = resolve(run)
    best = folder / "best.pt"
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder not found: {folder}")
    if not best.is_file():
        raise FileNotFoundError(f"{folder}: no best.pt (not a cxrkit training run, or one that kept no model)")
    if not (folder / "metrics.json").is_file():
        raise TrainingError(f"{folder}: its training has not finished (no metrics.json; best.pt may still change); "
                            f"run the same training command again to finish it")
    try:
        ck = torch.load(best, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint names the file
        raise DataError(f"cannot read {best}: {exc}") from exc
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise DataError(f"{best}: not a cxrkit best.pt (no {missing})")
    params = ck["params"]
    cfg = from_dict(TrainConfig, {k: v for k, v in params.items() if k in MODEL_PARAMETERS}, source=f"{best} (params)")
    labels = [str(lab) for lab in ck["labels"]]
    model = create_model(cfg.backbone, len(labels), refiner=cfg.refiner, drop_rate=cfg.drop_rate,
                         refiner_kwargs=refiner_kwargs(cfg))
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in model.data_config.items()}
    record = {"run": str(folder), "checkpoint": str(best), "sha256": file_sha256(best), "best_epoch": ck["epoch"],
              "val_macro_auc": ck.get("val_macro_auc"), "fold": params.get("fold"), "refiner": cfg.refiner,
              "backbone": cfg.backbone, "ema_refiner": cfg.ema_refiner, "data_config": config,
              "trained_on": _trained_on(folder, params)}
    member = Member(folder, model, labels, cfg.image_size, tuple(config["mean"]), tuple(config["std"]),
                    ImagePolicy.parse(cfg.image_policy), record)
    return member, ck["model"]


def _trained_on(folder: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The data a run was trained on and its code version, from its parameters and ``provenance.json``."""
    prov_file = folder / "provenance.json"
    prov = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
    return {"dataset": params.get("dataset"), "data": params.get("data"), "data_fingerprint": prov.get("data_fingerprint"),
            "splits_fingerprint": prov.get("splits_fingerprint"), "git": prov.get("git")}


def load_runs(runs: Sequence[str | os.PathLike], device: torch.device) -> list[Member]:
    """Read every run, check that they agree (:func:`cxrkit.evaluation.run_ensemble.check_members`),
    then load each one's weights onto ``device``, in eval mode.

    Raises:
        RunMismatch: runs that disagree (before any weight is loaded), or weights that do not fit
            the model the run's parameters build (naming the run).
        See also :func:`read_run`.
    """
    read = [read_run(r) for r in runs]
    members = [m for m, _ in read]
    check_members(members)
    for member, state in read:
        try:
            member.model.load_state_dict(state)
        except RuntimeError as exc:
            raise RunMismatch(f"{member.run}/best.pt does not fit the model its parameters build "
                              f"({member.record['backbone']}, refiner {member.record['refiner']}): {exc}") from None
        member.model.to(device).eval()
        if channels_last_default(device):
            member.model.to(memory_format=torch.channels_last)
    return members


def inference_device(name: str = "auto") -> torch.device:
    """The device (``auto``: CUDA, then MPS, then the CPU), checked to be present.

    Raises:
        ConfigError: a device that is not a device name, or one this machine does not have.
    """
    try:
        device = pick_device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device: {name!r} is not a device (auto, cpu, cuda, cuda:N, mps): {exc}") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ConfigError(f"device: {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise ConfigError(f"device: {name!r} asked for, but MPS is not available here")
    return device


def infer(runs: Sequence[str | os.PathLike], *, images: str | os.PathLike | None = None,
          dataset: str | None = None, data: str | os.PathLike | None = None,
          dataset_options: dict[str, Any] | None = None, out: str | os.PathLike | None = None,
          device: str = "auto", batch_size: int = 64, workers: int = 0, tta: bool = True, amp: str = "auto",
          on_bad_image: str = "error", progress: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predict new images with one or several trained runs (their mean: the fold ensemble).

    Give either ``images`` (a folder, every file of which is an image, a glob pattern such as
    ``new/**/*.dcm``, or one file; ids are the paths relative to the folder) or ``data`` with
    its loader ``dataset`` (default ``gxs``) and ``dataset_options`` (ids are the table's; the
    file's data fingerprint is the one ``cxrkit evaluate`` checks). Images are decoded under the
    runs' own image policy and size, normalised as their backbone expects, each checked before
    any prediction (:mod:`cxrkit.evaluation.sources`).

    Args:
        runs: run folders (a study variant's folds: :func:`cxrkit.study.variant_runs`).
        images, dataset, data, dataset_options: what to predict (see above).
        out: the prediction CSV to write (with its ``.json`` sidecar); None writes nothing.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        batch_size: images per batch; ``workers``: DataLoader worker processes.
        tta: flip TTA (the mean of each image's and its mirror's probabilities).
        amp: autocast precision (``auto``: fp16 on CUDA, full precision elsewhere; ``bf16``, ``off``).
        on_bad_image: ``error`` (refuse unusable images, naming them) or ``exclude`` (predict the
            others; ``<out stem>_excluded.csv`` lists them with the reason).
        progress: tqdm bars.

    Returns:
        ``(table, meta)``: ``image`` (text) and one probability column per label; the sidecar's
        content (fingerprint and what it is of, runs with checkpoint sha256, preprocessing, image
        decoding, excluded count, label alignment with a dataset, settings, environment).

    Raises:
        ConfigError: both or neither of ``images`` and ``data``, a bad batch size, worker count,
            device, ``amp`` or ``on_bad_image``.
        NotWritableError: ``out``'s folder cannot be written (before any work).
        RunMismatch, FileNotFoundError, TrainingError: see :func:`load_runs`.
        DataError: unusable images (named), a dataset's refusals.
    """
    _check_request(images, data, dataset, dataset_options, batch_size, workers, amp)
    if out is not None:
        check_writable(resolve(out).parent, "the predictions", "choose a writable --out")
    dev = inference_device(device)
    resolve_amp(dev, amp)  # fp16 on a CPU fails here, before any work
    members = load_runs(runs, dev)
    policy = members[0].image_policy
    if images is not None:
        source = folder_source(images, policy, on_bad_image=on_bad_image, progress=progress)
    else:
        source = dataset_source(dataset or "gxs", data, dataset_options, members[0].labels, policy,  # type: ignore[arg-type]
                                on_bad_image=on_bad_image)
    probs = predict_ensemble(members, source.paths, dev, batch_size=batch_size, workers=workers, tta=tta, amp=amp,
                             progress=progress)
    settings = {"device": str(dev), "batch_size": batch_size, "workers": workers, "amp": amp,
                "on_bad_image": on_bad_image, "torch_threads": torch.get_num_threads()}
    meta = inference_meta(source, members, tta=tta, settings=settings)
    if out is not None:
        write_inference(resolve(out), source, members[0].labels, probs, meta, on_bad_image=on_bad_image)
    table = pd.DataFrame(probs, columns=members[0].labels)
    table.insert(0, "image", pd.Series(source.ids, dtype=object))
    return table, meta


def _check_request(images: Any, data: Any, dataset: str | None, dataset_options: dict[str, Any] | None,
                   batch_size: int, workers: int, amp: str) -> None:
    """One source of images (a dataset and its options only with ``data``), a positive batch
    size, workers >= 0, a known ``amp``.

    Raises:
        ConfigError: naming the argument.
    """
    if (images is None) == (data is None):
        raise ConfigError("give either images (a folder, glob pattern or file) or data (with its dataset), "
                          f"not {'both' if images is not None else 'neither'}")
    if data is None and (dataset is not None or dataset_options):
        raise ConfigError("dataset and dataset_options describe data (a dataset folder); with images, leave them out")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    if not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers: must be an integer >= 0, got {workers!r}")
    if amp not in ("auto", "fp16", "bf16", "off"):
        raise ConfigError(f"amp: {amp!r} is not one of ('auto', 'fp16', 'bf16', 'off')")
