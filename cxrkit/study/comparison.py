"""The comparisons of a study's variants: the ablation against the baseline (paired bootstrap,
per-label deltas, TTA on/off, single folds vs the ensemble, oracle ceiling), the final test table
and our rows of Table I."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cxrkit.evaluation.bootstrap import bootstrap_macro_auc, paired_bootstrap_diff
from cxrkit.evaluation.metrics import average_precision, evaluate, macro_auc, per_label_auc
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import is_phantom, patient_ids, true_labels
from cxrkit.study.oracle import oracle_table
from cxrkit.study.runs import fold_predictions


def comparisons(cfg: StudyConfig) -> list[tuple[str, str]]:
    """Paired comparisons (a, b) reported as b - a: every variant against the baseline, plus the
    learned sparse coupling against the co-occurrence GCN when both are in the study."""
    base = cfg.variant_names[0]
    pairs = [(base, v) for v in cfg.variant_names[1:]]
    if "sparse" in cfg.variant_names and "cooc_gcn" in cfg.variant_names:
        pairs.append(("cooc_gcn", "sparse"))
    return pairs


def ablation(cfg: StudyConfig) -> dict[str, Any]:
    """Every variant against the first one (the baseline) on identical folds and seeds.

    Returns ``per_fold`` (validation macro AUC per fold and variant), ``paired`` (paired patient
    bootstrap differences, see :func:`comparisons`: per fold on validation, and on the test
    ensemble with and without flip TTA; columns ``diff, low, high, p_value``,
    ``replicates_rejected`` and ``CI covers``: the CIs cover the sampling of the evaluated images
    only, each variant being trained with one seed), ``per_label_delta`` (per-label AUC change of
    the test ensemble), ``per_label_delta_ap`` (the same for average precision, Rawlekar et al.'s
    ΔAP), ``test_summary`` (single folds, ensemble with its patient-bootstrap 95% CI and the
    ``ensemble CI replicates rejected`` row, TTA on/off, oracle), ``metrics`` (test ensemble:
    macro AUC, mAP, CP/CR/CF1/OP/OR/OF1) and ``headline``. Bootstrap replicates that lose a
    label's positives or negatives are rejected and redrawn (:func:`cxrkit.evaluation.bootstrap.bootstrap_macro_auc`).
    """
    names, base = cfg.variant_names, cfg.variant_names[0]
    seed = int(cfg.train.get("seed", 0))
    per_fold_df, paired = _validation_folds(cfg, seed)
    test0 = fold_predictions(cfg, base, "test")[0]
    images, labels = test0.index, list(test0.columns)
    y, groups = true_labels(cfg, images), patient_ids(cfg, images)
    boot = {"n_boot": cfg.bootstrap, "seed": seed, "groups": groups, "labels": labels}
    test_summary, rejected, ens, ens_notta = _test_summary(cfg, images, y, boot)
    headline: dict[str, Any] = {f"test_ensemble_{v}": float(test_summary.loc["ensemble", v]) for v in names}
    headline |= _add_oracle(cfg, test_summary)
    test_summary.loc["ensemble CI replicates rejected"] = rejected  # the row below the oracle's
    per_label = {v: per_label_auc(y, ens[v], labels) for v in names}
    delta = pd.DataFrame({f"{b} - {a}": per_label[b] - per_label[a] for a, b in comparisons(cfg)})
    ap = {v: average_precision(y, ens[v], labels) for v in names}
    delta_ap = pd.DataFrame({f"{b} - {a}": ap[b] - ap[a] for a, b in comparisons(cfg)})
    for a, b in comparisons(cfg):
        d = paired_bootstrap_diff(y, ens[a], ens[b], **boot)
        paired[f"{b} - {a}, test ensemble"] = d
        headline[f"test_diff_{b}_vs_{a}"] = f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    for a, b in comparisons(cfg):
        paired[f"{b} - {a}, test ensemble (no TTA)"] = paired_bootstrap_diff(y, ens_notta[a], ens_notta[b], **boot)
    metrics = {}
    for v in names:
        m = evaluate(y, ens[v], labels, threshold=cfg.threshold)
        metrics[v] = {"macro AUC": m["macro_auc"], "mAP": m["mAP"],
                      **{f"{k}@{cfg.threshold:g}": m[k] for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")}}
    paired_df = pd.DataFrame(paired).T.astype({"replicates_rejected": int})
    paired_df["CI covers"] = [f"{'validation' if '(val)' in k else 'test'}-set sampling (patient bootstrap); "
                              "one training seed per variant" for k in paired_df.index]
    return {"per_fold": per_fold_df, "paired": paired_df, "per_label_delta": delta,
            "per_label_delta_ap": delta_ap, "test_summary": test_summary, "metrics": pd.DataFrame(metrics).T, "headline": headline}


def _validation_folds(cfg: StudyConfig, seed: int) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Validation macro AUC per fold and variant (with the mean and sd over folds), and the paired
    bootstrap differences of every comparison on every validation fold."""
    names, base = cfg.variant_names, cfg.variant_names[0]
    per_fold, paired = {}, {}
    for k in range(cfg.n_folds):
        preds = {v: fold_predictions(cfg, v, "val")[k] for v in names}
        images = preds[base].index
        y, groups = true_labels(cfg, images), patient_ids(cfg, images)
        per_fold[f"fold {k}"] = {v: macro_auc(y, p.loc[images].to_numpy()) for v, p in preds.items()}
        for a, b in comparisons(cfg):
            paired[f"{b} - {a}, fold {k} (val)"] = paired_bootstrap_diff(
                y, preds[a].loc[images].to_numpy(), preds[b].loc[images].to_numpy(), n_boot=cfg.bootstrap,
                seed=seed, groups=groups, labels=list(preds[base].columns))
    per_fold_df = pd.DataFrame(per_fold).T
    per_fold_df.loc["mean"] = per_fold_df.mean()
    per_fold_df.loc["std"] = per_fold_df.iloc[:-1].std(ddof=1)
    return per_fold_df, paired


def _test_summary(cfg: StudyConfig, images: pd.Index, y: np.ndarray, boot: dict[str, Any]
                  ) -> tuple[pd.DataFrame, dict[str, int], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Test macro AUC of every single fold and of the fold ensemble, per variant with and without
    TTA, with the ensemble's patient-bootstrap 95% CI; the replicates each CI rejected; and the
    ensembles' probabilities with and without TTA."""
    summary, ens, ens_notta = {}, {}, {}
    for v in cfg.variant_names:
        for tta in (True, False):
            folds = fold_predictions(cfg, v, "test", tta=tta)
            stack = [f.loc[images].to_numpy() for f in folds.values()]
            col = f"{v}{'' if tta else ' (no TTA)'}"
            for k, sc in enumerate(stack):
                summary.setdefault(f"fold {k}", {})[col] = macro_auc(y, sc)
            mean = sum(stack) / len(stack)
            summary.setdefault("ensemble", {})[col] = macro_auc(y, mean)
            (ens if tta else ens_notta)[v] = mean
    test_summary = pd.DataFrame(summary).T
    ci = {f"{v}{suffix}": bootstrap_macro_auc(y, e[v], **boot)
          for v in cfg.variant_names for suffix, e in (("", ens), (" (no TTA)", ens_notta))}
    test_summary.loc["ensemble 95% CI low"] = {c: ci[c]["low"] for c in test_summary.columns}
    test_summary.loc["ensemble 95% CI high"] = {c: ci[c]["high"] for c in test_summary.columns}
    rejected = {c: ci[c]["replicates_rejected"] for c in test_summary.columns}
    return test_summary, rejected, ens, ens_notta


def _add_oracle(cfg: StudyConfig, test_summary: pd.DataFrame) -> dict[str, Any]:
    """On the phantom, the oracle and marginal oracle columns and each variant's share of the
    oracle; returns the oracle's headline (nothing for real data)."""
    oracle = oracle_table(cfg, by_split=True)
    if oracle is None:
        return {}
    test_summary["oracle"] = float(oracle.loc["test", "oracle"])
    test_summary["marginal oracle"] = float(oracle.loc["test", "marginal oracle"])
    for v in cfg.variant_names:
        test_summary[f"{v} / oracle"] = test_summary[v] / test_summary["oracle"]
    return {"test_oracle": float(oracle.loc["test", "oracle"])}


def final_test_table(cfg: StudyConfig) -> pd.DataFrame:
    """Test macro AUC (patient-bootstrap 95% CI) of each variant's fold ensemble, and the oracle.

    Columns ``macro AUC``, ``95% CI low/high``, ``images``, ``replicates rejected`` (bootstrap
    replicates redrawn to keep every scorable label, :func:`cxrkit.evaluation.bootstrap.bootstrap_macro_auc`)
    and ``CI covers`` (test-set sampling only: each variant is trained with one seed); the
    oracle rows are exact and have no CI.
    """
    rows = {}
    for v in cfg.variant_names:
        folds = fold_predictions(cfg, v, "test")
        images = folds[0].index
        ens = sum(f.loc[images].to_numpy() for f in folds.values()) / len(folds)
        ci = bootstrap_macro_auc(true_labels(cfg, images), ens, n_boot=cfg.bootstrap, groups=patient_ids(cfg, images),
                                 labels=list(folds[0].columns),
                                 seed=int(cfg.train.get("seed", 0)))  # the seed of ablation()'s intervals
        rows[f"{v} ({cfg.n_folds}-fold ensemble, flip TTA)"] = {
            "macro AUC": ci["estimate"], "95% CI low": ci["low"], "95% CI high": ci["high"], "images": len(images),
            "replicates rejected": ci["replicates_rejected"],
            "CI covers": "test-set sampling (patient bootstrap); one training seed per variant"}
    oracle = oracle_table(cfg, by_split=True)
    if oracle is not None:
        rows["oracle (perfect perception, exact)"] = {"macro AUC": float(oracle.loc["test", "oracle"]),
                                                      "images": int(oracle.loc["test", "images"])}
        rows["marginal oracle (no label coupling)"] = {"macro AUC": float(oracle.loc["test", "marginal oracle"]),
                                                       "images": int(oracle.loc["test", "images"])}
    return pd.DataFrame.from_dict(rows, orient="index").astype({"replicates rejected": "Int64"})  # dtype per column


def our_table_i_rows(cfg: StudyConfig, final: pd.DataFrame) -> pd.DataFrame:
    """Our rows for Table I, each labelled with the data it was measured on."""
    dataset = (f"cxrkit phantom (synthetic, {cfg.data}) test split" if is_phantom(cfg)
               else f"{cfg.dataset} at {cfg.data}, held-out test split")
    backbone = cfg.train_config(0, cfg.variant_names[0]).backbone
    rows = [{"study": f"cxrkit ({cfg.name}): {name}", "dataset": dataset,
             "model": backbone if "oracle" not in name else "exact posterior, no model",
             "protocol": f"{cfg.n_folds}-fold {cfg.group}-grouped MIS", "macro AUC": r["macro AUC"]}
            for name, r in final.iterrows()]
    return pd.DataFrame(rows)
