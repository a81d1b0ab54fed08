"""A study's parameters (:class:`StudyConfig`): the dataset, its folds, the variants compared and
their training parameters, read from a parameter file (:func:`load_study`) and checked before
anything runs; and the paths of its runs and report."""

from __future__ import annotations

import re
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


#: keys of a study's ``external:`` block (``StudyConfig.external``)
EXTERNAL_KEYS = ("name", "data", "dataset", "dataset_options", "phantom")


def check_phantom(phantom: dict[str, Any], where: str) -> None:
    """Check a phantom block (``phantom:`` or ``external.phantom:``): known keys, a known site,
    format and integer sizes.

    Raises:
        ConfigError: naming ``<where>.<key>``.
    """
    unknown = set(phantom) - {*PHANTOM_KEYS, "format", "site"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (known: patients, size, seed, format, site)")
    # here: reading a study imports the phantom only when it has one
    from cxrkit.phantom.site import get_site

    try:
        get_site(phantom.get("site"), where=f"{where}.site")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if phantom.get("format", PHANTOM_FORMATS[0]) not in PHANTOM_FORMATS:
        raise ConfigError(f"{where}.format: {phantom['format']!r} is not one of {PHANTOM_FORMATS}")
    for key, (low, what) in PHANTOM_KEYS.items():
        value = phantom.get(key, low)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{where}.{key}: must be {what}, got {value!r}")


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
    #: external validation (07_external): another site the trained variants are applied to, either
    #: a phantom site generated when ``data`` does not exist yet {name, data, phantom: {site,
    #: patients, size, seed, format}} or real data read by its loader {name, data, dataset,
    #: dataset_options}; null: no external step (:attr:`external_spec` fills in the defaults)
    external: dict | None = None
    #: training-seed replicates: every fold of every variant is trained once per seed (runs under
    #: ``<runs>/<name>/<variant>/seed<s>/fold<k>``) and 05 adds CIs that cover the training seed as well
    #: as test sampling; null: one seed, ``train.seed`` (default 0), runs under ``<variant>/fold<k>``
    seeds: list | None = None

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
        self._check_seeds()
        check_dataset_options(self.dataset, self.dataset_options)  # keys the loader accepts, nothing set twice
        check_test_split(self.dataset, self.dataset_options, self.test_split)  # an official test the data has
        if self.phantom is not None:
            check_phantom(self.phantom, "phantom")
        self._check_external()
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

    def _check_external(self) -> None:
        """The ``external:`` block: known keys, a name usable in file names, data other than the
        study's, a valid phantom or dataset with its options (errors name ``external.<key>``)."""
        if self.external is None:
            return
        if not isinstance(self.external, dict):
            raise ConfigError(f"external: must be a mapping (name, data, dataset, dataset_options, phantom), "
                              f"got {self.external!r}")
        unknown = set(self.external) - set(EXTERNAL_KEYS)
        if unknown:
            raise ConfigError(f"external: unknown key(s) {sorted(unknown)} (known: {', '.join(EXTERNAL_KEYS)})")
        phantom = self.external.get("phantom")
        if phantom is not None:
            if not isinstance(phantom, dict):
                raise ConfigError(f"external.phantom: must be a mapping (site, patients, size, seed, format), "
                                  f"got {phantom!r}")
            check_phantom(phantom, "external.phantom")
            if self.external.get("dataset", "gxs") != "gxs" or self.external.get("dataset_options"):
                raise ConfigError("external.dataset: a phantom site is read by the gxs loader without options; "
                                  "leave dataset and dataset_options out, or phantom out for real data")
        elif not isinstance(self.external.get("data"), str) or not self.external["data"]:
            raise ConfigError("external.data: the external dataset's folder is needed (or a phantom: {site: ...} "
                              "to generate one)")
        spec = self.external_spec
        if not isinstance(spec["name"], str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", spec["name"]):
            raise ConfigError(f"external.name: must be letters, digits, '_', '.' or '-' (it names files), "
                              f"got {spec['name']!r}")
        if not isinstance(spec["data"], str) or resolve(spec["data"]) == resolve(self.data):
            raise ConfigError(f"external.data: must be a folder other than the study's data ({self.data}), "
                              f"got {spec['data']!r}")
        if not isinstance(spec["dataset_options"], dict):
            raise ConfigError(f"external.dataset_options: must be a mapping, got {spec['dataset_options']!r}")
        try:
            check_dataset_options(spec["dataset"], spec["dataset_options"])
        except ConfigError as exc:
            raise ConfigError(f"external.{exc}") from None

    @property
    def external_spec(self) -> dict[str, Any] | None:
        """The ``external:`` block with its defaults filled in (None without one): ``name`` (the
        phantom site's name, else the dataset's), ``data`` (a phantom's default:
        ``data/<study name>_<site name>``), ``dataset`` (``gxs``), ``dataset_options`` ({}) and
        ``phantom`` (None for real data; else ``site`` (default ``site_b``), ``patients`` (600),
        ``size`` (128), ``seed`` (1), ``format`` (png))."""
        if self.external is None:
            return None
        ext = dict(self.external)
        phantom = ext.get("phantom")
        if phantom is not None:
            phantom = {"site": "site_b", "patients": 600, "size": 128, "seed": 1, "format": "png", **phantom}
            # here: reading a study imports the phantom only when it has one
            from cxrkit.phantom.site import get_site

            try:
                site_name = get_site(phantom["site"]).name
            except ValueError:
                site_name = "site"  # reported by validate
            ext.setdefault("name", site_name)
            ext.setdefault("data", f"data/{self.name}_{ext['name']}")
        dataset = ext.get("dataset", "gxs")
        return {"name": ext.get("name", dataset), "data": ext.get("data"), "dataset": dataset,
                "dataset_options": ext.get("dataset_options") or {}, "phantom": phantom}

    def _check_seeds(self) -> None:
        """``seeds``: null or a non-empty list of distinct integers >= 0, not together with ``train.seed``."""
        if self.seeds is None:
            return
        if not isinstance(self.seeds, list) or not self.seeds or any(
                not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise ConfigError(f"seeds: must be a non-empty list of integers >= 0, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: each seed once, got {self.seeds!r}")
        if "seed" in self.train or any(isinstance(v, dict) and "seed" in v for v in self.variants):
            raise ConfigError("seeds: the training seeds are set by 'seeds'; leave train.seed (and the variants' "
                              "seed) out")

    @property
    def seed_list(self) -> list[int]:
        """The training seeds: ``seeds``, or the one of ``train.seed`` (default 0)."""
        return list(self.seeds) if self.seeds is not None else [int(self.train.get("seed", 0))]

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

    def train_dir(self, fold: int, variant: str, seed: int | None = None) -> Path:
        """The run folder of one fold of one variant (with ``seeds``: of one training seed, None: the
        first).

        Raises:
            ConfigError: a seed that is not one of the study's.
        """
        if seed is not None and seed not in self.seed_list:
            raise ConfigError(f"seed {seed!r} is not one of study {self.name!r}'s training seeds {self.seed_list}")
        if self.seeds is None:
            return self.run_dir / variant / f"fold{fold}"
        return self.run_dir / variant / f"seed{self.seed_list[0] if seed is None else seed}" / f"fold{fold}"

    def train_config(self, fold: int, variant: str, seed: int | None = None) -> TrainConfig:
        """The TrainConfig of one fold and variant (train overrides, the variant's own overrides,
        and the study's data and folds), trained with ``seed`` (with ``seeds``; None: the first)."""
        specs = self.variant_specs()
        if variant not in specs:
            raise ConfigError(f"unknown variant {variant!r} of study {self.name!r}; known: {list(specs)}")
        own = {k: v for k, v in specs[variant].items() if k != "name"}
        values = {**self.train, **own, "data": self.data, "dataset": self.dataset,
                  "dataset_options": self.dataset_options, "splits": str(self.splits_path), "fold": fold,
                  "out": str(self.train_dir(fold, variant, seed))}
        if self.seeds is not None:
            values["seed"] = self.seed_list[0] if seed is None else seed
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
