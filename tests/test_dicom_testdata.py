"""Real DICOM files through cxrkit's decoder: pydicom's own test files, bundled with its wheel and
read with ``download=False`` (nothing is fetched), in the compressed transfer syntaxes the
pixel-data plugins decode: JPEG Extended 12-bit and JPEG-LS (pylibjpeg-libjpeg), JPEG 2000
(pylibjpeg-openjpeg) and RLE (pylibjpeg-rle), and a JPEG stream libjpeg rejects, refused naming
GDCM, the decoder that reads it.

Each decoded file is checked twice: the stored values pydicom gives are those of pydicom's
reference tests (``tests/pixels/pixels_reference.py``: JPGExtended.dcm ``arr[420, 140] == 244``
and ``arr[230, 120] == 95``; JPEGLSNearLossless_16.dcm's first column; MR_small.dcm's
``arr[0, 31:34] == (422, 319, 361)``), and cxrkit's grey levels are those the DICOM formulas give
for them (the linear VOI window, PS3.3 C.11.2.1.2.1; the percentile window where the file has
none), computed here, not with the functions under test. The lossless encodings of MR_small.dcm
decode to exactly its grey levels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.pixels import pixel_array
from pydicom.uid import (
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from test_images import _linear_window, _percentile

from cxrkit.data.images import decode, load_image, scan_images
from cxrkit.data.tables import DataError


def _testdata(name: str) -> Path:
    """One of pydicom's bundled test files (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not among the test files bundled with pydicom"
    return Path(path)


def _decoded(path: Path) -> tuple[np.ndarray, str]:
    found = decode(path)
    return np.asarray(found.image), found.how


def test_the_test_files_are_bundled_not_downloaded() -> None:
    folder = Path(importlib.util.find_spec("pydicom").origin).parent / "data" / "test_files"
    for name in ("MR_small.dcm", "JPGExtended.dcm", "JPEG-lossy.dcm", "JPEGLSNearLossless_16.dcm"):
        assert _testdata(name).parent == folder


MR_SMALL_ENCODINGS = {
    "MR_small_jpeg_ls_lossless.dcm": JPEGLSLossless,
    "MR_small_jp2klossless.dcm": JPEG2000Lossless,
    "MR_small_RLE.dcm": RLELossless,
    "MR_small_bigendian.dcm": ExplicitVRBigEndian,
    "MR_small_implicit.dcm": ImplicitVRLittleEndian,
}


@pytest.mark.parametrize("name", list(MR_SMALL_ENCODINGS))
def test_lossless_encodings_decode_to_the_grey_levels_of_the_uncompressed_file(name: str) -> None:
    plain = dcmread(_testdata("MR_small.dcm"))
    stored = plain.pixel_array
    assert tuple(stored[0, 31:34]) == (422, 319, 361) and plain.PixelRepresentation == 1  # signed 16-bit
    assert "RescaleSlope" not in plain and (plain.WindowCenter, plain.WindowWidth) == (600, 1600)
    expected = _linear_window(stored.astype(float), 600, 1600)
    np.testing.assert_array_equal(_decoded(_testdata("MR_small.dcm"))[0], expected)
    path = _testdata(name)
    assert dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == MR_SMALL_ENCODINGS[name]
    pixels, how = _decoded(path)
    np.testing.assert_array_equal(pixels, expected)
    assert how == "DICOM MONOCHROME2, window centre/width"


def test_jpeg_extended_12_bit_decodes_through_libjpeg() -> None:
    path = _testdata("JPGExtended.dcm")
    ds = dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEGExtended12Bit and ds.BitsStored == 12
    stored = pixel_array(ds, decoding_plugin="pylibjpeg")  # Pillow refuses 12-bit JPEG
    assert (stored[420, 140], stored[230, 120]) == (244, 95)  # pydicom's reference values
    pixels, how = _decoded(path)
    assert how == "DICOM MONOCHROME2, percentile window"  # the file declares no VOI
    np.testing.assert_array_equal(pixels, _percentile(stored.astype(float)))
    assert load_image(path, 64).shape == (64, 64)


@pytest.mark.parametrize(("name", "column"), [
    ("JPEGLSNearLossless_16.dcm", [65535, 32765, 16385, 4095, 1025, 255, 65, 15, 5]),
    ("JPEGLSNearLossless_08.dcm", None),
])
def test_jpeg_ls_near_lossless_decodes_through_libjpeg(name: str, column: list[int] | None) -> None:
    path = _testdata(name)
    ds = dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEGLSNearLossless
    stored = pixel_array(ds, decoding_plugin="pylibjpeg")
    if column is not None:
        assert stored[0:45:5, 0].tolist() == column  # pydicom's reference values
    pixels, how = _decoded(path)
    assert how == "DICOM MONOCHROME2, percentile window"
    np.testing.assert_array_equal(pixels, _percentile(stored.astype(float)))


@pytest.mark.skipif(importlib.util.find_spec("gdcm") is not None,
                    reason="python-gdcm is installed here, and it decodes the file")
def test_a_jpeg_stream_libjpeg_rejects_is_refused_naming_gdcm() -> None:
    """JPEG-lossy.dcm: a 12-bit JPEG whose scan header libjpeg rejects ("scan stop must be 63";
    pydicom's JPGExtended.dcm is its fixed version); pydicom's GDCM plugin decodes it."""
    path = _testdata("JPEG-lossy.dcm")
    reason = (r"transfer syntax JPEG Extended \(Process 2 and 4\) \(1\.2\.840\.10008\.1\.2\.4\.51\): the installed "
              r"pixel-data decoders \(.*pylibjpeg.*\) cannot decode it \(.*pylibjpeg: libjpeg error code '-1038'.*"
              r"scan stop must be 63.*\); another of pydicom's decoders may: pip install python-gdcm")
    with pytest.raises(DataError, match=f"^{path}: {reason}"):
        load_image(path)
    bad = scan_images([str(path)]).bad
    assert bad["path"].tolist() == [str(path)]
    assert bad["reason"].str.fullmatch(reason).all()
