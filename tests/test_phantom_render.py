"""Tests of the phantom radiograph renderer: format, determinism, finding signatures."""

from __future__ import annotations

import numpy as np
import pytest

from cxrkit.phantom.render import FINDINGS, render

HAB = {"width": 1.0, "height": 1.0, "rotation": 0.0, "brightness": 1.0}
SEEDS = (0, 1, 2, 3)


def img(
    findings: dict[str, float], seed: int, size: int = 128, ap: bool = False, hab: dict = HAB
) -> np.ndarray:
    """Render with a fresh generator as float for arithmetic."""
    return render(size, findings, hab, ap, np.random.default_rng(seed)).astype(np.float64)


def effect(name: str, sev: float, seed: int, size: int = 128) -> np.ndarray:
    """Image with the finding minus the same image without it."""
    return img({name: sev}, seed, size) - img({}, seed, size)


def box(a: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Pixels of ``a`` in the box [x0, x1] x [y0, y1] of [-1, 1] image coordinates."""
    n = a.shape[0]

    def idx(v: float) -> int:
        return int(round((v + 1.0) / 2.0 * n))

    return a[idx(y0) : idx(y1), idx(x0) : idx(x1)]


def test_findings_vocabulary() -> None:
    assert "No Finding" not in FINDINGS
    assert len(FINDINGS) == 13


@pytest.mark.parametrize("size", [64, 128, 256])
def test_shape_dtype_and_anatomy(size: int) -> None:
    a = render(size, {}, HAB, False, np.random.default_rng(0))
    assert a.shape == (size, size) and a.dtype == np.uint8
    f = a.astype(np.float64)
    corner = box(f, -1.0, -0.9, -1.0, -0.9).mean()
    lungs = (box(f, -0.55, -0.35, -0.3, 0.1).mean() + box(f, 0.35, 0.55, -0.3, 0.1).mean()) / 2
    mediastinum = box(f, -0.05, 0.05, -0.5, -0.1).mean()
    abdomen = box(f, -0.3, 0.3, 0.8, 0.95).mean()
    assert corner < lungs < mediastinum, (corner, lungs, mediastinum)
    assert lungs < abdomen


def test_deterministic_given_rng_state() -> None:
    f = {"Edema": 0.7, "Support Devices": 0.5}
    a = render(128, f, HAB, True, np.random.default_rng(42))
    b = render(128, f, HAB, True, np.random.default_rng(42))
    c = render(128, f, HAB, True, np.random.default_rng(43))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    rng = np.random.default_rng(42)
    assert not np.array_equal(render(128, {}, HAB, False, rng), render(128, {}, HAB, False, rng))


def test_findings_do_not_change_rng_consumption() -> None:
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    render(128, {}, HAB, False, r1)
    render(128, {f: 0.7 for f in FINDINGS}, HAB, True, r2)
    assert r1.random() == r2.random()


def test_habitus_changes_the_image() -> None:
    a = img({}, 5)
    wide = img({}, 5, hab={**HAB, "width": 1.12})
    dim = img({}, 5, hab={**HAB, "brightness": 0.85})
    assert np.abs(wide - a).mean() > 2.0
    assert dim.mean() < a.mean()


@pytest.mark.parametrize("name", FINDINGS)
def test_each_finding_changes_image_and_grows_with_severity(name: str) -> None:
    weak = [np.abs(effect(name, 0.3, s)).sum() for s in SEEDS]
    strong = [np.abs(effect(name, 1.0, s)).sum() for s in SEEDS]
    assert min(weak) > 0, name
    assert np.mean(strong) > 1.3 * np.mean(weak), (name, weak, strong)


def test_findings_do_not_shift_each_other() -> None:
    for s in SEEDS:
        alone = img({"Lung Lesion": 1.0}, s) - img({}, s)
        with_other = img({"Lung Lesion": 1.0, "Fracture": 1.0}, s) - img({"Fracture": 1.0}, s)
        assert np.argmax(alone) == np.argmax(with_other)
        assert np.corrcoef(alone.ravel(), with_other.ravel())[0, 1] > 0.9


@pytest.mark.parametrize(
    "name", ["Lung Lesion", "Atelectasis", "Fracture", "Pneumonia", "Consolidation"]
)
def test_local_findings_leave_the_rest_untouched(name: str) -> None:
    for s in SEEDS[:2]:
        changed = (effect(name, 1.0, s) != 0).mean()
        assert 0 < changed < 0.08, (name, changed)


def test_cardiomegaly_widens_heart_to_the_patients_left() -> None:
    for s in SEEDS:
        band = [
            box(effect("Cardiomegaly", sev, s), 0.3, 0.7, 0.05, 0.55).mean() for sev in (0.3, 1.0)
        ]
        assert 0 < band[0] < band[1]
        assert box(effect("Cardiomegaly", 1.0, s), -0.75, -0.5, -0.6, 0.0).mean() == 0  # right lung


def test_ap_view_magnifies_heart() -> None:
    for s in SEEDS:
        gain = box(img({}, s, ap=True) - img({}, s), 0.3, 0.65, 0.1, 0.5).mean()
        assert gain > 0


def test_enlarged_cardiomediastinum_widens_upper_mediastinum() -> None:
    for s in SEEDS:
        upper = (
            box(effect("Enlarged Cardiomediastinum", 1.0, s), 0.14, 0.3, -0.6, -0.15).mean()
            + box(effect("Enlarged Cardiomediastinum", 1.0, s), -0.3, -0.14, -0.6, -0.15).mean()
        )
        assert upper > 5


def test_pleural_effusion_brightens_bases_not_apices() -> None:
    for s in SEEDS:
        e = effect("Pleural Effusion", 1.0, s)
        bases = max(box(e, -0.75, -0.3, 0.25, 0.6).mean(), box(e, 0.4, 0.75, 0.3, 0.65).mean())
        assert bases > 10
        assert np.abs(box(e, -0.8, 0.8, -0.9, -0.5)).mean() < 0.5


def test_pneumothorax_darkens_apical_lateral_zone() -> None:
    for s in SEEDS:
        e = effect("Pneumothorax", 1.0, s)
        apex = min(box(e, -0.7, -0.2, -0.7, -0.3).mean(), box(e, 0.2, 0.7, -0.7, -0.3).mean())
        assert apex < -3
        assert np.abs(box(e, -0.3, 0.3, 0.8, 1.0)).max() == 0  # abdomen unchanged


def test_edema_is_bilateral() -> None:
    for s in SEEDS:
        e = effect("Edema", 1.0, s)
        assert box(e, -0.5, -0.15, -0.2, 0.3).mean() > 3
        assert box(e, 0.15, 0.5, -0.2, 0.3).mean() > 3


@pytest.mark.parametrize(
    "name",
    ["Lung Lesion", "Consolidation", "Pneumonia", "Atelectasis", "Lung Opacity", "Pleural Other"],
)
def test_lung_opacities_brighten(name: str) -> None:
    for s in SEEDS:
        e = effect(name, 1.0, s)
        assert e.sum() > 0 and e.max() > 15, name


def test_consolidation_has_darker_air_bronchograms() -> None:
    s = 0
    with_air = img({"Consolidation": 1.0}, s)
    e = with_air - img({}, s)
    blob = e > 20
    assert blob.sum() > 30
    # Bronchograms make the inside of the opacity uneven: some pixels brighten much less.
    assert np.percentile(e[blob], 90) - np.percentile(e[blob], 10) > 10


def test_fracture_breaks_one_rib() -> None:
    for s in SEEDS:
        e = effect("Fracture", 1.0, s)
        assert e.max() > 8 and e.min() < -8  # fragment moved: new bright and new dark pixels
        rows, cols = np.nonzero(np.abs(e) > 3)
        assert np.ptp(rows) < 0.5 * e.shape[0] and np.ptp(cols) < 0.5 * e.shape[1]


@pytest.mark.parametrize("size", [64, 128, 256])
def test_support_devices_are_very_bright(size: int) -> None:
    for s in SEEDS:
        base = (img({}, s, size) >= 245).sum()
        dev = (img({"Support Devices": 0.3}, s, size) >= 245).sum()
        assert dev > base + size // 16


@pytest.mark.parametrize("size", [64, 256])
def test_findings_scale_with_size(size: int) -> None:
    f = {"Cardiomegaly": 1.0, "Pleural Effusion": 1.0, "Fracture": 1.0, "Pneumothorax": 1.0}
    e = img(f, 0, size) - img({}, 0, size)
    small = img(f, 0, 128) - img({}, 0, 128)
    assert abs((e != 0).mean() - (small != 0).mean()) < 0.1


@pytest.mark.parametrize(
    "findings, match",
    [
        ({"Pneumonitis": 0.5}, "Pneumonitis"),
        ({"No Finding": 1.0}, "No Finding"),
        ({"Edema": 1.5}, "Edema"),
        ({"Fracture": -0.1}, "Fracture"),
    ],
)
def test_bad_findings_raise(findings: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render(128, findings, HAB, False, np.random.default_rng(0))


def test_missing_habitus_key_raises() -> None:
    with pytest.raises(ValueError, match="brightness"):
        render(
            128, {}, {"width": 1.0, "height": 1.0, "rotation": 0.0}, False, np.random.default_rng(0)
        )
