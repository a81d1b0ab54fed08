"""A study's parameters (:class:`StudyConfig`): the dataset, its folds, the variants compared and
their training parameters, read from a parameter file (:func:`load_study`) and checked before
anything runs; and the paths of its runs and report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrkit.data.datasets import check_dataset_options, check_test_split
from cxrkit.data.images import ImagePolicy
from cxrkit.study.cluster import ClusterConfig
from cxrkit.training.config import TrainConfig
from cxrkit.utils.params import ConfigError, from_dict, load_yaml
from cxrkit.utils.paths import resolve

#: phantom keys of a study: the smallest value each accepts and its description
PHANTOM_KEYS: dict[str, tuple[int, str]] = {
    "patients": (1, "an integer >= 1"),
    "size": (16, "an integer >= 16 (image side in pixels; the renderer's minimum)"),
    "seed": (0, "an integer >= 0"),
}
#: the phantom's image formats (``phantom: {format: dicom}``; cxrkit.phantom.formats.FORMATS), default first
PHANTOM_FORMATS = ("png", "png16", "dicom")


class StudyError(RuntimeError):
    """A study step failed (names the notebook and the cell)."""


@dataclass
class StudyConfig:
    """One study: the dataset, its folds, the variants compared and their training parameters."""

    name: str = "default"
    description: str = ""
    data: str = "data/phantom"  #: dataset root
    dataset: str = "gxs"
    dataset_options: dict = field(default_factory=dict)
    #: phantom generation when ``data`` does not exist yet: {patients, size, seed, format (png | png16 |
    #: dicom), site (a name: default | site_b, or a mapping, cxrkit.phantom.site.get_site)}; null for
    #: real data
    phantom: dict | None = field(default_factory=lambda: {"patients": 1700, "size": 128, "seed": 0})
    n_folds: int = 3
    test_size: float = 0.2  #: share of the images held out for test (test_split: stratified)
    #: stratified (test_size of the images, patient-grouped) | official (the dataset's official test
    #: images: NIH test_list.txt, MIMIC's split file, CheXpert valid.csv, VinDr's test set)
    test_split: str = "stratified"
    split_seed: int = 0
    group: str = "patient"  #: patient | image
    #: compared variants, the first is the baseline: a refiner name, or a mapping
    #: {name, refiner, ...train overrides} (e.g. a lambda sweep of the sparse refiner)
    variants: list = field(default_factory=lambda: ["none", "sparse"])
    train: dict = field(default_factory=dict)  #: TrainConfig overrides shared by every run
    bootstrap: int = 1000
    threshold: float = 0.5
    #: equal-mass bins of the expected calibration error and the reliability diagrams (08_trust)
    calibration_bins: int = 10
    #: the sensitivity the second operating point of every label must reach on the out-of-fold
    #: validation predictions (08_trust; the first is Youden's J)
    target_sensitivity: float = 0.9
    #: edges of the age bands of the subgroup analysis (08_trust): [50, 65] -> <50, 50-<65, >=65
    age_bands: list = field(default_factory=lambda: [50, 65])
    auto_train: bool = False  #: notebooks 04-06 train missing runs themselves (smoke only)
    runs: str = "runs"  #: training outputs go to <runs>/<name>/
    reports: str = "reports"  #: the report goes to <reports>/<name>/ and <reports>/index.html
    #: what each training job asks the scheduler for with `cxrkit study --executor slurm`
    #: (cxrkit.study.cluster.ClusterConfig): partition, gpus_per_job, cpus_per_job, mem_gb,
    #: time_min, account, qos, setup, sbatch, python; null: no cluster
    cluster: dict | None = None

    def validate(self) -> StudyConfig:
        """Check every key (phantom, variants, dataset options, each variant's training
        parameters) before anything runs; return self.

        Raises:
            ConfigError: naming the key.
        """
        if self.group not in ("patient", "image"):
            raise ConfigError(f"group: {self.group!r} is not 'patient' or 'image'")
        if self.n_folds < 2:
            raise ConfigError(f"n_folds: must be >= 2, got {self.n_folds}")
        self._check_trust()
        check_dataset_options(self.dataset, self.dataset_options)  # keys the loader accepts, nothing set twice
        check_test_split(self.dataset, self.dataset_options, self.test_split)  # an official test the data has
        if self.phantom is not None:
            unknown = set(self.phantom) - {*PHANTOM_KEYS, "format", "site"}
            if unknown:
                raise ConfigError(f"phantom: unknown key(s) {sorted(unknown)} (known: patients, size, seed, format, "
                                  f"site)")
            # here: reading a study imports the phantom only when it has one
            from cxrkit.phantom.site import get_site

            try:
                get_site(self.phantom.get("site"), where="phantom.site")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if self.phantom.get("format", PHANTOM_FORMATS[0]) not in PHANTOM_FORMATS:
                raise ConfigError(f"phantom.format: {self.phantom['format']!r} is not one of {PHANTOM_FORMATS}")
            for key, (low, what) in PHANTOM_KEYS.items():
                value = self.phantom.get(key, low)
                if not isinstance(value, int) or isinstance(value, bool) or value < low:
                    raise ConfigError(f"phantom.{key}: must be {what}, got {value!r}")
        if self.cluster is not None:
            ClusterConfig.parse(self.cluster)
        if not self.variants:
            raise ConfigError("variants: at least one refiner is needed")
        for key in ("data", "dataset", "dataset_options", "splits", "fold", "refiner", "out"):
            if key in self.train:
                raise ConfigError(f"train.{key}: set by the study, not in 'train'")
        from cxrkit.models import REFINERS  # here: reading a study does not import torch

        specs = self.variant_specs()
        bad = [s["refiner"] for s in specs.values() if s["refiner"] not in REFINERS]
        if bad:
            raise ConfigError(f"variants: unknown refiner(s) {bad}; known: {sorted(REFINERS)}")
        for name in specs:
            self.train_config(0, name)  # validates the train overrides of every variant
        return self

    def _check_trust(self) -> None:
        """The parameters of 08_trust: calibration_bins, target_sensitivity, age_bands."""
        if self.calibration_bins < 2:
            raise ConfigError(f"calibration_bins: must be an integer >= 2, got {self.calibration_bins}")
        if not 0 < self.target_sensitivity < 1:
            raise ConfigError(f"target_sensitivity: must be in (0, 1), got {self.target_sensitivity}")
        edges = self.age_bands
        if not edges or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges) \
                or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ConfigError(f"age_bands: must be a non-empty list of increasing ages (band edges), got {edges!r}")

    def variant_specs(self) -> dict[str, dict[str, Any]]:
        """Variant name -> its refiner and train overrides, in order (first = baseline)."""
        specs: dict[str, dict[str, Any]] = {}
        for i, v in enumerate(self.variants):
            if isinstance(v, str):
                spec = {"name": v, "refiner": v}
            elif isinstance(v, dict) and isinstance(v.get("name"), str) and isinstance(v.get("refiner"), str):
                spec = dict(v)
            else:
                raise ConfigError(f"variants[{i}]: need a refiner name or a mapping with 'name' and 'refiner', got {v!r}")
            for key in ("data", "dataset", "dataset_options", "splits", "fold", "out"):
                if key in spec:
                    raise ConfigError(f"variants[{i}].{key}: set by the study")
            for key in ("on_bad_image", "image_policy"):
                if key in spec:
                    raise ConfigError(f"variants[{i}].{key}: set it once in train.{key} "
                                      f"(every variant trains and is evaluated on the same images)")
            if spec["name"] in specs:
                raise ConfigError(f"variants[{i}]: duplicate variant name {spec['name']!r}")
            specs[spec["name"]] = spec
        return specs

    @property
    def on_bad_image(self) -> str:
        """``error`` or ``exclude``: what the study does with unreadable images (``train.on_bad_image``)."""
        return self.train.get("on_bad_image", TrainConfig.on_bad_image)

    @property
    def image_policy(self) -> ImagePolicy:
        """How the study's images of more than 8 bits are decoded (``train.image_policy``, defaults
        filled in)."""
        return ImagePolicy.parse(self.train.get("image_policy"), where="train.image_policy")

    @property
    def variant_names(self) -> list[str]:
        """Names of the variants in order (the first is the baseline)."""
        return list(self.variant_specs())

    # derived paths
    @property
    def run_dir(self) -> Path:
        """``<runs>/<name>/``: the study's folds and training runs."""
        return resolve(self.runs) / self.name

    @property
    def report_dir(self) -> Path:
        """``<reports>/<name>/``: the study's notebooks, figures, tables and index page."""
        return resolve(self.reports) / self.name

    @property
    def splits_path(self) -> Path:
        """The study's ``folds.csv``."""
        return self.run_dir / "folds.csv"

    def train_dir(self, fold: int, variant: str) -> Path:
        """The run folder of one fold of one variant."""
        return self.run_dir / variant / f"fold{fold}"

    def train_config(self, fold: int, variant: str) -> TrainConfig:
        """The TrainConfig of one fold and variant (train overrides, the variant's own overrides,
        and the study's data and folds)."""
        specs = self.variant_specs()
        if variant not in specs:
            raise ConfigError(f"unknown variant {variant!r} of study {self.name!r}; known: {list(specs)}")
        own = {k: v for k, v in specs[variant].items() if k != "name"}
        values = {**self.train, **own, "data": self.data, "dataset": self.dataset,
                  "dataset_options": self.dataset_options, "splits": str(self.splits_path), "fold": fold,
                  "out": str(self.train_dir(fold, variant))}
        if isinstance(values.get("tracking"), dict) and values["tracking"].get("mlflow"):
            values["tracking"] = self._tracking(values["tracking"], variant)
        return from_dict(TrainConfig, values, source=f"study {self.name!r} variant {variant!r}")

    def _tracking(self, tracking: dict[str, Any], variant: str) -> dict[str, Any]:
        """``train.tracking`` with the study's MLflow defaults: the study's name as the experiment,
        tags naming the study and the variant."""
        mlflow = tracking["mlflow"] if isinstance(tracking["mlflow"], dict) else {}
        tags = mlflow.get("tags") if isinstance(mlflow.get("tags"), dict) else {}
        mlflow = {"experiment": self.name, **mlflow, "tags": {"cxrkit.study": self.name, "cxrkit.variant": variant,
                                                               **tags}}
        return {**tracking, "mlflow": mlflow}


def load_study(path: str | Path, **overrides: Any) -> StudyConfig:
    """Read and validate a study parameter file (unknown keys in it or in ``train`` are errors)."""
    path = resolve(path)
    values = {**load_yaml(path), **overrides}
    return from_dict(StudyConfig, values, source=str(path))
