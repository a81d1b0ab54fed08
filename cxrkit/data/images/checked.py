"""A record of a finished image check (cxrkit issue 15), so that the same files are not decoded
again: :func:`scan_images_once` is :func:`~cxrkit.data.images.scan.scan_images` that writes what
it found to a small JSON file in a folder (training uses the uint8 cache folder) and, next time,
returns it without decoding anything when nothing it depends on has changed.

The record's file is named after the image paths (in order), the policy and the decoder's
version; it is used only when its *state* matches: the size and modification time (ns) of every
file (a replaced or edited image is checked again; a missing one is recorded as missing), the
policy, :data:`~cxrkit.data.images.DECODE_VERSION`, the check's JPEG draft size and the versions of
the decoding packages (Pillow, pydicom and its pixel-data plugins). A check that met an
unreadable file (an OSError, e.g. permissions, which can change without touching the file) is not
recorded. A folder that cannot be written only means the check runs every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.data.images.decode import DECODE_VERSION
from cxrkit.data.images.policy import ImagePolicy
from cxrkit.data.images.raster import EXIF_ORIENTATIONS
from cxrkit.data.images.scan import CHECK_DRAFT, ImageScan, scan_images
from cxrkit.utils.files import atomic_write

logger = logging.getLogger("cxrkit.datasets")

#: Format of the record file. 2: images stored in colour are recorded as converted to grey.
RECORD_VERSION = 2
#: Packages whose version can change how an image decodes or whether it can.
DECODING_PACKAGES = ("pillow", "numpy", "pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg",
                     "pylibjpeg-rle", "python-gdcm")


def _versions() -> dict[str, str]:
    found = {}
    for name in DECODING_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def record_file(folder: str | os.PathLike, paths: Sequence[str], policy: ImagePolicy) -> Path:
    """Where the check of ``paths`` under ``policy`` is recorded in ``folder``."""
    h = hashlib.sha256("\n".join(paths).encode())
    h.update(f"\0policy {policy.key()}\0decoder {DECODE_VERSION}".encode())
    return Path(folder) / f"image_check_{len(paths)}_{h.hexdigest()[:16]}.json"


def check_state(paths: Sequence[str], policy: ImagePolicy) -> str:
    """Short sha256 of everything the check's result depends on (module docstring)."""
    h = hashlib.sha256(json.dumps({"policy": policy.as_dict(), "decoder": DECODE_VERSION, "draft": CHECK_DRAFT,
                                   "packages": _versions()}, sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError as exc:
            h.update(f"{p}\0{type(exc).__name__}\n".encode())
    return h.hexdigest()[:32]


def scan_images_once(paths: Sequence[str], folder: str | os.PathLike | None, workers: int | None = None,
                     progress: bool = False, policy: ImagePolicy | None = None,
                     scan: Callable[..., ImageScan] = scan_images) -> tuple[ImageScan, Path | None]:
    """``scan(paths, workers=, progress=, policy=)`` (:func:`~cxrkit.data.images.scan.scan_images`),
    or its record in ``folder`` when the files and the decoding have not changed since (module
    docstring); None = always decode.

    Returns:
        The scan (the same as decoding would give) and the record file it was read from, or None
        when the images were decoded now.
    """
    paths = [str(p) for p in paths]
    policy = policy or ImagePolicy()
    if folder is None:
        return scan(paths, workers=workers, progress=progress, policy=policy), None
    file, state = record_file(folder, paths, policy), check_state(paths, policy)
    found = _read(file, state, paths)
    if found is not None:
        logger.info("image check: %d images unchanged since the check recorded in %s; not decoded again",
                    len(paths), file)
        return found, file
    found = scan(paths, workers=workers, progress=progress, policy=policy)
    if not found.bad["reason"].astype(str).str.startswith("unreadable").any():
        _write(file, state, found, paths, policy)
    return found, None


def _write(file: Path, state: str, scan: ImageScan, paths: list[str], policy: ImagePolicy) -> None:
    """Record ``scan`` (compactly: each good image's decoding as an index into the distinct ones)."""
    decodings = sorted(set(scan.decoded["decoding"]))
    code = {d: i for i, d in enumerate(decodings)}
    record: dict[str, Any] = {
        "version": RECORD_VERSION, "state": state, "n": len(paths), "image_policy": policy.as_dict(),
        "decoder_version": DECODE_VERSION, "bad": scan.bad[["path", "reason"]].values.tolist(),
        "reoriented": [[p, int(o)] for p, o in zip(scan.reoriented["path"], scan.reoriented["exif_orientation"],
                                                   strict=True)],
        "decodings": decodings, "decoded": [code[d] for d in scan.decoded["decoding"]]}
    try:
        atomic_write(file, lambda tmp: Path(tmp).write_text(json.dumps(record)))
    except OSError as exc:  # a read-only cache folder: the check runs again next time
        logger.debug("image check not recorded in %s: %s", file, exc)


def _read(file: Path, state: str, paths: list[str]) -> ImageScan | None:
    """The scan recorded in ``file`` when its state is ``state``, else None."""
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if record.get("version") != RECORD_VERSION or record.get("state") != state or record.get("n") != len(paths):
        return None
    bad = pd.DataFrame(record["bad"], columns=["path", "reason"], dtype=object)
    turned = pd.DataFrame([(p, o, EXIF_ORIENTATIONS[o]) for p, o in record["reoriented"]],
                          columns=["path", "exif_orientation", "applied"]).astype(
        {"path": object, "exif_orientation": int, "applied": object})
    unusable = set(bad["path"])
    good = [p for p in paths if p not in unusable]
    if len(good) != len(record["decoded"]):
        return None
    decoded = pd.DataFrame({"path": good, "decoding": [record["decodings"][i] for i in record["decoded"]]},
                           columns=["path", "decoding"], dtype=object)
    return ImageScan(bad, turned, decoded)
