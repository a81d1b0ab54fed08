"""The phantom CXR label model: latent causes -> noisy-OR findings -> observed labels.

Implements sections 2 and 3 of ``shared/design/synthetic_cxr.md`` exactly: six latent causes
with per-patient persistence, noisy-OR findings, the Lung Opacity hierarchy, visibility
("drawn") flags with severities, report noise, No Finding derived from the observed
pathologies, optional CheXpert-style uncertain labels, and the patient/study metadata that
the Grand X-Ray Slam Division B CSV carries. :func:`sample_studies` draws one row per image;
:func:`split_table` splits it into the public CSV and the ground-truth sidecar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from cxrkit.data.labels import LABELS
from cxrkit.phantom.scanner import DEFAULT_SCANNER, Scanner

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
#: Age of a patient at the first study (years): round(mean + sd * N(0, 1) + AGE_CARDIAC * cardiac),
#: clipped to [18, 90]; later studies add the years between them (at most 95).
AGE_MEAN: float = 55.0
AGE_SD: float = 16.0
AGE_CARDIAC: float = 10.0
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


def _number(name: str, value: object, low: float, high: float, open_ends: str = "") -> float:
    """``value`` as a float inside [low, high] (``open_ends``: "l" and/or "h" exclude an end).

    Raises:
        ValueError: naming ``name``, for a non-number or a value outside the interval.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if "l" in open_ends else value >= low) and (value < high if "h" in open_ends else value <= high)
    if not ok:
        span = f"{'(' if 'l' in open_ends else '['}{low:g}, {high:g}{')' if 'h' in open_ends else ']'}"
        raise ValueError(f"{name}: must be a number in {span}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SiteConfig:
    """A hospital the phantom's studies come from: its population, its labeller and its scanner.

    The defaults are the design page's numbers (sections 2 and 3; the module constants), so
    ``SiteConfig()`` is today's phantom exactly. A site changes the label model only through the
    cause priors and the report-noise rates (:attr:`PhantomConfig.label_model`, what the exact
    oracle depends on); view, age and scanner change the metadata and the pixels, not the oracle.
    Named presets: :data:`cxrkit.phantom.site.SITES`.

    Attributes:
        name: the site's name (recorded in ``phantom.json``).
        cause_prior: P(cause) per latent cause, each in (0, 1); causes not given keep the default
            prior (:data:`CAUSE_PRIOR`).
        ap_prob_critical: P(ViewPosition AP) of a critical (ICU / post-op) study, in [0, 1].
        ap_prob_other: P(ViewPosition AP) of any other study, in [0, 1].
        age_mean: mean age in years at the first study (before the cardiac offset), in [18, 90].
        age_sd: sd of that age in years, in [0, 40].
        flip_pos_to_neg: the labeller's P(observed 0 | true 1) per pathology (a missed finding), in [0, 0.5).
        flip_neg_to_pos: the labeller's P(observed 1 | true 0) per pathology, in [0, 0.5).
        scanner: the scanner (:class:`~cxrkit.phantom.scanner.Scanner`).

    Raises:
        ValueError: naming the field (``cause_prior.<cause>`` for a prior) of a bad value.
    """

    name: str = "default"
    cause_prior: Mapping[str, float] = field(default_factory=lambda: dict(CAUSE_PRIOR))
    ap_prob_critical: float = AP_PROB_CRITICAL
    ap_prob_other: float = AP_PROB_OTHER
    age_mean: float = AGE_MEAN
    age_sd: float = AGE_SD
    flip_pos_to_neg: float = FLIP_POS_TO_NEG
    flip_neg_to_pos: float = FLIP_NEG_TO_POS
    scanner: Scanner = DEFAULT_SCANNER

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name: must be a non-empty string, got {self.name!r}")
        if not isinstance(self.cause_prior, Mapping):
            raise ValueError(f"cause_prior: must be a mapping cause -> probability, got {self.cause_prior!r}")
        unknown = sorted(set(self.cause_prior) - set(CAUSES))
        if unknown:
            raise ValueError(f"cause_prior: unknown cause(s) {unknown}; known: {list(CAUSES)}")
        prior = {**CAUSE_PRIOR, **self.cause_prior}
        object.__setattr__(self, "cause_prior",
                           {c: _number(f"cause_prior.{c}", prior[c], 0.0, 1.0, "lh") for c in CAUSES})
        for name, low, high, open_ends in (("ap_prob_critical", 0.0, 1.0, ""), ("ap_prob_other", 0.0, 1.0, ""),
                                           ("age_mean", 18.0, 90.0, ""), ("age_sd", 0.0, 40.0, ""),
                                           ("flip_pos_to_neg", 0.0, 0.5, "h"), ("flip_neg_to_pos", 0.0, 0.5, "h")):
            object.__setattr__(self, name, _number(name, getattr(self, name), low, high, open_ends))
        if not isinstance(self.scanner, Scanner):
            raise ValueError(f"scanner: must be a Scanner, got {self.scanner!r}")

    def __hash__(self) -> int:  # cause_prior is a dict: hash the values
        return hash((self.name, tuple(self.cause_prior.values()), self.ap_prob_critical, self.ap_prob_other,
                     self.age_mean, self.age_sd, self.flip_pos_to_neg, self.flip_neg_to_pos, self.scanner))

    def record(self) -> dict[str, object]:
        """The site as JSON-ready values (as written to ``phantom.json``)."""
        return {**asdict(self), "scanner": self.scanner.record()}


#: Today's phantom: the design page's population, labeller and scanner.
DEFAULT_SITE = SiteConfig()


@dataclass(frozen=True)
class LabelModel:
    """The parameters of the label model that a site can change: all the exact oracle depends on.

    Hashable, the key of the oracle's cached state enumeration and tie table
    (:mod:`cxrkit.phantom.posterior`). The other constants (noisy-OR weights and leaks,
    visibilities, the Lung Opacity hierarchy) are the module's.

    Attributes:
        cause_prior: P(cause), CAUSES order (6 values in (0, 1)).
        flip_pos_to_neg: P(observed 0 | true 1) of a pathology (0 without report noise).
        flip_neg_to_pos: P(observed 1 | true 0) of a pathology (0 without report noise).
    """

    cause_prior: tuple[float, ...]
    flip_pos_to_neg: float
    flip_neg_to_pos: float

    def describe(self) -> str:
        """A short text of the parameters, for error messages."""
        prior = ", ".join(f"{c} {p:g}" for c, p in zip(CAUSES, self.cause_prior, strict=True))
        return f"cause prior {prior}; flips 1->0 {self.flip_pos_to_neg:g}, 0->1 {self.flip_neg_to_pos:g}"


@dataclass(frozen=True)
class PhantomConfig:
    """Options of the phantom label model.

    Attributes:
        report_noise: flip observed pathology labels 1->0 and 0->1 at the site's labeller's rates
            (default site: 0.03 and 0.005); False keeps the true labels.
        uncertain_rate: fraction of occult positives and of likely negatives written as -1.
        site: the hospital (population, labeller, scanner); default: today's phantom.
    """

    report_noise: bool = True
    uncertain_rate: float = 0.0
    site: SiteConfig = DEFAULT_SITE

    def __post_init__(self) -> None:
        if not 0.0 <= self.uncertain_rate <= 1.0:
            raise ValueError(f"uncertain_rate must be in [0, 1], got {self.uncertain_rate}")
        if not isinstance(self.site, SiteConfig):
            raise ValueError(f"site must be a SiteConfig, got {self.site!r}")

    @property
    def flip_pos_to_neg(self) -> float:
        """P(observed 0 | true 1) for a pathology under this config."""
        return self.site.flip_pos_to_neg if self.report_noise else 0.0

    @property
    def flip_neg_to_pos(self) -> float:
        """P(observed 1 | true 0) for a pathology under this config."""
        return self.site.flip_neg_to_pos if self.report_noise else 0.0

    @property
    def label_model(self) -> LabelModel:
        """The label-model parameters of this config (the oracle's cache key)."""
        prior = tuple(self.site.cause_prior[c] for c in CAUSES)
        return LabelModel(prior, self.flip_pos_to_neg, self.flip_neg_to_pos)


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
