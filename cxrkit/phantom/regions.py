"""Where each drawn finding is on a phantom image: ``regions.csv``, written by
:func:`cxrkit.phantom.generate.generate` beside ``truth.csv``, one row per image and drawn finding.

A finding's region comes from the renderer's own drawing code, as a counterfactual: its
*contribution* is ``|F(all drawn findings) - F(all but this one)|``, where ``F`` is the noiseless
film image (:func:`cxrkit.phantom.render.film_image`: the same scene, anatomy, film draws and
other findings; each finding draws from its own generator, so leaving one out changes nothing
else). An air-space or density finding is left out of the composition; Cardiomegaly, Enlarged
Cardiomediastinum and Fracture, drawn with the anatomy, by drawing the image again without them.
The contribution is taken on the whole rendered field (a site that crops renders a larger field,
:class:`cxrkit.phantom.scanner.Scanner`) and the region is the bounding box of the pixels where
it exceeds :data:`FRACTION` of its peak, clipped to the saved image and shifted with the crop:
pixel-edge coordinates of the saved image (``x0 <= column < x1``, ``y0 <= row < y1``;
:mod:`cxrkit.data.boxes`). The box is the same in every image format (they decode to the same
pixels). A finding whose above-threshold pixels all fall outside the saved image has no row.

Columns: ``Image_name, finding, x0, y0, x1, y1`` (integers), ``pixels`` (how many pixels of the
saved image are above the threshold) and ``peak`` (the contribution's peak over the whole field,
in grey levels of the 8-bit image: how strongly the finding is drawn, before the pixel noise).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.data.boxes import box_table
from cxrkit.data.tables import DataError, check_keys
from cxrkit.phantom.findings import DRAWERS
from cxrkit.phantom.render import FINDINGS, draw, film_image
from cxrkit.phantom.scanner import DEFAULT_SCANNER, Scanner
from cxrkit.utils.paths import resolve

#: The sidecar's file name.
REGIONS = "regions.csv"
#: Its columns, in order.
REGION_COLUMNS: tuple[str, ...] = ("Image_name", "finding", "x0", "y0", "x1", "y1", "pixels", "peak")
#: Share of a finding's peak contribution above which a pixel is in its region.
FRACTION = 0.1


def contributions(size: int, findings: Mapping[str, float], habitus: Mapping[str, float], view_ap: bool,
                  seed: int, scanner: Scanner = DEFAULT_SCANNER) -> tuple[dict[str, np.ndarray], int]:
    """Each drawn finding's own contribution to an image, on the whole rendered field.

    Args:
        size, findings, habitus, view_ap, scanner: as :func:`cxrkit.phantom.render.render`'s.
        seed: the image seed (the image is ``render(..., np.random.default_rng(seed), scanner)``).

    Returns:
        ``({finding: |F(all) - F(all but it)|}, top)``: float arrays of the whole field's side
        (in units of the full grey range), and the first row and column the saved image keeps.
    """
    drawing = draw(size, findings, habitus, view_ap, np.random.default_rng(seed), scanner)
    full = film_image(drawing)
    out: dict[str, np.ndarray] = {}
    for name in drawing.sev:
        if name in DRAWERS:
            other = film_image(drawing, leave_out=name)
        else:  # drawn with the anatomy: the image drawn again without it
            rest = {k: v for k, v in findings.items() if k != name}
            other = film_image(draw(size, rest, habitus, view_ap, np.random.default_rng(seed), scanner))
        out[name] = np.abs(full - other)
    return out, drawing.top


def region_box(contribution: np.ndarray, top: int, side: int, fraction: float = FRACTION) -> tuple[int, ...] | None:
    """The box of the pixels whose contribution exceeds ``fraction`` of its peak (over the whole
    field), inside the saved ``side`` x ``side`` image that starts at row and column ``top``.

    Returns:
        ``(x0, y0, x1, y1, pixels)`` in pixel edges of the saved image, or None when no pixel of
        it is above the threshold (or the contribution is zero everywhere).
    """
    peak = float(contribution.max())
    if peak <= 0.0:
        return None
    above = contribution[top : top + side, top : top + side] > fraction * peak
    rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1, int(above.sum())


def finding_regions(name: str, size: int, findings: Mapping[str, float], habitus: Mapping[str, float],
                    view_ap: bool, seed: int, scanner: Scanner = DEFAULT_SCANNER,
                    fraction: float = FRACTION) -> list[tuple]:
    """The ``regions.csv`` rows of one image (``name``; the other arguments as :func:`contributions`'),
    in the renderer's finding order."""
    contrib, top = contributions(size, findings, habitus, view_ap, seed, scanner)
    rows = []
    for finding in contrib:
        box = region_box(contrib[finding], top, int(size), fraction)
        if box is not None:
            rows.append((name, finding, *box, float(contrib[finding].max()) * 255.0))
    return sorted(rows, key=lambda r: FINDINGS.index(r[1]))


def read_regions(root: str | Path) -> pd.DataFrame:
    """A phantom's ``regions.csv`` as a box table (:func:`cxrkit.data.boxes.box_table`: ``image``,
    ``label``, ``x0..y1``, ``source`` = ``phantom``) with its ``pixels`` and ``peak``.

    Raises:
        DataError: no ``regions.csv`` (a phantom written before regions existed: regenerate it with
            ``cxrkit synth``), or one that is not a regions table or lists an image and finding on several rows.
    """
    path = resolve(root) / REGIONS
    if not path.is_file():
        raise DataError(f"{path.parent}: no {REGIONS}, where each drawn finding is: this phantom was generated "
                        f"before cxrkit wrote its regions; regenerate it with `cxrkit synth` (same arguments, "
                        f"--overwrite: the images and labels come out byte-identical); a study regenerates its "
                        f"phantom itself")
    raw = pd.read_csv(path, dtype={"Image_name": str, "finding": str}, keep_default_na=False,
                      na_values={c: [""] for c in REGION_COLUMNS if c not in ("Image_name", "finding")})
    missing = [c for c in REGION_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; a regions table has {list(REGION_COLUMNS)}")
    check_keys(raw["Image_name"] + " / " + raw["finding"], path, "Image_name / finding")
    table = box_table(raw.rename(columns={"Image_name": "image", "finding": "label"}).assign(source="phantom"),
                      where=str(path))
    return table.assign(pixels=raw["pixels"].to_numpy(), peak=raw["peak"].to_numpy())
