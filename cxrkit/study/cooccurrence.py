"""Label co-occurrence on a study's training part, and each label's gain against it (Rawlekar et
al. 2024, Fig. 2)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from cxrkit.data.cooccurrence import conditional_probability
from cxrkit.data.splits import load_splits
from cxrkit.study.analysis import gain_trend, top_k_conditional
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import dataset_table


def training_conditional(cfg: StudyConfig) -> pd.DataFrame:
    """P(column | row) on the training part (all folds, never the test split)."""
    table = dataset_table(cfg)
    splits = load_splits(cfg.splits_path, table)
    train = table[(splits["split"] == "train").to_numpy()]
    labels = table.attrs["labels"]
    return conditional_probability(train[labels], labels)


def gain_vs_cooccurrence(cfg: StudyConfig, abl: dict[str, Any]) -> dict[str, Any]:
    """Rawlekar et al. (2024) Fig. 2 for every comparison of :func:`ablation`: each label's gain
    of the test ensemble (ΔAP, as in the paper, and ΔAUC) against the mean of its three largest
    conditional probabilities P(label | other) on the training part.

    Returns ``top3`` (per label), ``table`` (per label: the top-3 mean, then ``ΔAP (b - a)`` and
    ``ΔAUC (b - a)`` per comparison) and ``trend`` (per comparison and gain: the labels used, the
    Spearman rank correlation with the top-3 mean and its two-sided p-value).
    """
    top3 = top_k_conditional(training_conditional(cfg), 3)
    gains = {"ΔAP": abl["per_label_delta_ap"], "ΔAUC": abl["per_label_delta"]}
    cols = {"top-3 conditional": top3}
    trend = []
    for comp in abl["per_label_delta"].columns:
        for gain, delta in gains.items():
            cols[f"{gain} ({comp})"] = delta[comp]
            row = gain_trend(top3, delta[[comp]]).iloc[0]
            trend.append({"comparison": comp, "gain": gain, **row.to_dict()})
    trend_df = pd.DataFrame(trend).set_index(["comparison", "gain"])
    trend_df["labels"] = trend_df["labels"].astype(int)
    return {"top3": top3, "table": pd.DataFrame(cols), "trend": trend_df}
