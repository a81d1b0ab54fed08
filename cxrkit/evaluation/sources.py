"""The images inference runs on (:class:`ImageSource`): the files of a folder or a glob pattern
(:func:`folder_source`), or the images of a dataset read by its loader (:func:`dataset_source`),
checked up front under the runs' image policy, with a data fingerprint.

Every image is decoded once before any prediction (:func:`cxrkit.data.images.scan_images`, the
same check training makes), so an unusable file is refused naming it, or, with
``on_bad_image="exclude"``, left out and listed with the reason. Nothing else is skipped: a
folder's files are all taken as images (pick some with a glob such as ``DIR/*.png``).

Fingerprints (``fingerprint_of`` says which):

* a folder or glob: ``content``, the short sha256 of every listed file's id (its path relative to
  the folder, or to the glob's fixed leading folder) and the sha256 of its bytes, in id order.
  Copies of the same files have the same fingerprint; a file rewritten in place does not.
* a dataset: ``dataset table``, :func:`cxrkit.data.tables.fingerprint` of the loader's table with
  the labels it shares with the model (image ids, patient ids, labels; see
  :func:`cxrkit.evaluation.alignment.target_dataset`), before any exclusion, as
  ``cxrkit evaluate`` computes it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.data.datasets import DataError, fingerprint
from cxrkit.data.images import REORIENTED_COLUMNS, ImagePolicy, decoding_counts, scan_images
from cxrkit.data.tables import listing
from cxrkit.evaluation.alignment import LabelAlignment, target_dataset
from cxrkit.utils.params import ConfigError
from cxrkit.utils.paths import resolve

#: ``on_bad_image`` values: refuse the images (naming them) or leave them out with the reason.
ON_BAD_IMAGE = ("error", "exclude")
#: Columns of the list of excluded images.
EXCLUDED_COLUMNS = ("image", "path", "reason")


@dataclass
class ImageSource:
    """Images to predict, checked.

    Attributes:
        ids: the image ids written to the prediction file (text), in order.
        paths: their files, in the same order.
        fingerprint: the data fingerprint of the inputs (module docstring), excluded images
            included.
        description: what the images are: ``kind`` (``folder``, ``glob``, ``file``, ``dataset``),
            ``where``, ``fingerprint_of``, ``listed`` (images before exclusion) and, for a dataset,
            its name and options.
        excluded: the images left out (``image``, ``path``, ``reason``); empty unless
            ``on_bad_image="exclude"``.
        reoriented: images stored rotated or mirrored, decoded upright (``image``, ``path``,
            ``exif_orientation``, ``applied``).
        decoding: how many kept images are decoded each way (e.g. ``{"PNG 8-bit": 12}``).
        alignment: for a dataset, its labels aligned with the model's; None for files.
    """

    ids: list[str]
    paths: list[str]
    fingerprint: str
    description: dict[str, Any]
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(EXCLUDED_COLUMNS)))
    reoriented: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(REORIENTED_COLUMNS)))
    decoding: dict[str, int] = field(default_factory=dict)
    alignment: LabelAlignment | None = None


def list_images(spec: str | os.PathLike) -> tuple[str, Path, list[Path]]:
    """The files of a folder (recursively), of a glob pattern (``**`` recursive) or one file.

    Args:
        spec: a folder, a glob pattern or a file; relative paths resolve from the project root.

    Returns:
        ``(kind, base, files)``: ``folder``, ``glob`` or ``file``; the folder ids are relative
        to (the folder, the glob's leading folder without wildcards, the file's folder); the
        files sorted by their id.

    Raises:
        FileNotFoundError: ``spec`` is not a folder or file and no file matches it as a pattern.
        DataError: a folder without any file.
    """
    path = resolve(spec)
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
        if not files:
            raise DataError(f"images: the folder {path} holds no file")
        return "folder", path, files
    if path.is_file():
        return "file", path.parent, [path]
    if glob.has_magic(str(spec)):
        parts = path.parts
        fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        base = Path(*parts[:fixed])
        files = sorted((Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()),
                       key=lambda p: p.relative_to(base).as_posix())
        if files:
            return "glob", base, files
        raise FileNotFoundError(f"images: no file matches the pattern {path}")
    raise FileNotFoundError(f"images: {path} is neither a folder, a file nor a glob pattern")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_fingerprint(ids: Sequence[str], paths: Sequence[str | os.PathLike], workers: int | None = None) -> str:
    """Short sha256 (16 hex) of every id and its file's sha256, in order (``fingerprint_of: content``)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(file_sha256, paths))
    h = hashlib.sha256()
    for image, digest in zip(ids, digests, strict=True):
        h.update(f"{image}\0{digest}\n".encode())
    return h.hexdigest()[:16]


def folder_source(spec: str | os.PathLike, policy: ImagePolicy, *, on_bad_image: str = "error",
                  workers: int | None = None, progress: bool = False) -> ImageSource:
    """The image files of a folder, glob pattern or file, every one decoded up front.

    Args:
        spec: see :func:`list_images`.
        policy: the runs' image policy (how DICOM and 16-bit images become 8-bit).
        on_bad_image: ``error`` (refuse unusable files, naming them) or ``exclude``.
        workers: decoding and hashing threads (None: Python's default).
        progress: a tqdm bar while checking.

    Returns:
        :class:`ImageSource` (ids: paths relative to the folder, as text).

    Raises:
        FileNotFoundError, DataError: see :func:`list_images`; unusable images under
            ``on_bad_image="error"`` (naming each with its reason), or none left.
    """
    _check_on_bad_image(on_bad_image)
    kind, base, files = list_images(spec)
    ids = [f.relative_to(base).as_posix() for f in files]
    paths = [str(f) for f in files]
    scan = scan_images(paths, workers=workers, progress=progress, policy=policy)
    reason = dict(zip(scan.bad["path"], scan.bad["reason"], strict=True))
    if reason and on_bad_image == "error":
        items = [f"{p} ({r})" for p, r in reason.items()]
        raise DataError(f"images: {len(reason)} of {len(paths)} files under {base} are unusable: {listing(items)}; "
                        f"pick the images with a glob (e.g. '{base}/*.png') or pass on_bad_image 'exclude' "
                        f"(--on-bad-image exclude) to predict the others and list these")
    excluded = pd.DataFrame([(i, p, reason[p]) for i, p in zip(ids, paths) if p in reason],
                            columns=list(EXCLUDED_COLUMNS), dtype=object)
    kept = [(i, p) for i, p in zip(ids, paths) if p not in reason]
    if not kept:
        raise DataError(f"images: none of the {len(paths)} files under {base} is usable: "
                        f"{listing([f'{p} ({r})' for p, r in reason.items()])}")
    description = {"kind": kind, "where": str(resolve(spec)), "base": str(base),
                   "fingerprint_of": "content: sha256 of each file's bytes and its id", "listed": len(paths)}
    turned = scan.reoriented.assign(image=scan.reoriented["path"].map(dict(zip(paths, ids))))
    return ImageSource([i for i, _ in kept], [p for _, p in kept], content_fingerprint(ids, paths, workers),
                       description, excluded, turned.reindex(columns=list(REORIENTED_COLUMNS)),
                       decoding_counts(scan.decoded, [p for _, p in kept]))


def dataset_source(dataset: str, data: str | os.PathLike, options: dict[str, Any] | None,
                   model_labels: Sequence[str], policy: ImagePolicy, *, on_bad_image: str = "error",
                   workers: int | None = None) -> ImageSource:
    """The images of a dataset read by its loader (ids: the table's ``image``), each decoded up
    front under the runs' policy by the loader's own check (its known unreadable files included).

    Args:
        dataset: the loader name; ``data`` its folder; ``options`` its options (``views``, ...).
        model_labels: the labels the runs predict (the fingerprint covers the shared ones).
        policy: the runs' image policy.
        on_bad_image: ``error`` or ``exclude``.
        workers: decoding threads.

    Returns:
        :class:`ImageSource` with the label ``alignment``.

    Raises:
        ConfigError: bad options; DataError: the loader's refusals, unusable images under
            ``on_bad_image="error"``.
    """
    _check_on_bad_image(on_bad_image)
    with tempfile.TemporaryDirectory() as reports:  # the loader's own report files; the lists are kept below
        ds, alignment = target_dataset(dataset, resolve(data), options, model_labels, check_images=True,
                                       on_bad_image=on_bad_image, report_dir=reports, image_policy=policy,
                                       workers=workers)
    before = ds.table_before_exclusion if ds.table_before_exclusion is not None else ds.table
    if ds.table.empty:
        raise DataError(f"{dataset} at {resolve(data)}: no usable image ({len(ds.excluded)} excluded)")
    description = {"kind": "dataset", "dataset": dataset, "where": str(resolve(data)), "options": dict(options or {}),
                   "fingerprint_of": "dataset table: image ids, patient ids and the shared labels",
                   "listed": len(before)}
    reoriented = ds.reoriented.reindex(columns=list(REORIENTED_COLUMNS))
    return ImageSource(ds.table["image"].astype(str).tolist(), ds.table["path"].astype(str).tolist(),
                       fingerprint(before), description, ds.excluded.reindex(columns=list(EXCLUDED_COLUMNS)),
                       reoriented, dict(ds.decoding), alignment)


def _check_on_bad_image(value: str) -> None:
    """``value`` is one of :data:`ON_BAD_IMAGE`, else ConfigError naming it."""
    if value not in ON_BAD_IMAGE:
        raise ConfigError(f"on_bad_image: {value!r} is not one of {ON_BAD_IMAGE}")
