"""Tests of saliency that can be checked: the pointing game and the energy share on hand-computed
maps and boxes (cxrkit.evaluation.saliency), boxes scaled to the map (cxrkit.data.boxes), Grad-CAM
of a tiny timm CNN through its refiner (cxrkit.models.saliency), and the study's scores and tables
on hand-made maps (cxrkit.study.saliency)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cxrkit.data.boxes import BOX_COLUMNS, REF_COLUMNS, box_table, empty_boxes, scale_boxes
from cxrkit.data.datasets.box_lists import nih_boxes, vindr_boxes
from cxrkit.data.datasets.vindr import VINDR_FINDINGS
from cxrkit.data.tables import DataError
from cxrkit.evaluation.saliency import (
    centre_hit,
    default_tolerance,
    distance_to_region,
    energy_share,
    map_peak,
    pointing_hit,
    region_mask,
    region_share,
)
from cxrkit.models import create_model
from cxrkit.models.saliency import (
    check_cnn_layer,
    grad_cam,
    peak_scaled,
    raw_grad_cam,
    target_layer,
    upsample_cams,
)
from cxrkit.study.saliency import (
    CENTRE,
    UNIFORM,
    Saliency,
    VariantMaps,
    reference_sizes,
    saliency_tables,
    score_maps,
)


# --- the metrics on hand-computed maps ----------------------------------------------------------------
def test_region_mask_takes_the_pixels_whose_centre_is_in_a_box() -> None:
    mask = region_mask(np.array([[2, 1, 5, 3]]), (6, 8))  # columns 2..4, rows 1..2
    assert mask.sum() == 6 and mask[1:3, 2:5].all()
    # a box with fractional edges: pixel centres 1.5 and 2.5 (columns 1, 2), 0.5 and 1.5 (rows 0, 1) are on its edges
    mask = region_mask(np.array([1.5, 0.5, 2.5, 1.5]), (4, 4))
    assert sorted(zip(*np.nonzero(mask))) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    union = region_mask(np.array([[0, 0, 2, 2], [1, 1, 3, 3]]), (4, 4))  # overlapping boxes: one region
    assert union.sum() == 4 + 4 - 1


def test_pointing_game_distance_and_tolerance() -> None:
    smap = np.zeros((8, 8))
    smap[4, 6] = 1.0  # its centre is (6.5, 4.5)
    box = np.array([0, 0, 4, 4])
    d = math.sqrt(2.5**2 + 0.5**2)  # to the box's corner (4, 4)
    assert distance_to_region(6.5, 4.5, box) == pytest.approx(d)
    assert not pointing_hit(smap, box, tolerance=2.5) and pointing_hit(smap, box, tolerance=2.55)
    assert pointing_hit(smap, np.array([6, 4, 7, 5]))  # inside, no tolerance needed
    assert pointing_hit(smap, np.array([[0, 0, 1, 1], [6, 4, 7, 5]]))  # inside one of two boxes
    assert not pointing_hit(np.full((8, 8), 0.3), np.array([0, 0, 8, 8]))  # a flat map points nowhere


def test_a_plateau_is_pointed_at_in_its_middle() -> None:
    smap = np.zeros((6, 6))
    smap[0:2, 0:4] = 1.0  # mean position (0.5, 1.5): four pixels equally near; the first is (0, 1)
    assert map_peak(smap) == (0, 1)
    smap[4, 5] = 0.999
    assert map_peak(smap) == (0, 1)
    assert map_peak(np.eye(3)) == (1, 1)  # the diagonal's middle, not its first pixel


def test_energy_share_and_the_uniform_map() -> None:
    smap = np.zeros((4, 4))
    smap[0, 0], smap[3, 3] = 3.0, 1.0
    box = np.array([0, 0, 2, 2])
    assert energy_share(smap, box) == pytest.approx(0.75)
    assert region_share((4, 4), box) == pytest.approx(4 / 16)
    assert energy_share(np.zeros((4, 4)), box) == pytest.approx(0.25)  # flat: a uniform map
    assert energy_share(smap, np.array([[0, 0, 1, 1], [0, 0, 2, 2]])) == pytest.approx(0.75)  # counted once
    with pytest.raises(ValueError, match="non-negative"):
        energy_share(-smap, box)


def test_centre_baseline_and_default_tolerance() -> None:
    assert centre_hit((10, 10), np.array([4, 4, 6, 6]))
    assert not centre_hit((10, 10), np.array([0, 0, 2, 2]), tolerance=4.0)  # sqrt(18) = 4.243 away
    assert centre_hit((10, 10), np.array([0, 0, 2, 2]), tolerance=4.25)
    assert [default_tolerance(s) for s in (48, 64, 128, 224)] == [3.0, 4.0, 8.0, 14.0]


# --- box tables ---------------------------------------------------------------------------------------
def test_boxes_scale_to_the_map_per_axis() -> None:
    boxes = box_table(pd.DataFrame([["a", "Nodule", 10, 20, 30, 40, "nih"], ["b", "Mass", 0, 0, 5, 5, "nih"]],
                                   columns=list(BOX_COLUMNS)))
    scaled = scale_boxes(boxes, {"a": (100, 200)}, 50)  # x * 0.5, y * 0.25; b has no size: left out
    assert scaled[["x0", "y0", "x1", "y1"]].to_numpy().tolist() == [[5.0, 5.0, 15.0, 10.0]]
    assert list(empty_boxes().columns) == list(BOX_COLUMNS)


@pytest.mark.parametrize("corners", [(5, 0, 5, 1), (0, 3, 1, 2), (0, 0, float("nan"), 1)])
def test_box_table_refuses_empty_or_inverted_boxes(corners) -> None:
    with pytest.raises(DataError, match="x0 < x1, y0 < y1"):
        box_table(pd.DataFrame([["a", "Nodule", *corners, "nih"]], columns=list(BOX_COLUMNS)), where="list")


# --- Grad-CAM on a tiny timm CNN ------------------------------------------------------------------------
def _tiny(refiner: str = "sparse") -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("test_resnet", 3, refiner=refiner).eval()


def test_grad_cam_maps_have_the_input_shape_and_range() -> None:
    model = _tiny()
    name, layer = target_layer(model)
    assert name == "backbone.layer4" and layer is model.backbone.layer4
    assert check_cnn_layer(model, layer, 64) == (1, 96, 2, 2)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    maps = grad_cam(model, x, label=2)
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0 + 1e-6
    assert np.array_equal(maps, grad_cam(model, x, label=2))  # deterministic
    assert target_layer(model, stage=2)[0] == "backbone.layer2"


def test_grad_cam_explains_the_refined_logit() -> None:
    """Label 0's raw logit is constant (its classifier row is zero): without couplings its map is
    flat (no gradient); with a coupling from label 1 its refined logit depends on the image through
    label 1, and so does its map."""
    model = _tiny()
    fc = model.backbone.get_classifier()
    with torch.no_grad():
        fc.weight[0].zero_()
        fc.bias[0] = 0.0
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert np.ptp(grad_cam(model, x, label=0)) == 0.0
    with torch.no_grad():
        model.refiner.A[1, 0] = 4.0
    coupled = grad_cam(model, x, label=0)
    assert all(np.ptp(m) > 0 for m in coupled)


def test_a_transformer_layer_is_refused() -> None:
    model = create_model("test_vit", 3, refiner="none").eval()
    name, layer = target_layer(model)
    assert name.startswith("backbone.blocks.")
    with pytest.raises(ValueError, match=r"CNN layer with a \(B, C, H, W\) output"):
        check_cnn_layer(model, layer, model.data_config["input_size"][-1])


# --- the study's scores on hand-made maps -------------------------------------------------------------
def _hand_made() -> Saliency:
    """Two items on 8 x 8 maps of stored 16 x 16 images (boxes halve): variant ``a`` points into
    the first item's region and outside the second's, ``b`` is flat on the first."""
    items = pd.DataFrame({"image": ["i1", "i2"], "label": ["Nodule", "Mass"], "path": ["", ""]})
    boxes = box_table(pd.DataFrame([["i1", "Nodule", 0, 0, 4, 4, "x"], ["i2", "Mass", 8, 8, 16, 16, "x"]],
                                   columns=list(BOX_COLUMNS)))
    a, b = np.zeros((2, 8, 8), np.float32), np.zeros((2, 8, 8), np.float32)
    a[0, 1, 1], a[1, 0, 0] = 1.0, 1.0  # inside (0, 0, 2, 2); far from (4, 4, 8, 8)
    a[1, 7, 7] = 0.5  # in item 2's region: a third of its map's total, 1.5
    b[1, 5, 5] = 1.0
    images = np.zeros((2, 8, 8), np.uint8)
    maps = {"a": VariantMaps(8, images, a, "layer"), "b": VariantMaps(8, images, b, "layer")}
    return Saliency(items, boxes, "hand", maps)


def test_scores_and_tables_on_hand_made_maps() -> None:
    sal = _hand_made()
    sizes = {"i1": (16, 16), "i2": (16, 16)}
    sal.scores, sal.tolerance = score_maps(sal.items, sal.boxes, sizes, sal.maps, tolerance=0.0)
    s = sal.scores.set_index(["variant", "image"])
    assert list(dict.fromkeys(sal.scores["variant"])) == ["a", "b", CENTRE, UNIFORM]
    assert s.loc[("a", "i1"), "hit"] == 1.0 and s.loc[("a", "i2"), "hit"] == 0.0
    assert s.loc[("a", "i1"), "energy"] == pytest.approx(1.0) and s.loc[("a", "i2"), "energy"] == pytest.approx(0.5 / 1.5)
    assert s.loc[("b", "i1"), "flat"] and s.loc[("b", "i1"), "hit"] == 0.0 and s.loc[("b", "i1"), "energy"] == 0.0625
    assert s.loc[("b", "i2"), "hit"] == 1.0
    assert s.loc[(CENTRE, "i1"), "hit"] == 0.0 and s.loc[(CENTRE, "i2"), "hit"] == 1.0  # centre (4, 4) is i2's corner
    assert s.loc[(UNIFORM, "i2"), "energy"] == pytest.approx(16 / 64)
    tabs = saliency_tables(sal)
    pg = tabs["pointing_game"]
    assert list(pg.columns) == ["images", "a", "b", CENTRE] and list(pg.index) == ["Nodule", "Mass"]
    assert pg.loc["Nodule"].tolist() == [1, 1.0, 0.0, 0.0] and pg.loc["Mass"].tolist() == [1, 0.0, 1.0, 1.0]
    assert list(tabs["energy_share"].columns) == ["images", "a", "b", UNIFORM]
    summary = tabs["summary"]
    assert summary.loc["a", "pointing game"] == 0.5 and summary.loc["b", "pointing game"] == 0.5
    assert summary.loc["a", "energy share"] == pytest.approx((1.0 + 1 / 3) / 2)
    assert summary.loc["b", "flat maps"] == 1 and summary.loc["a", "flat maps"] == 0
    assert sal.tolerance == {"a": 0.0, "b": 0.0}
    default, tol = score_maps(sal.items, sal.boxes, sizes, sal.maps)
    assert tol == {"a": default_tolerance(8), "b": default_tolerance(8)} == {"a": 0.0, "b": 0.0}


def test_vindr_official_annotations_give_one_box_per_reader(tmp_path) -> None:
    """The official release: labels in image_labels_*.csv, boxes in annotations_*.csv (the test
    file's consensus rows without a reader); classes without a kit label and No finding are left out."""
    from cxrkit.data.datasets.vindr import VinDrCXR

    root = tmp_path / "vindr" / "annotations"
    root.mkdir(parents=True)
    names = ["Cardiomegaly", "Nodule/Mass", "Aortic enlargement", "No finding"]
    pd.DataFrame([["i1", "R1", 1, 1, 1, 0], ["i1", "R2", 1, 0, 0, 0], ["i1", "R3", 0, 0, 0, 1]],
                 columns=["image_id", "rad_id", *names]).to_csv(root / "image_labels_train.csv", index=False)
    pd.DataFrame([["t1", 0, 1, 0, 0]], columns=["image_id", *names]).to_csv(root / "image_labels_test.csv", index=False)
    cols = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
    pd.DataFrame([["i1", "R1", "Cardiomegaly", 10, 20, 110, 90], ["i1", "R1", "Nodule/Mass", 5, 5, 9, 9],
                  ["i1", "R1", "Aortic enlargement", 1, 1, 2, 2], ["i1", "R2", "Cardiomegaly", 12, 18, 100, 95],
                  ["i1", "R3", "No finding", None, None, None, None]], columns=cols).to_csv(
        root / "annotations_train.csv", index=False)
    pd.DataFrame([["t1", "Nodule/Mass", 30, 40, 50, 60]], columns=[c for c in cols if c != "rad_id"]).to_csv(
        root / "annotations_test.csv", index=False)
    boxes = VinDrCXR(tmp_path / "vindr", check_images=False).boxes()
    got = [tuple(r) for r in boxes[list(BOX_COLUMNS)].itertuples(index=False)]
    assert got == [("i1", "Cardiomegaly", 10.0, 20.0, 110.0, 90.0, "vindr R1"), ("i1", "Lung Lesion", 5.0, 5.0, 9.0, 9.0, "vindr R1"),
                   ("i1", "Cardiomegaly", 12.0, 18.0, 100.0, 95.0, "vindr R2"),
                   ("t1", "Lung Lesion", 30.0, 40.0, 50.0, 60.0, "vindr consensus")]


# --- the energy share on the un-normalised Grad-CAM -----------------------------------------------------
class _Pattern(torch.nn.Module):
    """A "layer" whose activation is the fixed 2 x 2 map [[3, 1], [1, 1]] (a floor of 1 everywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.pattern = torch.nn.Parameter(torch.tensor([[3.0, 1.0], [1.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pattern.expand(len(x), 1, 2, 2) + 0 * x[:, :1, ::2, ::2]


class _Mean(torch.nn.Module):
    """y = the spatial mean of the pattern: dy/dA = 1/4 everywhere, so Grad-CAM = A / 4."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = _Pattern()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).mean(dim=(2, 3))


def test_energy_share_is_computed_on_the_raw_cam_not_the_min_subtracted_one() -> None:
    """Resized bilinearly 2 -> 4 px, row/column weights of the first cell are w = (1, .75, .25, 0):
    raw map (1 + 2 w w^T) / 4. On the top-left quadrant its share is (4 + 2 * 1.75^2) / (16 + 2 * 2^2)
    = 10.125 / 24 = 0.421875; minus its minimum (pytorch-grad-cam's scaling) it would be
    1.75^2 / 2^2 = 0.765625."""
    model, x = _Mean().eval(), torch.zeros(1, 3, 4, 4)
    w = np.array([1.0, 0.75, 0.25, 0.0])
    raw = raw_grad_cam(model, x, 0, model.layer)
    np.testing.assert_allclose(raw[0], (1 + 2 * np.outer(w, w)) / 4, atol=1e-6)
    np.testing.assert_allclose(upsample_cams(np.array([[[3.0, 1.0], [1.0, 1.0]]]), (4, 4))[0], 1 + 2 * np.outer(w, w))
    box = np.array([0, 0, 2, 2])
    assert energy_share(raw[0], box) == pytest.approx(0.421875)
    assert energy_share(peak_scaled(raw)[0], box) == pytest.approx(0.421875) and peak_scaled(raw).max() == 1.0
    assert energy_share(grad_cam(model, x, 0, model.layer)[0], box) == pytest.approx(0.765625, abs=1e-5)
    assert map_peak(raw[0]) == map_peak(grad_cam(model, x, 0, model.layer)[0]) == (0, 0)  # the pointing game agrees
    assert not peak_scaled(np.zeros((1, 2, 2))).any()


# --- boxes scaled from their reference grid, not from a downsampled copy ---------------------------------
def _dicom(path, rows: int, cols: int):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ComputedRadiographyImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "CR"
    ds.set_pixel_data(np.zeros((rows, cols), np.uint16), "MONOCHROME2", 12, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_nih_boxes_on_a_downsampled_copy_scale_from_1024(tmp_path) -> None:
    from PIL import Image

    png = tmp_path / "00000001_000.png"  # NIH's 256 px copy of a 1024 x 1024 original
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(png)
    (tmp_path / "bbox.csv").write_text("Image Index,Finding Label,x,y,w,h\n00000001_000.png,Nodule,512,256,128,64\n")
    boxes = nih_boxes(tmp_path / "bbox.csv", {"00000001_000.png"}, ["Nodule"])
    assert list(boxes.columns) == [*BOX_COLUMNS, *REF_COLUMNS]
    items = pd.DataFrame({"image": ["00000001_000.png"], "label": ["Nodule"], "path": [str(png)]})
    sizes = reference_sizes(items, boxes)
    assert sizes == {"00000001_000.png": (1024.0, 1024.0)}
    scaled = scale_boxes(boxes, sizes, 64)  # x 64 / 1024 (the stored 256 px would give 4 times that: 128, 64, 160, 80)
    assert scaled[["x0", "y0", "x1", "y1"]].to_numpy().tolist() == [[32.0, 16.0, 40.0, 20.0]]


def test_vindr_boxes_take_the_dicom_size_and_a_png_copy_needs_it_given(tmp_path) -> None:
    line = "v1,Cardiomegaly,R1,100,200,300,400"
    (tmp_path / "train.csv").write_text(f"image_id,class_name,rad_id,x_min,y_min,x_max,y_max\n{line}\n")
    boxes = vindr_boxes([tmp_path / "train.csv"], VINDR_FINDINGS, {"v1"}, ["Cardiomegaly"])
    dcm = _dicom(tmp_path / "v1.dicom", rows=800, cols=400)
    items = pd.DataFrame({"image": ["v1"], "label": ["Cardiomegaly"], "path": [str(dcm)]})
    sizes = reference_sizes(items, boxes)
    assert sizes == {"v1": (400, 800)}  # Columns, Rows from the header
    assert scale_boxes(boxes, sizes, 100)[["x0", "y0", "x1", "y1"]].to_numpy().tolist() == [[25.0, 25.0, 75.0, 50.0]]
    from PIL import Image

    png = tmp_path / "v1.png"  # Kaggle's 200 x 400 PNG copy: the original's size must be given
    Image.fromarray(np.zeros((400, 200), np.uint8)).save(png)
    with pytest.raises(DataError, match=r"v1\.png: boxes of \['vindr R1'\] .* not the DICOM .*ref_width, ref_height"):
        reference_sizes(items.assign(path=str(png)), boxes)
    (tmp_path / "train.csv").write_text("image_id,class_name,rad_id,x_min,y_min,x_max,y_max,ref_width,ref_height\n"
                                        f"{line},400,800\n")
    given = vindr_boxes([tmp_path / "train.csv"], VINDR_FINDINGS, {"v1"}, ["Cardiomegaly"])
    sizes = reference_sizes(items.assign(path=str(png)), given)
    assert sizes == {"v1": (400.0, 800.0)}
    assert scale_boxes(given, sizes, 100)[["x0", "y0", "x1", "y1"]].to_numpy().tolist() == [[25.0, 25.0, 75.0, 50.0]]
