"""A study's test ensemble within subgroups (``08_trust``): per-label and macro AUC by sex, age band
(``cfg.age_bands``) and view position with patient-bootstrap intervals and the gaps between groups
(:func:`cxrkit.evaluation.subgroups.subgroup_auc`); the shipped operating points within each group;
and, for one label, the view confounder side by side with the phantom's exact oracle.

On the phantom the view is a confounder of Cardiomegaly (``shared/design/synthetic_cxr.md``): AP
films are drawn for 80% of critical studies and 25% of the others, and an AP film magnifies the
heart by 8%. Critical care does not cause Cardiomegaly (the cardiac cause does), so its prevalence
is the same on AP and PA films, and the oracle, which sees what is drawn and not the view, ranks
both alike. A model that reads the heart's width from the pixels sees every AP heart wider: it
gives AP films higher Cardiomegaly probabilities whether or not the heart is enlarged (mean
predicted above the observed prevalence on AP, below on PA), so one threshold calls more false
positives on AP films (lower specificity, higher sensitivity), and a faint enlargement on a PA film
can score below a normal AP heart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cxrkit.evaluation.operating_points import YOUDEN, threshold_performance
from cxrkit.evaluation.subgroups import age_bands, group_shift, subgroup_auc
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import dataset_table, patient_ids, true_labels
from cxrkit.study.runs import main_variant
from cxrkit.study.trust import ORACLE, ensemble_predictions, oof_predictions, oracle_predictions

CONFOUNDED = "Cardiomegaly"  #: the phantom's view-confounded label
AUC_COLUMNS = ["images", "positives", "negatives", "observed", "mean predicted", "AUC", "low", "high", "in macro"]
GAP_COLUMNS = ["gap", "low", "high", "p_value"]


def subgroup_attributes(cfg: StudyConfig, images: pd.Index) -> dict[str, pd.Series]:
    """The group of every image under each attribute the dataset has: ``sex``, ``age band``
    (``cfg.age_bands``) and ``view``; an attribute missing from the table (or all blank) is left out."""
    table = dataset_table(cfg).set_index("image").loc[list(images)].reset_index(drop=True)
    out: dict[str, pd.Series] = {}
    if "sex" in table and table["sex"].notna().any():
        out["sex"] = table["sex"]
    if "age" in table and table["age"].notna().any():
        out["age band"] = age_bands(table["age"], cfg.age_bands)
    if "view" in table and table["view"].notna().any():
        out["view"] = table["view"]
    return out


def subgroup_analysis(cfg: StudyConfig, variant: str | None = None, min_cases: int = 5) -> dict[str, Any]:
    """Per-label and macro AUC of a variant's test ensemble (default: the main one) within each group
    of each attribute, and every group's gap to the attribute's first group; on the phantom the same
    for the exact oracle, the reference (it does not see sex, age or view).

    Returns:
        ``auc`` (index ``variant``, ``attribute``, ``group``, ``label``) and ``gap`` (index ``variant``,
        ``attribute``, ``comparison``, ``label``) as :func:`cxrkit.evaluation.subgroups.subgroup_auc`
        returns them, ``rejected`` (bootstrap replicates redrawn, per variant and attribute) and
        ``min_cases``.
    """
    variant = variant or main_variant(cfg)
    test = ensemble_predictions(cfg, variant)
    images, labels = test.index, list(test.columns)
    y, pid = true_labels(cfg, images), patient_ids(cfg, images)
    scorers = {variant: test.to_numpy()}
    oracle = oracle_predictions(cfg, images, labels)
    if oracle is not None:
        scorers[ORACLE] = oracle.to_numpy()
    auc, gap, rejected = {}, {}, {}
    for name, scores in scorers.items():
        for attr, groups in subgroup_attributes(cfg, images).items():
            r = subgroup_auc(y, scores, groups, labels, patients=pid, n_boot=cfg.bootstrap,
                             seed=int(cfg.train.get("seed", 0)), min_cases=min_cases)
            auc[(name, attr)], gap[(name, attr)], rejected[(name, attr)] = r["auc"], r["gap"], r["replicates_rejected"]
    return {"auc": _stack(auc, ["variant", "attribute", "group", "label"], AUC_COLUMNS),
            "gap": _stack(gap, ["variant", "attribute", "comparison", "label"], GAP_COLUMNS),
            "rejected": pd.Series(rejected, dtype=int), "min_cases": min_cases}


def _stack(parts: dict[tuple[str, ...], pd.DataFrame], names: list[str], columns: list[str]) -> pd.DataFrame:
    """The parts concatenated under their keys; an empty table with these index levels and
    columns when there are none (a dataset without sex, age and view)."""
    parts = {k: v for k, v in parts.items() if len(v)}
    if not parts:
        return pd.DataFrame(columns=columns, index=pd.MultiIndex.from_tuples([], names=names))
    return pd.concat(parts, names=names[: -2])


def subgroup_operating_points(cfg: StudyConfig, table: pd.DataFrame, labels: list[str] | None = None) -> pd.DataFrame:
    """The shipped thresholds of ``table`` (:func:`cxrkit.study.trust.operating_points`) applied
    within every group of the test ensemble, with patient-bootstrap intervals within the group.

    Returns:
        Index ``attribute``, ``group``, ``label``, ``method``; the columns of
        :func:`cxrkit.evaluation.operating_points.threshold_performance`.
    """
    variant = str(table["variant"].iloc[0])
    test = ensemble_predictions(cfg, variant)
    images, all_labels = test.index, list(test.columns)
    y, pid, s = true_labels(cfg, images), patient_ids(cfg, images), test.to_numpy()
    rows = table if labels is None else table[table["label"].isin(labels)]
    parts = {}
    for attr, groups in subgroup_attributes(cfg, images).items():
        for g in _group_order(groups):
            mask = (groups == g).to_numpy()
            parts[(attr, str(g))] = threshold_performance(rows[["label", "method", "threshold"]], y[mask], s[mask],
                                                          all_labels, groups=pid[mask], n_boot=cfg.bootstrap,
                                                          seed=int(cfg.train.get("seed", 0)))
    return _stack(parts, ["attribute", "group", "label", "method"], [])


def _group_order(groups: pd.Series) -> list[Any]:
    """The groups present, in the order of :func:`cxrkit.evaluation.subgroups.subgroup_auc`."""
    if isinstance(groups.dtype, pd.CategoricalDtype):
        return [c for c in groups.cat.categories if (groups == c).any()]
    return sorted(groups.dropna().unique(), key=str)


def view_confounder(sub: dict[str, Any], ops: pd.DataFrame, label: str = CONFOUNDED) -> pd.DataFrame | None:
    """One label by view, for the model and (phantom) the oracle: AUC with its interval, observed
    prevalence, mean predicted probability, and the model's sensitivity and specificity at the
    shipped Youden threshold. None when the study has no view or no such label.

    Args:
        sub: :func:`subgroup_analysis`' result.
        ops: :func:`subgroup_operating_points`' result.
        label: the label.
    """
    auc = sub["auc"]
    if "view" not in auc.index.get_level_values("attribute") or label not in auc.index.get_level_values("label"):
        return None
    rows = auc.xs(("view", label), level=("attribute", "label"))[["images", "positives", "observed", "mean predicted",
                                                                  "AUC", "low", "high"]]
    youden = ops.xs(("view", label, YOUDEN), level=("attribute", "label", "method"))
    for col in ("sensitivity", "specificity"):
        model = rows.index.get_level_values("variant") != ORACLE
        rows[f"{col} at Youden"] = np.nan
        rows.loc[model, f"{col} at Youden"] = youden.loc[rows.index[model].get_level_values("group"), col].to_numpy()
    return rows


def view_shift(cfg: StudyConfig, variant: str | None = None, label: str = CONFOUNDED) -> pd.DataFrame | None:
    """Whether a label's score depends on the view given the label: among its negatives, and among its
    positives, the AUC of the score for telling each view from the first (0.5: no dependence;
    :func:`cxrkit.evaluation.subgroups.group_shift`), on the test ensemble and on the out-of-fold
    validation predictions (three times the images), for a variant (default: the main one) and, on
    the phantom, the oracle. None without views or without the label.

    Returns:
        Index ``variant``, ``predictions`` (test ensemble | out-of-fold validation), ``images of``
        (negatives | positives), ``comparison``; the columns of ``group_shift``.
    """
    variant = variant or main_variant(cfg)
    parts = {}
    for where, preds in (("test ensemble", ensemble_predictions(cfg, variant)),
                         ("out-of-fold validation", oof_predictions(cfg, variant))):
        if label not in preds.columns:
            return None
        views = subgroup_attributes(cfg, preds.index).get("view")
        if views is None:
            return None
        scorers = {variant: preds[label].to_numpy()}
        oracle = oracle_predictions(cfg, preds.index, [label])
        if oracle is not None:
            scorers[ORACLE] = oracle[label].to_numpy()
        y = true_labels(cfg, preds.index)[:, list(preds.columns).index(label)]
        strata = {"": None} if oracle is None else {"": None, " at equal oracle posterior": scorers[ORACLE]}
        for name, s in scorers.items():
            for cls, what in ((0, "negatives"), (1, "positives")):
                for suffix, st in strata.items():
                    parts[(name, where, what + suffix)] = group_shift(
                        y, s, views, cls, patients=patient_ids(cfg, preds.index), strata=st, n_boot=cfg.bootstrap,
                        seed=int(cfg.train.get("seed", 0)))
    parts = {k: v for k, v in parts.items() if len(v)}  # a set with one view has no comparison
    if not parts:
        return None
    return pd.concat(parts, names=["variant", "predictions", "images of"])


def confounder_headline(table: pd.DataFrame | None, sub: dict[str, Any], shift: pd.DataFrame | None = None,
                        label: str = CONFOUNDED) -> dict[str, str]:
    """The view confounding of ``label`` in words: per variant, the AUC gap between the views (second
    minus first) with its interval and the mean predicted against the observed prevalence per view
    (``<label>_by_view``); and from :func:`view_shift`, how often a negative film of the first view
    scores above one of the second with the same evidence (or at all, without an oracle), out of fold
    and on test (``<label>_view_shift``)."""
    if table is None:
        return {}
    key = label.lower().replace(" ", "_")
    text = []
    for variant in table.index.get_level_values("variant").unique():
        part = table.xs(variant, level="variant")
        views = list(part.index)
        gap_key = (variant, "view", f"{views[-1]} - {views[0]}", label) if len(views) > 1 else None
        if gap_key is not None and gap_key in sub["gap"].index:
            g = sub["gap"].loc[gap_key]
            text.append(f"{variant}: AUC {views[-1]} - {views[0]} {g['gap']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]")
        else:
            text.append(f"{variant}: AUC gap n/a (fewer than {sub['min_cases']} cases in a view)")
        text[-1] += "; mean predicted / observed " + ", ".join(
            f"{v} {r['mean predicted']:.2f} / {r['observed']:.2f}" for v, r in part.iterrows())
    head = {f"{key}_by_view": " | ".join(text)}
    if shift is not None and len(shift):
        head[f"{key}_view_shift"] = _shift_text(shift, label)
    return head


def _shift_text(shift: pd.DataFrame, label: str) -> str:
    """P(a negative of the reference view scores above one of the other view) = 1 - AUC, per variant,
    out of fold and on test, stratified by the oracle's posterior where there is one."""
    negatives = shift.index.get_level_values("images of")
    stratified = negatives.str.endswith("at equal oracle posterior")
    rows = shift[stratified] if stratified.any() else shift[negatives == "negatives"]
    text = []
    for variant in rows.index.get_level_values("variant").unique():
        part = rows.xs(variant, level="variant")
        for (where, what, comparison), r in part.iterrows():
            if not what.startswith("negatives"):
                continue
            other, ref = comparison.split(" vs ")
            text.append(f"{variant}, {where}: {label}-negative {ref} films score above {other} films"
                        f"{what[len('negatives'):]} in {1 - r['AUC']:.2f} [{1 - r['high']:.2f}, {1 - r['low']:.2f}] "
                        f"of pairs")
    return " | ".join(text)
