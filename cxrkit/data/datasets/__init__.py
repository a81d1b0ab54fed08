"""Dataset loaders: one class per real chest X-ray format, one common table.

Every loader reads its source files, validates them *before* any long work and returns the
same table (modelled on torchxrayvision): ``image`` (id/relative path as in the source CSV),
``path`` (absolute image path), ``patient_id``, ``study``, ``view``, optional metadata
(``sex``, ``age``, ``official_split``) and one float64 column per label in the common
vocabulary (:mod:`cxrkit.data.labels`) holding 1.0, 0.0 or NaN (unknown / masked).

Bad input raises :class:`DataError` naming the file, rows (1-based CSV line numbers, header =
line 1) and keys. Nothing is silently dropped, zero-filled or clipped: the only row removals
are explicit (``views``, ``frontal_only=True``, ``on_bad_image="exclude"`` with a written
report, MIMIC images without a label row), logged and counted in the loader's ``quality``, which
also counts the values it sets missing (CheXpert's ages of 0, PadChest's images without labels).

Formats (:data:`DATASETS`, one module each): ``gxs`` (Grand X-Ray Slam and the phantom,
:mod:`~cxrkit.data.datasets.gxs`), ``chexpert``, ``nih`` (ChestX-ray14), ``mimic``
(MIMIC-CXR-JPG), ``padchest`` and ``vindr`` (VinDr-CXR); ``merged`` stacks several of them
(:mod:`~cxrkit.data.datasets.merged`). Every format takes ``views`` (:mod:`cxrkit.data.views`).
The shared steps are in :mod:`~cxrkit.data.datasets.base`, the column parsing in
:mod:`~cxrkit.data.datasets.fields`. A new format is a :class:`CXRDataset` subclass with a
``_build`` method, added to :data:`~cxrkit.data.datasets.formats.FORMATS`.
"""

from __future__ import annotations

import difflib
from typing import Any

from cxrkit.data.datasets.base import CXRDataset
from cxrkit.data.datasets.chexpert import CheXpert
from cxrkit.data.datasets.formats import FORMATS
from cxrkit.data.datasets.gxs import GrandXRaySlam
from cxrkit.data.datasets.merged import MergedDataset
from cxrkit.data.datasets.mimic import MIMICCXRJPG
from cxrkit.data.datasets.nih import NIHChestXray14
from cxrkit.data.datasets.padchest import PadChest
from cxrkit.data.datasets.vindr import VinDrCXR
from cxrkit.data.images import check_images, load_image, scan_images
from cxrkit.data.splits.table import TEST_SPLITS
from cxrkit.data.tables import DataError, fingerprint, label_matrix, read_keyed_csv
from cxrkit.utils.params import ConfigError

__all__ = [
    "DATASETS",
    "CXRDataset",
    "CheXpert",
    "DataError",
    "GrandXRaySlam",
    "MIMICCXRJPG",
    "MergedDataset",
    "NIHChestXray14",
    "PadChest",
    "TEST_SPLITS",
    "VinDrCXR",
    "check_dataset_options",
    "check_test_split",
    "check_images",
    "create_dataset",
    "dataset_option_names",
    "fingerprint",
    "label_matrix",
    "load_image",
    "read_keyed_csv",
    "scan_images",
]


#: Dataset name -> loader class: every single format, and ``merged``.
DATASETS: dict[str, type[CXRDataset]] = {**FORMATS, MergedDataset.name: MergedDataset}


#: Loader arguments that are not format options: the ones a parameter file may still put in
#: ``dataset_options`` (file locations, decoding threads) ...
DATASET_ARGUMENTS: tuple[str, ...] = ("csv", "images", "workers")
#: ... and the ones set elsewhere (the parameter that sets each), which must not be repeated there.
SET_ELSEWHERE: dict[str, str] = {
    "root": "'data'",
    "labels": "'labels' (train.labels in a study)",
    "on_bad_image": "'on_bad_image' (train.on_bad_image in a study)",
    "image_policy": "'image_policy' (train.image_policy in a study)",
    "report_dir": "the run (excluded_images.csv goes to its folder)",
    "check_images": "the run (training decodes every image up front)",
}


def dataset_option_names(name: str) -> list[str]:
    """The keys ``dataset_options`` may hold for the loader ``name``: its format options and
    :data:`DATASET_ARGUMENTS`."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    arguments = ("workers",) if name == MergedDataset.name else DATASET_ARGUMENTS  # csv, images: per source
    return sorted({*DATASETS[name].option_defaults(), *arguments})


def check_dataset_options(name: str, options: Any) -> None:
    """Check a parameter file's ``dataset`` and ``dataset_options`` before anything runs.

    Raises:
        ConfigError: for an unknown dataset, options that are not a mapping, a key the loader
            does not accept (naming it, the closest accepted key and the accepted ones), a
            key set by another parameter (``on_bad_image``, ``labels``, ...), naming that one, or
            a value the loader cannot honour (a ``views`` the format does not record, a bad
            ``aggregation``, a merged dataset's ``sources``), naming the key.
    """
    if name not in DATASETS:
        raise ConfigError(f"dataset: unknown dataset {name!r}; known: {sorted(DATASETS)}")
    if not isinstance(options, dict):
        raise ConfigError(f"dataset_options: expected a mapping, got {options!r}")
    accepted = dataset_option_names(name)
    for key in options:
        if key in SET_ELSEWHERE:
            raise ConfigError(f"dataset_options.{key}: set by {SET_ELSEWHERE[key]}, not in dataset_options")
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"dataset_options.{key}: not an option of dataset {name!r}{hint}; "
                              f"accepted: {accepted}")
    DATASETS[name].check_options(options, where="dataset_options")


def check_test_split(name: str, options: dict[str, Any], test_split: str, where: str = "test_split") -> None:
    """Check before anything runs that ``test_split`` can be honoured by the dataset ``name``.

    Raises:
        ConfigError: an unknown value, or ``official`` for a dataset without an official test
            split (gxs, padchest; chexpert without ``include_valid``; a merged dataset with such a
            source), naming the dataset.
    """
    if test_split not in TEST_SPLITS:
        raise ConfigError(f"{where}: {test_split!r} is not one of {list(TEST_SPLITS)}")
    if test_split == "official" and name in DATASETS:
        problem = DATASETS[name].official_test_problem(options)
        if problem is not None:
            raise ConfigError(f"{where}: official: {problem}")


def create_dataset(name: str, **kwargs: Any) -> CXRDataset:
    """Build the loader registered as ``name`` (see :data:`DATASETS`) with ``kwargs``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        cls = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None
    return cls(**kwargs)
