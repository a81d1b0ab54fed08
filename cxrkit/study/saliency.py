"""Saliency that can be checked: Grad-CAM maps of each variant's fold ensemble on test images,
scored against where the findings truly are (``09_saliency``).

* The images (:func:`saliency_items`): for every label, at most ``n_images`` test images (a
  fixed-seed sample, then in table order) that are positive for it and, where the data has true
  regions, have one for it: on the phantom its drawn finding's region (``regions.csv``,
  :mod:`cxrkit.phantom.regions`; the finding drawn and the label positive), on real data the
  loader's radiologist boxes (``boxes()``: NIH ChestX-ray14, VinDr-CXR). Without boxes the maps
  are drawn and not scored.
* The maps (:func:`variant_maps`): Grad-CAM of the label's refined logit on the last feature
  stage of each fold's model (:mod:`cxrkit.models.saliency`), the un-normalised ReLU map
  (:func:`~cxrkit.models.saliency.raw_grad_cam`, not pytorch-grad-cam's min-subtracted one) divided
  by its maximum, averaged over the folds (the fold ensemble's map), at the runs' input side.
* The scores (:func:`score_maps`): the pointing game with a tolerance in pixels of the map and
  the energy share inside the region (:mod:`cxrkit.evaluation.saliency`), both on that map (no
  minimum subtracted: a coarse map positive everywhere keeps its floor), with the boxes scaled
  from their reference grid (:func:`reference_sizes`: NIH's 1024 x 1024, VinDr's DICOM size, not a
  downsampled copy's) to the map; the centre baseline and the uniform map beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.data.boxes import REF_COLUMNS, scale_boxes
from cxrkit.data.datasets import create_dataset
from cxrkit.data.splits import load_splits
from cxrkit.data.tables import DataError
from cxrkit.evaluation.saliency import (
    centre_hit,
    default_tolerance,
    energy_share,
    is_flat,
    pointing_hit,
    region_share,
)
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import dataset_table, is_phantom

#: Default number of test images per label.
N_IMAGES = 64
#: Seed of the sample of images per label.
SAMPLE_SEED = 0
#: Names of the baselines' rows in the score table: the centre point, a uniform map.
CENTRE, UNIFORM = "centre", "uniform"


@dataclass
class VariantMaps:
    """One variant's maps: ``maps[i]`` explains item ``i`` (``(N, side, side)``, in [0, 1]: each
    fold's un-normalised ReLU Grad-CAM over its maximum, averaged) on the input ``images[i]``
    (uint8), from Grad-CAM on ``layer``."""

    side: int
    images: np.ndarray
    maps: np.ndarray
    layer: str


@dataclass
class Saliency:
    """What :func:`run_saliency` computed: the ``items`` explained (image, label, path), the true
    regions (a box table on its reference grids; None without),
    where they come from (``source``), each variant's maps, and the ``scores`` (one row per
    variant or baseline and item: ``hit``, ``energy``, ``flat``; empty without regions)."""

    items: pd.DataFrame
    boxes: pd.DataFrame | None
    source: str
    maps: dict[str, VariantMaps] = field(default_factory=dict)
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    tolerance: dict[str, float] = field(default_factory=dict)


def true_regions(cfg: StudyConfig) -> tuple[pd.DataFrame | None, str]:
    """The study's true regions as a box table and where they come from: the phantom's
    ``regions.csv``, or the loader's ``boxes()``; ``(None, why)`` where the data has none.

    Raises:
        DataError: a phantom without ``regions.csv`` (regenerate it with ``cxrkit synth``).
    """
    from cxrkit.phantom.regions import read_regions

    if is_phantom(cfg):
        return read_regions(cfg.data), "phantom regions (regions.csv)"
    ds = create_dataset(cfg.dataset, root=cfg.data, check_images=False, labels=cfg.train.get("labels"),
                        **cfg.dataset_options)
    if not hasattr(ds, "boxes"):
        return None, f"dataset {cfg.dataset!r} publishes no boxes: maps drawn, not scored"
    try:
        return ds.boxes(), f"{cfg.dataset} boxes"
    except DataError as exc:
        return None, f"{exc}: maps drawn, not scored"


def saliency_items(cfg: StudyConfig, boxes: pd.DataFrame | None, n_images: int = N_IMAGES,
                   split: str = "test") -> pd.DataFrame:
    """The (image, label) pairs to explain: per label (not No Finding), at most ``n_images``
    images of ``split`` positive for it and, with ``boxes``, with a region of it.

    Returns:
        ``image``, ``label``, ``path``, in label order, then table order.
    """
    if not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images: must be an integer >= 1, got {n_images!r}")
    table = dataset_table(cfg)
    splits = load_splits(cfg.splits_path)
    part = table.loc[table["image"].isin(set(splits.loc[splits["split"] == split, "image"]))]
    rows = []
    for label in table.attrs["labels"]:
        if label == "No Finding":
            continue
        pos = part.loc[part[label] == 1]
        if boxes is not None:
            pos = pos.loc[pos["image"].isin(set(boxes.loc[boxes["label"] == label, "image"]))]
        take = np.sort(np.random.default_rng(SAMPLE_SEED).permutation(len(pos))[:n_images])
        rows.append(pos.iloc[take][["image", "path"]].assign(label=label))
    items = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["image", "path", "label"])
    return items[["image", "label", "path"]]


def variant_maps(cfg: StudyConfig, variant: str, items: pd.DataFrame, device: str = "auto",
                 batch_size: int = 32) -> VariantMaps:
    """Grad-CAM maps of one variant's fold ensemble on ``items`` (each item's label's refined logit).

    Raises:
        StudyError: folds of the variant not trained. ValueError: a backbone that is not a CNN.
    """
    import torch

    from cxrkit.data.images import load_image
    from cxrkit.data.pipeline import to_model_input
    from cxrkit.models.saliency import check_cnn_layer, peak_scaled, raw_grad_cam, target_layer
    from cxrkit.study.inference import variant_runs
    from cxrkit.training.trained import inference_device, load_runs

    dev = inference_device(device)
    members = load_runs(variant_runs(cfg, variant), dev)
    first = members[0]
    side, index = first.image_size, {lab: i for i, lab in enumerate(first.labels)}
    layer_name, _ = target_layer(first.model)
    check_cnn_layer(first.model, target_layer(first.model)[1], side)
    images = np.stack([load_image(p, side, first.image_policy) for p in items["path"]]) if len(items) else \
        np.zeros((0, side, side), np.uint8)
    maps = np.zeros(images.shape, np.float32)
    for label, rows in items.groupby("label", sort=False).indices.items():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            x = to_model_input(torch.from_numpy(images[chunk])[:, None], first.mean, first.std, dev)
            maps[chunk] = np.mean([peak_scaled(raw_grad_cam(m.model, x, index[label], target_layer(m.model)[1]))
                                   for m in members], axis=0)
    return VariantMaps(side, images, maps, layer_name)


def reference_sizes(items: pd.DataFrame, boxes: pd.DataFrame, stored_grid: bool = False,
                    policy: Any = None) -> dict[str, tuple[float, float]]:
    """(width, height) of the grid each item's boxes are drawn on (:mod:`cxrkit.data.boxes`): the
    box table's ``ref_width``/``ref_height`` where every row of the image has them (NIH: 1024 x
    1024); else, with ``stored_grid`` (the phantom's regions), the stored image as decoded; else the
    DICOM's Columns x Rows from its header when the stored file is a DICOM (VinDr).

    Raises:
        DataError: a box without a reference grid on a stored file that is not a DICOM (e.g.
            Kaggle's VinDr PNGs), naming the file.
    """
    from cxrkit.data.images import decode
    from cxrkit.data.images.dicom import is_dicom

    paths = items.drop_duplicates("image").set_index("image")["path"]
    rows = boxes.loc[boxes["image"].isin(paths.index)]
    ref = rows.reindex(columns=["image", *REF_COLUMNS]).groupby("image")[list(REF_COLUMNS)]
    given = ref.first().where(ref.count().eq(ref.size(), axis=0))  # only when every row has one
    sizes = {}
    for image, path in paths.items():
        if image in given.index and given.loc[image].notna().all():
            sizes[image] = tuple(given.loc[image].astype(float))
        elif stored_grid:
            sizes[image] = decode(path, policy).image.size
        elif is_dicom(path):
            sizes[image] = dicom_grid(path)
        else:
            src = sorted(set(rows.loc[rows["image"] == image, "source"]))
            raise DataError(f"{path}: boxes of {src} are drawn on the original image's pixel grid, but this stored "
                            f"file is not the DICOM and the box file gives no ref_width, ref_height (the original "
                            f"Columns, Rows): add those columns to the box file, or use the DICOM images")
    return sizes


def dicom_grid(path: str) -> tuple[int, int]:
    """(Columns, Rows) of a DICOM file, from its header (the pixels not read)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return int(ds.Columns), int(ds.Rows)


def score_maps(items: pd.DataFrame, boxes: pd.DataFrame, sizes: dict[str, tuple[int, int]],
               maps: dict[str, VariantMaps], tolerance: float | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Pointing game and energy share of every variant's map of every item, and the baselines
    (the centre point, a uniform map) on the first variant's side.

    Args:
        items: image, label (as :func:`saliency_items`).
        boxes: true regions; sizes: the (width, height) of the grid each image's boxes are drawn on
            (:func:`reference_sizes`).
        maps: variant -> its maps of ``items``.
        tolerance: pointing-game tolerance in pixels of the map; None = ``round(side / 16)``.

    Returns:
        ``(scores, tolerances)``: one row per variant (then ``centre``, ``uniform``) and item with
        ``variant, image, label, hit, energy, flat``; each variant's tolerance in pixels.
    """
    rows, tolerances = [], {}
    for k, (variant, vm) in enumerate(maps.items()):
        tol = default_tolerance(vm.side) if tolerance is None else float(tolerance)
        tolerances[variant] = tol
        scaled = scale_boxes(boxes, sizes, vm.side)
        region = {key: g[["x0", "y0", "x1", "y1"]].to_numpy() for key, g in scaled.groupby(["image", "label"])}
        shape = (vm.side, vm.side)
        for i, (image, label) in enumerate(zip(items["image"], items["label"])):
            b, m = region[(image, label)], vm.maps[i]
            rows.append((variant, image, label, float(pointing_hit(m, b, tol)), energy_share(m, b), is_flat(m)))
            if k == 0:
                rows.append((CENTRE, image, label, float(centre_hit(shape, b, tol)), np.nan, False))
                rows.append((UNIFORM, image, label, np.nan, region_share(shape, b), True))
    scores = pd.DataFrame(rows, columns=["variant", "image", "label", "hit", "energy", "flat"])
    order = {v: i for i, v in enumerate([*maps, CENTRE, UNIFORM])}
    return scores.sort_values("variant", key=lambda s: s.map(order), kind="stable").reset_index(drop=True), tolerances


def run_saliency(cfg: StudyConfig, n_images: int = N_IMAGES, variants: list[str] | None = None,
                 tolerance: float | None = None, device: str = "auto") -> Saliency:
    """Grad-CAM of every variant (default: the study's) on at most ``n_images`` test images per
    label, scored against the true regions where the data has them (see the module).

    Raises:
        DataError: a phantom without ``regions.csv`` (regenerate it with ``cxrkit synth``).
        StudyError: variants not trained.
    """
    boxes, source = true_regions(cfg)
    items = saliency_items(cfg, boxes, n_images)
    sal = Saliency(items, boxes, source)
    for variant in variants or cfg.variant_names:
        sal.maps[variant] = variant_maps(cfg, variant, items, device)
    if boxes is not None and len(items):
        sizes = reference_sizes(items, boxes, is_phantom(cfg), cfg.image_policy)
        sal.scores, sal.tolerance = score_maps(items, boxes, sizes, sal.maps, tolerance)
    return sal


def saliency_tables(sal: Saliency) -> dict[str, Any]:
    """The tables of ``09_saliency``: ``pointing_game`` and ``energy_share`` (label x variant, with
    ``images`` per label and the baselines) and ``summary`` (per variant and baseline: the mean
    over labels of each, and how many maps were flat). Empty without scores."""
    if sal.scores.empty:
        return {}
    s = sal.scores
    order = list(dict.fromkeys(s["variant"]))
    labels = list(dict.fromkeys(s["label"]))
    n = s.loc[s["variant"] == order[0]].groupby("label").size().rename("images")
    hit = s.loc[s["variant"] != UNIFORM].pivot_table(index="label", columns="variant", values="hit", aggfunc="mean")
    energy = s.loc[s["variant"] != CENTRE].pivot_table(index="label", columns="variant", values="energy", aggfunc="mean")
    hit = pd.concat([n, hit[[v for v in order if v != UNIFORM]]], axis=1).loc[labels]
    energy = pd.concat([n, energy[[v for v in order if v != CENTRE]]], axis=1).loc[labels]
    summary = pd.DataFrame({"pointing game": hit.drop(columns="images").mean(),
                            "energy share": energy.drop(columns="images").mean(),
                            "flat maps": s.loc[s["variant"].isin(sal.maps)].groupby("variant")["flat"].sum()}).loc[order]
    summary["flat maps"] = summary["flat maps"].astype("Int64")
    for t in (hit, energy, summary):
        t.index.name, t.columns.name = t.index.name or "variant", None
    return {"pointing_game": hit, "energy_share": energy, "summary": summary}
