"""Where a finding is on an image: one table of boxes for every source (a dataset's radiologist
boxes, the phantom's drawn regions), and boxes scaled to another image size.

The table (:data:`BOX_COLUMNS`) has one row per box: ``image`` (the dataset table's image id),
``label`` (in the kit's vocabulary), ``x0, y0, x1, y1`` and ``source`` (who drew it: ``nih``,
``vindr R8``, ``phantom``). Coordinates are pixel edges of the stored image: the box covers
``x0 <= x < x1`` and ``y0 <= y < y1`` with ``x`` to the image right and ``y`` down, so pixel
``(row i, column j)`` is inside when its centre ``(j + 0.5, i + 0.5)`` is, and resizing the image
by a factor scales the box by the same factor. Several rows of one image and label are one region,
their union (several lesions, or several readers).

The pixel grid a box is drawn on (its *reference grid*) is the one its source published, not
necessarily the stored file's: NIH's boxes are on the 1024 x 1024 originals, VinDr's on the
DICOM's Rows x Columns, while a copy (NIH's 224 or 512 px sets, Kaggle's VinDr PNGs) is smaller.
A table may carry it in the optional :data:`REF_COLUMNS` ``ref_width, ref_height`` (NaN: the
source's stored file's own grid, e.g. the phantom's images or a VinDr DICOM, whose header gives
it); :func:`scale_boxes` scales from it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrkit.data.tables import DataError

#: Columns of a box table, in order.
BOX_COLUMNS: tuple[str, ...] = ("image", "label", "x0", "y0", "x1", "y1", "source")
#: The coordinate columns.
CORNERS: tuple[str, ...] = ("x0", "y0", "x1", "y1")
#: Optional columns: the (width, height) of the pixel grid the box is drawn on (NaN: not given).
REF_COLUMNS: tuple[str, ...] = ("ref_width", "ref_height")


def empty_boxes() -> pd.DataFrame:
    """A box table without rows."""
    return box_table(pd.DataFrame({c: pd.Series(dtype=float if c in CORNERS else object) for c in BOX_COLUMNS}))


def box_table(df: pd.DataFrame, where: str = "boxes") -> pd.DataFrame:
    """``df``'s :data:`BOX_COLUMNS` (and :data:`REF_COLUMNS` where it has them), checked: ids and
    labels as text, corners finite numbers with ``x0 < x1`` and ``y0 < y1``, a reference grid
    positive or NaN.

    Raises:
        DataError: a missing column or a bad box, naming ``where`` and the first rows.
    """
    missing = [c for c in BOX_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: no column(s) {missing}; a box table has {list(BOX_COLUMNS)}")
    out = df.loc[:, list(BOX_COLUMNS) + [c for c in REF_COLUMNS if c in df.columns]].reset_index(drop=True)
    for col in REF_COLUMNS:
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
            if (out[col] <= 0).any():
                raise DataError(f"{where}: {col} must be a positive number of pixels (or empty), got "
                                f"{out.loc[out[col] <= 0, col].head(5).tolist()}")
    for col in ("image", "label", "source"):
        out[col] = out[col].astype(str).astype(object)
    corners = out[list(CORNERS)].apply(pd.to_numeric, errors="coerce").astype(float)
    bad = ~np.isfinite(corners.to_numpy()).all(axis=1) | (corners["x1"] <= corners["x0"]).to_numpy() | (
        corners["y1"] <= corners["y0"]).to_numpy()
    if bad.any():
        rows = out.loc[bad].head(5).to_dict("records")
        raise DataError(f"{where}: {int(bad.sum())} box(es) without finite corners x0 < x1, y0 < y1: {rows}")
    out[list(CORNERS)] = corners
    return out


def scale_boxes(boxes: pd.DataFrame, sizes: dict[str, tuple[float, float]], side: int) -> pd.DataFrame:
    """Boxes on images resized to ``side`` x ``side`` pixels (as the kit resizes them for a model).

    Args:
        boxes: a box table; a row with ``ref_width``/``ref_height`` is drawn on that grid.
        sizes: image id -> the (width, height) of the grid its other rows are drawn on (the
            reference grid, see the module: not the stored file's size when that is a copy).
        side: the side of the resized square image.

    Returns:
        The rows of images in ``sizes``, x scaled by ``side / width``, y by ``side / height``.
    """
    out = boxes.loc[boxes["image"].isin(sizes.keys())].reset_index(drop=True)
    wh = np.array([sizes[i] for i in out["image"]], dtype=float).reshape(-1, 2)
    for k, col in enumerate(REF_COLUMNS):
        if col in out.columns:
            given = out[col].to_numpy(dtype=float)
            wh[:, k] = np.where(np.isnan(given), wh[:, k], given)
    for cols, k in ((("x0", "x1"), 0), (("y0", "y1"), 1)):
        for c in cols:
            out[c] = out[c].to_numpy(dtype=float) * side / wh[:, k]
    return out
