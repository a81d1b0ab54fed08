"""Drawing the phantom's studies from the label model (:mod:`cxrkit.phantom.model`), one row per
image, in a fixed order of draws, and splitting them into the public CSV and the truth sidecar.

The draws happen phase by phase (patients, causes, findings, visibility, report noise,
metadata, uncertain labels), each phase a function below taking the one generator in turn; the
order of the draws is what makes the result a deterministic function of the seed, so a phase
never draws out of turn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cxrkit.data.labels import LABELS
from cxrkit.phantom.model import (
    _DECIMALS,
    _HABITUS_JITTER,
    _HABITUS_PATIENT,
    AGE_CARDIAC,
    CAUSES,
    DEFAULT_CONFIG,
    DRAWABLE,
    HABITUS_KEYS,
    LO_GIVEN_CHILD,
    LO_LEAK,
    LO_LEAK_VISIBILITY,
    LUNG_OPACITY_CHILDREN,
    MALE_PROB,
    META_COLUMNS,
    NOISY_OR_FINDINGS,
    PATHOLOGIES,
    PERSISTENCE,
    SEVERITY_RANGE,
    STUDIES_PER_PATIENT,
    UNCERTAIN_LIKELY,
    VISIBILITY,
    PhantomConfig,
    finding_probabilities,
    lung_opacity_probability,
)


def patient_id_width(n_patients: int) -> int:
    """Digits of the zero-padded patient number (at least 6, as in ``P000123``)."""
    return max(6, len(str(n_patients)))


def sample_studies(
    n_patients: int, seed: int, config: PhantomConfig = DEFAULT_CONFIG
) -> pd.DataFrame:
    """Draw the studies (one frontal image each) of ``n_patients`` phantom patients.

    The draw order is fixed, so the result is a deterministic function of the arguments; the
    uncertain-label draws come last, so turning them on leaves every other column unchanged.
    No Finding is 1 exactly when every observed pathology is 0 (with uncertain labels on, as in
    CheXpert's labeler, a pathology written -1 also makes No Finding 0).

    Args:
        n_patients: number of patients (each has 1-4 studies, mean 1.8).
        seed: seed of ``np.random.default_rng``.
        config: label-model options, with the site (population: cause priors, AP share, age;
            labeller: report-noise rates) the studies come from.

    Returns:
        One row per study: the public columns (META_COLUMNS then the 14 observed labels), then
        ``cause_<c>``, ``true_<label>`` (14), ``drawn_<label>`` and ``sev_<label>`` (13 drawable
        labels), ``hab_<key>`` and ``image_seed``.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    rng = np.random.default_rng(seed)
    pat = _patients(rng, n_patients)
    causes = _causes(rng, pat["study"], config)
    p_find, true_find, any_child, true_lo = _findings(rng, causes)
    true_13, drawn, sev = _visibility(rng, true_find, any_child, true_lo)
    true_path, obs_13 = _report_noise(rng, true_13, config)
    meta = _metadata(rng, pat, causes, config)

    # Observed labels in LABELS order, with optional uncertainty.
    n = len(pat["patient"])
    observed = np.zeros((n, len(LABELS)), dtype=int)
    for d, lab in enumerate(DRAWABLE):
        observed[:, LABELS.index(lab)] = obs_13[:, d]
    if config.uncertain_rate > 0:
        _mark_uncertain(observed, causes, p_find, drawn, config.uncertain_rate, rng)
    nf = LABELS.index("No Finding")
    path_l = [LABELS.index(p) for p in PATHOLOGIES]
    observed[:, nf] = (observed[:, path_l] == 0).all(axis=1)
    return _table(n_patients, pat, meta, observed, causes, true_13, true_path, drawn, sev)


def _patients(rng: np.random.Generator, n_patients: int) -> dict[str, Any]:
    """Per patient: number of studies, sex, age offset and habitus; per study row (patient-major):
    its patient, study number and the row of the patient's first study."""
    counts = rng.choice(
        np.array(list(STUDIES_PER_PATIENT)),
        size=n_patients,
        p=np.array(list(STUDIES_PER_PATIENT.values())),
    )
    male = rng.random(n_patients) < MALE_PROB
    age_noise = rng.normal(0.0, 1.0, n_patients)
    hab_patient = {
        k: np.clip(rng.normal(m, sd, n_patients), lo, hi)
        for k, (m, sd, lo, hi) in _HABITUS_PATIENT.items()
    }
    patient = np.repeat(np.arange(n_patients), counts)
    n = patient.size
    first = np.r_[0, np.cumsum(counts)[:-1]]
    study = np.arange(n) - np.repeat(first, counts) + 1
    return {"counts": counts, "male": male, "age_noise": age_noise, "hab_patient": hab_patient,
            "patient": patient, "first": first, "study": study}


def _causes(rng: np.random.Generator, study: np.ndarray, config: PhantomConfig) -> np.ndarray:
    """(n, 6) causes with persistence: rows are patient-major, so row i-1 is the previous study.
    The priors are the site's (``config.site.cause_prior``)."""
    n, n_causes = len(study), len(CAUSES)
    prior = np.array([config.site.cause_prior[c] for c in CAUSES])
    persist = np.array([PERSISTENCE[c] for c in CAUSES])
    fresh = rng.random((n, n_causes)) < prior
    keep = rng.random((n, n_causes)) < persist
    causes = fresh.copy()
    for k in range(2, max(STUDIES_PER_PATIENT) + 1):
        rows = np.flatnonzero(study == k)
        causes[rows] = np.where(keep[rows], causes[rows - 1], fresh[rows])
    return causes


def _findings(rng: np.random.Generator, causes: np.ndarray) -> tuple[np.ndarray, ...]:
    """True findings (noisy-OR) and the Lung Opacity hierarchy: ``(p_find, true_find, any_child,
    true_lo)``."""
    n = len(causes)
    p_find = finding_probabilities(causes)
    true_find = rng.random((n, len(NOISY_OR_FINDINGS))) < p_find
    child_idx = [NOISY_OR_FINDINGS.index(ch) for ch in LUNG_OPACITY_CHILDREN]
    any_child = true_find[:, child_idx].any(axis=1)
    true_lo = rng.random(n) < np.where(any_child, LO_GIVEN_CHILD, LO_LEAK)
    return p_find, true_find, any_child, true_lo


def _visibility(rng: np.random.Generator, true_find: np.ndarray, any_child: np.ndarray,
                true_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visibility and severity of the 13 drawable labels (DRAWABLE order): ``(true_13, drawn, sev)``."""
    n = len(true_find)
    vis_draw = rng.random((n, len(DRAWABLE)))
    sev_draw = rng.uniform(*SEVERITY_RANGE, size=(n, len(DRAWABLE)))
    true_13 = np.zeros((n, len(DRAWABLE)), dtype=bool)
    vis_13 = np.zeros(len(DRAWABLE))
    lo_d = DRAWABLE.index("Lung Opacity")
    for j, f in enumerate(NOISY_OR_FINDINGS):
        d = DRAWABLE.index(f)
        true_13[:, d] = true_find[:, j]
        vis_13[d] = VISIBILITY[f]
    true_13[:, lo_d] = true_lo
    drawn = true_13 & (vis_draw < vis_13)
    drawn[:, lo_d] = true_lo & ~any_child & (vis_draw[:, lo_d] < LO_LEAK_VISIBILITY)
    sev = np.where(drawn, np.round(sev_draw, _DECIMALS), 0.0)
    return true_13, drawn, sev


def _report_noise(rng: np.random.Generator, true_13: np.ndarray,
                  config: PhantomConfig) -> tuple[np.ndarray, np.ndarray]:
    """Report noise on the 12 pathologies: ``(true pathologies, observed drawable labels)``."""
    path_d = [DRAWABLE.index(p) for p in PATHOLOGIES]
    flip_u = rng.random((len(true_13), len(PATHOLOGIES)))
    true_path = true_13[:, path_d]
    obs_path = np.where(
        true_path, flip_u >= config.flip_pos_to_neg, flip_u < config.flip_neg_to_pos
    )
    obs_13 = true_13.copy()
    obs_13[:, path_d] = obs_path
    return true_path, obs_13


def _metadata(rng: np.random.Generator, pat: dict[str, Any], causes: np.ndarray,
              config: PhantomConfig) -> dict[str, Any]:
    """Per study: AP view, age, habitus (the patient's, jittered) and the image seed. The AP
    shares and the age distribution are the site's (``config.site``)."""
    n, study, first, counts, patient = len(pat["patient"]), pat["study"], pat["first"], pat["counts"], pat["patient"]
    site = config.site
    ap = rng.random(n) < np.where(
        causes[:, CAUSES.index("critical")], site.ap_prob_critical, site.ap_prob_other
    )
    gap = np.where(study > 1, rng.integers(0, 3, n), 0)
    gap_cum = np.cumsum(gap)
    years_since_first = gap_cum - np.repeat(gap_cum[first], counts)
    cardiac_first = causes[first, CAUSES.index("cardiac")]
    base_age = np.clip(np.round(site.age_mean + site.age_sd * pat["age_noise"] + AGE_CARDIAC * cardiac_first), 18, 90)
    age = np.minimum(base_age[patient] + years_since_first, 95).astype(int)
    hab = {
        k: np.round(
            np.clip(
                pat["hab_patient"][k][patient] + rng.normal(0.0, _HABITUS_JITTER[k], n),
                _HABITUS_PATIENT[k][2],
                _HABITUS_PATIENT[k][3],
            ),
            _DECIMALS,
        )
        for k in HABITUS_KEYS
    }
    image_seed = rng.integers(0, 2**31 - 1, n)
    return {"ap": ap, "age": age, "hab": hab, "image_seed": image_seed}


def _table(n_patients: int, pat: dict[str, Any], meta: dict[str, Any], observed: np.ndarray, causes: np.ndarray,
           true_13: np.ndarray, true_path: np.ndarray, drawn: np.ndarray, sev: np.ndarray) -> pd.DataFrame:
    """The rows of :func:`sample_studies`: public columns, then causes, truth, drawn flags,
    severities, habitus and image seeds."""
    patient, study = pat["patient"], pat["study"]
    width = patient_id_width(n_patients)
    pid = np.array([f"P{i + 1:0{width}d}" for i in range(n_patients)])[patient]
    cols: dict[str, object] = {
        "Image_name": [f"{p}_{s}_1.png" for p, s in zip(pid, study, strict=True)],
        "Patient_ID": pid,
        "Study": study,
        "Sex": np.where(pat["male"][patient], "M", "F"),
        "Age": meta["age"],
        "ViewCategory": "Frontal",
        "ViewPosition": np.where(meta["ap"], "AP", "PA"),
    }
    for i, lab in enumerate(LABELS):
        cols[lab] = observed[:, i]
    for i, c in enumerate(CAUSES):
        cols[f"cause_{c}"] = causes[:, i].astype(int)
    for lab in LABELS:
        if lab == "No Finding":
            cols[f"true_{lab}"] = (~true_path.any(axis=1)).astype(int)
        else:
            cols[f"true_{lab}"] = true_13[:, DRAWABLE.index(lab)].astype(int)
    for d, lab in enumerate(DRAWABLE):
        cols[f"drawn_{lab}"] = drawn[:, d].astype(int)
    for d, lab in enumerate(DRAWABLE):
        cols[f"sev_{lab}"] = sev[:, d]
    for k in HABITUS_KEYS:
        cols[f"hab_{k}"] = meta["hab"][k]
    cols["image_seed"] = meta["image_seed"].astype(np.int64)
    return pd.DataFrame(cols)


def _mark_uncertain(
    observed: np.ndarray,
    causes: np.ndarray,
    p_find: np.ndarray,
    drawn: np.ndarray,
    rate: float,
    rng: np.random.Generator,
) -> None:
    """Write -1 into ``observed`` (LABELS order, in place) for a fraction ``rate`` of candidates.

    Candidates, for every label but No Finding: occult positives (observed 1, not drawn; for
    Lung Opacity neither its haze nor any child drawn) and negatives whose causes make them
    likely (observed 0 and P(y = 1 | c) >= UNCERTAIN_LIKELY).
    """
    n = observed.shape[0]
    p_13 = np.zeros((n, len(DRAWABLE)))
    for j, f in enumerate(NOISY_OR_FINDINGS):
        p_13[:, DRAWABLE.index(f)] = p_find[:, j]
    lo_d = DRAWABLE.index("Lung Opacity")
    p_13[:, lo_d] = lung_opacity_probability(causes)
    evidence = drawn.copy()
    evidence[:, lo_d] |= drawn[:, [DRAWABLE.index(ch) for ch in LUNG_OPACITY_CHILDREN]].any(axis=1)
    cols = [LABELS.index(lab) for lab in DRAWABLE]
    obs = observed[:, cols]
    candidate = ((obs == 1) & ~evidence) | ((obs == 0) & (p_13 >= UNCERTAIN_LIKELY))
    mark = candidate & (rng.random(candidate.shape) < rate)
    observed[:, cols] = np.where(mark, -1, obs)


def split_table(studies: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split :func:`sample_studies` output into the public CSV table and the truth sidecar.

    Returns:
        ``(train_df, truth_df)``: ``train_df`` has META_COLUMNS then the 14 labels (ints);
        ``truth_df`` has ``Image_name`` and every other column (causes, true labels, drawn
        flags, severities, habitus, image seed).
    """
    public = list(META_COLUMNS) + list(LABELS)
    missing = [c for c in public if c not in studies.columns]
    if missing:
        raise KeyError(f"studies table lacks columns {missing}")
    truth_cols = ["Image_name"] + [c for c in studies.columns if c not in public]
    return studies[public].copy(), studies[truth_cols].copy()
