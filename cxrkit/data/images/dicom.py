"""DICOM images through pydicom and its pixel-data handlers: one greyscale frame, the modality
LUT, then the VOI the file declares or the percentile window
(:class:`~cxrkit.data.images.policy.ImagePolicy`), MONOCHROME1 inverted.

What cannot be used is refused with the reason (:class:`~cxrkit.data.images.policy.Unusable`): no
pixel data, several frames, colour, a transfer syntax no installed handler decodes (naming the
PyPI packages that would), compressed data every installed handler fails on (naming pydicom's
handlers that are not installed, e.g. ``python-gdcm``), every pixel one value.

Sources: DICOM PS3.3 C.7.6.3 (Image Pixel module), C.11.1 (Modality LUT), C.11.2 (VOI LUT);
pydicom's :func:`~pydicom.pixels.apply_modality_lut`, :func:`~pydicom.pixels.apply_voi` and
:func:`~pydicom.pixels.apply_windowing` (the two halves of :func:`~pydicom.pixels.apply_voi_lut`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pydicom
from pydicom import uid as dicom_uid
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder

from cxrkit.data.images.policy import ImagePolicy, Unusable, percentile_window, scale_to_uint8

#: File name suffixes read as DICOM (other names are DICOM when they carry the "DICM" marker).
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
#: Suffixes read with Pillow without looking for the DICOM marker.
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Greyscale photometric interpretations (PS3.3 C.7.6.3.1.2); MONOCHROME1 is shown inverted.
GREYSCALE = ("MONOCHROME1", "MONOCHROME2")

_JPEG = "pylibjpeg pylibjpeg-libjpeg"
_J2K = "pylibjpeg pylibjpeg-openjpeg"
#: The PyPI packages whose pydicom pixel-data plugins decode each compressed transfer syntax.
DECODER_PACKAGES: dict[str, str] = {
    dicom_uid.JPEGBaseline8Bit: _JPEG, dicom_uid.JPEGExtended12Bit: _JPEG, dicom_uid.JPEGLossless: _JPEG,
    dicom_uid.JPEGLosslessSV1: _JPEG, dicom_uid.JPEGLSLossless: _JPEG, dicom_uid.JPEGLSNearLossless: _JPEG,
    dicom_uid.JPEG2000Lossless: _J2K, dicom_uid.JPEG2000: _J2K, dicom_uid.HTJ2KLossless: _J2K,
    dicom_uid.HTJ2KLosslessRPCL: _J2K, dicom_uid.HTJ2K: _J2K, dicom_uid.RLELossless: "pylibjpeg pylibjpeg-rle",
}

#: pydicom's pixel-data decoding plugins -> the PyPI packages that provide them.
PLUGIN_PACKAGES: dict[str, str] = {"gdcm": "python-gdcm", "pyjpegls": "pyjpegls", "pylibjpeg": "pylibjpeg",
                                   "pillow": "pillow"}


class DicomImage(NamedTuple):
    """A decoded DICOM image: (H, W) uint8 ``pixels`` and how they were obtained (e.g.
    ``DICOM MONOCHROME1, window centre/width``)."""

    pixels: np.ndarray
    how: str


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as DICOM: a DICOM suffix, or, for a name that is neither DICOM nor
    a common raster format, the "DICM" marker after the 128-byte preamble (PS3.10 7.1)."""
    suffix = Path(path).suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in RASTER_SUFFIXES:
        return False
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def check_dicom(ds: Dataset) -> None:
    """Refuse what the kit cannot use, before the pixels are decoded.

    Raises:
        Unusable: no pixel data, several frames, not one greyscale sample per pixel, or a
            transfer syntax without an installed decoder (naming the PyPI packages).
    """
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        raise Unusable("DICOM without (7FE0,0010) Pixel Data" + (f" (it has {other[0]}, which is not supported)"
                                                                 if other else " (not an image: e.g. a report)"))
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise Unusable(f"multi-frame DICOM ({frames} frames); a radiograph is one frame")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if not photometric:
        raise Unusable("no photometric interpretation (0028,0004): whether 0 is black (MONOCHROME2) or white "
                       "(MONOCHROME1) is unknown; only MONOCHROME1/2 greyscale is used")
    if photometric not in GREYSCALE or int(ds.get("SamplesPerPixel") or 1) != 1:
        raise Unusable(f"colour DICOM (photometric interpretation {photometric}, "
                       f"{ds.get('SamplesPerPixel', '?')} samples per pixel); only MONOCHROME1/2 greyscale is used")
    _check_transfer_syntax(ds)


def _syntax_name(tsyntax: dicom_uid.UID) -> str:
    """``JPEG Extended (Process 2 and 4) (1.2.840.10008.1.2.4.51)``, or the UID when unnamed."""
    return f"{tsyntax.name} ({tsyntax})" if tsyntax.name != tsyntax else str(tsyntax)


def _check_transfer_syntax(ds: Dataset) -> None:
    """The file's transfer syntax has a pixel-data decoder that is installed."""
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None:
        raise Unusable("DICOM without a transfer syntax (0002,0010) in its file meta information")
    name = _syntax_name(tsyntax)
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise Unusable(f"transfer syntax {name} has no pixel-data decoder in pydicom; convert the file to an "
                       f"uncompressed transfer syntax first (e.g. with GDCM's `gdcmconv --raw`)") from None
    if not decoder.is_available:
        package = DECODER_PACKAGES.get(tsyntax, "a pydicom pixel-data plugin")
        raise Unusable(f"transfer syntax {name} needs a pixel-data decoder that is not installed: "
                       f"pip install {package} ({'; '.join(decoder.missing_dependencies)})")


def _stored_pixels(ds: Dataset) -> np.ndarray:
    """The stored pixel values (``ds.pixel_array``).

    Raises:
        Unusable: compressed pixel data that every installed decoder failed on (each one's
            reason), naming the PyPI packages of pydicom's other decoders (e.g. ``python-gdcm``
            for a JPEG that libjpeg rejects), or saying how to convert the file.
        Exception: what pydicom raises for pixel data it cannot decode (e.g. too short).
    """
    try:
        return ds.pixel_array
    except RuntimeError as exc:
        tsyntax = ds.file_meta.TransferSyntaxUID
        decoder = get_decoder(tsyntax)
        if not decoder.is_encapsulated or not str(exc).startswith("Unable to decode"):
            raise
        reasons = "; ".join(line.strip() for line in str(exc).splitlines()[1:])
        others = [PLUGIN_PACKAGES.get(m.split(" - ")[0].strip(), m) for m in decoder.missing_dependencies]
        hint = (f"another of pydicom's decoders may: pip install {' '.join(others)}" if others else
                "convert the file to an uncompressed transfer syntax first (e.g. with GDCM's `gdcmconv --raw`)")
        raise Unusable(f"transfer syntax {_syntax_name(tsyntax)}: the installed pixel-data decoders "
                       f"({', '.join(decoder.available_plugins)}) cannot decode it ({reasons}); {hint}") from None


def _header_voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, str] | None:
    """The file's VOI applied to modality ``values``: the VOI LUT sequence (preferred, as
    :func:`pydicom.pixels.apply_voi_lut`), else the first window centre/width; None without one.

    The output is scaled to 0..255 over the VOI's own output range: the LUT's smallest to
    largest entry (a LUT declaring 16 bits with 12-bit entries, a known vendor quirk, is not
    darkened), or the window's range (what values beyond either end of the window become).

    Raises:
        Unusable: a window centre without a width (or the reverse), a constant VOI LUT.
    """
    lut = ds.get("VOILUTSequence")
    if lut and lut[0].get("LUTDescriptor") is not None and lut[0].get("LUTData") is not None:
        entries, first, _ = lut[0].LUTDescriptor
        out = apply_voi(np.rint(values).astype(np.int64), ds)  # LUT inputs are integers
        table = apply_voi(np.arange(first, first + (entries or 2**16), dtype=np.int64), ds)
        low, high = float(table.min()), float(table.max())
        if not high > low:
            raise Unusable(f"the VOI LUT maps every value to {low:g}")
        return scale_to_uint8(out, low, high), "VOI LUT"
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None and width is None:
        return None
    if centre is None or width is None:
        raise Unusable("DICOM with a window " + ("width but no centre" if centre is None else "centre but no width"))
    out = apply_windowing(np.asarray(values, dtype=np.float64), ds)
    with np.errstate(over="ignore"):  # a SIGMOID window's exp overflows at the probes: its limits
        low, high = (float(v) for v in apply_windowing(np.array([-1e300, 1e300]), ds))
    return scale_to_uint8(out, low, high), "window centre/width"


def dicom_to_uint8(ds: Dataset, policy: ImagePolicy) -> DicomImage:
    """Decode a checked DICOM dataset (:func:`check_dicom`) to 8-bit grey levels.

    Args:
        ds: the dataset, pixel data included.
        policy: ``dicom_window`` and ``percentiles``.

    Returns:
        :class:`DicomImage`.

    Raises:
        Unusable: every stored pixel one value, an empty percentile window, a malformed VOI,
            compressed pixel data no installed decoder reads (:func:`_stored_pixels`).
        Exception: what pydicom raises for pixel data it cannot decode (e.g. too short).
    """
    stored = _stored_pixels(ds)
    if stored.ndim != 2:
        raise Unusable(f"DICOM pixel data of shape {stored.shape}, not one greyscale frame")
    low, high = stored.min(), stored.max()
    if low == high:
        raise Unusable(f"every stored pixel of the DICOM image has the value {low} (a blank image)")
    values = apply_modality_lut(stored, ds)
    voi = _header_voi(values, ds) if policy.dicom_window == "header" else None
    pixels, how = voi or (percentile_window(values, policy.percentiles), "percentile window")
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
    return DicomImage(pixels, f"DICOM {photometric}, {how}")


def decode_dicom(path: str | os.PathLike, policy: ImagePolicy) -> DicomImage:
    """Read, check and decode a DICOM file (:func:`check_dicom`, :func:`dicom_to_uint8`).

    Raises:
        Unusable: see :func:`check_dicom` and :func:`dicom_to_uint8`.
        Exception: what pydicom raises for a file it cannot read.
    """
    ds = pydicom.dcmread(path)
    check_dicom(ds)
    return dicom_to_uint8(ds, policy)
