"""The data of one training run: the dataset table, its labels and the fold's rows, loaded and
checked (folds that fit the data, every image decoded) before any training starts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.data.datasets import DataError, create_dataset, fingerprint, label_matrix
from cxrkit.data.splits import fold_indices, load_splits, test_indices
from cxrkit.training.config import TrainConfig
from cxrkit.utils.files import check_writable
from cxrkit.utils.params import ConfigError
from cxrkit.utils.paths import data_dir, resolve


def file_digest(path: str | Path) -> str:
    """Short sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def files_digest(paths: list[Path]) -> str:
    """:func:`file_digest` of one file; of several (a dataset's label, split and test files, a
    merged dataset's sources), the short sha256 of their names and digests, in order."""
    if len(paths) == 1:
        return file_digest(paths[0])
    text = "\n".join(f"{Path(p).name} {file_digest(p)}" for p in paths)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class FoldData:
    """The dataset table, its labels, the fold's row indices and how the images are decoded."""

    table: pd.DataFrame
    labels: list[str]
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    data_fingerprint: str
    splits_fingerprint: str
    csv_digest: str = ""
    decoding: dict[str, int] = field(default_factory=dict)  #: images decoded each way (CXRDataset.decoding)
    check_recorded: str | None = None  #: the image check's record read instead of decoding, if any
    #: what the loader kept, dropped, set missing or converted (CXRDataset.quality: views, CheXpert
    #: ages of 0, VinDr readers and aggregation, a merged dataset's sources, images converted to grey)
    quality: dict[str, Any] = field(default_factory=dict)


def _check_cache_dir(cfg: TrainConfig) -> None:
    """With ``cache: true``, that the uint8 cache can be built where :func:`train` puts it, unless
    one at this image size is already there (it may be read-only then).

    Raises:
        NotWritableError: naming the folder and how to train without the cache.
    """
    cache_dir = data_dir() / "cache"  # where train() builds the UInt8Cache
    if not any(cache_dir.glob(f"u8_{cfg.image_size}px_*.npy")):
        check_writable(cache_dir, "the uint8 image cache (cache: true)",
                       "train with --no-cache (cache: false) to decode the images every epoch instead")


def _fitting_folds(cfg: TrainConfig, root: Path, splits_path: Path) -> pd.DataFrame:
    """The splits, checked to fit the data as written (no image is decoded): the same images with
    the same patient ids (:func:`load_splits` names any added, removed or changed), and label
    values equal to those they were made from, over the labels they were stratified on (which
    may be more or other than the run's ``labels``: training on a subset is fine). Row order may
    differ. Returns the splits in table row order.

    Raises:
        ValueError: images added or removed, patient ids changed (named).
        ConfigError: other label values (the fingerprints), or stratification labels the data
            cannot provide.
    """
    options = cfg.dataset_options
    listed = create_dataset(cfg.dataset, root=root, labels=cfg.labels, check_images=False, **options).table
    splits = load_splits(splits_path, listed)
    made_for, made_on = splits.attrs.get("fingerprint"), splits.attrs.get("labels")
    if made_for is None:
        return splits
    if made_on is not None and list(made_on) != list(listed.attrs["labels"]):
        try:
            listed = create_dataset(cfg.dataset, root=root, labels=made_on, check_images=False, **options).table
        except DataError as exc:
            raise ConfigError(f"{splits_path} was stratified on labels {list(made_on)}, which the data at {root} "
                              f"cannot provide: {exc}") from exc
    file_order = load_splits(splits_path)["image"].to_numpy()  # the fingerprint is over the rows in this order
    as_made = listed.set_index("image").loc[file_order].reset_index()
    as_made.attrs["labels"] = list(listed.attrs["labels"])
    if fingerprint(as_made) != made_for:
        raise ConfigError(f"{splits_path} was made for other data (fingerprint {made_for}, the data at {root} has "
                          f"{fingerprint(as_made)}): the images and patient ids are the same, but the values of the "
                          f"labels the folds were stratified on ({', '.join(as_made.attrs['labels'])}) differ "
                          f"(an edited label file, or other dataset_options); run `cxrkit folds` again")
    return splits


def load_fold(cfg: TrainConfig, report_dir: Path) -> FoldData:
    """Load and validate the dataset and the splits; every data error is raised here, before training.

    The folds are checked first, before any image is decoded (:func:`_fitting_folds`); then every
    image is decoded under ``image_policy`` (``on_bad_image``; reports go to ``report_dir``). With
    ``cache: true`` the check is recorded in the uint8 cache folder and not repeated while the
    image files and the decoding stay the same (:mod:`cxrkit.data.images.checked`).

    Raises:
        FileNotFoundError: no splits file.
        NotWritableError: ``cache: true`` and the cache folder cannot be written.
        DataError: bad data (files, rows, images).
        ValueError, ConfigError: folds that do not fit the data (naming what differs), a fold
            out of range, or a validation fold without any label having both classes.
    """
    root = resolve(cfg.data)
    splits_path = resolve(cfg.splits)
    if not splits_path.is_file():
        raise FileNotFoundError(f"splits file not found: {splits_path} (make it with `cxrkit folds`)")
    if cfg.cache:
        _check_cache_dir(cfg)
    splits = _fitting_folds(cfg, root, splits_path)
    ds = create_dataset(cfg.dataset, root=root, labels=cfg.labels, on_bad_image=cfg.on_bad_image,
                        report_dir=report_dir, image_policy=cfg.image_policy,
                        check_record=data_dir() / "cache" if cfg.cache else None, **cfg.dataset_options)
    table = ds.table  # without the excluded images, if any
    splits = splits.set_index("image").loc[table["image"]].reset_index()
    train_idx, val_idx = fold_indices(splits, cfg.fold)
    y_val = label_matrix(table)[np.asarray(val_idx, dtype=int)]
    if not any(len(np.unique(col[np.isfinite(col)])) == 2 for col in y_val.T):
        raise ConfigError(f"validation fold {cfg.fold} of {splits_path} ({len(val_idx)} images): no label has both "
                          f"positives and negatives, so its macro AUC (the model-selection metric) is undefined")
    return FoldData(table, ds.labels, np.asarray(train_idx), np.asarray(val_idx), np.asarray(test_indices(splits)),
                    fingerprint(ds.table_before_exclusion), file_digest(splits_path), files_digest(ds.source_files),
                    decoding=ds.decoding, check_recorded=str(ds.check_recorded) if ds.check_recorded else None,
                    quality=ds.quality)
