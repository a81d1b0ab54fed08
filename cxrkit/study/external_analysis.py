"""The analyses of external validation (``07_external``) on prediction arrays, independent of
where they come from: a study's internal test split and another site, each a :class:`Site` (true
labels, patient ids, every variant's scores and, on a phantom, the exact oracle's).

* :func:`macro_table` -- every variant's macro AUC at both sites with patient-bootstrap CIs, the
  change, and each against its site's oracle ceiling.
* :func:`per_label_table` -- the same per label (each label's AUC with its own CI).
* :func:`gain_table`, :func:`gain_per_label` -- every variant's gain over the baseline at each site
  (paired patient bootstrap) and how much of it is left at the other site.
* :func:`common_labels` -- the labels scorable at both sites, and those left out.
* :func:`prevalence_table`, :func:`prevalence_summary` -- the prevalence shift and the mean
  predicted probability per label: do the probabilities follow the new prevalence?

Every AUC is over the labels scorable at that site (both classes among the known entries); the
caller restricts both sites to the labels scorable at *both* (:func:`common_labels`,
:meth:`Site.select`), so that a change (external - internal) compares the same labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.evaluation.bootstrap import LabelsTooRare, bootstrap_macro_auc, paired_bootstrap_diff
from cxrkit.evaluation.metrics import macro_auc, per_label_auc

ORACLE = "oracle"  #: the row of the phantom's exact oracle posterior
SITES = ("internal", "external")  #: the two sites' names in the tables' columns


@dataclass
class Site:
    """The evaluated images of one site.

    Attributes:
        y: (N, L) true labels, 1/0, NaN where unknown.
        groups: (N,) patient ids (the bootstrap resamples patients).
        scores: variant -> (N, L) probabilities (first: the baseline).
        oracle: (N, L) the phantom's exact oracle posterior, or None (real data).
    """

    y: np.ndarray
    groups: np.ndarray
    scores: dict[str, np.ndarray]
    oracle: np.ndarray | None = None

    def models(self) -> dict[str, np.ndarray]:
        """Every variant's scores, then the oracle's when there is one."""
        return {**self.scores, **({ORACLE: self.oracle} if self.oracle is not None else {})}

    def select(self, columns: Sequence[int]) -> Site:
        """The same images over the label columns ``columns`` (positions, in that order)."""
        cols = list(columns)
        return Site(self.y[:, cols], self.groups, {k: v[:, cols] for k, v in self.scores.items()},
                    None if self.oracle is None else self.oracle[:, cols])


def common_labels(internal: Site, external: Site, labels: Sequence[str]) -> tuple[list[str], pd.DataFrame]:
    """The labels scorable at both sites (both classes among the known entries at each), in the
    order of ``labels`` (the sites' columns), and those left out.

    Returns:
        ``(kept, dropped)``: the kept labels' names; ``dropped`` indexed by label, with each site's
        known ``positives`` and ``negatives`` (``internal positives``, ...) and the ``reason``.
    """
    kept, dropped = [], {}
    for j, label in enumerate(labels):
        counts = {f"{s} {c}": int((site.y[:, j] == v).sum()) for s, site in zip(SITES, (internal, external))
                  for c, v in (("positives", 1), ("negatives", 0))}
        single = [s for s in SITES if not (counts[f"{s} positives"] and counts[f"{s} negatives"])]
        if single:
            dropped[label] = {**counts, "reason": f"a single class among the known entries at {' and '.join(single)}"}
        else:
            kept.append(label)
    columns = [*(f"{s} {c}" for s in SITES for c in ("positives", "negatives")), "reason"]
    return kept, pd.DataFrame.from_dict(dropped, orient="index", columns=columns).rename_axis("label")


def auc_ci(site: Site, scores: np.ndarray, labels: Sequence[str], n_boot: int, seed: int) -> dict[str, float]:
    """Macro AUC of ``scores`` at ``site`` over ``labels`` with its patient-bootstrap 95% CI
    (:func:`cxrkit.evaluation.bootstrap.bootstrap_macro_auc`); a CI the resampling cannot give
    (a label too rare to keep both classes) is NaN, the estimate is kept."""
    try:
        b = bootstrap_macro_auc(site.y, scores, n_boot=n_boot, seed=seed, groups=site.groups, labels=list(labels))
    except ValueError:
        return {"auc": macro_auc(site.y, scores), "low": float("nan"), "high": float("nan")}
    return {"auc": b["estimate"], "low": b["low"], "high": b["high"]}


def _site_columns(values: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{site: {auc, low, high}}`` as the columns ``internal``, ``internal low``, ``internal high``, ..."""
    cols: dict[str, float] = {}
    for site in SITES:
        v = values.get(site, {"auc": np.nan, "low": np.nan, "high": np.nan})
        cols |= {site: v["auc"], f"{site} low": v["low"], f"{site} high": v["high"]}
    cols["change"] = cols["external"] - cols["internal"]
    return cols


def macro_table(internal: Site, external: Site, labels: Sequence[str], n_boot: int = 1000,
                seed: int = 0) -> pd.DataFrame:
    """Macro AUC of every variant (and the oracle) at both sites.

    Returns:
        One row per variant, then ``oracle`` where a site has one; columns ``internal``,
        ``internal low``, ``internal high`` (95% CI), the same for ``external``, ``change``
        (external - internal) and ``internal / oracle``, ``external / oracle`` (the share of the
        site's oracle ceiling; NaN without an oracle).
    """
    sites = dict(zip(SITES, (internal, external)))
    names = list(dict.fromkeys([*internal.models(), *external.models()]))
    rows = {}
    for name in names:
        rows[name] = _site_columns({s: auc_ci(site, site.models()[name], labels, n_boot, seed)
                                    for s, site in sites.items() if name in site.models()})
    table = pd.DataFrame(rows).T
    for s in SITES:
        oracle = table.loc[ORACLE, s] if ORACLE in table.index else np.nan
        table[f"{s} / oracle"] = table[s] / oracle
    return table


def per_label_table(internal: Site, external: Site, labels: Sequence[str], n_boot: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """Each label's AUC of every variant (and the oracle) at both sites, each with its own
    patient-bootstrap 95% CI (NaN for a label not scorable at a site).

    Returns:
        Indexed by (model, label); columns as :func:`macro_table` without the oracle shares.
    """
    sites = dict(zip(SITES, (internal, external)))
    names = list(dict.fromkeys([*internal.models(), *external.models()]))
    rows = {}
    for name in names:
        for j, label in enumerate(labels):
            values = {}
            for s, site in sites.items():
                if name not in site.models():
                    continue
                y, sc = site.y[:, [j]], site.models()[name][:, [j]]
                known = y[~np.isnan(y)]
                if len(np.unique(known)) == 2:
                    values[s] = auc_ci(Site(y, site.groups, {}), sc, [label], n_boot, seed)
            rows[(name, label)] = _site_columns(values)
    table = pd.DataFrame(rows).T
    table.index = table.index.set_names(["model", "label"])
    return table


#: what the gain table's CIs cover (each variant's fold ensemble is trained with one seed)
GAIN_COVERS = "sampling of each site's patients (patient bootstrap); one training seed per variant"


def gain_table(internal: Site, external: Site, labels: Sequence[str], n_boot: int = 1000,
               seed: int = 0) -> pd.DataFrame:
    """Every variant's gain over the baseline (the first variant) in macro AUC at each site, with
    its paired patient-bootstrap 95% CI (:func:`cxrkit.evaluation.bootstrap.paired_bootstrap_diff`;
    internal resampled with ``seed``, external with ``seed + 1``), and the change of the gain from
    the internal to the external site.

    The two sites' patients are independent samples, so external replicate ``i`` minus internal
    replicate ``i`` is a draw of the change from the product of the two bootstrap distributions;
    the change's CI is the percentile interval of those differences. A site whose bootstrap cannot
    keep every label scorable (a label too rare for its patients) gets NaN CIs and p, its gain on
    the data, and the reason in ``note``.

    Returns:
        One row per non-baseline variant: ``internal gain``, ``internal low``, ``internal high``,
        ``internal p``, the same for ``external``, ``change``, ``change low``, ``change high``,
        ``gain kept`` (external gain / internal gain; NaN unless the internal gain's CI excludes
        0, where the ratio would divide by noise), ``note`` ("" or why a CI is missing) and ``CI
        covers`` (:data:`GAIN_COVERS`: the CIs cover the sampling of each site's patients only).
    """
    base = next(iter(internal.scores))
    rows, notes = {}, {}
    for v in list(internal.scores)[1:]:
        row: dict[str, float] = {}
        reps, why = [], []
        for k, (s, site) in enumerate(zip(SITES, (internal, external))):
            gain, r, error = _site_gain(site, base, v, labels, n_boot, seed + k)
            row |= {f"{s} {c}": x for c, x in gain.items()}
            reps.append(r)
            why += [f"{s}: no CI ({error})"] if error else []
        change = row["external gain"] - row["internal gain"]
        low = high = np.nan
        if reps[0] is not None and reps[1] is not None:
            low, high = np.nanquantile(reps[1] - reps[0], [0.025, 0.975])
        clear = row["internal low"] > 0 or row["internal high"] < 0  # NaN compares False: no ratio
        row |= {"change": change, "change low": low, "change high": high,
                "gain kept": row["external gain"] / row["internal gain"] if clear else np.nan}
        rows[f"{v} - {base}"], notes[f"{v} - {base}"] = row, "; ".join(why)
    table = pd.DataFrame(rows, index=_gain_columns(), dtype=float).T
    table["note"] = pd.Series(notes, dtype=object)
    table["CI covers"] = GAIN_COVERS
    return table


def _site_gain(site: Site, base: str, variant: str, labels: Sequence[str], n_boot: int,
               seed: int) -> tuple[dict[str, float], np.ndarray | None, str]:
    """``variant``'s macro AUC gain over ``base`` at ``site`` (``gain``, ``low``, ``high``, ``p``), its
    bootstrap replicates and ""; or, when the bootstrap refuses (a label too rare), the gain on
    the data with NaN CI and p, None and the error's message."""
    try:
        d = paired_bootstrap_diff(site.y, site.scores[base], site.scores[variant], n_boot=n_boot, seed=seed,
                                  groups=site.groups, labels=list(labels), return_replicates=True)
    except LabelsTooRare as exc:
        gain = macro_auc(site.y, site.scores[variant]) - macro_auc(site.y, site.scores[base])
        return {"gain": gain, "low": np.nan, "high": np.nan, "p": np.nan}, None, str(exc)
    return {"gain": d["diff"], "low": d["low"], "high": d["high"], "p": d["p_value"]}, d["replicates"], ""


def _gain_columns() -> list[str]:
    cols = [f"{s} {c}" for s in SITES for c in ("gain", "low", "high", "p")]
    return [*cols, "change", "change low", "change high", "gain kept"]


def gain_per_label(internal: Site, external: Site, labels: Sequence[str]) -> pd.DataFrame:
    """Each label's AUC gain of every variant over the baseline at both sites and its change.

    Returns:
        Indexed by label; for each non-baseline variant ``v``: ``v internal``, ``v external`` and
        ``v change`` (external - internal).
    """
    base = next(iter(internal.scores))
    cols = {}
    for v in list(internal.scores)[1:]:
        gains = {s: per_label_auc(site.y, site.scores[v], labels) - per_label_auc(site.y, site.scores[base], labels)
                 for s, site in zip(SITES, (internal, external))}
        cols |= {f"{v} internal": gains["internal"], f"{v} external": gains["external"],
                 f"{v} change": gains["external"] - gains["internal"]}
    return pd.DataFrame(cols, index=list(labels))


def _prevalence(y: np.ndarray) -> np.ndarray:
    """Share of positives among each label's known entries (NaN when none is known)."""
    known = ~np.isnan(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known, y, 0).sum(axis=0) / known.sum(axis=0)


def _mean_probability(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each label's mean predicted probability over the images where the label is known."""
    known = ~np.isnan(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known, scores, 0).sum(axis=0) / known.sum(axis=0)


def prevalence_table(train_y: np.ndarray, internal: Site, external: Site, labels: Sequence[str]) -> pd.DataFrame:
    """The prevalence shift and the mean predicted probability per label.

    Returns:
        Indexed by label: ``train prevalence`` (the study's training part), ``internal prevalence``
        (its test split), ``external prevalence``, ``prevalence shift`` (external - train); then
        for every variant (and the oracle when both sites have one) ``<model> mean p internal`` and
        ``<model> mean p external`` (over the images where the label is known).
    """
    cols = {"train prevalence": _prevalence(train_y), "internal prevalence": _prevalence(internal.y),
            "external prevalence": _prevalence(external.y)}
    cols["prevalence shift"] = cols["external prevalence"] - cols["train prevalence"]
    for name in _shared_models(internal, external):
        for s, site in zip(SITES, (internal, external)):
            cols[f"{name} mean p {s}"] = _mean_probability(site.y, site.models()[name])
    return pd.DataFrame(cols, index=list(labels))


def _shared_models(internal: Site, external: Site) -> list[str]:
    return [m for m in internal.models() if m in external.models()]


def prevalence_summary(table: pd.DataFrame) -> pd.DataFrame:
    """How every model's mean predicted probability follows the prevalence, from
    :func:`prevalence_table`.

    Returns:
        One row per model: ``mean p - prevalence internal`` and ``... external`` (the mean over
        labels of the mean predicted probability minus the observed prevalence: calibration in
        the large, signed), ``|mean p - prevalence| internal`` and ``... external`` (the same,
        absolute), and ``shift followed``: the least-squares slope through the origin, over the
        labels, of the change of the mean predicted probability (external - internal) on the change
        of the observed prevalence (external - internal test); 1: the probabilities move with
        the prevalence (as the oracle's do), 0: they do not move.
    """
    d_prev = table["external prevalence"] - table["internal prevalence"]
    rows = {}
    for name in [c[: -len(" mean p internal")] for c in table.columns if c.endswith(" mean p internal")]:
        row: dict[str, Any] = {}
        for s in SITES:
            gap = table[f"{name} mean p {s}"] - table[f"{s} prevalence"]
            row[f"mean p - prevalence {s}"] = float(gap.mean())
            row[f"|mean p - prevalence| {s}"] = float(gap.abs().mean())
        d_p = table[f"{name} mean p external"] - table[f"{name} mean p internal"]
        ok = d_p.notna() & d_prev.notna()
        denom = float((d_prev[ok] ** 2).sum())
        row["shift followed"] = float((d_p[ok] * d_prev[ok]).sum() / denom) if denom > 0 else float("nan")
        rows[name] = row
    return pd.DataFrame(rows).T
