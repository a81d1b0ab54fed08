"""One decoder for every format: :func:`decode` (DICOM through pydicom, everything else through
Pillow) and :func:`load_image`, the (H, W) uint8 image the rest of the kit uses."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from PIL import Image

from cxrkit.data.images.dicom import decode_dicom, is_dicom
from cxrkit.data.images.policy import ImagePolicy, Unusable
from cxrkit.data.images.raster import decode_raster, guard_truncated_flag
from cxrkit.data.tables import DataError

#: Version of :func:`load_image`'s output; derived data (the uint8 cache) is keyed on it, with the
#: policy. 2: the EXIF orientation is applied. 3: 16-bit images and DICOM under an ImagePolicy.
DECODE_VERSION = 3


class Decoded(NamedTuple):
    """An image decoded to 8-bit grey levels: ``image`` (mode L, upright, at full size unless a
    JPEG draft was asked for), ``how`` it was decoded (e.g. ``PNG 8-bit``, ``DICOM MONOCHROME1,
    window centre/width``) and the EXIF ``orientation`` applied (None: none)."""

    image: Image.Image
    how: str
    orientation: int | None


def decode(path: str | os.PathLike, policy: ImagePolicy | None = None, draft: int | None = None) -> Decoded:
    """Decode any supported image to 8-bit greyscale, upright.

    Args:
        path: the image file (DICOM when :func:`~cxrkit.data.images.dicom.is_dicom`).
        policy: how images of more than 8 bits become 8-bit; None = :class:`ImagePolicy` defaults.
        draft: decode a JPEG at a reduced scale of at least this side (still reading every byte).

    Returns:
        :class:`Decoded`.

    Raises:
        Unusable: an image the kit refuses, with the reason (see the format modules).
        Exception: whatever the format's library raises for a file it cannot decode.
    """
    policy = policy or ImagePolicy()
    if is_dicom(path):
        pixels, how = decode_dicom(path, policy)
        return Decoded(Image.fromarray(pixels, mode="L"), how, None)
    return Decoded(*decode_raster(path, policy, draft))


def load_image(path: str | os.PathLike, size: int | None = None, policy: ImagePolicy | None = None) -> np.ndarray:
    """Decode an image as (H, W) uint8 grayscale, upright, resized to (size, size) when given.

    Every format goes through :func:`decode`: 8-bit images as they are, 16-bit PNGs and DICOM
    under ``policy`` (:class:`~cxrkit.data.images.policy.ImagePolicy`). An EXIF orientation
    (a JPEG stored sideways or mirrored) is applied with :func:`PIL.ImageOps.exif_transpose`;
    :func:`~cxrkit.data.images.scan.scan_images` lists such images. Resizing is bilinear, on
    the 8-bit image, whatever the format.

    Args:
        path: the image file.
        size: side of the square output in pixels; None keeps the stored size.
        policy: the decoding policy; None = defaults.

    Returns:
        (H, W) or (size, size) uint8.

    Raises:
        DataError: naming the file when it is missing, truncated, undecodable or refused (the
            reason: e.g. a multi-frame or colour DICOM).
    """
    guard_truncated_flag()
    try:
        img = decode(path, policy, draft=size).image
        if size is not None:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)
    except Unusable as exc:
        raise DataError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure names the file
        raise DataError(f"cannot read image {path}: {exc}") from exc
