"""Render one phantom frontal chest radiograph (design card section 4).

Geometry is drawn analytically on a continuous grid, so the same scene renders at any side
length and every structure scales with it. Patient coordinates span [-1, 1] on both axes:
``x`` grows to image right (the patient's left, as on a PA film) and ``y`` grows downward.
Anatomy adds to a density map (0 black, 1 white); air-space findings fill the lungs through a
shared opacity map, so overlapping findings saturate like real ones. Local structures are
evaluated only inside their bounding window. Background randomness is drawn from ``rng``
first; each finding then draws from its own child generator (one seed per possible finding,
in a fixed order), so adding a finding never shifts the background or another finding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import numpy as np
from scipy.ndimage import gaussian_filter

from cxrkit.labels import CHEXPERT_LABELS

#: Findings the renderer can draw, in label order ("No Finding" is the absence of all).
FINDINGS: tuple[str, ...] = tuple(lab for lab in CHEXPERT_LABELS if lab != "No Finding")

_HABITUS_KEYS = ("width", "height", "rotation", "brightness")
_LUNG_MEDIAL, _LUNG_APEX, _LUNG_AX, _LUNG_AY = 0.02, -0.72, 0.37, 0.80  # mean lung ellipse
_DOME_X = 0.33  # |x| of the diaphragm dome tops
_LUNG_DARK = 0.36  # density removed by a fully aerated lung
_RIB_S0, _RIB_GROW, _RIB_AMP, _N_RIBS = 0.1, 0.35, 0.13, 10

Array = np.ndarray
Window = tuple[slice, slice]


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[Array, Array]:
    """Read-only pixel-centre coordinates in [-1, 1] for a (size, size) image."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    gx = np.ascontiguousarray(np.broadcast_to(c[None, :], (size, size)))
    gy = np.ascontiguousarray(np.broadcast_to(c[:, None], (size, size)))
    gx.flags.writeable = False
    gy.flags.writeable = False
    return gx, gy


def _ramp(sd: Array, width: float) -> Array:
    """Anti-aliased inside indicator of a signed distance (negative inside)."""
    return np.clip(0.5 - sd / width, 0.0, 1.0)


def _gauss(d: Array, sigma: float) -> Array:
    """Unnormalised Gaussian profile exp(-d^2 / 2 sigma^2)."""
    return np.exp((d * d) * (-0.5 / (sigma * sigma)))


def _ellipse_sd(x: Array, y: Array, cx: float, cy: float, ax: float, ay: float) -> Array:
    """Approximate signed distance to an axis-aligned ellipse (accurate near its edge)."""
    ux, uy = (x - cx) / ax, (y - cy) / ay
    grad = 2.0 * np.sqrt((ux / ax) ** 2 + (uy / ay) ** 2) + 1e-6
    return (ux * ux + uy * uy - 1.0) / grad


def _graph_line(
    u: Array, v: Array, knots_u: list[float], knots_v: list[float], sigma: float
) -> Array:
    """Gaussian stroke along the piecewise-linear graph v = f(u) over the knots' u range."""
    ku, kv = np.asarray(knots_u, np.float32), np.asarray(knots_v, np.float32)
    slope = np.diff(kv) / np.maximum(np.diff(ku), 1e-6)
    s = np.interp(u, 0.5 * (ku[1:] + ku[:-1]), slope).astype(np.float32)
    d = (v - np.interp(u, ku, kv).astype(np.float32)) / np.sqrt(1.0 + s * s)
    return _gauss(d, sigma) * _ramp(np.maximum(ku[0] - u, u - ku[-1]), 2.0 * sigma)


def _union(a: Array, b: Array) -> Array:
    """Probabilistic union of two opacity maps in [0, 1]."""
    return 1.0 - (1.0 - a) * (1.0 - b)


def _side(rng: np.random.Generator) -> int:
    """A random side: +1 image right (patient's left), -1 image left."""
    return 1 if rng.random() < 0.5 else -1


def _check(size: int, findings: Mapping[str, float], habitus: Mapping[str, float]) -> None:
    """Validate the inputs, naming what is wrong."""
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    for name, sev in findings.items():
        if name not in FINDINGS:
            raise ValueError(f"unknown finding {name!r}; known: {list(FINDINGS)}")
        if not 0.0 <= float(sev) <= 1.0:
            raise ValueError(f"severity of {name!r} must be in [0, 1], got {sev!r}")
    missing = [k for k in _HABITUS_KEYS if k not in habitus]
    if missing:
        raise ValueError(f"habitus is missing {missing}; needs {list(_HABITUS_KEYS)}")


class _Scene:
    """Patient coordinates of one image, its lung geometry and windowing."""

    def __init__(
        self,
        size: int,
        habitus: Mapping[str, float],
        jitter: tuple[float, ...],
        lung: tuple[float, ...],
    ) -> None:
        gx, gy = _grid(size)
        rot_deg, sx, sy, scale, insp = jitter
        lung_sx, lung_sy, dome_k, dome_drop = lung
        self.lax, self.lay = _LUNG_AX * lung_sx, _LUNG_AY * lung_sy
        self.lcx, self.lcy = _LUNG_MEDIAL + self.lax, _LUNG_APEX + self.lay
        self.thorax_half = self.lcx + self.lax  # inner half-width of the chest, for the CTR
        self.dome_k = dome_k
        ang = math.radians(float(habitus["rotation"]) + rot_deg)
        self._pose = (
            math.cos(ang),
            math.sin(ang),
            float(habitus["width"]) * scale,
            float(habitus["height"]) * scale,
            sx,
            sy,
        )
        ca, sa, zx, zy, _, _ = self._pose
        self.size = size
        self.px = 2.0 / size / min(zx, zy)  # one pixel in patient units
        self.x = ((ca * gx + sa * gy - sx) / zx).astype(np.float32)
        self.y = ((-sa * gx + ca * gy - sy) / zy).astype(np.float32)
        self.ax_ = np.abs(self.x)
        self.left = self.x > 0  # patient's left = image right
        self.sg = np.where(self.left, np.float32(1.0), np.float32(-1.0))
        # Dome heights (image left, image right): the patient's right dome sits higher.
        self.dome_base = (0.50 + insp, 0.50 + dome_drop + insp)
        base = np.where(self.left, np.float32(self.dome_base[1]), np.float32(self.dome_base[0]))
        off = self.ax_ - _DOME_X
        self.dome = base + np.where(off > 0, np.float32(dome_k), np.float32(0.8)) * off * off
        self.lat = self.ax_ - self.lcx  # lateral offset from the lung centre, both sides
        self.lung_sd = np.maximum(
            _ellipse_sd(self.lat, self.y, 0.0, self.lcy, self.lax, self.lay), self.y - self.dome
        )
        self.lung = _ramp(self.lung_sd, 3.0 * self.px)

    def window(self, x0: float, x1: float, y0: float, y1: float) -> Window:
        """Pixel slices covering the patient-space box [x0, x1] x [y0, y1] (any order)."""
        ca, sa, zx, zy, sx, sy = self._pose
        us = (zx * x0 + sx, zx * x1 + sx)
        vs = (zy * y0 + sy, zy * y1 + sy)
        gxs = [ca * u - sa * v for u in us for v in vs]
        gys = [sa * u + ca * v for u in us for v in vs]
        half = self.size / 2.0

        def span(vals: list[float]) -> slice:
            lo = max(int(math.floor((min(vals) + 1.0) * half - 0.5)) - 1, 0)
            hi = min(int(math.ceil((max(vals) + 1.0) * half - 0.5)) + 2, self.size)
            return slice(lo, max(hi, lo))

        return span(gys), span(gxs)

    def margin(self, w: Window) -> Array:
        """Horizontal distance inside the lateral lung margin (row-wise), on a window."""
        row = np.sqrt(np.clip(1.0 - ((self.y[w] - self.lcy) / self.lay) ** 2, 0.0, 1.0))
        return self.lax * row - self.lat[w]

    def dome_y(self, side: int, ax: float) -> float:
        """Diaphragm height at |x| = ax on one side."""
        off = ax - _DOME_X
        return self.dome_base[side > 0] + (self.dome_k if off > 0 else 0.8) * off * off

    def cp_angle(self, side: int) -> float:
        """Height of the lateral costophrenic angle (lowest point of one lung)."""
        lo, hi = self.dome_base[side > 0], self.lcy + self.lay
        for _ in range(24):  # bisection: the lateral lung edge meets the dome
            y = 0.5 * (lo + hi)
            edge = self.lcx + self.lax * math.sqrt(max(1.0 - ((y - self.lcy) / self.lay) ** 2, 0.0))
            lo, hi = (y, hi) if self.dome_y(side, edge) > y else (lo, y)
        return lo

    def lung_point(
        self, rng: np.random.Generator, side: int, yr: tuple[float, float], ur: tuple[float, float]
    ) -> tuple[float, float]:
        """A point in one lung: ``yr`` is the height fraction apex->base, ``ur`` medial->lateral."""
        top, bot = self.lcy - self.lay, self.dome_y(side, self.lcx)
        y = top + (bot - top) * rng.uniform(*yr)
        half = self.lax * math.sqrt(max(1.0 - ((y - self.lcy) / self.lay) ** 2, 0.05))
        x = self.lcx + half * (2.0 * rng.uniform(*ur) - 1.0)
        return side * x, min(y, self.dome_y(side, x) - 0.05)


class _Layers:
    """Finding contributions: air-space opacity, extra density and pneumothorax lucency."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.opac = np.zeros(shape, np.float32)
        self.extra = np.zeros(shape, np.float32)
        self.ptx = np.zeros(shape, np.float32)
        self.ptx_gain = 0.0

    def fill(self, w: Window, opacity: Array) -> None:
        """Fill air space on a window with ``opacity`` in [0, 1]."""
        self.opac[w] = _union(self.opac[w], opacity)


# --- anatomy ----------------------------------------------------------------------------


def _vessels(sc: _Scene, rng: np.random.Generator) -> Array:
    """Tapering, wavy, branching vessel markings radiating from both hila."""
    out = np.zeros_like(sc.x)
    w = sc.window(-0.85, 0.85, -0.8, 0.95)
    hy = np.where(sc.left[w], np.float32(-0.02), np.float32(0.02))
    dx, dy = sc.ax_[w] - 0.15, sc.y[w] - hy
    r = np.sqrt(dx * dx + dy * dy)
    th = np.arctan2(dy, dx)
    side_off = np.where(sc.left[w], 64, 0)
    acc = np.zeros_like(r)
    for n_lines, r_start, sigma0, amp in (
        (18, 0.0, 0.012, 1.0),
        (36, 0.13, 0.009, 0.8),
        (64, 0.28, 0.007, 0.6),
    ):
        step = 2.0 * math.pi / n_lines
        jitter, wave, wave_ph, length = (
            rng.uniform(lo, hi, 128).astype(np.float32)
            for lo, hi in ((-0.3, 0.3), (-0.5, 0.5), (0.0, 6.3), (0.25, 0.7))
        )
        phase = th / step + rng.uniform(0, 1)
        k = np.floor(phase + 0.5)
        idx = (k.astype(np.int64) + side_off) % 128
        bend = wave[idx] * np.sin(9.0 * r + wave_ph[idx]) * r  # per-line waviness
        d = r * (phase - k - jitter[idx]) * step + 0.08 * bend
        sigma = np.maximum(sigma0 * (1.1 - r), 0.55 * sc.px)
        fade = np.clip((r - r_start) / 0.06, 0.0, 1.0) * np.clip((length[idx] - r) / 0.12, 0.0, 1.0)
        acc += amp * fade * np.exp(-0.5 * (d / sigma) ** 2)
    out[w] = acc * np.exp(-r / 0.4)
    return out


def _ribs(sc: _Scene, fracture: tuple[float, np.random.Generator] | None) -> Array:
    """Posterior ribs as bright arcs plus faint anterior ribs, optionally with one fracture."""
    t = sc.ax_
    u = sc.y + 0.80 - (-0.5 * t + 1.2 * t * t)  # below the first rib, along the arc family
    grow = 1.0 + _RIB_GROW * np.maximum(u, -0.5)  # interspaces widen towards the base
    phase = np.log(grow) / (_RIB_GROW * _RIB_S0)
    local = _RIB_S0 * grow
    k = np.floor(phase + 0.5)
    half, edge = 0.22 * local, 1.5 * sc.px
    dist = np.abs(phase - k) * local
    valid = (k >= 0) & (k < _N_RIBS)
    band = _ramp(dist - half, edge) * (0.75 + 0.25 * _gauss(dist - half, 0.006))
    callus = 0.0
    if fracture is not None:
        sev, frng = fracture
        side = _side(frng)
        kf = float(frng.integers(2, 8))
        tf = frng.uniform(0.3, 0.55)
        sign = _side(frng)
        step = (0.8 + 1.6 * sev) * half * sign  # displacement of the lateral fragment ...
        angle = 0.25 * sev * sign  # ... and its angulation
        gap = (0.4 + 1.0 * sev) * half
        on_side = sc.sg == side
        lateral = on_side & (t > tf)
        rel = (phase - kf) * local
        shifted = np.abs(rel - step - angle * (t - tf))
        moved = _ramp(shifted - half, edge) * (shifted < 0.5 * local)
        band = np.where(lateral & (k == kf), 0.0, band) + np.where(lateral, moved, 0.0)
        valid = valid | (lateral & (shifted < half + 2 * edge))
        cut = _ramp(np.abs(t - tf) - gap, edge) * on_side
        band = band * (1.0 - cut * (np.abs(rel) < 2.5 * half + np.abs(step)))
        # Healing callus: a fusiform swelling around the break.
        along, across = (t - tf) / (0.035 + 0.025 * sev), (rel - 0.5 * step) / (1.8 * half)
        callus = np.exp(-0.5 * (along * along + across * across)) * on_side * (0.8 + 1.6 * sev)
    cage = _ramp(np.maximum(t - 0.84, 0.04 - t), 0.06)
    ant_phase = (sc.y + 0.45 * t + 0.5) / 0.16
    ka = np.floor(ant_phase + 0.5)
    ant = _ramp(np.abs(ant_phase - ka) * 0.16 - 0.025, 0.02) * ((ka >= 0) & (ka < 6) & (t > 0.15))
    return cage * (_RIB_AMP * (band * valid + callus) + 0.03 * ant)


def _soft_tissue(sc: _Scene, rng: np.random.Generator) -> Array:
    """Normal soft-tissue overlap: smooth density undulations and, at random, breast shadows."""
    out = np.zeros_like(sc.x)
    for _ in range(6):
        cx, cy, sig = rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.7), rng.uniform(0.12, 0.3)
        amp = rng.normal(0.0, 0.025)
        w = sc.window(cx - 3 * sig, cx + 3 * sig, cy - 3 * sig, cy + 3 * sig)
        out[w] += amp * _gauss(np.sqrt((sc.x[w] - cx) ** 2 + (sc.y[w] - cy) ** 2), sig)
    if rng.random() < 0.4:
        amp, cy, r = rng.uniform(0.03, 0.08), rng.uniform(0.35, 0.6), rng.uniform(0.28, 0.4)
        w = sc.window(-1.0, 1.0, cy - r - 0.05, cy + r + 0.05)
        x, y = sc.x[w], sc.y[w]
        fade = np.clip((y - cy + r) / r, 0.0, 1.0)  # sharp lower contour, fading upwards
        for side in (-1, 1):
            out[w] += amp * fade * _ramp(_ellipse_sd(x, y, side * 0.5, cy, 1.1 * r, r), 0.04)
    return out


def _anatomy(
    sc: _Scene,
    bg: dict[str, float],
    sev: Mapping[str, float],
    frng: Mapping[str, np.random.Generator],
    view_ap: bool,
    rng: np.random.Generator,
) -> tuple[Array, Array]:
    """Density of body, soft tissue, mediastinum, heart, spine, airways and clavicles; and lung
    aeration."""
    x, y, px = sc.x, sc.y, sc.px
    torso = _ellipse_sd(x, y, 0.0, 0.3, 1.0, 1.3)
    shoulder_top = -0.86 + 0.3 * np.maximum(sc.ax_ - 0.3, 0.0) ** 2
    neck = np.maximum(sc.ax_ - 0.27, -0.7 - y)
    body = _ramp(np.minimum(np.maximum(torso, shoulder_top - y), neck), 0.1)
    dens = 0.04 + (bg["tissue"] + _soft_tissue(sc, rng)) * body

    # Mediastinum (upper band with the aortic knob); Enlarged Cardiomediastinum widens it.
    medi_w, knob, enlarge = bg["medi_w"], bg["knob"], 0.0
    if "Enlarged Cardiomediastinum" in sev:
        s = sev["Enlarged Cardiomediastinum"]
        enlarge = max(0.11 * s - 0.01, 0.0) * frng["Enlarged Cardiomediastinum"].uniform(0.85, 1.15)
        knob += 0.02 * s
    w = sc.window(-0.7, 0.9, -1.0, 0.85)
    xw, yw = x[w], y[w]
    upper = np.clip((yw + 0.05) / 0.3, 0.0, 1.0)  # 0 in the upper mediastinum, 1 at the heart
    medi_half = medi_w + enlarge * (1.0 - upper) + 0.05 * upper
    medi = _ramp(np.abs(xw - 0.02) - medi_half, 3 * px) * _ramp(yw - 0.5, 0.05)
    kx = medi_w + 0.6 * enlarge + 0.03
    medi = np.maximum(medi, _ramp(np.sqrt((xw - kx) ** 2 + (yw + 0.3) ** 2) - knob, 3 * px))

    # Heart: tilted ellipse on the left dome, 1/3 right and 2/3 left of the midline.
    ctr = bg["ctr"] + (0.03 + 0.15 * sev["Cardiomegaly"] if "Cardiomegaly" in sev else 0.0)
    hw = ctr * sc.thorax_half * (1.08 if view_ap else 1.0)  # half of the heart's width
    ct, st = math.cos(bg["heart_tilt"]), math.sin(bg["heart_tilt"])
    a_h = hw / math.sqrt(ct * ct + 0.56 * st * st)  # long semi-axis; the short one is 0.75x
    vh = a_h * math.sqrt(st * st + 0.56 * ct * ct)  # vertical half-extent
    cx, cy = hw / 3.0, sc.dome_base[1] + 0.06 - vh
    hx, hy = (xw - cx) * ct + (yw - cy) * st, -(xw - cx) * st + (yw - cy) * ct
    heart = _ramp(_ellipse_sd(hx, hy, 0.0, 0.0, a_h, 0.75 * a_h), 2.5 * px)
    heart *= _ramp(yw - sc.dome[w], 3 * px)  # merges into the diaphragm

    spine = _ramp(np.abs(xw) - 0.065, 4 * px) * (0.85 + 0.15 * np.cos(yw * (2 * math.pi / 0.13)))
    trachea_x = 0.015 + 0.02 * np.clip(-yw - 0.2, 0.0, 1.0)
    trachea = _ramp(np.abs(xw - trachea_x) - 0.032, 3 * px) * _ramp(yw + 0.22, 0.04)
    bronchi = _graph_line(xw, yw, [-0.17, -0.03, 0.04, 0.17], [-0.05, -0.21, -0.21, -0.07], 0.022)
    hila = _gauss(np.sqrt((np.abs(xw) - 0.19) ** 2 + yw * yw), 0.06)
    dens[w] += (
        0.08 * medi
        + 0.05 * heart * (1.0 - medi)
        + 0.08 * spine
        - 0.1 * trachea * (1.0 - 0.3 * spine)
        - 0.07 * bronchi
        + 0.05 * hila * sc.lung[w]
    )

    w2 = sc.window(-0.85, 0.85, -0.95, -0.55)
    dens[w2] += 0.11 * _graph_line(
        sc.ax_[w2], y[w2], [0.08, 0.3, 0.55, 0.78], [-0.66, -0.72, -0.76, -0.82], 0.022
    )
    bx, by = 0.42, sc.dome_base[1] + 0.17  # gastric bubble under the left dome
    w3 = sc.window(bx - 0.15, bx + 0.15, by - 0.12, by + 0.12)
    dens[w3] -= 0.12 * _ramp(_ellipse_sd(x[w3], y[w3], bx, by, 0.09, 0.06), 0.04) * body[w3]

    inner = np.clip(sc.lung_sd * (-1.0 / 0.18), 0.0, 1.0)  # thinner chest wall cover inside
    lucent = sc.lung * (0.7 + 0.3 * inner)
    lucent[w] *= (1.0 - 0.9 * heart) * (1.0 - medi)
    return dens, lucent


# --- findings that fill the lungs or add density -------------------------------------------

_Drawer = Callable[[_Scene, _Layers, float, np.random.Generator], None]


def _pneumothorax(sc: _Scene, ly: _Layers, s: float, rng: np.random.Generator) -> None:
    """Apical/lateral air rim without vessels, bounded by a thin visceral pleural line."""
    side = _side(rng)
    # The lung collapses by the factor f towards the mediastinum and base.
    f = 1.0 - max(0.36 * s - 0.02, 0.0) * rng.uniform(0.85, 1.15)
    ax0, ay0 = sc.lcx - sc.lax, 0.35
    w = sc.window(0.0, side * 0.95, -0.95, 1.0)
    csd = _ellipse_sd(
        sc.ax_[w],
        sc.y[w],
        ax0 + f * (sc.lcx - ax0),
        ay0 + f * (sc.lcy - ay0),
        f * sc.lax,
        f * sc.lay,
    )
    on = sc.lung[w] * (sc.sg[w] == side)
    ly.ptx[w] = np.maximum(ly.ptx[w], on * _ramp(-csd, 2 * sc.px))
    line = _gauss(csd, max(0.007, 0.5 * sc.px)) * on * _ramp(sc.lung_sd[w] + 0.01, 2 * sc.px)
    ly.extra[w] += (0.03 + 0.1 * s) * line
    ly.ptx_gain = max(0.55 * s - 0.05, 0.0)


def _effusion(sc: _Scene, ly: _Layers, s: float, rng: np.random.Generator) -> None:
    """Basal fluid with a meniscus rising laterally; fills the costophrenic angle."""
    u = rng.random()
    for side in (-1, 1) if u < 0.3 else ((-1,) if u < 0.65 else (1,)):
        h = max(0.62 * s - 0.12, 0.0) * rng.uniform(0.8, 1.2)  # fluid height above the angle
        w = sc.window(0.0, side * 0.95, -0.45, 1.0)
        lateral = np.clip((sc.lat[w] + sc.lax) / (2 * sc.lax), 0.0, 1.0)
        surface = sc.cp_angle(side) - h - (0.02 + 0.15 * s) * lateral**2
        fluid = np.clip(0.5 + (sc.y[w] - surface) / (0.07 + 0.05 * (1 - s)), 0.0, 1.0) ** 1.5
        ly.fill(w, (0.15 + 0.8 * s) * fluid * (sc.sg[w] == side))


def _edema(sc: _Scene, ly: _Layers, s: float, rng: np.random.Generator) -> None:
    """Bilateral perihilar (bat-wing) haze and Kerley B lines at the lower periphery."""
    w = sc.window(-0.9, 0.9, -0.85, 0.95)
    y = sc.y[w]
    bat = _gauss(np.sqrt((sc.ax_[w] - 0.22) ** 2 / 1.5 + (y - 0.05) ** 2), 0.16 + 0.1 * s)
    spacing = 0.045
    ph = (y - rng.uniform(0, spacing)) / spacing
    kb = np.floor(ph + 0.5)
    table = rng.uniform(0.4, 1.0, 64).astype(np.float32)
    lens = table[(kb.astype(np.int64) + 32 * sc.left[w]) % 64]
    kerley = _gauss((ph - kb) * spacing, max(0.006, 0.5 * sc.px))
    kerley *= _ramp(sc.margin(w) - (0.05 + 0.06 * s) * lens, 2 * sc.px) * ((y > 0.05) & (y < 0.62))
    ly.fill(w, _union(max(0.55 * s - 0.02, 0.0) * bat, max(0.6 * s - 0.1, 0.0) * kerley))


def _consolidation(sc: _Scene, ly: _Layers, s: float, rng: np.random.Generator) -> None:
    """Dense lobulated region crossed by dark branching air bronchograms."""
    side = _side(rng)
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
    blob = _ramp(rr - rad, 0.035)
    bx, by = dx + side * 0.7 * rad, dy + 0.3 * rad  # branches fan out from the hilar side
    br = np.sqrt(bx * bx + by * by)
    bph = np.arctan2(by, bx * side) / 0.3 + b0
    bk = np.floor(bph + 0.5)
    off = br * (bph - bk - jit[bk.astype(np.int64) % 64]) * 0.3
    bronch = _gauss(off, max(0.007, 0.55 * sc.px)) * _ramp(br - 1.6 * rad, 0.05)
    ly.fill(w, (0.6 + 0.35 * s) * blob * (1.0 - (0.5 + 0.3 * s) * bronch))  # bronchi keep air


def _pneumonia(sc: _Scene, ly: _Layers, s: float, rng: np.random.Generator) -> None:
    """A cluster of patchy, ill-defined small opacities in one lung zone."""
    side = _side(rng)
    cx, cy = sc.lung_point(rng, side, (0.3, 0.85), (0.3, 0.8))
    w = sc.window(cx - 0.45, cx + 0.45, cy - 0.45, cy + 0.45)
    x, y = sc.x[w], sc.y[w]
    patch = np.zeros_like(x)
    for _ in range(5 + int(7 * s)):
        qx = cx + np.clip(rng.normal(0, 0.1), -0.22, 0.22)
        qy = cy + np.clip(rng.normal(0, 0.09), -0.22, 0.22)
        blob = _gauss(np.sqrt((x - qx) ** 2 + (y - qy) ** 2), rng.uniform(0.03, 0.05))
        patch = np.maximum(patch, rng.uniform(0.6, 1.0) * blob)
    ly.fill(w, (0.45 + 0.4 * s) * patch)


def _atelectasis(sc: _Scene, ly: _Layers, s: float, rng: np.random.Generator) -> None:
    """A plate-like band or a wedge (base lateral) near one lung base."""
    side = _side(rng)
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
    band = _ramp(np.abs(va) - thick, 2 * sc.px) * _ramp(np.abs(ua) - 0.5 * length, 3 * sc.px)
    ly.fill(w, (0.55 + 0.4 * s) * band)


def _lesion(sc: _Scene, ly: _Layers, s: float, rng: np.random.Generator) -> None:
    """A round, sharply marginated nodule."""
    cx, cy = sc.lung_point(rng, _side(rng), (0.15, 0.7), (0.45, 0.8))
    rad = (0.035 + 0.055 * s) * rng.uniform(0.85, 1.15)
    ext = rad + 0.03
    w = sc.window(cx - ext, cx + ext, cy - ext, cy + ext)
    nod = _ramp(np.sqrt((sc.x[w] - cx) ** 2 + (sc.y[w] - cy) ** 2) - rad, 1.2 * sc.px)
    ly.fill(w, (0.55 + 0.4 * s) * nod)
    ly.extra[w] += 0.04 * s * nod


def _opacity(sc: _Scene, ly: _Layers, s: float, rng: np.random.Generator) -> None:
    """Faint generic haze in one zone (upper, middle or lower) of one lung."""
    side, zone = _side(rng), int(rng.integers(0, 3))
    cx, cy = sc.lung_point(rng, side, (0.2 + 0.25 * zone, 0.3 + 0.25 * zone), (0.4, 0.7))
    sigma = 0.13 + 0.07 * s
    w = sc.window(cx - 3 * sigma, cx + 3 * sigma, cy - 3.4 * sigma, cy + 3.4 * sigma)
    haze = _gauss(np.sqrt((sc.x[w] - cx) ** 2 + (sc.y[w] - cy) ** 2 / 1.3), sigma)
    ly.fill(w, (0.1 + 0.3 * s) * haze)


def _pleural_other(sc: _Scene, ly: _Layers, s: float, rng: np.random.Generator) -> None:
    """Lens-shaped pleural thickening along the lateral chest wall."""
    side = _side(rng)
    yc, span = rng.uniform(-0.35, 0.15), (0.25 + 0.2 * s) * rng.uniform(0.85, 1.15)
    w = sc.window(side * 0.3, side * 0.95, yc - span - 0.05, yc + span + 0.05)
    lens = np.sqrt(np.clip(1.0 - ((sc.y[w] - yc) / span) ** 2, 0.0, 1.0))
    band = _ramp(sc.margin(w) - (0.015 + 0.06 * s) * lens, 2 * sc.px)
    band *= (lens > 0) * (sc.sg[w] == side)
    plaque = band * _ramp(sc.lung_sd[w] - 0.02, 2 * sc.px)
    ly.fill(w, (0.35 + 0.6 * s) * plaque)
    ly.extra[w] += 0.05 * s * plaque


def _devices(sc: _Scene, ly: _Layers, s: float, rng: np.random.Generator) -> None:
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
            tube = _graph_line(y[w], x[w], [-1.3, -0.8, tip], [x0, x0 - 0.01, 0.0], lw)
            wall = _graph_line(y[w], x[w], [-1.3, tip], [x0 + 2.2 * lw, 2.2 * lw], lw)
            put(w, np.maximum(tube, 0.6 * wall))
        elif kind == "ng":
            xs, yb = rng.uniform(0.02, 0.07), sc.dome_base[1] + 0.06
            xe = xs + rng.uniform(0.3, 0.42)
            w = sc.window(xs - 0.08, xe + 0.08, -1.3, yb + 0.2)
            knots_y = [-1.3, -0.2, yb - 0.05, yb + 0.05, yb + 0.12]
            knots_x = [xs, xs + 0.02, xs + 0.06, xs + 0.18, xe]
            put(w, _graph_line(y[w], x[w], knots_y, knots_x, lw))
        elif kind == "cvc":
            side = 1 if rng.random() < 0.4 else -1
            x_in, tip = rng.uniform(0.45, 0.65), rng.uniform(-0.25, 0.0)
            w = sc.window(side * 0.05, side * (x_in + 0.08), -0.8, -0.4)
            vein = _graph_line(x[w] * side, y[w], [0.09, 0.25, x_in], [-0.52, -0.6, -0.66], lw)
            put(w, vein * (sc.sg[w] == side))
            w = sc.window(-0.15, 0.05, -0.62, tip + 0.05)
            put(w, _graph_line(y[w], x[w], [-0.56, tip], [-0.07, -0.05], lw))
        elif kind == "ecg":
            for _ in range(int(rng.integers(2, 5))):
                cx, cy = rng.uniform(-0.75, 0.75), rng.uniform(-0.7, 0.6)
                w = sc.window(cx - 0.06, cx + 0.06, cy - 0.06, cy + 0.06)
                rr = np.sqrt((x[w] - cx) ** 2 + (y[w] - cy) ** 2)
                ring = _ramp(np.abs(rr - 0.03) - 0.008, 1.5 * px) + _ramp(rr - 0.011, 1.5 * px)
                put(w, np.minimum(ring, 1.0))
        else:
            cx, cy = rng.uniform(0.35, 0.55), rng.uniform(-0.72, -0.55)
            w = sc.window(cx - 0.12, cx + 0.12, cy - 0.1, cy + 0.1)
            qx = np.maximum(np.abs(x[w] - cx) - 0.06, 0.0)
            qy = np.maximum(np.abs(y[w] - cy) - 0.035, 0.0)
            put(w, _ramp(np.sqrt(qx * qx + qy * qy) - 0.025, 1.5 * px))
            w = sc.window(-0.12, cx, cy, 0.35)
            put(w, _graph_line(y[w], x[w], [cy, cy + 0.25, 0.3], [cx - 0.05, 0.0, -0.04], lw))
    ly.extra += (0.75 + 0.35 * s) * out


_DRAWERS: dict[str, _Drawer] = {
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


def render(
    size: int,
    findings: Mapping[str, float],
    habitus: Mapping[str, float],
    view_ap: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render a (size, size) uint8 grayscale frontal chest radiograph.

    Args:
        size: side length in pixels (64-512 intended); structures scale with it.
        findings: severity in [0, 1] (0.3-1.0 in the generator) for every finding drawn,
            by name from ``FINDINGS``.
        habitus: patient ``width``, ``height`` (relative scale), ``rotation`` (degrees) and
            ``brightness`` (multiplicative).
        view_ap: AP projection, which magnifies the heart by 8%.
        rng: source of all randomness; the image is a deterministic function of its state.

    Returns:
        The radiograph, shape (size, size), dtype uint8.

    Raises:
        ValueError: naming an unknown finding, a severity outside [0, 1] or a missing
            habitus key.
    """
    _check(size, findings, habitus)
    size = int(size)
    sev = {k: float(v) for k, v in findings.items()}

    # Background randomness first, then one child seed per possible finding.
    jitter = (  # rotation (degrees), shift x, shift y, scale, depth of inspiration
        rng.normal(0, 1.0),
        rng.normal(0, 0.03),
        rng.normal(0, 0.03),
        rng.normal(1.0, 0.025),
        rng.normal(0, 0.03),
    )
    bg = {
        "ctr": rng.normal(0.45, 0.03),
        "heart_tilt": rng.uniform(0.4, 0.6),
        "medi_w": rng.normal(0.135, 0.015),
        "knob": rng.uniform(0.05, 0.07),
        "tissue": rng.uniform(0.42, 0.5),
        "vessels": rng.uniform(0.09, 0.16),
    }
    blur = rng.uniform(0.35, 0.75) * size / 128.0
    noise_sd = rng.uniform(0.015, 0.035)
    contrast, gamma = rng.uniform(0.85, 1.15), rng.uniform(0.8, 1.2)
    tilt_x, tilt_y = rng.normal(0, 0.04), rng.normal(0, 0.04)
    lung = (  # lung width and height scale, lateral dome curvature, left dome drop
        rng.normal(1.0, 0.04),
        rng.normal(1.0, 0.04),
        rng.uniform(1.0, 1.7),
        rng.normal(0.06, 0.03),
    )
    texture_rng = np.random.default_rng(rng.integers(2**63))
    seeds = rng.integers(2**63, size=len(FINDINGS))
    frng = {name: np.random.default_rng(seeds[i]) for i, name in enumerate(FINDINGS) if name in sev}

    sc = _Scene(size, habitus, jitter, lung)
    dens, lucent = _anatomy(sc, bg, sev, frng, view_ap, texture_rng)
    fracture = (sev["Fracture"], frng["Fracture"]) if "Fracture" in sev else None
    ribs = _ribs(sc, fracture)
    vessels = _vessels(sc, texture_rng)
    ly = _Layers(dens.shape)
    for name in FINDINGS:
        if name in sev and name in _DRAWERS:
            _DRAWERS[name](sc, ly, sev[name], frng[name])

    air = lucent * (1.0 - ly.opac)
    dens += (
        ribs * (0.35 + 0.65 * lucent)
        - _LUNG_DARK * air * (1.0 + ly.ptx_gain * ly.ptx)
        + bg["vessels"] * vessels * air * (1.0 - ly.ptx)
        + ly.extra
    )

    img = gaussian_filter(dens, blur, mode="nearest", truncate=3.0)
    img *= 1.0 + tilt_x * sc.x + tilt_y * sc.y  # heel effect / uneven exposure
    img = np.clip((img - 0.3) * contrast + 0.3, 0.0, 1.0) ** gamma * float(habitus["brightness"])
    img += noise_sd * rng.standard_normal((size, size), dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
