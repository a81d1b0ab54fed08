"""The normal anatomy of a phantom radiograph: body and soft tissue, mediastinum and heart (with
Cardiomegaly and Enlarged Cardiomediastinum), spine, airways, clavicles, the gastric bubble, the
ribs (with a Fracture) and the vessels; and the lungs' aeration."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from cxrkit.phantom.scene import (
    N_RIBS,
    RIB_AMP,
    RIB_GROW,
    RIB_S0,
    Array,
    Scene,
    Window,
    ellipse_sd,
    gauss,
    graph_line,
    ramp,
    random_side,
)


def draw_vessels(sc: Scene, rng: np.random.Generator) -> Array:
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


def draw_ribs(sc: Scene, fracture: tuple[float, np.random.Generator] | None) -> Array:
    """Posterior ribs as bright arcs plus faint anterior ribs, optionally with one fracture."""
    t = sc.ax_
    u = sc.y + 0.80 - (-0.5 * t + 1.2 * t * t)  # below the first rib, along the arc family
    grow = 1.0 + RIB_GROW * np.maximum(u, -0.5)  # interspaces widen towards the base
    phase = np.log(grow) / (RIB_GROW * RIB_S0)
    local = RIB_S0 * grow
    k = np.floor(phase + 0.5)
    half, edge = 0.22 * local, 1.5 * sc.px
    dist = np.abs(phase - k) * local
    valid = (k >= 0) & (k < N_RIBS)
    band = ramp(dist - half, edge) * (0.75 + 0.25 * gauss(dist - half, 0.006))
    callus = 0.0
    if fracture is not None:
        sev, frng = fracture
        side = random_side(frng)
        kf = float(frng.integers(2, 8))
        tf = frng.uniform(0.3, 0.55)
        sign = random_side(frng)
        step = (0.8 + 1.6 * sev) * half * sign  # displacement of the lateral fragment ...
        angle = 0.25 * sev * sign  # ... and its angulation
        gap = (0.4 + 1.0 * sev) * half
        on_side = sc.sg == side
        lateral = on_side & (t > tf)
        rel = (phase - kf) * local
        shifted = np.abs(rel - step - angle * (t - tf))
        moved = ramp(shifted - half, edge) * (shifted < 0.5 * local)
        band = np.where(lateral & (k == kf), 0.0, band) + np.where(lateral, moved, 0.0)
        valid = valid | (lateral & (shifted < half + 2 * edge))
        cut = ramp(np.abs(t - tf) - gap, edge) * on_side
        band = band * (1.0 - cut * (np.abs(rel) < 2.5 * half + np.abs(step)))
        # Healing callus: a fusiform swelling around the break.
        along, across = (t - tf) / (0.035 + 0.025 * sev), (rel - 0.5 * step) / (1.8 * half)
        callus = np.exp(-0.5 * (along * along + across * across)) * on_side * (0.8 + 1.6 * sev)
    cage = ramp(np.maximum(t - 0.84, 0.04 - t), 0.06)
    ant_phase = (sc.y + 0.45 * t + 0.5) / 0.16
    ka = np.floor(ant_phase + 0.5)
    ant = ramp(np.abs(ant_phase - ka) * 0.16 - 0.025, 0.02) * ((ka >= 0) & (ka < 6) & (t > 0.15))
    return cage * (RIB_AMP * (band * valid + callus) + 0.03 * ant)


def _soft_tissue(sc: Scene, rng: np.random.Generator) -> Array:
    """Normal soft-tissue overlap: smooth density undulations and, at random, breast shadows."""
    out = np.zeros_like(sc.x)
    for _ in range(6):
        cx, cy, sig = rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.7), rng.uniform(0.12, 0.3)
        amp = rng.normal(0.0, 0.025)
        w = sc.window(cx - 3 * sig, cx + 3 * sig, cy - 3 * sig, cy + 3 * sig)
        out[w] += amp * gauss(np.sqrt((sc.x[w] - cx) ** 2 + (sc.y[w] - cy) ** 2), sig)
    if rng.random() < 0.4:
        amp, cy, r = rng.uniform(0.03, 0.08), rng.uniform(0.35, 0.6), rng.uniform(0.28, 0.4)
        w = sc.window(-1.0, 1.0, cy - r - 0.05, cy + r + 0.05)
        x, y = sc.x[w], sc.y[w]
        fade = np.clip((y - cy + r) / r, 0.0, 1.0)  # sharp lower contour, fading upwards
        for side in (-1, 1):
            out[w] += amp * fade * ramp(ellipse_sd(x, y, side * 0.5, cy, 1.1 * r, r), 0.04)
    return out


def draw_anatomy(
    sc: Scene,
    bg: dict[str, float],
    sev: Mapping[str, float],
    frng: Mapping[str, np.random.Generator],
    view_ap: bool,
    rng: np.random.Generator,
) -> tuple[Array, Array]:
    """Density of body, soft tissue, mediastinum, heart, spine, airways and clavicles; and lung
    aeration."""
    x, y = sc.x, sc.y
    torso = ellipse_sd(x, y, 0.0, 0.3, 1.0, 1.3)
    shoulder_top = -0.86 + 0.3 * np.maximum(sc.ax_ - 0.3, 0.0) ** 2
    neck = np.maximum(sc.ax_ - 0.27, -0.7 - y)
    body = ramp(np.minimum(np.maximum(torso, shoulder_top - y), neck), 0.1)
    dens = 0.04 + (bg["tissue"] + _soft_tissue(sc, rng)) * body

    w = sc.window(-0.7, 0.9, -1.0, 0.85)
    medi = _mediastinum(sc, w, bg, sev, frng)
    heart = _heart(sc, w, bg, sev, view_ap)
    dens[w] += _midline(sc, w, medi, heart)

    w2 = sc.window(-0.85, 0.85, -0.95, -0.55)
    dens[w2] += 0.11 * graph_line(
        sc.ax_[w2], y[w2], [0.08, 0.3, 0.55, 0.78], [-0.66, -0.72, -0.76, -0.82], 0.022
    )
    bx, by = 0.42, sc.dome_base[1] + 0.17  # gastric bubble under the left dome
    w3 = sc.window(bx - 0.15, bx + 0.15, by - 0.12, by + 0.12)
    dens[w3] -= 0.12 * ramp(ellipse_sd(x[w3], y[w3], bx, by, 0.09, 0.06), 0.04) * body[w3]

    inner = np.clip(sc.lung_sd * (-1.0 / 0.18), 0.0, 1.0)  # thinner chest wall cover inside
    lucent = sc.lung * (0.7 + 0.3 * inner)
    lucent[w] *= (1.0 - 0.9 * heart) * (1.0 - medi)
    return dens, lucent


def _mediastinum(sc: Scene, w: Window, bg: dict[str, float], sev: Mapping[str, float],
                 frng: Mapping[str, np.random.Generator]) -> Array:
    """Mediastinum (upper band with the aortic knob) on window ``w``; Enlarged Cardiomediastinum
    widens it."""
    xw, yw, px = sc.x[w], sc.y[w], sc.px
    medi_w, knob, enlarge = bg["medi_w"], bg["knob"], 0.0
    if "Enlarged Cardiomediastinum" in sev:
        s = sev["Enlarged Cardiomediastinum"]
        enlarge = max(0.11 * s - 0.01, 0.0) * frng["Enlarged Cardiomediastinum"].uniform(0.85, 1.15)
        knob += 0.02 * s
    upper = np.clip((yw + 0.05) / 0.3, 0.0, 1.0)  # 0 in the upper mediastinum, 1 at the heart
    medi_half = medi_w + enlarge * (1.0 - upper) + 0.05 * upper
    medi = ramp(np.abs(xw - 0.02) - medi_half, 3 * px) * ramp(yw - 0.5, 0.05)
    kx = medi_w + 0.6 * enlarge + 0.03
    return np.maximum(medi, ramp(np.sqrt((xw - kx) ** 2 + (yw + 0.3) ** 2) - knob, 3 * px))


def _heart(sc: Scene, w: Window, bg: dict[str, float], sev: Mapping[str, float], view_ap: bool) -> Array:
    """Heart on window ``w``: a tilted ellipse on the left dome, 1/3 right and 2/3 left of the
    midline; Cardiomegaly enlarges it, an AP view magnifies it by 8%."""
    xw, yw, px = sc.x[w], sc.y[w], sc.px
    ctr = bg["ctr"] + (0.03 + 0.15 * sev["Cardiomegaly"] if "Cardiomegaly" in sev else 0.0)
    hw = ctr * sc.thorax_half * (1.08 if view_ap else 1.0)  # half of the heart's width
    ct, st = math.cos(bg["heart_tilt"]), math.sin(bg["heart_tilt"])
    a_h = hw / math.sqrt(ct * ct + 0.56 * st * st)  # long semi-axis; the short one is 0.75x
    vh = a_h * math.sqrt(st * st + 0.56 * ct * ct)  # vertical half-extent
    cx, cy = hw / 3.0, sc.dome_base[1] + 0.06 - vh
    hx, hy = (xw - cx) * ct + (yw - cy) * st, -(xw - cx) * st + (yw - cy) * ct
    heart = ramp(ellipse_sd(hx, hy, 0.0, 0.0, a_h, 0.75 * a_h), 2.5 * px)
    heart *= ramp(yw - sc.dome[w], 3 * px)  # merges into the diaphragm
    return heart


def _midline(sc: Scene, w: Window, medi: Array, heart: Array) -> Array:
    """Density added on window ``w`` by the mediastinum, heart, spine, trachea, bronchi and hila."""
    xw, yw, px = sc.x[w], sc.y[w], sc.px
    spine = ramp(np.abs(xw) - 0.065, 4 * px) * (0.85 + 0.15 * np.cos(yw * (2 * math.pi / 0.13)))
    trachea_x = 0.015 + 0.02 * np.clip(-yw - 0.2, 0.0, 1.0)
    trachea = ramp(np.abs(xw - trachea_x) - 0.032, 3 * px) * ramp(yw + 0.22, 0.04)
    bronchi = graph_line(xw, yw, [-0.17, -0.03, 0.04, 0.17], [-0.05, -0.21, -0.21, -0.07], 0.022)
    hila = gauss(np.sqrt((np.abs(xw) - 0.19) ** 2 + yw * yw), 0.06)
    return (
        0.08 * medi
        + 0.05 * heart * (1.0 - medi)
        + 0.08 * spine
        - 0.1 * trachea * (1.0 - 0.3 * spine)
        - 0.07 * bronchi
        + 0.05 * hila * sc.lung[w]
    )
