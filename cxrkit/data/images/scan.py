"""The up-front image check: :func:`scan_images` decodes a dataset's images in parallel, before
any training, to refuse (or exclude) unusable ones with the reason, and says how each good one is
decoded (the images converted to grey from colour counted), and which are turned upright."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import pandas as pd

from cxrkit.data.images.decode import decode
from cxrkit.data.images.policy import ImagePolicy, Unusable
from cxrkit.data.images.raster import CONVERTED_TO_GREY, EXIF_ORIENTATIONS, guard_truncated_flag

#: Side a JPEG is drafted to while checking (a reduced DCT scale still reads every byte).
CHECK_DRAFT = 64

#: One image's check: (reason it is unusable or None, EXIF orientation applied or None, how it decodes or None).
_Found = tuple[str | None, int | None, str | None]


class ImageScan(NamedTuple):
    """What :func:`scan_images` found, each in input order and empty when there is nothing.

    Attributes:
        bad: the unusable images: ``path``, ``reason``.
        reoriented: the good images stored rotated or mirrored: ``path``, ``exif_orientation``
            (2..8), ``applied`` (what decoding does, e.g. 'rotated 90 degrees clockwise').
        decoded: every good image: ``path``, ``decoding`` (how it is decoded, e.g. ``PNG 8-bit``
            or ``DICOM MONOCHROME1, window centre/width``; :func:`decoding_counts` counts them).
    """

    bad: pd.DataFrame
    reoriented: pd.DataFrame
    decoded: pd.DataFrame

    @property
    def converted(self) -> pd.DataFrame:
        """The good images stored in colour, with a palette or with alpha and decoded to grey
        levels (``path``, ``decoding``, e.g. ``PNG 8-bit, colour (RGB) converted to grey``)."""
        return self.decoded[self.decoded["decoding"].str.endswith(CONVERTED_TO_GREY)].reset_index(drop=True)


def _check_one(path: str, policy: ImagePolicy) -> _Found:
    """Stat and fully decode one image under ``policy``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing", None, None
    except OSError as exc:
        return f"unreadable: {exc}", None, None
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file", None, None
    if st.st_size == 0:
        return "empty file (0 bytes)", None, None
    try:
        _, how, turn = decode(path, policy, draft=CHECK_DRAFT)
        return None, turn, how
    except Unusable as exc:
        return str(exc), None, None
    except Exception as exc:  # noqa: BLE001 - every decoder failure is a reason, not a crash
        msg = str(exc)
        return ("truncated" if "truncated" in msg.lower() else f"cannot decode: {msg}"), None, None


def scan_images(paths: Sequence[str], workers: int | None = None, progress: bool = False,
                policy: ImagePolicy | None = None) -> ImageScan:
    """Open and fully decode every image under ``policy``, in parallel threads (PIL, numpy and
    the DICOM codecs release the GIL).

    JPEGs are decoded at reduced DCT scale (``draft``), which still reads every byte, so
    truncation is caught cheaply. Each good image's EXIF orientation is read: :func:`load_image`
    applies it, and the scan lists where it does.

    Args:
        paths: image file paths.
        workers: threads; None = ThreadPoolExecutor's default.
        progress: show a tqdm bar.
        policy: the decoding policy (:class:`ImagePolicy`); None = defaults.

    Returns:
        :class:`ImageScan`. Reasons include 'missing', 'empty file (0 bytes)', 'truncated',
        'cannot decode: <decoder message>' and the refusals of the formats (a DICOM without
        pixel data, multi-frame or colour, a transfer syntax without an installed decoder and the
        packages that decode it, every pixel one value, ...).

    Raises:
        DataError: when PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set.
    """
    guard_truncated_flag()
    policy = policy or ImagePolicy()
    paths = [str(p) for p in paths]
    size = max(1, min(256, len(paths) // 64 or 1))
    batches = [paths[i : i + size] for i in range(0, len(paths), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results: Iterable[list[_Found]] = pool.map(lambda batch: [_check_one(p, policy) for p in batch], batches)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(batches), desc="checking images", unit="batch")
        found = [r for batch in results for r in batch]
    rows = list(zip(paths, found, strict=True))
    bad = [(p, r) for p, (r, _, _) in rows if r is not None]
    turned = [(p, o, EXIF_ORIENTATIONS[o]) for p, (_, o, _) in rows if o is not None]
    decoded = [(p, h) for p, (r, _, h) in rows if r is None]
    return ImageScan(pd.DataFrame(bad, columns=["path", "reason"], dtype=object),
                     pd.DataFrame(turned, columns=["path", "exif_orientation", "applied"]).astype(
                         {"path": object, "exif_orientation": int, "applied": object}),
                     pd.DataFrame(decoded, columns=["path", "decoding"], dtype=object))


def check_images(paths: Sequence[str], workers: int | None = None, progress: bool = False,
                 policy: ImagePolicy | None = None) -> pd.DataFrame:
    """The unusable images only (``scan_images(...).bad``): columns ``path`` and ``reason``.

    Raises:
        DataError: when PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set.
    """
    return scan_images(paths, workers=workers, progress=progress, policy=policy).bad


def decoding_counts(decoded: pd.DataFrame, paths: Iterable[str] | None = None) -> dict[str, int]:
    """How many images are decoded each way (``ImageScan.decoded``), over ``paths`` when given
    (e.g. the images kept after exclusions), most frequent first."""
    rows = decoded if paths is None else decoded[decoded["path"].isin(list(paths))]
    counts = rows["decoding"].value_counts()
    return {str(k): int(counts[k]) for k in sorted(counts.index, key=lambda k: (-counts[k], k))}
