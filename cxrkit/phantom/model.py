"""The phantom CXR label model: latent causes -> noisy-OR findings -> observed labels.

Implements sections 2 and 3 of ``shared/design/synthetic_cxr.md`` exactly: six latent causes
with per-patient persistence, noisy-OR findings, the Lung Opacity hierarchy, visibility
("drawn") flags with severities, report noise, No Finding derived from the observed
pathologies, optional CheXpert-style uncertain labels, and the patient/study metadata that
the Grand X-Ray Slam Division B CSV carries. :func:`sample_studies` draws one row per image;
:func:`split_table` splits it into the public CSV and the ground-truth sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxrkit.labels import LABELS

#: Latent causes, in the order used by every array of this package.
CAUSES: tuple[str, ...] = (
    "cardiac",
    "infection",
    "critical",
    "trauma",
    "neoplasm",
    "pleural_chronic",
)

#: Prior probability of each cause (causes are independent a priori).
CAUSE_PRIOR: dict[str, float] = {
    "cardiac": 0.25,
    "infection": 0.18,
    "critical": 0.45,
    "trauma": 0.05,
    "neoplasm": 0.06,
    "pleural_chronic": 0.03,
}

#: Probability that a later study keeps the previous study's value (else: redrawn from the prior).
PERSISTENCE: dict[str, float] = {
    "cardiac": 0.85,
    "infection": 0.0,
    "critical": 0.6,
    "trauma": 0.0,
    "neoplasm": 0.9,
    "pleural_chronic": 0.9,
}

#: Noisy-OR weights w_kj: finding -> {cause: weight}, for every finding except Lung Opacity
#: and No Finding, in label order.
WEIGHTS: dict[str, dict[str, float]] = {
    "Atelectasis": {"critical": 0.25, "infection": 0.15},
    "Cardiomegaly": {"cardiac": 0.50},
    "Consolidation": {"infection": 0.40},
    "Edema": {"cardiac": 0.60, "critical": 0.12},
    "Enlarged Cardiomediastinum": {"cardiac": 0.20, "trauma": 0.20},
    "Fracture": {"trauma": 0.55},
    "Lung Lesion": {"neoplasm": 0.65},
    "Pleural Effusion": {"cardiac": 0.55, "infection": 0.25, "critical": 0.30, "neoplasm": 0.25},
    "Pleural Other": {"pleural_chronic": 0.55},
    "Pneumonia": {"infection": 0.30},
    "Pneumothorax": {"trauma": 0.40, "critical": 0.08},
    "Support Devices": {"critical": 0.90},
}

#: Noisy-OR leak of each finding.
LEAK: dict[str, float] = {
    "Atelectasis": 0.04,
    "Cardiomegaly": 0.03,
    "Consolidation": 0.01,
    "Edema": 0.02,
    "Enlarged Cardiomediastinum": 0.015,
    "Fracture": 0.015,
    "Lung Lesion": 0.01,
    "Pleural Effusion": 0.04,
    "Pleural Other": 0.004,
    "Pneumonia": 0.004,
    "Pneumothorax": 0.01,
    "Support Devices": 0.04,
}

#: Probability that a present finding is drawn in the image (else it is occult).
VISIBILITY: dict[str, float] = {
    "Atelectasis": 0.70,
    "Cardiomegaly": 0.90,
    "Consolidation": 0.85,
    "Edema": 0.85,
    "Enlarged Cardiomediastinum": 0.50,
    "Fracture": 0.60,
    "Lung Lesion": 0.80,
    "Pleural Effusion": 0.90,
    "Pleural Other": 0.60,
    "Pneumonia": 0.40,
    "Pneumothorax": 0.85,
    "Support Devices": 0.98,
}

#: Findings whose presence makes Lung Opacity likely (its "children" in CheXpert's hierarchy).
LUNG_OPACITY_CHILDREN: tuple[str, ...] = (
    "Atelectasis",
    "Consolidation",
    "Edema",
    "Lung Lesion",
    "Pneumonia",
)
#: P(Lung Opacity | any child present).
LO_GIVEN_CHILD: float = 0.95
#: P(Lung Opacity | no child present).
LO_LEAK: float = 0.10
#: Probability that a leak-only Lung Opacity is drawn (as a faint generic haze).
LO_LEAK_VISIBILITY: float = 0.70

#: Report noise: P(observed 0 | true 1) and P(observed 1 | true 0) for each pathology.
FLIP_POS_TO_NEG: float = 0.03
FLIP_NEG_TO_POS: float = 0.005

#: Labels subject to report noise and defining No Finding (all but Support Devices, No Finding).
PATHOLOGIES: tuple[str, ...] = tuple(
    lab for lab in LABELS if lab not in ("Support Devices", "No Finding")
)
#: Labels that can be drawn in the image (all but No Finding), in label order.
DRAWABLE: tuple[str, ...] = tuple(lab for lab in LABELS if lab != "No Finding")
#: Noisy-OR findings (all but Lung Opacity and No Finding), in label order.
NOISY_OR_FINDINGS: tuple[str, ...] = tuple(WEIGHTS)

#: Distribution of the number of studies per patient (mean 1.8).
STUDIES_PER_PATIENT: dict[int, float] = {1: 0.50, 2: 0.28, 3: 0.14, 4: 0.08}
#: Severity of a drawn finding: Uniform(low, high).
SEVERITY_RANGE: tuple[float, float] = (0.3, 1.0)
#: P(ViewPosition == "AP") for critical studies and for the others.
AP_PROB_CRITICAL: float = 0.8
AP_PROB_OTHER: float = 0.25
#: P(Sex == "M").
MALE_PROB: float = 0.55
#: P(y = 1 | c) at or above which a negative label is a candidate for "uncertain" (-1).
UNCERTAIN_LIKELY: float = 0.3

#: Body habitus keys passed to the renderer.
HABITUS_KEYS: tuple[str, ...] = ("width", "height", "rotation", "brightness")
#: Per-patient habitus: (mean, sd, low, high) of a clipped normal.
_HABITUS_PATIENT: dict[str, tuple[float, float, float, float]] = {
    "width": (1.0, 0.05, 0.88, 1.12),
    "height": (1.0, 0.05, 0.88, 1.12),
    "rotation": (0.0, 1.5, -4.0, 4.0),
    "brightness": (1.0, 0.06, 0.85, 1.15),
}
#: Per-study jitter sd around the patient's habitus (clipped to the same range).
_HABITUS_JITTER: dict[str, float] = {
    "width": 0.01,
    "height": 0.01,
    "rotation": 0.5,
    "brightness": 0.02,
}

#: Decimals kept for severities and habitus, so the written sidecar fully determines each image.
_DECIMALS = 6

#: Public CSV metadata columns (Grand X-Ray Slam Division B), before the 14 labels.
META_COLUMNS: tuple[str, ...] = (
    "Image_name",
    "Patient_ID",
    "Study",
    "Sex",
    "Age",
    "ViewCategory",
    "ViewPosition",
)


@dataclass(frozen=True)
class PhantomConfig:
    """Options of the phantom label model.

    Attributes:
        report_noise: flip observed pathology labels 1->0 (prob 0.03) and 0->1 (prob 0.005).
        uncertain_rate: fraction of occult positives and of likely negatives written as -1.
    """

    report_noise: bool = True
    uncertain_rate: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.uncertain_rate <= 1.0:
            raise ValueError(f"uncertain_rate must be in [0, 1], got {self.uncertain_rate}")

    @property
    def flip_pos_to_neg(self) -> float:
        """P(observed 0 | true 1) for a pathology under this config."""
        return FLIP_POS_TO_NEG if self.report_noise else 0.0

    @property
    def flip_neg_to_pos(self) -> float:
        """P(observed 1 | true 0) for a pathology under this config."""
        return FLIP_NEG_TO_POS if self.report_noise else 0.0


#: The default options (a module-level singleton used as the default argument).
DEFAULT_CONFIG = PhantomConfig()


def _weight_matrix() -> np.ndarray:
    """(6, 12) matrix of noisy-OR weights, causes x NOISY_OR_FINDINGS."""
    w = np.zeros((len(CAUSES), len(NOISY_OR_FINDINGS)))
    for j, finding in enumerate(NOISY_OR_FINDINGS):
        for cause, weight in WEIGHTS[finding].items():
            w[CAUSES.index(cause), j] = weight
    return w


def finding_probabilities(causes: np.ndarray) -> np.ndarray:
    """Noisy-OR probabilities P(y_j = 1 | c) of the NOISY_OR_FINDINGS.

    Args:
        causes: (..., 6) array of 0/1 cause values in CAUSES order.

    Returns:
        (..., 12) array of probabilities in NOISY_OR_FINDINGS order.
    """
    leak = np.array([LEAK[f] for f in NOISY_OR_FINDINGS])
    log_keep = np.log1p(-_weight_matrix())
    c = np.asarray(causes, dtype=float)
    return 1.0 - (1.0 - leak) * np.exp(c @ log_keep)


def lung_opacity_probability(causes: np.ndarray) -> np.ndarray:
    """P(Lung Opacity = 1 | c), marginalising its five children.

    Args:
        causes: (..., 6) array of 0/1 cause values.

    Returns:
        (...) array of probabilities.
    """
    p = finding_probabilities(causes)
    idx = [NOISY_OR_FINDINGS.index(ch) for ch in LUNG_OPACITY_CHILDREN]
    none = np.prod(1.0 - p[..., idx], axis=-1)
    return LO_GIVEN_CHILD * (1.0 - none) + LO_LEAK * none


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
        config: label-model options.

    Returns:
        One row per study: the public columns (META_COLUMNS then the 14 observed labels), then
        ``cause_<c>``, ``true_<label>`` (14), ``drawn_<label>`` and ``sev_<label>`` (13 drawable
        labels), ``hab_<key>`` and ``image_seed``.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    rng = np.random.default_rng(seed)
    n_causes, n_find = len(CAUSES), len(NOISY_OR_FINDINGS)

    # Patients: number of studies, sex, age offset, habitus.
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

    # Causes with persistence: rows are patient-major, so row i-1 is the previous study.
    prior = np.array([CAUSE_PRIOR[c] for c in CAUSES])
    persist = np.array([PERSISTENCE[c] for c in CAUSES])
    fresh = rng.random((n, n_causes)) < prior
    keep = rng.random((n, n_causes)) < persist
    causes = fresh.copy()
    for k in range(2, max(STUDIES_PER_PATIENT) + 1):
        rows = np.flatnonzero(study == k)
        causes[rows] = np.where(keep[rows], causes[rows - 1], fresh[rows])

    # True findings (noisy-OR), Lung Opacity hierarchy.
    p_find = finding_probabilities(causes)
    true_find = rng.random((n, n_find)) < p_find
    child_idx = [NOISY_OR_FINDINGS.index(ch) for ch in LUNG_OPACITY_CHILDREN]
    any_child = true_find[:, child_idx].any(axis=1)
    true_lo = rng.random(n) < np.where(any_child, LO_GIVEN_CHILD, LO_LEAK)

    # Visibility and severity (13 drawable labels, DRAWABLE order).
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

    # Report noise on the 12 pathologies; No Finding from the observed pathologies.
    path_d = [DRAWABLE.index(p) for p in PATHOLOGIES]
    flip_u = rng.random((n, len(PATHOLOGIES)))
    true_path = true_13[:, path_d]
    obs_path = np.where(
        true_path, flip_u >= config.flip_pos_to_neg, flip_u < config.flip_neg_to_pos
    )
    obs_13 = true_13.copy()
    obs_13[:, path_d] = obs_path

    # Metadata.
    ap = rng.random(n) < np.where(
        causes[:, CAUSES.index("critical")], AP_PROB_CRITICAL, AP_PROB_OTHER
    )
    gap = np.where(study > 1, rng.integers(0, 3, n), 0)
    gap_cum = np.cumsum(gap)
    years_since_first = gap_cum - np.repeat(gap_cum[first], counts)
    cardiac_first = causes[first, CAUSES.index("cardiac")]
    base_age = np.clip(np.round(55.0 + 16.0 * age_noise + 10.0 * cardiac_first), 18, 90)
    age = np.minimum(base_age[patient] + years_since_first, 95).astype(int)
    hab = {
        k: np.round(
            np.clip(
                hab_patient[k][patient] + rng.normal(0.0, _HABITUS_JITTER[k], n),
                _HABITUS_PATIENT[k][2],
                _HABITUS_PATIENT[k][3],
            ),
            _DECIMALS,
        )
        for k in HABITUS_KEYS
    }
    image_seed = rng.integers(0, 2**31 - 1, n)

    # Observed labels in LABELS order, with optional uncertainty.
    observed = np.zeros((n, len(LABELS)), dtype=int)
    for d, lab in enumerate(DRAWABLE):
        observed[:, LABELS.index(lab)] = obs_13[:, d]
    if config.uncertain_rate > 0:
        _mark_uncertain(observed, causes, p_find, drawn, config.uncertain_rate, rng)
    nf = LABELS.index("No Finding")
    path_l = [LABELS.index(p) for p in PATHOLOGIES]
    observed[:, nf] = (observed[:, path_l] == 0).all(axis=1)

    width = patient_id_width(n_patients)
    pid = np.array([f"P{i + 1:0{width}d}" for i in range(n_patients)])[patient]
    cols: dict[str, object] = {
        "Image_name": [f"{p}_{s}_1.png" for p, s in zip(pid, study, strict=True)],
        "Patient_ID": pid,
        "Study": study,
        "Sex": np.where(male[patient], "M", "F"),
        "Age": age,
        "ViewCategory": "Frontal",
        "ViewPosition": np.where(ap, "AP", "PA"),
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
        cols[f"hab_{k}"] = hab[k]
    cols["image_seed"] = image_seed.astype(np.int64)
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
