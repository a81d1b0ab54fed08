"""The phantom's image files in the formats real datasets come in: 8-bit PNG (the reference),
16-bit PNG and DICOM. Each is encoded so that decoding it with the default
:class:`~cxrkit.data.images.ImagePolicy` gives back exactly the rendered 8-bit image ``v``:

* ``png16``: ``257 * v`` (0..65535); the policy's ``png16: full`` maps it back to ``v``.
* ``dicom``: a Computed Radiography image as scanners write them: 12 bits stored in 16,
  ``stored = 16 v + 8`` (MONOCHROME2) or ``16 (255 - v) + 8`` (MONOCHROME1, high values dark),
  rescale slope 0.5 and intercept -100 (modality values ``m = 8 v - 96``) and a LINEAR VOI
  window (DICOM PS3.3 C.11.2.1.2.1: ``y = (m - (c - 0.5)) / (w - 1) + 0.5`` of the output range)
  with ``w - 1 = 255 * 8`` and ``c - 0.5 = -96 + (w - 1) / 2``, so ``y = v / 255`` exactly (and
  MONOCHROME1 is inverted back). Patient id, sex and age, study and series UIDs (deterministic,
  from the phantom's parameters) and the view position are in the header. Most files are
  uncompressed (explicit VR little endian); a quarter are RLE Lossless (pydicom's own encoder)
  and a quarter JPEG 2000 Lossless (pylibjpeg-openjpeg; uncompressed below 32 pixels a side,
  which openjpeg cannot encode), so the decoders of compressed transfer syntaxes are exercised
  too. (JPEG Lossless is not written: no installed package encodes it.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

#: Image formats the phantom writes -> file name suffix.
FORMATS: dict[str, str] = {"png": ".png", "png16": ".png", "dicom": ".dcm"}
#: zlib level of the PNGs (speed over size).
PNG_COMPRESS_LEVEL = 1

#: DICOM encoding (see the module docstring): bits stored, ``stored = GAIN * v + OFFSET``,
#: rescale slope and intercept, and the window that maps the modality values back to ``v``.
BITS_STORED = 12
GAIN, OFFSET = 16, 8
RESCALE_SLOPE, RESCALE_INTERCEPT = 0.5, -100.0
_K = GAIN * RESCALE_SLOPE  # modality value per grey level
_M0 = OFFSET * RESCALE_SLOPE + RESCALE_INTERCEPT  # modality value of grey level 0
WINDOW_WIDTH = 255 * _K + 1
WINDOW_CENTER = _M0 + 0.5 + (WINDOW_WIDTH - 1) / 2
#: Transfer syntax of an image by ``image_seed % 4``; MONOCHROME1 when ``image_seed // 4`` is odd.
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, RLELossless, ExplicitVRLittleEndian, JPEG2000Lossless)
#: Smallest side openjpeg encodes (its 6 DWT resolutions); smaller images stay uncompressed instead.
J2K_MIN_SIDE = 32


def _ds(value: float) -> str:
    """A decimal string (DICOM VR DS) of ``value``, exact for the constants above."""
    return f"{value:.10g}"


def stored_values(img: np.ndarray, monochrome1: bool) -> np.ndarray:
    """The 12-bit stored values of an 8-bit image (uint16, little endian)."""
    v = img.astype(np.uint16)
    return (GAIN * (255 - v if monochrome1 else v) + OFFSET).astype("<u2")


def _uid(dataset: str, *parts: Any) -> str:
    """A deterministic UID under pydicom's root, hashed from the phantom's identity and ``parts``."""
    return generate_uid(entropy_srcs=[dataset, *map(str, parts)])


def dicom_dataset(img: np.ndarray, header: Mapping[str, Any]) -> FileDataset:
    """The DICOM dataset of one phantom image.

    Args:
        img: (H, W) uint8, the rendered image.
        header: ``dataset`` (the phantom's identity, for the UIDs), ``image`` (file name),
            ``patient_id``, ``study``, ``sex`` (M/F), ``age`` (years), ``view`` (AP/PA) and
            ``seed`` (the image seed: transfer syntax and photometric interpretation).

    Returns:
        A CR image, explicit VR little endian or compressed (:data:`TRANSFER_SYNTAXES`).
    """
    seed, name = int(header["seed"]), header["dataset"]
    monochrome1 = (seed // 4) % 2 == 1
    study = (name, header["patient_id"], header["study"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = _uid(*study, header["image"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(header["image"]), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(*study), _uid(*study, "series 1")
    ds.PatientName, ds.PatientID = f"Phantom^{header['patient_id']}", str(header["patient_id"])
    ds.PatientSex, ds.PatientAge, ds.PatientBirthDate = header["sex"], f"{int(header['age']):03d}Y", ""
    ds.StudyID, ds.StudyDate, ds.StudyTime = str(header["study"]), "", ""
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CR", 1, 1
    ds.Manufacturer, ds.ImageType = "cxrkit phantom", ["ORIGINAL", "PRIMARY"]
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", header["view"], ["L", "F"]
    ds.set_pixel_data(stored_values(img, monochrome1), "MONOCHROME1" if monochrome1 else "MONOCHROME2",
                      BITS_STORED, generate_instance_uid=False)
    ds.RescaleSlope, ds.RescaleIntercept = _ds(RESCALE_SLOPE), _ds(RESCALE_INTERCEPT)
    ds.WindowCenter, ds.WindowWidth = _ds(WINDOW_CENTER), _ds(WINDOW_WIDTH)
    ds.WindowCenterWidthExplanation = "PHANTOM"
    tsyntax = TRANSFER_SYNTAXES[seed % len(TRANSFER_SYNTAXES)]
    if tsyntax == JPEG2000Lossless and min(img.shape) < J2K_MIN_SIDE:
        tsyntax = ExplicitVRLittleEndian
    if tsyntax != ExplicitVRLittleEndian:
        ds.compress(tsyntax, generate_instance_uid=False)
    return ds


def write_image(path: str | Path, img: np.ndarray, fmt: str, header: Mapping[str, Any]) -> None:
    """Write one rendered image in ``fmt`` (:data:`FORMATS`).

    Args:
        path: the file to write.
        img: (H, W) uint8.
        fmt: ``png``, ``png16`` or ``dicom``.
        header: what :func:`dicom_dataset` needs (DICOM only).

    Raises:
        ValueError: an unknown format.
    """
    if fmt == "png":
        Image.fromarray(img).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "png16":
        Image.fromarray(img.astype(np.uint16) * 257).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "dicom":
        dicom_dataset(img, header).save_as(path, enforce_file_format=True)
    else:
        raise ValueError(f"unknown image format {fmt!r}; known: {sorted(FORMATS)}")
