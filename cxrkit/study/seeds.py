"""Training-seed replicates of a study (``seeds: [0, 1, 2]``): every comparison of 05 with a CI
that covers the training seed as well as the test sampling, beside the test-sampling-only one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrkit.evaluation.bootstrap import paired_bootstrap_diff, seed_bootstrap_diff
from cxrkit.evaluation.metrics import macro_auc
from cxrkit.study.comparison import comparisons
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import patient_ids, true_labels
from cxrkit.study.runs import fold_predictions


def seed_ensembles(cfg: StudyConfig, split: str = "test") -> tuple[pd.Index, dict[str, list[np.ndarray]]]:
    """Each variant's fold ensemble (mean of its folds' flip-TTA probabilities) once per training
    seed, on the images of the first seed's baseline: ``(images, {variant: [(N, L) per seed]})``."""
    base = cfg.variant_names[0]
    images = fold_predictions(cfg, base, split, seed=cfg.seed_list[0])[0].index
    ens = {}
    for v in cfg.variant_names:
        ens[v] = []
        for s in cfg.seed_list:
            folds = fold_predictions(cfg, v, split, seed=s)
            ens[v].append(sum(f.loc[images].to_numpy() for f in folds.values()) / len(folds))
    return images, ens


def seed_replicates(cfg: StudyConfig) -> dict[str, pd.DataFrame]:
    """Test macro AUC of every variant's fold ensemble per training seed, and every comparison of
    :func:`cxrkit.study.comparison.comparisons` (b - a) with two intervals.

    ``CI (seeds and test)``: :func:`cxrkit.evaluation.bootstrap.seed_bootstrap_diff`, the two-stage
    bootstrap resampling training seeds (the same seed index for both variants: seed s of a and b
    share initialisation and data order) and test patients together; its estimate is the mean over
    seeds of the difference. ``CI (test only), seed <s0>``: :func:`paired_bootstrap_diff` of the
    first seed's models, the interval 05's other tables give (test sampling only).

    Returns:
        ``per_seed``: (seeds, variants) test macro AUC; ``paired``: one row per comparison with
        ``diff (mean over seeds)``, its ``low``/``high``, ``diff seed <s>`` per seed, the first
        seed's ``diff``, ``low``, ``high`` (test only), ``seeds`` and ``CI covers``.
    """
    images, ens = seed_ensembles(cfg)
    labels = list(fold_predictions(cfg, cfg.variant_names[0], "test")[0].columns)
    y, groups = true_labels(cfg, images), patient_ids(cfg, images)
    boot = {"n_boot": cfg.bootstrap, "seed": cfg.seed_list[0], "groups": groups, "labels": labels}
    per_seed = pd.DataFrame({v: [macro_auc(y, e) for e in ens[v]] for v in cfg.variant_names},
                            index=pd.Index([f"seed {s}" for s in cfg.seed_list], name="training seed"))
    per_seed.loc["mean"] = per_seed.mean()
    per_seed.loc["sd over seeds"] = per_seed.iloc[:-1].std(ddof=1) if len(cfg.seed_list) > 1 else np.nan
    s0, rows = cfg.seed_list[0], {}
    for a, b in comparisons(cfg):
        both = seed_bootstrap_diff(y, ens[a], ens[b], **boot)
        one = paired_bootstrap_diff(y, ens[a][0], ens[b][0], **boot)
        rows[f"{b} - {a}"] = {
            "diff (mean over seeds)": both["diff"], "low (seeds and test)": both["low"],
            "high (seeds and test)": both["high"],
            **{f"diff seed {s}": d for s, d in zip(cfg.seed_list, both["per_seed"])},
            f"diff seed {s0} (test only)": one["diff"], f"low seed {s0} (test only)": one["low"],
            f"high seed {s0} (test only)": one["high"], "seeds": len(cfg.seed_list),
            "CI covers": "training seed (seeds resampled) and test-set sampling (patient bootstrap), "
                         f"{len(cfg.seed_list)} seeds; the 'test only' CI: test-set sampling, seed {s0}"}
    return {"per_seed": per_seed, "paired": pd.DataFrame.from_dict(rows, orient="index")}
