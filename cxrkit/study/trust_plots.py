"""Figures of ``08_trust`` (matplotlib): reliability diagrams, calibration errors, operating points
and subgroup gaps. Each function returns a Figure; the notebook saves it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline") else None
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cxrkit.evaluation.calibration import expected_calibration_error, reliability  # noqa: E402
from cxrkit.evaluation.operating_points import RATES  # noqa: E402


def _reliability_panel(ax: plt.Axes, y: np.ndarray, series: Mapping[str, np.ndarray], n_bins: int, title: str) -> None:
    """One reliability diagram: the diagonal, and per series its equal-mass bins (mean predicted vs
    observed, with the Wilson 95% interval of the observed frequency) and its ECE in the legend."""
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    for name, p in series.items():
        bins = reliability(y, p, n_bins)
        if bins.empty:
            continue
        err = [bins["observed"] - bins["observed low"], bins["observed high"] - bins["observed"]]
        ax.errorbar(bins["mean predicted"], bins["observed"], yerr=err, fmt="o-", ms=3, lw=1, capsize=2, alpha=0.8,
                    label=f"{name} (ECE {expected_calibration_error(y, p, n_bins):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=5.5, loc="upper left")


def reliability_grid(y: np.ndarray, series: Mapping[str, np.ndarray], labels: Sequence[str], n_bins: int,
                     title: str, cols: int = 5) -> plt.Figure:
    """Reliability diagrams of (N, L) scores: one panel per label and one of every entry pooled, each
    series (e.g. as predicted, after temperature scaling, after Platt scaling) a line."""
    n = len(labels) + 1
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for j, lab in enumerate(labels):
        _reliability_panel(axes.ravel()[j], y[:, j], {k: v[:, j] for k, v in series.items()}, n_bins, lab)
    _reliability_panel(axes.ravel()[len(labels)], y.ravel(), {k: v.ravel() for k, v in series.items()}, n_bins,
                       "all labels pooled")
    fig.supxlabel("mean predicted probability (equal-mass bin)")
    fig.supylabel("observed frequency (Wilson 95% CI)")
    fig.suptitle(f"{title} ({n_bins} equal-mass bins)")
    fig.tight_layout()
    return fig


def pooled_reliability(y: np.ndarray, scores: Mapping[tuple[str, str], np.ndarray], n_bins: int,
                       title: str) -> plt.Figure:
    """One pooled reliability diagram per variant (every (image, label) entry), its recalibrations as
    lines; ``scores`` maps (variant, calibration) to (N, L) probabilities."""
    variants = list(dict.fromkeys(v for v, _ in scores))
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.8), squeeze=False)
    for ax, v in zip(axes.ravel(), variants):
        _reliability_panel(ax, y.ravel(), {c: s.ravel() for (w, c), s in scores.items() if w == v}, n_bins, v)
    fig.supxlabel("mean predicted probability (equal-mass bin)")
    fig.supylabel("observed frequency")
    fig.suptitle(f"{title} ({n_bins} equal-mass bins, all labels pooled)")
    fig.tight_layout()
    return fig


def ece_bars(overview: pd.DataFrame, column: str = "ECE (macro)") -> plt.Figure:
    """Bars of one calibration number per variant (groups) and calibration (bars)."""
    wide = overview[column].unstack("calibration")
    wide = wide[[c for c in ("none", "temperature", "platt") if c in wide.columns]].loc[
        list(dict.fromkeys(overview.index.get_level_values("variant")))]
    fig, ax = plt.subplots(figsize=(1.6 * len(wide) + 2, 3.8))
    wide.plot.bar(ax=ax, rot=20)
    ax.set_ylabel(column)
    ax.set_title(f"Test ensembles: {column}, {int(overview['bins'].iloc[0])} equal-mass bins")
    ax.legend(title="calibration", fontsize=8)
    fig.tight_layout()
    return fig


def operating_points_figure(table: pd.DataFrame, title: str) -> plt.Figure:
    """Per method (a panel) and label (a row): test sensitivity and specificity at the thresholds
    chosen on the out-of-fold validation predictions, with their 95% intervals."""
    methods = list(dict.fromkeys(table["method"]))
    labels = list(dict.fromkeys(table["label"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 0.32 * len(labels) + 1.8),
                             sharey=True, squeeze=False)
    pos = np.arange(len(labels))
    for ax, method in zip(axes.ravel(), methods):
        part = table[table["method"] == method].set_index("label").reindex(labels)
        for k, rate in enumerate(RATES[:2]):
            est = part[f"test {rate}"]
            err = [est - part[f"test {rate} low"], part[f"test {rate} high"] - est]
            ax.errorbar(est, pos + (k - 0.5) * 0.3, xerr=err, fmt="o", ms=3, capsize=2, label=rate)
        ax.set_title(method, fontsize=9)
        ax.set_xlim(-0.02, 1.02)
        ax.legend(fontsize=7)
    axes[0, 0].set_yticks(pos, labels, fontsize=8)
    axes[0, 0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def subgroup_gaps(gap: pd.DataFrame, title: str) -> plt.Figure:
    """Forest plot of subgroup AUC gaps (group minus reference) with 95% intervals; one row per
    (variant, attribute, comparison, label) of ``gap``."""
    df = gap.reset_index()
    names = [" | ".join(str(x) for x in r) for r in df[list(gap.index.names)].itertuples(index=False)]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(df) + 1.5))
    y = np.arange(len(df))
    ax.errorbar(df["gap"], y, xerr=[df["gap"] - df["low"], df["high"] - df["gap"]], fmt="o", ms=3, capsize=2)
    ax.axvline(0.0, color="k", lw=0.8, ls="--")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("AUC difference (95% CI)")
    ax.set_title(title)
    fig.tight_layout()
    return fig
