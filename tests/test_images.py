"""Image decoding of every format (issue 12): 8- and 16-bit PNG, DICOM MONOCHROME1/2 with and
without rescale, with a VOI LUT, a window or neither (the percentile window), compressed transfer
syntaxes; colour, palette and alpha rasters converted to grey and saying so; the refusals, each
naming the file; the policy's options, checked like every parameter, and its place in the uint8
cache's key. JPEG with an EXIF orientation: ``test_bad_inputs.py``.

Expected values are computed here from the DICOM standard's formulas (PS3.3 C.11.1, C.11.2), not
with the functions under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG2MPML,
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

import cxrkit.data.images.dicom as dicom_module
from cxrkit.data.datasets import DataError, check_dataset_options
from cxrkit.data.images import ImagePolicy, decode, load_image, scan_images
from cxrkit.data.pipeline import UInt8Cache
from cxrkit.training.config import TrainConfig
from cxrkit.utils.params import ConfigError, from_dict

RNG = np.random.default_rng(12)
STORED = (RNG.random((40, 36)) * 3000 + 500).astype(np.uint16)  # 12-bit values 500..3499 (JPEG 2000: >= 32 a side)


def _dicom(path: Path, stored: np.ndarray = STORED, photometric: str = "MONOCHROME2", bits: int = 12,
           rescale: tuple[str, str] | None = None, window: tuple[str, str] | None = None,
           lut: tuple[int, list[int]] | None = None, tsyntax: str = ExplicitVRLittleEndian) -> Path:
    """A CR image file with the given pixel data, rescale, window or VOI LUT and transfer syntax."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ComputedRadiographyImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "CR"
    ds.set_pixel_data(stored, photometric, bits, generate_instance_uid=False)
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if lut:
        item = Dataset()
        item.LUTDescriptor = [len(lut[1]), lut[0], 16]
        item.add_new("LUTData", "US", lut[1])
        ds.VOILUTSequence = [item]
    if tsyntax != ExplicitVRLittleEndian:
        ds.compress(tsyntax, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


def _linear_window(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR) onto 0..255, rounded."""
    y = np.clip((x - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    return np.rint(y * 255).astype(np.uint8)


def _percentile(x: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    lo, hi = np.percentile(x, [low, high])
    return np.rint(np.clip((x - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _pixels(path: Path, policy: ImagePolicy | None = None) -> tuple[np.ndarray, str]:
    decoded = decode(path, policy)
    return np.asarray(decoded.image), decoded.how


# ----------------------------------------------------------------------------- PNG


def test_8_bit_png_is_kept_and_16_bit_png_maps_its_full_range(tmp_path: Path) -> None:
    v = (RNG.random((16, 12)) * 255).astype(np.uint8)
    Image.fromarray(v).save(tmp_path / "a8.png")
    Image.fromarray(v.astype(np.uint16) * 257).save(tmp_path / "a16.png")
    assert _pixels(tmp_path / "a8.png") == (pytest.approx(v), "PNG 8-bit")
    pixels, how = _pixels(tmp_path / "a16.png")
    np.testing.assert_array_equal(pixels, v)  # 257 v -> v exactly
    assert how == "PNG 16-bit, full range"
    wide = (RNG.random((16, 12)) * 60000 + 2000).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "w16.png")
    np.testing.assert_array_equal(_pixels(tmp_path / "w16.png")[0], np.rint(wide / 65535 * 255).astype(np.uint8))
    pixels, how = _pixels(tmp_path / "w16.png", ImagePolicy(png16="percentile", percentiles=(1, 99)))
    np.testing.assert_array_equal(pixels, _percentile(wide.astype(float), 1, 99))
    assert how == "PNG 16-bit, percentile window"


def test_16_bit_png_is_turned_upright_by_its_exif_orientation(tmp_path: Path) -> None:
    upright = np.zeros((8, 12), np.uint16)
    upright[:2, :3] = 65535
    upright[4:, 4:] = 30000
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: decoding turns it 90 degrees clockwise
    Image.fromarray(np.rot90(upright, k=1).copy()).save(tmp_path / "t.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "t.png"), np.rint(upright / 257).astype(np.uint8))
    assert scan_images([str(tmp_path / "t.png")]).reoriented["exif_orientation"].tolist() == [6]



def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, L = 0.299 R + 0.587 G + 0.114 B, in Pillow's documented fixed point."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def test_colour_palette_and_alpha_rasters_are_converted_to_grey_and_say_so(tmp_path: Path) -> None:
    rgb = (RNG.random((16, 12, 3)) * 255).astype(np.uint8)
    alpha = (RNG.random((16, 12)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([rgb[..., 0], alpha])).save(tmp_path / "la.png")
    palette = Image.fromarray((rgb[..., 0] % 4).astype(np.uint8), mode="P")
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    palette.putpalette(colours.ravel().tolist())
    palette.save(tmp_path / "p.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    Image.fromarray(rgb[..., 1]).save(tmp_path / "l.png")
    Image.fromarray(rgb[..., 2] > 127).save(tmp_path / "bw.png")
    expected = {
        "rgb.png": (_luma(rgb), "PNG 8-bit, colour (RGB) converted to grey"),
        "rgba.png": (_luma(rgb), "PNG 8-bit, colour with alpha (RGBA, alpha ignored) converted to grey"),
        "la.png": (rgb[..., 0], "PNG 8-bit, grey with alpha (LA, alpha ignored) converted to grey"),
        "p.png": (_luma(colours[rgb[..., 0] % 4]), "PNG 8-bit, palette (P) converted to grey"),
        "l.png": (rgb[..., 1], "PNG 8-bit"),
        "bw.png": (np.where(rgb[..., 2] > 127, 255, 0).astype(np.uint8), "PNG 1-bit, black and white as 0 and 255"),
    }
    for name, (pixels, how) in expected.items():
        got, got_how = _pixels(tmp_path / name)
        np.testing.assert_array_equal(got, pixels, err_msg=name)
        assert got_how == how
    jpeg = "JPEG 8-bit, colour (RGB) converted to grey"
    assert decode(tmp_path / "rgb.jpg").how == decode(tmp_path / "rgb.jpg", draft=4).how == jpeg  # drafted grey too
    assert np.abs(_pixels(tmp_path / "rgb.jpg")[0].astype(int) - _luma(rgb)).mean() < 3  # lossy
    paths = [str(tmp_path / n) for n in (*expected, "rgb.jpg")]
    scan = scan_images(paths)
    assert scan.bad.empty and len(scan.decoded) == 7
    assert scan.converted["path"].tolist() == [str(tmp_path / n) for n in ("rgb.png", "rgba.png", "la.png", "p.png",
                                                                           "rgb.jpg")]
    assert scan.converted["decoding"].tolist()[-1] == jpeg


# ----------------------------------------------------------------------------- DICOM


def test_dicom_window_with_and_without_rescale(tmp_path: Path) -> None:
    plain = _dicom(tmp_path / "plain.dcm", window=("2000", "2500"))
    pixels, how = _pixels(plain)
    np.testing.assert_array_equal(pixels, _linear_window(STORED.astype(float), 2000, 2500))
    assert how == "DICOM MONOCHROME2, window centre/width"
    mono1 = _dicom(tmp_path / "m1.dcm", photometric="MONOCHROME1", rescale=("0.5", "-100"), window=("900", "1201"))
    pixels, how = _pixels(mono1)
    np.testing.assert_array_equal(pixels, 255 - _linear_window(STORED * 0.5 - 100, 900, 1201))
    assert how == "DICOM MONOCHROME1, window centre/width"


def test_dicom_voi_lut_sequence(tmp_path: Path) -> None:
    lut = [min(4095, max(0, 2 * (i - 1000))) for i in range(4096)]  # a ramp with a clipped foot and head
    path = _dicom(tmp_path / "lut.dcm", rescale=("1", "0"), lut=(0, lut), window=("1", "1"))  # the LUT wins
    pixels, how = _pixels(path)
    np.testing.assert_array_equal(pixels, np.rint(np.array(lut)[STORED] / 4095 * 255).astype(np.uint8))
    assert how == "DICOM MONOCHROME2, VOI LUT"


def test_dicom_without_voi_gets_the_percentile_window_and_the_policy_can_force_it(tmp_path: Path) -> None:
    bare = _dicom(tmp_path / "bare.dcm", photometric="MONOCHROME1", rescale=("2", "-1024"))
    pixels, how = _pixels(bare)
    np.testing.assert_array_equal(pixels, 255 - _percentile(STORED * 2.0 - 1024))
    assert how == "DICOM MONOCHROME1, percentile window"
    windowed = _dicom(tmp_path / "w.dcm", window=("2000", "2500"))
    pixels, how = _pixels(windowed, ImagePolicy(dicom_window="percentile", percentiles=(2, 98)))
    np.testing.assert_array_equal(pixels, _percentile(STORED.astype(float), 2, 98))
    assert how == "DICOM MONOCHROME2, percentile window"


@pytest.mark.parametrize("tsyntax", [RLELossless, JPEG2000Lossless])
def test_compressed_transfer_syntaxes_decode_to_the_same_pixels(tmp_path: Path, tsyntax: str) -> None:
    reference = _pixels(_dicom(tmp_path / "raw.dcm", rescale=("0.5", "-100"), window=("900", "1201")))[0]
    compressed = _dicom(tmp_path / "c.dcm", rescale=("0.5", "-100"), window=("900", "1201"), tsyntax=tsyntax)
    np.testing.assert_array_equal(_pixels(compressed)[0], reference)
    assert load_image(compressed, 8).shape == (8, 8)


def test_a_dicom_is_recognised_by_its_marker_whatever_its_name(tmp_path: Path) -> None:
    named = _dicom(tmp_path / "IM000001", window=("2000", "2500"))
    assert _pixels(named)[1] == "DICOM MONOCHROME2, window centre/width"


# ----------------------------------------------------------------------------- refusals


def _refused(tmp_path: Path) -> dict[str, Path]:
    """One file per refusal."""
    files = {}
    ds = _dicom(tmp_path / "report.dcm")
    from pydicom import dcmread

    report = dcmread(ds)
    del report.PixelData
    report.save_as(ds)
    files["DICOM without (7FE0,0010) Pixel Data"] = ds
    files["multi-frame DICOM (2 frames)"] = _dicom(tmp_path / "frames.dcm", np.stack([STORED, STORED]))
    files["colour DICOM (photometric interpretation RGB"] = _dicom(
        tmp_path / "rgb.dcm", np.zeros((8, 8, 3), np.uint8), photometric="RGB", bits=8)
    unknown = dcmread(_dicom(tmp_path / "nophotometric.dcm"))
    del unknown.PhotometricInterpretation
    unknown.save_as(tmp_path / "nophotometric.dcm")
    files["no photometric interpretation (0028,0004): whether 0 is black"] = tmp_path / "nophotometric.dcm"
    mpeg = dcmread(_dicom(tmp_path / "mpeg.dcm"))
    mpeg.file_meta.TransferSyntaxUID = MPEG2MPML
    mpeg.PixelData = encapsulate([b"\0" * 16])
    mpeg["PixelData"].VR = "OB"
    mpeg.save_as(tmp_path / "mpeg.dcm", enforce_file_format=True)
    files["transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100) has no pixel-data decoder"] = (
        tmp_path / "mpeg.dcm")
    files["every stored pixel of the DICOM image has the value 700"] = _dicom(
        tmp_path / "flat.dcm", np.full((8, 8), 700, np.uint16), window=("700", "100"))
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "flat16.png")
    files["every pixel of the 16-bit image has the value 4000"] = tmp_path / "flat16.png"
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 60).save(tmp_path / "narrow16.png")
    files["spans only 0..3780 of 0..65535, 16 grey levels under image_policy png16: full"] = tmp_path / "narrow16.png"
    mostly = np.full((20, 20), 1000, np.uint16)
    mostly[0, :2] = (0, 4000)
    files["the percentile window 0.5-99.5 % is empty (both at 1000"] = _dicom(tmp_path / "mostly.dcm", mostly)
    return files


def test_each_refusal_names_the_file_and_the_scan_lists_the_reason(tmp_path: Path) -> None:
    files = _refused(tmp_path)
    scan = scan_images([str(p) for p in files.values()], workers=2)
    reasons = dict(zip(scan.bad["path"], scan.bad["reason"], strict=True))
    assert len(reasons) == len(files) and scan.decoded.empty
    for reason, path in files.items():
        assert reason in reasons[str(path)], (path, reasons[str(path)])
        with pytest.raises(DataError) as err:
            load_image(path)
        assert str(err.value).startswith(f"{path}: ") and reason in str(err.value)


def test_a_transfer_syntax_without_its_installed_decoder_names_the_packages(tmp_path: Path, monkeypatch) -> None:
    path = _dicom(tmp_path / "j2k.dcm", tsyntax=JPEG2000Lossless)
    missing = SimpleNamespace(is_available=False, missing_dependencies=["pylibjpeg - requires pylibjpeg-openjpeg"])
    monkeypatch.setattr(dicom_module, "get_decoder", lambda uid: missing)
    with pytest.raises(DataError, match=r"j2k\.dcm: transfer syntax JPEG 2000 Image Compression \(Lossless Only\) "
                                        r".* needs a pixel-data decoder that is not installed: pip install "
                                        r"pylibjpeg pylibjpeg-openjpeg"):
        load_image(path)


# ----------------------------------------------------------------------------- the policy


def test_policy_defaults_partial_mappings_and_errors_naming_the_key() -> None:
    assert ImagePolicy.parse(None) == ImagePolicy() == ImagePolicy.parse(TrainConfig().image_policy)
    assert ImagePolicy.parse({"png16": "percentile"}) == ImagePolicy(png16="percentile")
    assert ImagePolicy.parse({"percentiles": [1, 99]}).as_dict()["percentiles"] == [1.0, 99.0]
    bad = {"dicom_windw": "header"}
    with pytest.raises(ConfigError, match=r"image_policy\.dicom_windw: unknown key \(did you mean 'dicom_window'\?\)"):
        ImagePolicy.parse(bad)
    with pytest.raises(ConfigError, match=r"image_policy\.png16: 'linear' is not one of \('full', 'percentile'\)"):
        ImagePolicy.parse({"png16": "linear"})
    for value in ([99, 1], [0, 101], [5], "1,99"):
        with pytest.raises(ConfigError, match=r"image_policy\.percentiles: need \[low, high\]"):
            ImagePolicy.parse({"percentiles": value})
    with pytest.raises(ConfigError, match=r"x\.yaml: image_policy\.dicom_window: 'voi' is not one of"):
        from_dict(TrainConfig, {"image_policy": {"dicom_window": "voi"}}, source="x.yaml")
    with pytest.raises(ConfigError, match=r"dataset_options\.image_policy: set by 'image_policy'"):
        check_dataset_options("gxs", {"image_policy": {}})


def test_the_policy_is_part_of_the_cache_key_and_recorded_beside_it(tmp_path: Path) -> None:
    paths = [str(_dicom(tmp_path / f"{i}.dcm", STORED + i, window=("2000", "2500"))) for i in range(3)]
    header = UInt8Cache(paths, 16, tmp_path / "cache")
    assert UInt8Cache(paths, 16, tmp_path / "cache", policy=ImagePolicy()).file == header.file
    forced = UInt8Cache(paths, 16, tmp_path / "cache", policy=ImagePolicy(dicom_window="percentile"))
    assert forced.file != header.file and not np.array_equal(forced.array, header.array)
    np.testing.assert_array_equal(forced[1], load_image(paths[1], 16, ImagePolicy(dicom_window="percentile")))
    sidecar = json.loads(forced.file.with_suffix(".json").read_text())
    assert sidecar["image_policy"] == {"dicom_window": "percentile", "percentiles": [0.5, 99.5], "png16": "full"}
