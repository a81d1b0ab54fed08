"""How far to trust a study's models (``08_trust``): the calibration of every variant's test
ensemble before and after post-hoc recalibration, operating points a user can ship with the model,
and the AUC within subgroups (sex, age band, view position), with the phantom's exact oracle as
the reference.

Everything that is *fitted* or *chosen* (temperatures, Platt maps, thresholds) uses the out-of-fold
validation predictions only: every fold's ``pred_val.csv``, which together cover the training part
once, each image predicted by the one model that did not train on it. It is then applied, unchanged,
to the test split's fold ensemble (the mean of the folds' probabilities, flip TTA), which is what
the study reports and ``cxrkit infer`` predicts. Those are single models while the ensemble is an
average, which is less extreme; the test numbers measure what that costs, they do not assume it
away. The same maps and thresholds apply to any other prediction file: the operating points are
also scored at the study's external site when ``07_external`` has cached its predictions there
(:func:`cxrkit.evaluation.operating_points.score_operating_points`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cxrkit.evaluation.calibration import (
    MACRO,
    METHODS,
    POOLED,
    apply_calibration,
    calibration_table,
    fit_calibrators,
)
from cxrkit.evaluation.evaluate import aligned
from cxrkit.evaluation.operating_points import (
    YOUDEN,
    choose_thresholds,
    score_operating_points,
    target_method,
)
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import is_phantom, patient_ids, true_labels
from cxrkit.study.external_cache import cached_external_predictions
from cxrkit.study.runs import fold_predictions, main_variant, same_images

ORACLE = "oracle (exact posterior)"  #: the name of the phantom's oracle among the variants


def ensemble_predictions(cfg: StudyConfig, variant: str, split: str = "test") -> pd.DataFrame:
    """The fold ensemble of a variant on ``split`` (the mean of its folds' probabilities, flip TTA),
    indexed by image in the first fold's order.

    Raises:
        StudyError: the folds did not predict the same images (:func:`cxrkit.study.runs.same_images`).
    """
    folds = fold_predictions(cfg, variant, split)
    images = same_images(folds)
    return sum(f.loc[images] for f in folds.values()) / len(folds)


def oof_predictions(cfg: StudyConfig, variant: str) -> pd.DataFrame:
    """The out-of-fold validation predictions of a variant: every fold's ``pred_val.csv`` (flip TTA)
    stacked, each training-part image once, predicted by the fold model that did not train on it.

    Raises:
        ValueError: an image predicted by two folds (the folds would overlap).
    """
    oof = pd.concat(fold_predictions(cfg, variant, "val").values())
    twice = oof.index[oof.index.duplicated()]
    if len(twice):
        raise ValueError(f"out-of-fold predictions of {variant!r}: image(s) {list(twice[:5])} are in several folds")
    return oof


def oracle_predictions(cfg: StudyConfig, images: pd.Index, labels: list[str]) -> pd.DataFrame | None:
    """The phantom's exact oracle posterior P(observed label | what is drawn) of ``images``
    (:func:`cxrkit.phantom.oracle.oracle_scores`, the site's label model); None for real data."""
    if not is_phantom(cfg):
        return None
    from cxrkit.phantom.files import phantom_tables
    from cxrkit.phantom.oracle import oracle_scores

    _, truth = phantom_tables(cfg.data)
    scores = oracle_scores(truth).set_index("Image_name")
    return scores.loc[list(images), labels].set_axis(images)


def _seed(cfg: StudyConfig) -> int:
    return int(cfg.train.get("seed", 0))


def calibration(cfg: StudyConfig) -> dict[str, Any]:
    """The calibration of every variant's test ensemble, as predicted and after temperature and
    Platt scaling fitted per label on its out-of-fold validation predictions; on the phantom also of
    the exact oracle posterior (calibrated by construction: its ECE is the sampling-noise floor of
    a perfectly calibrated score on this test split). ``cfg.calibration_bins`` equal-mass bins.

    Returns:
        ``table`` (index ``variant``, ``calibration`` (none | temperature | platt), ``label``: the
        labels, their macro mean and every entry pooled; the columns of
        :func:`cxrkit.evaluation.calibration.calibration_table`), ``overview`` (index ``variant``,
        ``calibration``: macro and pooled ECE and Brier), ``maps`` (index ``variant``, ``label``: the
        fitted temperature, Platt a and b), ``scores`` ((variant, calibration) -> (N, L) test
        probabilities), ``y`` (the test labels), ``labels``, ``bins`` and ``headline``.
    """
    test = ensemble_predictions(cfg, cfg.variant_names[0])
    images, labels = test.index, list(test.columns)
    y = true_labels(cfg, images, labels)
    scores: dict[tuple[str, str], np.ndarray] = {}
    maps = {}
    for v in cfg.variant_names:
        oof = oof_predictions(cfg, v)
        maps[v] = fit_calibrators(true_labels(cfg, oof.index, labels), oof[labels].to_numpy(), labels)
        ens = ensemble_predictions(cfg, v).loc[images, labels].to_numpy()
        for method in METHODS:
            scores[(v, method)] = apply_calibration(maps[v], ens, labels, method)
    oracle = oracle_predictions(cfg, images, labels)
    if oracle is not None:
        scores[(ORACLE, "none")] = oracle.to_numpy()
    table = pd.concat({key: calibration_table(y, s, labels, cfg.calibration_bins) for key, s in scores.items()},
                      names=["variant", "calibration", "label"])
    overview = pd.DataFrame({
        f"{what} ({kind})": table.xs(row, level="label")[what]
        for what in ("ECE", "Brier") for kind, row in (("macro", MACRO), ("pooled", POOLED))})
    overview["bins"] = cfg.calibration_bins
    maps_df = pd.concat(maps, names=["variant", "label"])
    return {"table": table, "overview": overview, "maps": maps_df, "scores": scores, "y": y, "labels": labels,
            "bins": cfg.calibration_bins, "headline": _calibration_headline(cfg, overview)}


def _calibration_headline(cfg: StudyConfig, overview: pd.DataFrame) -> dict[str, str]:
    """Per variant: its test ensemble's macro ECE as predicted -> after temperature / Platt scaling."""
    ece = overview["ECE (macro)"]
    head = {f"ece_macro_{v}": f"{ece[(v, 'none')]:.3f} -> {ece[(v, 'temperature')]:.3f} (temperature), "
                              f"{ece[(v, 'platt')]:.3f} (Platt); {cfg.calibration_bins} equal-mass bins"
            for v in cfg.variant_names}
    if (ORACLE, "none") in ece.index:
        head["ece_macro_oracle"] = f"{ece[(ORACLE, 'none')]:.3f} (calibrated by construction: the noise floor)"
    return head


def operating_points(cfg: StudyConfig, variant: str | None = None) -> pd.DataFrame:
    """The operating-point table of a variant, to ship with the model: per label, the Youden and the
    target-sensitivity (``cfg.target_sensitivity``) thresholds chosen on its out-of-fold validation
    predictions, their counts and rates there (``val ...``: the data they were chosen on, so
    optimistic, no interval), on the test ensemble (``test ...``, with patient-bootstrap 95%
    intervals; :func:`cxrkit.evaluation.operating_points.threshold_performance`) and, when the
    study has an ``external:`` site whose predictions ``07_external`` cached, the same thresholds
    at that site (``external ...``, patient-bootstrap intervals; NaN for a label it does not
    annotate).

    Returns:
        Columns ``variant``, ``label``, ``method``, ``threshold``, then ``val <column>``, ``test
        <column>`` (and ``external <column>``) for positives, negatives, TP, FP, TN, FN,
        sensitivity, specificity, PPV, NPV (and the test and external rates' ``low``/``high``);
        ``attrs["external"]``: a sentence saying whether and where the external site was scored.
    """
    variant = variant or main_variant(cfg)
    oof = oof_predictions(cfg, variant)
    labels = list(oof.columns)
    y_val = true_labels(cfg, oof.index, labels)
    table = choose_thresholds(y_val, oof.to_numpy(), labels, cfg.target_sensitivity)
    table.insert(0, "variant", variant)
    table = score_operating_points(table, "val", y_val, oof.to_numpy(), labels, n_boot=None)
    test = ensemble_predictions(cfg, variant)
    table = score_operating_points(table, "test", true_labels(cfg, test.index, labels), test[labels].to_numpy(),
                                   labels, groups=patient_ids(cfg, test.index), n_boot=cfg.bootstrap, seed=_seed(cfg))
    return _external_operating_points(cfg, table, variant)


def _external_operating_points(cfg: StudyConfig, table: pd.DataFrame, variant: str) -> pd.DataFrame:
    """``table`` with its thresholds scored on ``variant``'s cached external predictions as
    ``external ...`` columns (patient-bootstrap CIs), when there are any; ``attrs["external"]`` says
    which."""
    if cfg.external_spec is None:
        table.attrs["external"] = "no external site (the study has no 'external:' block)"
        return table
    site = cfg.external_spec["name"]
    found = cached_external_predictions(cfg, variant)
    if found is None:
        table.attrs["external"] = (f"external site {site!r}: no current predictions of {variant!r} cached "
                                   f"(run 07_external first); its operating points are not scored")
        return table
    preds, ds, alignment = found
    shared = list(alignment.shared)
    y, scores, groups = aligned(ds.table, shared, preds.reset_index(), f"external predictions of {variant!r}")
    table = score_operating_points(table, "external", y, scores, shared, groups=groups, n_boot=cfg.bootstrap,
                                   seed=_seed(cfg))
    table.attrs["external"] = (f"external site {site!r}: {len(y)} images, {len(set(groups))} patients; "
                               f"thresholds scored on the {len(shared)} label(s) it annotates")
    return table


def operating_point_headline(cfg: StudyConfig, table: pd.DataFrame) -> dict[str, str]:
    """Per method: the mean test sensitivity and specificity over the labels with a threshold, and
    how many labels reach the target sensitivity on test."""
    variant = str(table["variant"].iloc[0])
    head = {}
    for method in (YOUDEN, target_method(cfg.target_sensitivity)):
        rows = table[(table["method"] == method) & table["threshold"].notna()]
        text = (f"mean test sensitivity {rows['test sensitivity'].mean():.2f}, specificity "
                f"{rows['test specificity'].mean():.2f} over {len(rows)} labels")
        if method != YOUDEN:
            share = float((rows["test sensitivity"] >= cfg.target_sensitivity).mean()) if len(rows) else float("nan")
            text += f"; a share of {share:.2f} of them reach the target on test"
        head[f"operating_points_{variant}_{method.split('>=')[0]}"] = text
    return head
