"""External validation of a study (``07_external``): every variant's fold ensemble applied to the
study's ``external:`` site (a phantom site, or real data read by its loader with the labels it
shares with the runs), compared with the internal test split (:mod:`cxrkit.study.external_analysis`)::

    preds = S.external_predictions(cfg)        # inferred once, cached under <runs>/<name>/external/
    ext = S.external_validation(cfg, preds)    # tables and headline metrics

The predictions are those of :func:`cxrkit.study.infer` (flip TTA when the variant was trained with
it, as its ``pred_test.csv``), written to ``<runs>/<name>/external/<site>/<variant>.csv`` with their
sidecar and reused while the sidecar records the same external data (its fingerprint), the same
checkpoints (sha256) and TTA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.data.datasets import fingerprint, label_matrix
from cxrkit.data.splits import load_splits
from cxrkit.evaluation.evaluate import aligned
from cxrkit.evaluation.predictions import read_predictions
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import dataset_table, external_dataset, patient_ids, true_labels
from cxrkit.study.external_analysis import (
    ORACLE,
    Site,
    common_labels,
    gain_per_label,
    gain_table,
    macro_table,
    per_label_table,
    prevalence_summary,
    prevalence_table,
)
from cxrkit.study.external_cache import cached, external_folder
from cxrkit.study.inference import infer, variant_runs
from cxrkit.study.trust import ensemble_predictions, oracle_predictions
from cxrkit.utils.paths import resolve


def external_predictions(cfg: StudyConfig, progress: bool = False, device: str = "auto") -> dict[str, pd.DataFrame]:
    """Every variant's fold ensemble applied to the external site, indexed by image.

    The external phantom is generated first when configured and missing or stale. Each variant's
    folds must be trained (:func:`cxrkit.study.variant_runs`); its predictions are inferred, or
    read back from the cache when nothing they depend on changed (see the module).

    Raises:
        ConfigError: no ``external:`` block; StudyError: folds not trained; see also
            :func:`cxrkit.training.trained.infer`.
    """
    ds, _ = external_dataset(cfg, progress=progress)
    data_fp, spec = fingerprint(ds.table), cfg.external_spec
    out = {}
    for v in cfg.variant_names:
        runs, train = variant_runs(cfg, v), cfg.train_config(0, v)
        path = external_folder(cfg) / f"{v}.csv"
        table = cached(path, data_fp, runs, train.tta)
        if table is None:
            infer(runs, data=spec["data"], dataset=spec["dataset"], dataset_options=spec["dataset_options"], out=path,
                  device=device, batch_size=train.eval_batch_size, tta=train.tta, on_bad_image=cfg.on_bad_image,
                  progress=progress)
            table = read_predictions(path)[0]  # as written: a cached re-run reads the same numbers
        out[v] = table.set_index("image")
    return out


def internal_site(cfg: StudyConfig, labels: Sequence[str]) -> Site:
    """The study's test split as a :class:`Site`: every variant's fold ensemble (flip TTA, its
    ``pred_test.csv``), the true labels and patients, the oracle on the phantom; over ``labels``."""
    scores = {v: ensemble_predictions(cfg, v, "test") for v in cfg.variant_names}
    images = scores[cfg.variant_names[0]].index
    y = true_labels(cfg, images, labels)
    oracle = oracle_predictions(cfg, images, list(labels))
    return Site(np.asarray(y, dtype=float), patient_ids(cfg, images),
                {v: s.loc[images, list(labels)].to_numpy(dtype=float) for v, s in scores.items()},
                None if oracle is None else oracle.to_numpy(dtype=float))


def external_site(cfg: StudyConfig, preds: dict[str, pd.DataFrame]) -> tuple[Site, Any]:
    """The external site as a :class:`Site` over the labels it shares with the runs (in the runs'
    order), every variant's predictions in the first one's image order; and the label alignment.

    Raises:
        PredictionMismatch: predictions of images the external dataset does not hold.
    """
    ds, alignment = external_dataset(cfg)
    labels = alignment.shared
    first = preds[cfg.variant_names[0]]
    scores, y, groups = {}, None, None
    for v in cfg.variant_names:
        frame = preds[v].loc[first.index].reset_index()
        y, scores[v], groups = aligned(ds.table, labels, frame, f"external predictions of {v!r}")
    oracle = None
    root = resolve(cfg.external_spec["data"])
    if (root / "truth.csv").is_file():
        from cxrkit.phantom.files import phantom_tables
        from cxrkit.phantom.oracle import oracle_scores

        _, truth = phantom_tables(root)  # carries the site's config: the oracle of that site
        oracle = oracle_scores(truth).set_index("Image_name").loc[list(first.index), labels].to_numpy(dtype=float)
    return Site(np.asarray(y, dtype=float), np.asarray(groups), scores, oracle), alignment


def train_labels(cfg: StudyConfig, labels: Sequence[str]) -> np.ndarray:
    """The true labels of the study's training part (every fold, never the test split) over ``labels``."""
    table = dataset_table(cfg)
    splits = load_splits(cfg.splits_path, table)
    return np.asarray(label_matrix(table[(splits["split"] == "train").to_numpy()], list(labels)), dtype=float)


def external_validation(cfg: StudyConfig, preds: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Internal test split vs the external site, for every variant.

    Every AUC table is over the same labels at both sites: those the external site annotates
    that are scorable (both classes among the known entries) at both sites
    (:func:`cxrkit.study.external_analysis.common_labels`), so that a change compares like with
    like; the prevalence tables cover every shared label.

    Args:
        cfg: the study (with an ``external:`` block).
        preds: :func:`external_predictions`.

    Returns:
        ``sites`` (images, patients and labels scored at each site), ``alignment`` (the label
        alignment), ``labels`` (the labels scored), ``dropped`` (the shared labels left out, with
        each site's counts and why) and ``labels_note`` (a sentence saying so), ``macro``,
        ``per_label``, ``gain``, ``gain_per_label``, ``prevalence``, ``prevalence_summary``
        (:mod:`cxrkit.study.external_analysis`), ``site`` (its name) and ``headline``.
    """
    external, alignment = external_site(cfg, preds)
    shared = list(alignment.shared)
    internal = internal_site(cfg, shared)
    labels, dropped = common_labels(internal, external, shared)
    keep = [shared.index(lab) for lab in labels]
    both = {"internal": internal.select(keep), "external": external.select(keep)}
    boot = {"n_boot": cfg.bootstrap, "seed": int(cfg.train.get("seed", 0))}
    macro = macro_table(both["internal"], both["external"], labels, **boot)
    gain = gain_table(both["internal"], both["external"], labels, **boot)
    prevalence = prevalence_table(train_labels(cfg, shared), internal, external, shared)
    sites = pd.DataFrame({s: {"images": len(site.y), "patients": len(set(site.groups)), "labels scored": len(labels),
                              "labels dropped": len(dropped), "oracle": site.oracle is not None}
                          for s, site in (("internal test", internal), (f"external ({cfg.external_spec['name']})", external))}).T
    return {"sites": sites, "alignment": alignment, "site": cfg.external_spec["name"], "labels": labels,
            "dropped": dropped, "labels_note": _labels_note(labels, dropped), "macro": macro,
            "per_label": per_label_table(both["internal"], both["external"], labels, **boot), "gain": gain,
            "gain_per_label": gain_per_label(both["internal"], both["external"], labels), "prevalence": prevalence,
            "prevalence_summary": prevalence_summary(prevalence), "headline": external_headline(cfg, macro, gain)}


def _labels_note(labels: list[str], dropped: pd.DataFrame) -> str:
    """One sentence: how many labels the AUC tables score, and which were left out and why."""
    text = f"AUC tables over the {len(labels)} label(s) scorable at both sites"
    if not len(dropped):
        return text + "; none of the shared labels left out"
    return text + "; left out: " + "; ".join(f"{lab} ({why})" for lab, why in dropped["reason"].items())


def external_headline(cfg: StudyConfig, macro: pd.DataFrame, gain: pd.DataFrame) -> dict[str, Any]:
    """``external_macro_auc_<variant>``, ``external_oracle`` (phantom) and ``gain_change_<variant>``
    (the change of the gain over the baseline from the internal to the external site, with its CI)."""
    head: dict[str, Any] = {f"external_macro_auc_{v}": float(macro.loc[v, "external"]) for v in cfg.variant_names}
    if ORACLE in macro.index and np.isfinite(macro.loc[ORACLE, "external"]):
        head["external_oracle"] = float(macro.loc[ORACLE, "external"])
    for row, g in gain.iterrows():
        head[f"gain_change_{row.split(' - ')[0]}"] = f"{g['change']:+.4f} [{g['change low']:+.4f}, {g['change high']:+.4f}]"
    return head
