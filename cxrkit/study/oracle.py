"""The phantom's ground truth in a study: the exact oracle AUCs and the true coupling structure
(None for real data)."""

from __future__ import annotations

import pandas as pd

from cxrkit.phantom.files import phantom_config, phantom_tables, split_groups
from cxrkit.phantom.oracle import coupling_matrix, oracle_auc
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import is_phantom


def oracle_table(cfg: StudyConfig, by_split: bool = False) -> pd.DataFrame | None:
    """Exact oracle and marginal-oracle AUC (phantom only; None otherwise): per label and macro on all
    images, or (``by_split``) the macro AUC on the test split and on every validation fold.

    Raises:
        cxrkit.data.tables.DataError: see :func:`phantom_tables`.
        ValueError: splits that do not hold the phantom's images and patients (naming them).
    """
    if not is_phantom(cfg):
        return None
    labels_df, truth = phantom_tables(cfg.data)
    if not by_split:
        cols = {}
        for name, marginal in (("oracle", False), ("marginal oracle", True)):
            per, macro = oracle_auc(truth, labels_df, marginal=marginal)
            cols[name] = pd.concat([per, pd.Series({"macro": macro})])
        return pd.DataFrame(cols)
    rows = {}
    for name, images in split_groups(cfg.splits_path, labels_df).items():
        sel = labels_df["Image_name"].isin(set(images))
        rows[name] = {"images": int(sel.sum()),
                      "oracle": oracle_auc(truth[truth["Image_name"].isin(set(images))], labels_df[sel])[1],
                      "marginal oracle": oracle_auc(truth[truth["Image_name"].isin(set(images))], labels_df[sel],
                                                    marginal=True)[1]}
    return pd.DataFrame(rows).T


def true_coupling(cfg: StudyConfig) -> pd.DataFrame | None:
    """The phantom's exact log odds ratio matrix of the observed labels (None for real data)."""
    if not is_phantom(cfg):
        return None
    return coupling_matrix(phantom_config(cfg.data))  # the site's label model (phantom.json)
