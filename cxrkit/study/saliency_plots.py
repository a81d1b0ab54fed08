"""Figures of ``09_saliency``: example maps over their images with the true region outlined
(:func:`saliency_examples`) and the pointing-game hit rate per finding and variant
(:func:`pointing_bars`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from cxrkit.data.boxes import scale_boxes
from cxrkit.evaluation.saliency import is_flat, map_peak
from cxrkit.study import plots as _plots  # noqa: F401  (the study's matplotlib backend and theme)
from cxrkit.study.data import is_phantom
from cxrkit.study.saliency import Saliency, reference_sizes


def _example_rows(sal: Saliency, n_examples: int) -> list[int]:
    """One item per label (its first), for at most ``n_examples`` labels in label order."""
    first = sal.items.reset_index(drop=True).groupby("label", sort=False).head(1)
    return list(first.index[:n_examples])


def _outline(ax: plt.Axes, boxes: np.ndarray) -> None:
    """Draw boxes given in pixel edges on an ``imshow`` axis (whose pixel centres are integers)."""
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.2))


def saliency_examples(sal: Saliency, cfg, n_examples: int = 6, alpha: float = 0.45) -> plt.Figure:
    """One row per example (a finding's first image), one column per variant: the input image in
    grey, the variant's Grad-CAM map over it (jet colour map, 0 to 1, more opaque where higher), the
    true region outlined in green where there is one, and the map's maximum marked with a white
    cross (none on a flat map).

    Args:
        sal: :func:`cxrkit.study.saliency.run_saliency`'s result.
        cfg: the study (for decoding the stored images' sizes).
        n_examples: at most this many findings.
        alpha: the map's opacity.
    """
    rows = _example_rows(sal, n_examples)
    variants = list(sal.maps)
    fig, axes = plt.subplots(max(len(rows), 1), max(len(variants), 1), squeeze=False,
                             figsize=(2.3 * max(len(variants), 1), 2.5 * max(len(rows), 1)))
    for ax in axes.ravel():
        ax.axis("off")
    items = sal.items.reset_index(drop=True)
    sizes = (reference_sizes(items.loc[rows], sal.boxes, is_phantom(cfg), cfg.image_policy)
             if sal.boxes is not None and rows else {})
    for r, i in enumerate(rows):
        image, label = items.loc[i, "image"], items.loc[i, "label"]
        for c, variant in enumerate(variants):
            vm, ax = sal.maps[variant], axes[r, c]
            ax.imshow(vm.images[i], cmap="gray", vmin=0, vmax=255)
            smap = np.clip(vm.maps[i], 0.0, 1.0)
            ax.imshow(smap, cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha * smap)
            if sizes:
                b = scale_boxes(sal.boxes, sizes, vm.side)
                _outline(ax, b.loc[(b["image"] == image) & (b["label"] == label), ["x0", "y0", "x1", "y1"]].to_numpy())
            if not is_flat(smap):
                row, col = map_peak(smap)
                ax.plot(col, row, marker="+", color="white", markersize=9, markeredgewidth=1.5)
            ax.set_title(f"{variant}\n{label}" if c == 0 else variant, fontsize=8)
    fig.suptitle("Grad-CAM of each finding's refined logit (fold ensemble), true region in green", fontsize=10)
    fig.tight_layout()
    return fig


def pointing_bars(table: pd.DataFrame, title: str = "Pointing game: hit rate per finding") -> plt.Figure:
    """Grouped horizontal bars: one group per finding, one bar per variant and the centre baseline
    (the columns of the pointing-game table but ``images``)."""
    data = table.drop(columns="images", errors="ignore")
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(data) * max(1, len(data.columns) / 3) + 1.5))
    data.iloc[::-1].plot.barh(ax=ax, width=0.8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("hit rate (map maximum in the true region, with the tolerance)")
    ax.set_ylabel("")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
