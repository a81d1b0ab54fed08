"""The geometry of one phantom radiograph: patient coordinates on a continuous grid, the lungs,
diaphragm and windowing (:class:`Scene`), the layers findings draw into (:class:`Layers`), and
the drawing primitives (ramps, Gaussians, ellipses, strokes) shared by anatomy and findings.

Patient coordinates span [-1, 1] on both axes: ``x`` grows to image right (the patient's left,
as on a PA film) and ``y`` grows downward. Local structures are evaluated only inside their
bounding window.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np

HABITUS_KEYS = ("width", "height", "rotation", "brightness")
_LUNG_MEDIAL, _LUNG_APEX, _LUNG_AX, _LUNG_AY = 0.02, -0.72, 0.37, 0.80  # mean lung ellipse
_DOME_X = 0.33  # |x| of the diaphragm dome tops
LUNG_DARK = 0.36  # density removed by a fully aerated lung
RIB_S0, RIB_GROW, RIB_AMP, N_RIBS = 0.1, 0.35, 0.13, 10

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


def ramp(sd: Array, width: float) -> Array:
    """Anti-aliased inside indicator of a signed distance (negative inside)."""
    return np.clip(0.5 - sd / width, 0.0, 1.0)


def gauss(d: Array, sigma: float) -> Array:
    """Unnormalised Gaussian profile exp(-d^2 / 2 sigma^2)."""
    return np.exp((d * d) * (-0.5 / (sigma * sigma)))


def ellipse_sd(x: Array, y: Array, cx: float, cy: float, ax: float, ay: float) -> Array:
    """Approximate signed distance to an axis-aligned ellipse (accurate near its edge)."""
    ux, uy = (x - cx) / ax, (y - cy) / ay
    grad = 2.0 * np.sqrt((ux / ax) ** 2 + (uy / ay) ** 2) + 1e-6
    return (ux * ux + uy * uy - 1.0) / grad


def graph_line(
    u: Array, v: Array, knots_u: list[float], knots_v: list[float], sigma: float
) -> Array:
    """Gaussian stroke along the piecewise-linear graph v = f(u) over the knots' u range."""
    ku, kv = np.asarray(knots_u, np.float32), np.asarray(knots_v, np.float32)
    slope = np.diff(kv) / np.maximum(np.diff(ku), 1e-6)
    s = np.interp(u, 0.5 * (ku[1:] + ku[:-1]), slope).astype(np.float32)
    d = (v - np.interp(u, ku, kv).astype(np.float32)) / np.sqrt(1.0 + s * s)
    return gauss(d, sigma) * ramp(np.maximum(ku[0] - u, u - ku[-1]), 2.0 * sigma)


def union(a: Array, b: Array) -> Array:
    """Probabilistic union of two opacity maps in [0, 1]."""
    return 1.0 - (1.0 - a) * (1.0 - b)


def random_side(rng: np.random.Generator) -> int:
    """A random side: +1 image right (patient's left), -1 image left."""
    return 1 if rng.random() < 0.5 else -1


class Scene:
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
            ellipse_sd(self.lat, self.y, 0.0, self.lcy, self.lax, self.lay), self.y - self.dome
        )
        self.lung = ramp(self.lung_sd, 3.0 * self.px)

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


class Layers:
    """Finding contributions: air-space opacity, extra density and pneumothorax lucency."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.opac = np.zeros(shape, np.float32)
        self.extra = np.zeros(shape, np.float32)
        self.ptx = np.zeros(shape, np.float32)
        self.ptx_gain = 0.0

    def fill(self, w: Window, opacity: Array) -> None:
        """Fill air space on a window with ``opacity`` in [0, 1]."""
        self.opac[w] = union(self.opac[w], opacity)
