"""Figures of the study (matplotlib/seaborn). Each function returns a Figure; the notebook saves it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline") else None
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from cxrkit.data.images import ImagePolicy, load_image  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def prevalence_bars(prev: pd.DataFrame, title: str = "Positive cases per label") -> plt.Figure:
    """Paper Fig. 2: number of positives per label, sorted."""
    p = prev.sort_values("positives", ascending=True)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.barh(p.index, p["positives"], color=sns.color_palette("crest", len(p)))
    for i, (n, r) in enumerate(zip(p["positives"], p["prevalence"])):
        ax.text(n, i, f" {n} ({r:.1%})", va="center", fontsize=8)
    ax.set_xlabel("positive images")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def image_grid(table: pd.DataFrame, labels: Sequence[str], n: int = 12, seed: int = 0, size: int = 192,
               cols: int = 4, policy: ImagePolicy | None = None) -> plt.Figure:
    """Paper Fig. 3: sample images with their positive labels (and view), decoded under ``policy``
    (the study's ``image_policy``; None: defaults)."""
    rows = table.sample(n=min(n, len(table)), random_state=seed)
    nrows = int(np.ceil(len(rows) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 3.9 * nrows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, (_, r) in zip(np.ravel(axes), rows.iterrows()):
        ax.imshow(load_image(r["path"], size, policy), cmap="gray", vmin=0, vmax=255)
        pos = [lab for lab in labels if r[lab] == 1]
        ax.set_title(f"{r['image']} ({r['view']})\n" + "\n".join(pos[:4]) + ("\n..." if len(pos) > 4 else ""),
                     fontsize=7)
    fig.tight_layout()
    return fig


def heatmap(df: pd.DataFrame, title: str, center: float | None = 0.0, cmap: str = "vlag", fmt: str = ".2f",
            annot: bool = True, vmin: float | None = None, vmax: float | None = None, ax: plt.Axes | None = None) -> plt.Figure:
    """A labelled square heatmap (correlations, conditional probabilities, couplings)."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(9, 7.5))
    else:
        fig = ax.figure
    data = df.replace([np.inf, -np.inf], np.nan)
    sns.heatmap(data, ax=ax, cmap=cmap, center=center, annot=annot, fmt=fmt, annot_kws={"fontsize": 6},
                vmin=vmin, vmax=vmax, square=True, cbar_kws={"shrink": 0.7})
    ax.set_title(title)
    if own:
        fig.tight_layout()
    return fig


def side_by_side(mats: Mapping[str, pd.DataFrame], title: str, center: float = 0.0, cmap: str = "vlag") -> plt.Figure:
    """Several matrices with one shared, symmetric colour scale."""
    vmax = max(float(np.nanmax(np.abs(m.replace([np.inf, -np.inf], np.nan).to_numpy()))) for m in mats.values()) or 1.0
    fig, axes = plt.subplots(1, len(mats), figsize=(8 * len(mats), 7))
    for ax, (name, m) in zip(np.atleast_1d(axes), mats.items()):
        heatmap(m, name, center=center, cmap=cmap, annot=False, vmin=-vmax, vmax=vmax, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def learning_curves(histories: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Train/validation loss and validation macro AUC per epoch, one line per run."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, h in histories.items():
        axes[0].plot(h["epoch"], h["train_loss"], marker="o", label=name)
        axes[1].plot(h["epoch"], h["val_loss"], marker="o", label=name)
        axes[2].plot(h["epoch"], h["val_macro_auc"], marker="o", label=name)
    for ax, t in zip(axes, ("train loss", "validation loss", "validation macro AUC")):
        ax.set_xlabel("epoch")
        ax.set_title(t)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def per_label_bars(df: pd.DataFrame, title: str, xlabel: str = "") -> plt.Figure:
    """Grouped horizontal bars: one row per label, one bar per column of ``df``."""
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(df) * max(1, len(df.columns)) / 1.5 + 1.5))
    df.plot.barh(ax=ax, width=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def probability_histograms(probs: np.ndarray, y: np.ndarray, labels: Sequence[str], bins: int = 25) -> plt.Figure:
    """Paper Fig. 8: per-label histograms of predicted probabilities, split by the true label."""
    cols = 4
    nrows = int(np.ceil(len(labels) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(14, 2.6 * nrows), sharex=True)
    for ax in np.ravel(axes)[len(labels):]:
        ax.axis("off")
    edges = np.linspace(0, 1, bins + 1)
    for j, (ax, lab) in enumerate(zip(np.ravel(axes), labels)):
        for val, color, name in ((0, "tab:blue", "negative"), (1, "tab:red", "positive")):
            sel = y[:, j] == val
            ax.hist(probs[sel, j], bins=edges, alpha=0.6, color=color, label=name)
        ax.set_title(lab, fontsize=9)
        ax.set_yscale("log")
    np.ravel(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def forest(df: pd.DataFrame, estimate: str, low: str, high: str, title: str, ref: float | None = None) -> plt.Figure:
    """Point estimates with confidence intervals, one row per index entry."""
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(df) + 1.5))
    y = np.arange(len(df))
    ax.errorbar(df[estimate], y, xerr=[df[estimate] - df[low], df[high] - df[estimate]], fmt="o", capsize=4)
    if ref is not None:
        ax.axvline(ref, color="k", lw=0.8, ls="--")
    ax.set_yticks(y, df.index)
    ax.invert_yaxis()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def gain_vs_cooccurrence_figure(top3: pd.Series, gains: Mapping[str, pd.Series], title: str,
                                trend: pd.DataFrame | None = None) -> plt.Figure:
    """Rawlekar et al. Fig. 2: one labelled scatter per gain (e.g. ΔAP, then ΔAUC) against the
    mean top-3 conditional probability, each with a least-squares line and, from ``trend``
    (indexed by the gain names), the Spearman rho and p-value in its title."""
    fig, axes = plt.subplots(1, len(gains), figsize=(6.5 * len(gains), 5), squeeze=False)
    for ax, (name, y) in zip(axes[0], gains.items()):
        both = pd.concat([top3.rename("x"), y.rename("y")], axis=1, join="inner").dropna()
        ax.scatter(both["x"], both["y"])
        for lab, r in both.iterrows():
            ax.annotate(lab, (r["x"], r["y"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if len(both) >= 2 and both["x"].nunique() > 1:
            slope, icpt = np.polyfit(both["x"], both["y"], 1)
            xs = np.linspace(both["x"].min(), both["x"].max(), 2)
            ax.plot(xs, slope * xs + icpt, color="C1", lw=1)
        ax.axhline(0, color="k", lw=0.8)
        sub = name
        if trend is not None and name in trend.index:
            sub += f": Spearman rho {trend.loc[name, 'spearman rho']:.2f} (p = {trend.loc[name, 'p-value']:.2g})"
        ax.set_title(sub, fontsize=10)
        ax.set_xlabel("mean top-3 conditional probability (training part)")
        ax.set_ylabel(f"{name} (test ensemble)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def lambda_sweep_figure(sweep: pd.DataFrame) -> plt.Figure:
    """Macro AUC (validation mean +- sd over folds, test ensemble; left) and the fraction of
    non-zero couplings (right) against the L1 strength lambda (symlog axis, so lambda = 0 is
    shown), one series per ``loss_reduction`` (a table without that column is ``sum``): under
    ``mean`` the same lambda is L times stronger relative to the data term."""
    s = sweep.copy()
    if "loss_reduction" not in s.columns:
        s["loss_reduction"] = "sum"
    lam_all = s["l1_lambda"].astype(float)
    linthresh = max(1e-5, float(lam_all[lam_all > 0].min()) if (lam_all > 0).any() else 1e-5)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    order = [r for r in ("sum", "mean") if r in set(s["loss_reduction"])]
    order += sorted(set(s["loss_reduction"]) - set(order))
    for i, reduction in enumerate(order):
        g = s[s["loss_reduction"] == reduction].sort_values("l1_lambda")
        lam, color = g["l1_lambda"].astype(float), f"C{i}"
        ax.errorbar(lam, g["val macro AUC (mean)"].astype(float), yerr=g["val macro AUC (sd)"].astype(float).fillna(0),
                    marker="o", capsize=4, color=color, label=f"{reduction}: validation (mean +- sd over folds)")
        ax.plot(lam, g["test ensemble macro AUC"].astype(float), marker="s", ls="--", color=color,
                label=f"{reduction}: test (fold ensemble)")
        ax2.plot(lam, g["non-zero couplings"].astype(float), marker="^", color=color, label=f"loss reduction {reduction}")
    for a in (ax, ax2):
        a.set_xscale("symlog", linthresh=linthresh)
        a.set_xlabel("L1 strength lambda")
    ax.set_ylabel("macro AUC")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Macro AUC")
    ax2.set_ylabel("fraction of non-zero couplings")
    ax2.set_ylim(0, 1.05)
    ax2.legend(fontsize=8)
    ax2.set_title("Non-zero couplings")
    fig.suptitle("Sparse refiner: lambda sweep under each loss reduction")
    fig.tight_layout()
    return fig
