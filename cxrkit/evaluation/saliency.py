"""How well a saliency map points at a finding's true region (boxes of :mod:`cxrkit.data.boxes`,
already in the map's pixels; several boxes of one finding are one region, their union).

* The pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", IJCV
  2018, Sec. 5.1): a *hit* when the map's maximum lies in the region or within ``tolerance``
  pixels of it (they allow 15 pixels), else a miss; the hit rate over the images is the score.
  The maximum is the pixel holding the map's largest value (:func:`map_peak`: where several hold
  it exactly, as on the plateaus of a coarse map resized up, the one nearest their mean position),
  taken at its centre ``(column + 0.5, row + 0.5)``; its distance to a box ``[x0, x1] x [y0, y1]``
  is the Euclidean distance to the nearest point of the box (0 inside). A flat map (no pixel
  above another: nothing localised) is a miss. Their centre baseline points at the image centre
  (:func:`centre_hit`).
* The energy share, the energy-based pointing game of Wang et al. ("Score-CAM: Score-Weighted
  Visual Explanations for Convolutional Neural Networks", CVPR Workshops 2020, Sec. 5.2): the
  share of the map's total (non-negative) value on the region's pixels (pixels whose centre lies
  in a box), ``sum_region m / sum_all m``, on the un-normalised ReLU Grad-CAM (or that map over its
  maximum: :func:`cxrkit.models.saliency.raw_grad_cam`): a map min-max scaled first (as
  pytorch-grad-cam's) loses its floor, which inflates the share of a coarse map positive
  everywhere. A flat map is a uniform one: its share is the region's
  share of the pixels, which is also the baseline of a map with no information (:func:`region_share`).
"""

from __future__ import annotations

import numpy as np

#: Pixels of the map, per side, per pixel of pointing-game tolerance by default (:func:`default_tolerance`).
TOLERANCE_DIVISOR = 16


def default_tolerance(side: int) -> float:
    """The default pointing-game tolerance on a ``side``-pixel map: ``round(side / 16)`` pixels
    (14 at 224 px, near Zhang et al.'s 15; 8 at 128; 3 at 48)."""
    return float(round(side / TOLERANCE_DIVISOR))


def _boxes(boxes: np.ndarray) -> np.ndarray:
    arr = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if not len(arr):
        raise ValueError("a region needs at least one box (x0, y0, x1, y1)")
    return arr


def region_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of an ``(H, W)`` map whose centre lies in any of the ``(K, 4)`` boxes
    ``x0, y0, x1, y1`` (edges included)."""
    arr = _boxes(boxes)
    cy, cx = np.arange(shape[0]) + 0.5, np.arange(shape[1]) + 0.5
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in arr:
        mask |= ((cy >= y0) & (cy <= y1))[:, None] & ((cx >= x0) & (cx <= x1))[None, :]
    return mask


def distance_to_region(x: float, y: float, boxes: np.ndarray) -> float:
    """Euclidean distance from the point ``(x, y)`` to the nearest box (0 inside one)."""
    arr = _boxes(boxes)
    dx = np.maximum.reduce([arr[:, 0] - x, np.zeros(len(arr)), x - arr[:, 2]])
    dy = np.maximum.reduce([arr[:, 1] - y, np.zeros(len(arr)), y - arr[:, 3]])
    return float(np.sqrt(dx * dx + dy * dy).min())


def is_flat(smap: np.ndarray) -> bool:
    """Whether a map has no pixel above another (nothing localised)."""
    return bool(np.ptp(smap) == 0) if np.size(smap) else True


def map_peak(smap: np.ndarray) -> tuple[int, int]:
    """``(row, column)`` of a map's maximum: of the pixels holding its largest value exactly, the
    one nearest their mean position (the first in row-major order among equally near ones), so a
    plateau is pointed at in its middle, not at its first corner."""
    smap = np.asarray(smap)
    rows, cols = np.nonzero(smap == smap.max())
    k = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return int(rows[k]), int(cols[k])


def pointing_hit(smap: np.ndarray, boxes: np.ndarray, tolerance: float = 0.0) -> bool:
    """The pointing game on one map: its maximum (:func:`map_peak`, at the pixel centre) within
    ``tolerance`` pixels of the region; a flat map is a miss."""
    smap = np.asarray(smap)
    if is_flat(smap):
        return False
    row, col = map_peak(smap)
    return distance_to_region(col + 0.5, row + 0.5, boxes) <= tolerance


def centre_hit(shape: tuple[int, int], boxes: np.ndarray, tolerance: float = 0.0) -> bool:
    """Zhang et al.'s centre baseline: the image centre ``(W / 2, H / 2)`` within ``tolerance``
    pixels of the region."""
    return distance_to_region(shape[1] / 2.0, shape[0] / 2.0, boxes) <= tolerance


def energy_share(smap: np.ndarray, boxes: np.ndarray) -> float:
    """Share of a non-negative map's total on the region's pixels; a flat map counts as uniform
    (:func:`region_share`).

    Raises:
        ValueError: a map with a negative value.
    """
    smap = np.asarray(smap, dtype=float)
    if (smap < 0).any():
        raise ValueError("energy_share needs a non-negative map (Grad-CAM's is, after its ReLU)")
    if is_flat(smap) or smap.sum() == 0.0:
        return region_share(smap.shape, boxes)
    return float(smap[region_mask(boxes, smap.shape)].sum() / smap.sum())


def region_share(shape: tuple[int, int], boxes: np.ndarray) -> float:
    """The region's share of an ``(H, W)`` map's pixels: the energy share of a uniform map."""
    return float(region_mask(boxes, shape).mean())
