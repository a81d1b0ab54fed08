"""Raster images through Pillow: 8-bit PNG and JPEG (and whatever else Pillow opens), 16-bit
greyscale PNG and TIFF under the :class:`~cxrkit.data.images.policy.ImagePolicy`, every one upright
with its EXIF orientation applied (:func:`PIL.ImageOps.exif_transpose`).

An image stored in colour, with a palette or with alpha is decoded to grey levels (not refused:
radiographs are often saved that way, e.g. RGBA PNGs or 3-channel JPEGs of grey pixels, and
refusing them would shut out whole public datasets), and never silently: its decoding says so
(``JPEG 8-bit, colour (RGB) converted to grey``), the image check counts it and the dataset
records the count (``quality["converted_to_grey"]``) and warns."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from cxrkit.data.images.policy import ImagePolicy, Unusable, sixteen_bit_to_uint8
from cxrkit.data.tables import DataError

#: Pillow modes of 16-bit greyscale images (PNG, TIFF), decoded under the policy's ``png16``.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")

#: Said of an image stored in colour, with a palette or with alpha, and decoded to grey levels:
#: ``PNG 8-bit, colour (RGB) converted to grey`` (:data:`STORED_MODES`); counted by the image check.
CONVERTED_TO_GREY = "converted to grey"
#: Pillow modes other than grey, as the decoding's record names them. Pillow's conversion to grey
#: (L) takes the luma of a colour pixel (ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B), of a
#: palette entry for a palette image, and ignores alpha (transparency is not composited).
STORED_MODES: dict[str, str] = {
    "RGB": "colour (RGB)", "RGBA": "colour with alpha (RGBA, alpha ignored)", "RGBX": "colour (RGBX)",
    "CMYK": "colour (CMYK)", "YCbCr": "colour (YCbCr)", "P": "palette (P)",
    "PA": "palette with alpha (PA, alpha ignored)", "LA": "grey with alpha (LA, alpha ignored)",
}

#: EXIF orientations that :func:`PIL.ImageOps.exif_transpose` applies (1 = stored upright), with
#: what it does to the stored pixels.
EXIF_ORIENTATIONS: dict[int, str] = {
    2: "mirrored left-right", 3: "rotated 180 degrees", 4: "mirrored top-bottom",
    5: "transposed (mirrored about the main diagonal)", 6: "rotated 90 degrees clockwise",
    7: "transversed (mirrored about the anti-diagonal)", 8: "rotated 90 degrees counter-clockwise",
}


class Raster(NamedTuple):
    """A decoded raster image: 8-bit greyscale ``image`` (mode L, upright), how it was decoded
    (e.g. ``PNG 16-bit, full range``) and the EXIF orientation applied (None: stored upright)."""

    image: Image.Image
    how: str
    orientation: int | None


def guard_truncated_flag() -> None:
    """Refuse to decode while Pillow is told to accept truncated files.

    Raises:
        DataError: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set (by other code).
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code); truncated images "
            "would be decoded as partly grey instead of failing. Set it back to False."
        )


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation :func:`PIL.ImageOps.exif_transpose` would apply, or None (upright)."""
    value = img.getexif().get(ExifTags.Base.Orientation)
    return value if value in EXIF_ORIENTATIONS else None


def stored_as(mode: str) -> str:
    """What a Pillow mode stores, in words, for the decoding's record (e.g. ``colour (RGB)``)."""
    return STORED_MODES.get(mode, f"mode {mode}")


def _grey8(img: Image.Image, fmt: str, policy: ImagePolicy, stored: str) -> tuple[Image.Image, str]:
    """An opened, upright image as 8-bit greyscale (mode L), and how; ``stored`` is its mode in
    the file (a JPEG drafted in grey is decoded as L, but recorded as what it stores).

    Raises:
        Unusable: 32-bit integer or float pixels; a 16-bit image the policy refuses.
    """
    if img.mode in SIXTEEN_BIT_MODES or (img.mode == "I" and fmt == "PNG"):  # older Pillow: 16-bit PNG as I
        grey, how = sixteen_bit_to_uint8(np.asarray(img), policy)
        return Image.fromarray(grey, mode="L"), f"{fmt} 16-bit, {how}"
    if img.mode in ("I", "F"):
        kind = "integer" if img.mode == "I" else "floating-point"
        raise Unusable(f"unsupported mode {img.mode} (32-bit {kind} pixels); convert to 16 or 8 bits")
    if stored == "L":
        return img.convert("L"), f"{fmt} 8-bit"
    if stored == "1":
        return img.convert("L"), f"{fmt} 1-bit, black and white as 0 and 255"
    return img.convert("L"), f"{fmt} 8-bit, {stored_as(stored)} {CONVERTED_TO_GREY}"


def decode_raster(path: str | os.PathLike, policy: ImagePolicy, draft: int | None = None) -> Raster:
    """Decode one raster image as 8-bit greyscale, upright.

    Args:
        path: the image file.
        policy: how 16-bit images become 8-bit.
        draft: a JPEG is decoded at a reduced DCT scale of at least this side (Pillow's
            ``draft``), which still reads every byte; None decodes at full size.

    Returns:
        :class:`Raster`.

    Raises:
        Unusable: see :func:`_grey8`.
        Exception: whatever Pillow raises for a file it cannot decode (missing, truncated, ...).
    """
    with Image.open(path) as img:
        fmt, stored = img.format or "image", img.mode
        if draft is not None and fmt == "JPEG":
            img.draft("L", (draft, draft))
        turn = _orientation(img)
        ImageOps.exif_transpose(img, in_place=True)
        grey, how = _grey8(img, fmt, policy, stored)
        grey.load()
        return Raster(grey, how, turn)
