"""Tests of the phantom's regions sidecar (cxrkit.phantom.regions, ``regions.csv``): each box holds
what the renderer's own output shows of its finding, scales with the image, moves with a site's
crop, is the same in every format, one row per drawn finding; a phantom without it is refused
with the way to regenerate it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrkit.data.tables import DataError
from cxrkit.phantom.generate import generate
from cxrkit.phantom.model import DRAWABLE, PhantomConfig
from cxrkit.phantom.regions import FRACTION, REGION_COLUMNS, REGIONS, finding_regions, read_regions
from cxrkit.phantom.render import FINDINGS, render
from cxrkit.phantom.scanner import DEFAULT_SCANNER, Scanner
from cxrkit.phantom.site import SITE_B

HABITUS = {"width": 1.0, "height": 1.0, "rotation": 0.0, "brightness": 1.0}


def _box(finding: str, size: int, seed: int, scanner: Scanner = DEFAULT_SCANNER, others: dict | None = None) -> tuple:
    rows = finding_regions("x.png", size, {finding: 0.8, **(others or {})}, HABITUS, False, seed, scanner)
    return next(r for r in rows if r[1] == finding)


@pytest.mark.parametrize("finding", FINDINGS)
def test_what_the_rendered_image_shows_of_a_finding_lies_in_its_box(finding: str) -> None:
    """The saved image with the finding minus the same image without it (the same seed: the same
    background, film and noise): every pixel that differs by more than the threshold (FRACTION of
    the peak, plus one grey level of rounding) is inside the box, and the box's edge rows and
    columns each hold a pixel near the threshold (the box is tight)."""
    size, seed = 64, 11
    _, _, x0, y0, x1, y1, pixels, peak = _box(finding, size, seed)
    with_it = render(size, {finding: 0.8}, HABITUS, False, np.random.default_rng(seed)).astype(int)
    without = render(size, {}, HABITUS, False, np.random.default_rng(seed)).astype(int)
    diff = np.abs(with_it - without)
    outside = np.ones_like(diff, bool)
    outside[y0:y1, x0:x1] = False
    assert diff.max() > FRACTION * peak + 1  # the finding shows
    assert diff[outside].max() <= FRACTION * peak + 1
    near = diff >= FRACTION * peak - 1
    assert near[y0, x0:x1].any() and near[y1 - 1, x0:x1].any() and near[y0:y1, x0].any() and near[y0:y1, x1 - 1].any()
    assert 0 < pixels <= (x1 - x0) * (y1 - y0)


def test_a_small_finding_has_a_small_box_and_the_others_do_not_move_it() -> None:
    alone = _box("Lung Lesion", 128, 5)
    assert (alone[4] - alone[2]) * (alone[5] - alone[3]) < 0.02 * 128 * 128
    crowded = _box("Lung Lesion", 128, 5, others={"Edema": 0.9, "Support Devices": 0.7, "Cardiomegaly": 0.6})
    assert abs(np.array(crowded[2:6]) - np.array(alone[2:6])).max() <= 1  # others overlap it, it stays put


@pytest.mark.parametrize("finding", ["Lung Lesion", "Pleural Effusion", "Cardiomegaly", "Pneumothorax", "Fracture"])
def test_boxes_scale_with_the_image_size(finding: str) -> None:
    small, large = _box(finding, 64, 3), _box(finding, 128, 3)
    assert np.abs(np.array(large[2:6]) - 2 * np.array(small[2:6])).max() <= 3


@pytest.mark.parametrize("finding", ["Atelectasis", "Consolidation", "Enlarged Cardiomediastinum", "Support Devices"])
def test_a_crop_shifts_the_box_by_its_margin(finding: str) -> None:
    """A scanner keeping 90% of the field renders the whole field at round(60 / 0.9) = 67 px and
    keeps its centre 60 px (top = 3): the box is the uncropped box at 67 px, shifted by -3 and clipped."""
    cropped = Scanner(crop=0.9)
    full = _box(finding, 67, 7)
    got = _box(finding, 60, 7, cropped)
    x0, y0, x1, y1 = (np.array(full[2:6]) - 3).clip(0, 60)
    assert got[2:6] == (x0, y0, x1, y1)


def test_regions_csv_one_row_per_drawn_finding_in_every_format_and_site(tmp_path: Path) -> None:
    kw = {"n_patients": 14, "size": 40, "seed": 4, "workers": 2, "progress": False}
    generate(tmp_path / "png", **kw)
    generate(tmp_path / "dicom", image_format="dicom", **kw)
    generate(tmp_path / "b", config=PhantomConfig(site=SITE_B), **kw)
    png = pd.read_csv(tmp_path / "png" / REGIONS)
    dicom = pd.read_csv(tmp_path / "dicom" / REGIONS)
    assert list(png.columns) == list(REGION_COLUMNS)
    assert dicom["Image_name"].str.endswith(".dcm").all()
    pd.testing.assert_frame_equal(dicom.assign(Image_name=dicom["Image_name"].str.replace(".dcm", ".png")), png)
    for name in ("png", "b"):
        truth = pd.read_csv(tmp_path / name / "truth.csv")
        regions = pd.read_csv(tmp_path / name / REGIONS)
        drawn = {(img, lab) for lab in DRAWABLE for img in truth.loc[truth[f"drawn_{lab}"] == 1, "Image_name"]}
        assert set(zip(regions["Image_name"], regions["finding"])) == drawn and len(regions) == len(drawn)
        assert (regions[["x0", "y0"]] >= 0).all().all() and (regions[["x1", "y1"]] <= 40).all().all()
        assert (regions["x1"] > regions["x0"]).all() and (regions["y1"] > regions["y0"]).all()
    boxes = read_regions(tmp_path / "png")
    assert list(boxes.columns[:7]) == ["image", "label", "x0", "y0", "x1", "y1", "source"]
    assert len(boxes) == len(png) and set(boxes["source"]) == {"phantom"}


def test_a_phantom_without_regions_says_how_to_get_them(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("Image_name\n")
    with pytest.raises(DataError, match=r"no regions\.csv.*regenerate it with `cxrkit synth`"):
        read_regions(tmp_path)


def test_regions_keep_image_names_as_text_and_refuse_a_repeated_finding(tmp_path: Path) -> None:
    header = ",".join(REGION_COLUMNS)
    row = {"Image_name": "000700", "finding": "Edema", "x0": 1, "y0": 2, "x1": 30, "y1": 40, "pixels": 50, "peak": 0.5}
    line = ",".join(str(row[c]) for c in REGION_COLUMNS)
    na_line = line.replace("000700", "NA")
    (tmp_path / REGIONS).write_text(f"{header}\n{line}\n{na_line}\n")
    assert read_regions(tmp_path)["image"].tolist() == ["000700", "NA"]
    (tmp_path / REGIONS).write_text(f"{header}\n{line}\n{na_line}\n{line}\n")
    with pytest.raises(DataError, match=r"regions\.csv.*'000700 / Edema' on lines 2 and 4"):
        read_regions(tmp_path)
