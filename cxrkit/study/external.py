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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.data.datasets import fingerprint, label_matrix
from cxrkit.data.splits import load_splits
from cxrkit.evaluation.evaluate import aligned
from cxrkit.evaluation.predictions import read_predictions
from cxrkit.evaluation.sources import file_sha256
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import dataset_table, external_dataset, patient_ids, true_labels
from cxrkit.study.external_analysis import (
    ORACLE,
    Site,
    gain_per_label,
    gain_table,
    macro_table,
    per_label_table,
    prevalence_summary,
    prevalence_table,
)
from cxrkit.study.inference import infer, variant_runs
from cxrkit.study.trust import ensemble_predictions, oracle_predictions
from cxrkit.utils.paths import resolve


def external_folder(cfg: StudyConfig) -> Path:
    """``<runs>/<name>/external/<site name>/``: the cached external predictions."""
    return cfg.run_dir / "external" / cfg.external_spec["name"]


def _cached(path: Path, data_fp: str, runs: Sequence[Path], tta: bool) -> pd.DataFrame | None:
    """The prediction file at ``path`` when its sidecar records this data, these checkpoints and TTA."""
    if not path.is_file():
        return None
    table, meta = read_predictions(path)
    shas = [r.get("sha256") for r in meta.get("runs") or []]
    if meta.get("data_fingerprint") != data_fp or meta.get("tta") != tta or \
            shas != [file_sha256(Path(r) / "best.pt") for r in runs]:
        return None
    return table


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
        table = _cached(path, data_fp, runs, train.tta)
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
    own = list(scores[cfg.variant_names[0]].columns)
    y = true_labels(cfg, images)[:, [own.index(lab) for lab in labels]]
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

    Args:
        cfg: the study (with an ``external:`` block).
        preds: :func:`external_predictions`.

    Returns:
        ``sites`` (images, patients and labels scored at each site), ``alignment`` (the label
        alignment), ``macro``, ``per_label``, ``gain``, ``gain_per_label``, ``prevalence``,
        ``prevalence_summary`` (:mod:`cxrkit.study.external_analysis`; internal and external over
        the same labels: those the external site annotates), ``site`` (its name) and ``headline``.
    """
    external, alignment = external_site(cfg, preds)
    labels = alignment.shared
    internal = internal_site(cfg, labels)
    boot = {"n_boot": cfg.bootstrap, "seed": int(cfg.train.get("seed", 0))}
    macro = macro_table(internal, external, labels, **boot)
    gain = gain_table(internal, external, labels, **boot)
    prevalence = prevalence_table(train_labels(cfg, labels), internal, external, labels)
    sites = pd.DataFrame({s: {"images": len(site.y), "patients": len(set(site.groups)), "labels scored": len(labels),
                              "oracle": site.oracle is not None}
                          for s, site in (("internal test", internal), (f"external ({cfg.external_spec['name']})", external))}).T
    return {"sites": sites, "alignment": alignment, "site": cfg.external_spec["name"], "macro": macro,
            "per_label": per_label_table(internal, external, labels, **boot), "gain": gain,
            "gain_per_label": gain_per_label(internal, external, labels), "prevalence": prevalence,
            "prevalence_summary": prevalence_summary(prevalence), "headline": external_headline(cfg, macro, gain)}


def external_headline(cfg: StudyConfig, macro: pd.DataFrame, gain: pd.DataFrame) -> dict[str, Any]:
    """``external_macro_auc_<variant>``, ``external_oracle`` (phantom) and ``gain_change_<variant>``
    (the change of the gain over the baseline from the internal to the external site, with its CI)."""
    head: dict[str, Any] = {f"external_macro_auc_{v}": float(macro.loc[v, "external"]) for v in cfg.variant_names}
    if ORACLE in macro.index and np.isfinite(macro.loc[ORACLE, "external"]):
        head["external_oracle"] = float(macro.loc[ORACLE, "external"])
    for row, g in gain.iterrows():
        head[f"gain_change_{row.split(' - ')[0]}"] = f"{g['change']:+.4f} [{g['change low']:+.4f}, {g['change high']:+.4f}]"
    return head
