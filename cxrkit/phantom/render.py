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

from collections.abc import Mapping

import numpy as np
from scipy.ndimage import gaussian_filter

from cxrkit.data.labels import CHEXPERT_LABELS
from cxrkit.phantom.anatomy import draw_anatomy, draw_ribs, draw_vessels
from cxrkit.phantom.findings import DRAWERS
from cxrkit.phantom.scene import HABITUS_KEYS, LUNG_DARK, Layers, Scene

#: Findings the renderer can draw, in label order ("No Finding" is the absence of all).
FINDINGS: tuple[str, ...] = tuple(lab for lab in CHEXPERT_LABELS if lab != "No Finding")


def _check(size: int, findings: Mapping[str, float], habitus: Mapping[str, float]) -> None:
    """Validate the inputs, naming what is wrong."""
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    for name, sev in findings.items():
        if name not in FINDINGS:
            raise ValueError(f"unknown finding {name!r}; known: {list(FINDINGS)}")
        if not 0.0 <= float(sev) <= 1.0:
            raise ValueError(f"severity of {name!r} must be in [0, 1], got {sev!r}")
    missing = [k for k in HABITUS_KEYS if k not in habitus]
    if missing:
        raise ValueError(f"habitus is missing {missing}; needs {list(HABITUS_KEYS)}")


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
    jitter, bg, film, lung = _background(rng, size)
    texture_rng = np.random.default_rng(rng.integers(2**63))
    seeds = rng.integers(2**63, size=len(FINDINGS))
    frng = {name: np.random.default_rng(seeds[i]) for i, name in enumerate(FINDINGS) if name in sev}

    sc = Scene(size, habitus, jitter, lung)
    dens, lucent = draw_anatomy(sc, bg, sev, frng, view_ap, texture_rng)
    fracture = (sev["Fracture"], frng["Fracture"]) if "Fracture" in sev else None
    ribs = draw_ribs(sc, fracture)
    vessels = draw_vessels(sc, texture_rng)
    ly = Layers(dens.shape)
    for name in FINDINGS:
        if name in sev and name in DRAWERS:
            DRAWERS[name](sc, ly, sev[name], frng[name])

    air = lucent * (1.0 - ly.opac)
    dens += (
        ribs * (0.35 + 0.65 * lucent)
        - LUNG_DARK * air * (1.0 + ly.ptx_gain * ly.ptx)
        + bg["vessels"] * vessels * air * (1.0 - ly.ptx)
        + ly.extra
    )
    return _expose(dens, sc, film, float(habitus["brightness"]), rng)


def _background(rng: np.random.Generator, size: int) -> tuple[tuple[float, ...], dict[str, float],
                                                              dict[str, float], tuple[float, ...]]:
    """The image's background randomness, drawn first and in this order: pose jitter, anatomy
    (``bg``), film (blur, noise, contrast, gamma, exposure tilt) and lung shape."""
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
    film = {"blur": rng.uniform(0.35, 0.75) * size / 128.0, "noise_sd": rng.uniform(0.015, 0.035)}
    film["contrast"], film["gamma"] = rng.uniform(0.85, 1.15), rng.uniform(0.8, 1.2)
    film["tilt_x"], film["tilt_y"] = rng.normal(0, 0.04), rng.normal(0, 0.04)
    lung = (  # lung width and height scale, lateral dome curvature, left dome drop
        rng.normal(1.0, 0.04),
        rng.normal(1.0, 0.04),
        rng.uniform(1.0, 1.7),
        rng.normal(0.06, 0.03),
    )
    return jitter, bg, film, lung


def _expose(dens: np.ndarray, sc: Scene, film: dict[str, float], brightness: float,
            rng: np.random.Generator) -> np.ndarray:
    """The film: blur, heel effect, contrast, gamma, brightness and noise, then 8 bits."""
    size = dens.shape[0]
    img = gaussian_filter(dens, film["blur"], mode="nearest", truncate=3.0)
    img *= 1.0 + film["tilt_x"] * sc.x + film["tilt_y"] * sc.y  # heel effect / uneven exposure
    img = np.clip((img - 0.3) * film["contrast"] + 0.3, 0.0, 1.0) ** film["gamma"] * brightness
    img += film["noise_sd"] * rng.standard_normal((size, size), dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
