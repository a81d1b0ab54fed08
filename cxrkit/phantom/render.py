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
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from cxrkit.data.labels import CHEXPERT_LABELS
from cxrkit.phantom.anatomy import draw_anatomy, draw_ribs, draw_vessels
from cxrkit.phantom.findings import DRAWERS
from cxrkit.phantom.scanner import DEFAULT_SCANNER, Scanner
from cxrkit.phantom.scene import HABITUS_KEYS, LUNG_DARK, Layers, Scene

#: Findings the renderer can draw, in label order ("No Finding" is the absence of all).
FINDINGS: tuple[str, ...] = tuple(lab for lab in CHEXPERT_LABELS if lab != "No Finding")


def _check(size: int, findings: Mapping[str, float], habitus: Mapping[str, float], scanner: Scanner) -> None:
    """Validate the inputs, naming what is wrong."""
    if not isinstance(scanner, Scanner):
        raise ValueError(f"scanner must be a Scanner, got {scanner!r}")
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
    scanner: Scanner = DEFAULT_SCANNER,
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
        scanner: the site's film ranges, exposure and field of view (:class:`Scanner`; a crop
            renders the whole field at side ``scanner.render_side(size)`` and keeps its centre).
            Every scanner makes the same random draws; the default is the design page's film.

    Returns:
        The radiograph, shape (size, size), dtype uint8.

    Raises:
        ValueError: naming an unknown finding, a severity outside [0, 1], a missing
            habitus key or a scanner that is not a Scanner.
    """
    _check(size, findings, habitus, scanner)
    drawing = draw(int(size), findings, habitus, view_ap, rng, scanner)
    img = _expose(film_image(drawing), drawing.film, rng)
    return drawing.keep(img)


@dataclass(frozen=True)
class Drawing:
    """One radiograph drawn up to its air-space and density findings, which :func:`film_image`
    adds on every call from fresh generators (so a finding can be left out of a second call and
    everything else stays the same: :mod:`cxrkit.phantom.regions`).

    Attributes:
        sc: the scene (patient coordinates of the whole field, ``scanner.render_side(size)`` px).
        dens, lucent, ribs, vessels: the anatomy's density (with Cardiomegaly, Enlarged
            Cardiomediastinum), the lungs' aeration, the ribs (with a Fracture) and the vessels.
        bg, film, brightness: the background draws, the film's draws, the brightness (the
            patient's times the scanner's exposure).
        sev: every drawn finding's severity; ``seeds``: the seed of each one's generator.
        out_size: the side kept (the scanner's field of view: the centre ``out_size`` pixels).
    """

    sc: Scene
    dens: np.ndarray
    lucent: np.ndarray
    ribs: np.ndarray
    vessels: np.ndarray
    bg: dict[str, float]
    film: dict[str, float]
    brightness: float
    sev: dict[str, float]
    seeds: dict[str, int]
    out_size: int

    @property
    def top(self) -> int:
        """First row (and column) of the whole field that the saved image keeps."""
        return (self.sc.size - self.out_size) // 2

    def keep(self, img: np.ndarray) -> np.ndarray:
        """The scanner's field of view of a whole-field image: its centre ``out_size`` pixels."""
        top = self.top
        return np.ascontiguousarray(img[top : top + self.out_size, top : top + self.out_size])


def draw(size: int, findings: Mapping[str, float], habitus: Mapping[str, float], view_ap: bool,
         rng: np.random.Generator, scanner: Scanner = DEFAULT_SCANNER) -> Drawing:
    """Every draw of :func:`render` but the pixel noise, in its order, and the anatomy (inputs as
    :func:`render`'s, unchecked); ``rng`` is left where the noise is drawn."""
    out_size, size = int(size), scanner.render_side(int(size))
    sev = {k: float(v) for k, v in findings.items()}

    # Background randomness first, then one child seed per possible finding.
    jitter, bg, film, lung = _background(rng, size, scanner)
    texture_rng = np.random.default_rng(rng.integers(2**63))
    seeds = rng.integers(2**63, size=len(FINDINGS))
    seed_of = {name: int(seeds[i]) for i, name in enumerate(FINDINGS) if name in sev}
    frng = {name: np.random.default_rng(seed) for name, seed in seed_of.items()}

    sc = Scene(size, habitus, jitter, lung)
    dens, lucent = draw_anatomy(sc, bg, sev, frng, view_ap, texture_rng)
    fracture = (sev["Fracture"], frng["Fracture"]) if "Fracture" in sev else None
    ribs = draw_ribs(sc, fracture)
    vessels = draw_vessels(sc, texture_rng)
    return Drawing(sc, dens, lucent, ribs, vessels, bg, film, float(habitus["brightness"]) * scanner.exposure,
                   sev, seed_of, out_size)


def film_image(drawing: Drawing, leave_out: str | None = None) -> np.ndarray:
    """The whole field as the film shows it before the pixel noise (float32 in [0, brightness]):
    the air-space and density findings drawn (each from a fresh generator of its seed; not
    ``leave_out``), composed with the anatomy, blurred and exposed."""
    d, sc = drawing, drawing.sc
    ly = Layers(d.dens.shape)
    for name in FINDINGS:
        if name in d.sev and name in DRAWERS and name != leave_out:
            DRAWERS[name](sc, ly, d.sev[name], np.random.default_rng(d.seeds[name]))

    air = d.lucent * (1.0 - ly.opac)
    dens = d.dens + (
        d.ribs * (0.35 + 0.65 * d.lucent)
        - LUNG_DARK * air * (1.0 + ly.ptx_gain * ly.ptx)
        + d.bg["vessels"] * d.vessels * air * (1.0 - ly.ptx)
        + ly.extra
    )
    return _film(dens, sc, d.film, d.brightness)


def _background(rng: np.random.Generator, size: int, scanner: Scanner) -> tuple[
        tuple[float, ...], dict[str, float], dict[str, float], tuple[float, ...]]:
    """The image's background randomness, drawn first and in this order: pose jitter, anatomy
    (``bg``), film (blur, noise, contrast, gamma: one uniform draw each from the scanner's ranges;
    exposure tilt) and lung shape."""
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
    film = {"blur": rng.uniform(*scanner.blur) * size / 128.0, "noise_sd": rng.uniform(*scanner.noise_sd)}
    film["contrast"], film["gamma"] = rng.uniform(*scanner.contrast), rng.uniform(*scanner.gamma)
    film["tilt_x"], film["tilt_y"] = rng.normal(0, 0.04), rng.normal(0, 0.04)
    lung = (  # lung width and height scale, lateral dome curvature, left dome drop
        rng.normal(1.0, 0.04),
        rng.normal(1.0, 0.04),
        rng.uniform(1.0, 1.7),
        rng.normal(0.06, 0.03),
    )
    return jitter, bg, film, lung


def _film(dens: np.ndarray, sc: Scene, film: dict[str, float], brightness: float) -> np.ndarray:
    """The film before its noise: blur, heel effect, contrast, gamma and brightness (the patient's
    times the scanner's exposure)."""
    img = gaussian_filter(dens, film["blur"], mode="nearest", truncate=3.0)
    img *= 1.0 + film["tilt_x"] * sc.x + film["tilt_y"] * sc.y  # heel effect / uneven exposure
    return np.clip((img - 0.3) * film["contrast"] + 0.3, 0.0, 1.0) ** film["gamma"] * brightness


def _expose(img: np.ndarray, film: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """The film's pixel noise (drawn from ``rng``, last), then 8 bits."""
    size = img.shape[0]
    img += film["noise_sd"] * rng.standard_normal((size, size), dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
