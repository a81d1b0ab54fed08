"""The real label tables that torchxrayvision ships (no images), as dataset folders for the loaders.

torchxrayvision (a development dependency, ``pip install -e '.[dev]'``) includes the label CSVs of
NIH ChestX-ray14, CheXpert (train), PadChest and VinDr-CXR (the Kaggle VinBigData train set) in
its package data. They are read where they are installed: :func:`stage` makes a dataset folder
elsewhere (a temporary folder) holding a symbolic link to the file, never a copy, and never in
the repository (their licences differ from the kit's). Used by ``tests/test_real_tables.py`` and
``make bench`` (:mod:`cxrkit.tools.bench`).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Dataset name -> (file in torchxrayvision's ``data/``, name in the staged folder, loader arguments).
XRV_TABLES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "nih": ("Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017_v2020.csv.gz", {}),
    "chexpert": ("chexpert_train.csv.gz", "train.csv.gz", {"csv": "train.csv.gz"}),
    "padchest": ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
                 "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", {}),
    "vindr": ("vinbigdata-train.csv.gz", "vinbigdata-train.csv.gz", {}),
}


def xrv_data_dir() -> Path | None:
    """torchxrayvision's installed ``data/`` folder, or None when it is not installed (found
    without importing it, which would import torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def missing_reason() -> str | None:
    """Why the real tables cannot be used here (one sentence), or None when they can."""
    folder = xrv_data_dir()
    if folder is None:
        return "torchxrayvision is not installed (a dev dependency: pip install -e '.[dev]'); it ships the real tables"
    absent = [f for f, _, _ in XRV_TABLES.values() if not (folder / f).is_file()]
    return f"torchxrayvision at {folder} lacks {absent}" if absent else None


def stage(name: str, folder: str | os.PathLike) -> dict[str, Any]:
    """A dataset folder for ``name`` under ``folder`` whose label file links to torchxrayvision's.

    Returns:
        The arguments of :func:`cxrkit.data.datasets.create_dataset` (``root``, and ``csv`` where the
        file name is not the loader's default), with ``check_images=False``: there are no images.

    Raises:
        FileNotFoundError: torchxrayvision or its file is not there (:func:`missing_reason`).
    """
    reason = missing_reason()
    if reason is not None:
        raise FileNotFoundError(reason)
    source, target, arguments = XRV_TABLES[name]
    root = Path(folder) / name
    root.mkdir(parents=True, exist_ok=True)
    link = root / target
    if not link.exists():
        link.symlink_to(xrv_data_dir() / source)  # type: ignore[operator]
    return {"root": root, "check_images": False, **arguments}


def real_table_bench(folder: str | os.PathLike, datasets: Mapping[str, Any] | None = None,
                     folds: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``make bench`` rows on the real tables: the seconds the patient-grouped folds of the full
    NIH table take (30,805 patients, 112,120 images; 3 folds, test 0.2, seed 0), and how many
    patients image-level MIS (the paper's ``group: image``) puts in several parts of real CheXpert
    (223,414 images of 64,540 patients; 36,861 patients, 189,979 of their images). Empty when
    torchxrayvision is not installed (a message says so).

    Args:
        folder: where the dataset folders are staged (:func:`stage`).
        datasets: ``nih`` and/or ``chexpert`` datasets already loaded from these tables (the
            tests'), used instead of loading them again; the others are loaded.
        folds: when given, receives the splits made, ``nih`` (patient-grouped) and ``chexpert``
            (image-level), for a caller that checks them (the tests) without making them again.
    """
    from cxrkit.data.datasets import create_dataset

    datasets = dict(datasets or {})
    reason = missing_reason() if {"nih", "chexpert"} - set(datasets) else None
    if reason is not None:
        print(f"bench: real label tables skipped: {reason}")
        return []
    for name in ("nih", "chexpert"):
        if name not in datasets:
            datasets[name] = create_dataset(name, **stage(name, folder))
    made = folds if folds is not None else {}
    nih_row, made["nih"] = _grouped_fold_row(datasets["nih"])
    leak_row, made["chexpert"] = _image_level_leak_row(datasets["chexpert"])
    return [nih_row, leak_row]


def _grouped_fold_row(nih: Any) -> tuple[dict[str, Any], Any]:
    """The bench row of the patient-grouped folds of the NIH table, and the folds."""
    from cxrkit.data.splits import make_splits

    t = nih.table
    start = time.perf_counter()
    splits = make_splits(t, nih.labels, n_folds=3, test_size=0.2, seed=0)
    seconds = time.perf_counter() - start
    return {"benchmark": "patient-grouped folds, real NIH ChestX-ray14 table",
            "setting": f"{t['patient_id'].nunique()} patients, {len(t)} images, {len(nih.labels)} labels, "
                       "3 folds + test 0.2", "images/s": len(t) / seconds, "seconds": seconds}, splits


def _image_level_leak_row(chexpert: Any) -> tuple[dict[str, Any], Any]:
    """The bench row of image-level MIS on the CheXpert table (patients in several parts), and the folds."""
    from cxrkit.data.splits import leakage_report, make_splits

    start = time.perf_counter()
    splits = make_splits(chexpert.table, chexpert.labels, n_folds=3, test_size=0.2, seed=0, group="image")
    seconds = time.perf_counter() - start
    leak = leakage_report(splits).attrs["summary"]
    return {"benchmark": "image-level MIS leak, real CheXpert train table",
            "setting": f"{leak['patients_total']} patients, {leak['images_total']} images, 3 folds + test 0.2",
            "images/s": leak["images_total"] / seconds, "seconds": seconds,
            "patients_crossing": leak["patients"], "images_of_crossing_patients": leak["images"]}, splits
