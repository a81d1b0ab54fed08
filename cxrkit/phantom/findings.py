"""The findings a phantom radiograph can show, one drawing routine each (:data:`DRAWERS`): each
fills the lungs' air space or adds density through the shared layers (:class:`Layers`), from
its own random generator and its severity. Cardiomegaly and Enlarged Cardiomediastinum are
drawn with the anatomy, Fracture with the ribs (:mod:`cxrkit.phantom.anatomy`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from cxrkit.phantom.scene import (
    Array,
    Layers,
    Scene,
    Window,
    ellipse_sd,
    gauss,
    graph_line,
    ramp,
    random_side,
    union,
)

_Drawer = Callable[[Scene, Layers, float, np.random.Generator], None]


def _pneumothorax(sc: Scene, ly: Layers, s: float, rng: np.random.Generator) -> None:
    """Apical/lateral air rim without vessels, bounded by a thin visceral pleural line."""
    side = random_side(rng)
    # The lung collapses by the factor f towards the mediastinum and base.
    f = 1.0 - max(0.36 * s - 0.02, 0.0) * rng.uniform(0.85, 1.15)
    ax0, ay0 = sc.lcx - sc.lax, 0.35
    w = sc.window(0.0, side * 0.95, -0.95, 1.0)
    csd = ellipse_sd(
        sc.ax_[w],
        sc.y[w],
        ax0 + f * (sc.lcx - ax0),
        ay0 + f * (sc.lcy - ay0),
        f * sc.lax,
        f * sc.lay,
    )
    on = sc.lung[w] * (sc.sg[w] == side)
    ly.ptx[w] = np.maximum(ly.ptx[w], on * ramp(-csd, 2 * sc.px))
    line = gauss(csd, max(0.007, 0.5 * sc.px)) * on * ramp(sc.lung_sd[w] + 0.01, 2 * sc.px)
    ly.extra[w] += (0.03 + 0.1 * s) * line
    ly.ptx_gain = max(0.55 * s - 0.05, 0.0)


def _effusion(sc: Scene, ly: Layers, s: float, rng: np.random.Generator) -> None:
    """Basal fluid with a meniscus rising laterally; fills the costophrenic angle."""
    u = rng.random()
    for side in (-1, 1) if u < 0.3 else ((-1,) if u < 0.65 else (1,)):
        h = max(0.62 * s - 0.12, 0.0) * rng.uniform(0.8, 1.2)  # fluid height above the angle
        w = sc.window(0.0, side * 0.95, -0.45, 1.0)
        lateral = np.clip((sc.lat[w] + sc.lax) / (2 * sc.lax), 0.0, 1.0)
        surface = sc.cp_angle(side) - h - (0.02 + 0.15 * s) * lateral**2
        fluid = np.clip(0.5 + (sc.y[w] - surface) / (0.07 + 0.05 * (1 - s)), 0.0, 1.0) ** 1.5
        ly.fill(w, (0.15 + 0.8 * s) * fluid * (sc.sg[w] == side))


def _edema(sc: Scene, ly: Layers, s: float, rng: np.random.Generator) -> None:
    """Bilateral perihilar (bat-wing) haze and Kerley B lines at the lower periphery."""
    w = sc.window(-0.9, 0.9, -0.85, 0.95)
    y = sc.y[w]
    bat = gauss(np.sqrt((sc.ax_[w] - 0.22) ** 2 / 1.5 + (y - 0.05) ** 2), 0.16 + 0.1 * s)
    spacing = 0.045
    ph = (y - rng.uniform(0, spacing)) / spacing
    kb = np.floor(ph + 0.5)
    table = rng.uniform(0.4, 1.0, 64).astype(np.float32)
    lens = table[(kb.astype(np.int64) + 32 * sc.left[w]) % 64]
    kerley = gauss((ph - kb) * spacing, max(0.006, 0.5 * sc.px))
    kerley *= ramp(sc.margin(w) - (0.05 + 0.06 * s) * lens, 2 * sc.px) * ((y > 0.05) & (y < 0.62))
    ly.fill(w, union(max(0.55 * s - 0.02, 0.0) * bat, max(0.6 * s - 0.1, 0.0) * kerley))


def _consolidation(sc: Scene, ly: Layers, s: float, rng: np.random.Generator) -> None:
    """Dense lobulated region crossed by dark branching air bronchograms."""
    side = random_side(rng)
    cx, cy = sc.lung_point(rng, side, (0.35, 0.85), (0.35, 0.8))
    rad = (0.09 + 0.11 * s) * rng.uniform(0.85, 1.15)
    p1, p2, b0 = (float(v) for v in rng.uniform(0, 6.3, 3))
    jit = rng.uniform(-0.25, 0.25, 64).astype(np.float32)
    ext = 1.35 * rad + 0.04
    w = sc.window(cx - ext, cx + ext, cy - ext, cy + ext)
    dx, dy = sc.x[w] - cx, sc.y[w] - cy
    ang = np.arctan2(dy, dx)
    lobulation = 1.0 + 0.18 * np.sin(2 * ang + p1) + 0.12 * np.sin(3 * ang + p2)
    rr = np.sqrt(dx * dx + dy * dy) / lobulation
    blob = ramp(rr - rad, 0.035)
    bx, by = dx + side * 0.7 * rad, dy + 0.3 * rad  # branches fan out from the hilar side
    br = np.sqrt(bx * bx + by * by)
    bph = np.arctan2(by, bx * side) / 0.3 + b0
    bk = np.floor(bph + 0.5)
    off = br * (bph - bk - jit[bk.astype(np.int64) % 64]) * 0.3
    bronch = gauss(off, max(0.007, 0.55 * sc.px)) * ramp(br - 1.6 * rad, 0.05)
    ly.fill(w, (0.6 + 0.35 * s) * blob * (1.0 - (0.5 + 0.3 * s) * bronch))  # bronchi keep air


def _pneumonia(sc: Scene, ly: Layers, s: float, rng: np.random.Generator) -> None:
    """A cluster of patchy, ill-defined small opacities in one lung zone."""
    side = random_side(rng)
    cx, cy = sc.lung_point(rng, side, (0.3, 0.85), (0.3, 0.8))
    w = sc.window(cx - 0.45, cx + 0.45, cy - 0.45, cy + 0.45)
    x, y = sc.x[w], sc.y[w]
    patch = np.zeros_like(x)
    for _ in range(5 + int(7 * s)):
        qx = cx + np.clip(rng.normal(0, 0.1), -0.22, 0.22)
        qy = cy + np.clip(rng.normal(0, 0.09), -0.22, 0.22)
        blob = gauss(np.sqrt((x - qx) ** 2 + (y - qy) ** 2), rng.uniform(0.03, 0.05))
        patch = np.maximum(patch, rng.uniform(0.6, 1.0) * blob)
    ly.fill(w, (0.45 + 0.4 * s) * patch)


def _atelectasis(sc: Scene, ly: Layers, s: float, rng: np.random.Generator) -> None:
    """A plate-like band or a wedge (base lateral) near one lung base."""
    side = random_side(rng)
    cx, cy = sc.lung_point(rng, side, (0.62, 0.8), (0.35, 0.65))
    length = (0.22 + 0.18 * s) * rng.uniform(0.85, 1.15)
    a = math.radians(rng.uniform(-20, 20)) * side
    wedge = rng.random() < 0.5
    ext = 0.5 * length + 0.1
    w = sc.window(cx - ext, cx + ext, cy - ext, cy + ext)
    dx, dy = sc.x[w] - cx, sc.y[w] - cy
    ua, va = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
    if wedge:
        along = np.clip((ua * side + 0.5 * length) / length, 0.0, 1.0)  # 0 medial -> 1 lateral
        thick = 0.012 + (0.03 + 0.05 * s) * along
    else:
        thick = 0.018 + 0.02 * s
    band = ramp(np.abs(va) - thick, 2 * sc.px) * ramp(np.abs(ua) - 0.5 * length, 3 * sc.px)
    ly.fill(w, (0.55 + 0.4 * s) * band)


def _lesion(sc: Scene, ly: Layers, s: float, rng: np.random.Generator) -> None:
    """A round, sharply marginated nodule."""
    cx, cy = sc.lung_point(rng, random_side(rng), (0.15, 0.7), (0.45, 0.8))
    rad = (0.035 + 0.055 * s) * rng.uniform(0.85, 1.15)
    ext = rad + 0.03
    w = sc.window(cx - ext, cx + ext, cy - ext, cy + ext)
    nod = ramp(np.sqrt((sc.x[w] - cx) ** 2 + (sc.y[w] - cy) ** 2) - rad, 1.2 * sc.px)
    ly.fill(w, (0.55 + 0.4 * s) * nod)
    ly.extra[w] += 0.04 * s * nod


def _opacity(sc: Scene, ly: Layers, s: float, rng: np.random.Generator) -> None:
    """Faint generic haze in one zone (upper, middle or lower) of one lung."""
    side, zone = random_side(rng), int(rng.integers(0, 3))
    cx, cy = sc.lung_point(rng, side, (0.2 + 0.25 * zone, 0.3 + 0.25 * zone), (0.4, 0.7))
    sigma = 0.13 + 0.07 * s
    w = sc.window(cx - 3 * sigma, cx + 3 * sigma, cy - 3.4 * sigma, cy + 3.4 * sigma)
    haze = gauss(np.sqrt((sc.x[w] - cx) ** 2 + (sc.y[w] - cy) ** 2 / 1.3), sigma)
    ly.fill(w, (0.1 + 0.3 * s) * haze)


def _pleural_other(sc: Scene, ly: Layers, s: float, rng: np.random.Generator) -> None:
    """Lens-shaped pleural thickening along the lateral chest wall."""
    side = random_side(rng)
    yc, span = rng.uniform(-0.35, 0.15), (0.25 + 0.2 * s) * rng.uniform(0.85, 1.15)
    w = sc.window(side * 0.3, side * 0.95, yc - span - 0.05, yc + span + 0.05)
    lens = np.sqrt(np.clip(1.0 - ((sc.y[w] - yc) / span) ** 2, 0.0, 1.0))
    band = ramp(sc.margin(w) - (0.015 + 0.06 * s) * lens, 2 * sc.px)
    band *= (lens > 0) * (sc.sg[w] == side)
    plaque = band * ramp(sc.lung_sd[w] - 0.02, 2 * sc.px)
    ly.fill(w, (0.35 + 0.6 * s) * plaque)
    ly.extra[w] += 0.05 * s * plaque


def _devices(sc: Scene, ly: Layers, s: float, rng: np.random.Generator) -> None:
    """Very bright tubes and lines (ET tube, NG tube, central line), ECG leads, a pacemaker."""
    x, y, px = sc.x, sc.y, sc.px
    lw = max(0.010, 0.65 * px)
    kinds = ("ett", "ng", "cvc", "ecg", "pacer")
    p = np.array([0.6, 0.45, 0.5, 0.45, 0.15]) * (0.6 + 0.6 * s)
    chosen = [kd for kd, pk in zip(kinds, p) if rng.random() < pk]
    if not chosen:
        chosen = [kinds[int(rng.integers(0, 3))]]
    out = np.zeros_like(x)

    def put(w: Window, v: Array) -> None:
        out[w] = np.maximum(out[w], v)

    for kind in chosen:
        if kind == "ett":
            tip, x0 = rng.uniform(-0.45, -0.3), rng.uniform(-0.02, 0.03)
            w = sc.window(x0 - 0.08, x0 + 0.1, -1.3, tip + 0.05)
            tube = graph_line(y[w], x[w], [-1.3, -0.8, tip], [x0, x0 - 0.01, 0.0], lw)
            wall = graph_line(y[w], x[w], [-1.3, tip], [x0 + 2.2 * lw, 2.2 * lw], lw)
            put(w, np.maximum(tube, 0.6 * wall))
        elif kind == "ng":
            xs, yb = rng.uniform(0.02, 0.07), sc.dome_base[1] + 0.06
            xe = xs + rng.uniform(0.3, 0.42)
            w = sc.window(xs - 0.08, xe + 0.08, -1.3, yb + 0.2)
            knots_y = [-1.3, -0.2, yb - 0.05, yb + 0.05, yb + 0.12]
            knots_x = [xs, xs + 0.02, xs + 0.06, xs + 0.18, xe]
            put(w, graph_line(y[w], x[w], knots_y, knots_x, lw))
        elif kind == "cvc":
            side = 1 if rng.random() < 0.4 else -1
            x_in, tip = rng.uniform(0.45, 0.65), rng.uniform(-0.25, 0.0)
            w = sc.window(side * 0.05, side * (x_in + 0.08), -0.8, -0.4)
            vein = graph_line(x[w] * side, y[w], [0.09, 0.25, x_in], [-0.52, -0.6, -0.66], lw)
            put(w, vein * (sc.sg[w] == side))
            w = sc.window(-0.15, 0.05, -0.62, tip + 0.05)
            put(w, graph_line(y[w], x[w], [-0.56, tip], [-0.07, -0.05], lw))
        elif kind == "ecg":
            for _ in range(int(rng.integers(2, 5))):
                cx, cy = rng.uniform(-0.75, 0.75), rng.uniform(-0.7, 0.6)
                w = sc.window(cx - 0.06, cx + 0.06, cy - 0.06, cy + 0.06)
                rr = np.sqrt((x[w] - cx) ** 2 + (y[w] - cy) ** 2)
                ring = ramp(np.abs(rr - 0.03) - 0.008, 1.5 * px) + ramp(rr - 0.011, 1.5 * px)
                put(w, np.minimum(ring, 1.0))
        else:
            cx, cy = rng.uniform(0.35, 0.55), rng.uniform(-0.72, -0.55)
            w = sc.window(cx - 0.12, cx + 0.12, cy - 0.1, cy + 0.1)
            qx = np.maximum(np.abs(x[w] - cx) - 0.06, 0.0)
            qy = np.maximum(np.abs(y[w] - cy) - 0.035, 0.0)
            put(w, ramp(np.sqrt(qx * qx + qy * qy) - 0.025, 1.5 * px))
            w = sc.window(-0.12, cx, cy, 0.35)
            put(w, graph_line(y[w], x[w], [cy, cy + 0.25, 0.3], [cx - 0.05, 0.0, -0.04], lw))
    ly.extra += (0.75 + 0.35 * s) * out


DRAWERS: dict[str, _Drawer] = {
    "Pneumothorax": _pneumothorax,
    "Pleural Effusion": _effusion,
    "Edema": _edema,
    "Consolidation": _consolidation,
    "Pneumonia": _pneumonia,
    "Atelectasis": _atelectasis,
    "Lung Lesion": _lesion,
    "Lung Opacity": _opacity,
    "Pleural Other": _pleural_other,
    "Support Devices": _devices,
}
