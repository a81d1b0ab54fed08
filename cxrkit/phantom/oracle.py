"""The exact phantom oracle (section 5 of ``shared/design/synthetic_cxr.md``): oracle and
marginal-oracle scores and AUCs (on a split, or on an infinite sample), the labels' exact
prevalences and their true coupling structure (log odds ratios).

The posteriors themselves are computed in :mod:`cxrkit.phantom.posterior` (closed form, exact
ties kept). The observed labels modelled here are the 0/1 labels after report noise
(``config.report_noise``); ``config.uncertain_rate`` is not modelled (uncertain -1 entries are
skipped when scoring). Everything follows the label model of the config's site (its cause
priors and report-noise rates, ``config.label_model``); the site's scanner changes only the
pixels, not the oracle (perfect perception sees what is drawn). A truth sidecar read by
:func:`cxrkit.phantom.files.phantom_tables` carries its phantom's config (site included) in
``attrs["phantom_config"]``: :func:`oracle_scores` and :func:`oracle_auc` use it when no config is
given, so a site_b phantom gets site_b's oracle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrkit.data.labels import LABELS
from cxrkit.phantom.model import DEFAULT_CONFIG, PATHOLOGIES, PhantomConfig
from cxrkit.phantom.posterior import (
    _NF,
    _pattern_table,
    _states,
    marginal_posterior,
    posterior,
    prevalences,
)

__all__ = ["coupling_matrix", "expected_positive_count", "marginal_posterior", "oracle_auc", "oracle_scores",
           "population_auc", "posterior", "prevalences", "truth_config"]

#: Key of a truth table's ``attrs`` holding the :class:`PhantomConfig` it was generated with.
CONFIG_ATTR = "phantom_config"


def expected_positive_count(config: PhantomConfig = DEFAULT_CONFIG) -> float:
    """Expected number of positive observed labels per image (No Finding included)."""
    return float(prevalences(config).sum())


def coupling_matrix(config: PhantomConfig = DEFAULT_CONFIG) -> pd.DataFrame:
    """Exact log odds ratios of the observed labels, for every ordered pair (i, j).

    Entry (i, j) is log[P(y_j=1|y_i=1)/P(y_j=0|y_i=1)] - log[P(y_j=1|y_i=0)/P(y_j=0|y_i=0)]
    (symmetric, as every log odds ratio). No Finding with any pathology can never be jointly
    positive, so those entries are -inf (kept as such: the strongest possible exclusion). The
    diagonal is NaN (a label's odds ratio with itself is undefined).

    Returns:
        14 x 14 table indexed by LABELS on both axes.
    """
    st = _states(config.label_model)
    p = st.prior @ st.obs  # (14,)
    p11 = (st.obs * st.prior[:, None]).T @ st.obs  # E[P_i P_j]: independent given the state
    p11[_NF, [LABELS.index(q) for q in PATHOLOGIES]] = 0.0
    p11[[LABELS.index(q) for q in PATHOLOGIES], _NF] = 0.0
    p10 = p[:, None] - p11
    p01 = p[None, :] - p11
    p00 = 1 - p[:, None] - p[None, :] + p11
    with np.errstate(divide="ignore", invalid="ignore"):
        lor = np.log(p11) + np.log(p00) - np.log(p10) - np.log(p01)
    np.fill_diagonal(lor, np.nan)
    return pd.DataFrame(lor, index=list(LABELS), columns=list(LABELS))


def truth_config(truth_df: pd.DataFrame, config: PhantomConfig | None = None) -> PhantomConfig:
    """The config to score a truth sidecar with: ``config`` when given, else the one the table
    carries in ``attrs["phantom_config"]`` (:func:`cxrkit.phantom.files.phantom_tables`), else the
    default (today's site with report noise).

    Raises:
        TypeError: the table's attribute is not a PhantomConfig.
    """
    if config is not None:
        return config
    found = truth_df.attrs.get(CONFIG_ATTR, DEFAULT_CONFIG)
    if not isinstance(found, PhantomConfig):
        raise TypeError(f"truth table attrs[{CONFIG_ATTR!r}] must be a PhantomConfig, got {found!r}")
    return found


def oracle_scores(
    truth_df: pd.DataFrame, marginal: bool = False, config: PhantomConfig | None = None
) -> pd.DataFrame:
    """Oracle (or marginal oracle) scores for every image of a truth sidecar.

    Args:
        truth_df: the truth sidecar (``Image_name`` and ``drawn_<label>`` columns).
        marginal: the marginal oracle (each label from its own drawn flag).
        config: the label model's options; None: the table's own (:func:`truth_config`).

    Returns:
        ``Image_name`` then one score column per label (LABELS order).
    """
    config = truth_config(truth_df, config)
    fn = marginal_posterior if marginal else posterior
    scores = pd.DataFrame(fn(truth_df, config), columns=list(LABELS), index=truth_df.index)
    scores.insert(0, "Image_name", truth_df["Image_name"].to_numpy())
    return scores.reset_index(drop=True)


def oracle_auc(
    truth_df: pd.DataFrame,
    labels_df: pd.DataFrame,
    marginal: bool = False,
    config: PhantomConfig | None = None,
) -> tuple[pd.Series, float]:
    """Per-label and macro AUC of the oracle against observed labels.

    Images are aligned by ``Image_name`` (only those in both tables). Entries that are -1 or
    NaN are skipped; a label left with a single class gets NaN and is excluded from the macro.
    ``config`` None scores with the truth table's own config (:func:`truth_config`: the site of
    a phantom read by :func:`cxrkit.phantom.files.phantom_tables`).

    Returns:
        ``(per_label, macro)``: AUC per label (LABELS index) and their mean over scored labels.
    """
    from sklearn.metrics import roc_auc_score

    scores = oracle_scores(truth_df, marginal, config)
    merged = scores.merge(
        labels_df[["Image_name", *LABELS]], on="Image_name", suffixes=("_score", "")
    )
    if merged.empty:
        raise ValueError("truth_df and labels_df share no Image_name")
    auc = {}
    for lab in LABELS:
        y = pd.to_numeric(merged[lab], errors="coerce").to_numpy(dtype=float)
        keep = np.isin(y, (0.0, 1.0))
        y, s = y[keep], merged[f"{lab}_score"].to_numpy()[keep]
        auc[lab] = float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else np.nan
    per_label = pd.Series(auc, name="auc")
    return per_label, float(per_label.mean(skipna=True))


def population_auc(
    marginal: bool = False, config: PhantomConfig = DEFAULT_CONFIG
) -> tuple[pd.Series, float]:
    """Exact oracle AUC on an infinite sample of independent studies (design doc, section 5).

    Weighs every possible drawn pattern by its probability; the oracle's scores and the
    positive weights are the canonical table's (exact ties), and AUC counts ties as 1/2.

    Returns:
        ``(per_label, macro)`` as in :func:`oracle_auc`.
    """
    table = _pattern_table(config.label_model)
    post, prob = table.post, table.prob
    score = marginal_posterior(table.patterns, config) if marginal else post
    auc = {}
    for j, lab in enumerate(LABELS):
        pos, neg = prob * post[:, j], prob * (1 - post[:, j])
        order = np.argsort(score[:, j], kind="stable")
        s, pos, neg = score[order, j], pos[order], neg[order]
        uniq, start = np.unique(s, return_index=True)
        pos_g, neg_g = np.add.reduceat(pos, start), np.add.reduceat(neg, start)
        neg_below = np.cumsum(neg_g) - neg_g
        auc[lab] = float((pos_g * (neg_below + 0.5 * neg_g)).sum() / (pos_g.sum() * neg_g.sum()))
    per_label = pd.Series(auc, name="auc")
    return per_label, float(per_label.mean())
