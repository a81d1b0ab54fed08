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

from cxrkit.data.boxes import BOX_COLUMNS, box_table, empty_boxes, scale_boxes
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
from cxrkit.models.saliency import check_cnn_layer, grad_cam, target_layer
from cxrkit.study.saliency import (
    CENTRE,
    UNIFORM,
    Saliency,
    VariantMaps,
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
