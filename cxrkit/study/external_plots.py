"""Figures of ``07_external`` (matplotlib): macro AUC at both sites against their oracle ceilings,
the variants' gains over the baseline at both sites, per-label AUC changes and the prevalence
shift against the change of the mean predicted probability. Each function returns a Figure; the
notebook saves it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline") else None
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cxrkit.study.external_analysis import ORACLE, SITES  # noqa: E402

_SITE_STYLE = {"internal": ("C0", "o", -0.15), "external": ("C3", "s", 0.15)}


def _errorbars(ax: plt.Axes, table: pd.DataFrame, estimate: str, low: str, high: str, y: np.ndarray, site: str,
               label: str) -> None:
    """Horizontal points with their CIs at rows ``y`` shifted by the site's offset."""
    colour, marker, dy = _SITE_STYLE[site]
    est = table[estimate].astype(float)
    err = np.nan_to_num(np.vstack([est - table[low].astype(float), table[high].astype(float) - est]))
    ax.errorbar(est, y + dy, xerr=err, fmt=marker, color=colour, capsize=3, label=label)


def macro_sites(macro: pd.DataFrame, site: str) -> plt.Figure:
    """Every variant's macro AUC on the internal test split and at the external site (95% CIs);
    the oracle ceilings as vertical lines (phantom)."""
    models = macro.drop(index=[ORACLE], errors="ignore")
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(models) + 1.8))
    y = np.arange(len(models))
    for s, name in zip(SITES, ("internal test", f"external ({site})")):
        _errorbars(ax, models, s, f"{s} low", f"{s} high", y, s, name)
        if ORACLE in macro.index and np.isfinite(macro.loc[ORACLE, s]):
            ax.axvline(macro.loc[ORACLE, s], color=_SITE_STYLE[s][0], ls="--", lw=1, label=f"oracle, {name}")
    ax.set_yticks(y, models.index)
    ax.invert_yaxis()
    ax.set_xlabel("macro AUC (95% CI, patient bootstrap)")
    ax.set_title("Internal test vs external site")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def gain_sites(gain: pd.DataFrame, site: str) -> plt.Figure:
    """Every variant's macro AUC gain over the baseline at both sites (paired bootstrap 95% CIs)."""
    fig, ax = plt.subplots(figsize=(7, 0.6 * max(len(gain), 1) + 1.8))
    y = np.arange(len(gain))
    for s, name in zip(SITES, ("internal test", f"external ({site})")):
        _errorbars(ax, gain, f"{s} gain", f"{s} low", f"{s} high", y, s, name)
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_yticks(y, gain.index)
    ax.invert_yaxis()
    ax.set_xlabel("macro AUC gain over the baseline (95% CI)")
    ax.set_title("Does the coupling's gain transfer?")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def per_label_change(per_label: pd.DataFrame) -> plt.Figure:
    """Per label, every model's AUC change from the internal to the external site."""
    change = per_label["change"].unstack(level="model").reindex(
        index=per_label.index.get_level_values("label").unique(),
        columns=per_label.index.get_level_values("model").unique())
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(change) * max(1, len(change.columns)) / 1.5 + 1.5))
    change.plot.barh(ax=ax, width=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("AUC, external - internal")
    ax.set_title("Per-label AUC change at the external site")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def prevalence_shift(prev: pd.DataFrame, models: list[str], site: str) -> plt.Figure:
    """Left: each label's prevalence on the training part and at the external site. Right: the
    change of each model's mean predicted probability (external - internal test) against the change
    of the observed prevalence, with the diagonal a calibrated model follows."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.3 * len(prev) + 2.5))
    prev[["train prevalence", "external prevalence"]].rename(
        columns={"external prevalence": f"{site} prevalence"}).plot.barh(ax=left, width=0.8)
    left.invert_yaxis()
    left.set_xlabel("share of positive images")
    left.set_title("Prevalence: training part vs external site")
    d_prev = prev["external prevalence"] - prev["internal prevalence"]
    for i, m in enumerate(models):
        d_p = prev[f"{m} mean p external"] - prev[f"{m} mean p internal"]
        right.scatter(d_prev, d_p, s=18, marker="x" if m == ORACLE else "o", color=f"C{i}", label=m)
    lim = np.nanmax(np.abs(np.r_[d_prev.to_numpy(dtype=float), 1e-3])) * 1.1
    right.plot([-lim, lim], [-lim, lim], color="0.5", lw=0.8, ls="--", label="follows the prevalence")
    right.axhline(0, color="k", lw=0.5)
    right.axvline(0, color="k", lw=0.5)
    right.set_xlabel("prevalence change (external - internal test)")
    right.set_ylabel("mean predicted probability change")
    right.set_title("Do the probabilities follow the prevalence shift?")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig
