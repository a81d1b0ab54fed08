"""A study's data: the phantom generated and the folds made when missing or stale, the dataset
table as its runs see it (read once per process), its labels and patients, the data fingerprint
and the leakage check of its folds."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.data.datasets import create_dataset, fingerprint, label_matrix
from cxrkit.data.splits import (
    SPLIT_METHODS,
    check_leakage,
    leakage_report,
    load_splits,
    make_splits,
    save_splits,
)
from cxrkit.study.config import StudyConfig, StudyError
from cxrkit.utils.files import check_writable
from cxrkit.utils.params import ConfigError
from cxrkit.utils.paths import data_dir, resolve
from cxrkit.utils.provenance import environment


def prepare(cfg: StudyConfig, progress: bool = True) -> dict[str, Any]:
    """Generate the phantom when configured and missing, and the folds when missing or stale.

    Returns a summary (paths, data fingerprint). Raises with instructions for a real dataset
    that is not there.

    Raises:
        FileNotFoundError: the dataset folder does not exist.
        NotWritableError: the phantom or the folds must be (re)written where that is not possible,
            before any of that work.
        DataError, ValueError: bad data, or existing folds that cannot be read (e.g. an image twice).
    """
    root = resolve(cfg.data)
    if cfg.phantom is not None:
        ensure_phantom(root, cfg.phantom, progress=progress)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist: set 'data' in the parameter file to "
                                f"your copy of the dataset (see README, 'Using a real dataset')")
    ds = create_dataset(cfg.dataset, root=root, check_images=False, **cfg.dataset_options)
    fp = fingerprint(ds.table)
    meta = {"seed": cfg.split_seed, "n_folds": cfg.n_folds, "test_size": cfg.test_size, "group": cfg.group,
            "method": SPLIT_METHODS[cfg.group], "fingerprint": fp, "dataset": cfg.dataset, "data": str(root)}
    if cfg.test_split == "official":  # the test share is the official test's, recorded by make_splits
        meta = {k: v for k, v in meta.items() if k != "test_size"} | {"test_split": "official"}
    meta_file = cfg.splits_path.with_suffix(".json")
    current = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    if current is None or any(current.get(k) != v for k, v in meta.items() if k != "data") or \
            current.get("test_split", "stratified") != cfg.test_split:
        check_writable(cfg.splits_path.parent, "the study's folds",
                       "set 'runs' in the parameter file to a writable folder")
        splits = make_splits(ds.table, ds.labels, n_folds=cfg.n_folds, test_size=cfg.test_size,
                             seed=cfg.split_seed, group=cfg.group, test_split=cfg.test_split)
        save_splits(splits, cfg.splits_path, {**meta, "provenance": environment()})
    else:
        load_splits(cfg.splits_path)
    return {"data": str(root), "splits": str(cfg.splits_path), "data_fingerprint": fp, "n_images": len(ds.table)}


def ensure_phantom(root: Path, phantom: dict[str, Any], *, where: str = "phantom", key: str = "data",
                   progress: bool = True) -> None:
    """Generate the phantom a study's ``phantom:`` block (or ``external.phantom:``, ``where``)
    describes at ``root`` when it is missing, incomplete, or was made with other parameters or
    generator code.

    Raises:
        NotWritableError: ``root`` must be (re)written where that is not possible (naming ``key``).
    """
    from cxrkit.phantom.generate import code_digest, generate
    from cxrkit.phantom.model import PhantomConfig
    from cxrkit.phantom.site import get_site

    site = get_site(phantom.get("site"), where=f"{where}.site")
    want = {"n_patients": phantom.get("patients", 1700), "size": phantom.get("size", 128),
            "seed": phantom.get("seed", 0), "format": phantom.get("format", "png"),
            "site": site.record(), "code_digest": code_digest()}
    marker = root / "phantom.json"
    have = json.loads(marker.read_text()) if marker.is_file() else None
    if have is None or any(have.get(k) != v for k, v in want.items()) or not have.get("complete", True):
        what = "the study's phantom" if where == "phantom" else f"the {where.split('.')[0]} phantom"
        check_writable(root, what, f"set '{key}' in the parameter file to a writable folder")
        if have is not None and progress:
            print(f"regenerating the phantom at {root}: its parameters or generator code changed", flush=True)
        generate(root, n_patients=want["n_patients"], size=want["size"], seed=want["seed"], progress=progress,
                 overwrite=have is not None, image_format=want["format"], config=PhantomConfig(site=site))


def external_dataset(cfg: StudyConfig, progress: bool = False) -> tuple[Any, Any]:
    """The study's external site (``external:``; 07_external): its phantom generated first when
    configured and missing or stale, then its table read by its loader (no image decoded) with
    the labels it shares with the study's runs, aligned by name
    (:func:`cxrkit.evaluation.alignment.target_dataset`).

    Returns:
        ``(dataset, alignment)``; ``fingerprint(dataset.table)`` is the data fingerprint
        ``cxrkit infer`` records for predictions made on it.

    Raises:
        ConfigError: the study has no ``external:`` block.
        FileNotFoundError: its data folder does not exist (real data).
        DataError: the loader's refusals.
    """
    from cxrkit.evaluation.alignment import target_dataset

    spec = cfg.external_spec
    if spec is None:
        raise ConfigError(f"study {cfg.name!r} has no 'external:' block (see README, 'External validation')")
    root = resolve(spec["data"])
    if spec["phantom"] is not None:
        ensure_phantom(root, spec["phantom"], where="external.phantom", key="external.data", progress=progress)
    if not root.is_dir():
        raise FileNotFoundError(f"external dataset folder {root} does not exist: set 'external.data' in the "
                                f"parameter file to your copy of the dataset")
    return target_dataset(spec["dataset"], root, spec["dataset_options"], _table(cfg).attrs["labels"],
                          check_images=False)


def external_fingerprint(cfg: StudyConfig, progress: bool = False) -> str:
    """The data fingerprint of the study's external site (:func:`external_dataset`), for the key of
    the ``07_external`` step; "" without an ``external:`` block, a string naming the error for data
    that cannot be read (the step then fails with it)."""
    if cfg.external is None:
        return ""
    try:
        return fingerprint(external_dataset(cfg, progress=progress)[0].table)
    except Exception as exc:  # reported by the notebook that reads the data
        return f"unavailable ({type(exc).__name__}: {exc})"


def load_dataset(cfg: StudyConfig) -> Any:
    """The study's dataset as its training runs load it: every image decoded up front (under
    ``train.image_policy``; ``ds.decoding`` counts how), a bad one
    raising or, with ``train: {on_bad_image: exclude}``, dropped and listed with its reason in
    ``ds.excluded`` and ``<runs>/<name>/excluded_images.csv``. With ``train.cache`` (the default)
    the check is recorded in the uint8 cache folder, as the runs record it, and not repeated for
    unchanged files (:mod:`cxrkit.data.images.checked`)."""
    record = data_dir() / "cache" if cfg.train.get("cache", True) else None
    return create_dataset(cfg.dataset, root=cfg.data, on_bad_image=cfg.on_bad_image, report_dir=cfg.run_dir,
                          image_policy=cfg.image_policy, check_record=record, **cfg.dataset_options)


def data_fingerprint(cfg: StudyConfig, progress: bool = False) -> str:
    """:func:`cxrkit.data.tables.fingerprint` of the study's dataset table (image ids, patient ids and
    labels; no image is decoded), for the keys that decide which steps re-run.

    A configured phantom is generated first when missing or stale (:func:`prepare`). For data
    that cannot be read, a string naming the error: the first notebook then fails with it.
    """
    if cfg.phantom is not None:
        return prepare(cfg, progress=progress)["data_fingerprint"]
    try:
        table = create_dataset(cfg.dataset, root=cfg.data, check_images=False, **cfg.dataset_options).table
    except Exception as exc:  # reported by the notebook that reads the data
        return f"unavailable ({type(exc).__name__}: {exc})"
    return fingerprint(table)


def split_leakage(cfg: StudyConfig, splits: pd.DataFrame) -> pd.DataFrame:
    """The leakage check of the study's own folds.

    With ``group: patient``, a patient in more than one fold or in both test and train raises
    :class:`cxrkit.data.splits.LeakageError` naming them. With ``group: image`` (the paper's
    image-level MIS) such patients are expected: they are reported, not raised. Returns
    :func:`cxrkit.data.splits.leakage_report` (empty when nothing leaks) with ``attrs["message"]``,
    one sentence saying which of the two it is and how many patients and images cross.
    """
    report = leakage_report(splits)
    s = report.attrs["summary"]
    if cfg.group == "patient":
        check_leakage(splits)
        msg = (f"{cfg.splits_path.name}: patient-grouped folds; none of the {s['patients_total']} patients "
               f"crosses folds or test/train")
    else:
        msg = (f"{cfg.splits_path.name}: image-level folds (group: image, as in the paper): {s['patients']} of "
               f"{s['patients_total']} patients ({s['images']} of {s['images_total']} images) are in more than "
               f"one fold or in both test and train, so validation and test AUCs are optimistic"
               if s["patients"] else
               f"{cfg.splits_path.name}: image-level folds (group: image); no patient happens to cross folds "
               f"or test/train")
    report.attrs["message"] = msg
    return report


def is_phantom(cfg: StudyConfig) -> bool:
    """Whether the study's data carries the phantom's ground-truth sidecar."""
    return (resolve(cfg.data) / "truth.csv").is_file()


def dataset_table(cfg: StudyConfig) -> pd.DataFrame:
    """The study's dataset table as its runs see it (the labels of ``train.labels`` when set), no
    image decoded."""
    return _table(cfg).copy()


def true_labels(cfg: StudyConfig, images: Sequence[str], labels: Sequence[str] | None = None) -> Any:
    """Label matrix (NaN = unknown) of ``images`` in that order, over the labels the runs predict
    in the dataset table's order, or over ``labels`` in that order (e.g. a prediction file's
    columns, so that true labels and scores line up by name).

    Raises:
        StudyError: ``labels`` names a label the study's table does not have.
    """
    table = _table(cfg)
    own = table.attrs["labels"]
    if labels is not None:
        missing = [lab for lab in labels if lab not in own]
        if missing:
            raise StudyError(f"study {cfg.name!r}: no true labels for {missing} (its dataset table has {list(own)})")
    return label_matrix(table.set_index("image").loc[list(images)].reset_index(),
                        own if labels is None else list(labels))


def patient_ids(cfg: StudyConfig, images: Sequence[str]) -> Any:
    """The patient id of each of ``images``, in that order (the bootstrap's groups)."""
    return _table(cfg).set_index("image").loc[list(images), "patient_id"].to_numpy()


#: Label files whose size and modification time identify a dataset table read before.
_SOURCE_SUFFIXES = (".csv", ".csv.gz", ".txt")
_TABLES: dict[tuple[Any, ...], pd.DataFrame] = {}  # the tables read by this process, at most _KEEP
_KEEP = 4


def _table(cfg: StudyConfig) -> pd.DataFrame:
    """:func:`dataset_table`, read once per process (not to be modified): the analyses look up
    labels and patients many times. A label file changed since (size or modification time of the
    files directly in the data folder or its ``annotations/``, and in each source's folder of a
    merged dataset) is read again."""
    root = resolve(cfg.data)
    folders = [root, *(root / s["data"] for s in cfg.dataset_options.get("sources") or [] if isinstance(s, dict))]
    key = (cfg.dataset, str(root), json.dumps(cfg.train.get("labels")),
           json.dumps(cfg.dataset_options, sort_keys=True, default=str),
           tuple(_source_stamp(f / sub) for f in folders for sub in ("", "annotations")))
    if key not in _TABLES:
        while len(_TABLES) >= _KEEP:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = create_dataset(cfg.dataset, root=cfg.data, check_images=False, labels=cfg.train.get("labels"),
                                      **cfg.dataset_options).table
    return _TABLES[key]


def _source_stamp(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of each label file directly in ``root``."""
    try:
        with os.scandir(root) as entries:
            found = [(e.name, e.stat()) for e in entries if e.name.endswith(_SOURCE_SUFFIXES) and e.is_file()]
    except OSError:
        return ()
    return tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in found))
