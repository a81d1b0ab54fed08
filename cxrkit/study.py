"""The study: parameter files, data/fold preparation, and running the notebooks with papermill.

``cxrkit study -f params/default.yaml`` executes the numbered notebooks in order (``03_train``
once per fold and variant) into ``reports/<name>/``, renders each to HTML and writes
``reports/index.html``. Steps whose notebook, parameters and inputs did not change are skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.config import ConfigError, TrainConfig, from_dict, load_yaml, to_dict
from cxrkit.paths import project_root, resolve
from cxrkit.provenance import environment, write_json

KERNEL_NAME = "cxrkit"
#: phantom keys of a study: the smallest value each accepts and its description
PHANTOM_KEYS: dict[str, tuple[int, str]] = {
    "patients": (1, "an integer >= 1"),
    "size": (16, "an integer >= 16 (image side in pixels; the renderer's minimum)"),
    "seed": (0, "an integer >= 0"),
}
NOTEBOOKS = ("01_explore", "02_folds", "03_train", "04_coupling", "05_ablation", "06_fold_agreement")


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
    #: phantom generation when ``data`` does not exist yet: {patients, size, seed}; null for real data
    phantom: dict | None = field(default_factory=lambda: {"patients": 1700, "size": 128, "seed": 0})
    n_folds: int = 3
    test_size: float = 0.2
    split_seed: int = 0
    group: str = "patient"  #: patient | image
    #: compared variants, the first is the baseline: a refiner name, or a mapping
    #: {name, refiner, ...train overrides} (e.g. a lambda sweep of the sparse refiner)
    variants: list = field(default_factory=lambda: ["none", "sparse"])
    train: dict = field(default_factory=dict)  #: TrainConfig overrides shared by every run
    bootstrap: int = 1000
    threshold: float = 0.5
    auto_train: bool = False  #: notebooks 04-06 train missing runs themselves (smoke only)
    runs: str = "runs"  #: training outputs go to <runs>/<name>/
    reports: str = "reports"  #: the report goes to <reports>/<name>/ and <reports>/index.html

    def validate(self) -> StudyConfig:
        if self.group not in ("patient", "image"):
            raise ConfigError(f"group: {self.group!r} is not 'patient' or 'image'")
        if self.n_folds < 2:
            raise ConfigError(f"n_folds: must be >= 2, got {self.n_folds}")
        from cxrkit.datasets import check_dataset_options

        check_dataset_options(self.dataset, self.dataset_options)  # keys the loader accepts, nothing set twice
        if self.phantom is not None:
            unknown = set(self.phantom) - set(PHANTOM_KEYS)
            if unknown:
                raise ConfigError(f"phantom: unknown key(s) {sorted(unknown)} (known: patients, size, seed)")
            for key, (low, what) in PHANTOM_KEYS.items():
                value = self.phantom.get(key, low)
                if not isinstance(value, int) or isinstance(value, bool) or value < low:
                    raise ConfigError(f"phantom.{key}: must be {what}, got {value!r}")
        if not self.variants:
            raise ConfigError("variants: at least one refiner is needed")
        for key in ("data", "dataset", "dataset_options", "splits", "fold", "refiner", "out"):
            if key in self.train:
                raise ConfigError(f"train.{key}: set by the study, not in 'train'")
        from cxrkit.models import REFINERS

        specs = self.variant_specs()
        bad = [s["refiner"] for s in specs.values() if s["refiner"] not in REFINERS]
        if bad:
            raise ConfigError(f"variants: unknown refiner(s) {bad}; known: {sorted(REFINERS)}")
        for name in specs:
            self.train_config(0, name)  # validates the train overrides of every variant
        return self

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
            if "on_bad_image" in spec:
                raise ConfigError(f"variants[{i}].on_bad_image: set it once in train.on_bad_image "
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
    def variant_names(self) -> list[str]:
        """Names of the variants in order (the first is the baseline)."""
        return list(self.variant_specs())

    # --- derived paths -------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return resolve(self.runs) / self.name

    @property
    def report_dir(self) -> Path:
        return resolve(self.reports) / self.name

    @property
    def splits_path(self) -> Path:
        return self.run_dir / "folds.csv"

    def train_dir(self, fold: int, variant: str) -> Path:
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
        return from_dict(TrainConfig, values, source=f"study {self.name!r} variant {variant!r}")


def load_study(path: str | Path, **overrides: Any) -> StudyConfig:
    """Read and validate a study parameter file (unknown keys in it or in ``train`` are errors)."""
    path = resolve(path)
    values = {**load_yaml(path), **overrides}
    return from_dict(StudyConfig, values, source=str(path))


# --- data and folds ----------------------------------------------------------------------
def prepare(cfg: StudyConfig, progress: bool = True) -> dict[str, Any]:
    """Generate the phantom when configured and missing, and the folds when missing or stale.

    Returns a summary (paths, data fingerprint). Raises with instructions for a real dataset
    that is not there.

    Raises:
        FileNotFoundError: the dataset folder does not exist.
        NotWritableError: the phantom or the folds must be (re)written where that is not possible,
            before any of that work.
        DataError, ValueError: bad data, or existing folds that cannot be read (e.g. an image twice).
    """
    from cxrkit.datasets import create_dataset, fingerprint
    from cxrkit.provenance import check_writable
    from cxrkit.splits import SPLIT_METHODS, load_splits, make_splits, save_splits

    root = resolve(cfg.data)
    if cfg.phantom is not None:
        from cxrkit.phantom.generate import code_digest, generate

        want = {"n_patients": cfg.phantom.get("patients", 1700), "size": cfg.phantom.get("size", 128),
                "seed": cfg.phantom.get("seed", 0), "code_digest": code_digest()}
        marker = root / "phantom.json"
        have = json.loads(marker.read_text()) if marker.is_file() else None
        if have is None or any(have.get(k) != v for k, v in want.items()) or not have.get("complete", True):
            check_writable(root, "the study's phantom", "set 'data' in the parameter file to a writable folder")
            if have is not None and progress:
                print(f"regenerating the phantom at {root}: its parameters or generator code changed", flush=True)
            generate(root, n_patients=want["n_patients"], size=want["size"], seed=want["seed"], progress=progress,
                     overwrite=have is not None)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist: set 'data' in the parameter file to "
                                f"your copy of the dataset (see README, 'Using a real dataset')")
    ds = create_dataset(cfg.dataset, root=root, check_images=False, **cfg.dataset_options)
    fp = fingerprint(ds.table)
    meta = {"seed": cfg.split_seed, "n_folds": cfg.n_folds, "test_size": cfg.test_size, "group": cfg.group,
            "method": SPLIT_METHODS[cfg.group], "fingerprint": fp, "dataset": cfg.dataset, "data": str(root)}
    meta_file = cfg.splits_path.with_suffix(".json")
    current = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    if current is None or any(current.get(k) != v for k, v in meta.items() if k != "data"):
        check_writable(cfg.splits_path.parent, "the study's folds",
                       "set 'runs' in the parameter file to a writable folder")
        splits = make_splits(ds.table, ds.labels, n_folds=cfg.n_folds, test_size=cfg.test_size,
                             seed=cfg.split_seed, group=cfg.group)
        save_splits(splits, cfg.splits_path, {**meta, "provenance": environment()})
    else:
        load_splits(cfg.splits_path)
    return {"data": str(root), "splits": str(cfg.splits_path), "data_fingerprint": fp, "n_images": len(ds.table)}


def load_dataset(cfg: StudyConfig) -> Any:
    """The study's dataset as its training runs load it: every image decoded up front, a bad one
    raising or, with ``train: {on_bad_image: exclude}``, dropped and listed with its reason in
    ``ds.excluded`` and ``<runs>/<name>/excluded_images.csv``."""
    from cxrkit.datasets import create_dataset

    return create_dataset(cfg.dataset, root=cfg.data, on_bad_image=cfg.on_bad_image, report_dir=cfg.run_dir,
                          **cfg.dataset_options)


def data_fingerprint(cfg: StudyConfig, progress: bool = False) -> str:
    """:func:`cxrkit.datasets.fingerprint` of the study's dataset table (image ids, patient ids and
    labels; no image is decoded), for the keys that decide which steps re-run.

    A configured phantom is generated first when missing or stale (:func:`prepare`). For data
    that cannot be read, a string naming the error: the first notebook then fails with it.
    """
    from cxrkit.datasets import create_dataset, fingerprint

    if cfg.phantom is not None:
        return prepare(cfg, progress=progress)["data_fingerprint"]
    try:
        table = create_dataset(cfg.dataset, root=cfg.data, check_images=False, **cfg.dataset_options).table
    except Exception as exc:  # reported by the notebook that reads the data
        return f"unavailable ({type(exc).__name__}: {exc})"
    return fingerprint(table)


def split_leakage(cfg: StudyConfig, splits: pd.DataFrame) -> pd.DataFrame:
    """The leakage check of the study's own folds.

    With ``group: patient``, a patient in more than one fold or in both test and train raises
    :class:`cxrkit.splits.LeakageError` naming them. With ``group: image`` (the paper's
    image-level MIS) such patients are expected: they are reported, not raised. Returns
    :func:`cxrkit.splits.leakage_report` (empty when nothing leaks) with ``attrs["message"]``,
    one sentence saying which of the two it is and how many patients and images cross.
    """
    from cxrkit.splits import check_leakage, leakage_report

    report = leakage_report(splits)
    s = report.attrs["summary"]
    if cfg.group == "patient":
        check_leakage(splits)
        msg = (f"{cfg.splits_path.name}: patient-grouped folds; none of the {s['patients_total']} patients "
               f"crosses folds or test/train")
    else:
        msg = (f"{cfg.splits_path.name}: image-level folds (group: image, as in the paper): {s['patients']} of "
               f"{s['patients_total']} patients ({s['images']} of {s['images_total']} images) are in more than "
               f"one fold or in both test and train, so validation and test AUCs are optimistic"
               if s["patients"] else
               f"{cfg.splits_path.name}: image-level folds (group: image); no patient happens to cross folds "
               f"or test/train")
    report.attrs["message"] = msg
    return report


def missing_runs(cfg: StudyConfig, variants: Sequence[str] | None = None) -> list[tuple[int, str]]:
    """(fold, variant) pairs whose training has not finished (no metrics.json)."""
    return [(k, v) for v in (variants or cfg.variant_names) for k in range(cfg.n_folds)
            if not (cfg.train_dir(k, v) / "metrics.json").is_file()]


def require_runs(cfg: StudyConfig, variants: Sequence[str] | None = None, params_file: str = "") -> None:
    """Make sure every fold of ``variants`` is trained: train them when ``auto_train``, else raise
    naming the missing runs and the commands that produce them."""
    missing = missing_runs(cfg, variants)
    if not missing:
        return
    if cfg.auto_train:
        from cxrkit.train import train

        prepare(cfg, progress=False)
        for fold, variant in missing:
            train(dataclasses.replace(cfg.train_config(fold, variant), progress=False))
        return
    cmds = "\n".join(f"  papermill notebooks/03_train.ipynb out.ipynb -p params_file {params_file or '<file>'} "
                     f"-p fold {k} -p refiner {v}" for k, v in missing)
    raise StudyError(f"{len(missing)} training run(s) of study {cfg.name!r} are missing: {missing}. "
                     f"Run `cxrkit study -f {params_file or '<file>'}` or:\n{cmds}")


def fold_predictions(cfg: StudyConfig, variant: str, split: str = "test", tta: bool = True) -> dict[int, pd.DataFrame]:
    """The saved predictions of every fold of a variant, indexed by image: with flip TTA
    (``pred_<split>.csv``) or without (``pred_<split>_notta.csv``). A variant trained with
    ``tta: false`` saved only its predictions without TTA, as ``pred_<split>.csv``: they are
    returned for both."""
    from cxrkit.predict import read_predictions

    with_tta = cfg.train_config(0, variant).tta
    name = f"pred_{split}{'' if tta or not with_tta else '_notta'}.csv"
    return {k: read_predictions(cfg.train_dir(k, variant) / name)[0].set_index("image") for k in range(cfg.n_folds)}


# --- outputs of the notebooks ------------------------------------------------------------
HEADLINES = "headlines.json"  #: step -> its headline metrics
MANIFEST = "outputs.json"  #: step -> the figures and tables it wrote


class _ReportLock:
    """Exclusive lock over a report's headlines and manifest (parallel notebooks write them)."""

    def __init__(self, report_dir: Path) -> None:
        self.path = report_dir / "headlines.lock"

    def __enter__(self) -> _ReportLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w")  # closed (and unlocked) in __exit__
        fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()  # releases the lock


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def forget_step(report_dir: Path, step: str) -> None:
    """Remove what ``step`` recorded in a report: the figures and tables it wrote (per the
    manifest) and its headline metrics. Done when the step runs again and when it leaves the plan."""
    with _ReportLock(report_dir):
        manifest, heads = _read_json(report_dir / MANIFEST), _read_json(report_dir / HEADLINES)
        for kind, names in manifest.pop(step, {}).items():
            for name in names:
                (report_dir / kind / name).unlink(missing_ok=True)
        heads.pop(step, None)
        write_json(report_dir / MANIFEST, manifest)
        write_json(report_dir / HEADLINES, heads)


def step_outputs(report_dir: Path, steps: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The figures and tables (file names, in order) that ``steps`` (default: all) wrote and that
    exist. A report without a manifest (older cxrkit) lists every file in ``figures/`` and ``tables/``."""
    manifest_file = report_dir / MANIFEST
    if not manifest_file.is_file():
        return {kind: sorted(p.name for p in (report_dir / kind).glob(f"*.{ext}"))
                for kind, ext in (("figures", "png"), ("tables", "csv"))}
    manifest = json.loads(manifest_file.read_text())
    out: dict[str, list[str]] = {"figures": [], "tables": []}
    for step in (steps if steps is not None else list(manifest)):
        for kind in out:
            out[kind] += [n for n in manifest.get(step, {}).get(kind, [])
                          if n not in out[kind] and (report_dir / kind / n).is_file()]
    return out


class Outputs:
    """Where a notebook saves its figures (PNG), tables (CSV) and headline numbers (JSON).

    Creating it starts the step afresh: what the step wrote before (files and headline metrics)
    is removed, and every file it writes now is recorded for it in ``outputs.json``, so a
    re-run step or one removed from the study leaves nothing stale in the report.
    """

    def __init__(self, cfg: StudyConfig, step: str) -> None:
        self.cfg, self.step = cfg, step
        self.report_dir = cfg.report_dir
        self.figures = self.report_dir / "figures"
        self.tables = self.report_dir / "tables"
        self.figures.mkdir(parents=True, exist_ok=True)
        self.tables.mkdir(parents=True, exist_ok=True)
        forget_step(self.report_dir, step)

    def _record(self, kind: str, name: str) -> None:
        """Record file ``kind/name`` as this step's (taking it over from another step that wrote it)."""
        with _ReportLock(self.report_dir):
            manifest = _read_json(self.report_dir / MANIFEST)
            for step, files in manifest.items():
                if step != self.step and name in files.get(kind, []):
                    files[kind].remove(name)
            mine = manifest.setdefault(self.step, {"figures": [], "tables": []}).setdefault(kind, [])
            if name not in mine:
                mine.append(name)
            write_json(self.report_dir / MANIFEST, manifest)

    def figure(self, fig: Any, name: str) -> None:
        """Save ``fig`` as ``figures/<name>.png``, show it once in a notebook, and close it."""
        import matplotlib.pyplot as plt

        fig.savefig(self.figures / f"{name}.png", dpi=110, bbox_inches="tight")
        self._record("figures", f"{name}.png")
        try:
            from IPython import get_ipython
            from IPython.display import display

            if get_ipython() is not None:
                display(fig)
        finally:
            plt.close(fig)

    def table(self, df: pd.DataFrame | pd.Series, name: str, index: bool = True) -> pd.DataFrame | pd.Series:
        """Save ``df`` as ``tables/<name>.csv`` and return it."""
        df.to_csv(self.tables / f"{name}.csv", index=index, float_format="%.6g")
        self._record("tables", f"{name}.csv")
        return df

    def headline(self, **values: Any) -> dict[str, Any]:
        """Record headline metrics of this step for the index page (added to those recorded
        earlier in this run of the step; safe with parallel jobs)."""
        with _ReportLock(self.report_dir):
            path = self.report_dir / HEADLINES
            data = _read_json(path)
            data[self.step] = {**data.get(self.step, {}), **values}
            write_json(path, data)
        return values


# --- running the notebooks ---------------------------------------------------------------
@dataclass
class Step:
    """One papermill execution: a notebook and its parameters."""

    notebook: str
    parameters: dict[str, Any]

    @property
    def name(self) -> str:
        extra = "".join(f"_{k}{v}" for k, v in self.parameters.items() if k != "params_file")
        return self.notebook + extra


def plan(cfg: StudyConfig, params_file: str) -> list[Step]:
    """The ordered steps of a study."""
    p = {"params_file": params_file}
    steps = [Step("01_explore", p), Step("02_folds", p)]
    steps += [Step("03_train", {**p, "fold": k, "refiner": v}) for v in cfg.variant_names for k in range(cfg.n_folds)]
    steps += [Step(nb, p) for nb in ("04_coupling", "05_ablation", "06_fold_agreement")]
    return steps


def ensure_kernel() -> str:
    """Register the ``cxrkit`` Jupyter kernel in this environment when it is not there yet."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL_NAME, display_name="Python (cxrkit)", prefix=sys.prefix)
    return KERNEL_NAME


def _step_key(step: Step, params_text: str, upstream: str, data: str = "") -> str:
    """Hash of what a step's result depends on: its notebook, the package code, the parameter
    file, the step's parameters, the upstream steps' keys and the data fingerprint ``data``."""
    nb = (project_root() / "notebooks" / f"{step.notebook}.ipynb").read_bytes()
    code = b"".join(p.read_bytes() for p in sorted((project_root() / "cxrkit").rglob("*.py")))
    h = hashlib.sha256()
    for part in (nb, code, params_text.encode(), json.dumps(step.parameters, sort_keys=True).encode(), upstream.encode(),
                 data.encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _render_html(ipynb: Path, out: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(ipynb, as_version=4))
    out.write_text(body)


def _runtime_slots(jobs: int) -> list[dict[str, Any]]:
    """Per parallel job: the device and CPU threads its training notebook uses (one GPU per job
    when GPUs are present, round robin; on CPU the cores are shared out)."""
    import os

    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        return [{"device": f"cuda:{i % gpus}", "threads": 0} for i in range(jobs)]
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    return [{"device": "auto", "threads": threads} for _ in range(jobs)]


def auto_jobs() -> int:
    """Parallel training jobs for ``--jobs auto``: one per GPU when GPUs are present, else two on
    a CPU with at least two cores (two single-threaded processes feed small CPU models about 25%
    faster than one process with two threads; see ``make bench``), else one."""
    import os

    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        return gpus
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def run_study(params_file: str | Path, *, force: bool = False, only: Sequence[str] | None = None,
              progress: bool = True, jobs: int | str = 1) -> dict[str, Any]:
    """Execute every step of the study with papermill and write the HTML report.

    Args:
        params_file: The study parameter file.
        force: Re-run steps even when their inputs did not change.
        only: Run only the steps whose name starts with one of these prefixes.
        progress: Print one line per step.
        jobs: Training notebooks (``03_train``, one per fold and variant) run this many at a
            time, each as its own papermill job (one GPU each when GPUs are present);
            ``"auto"`` picks :func:`auto_jobs`.

    Raises:
        StudyError: naming the failing notebook and cell; the partial outputs are kept.
    """
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import papermill as pm

    if jobs == "auto":
        jobs = auto_jobs()
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs: must be an integer >= 1 or 'auto', got {jobs!r}")
    params_path = resolve(params_file)
    cfg = load_study(params_path).validate()
    params_arg = str(params_path.relative_to(project_root())) if params_path.is_relative_to(project_root()) else str(params_path)
    kernel = ensure_kernel()
    out = cfg.report_dir
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copy(params_path, out / "params.yaml")
    state_file = out / "steps.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    steps = plan(cfg, params_arg)
    # steps no longer in the plan (a removed variant, fewer folds) leave the report: their entry
    # in steps.json, their figures, tables and headline metrics, and their executed notebooks
    names = {st.name for st in steps}
    for name in (set(state) | set(_read_json(out / MANIFEST)) | set(_read_json(out / HEADLINES))) - names:
        forget_step(out, name)
    for f in (out / "notebooks").glob("*"):
        if f.suffix in (".ipynb", ".html") and f.stem not in names:
            f.unlink()
    state = {st.name: state[st.name] for st in steps if st.name in state}  # in plan order
    write_json(state_file, state)
    data_fp = data_fingerprint(cfg, progress=progress)  # once per invocation; part of every step's key
    lock = threading.Lock()
    slots: queue.Queue = queue.Queue()
    for slot in _runtime_slots(jobs):
        slots.put(slot)

    def save_state() -> None:
        with lock:
            write_json(state_file, {st.name: state[st.name] for st in steps if st.name in state})  # plan order

    def execute(step: Step, key: str) -> None:
        ipynb, page = out / "notebooks" / f"{step.name}.ipynb", out / "notebooks" / f"{step.name}.html"
        if progress:
            print(f"[run ] {step.name} {step.parameters}", flush=True)
        t0 = time.time()
        entry = {"key": key, "notebook": step.notebook, "parameters": step.parameters, "status": "running",
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        with lock:
            state[step.name] = entry
        save_state()
        forget_step(out, step.name)  # its old figures, tables and headline go; the notebook writes them anew
        runtime = slots.get() if step.notebook == "03_train" else {}
        try:
            pm.execute_notebook(str(project_root() / "notebooks" / f"{step.notebook}.ipynb"), str(ipynb),
                                parameters={**step.parameters, **runtime}, kernel_name=kernel,
                                cwd=str(project_root()), progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as exc:
            entry.update(status="failed", seconds=round(time.time() - t0, 1),
                         error=f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}")
            save_state()
            _render_html(ipynb, page)
            raise StudyError(f"{step.notebook}.ipynb {step.parameters} failed in cell {exc.exec_count}: "
                             f"{exc.ename}: {exc.evalue} (partial notebook: {ipynb})") from None
        except BaseException:
            entry.update(status="interrupted", seconds=round(time.time() - t0, 1))
            save_state()
            raise
        finally:
            if runtime:
                slots.put(runtime)
        _render_html(ipynb, page)
        entry.update(status="ok", seconds=round(time.time() - t0, 1))
        save_state()
        if progress:
            print(f"       {step.name} done in {entry['seconds']:.0f} s", flush=True)

    # which steps must run (keys chain through the plan, so a changed step re-runs everything after it)
    todo: list[tuple[Step, str]] = []
    upstream, params_text = "", params_path.read_text()
    for step in steps:
        key = _step_key(step, params_text, upstream, data_fp)
        upstream = hashlib.sha256((upstream + key).encode()).hexdigest()
        if only and not any(step.name.startswith(o) for o in only):
            continue
        prev = state.get(step.name, {})
        if not force and prev.get("key") == key and prev.get("status") == "ok" and (out / "notebooks" / f"{step.name}.ipynb").is_file():
            if progress:
                print(f"[skip] {step.name} (unchanged)", flush=True)
            continue
        todo.append((step, key))

    t_study = time.time()
    try:
        i = 0
        while i < len(todo):
            group = [todo[i]]
            while jobs > 1 and todo[i][0].notebook == "03_train" and i + len(group) < len(todo) \
                    and todo[i + len(group)][0].notebook == "03_train":
                group.append(todo[i + len(group)])
            if len(group) == 1:
                execute(*group[0])
            else:
                with ThreadPoolExecutor(max_workers=jobs) as pool:
                    futures = [pool.submit(execute, st, k) for st, k in group]
                    errors = [f.exception() for f in futures if f.exception() is not None]
                if errors:
                    raise errors[0]
            i += len(group)
    finally:
        write_json(out / "provenance.json", {"params_file": str(params_path), "params": to_dict(cfg), "jobs": jobs,
                                              "wall_seconds_this_invocation": round(time.time() - t_study, 1),
                                              **environment()})
        write_index(cfg)
    return {"index": str(out / "index.html"), "report_dir": str(out), "steps": state}


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:14px}.ok{color:#070}.bad{color:#b00}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px;align-items:start}
.figs img{width:100%;border:1px solid #ddd}.figs div{text-align:center;font-size:12px}"""


def _headline_html(metrics: dict[str, Any] | None) -> str:
    esc = html.escape
    return "<br>".join(f"{esc(str(k))}: {v:.4f}" if isinstance(v, float) else f"{esc(str(k))}: {esc(str(v))}"
                       for k, v in (metrics or {}).items())


def _steps_table(state: dict[str, Any], heads: dict[str, Any], prefix: str = "") -> str:
    """The steps (notebook HTML link, parameters, status, seconds, headline) as an HTML table;
    links are relative to the study report folder, preceded by ``prefix``."""
    esc = html.escape
    rows = []
    for name, e in state.items():
        metrics = heads.get(name) or heads.get(e["notebook"]) if e["notebook"] != "03_train" else heads.get(name, {})
        cls = {"ok": "ok", "failed": "bad"}.get(e["status"], "")
        rows.append(f"<tr><td><a href='{esc(prefix)}notebooks/{esc(name)}.html'>{esc(name)}</a></td>"
                    f"<td><code>{esc(json.dumps(e['parameters']))}</code></td><td class='{cls}'>{esc(e['status'])}"
                    f"{'<br>' + esc(e.get('error', '')) if e.get('error') else ''}</td>"
                    f"<td>{e.get('seconds', '')}</td><td>{_headline_html(metrics)}</td></tr>")
    return ("<table><tr><th>step</th><th>parameters</th><th>status</th><th>seconds</th><th>headline</th></tr>"
            f"{''.join(rows)}</table>")


def _outputs_html(files: dict[str, list[str]], prefix: str = "") -> tuple[str, str]:
    """(figure grid, table list) of a report's figures and tables, links preceded by ``prefix``."""
    esc = html.escape
    figs = "".join(f"<div><a href='{esc(prefix)}figures/{esc(f)}'><img loading='lazy' src='{esc(prefix)}figures/{esc(f)}'>"
                   f"</a><br>{esc(Path(f).stem)}</div>" for f in files["figures"])
    tabs = "".join(f"<li><a href='{esc(prefix)}tables/{esc(t)}'>{esc(Path(t).stem)}</a></li>" for t in files["tables"])
    return f"<div class='figs'>{figs}</div>", f"<ul>{tabs}</ul>"


def write_index(cfg: StudyConfig) -> Path:
    """``reports/<name>/index.html`` (steps, figures, tables, headline metrics, provenance) and
    ``reports/index.html`` (every study's steps, headlines, notebooks, figures and tables;
    :func:`write_reports_index`). Only the steps of the current plan are listed."""
    out = cfg.report_dir
    state = _read_json(out / "steps.json")
    order = [st.name for st in plan(cfg, "")]
    state = {n: state[n] for n in order if n in state}
    heads = _read_json(out / HEADLINES)
    prov = _read_json(out / "provenance.json")
    esc = html.escape
    run_rows = []
    for v in cfg.variant_names:
        for k in range(cfg.n_folds):
            d = cfg.train_dir(k, v)
            if not (d / "provenance.json").is_file():
                continue
            p = json.loads((d / "provenance.json").read_text())
            m = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
            g = p.get("git", {})
            cells = [v, k, p.get("params", {}).get("seed"), m.get("best_epoch", ""),
                     f"{m['best_val_macro_auc']:.4f}" if "best_val_macro_auc" in m else "unfinished",
                     f"{m['wall_seconds']:.0f}" if "wall_seconds" in m else "", p.get("host", {}).get("device"),
                     p.get("world_size", 1), p.get("data_fingerprint"),
                     f"{str(g.get('commit'))[:10]}{' (dirty)' if g.get('dirty') else ''}",
                     p.get("packages", {}).get("torch")]
            run_rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    figs, tabs = _outputs_html(step_outputs(out, list(state)))
    total = sum(e.get("seconds", 0) for e in state.values())
    git = prov.get("git", {})
    wall = ""
    if prov.get("wall_seconds_this_invocation") is not None:
        wall = f" (last invocation: {prov['wall_seconds_this_invocation'] / 60:.1f} min wall time, {prov.get('jobs', 1)} parallel job(s))"
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>cxrkit study: {esc(cfg.name)}</title>
<style>{_STYLE}</style>
</head><body><h1>cxrkit study: {esc(cfg.name)}</h1><p>{esc(cfg.description)}</p>
<p>Parameters: <a href="params.yaml">params.yaml</a> &middot; dataset <code>{esc(cfg.dataset)}</code> at
<code>{esc(cfg.data)}</code> &middot; {cfg.n_folds} folds ({esc(cfg.group)}-grouped MIS), variants {esc(', '.join(cfg.variant_names))}
&middot; total notebook time {total / 60:.1f} min{wall} &middot; code {esc(str(git.get('commit')))}{' (dirty)' if git.get('dirty') else ''}
&middot; {esc(prov.get('time', ''))}</p>
<h2>Notebooks</h2>{_steps_table(state, heads)}
<h2>Training runs</h2><table><tr><th>variant</th><th>fold</th><th>seed</th><th>best epoch</th>
<th>val macro AUC</th><th>wall s</th><th>device</th><th>processes</th><th>data fingerprint</th><th>code</th><th>torch</th></tr>
{''.join(run_rows)}</table><p>Each run folder (<code>{esc(str(cfg.run_dir))}</code>) holds params.json, provenance.json,
history.csv, checkpoints and predictions.</p>
<h2>Figures</h2>{figs}
<h2>Tables</h2>{tabs}
<h2>Provenance</h2><pre>{esc(json.dumps({k: prov.get(k) for k in ('python', 'packages', 'host', 'git')}, indent=1))}</pre>
</body></html>"""
    (out / "index.html").write_text(page)
    write_reports_index(resolve(cfg.reports))
    return out / "index.html"


def write_reports_index(root: str | Path) -> Path:
    """``<root>/index.html``: one section per study report in ``root`` (every folder with a
    ``steps.json``): its description and parameters, the steps with their parameters, duration,
    status and headline metrics, and links to every notebook (HTML), figure and table, relative
    to ``root``. Each study's own page stays at ``<root>/<name>/index.html``."""
    import yaml

    root = Path(root)
    esc = html.escape
    sections, contents = [], []
    for d in sorted(p for p in root.iterdir() if (p / "steps.json").is_file()):
        state, heads, prov = _read_json(d / "steps.json"), _read_json(d / HEADLINES), _read_json(d / "provenance.json")
        params = prov.get("params") or {}
        if not params and (d / "params.yaml").is_file():
            try:
                params = yaml.safe_load((d / "params.yaml").read_text()) or {}
            except yaml.YAMLError:
                params = {}
        prefix = f"{d.name}/"
        figs, tabs = _outputs_html(step_outputs(d, list(state)), prefix)
        n_ok = sum(e.get("status") == "ok" for e in state.values())
        total = sum(e.get("seconds", 0) for e in state.values())
        variants = [v if isinstance(v, str) else v.get("name", "?") for v in params.get("variants", [])]
        when = f" &middot; last run {esc(str(prov['time']))}" if prov.get("time") else ""
        contents.append(f"<li><a href='#{esc(d.name)}'>{esc(d.name)}</a>: {esc(str(params.get('description', '')))}</li>")
        sections.append(
            f"<section id='{esc(d.name)}'><h2>{esc(d.name)}</h2><p>{esc(str(params.get('description', '')))}</p>"
            f"<p><a href='{esc(prefix)}index.html'>study page</a> &middot; <a href='{esc(prefix)}params.yaml'>params.yaml</a>"
            f" &middot; dataset <code>{esc(str(params.get('dataset', '')))}</code> at <code>{esc(str(params.get('data', '')))}</code>"
            f" &middot; {esc(str(params.get('n_folds', '')))} folds ({esc(str(params.get('group', '')))}-grouped)"
            f" &middot; variants {esc(', '.join(variants))} &middot; {n_ok} of {len(state)} steps ok"
            f" &middot; total notebook time {total / 60:.1f} min{when}</p>"
            f"<h3>Steps</h3>{_steps_table(state, heads, prefix)}<h3>Figures</h3>{figs}<h3>Tables</h3>{tabs}</section>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>cxrkit reports</title><style>{_STYLE}</style>"
            f"</head><body><h1>cxrkit reports</h1><ul>{''.join(contents)}</ul>{''.join(sections)}</body></html>")
    (root / "index.html").write_text(page)
    return root / "index.html"


# --- analyses over a study's outputs ------------------------------------------------------
def is_phantom(cfg: StudyConfig) -> bool:
    """Whether the study's data carries the phantom's ground-truth sidecar."""
    return (resolve(cfg.data) / "truth.csv").is_file()


def phantom_tables(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A phantom's ``train.csv`` and ``truth.csv`` sidecar, image names and patient ids as text.

    Raises:
        FileNotFoundError: a file is missing.
        cxrkit.datasets.DataError: an image name empty or on several rows of a file, or images in
            one file and not in the other (naming them).
    """
    from cxrkit.datasets import DataError, read_keyed_csv

    root = resolve(root)
    labels_df = read_keyed_csv(root / "train.csv", "Image_name", text=("Patient_ID", "Study"), what="label table")
    truth = read_keyed_csv(root / "truth.csv", "Image_name", what="truth sidecar")
    for a, b, name in ((labels_df, truth, "truth.csv"), (truth, labels_df, "train.csv")):
        absent = a.loc[~a["Image_name"].isin(b["Image_name"]), "Image_name"]
        if len(absent):
            raise DataError(f"{root / name}: {len(absent)} image(s) of the other file are missing: "
                            f"{', '.join(map(repr, absent[:10]))}{' ...' if len(absent) > 10 else ''}")
    return labels_df, truth


def split_groups(path: Path, labels_df: pd.DataFrame) -> dict[str, pd.Series]:
    """Image names of the test split and of every validation fold of the splits at ``path``,
    checked to hold exactly the images (and patients) of the phantom's ``train.csv``."""
    from cxrkit.splits import load_splits

    patient = labels_df["Patient_ID"] if "Patient_ID" in labels_df else labels_df["Image_name"]  # as the gxs loader
    ids = pd.DataFrame({"image": labels_df["Image_name"], "patient_id": patient})
    splits = load_splits(path, ids)
    groups = {"test": splits.loc[splits["split"] == "test", "image"]}
    groups |= {f"fold {k}": splits.loc[splits["fold"] == k, "image"] for k in range(int(splits.attrs["n_folds"]))}
    return {k: v for k, v in groups.items() if len(v)}


def oracle_table(cfg: StudyConfig, by_split: bool = False) -> pd.DataFrame | None:
    """Exact oracle and marginal-oracle AUC (phantom only; None otherwise): per label and macro on all
    images, or (``by_split``) the macro AUC on the test split and on every validation fold.

    Raises:
        cxrkit.datasets.DataError: see :func:`phantom_tables`.
        ValueError: splits that do not hold the phantom's images and patients (naming them).
    """
    if not is_phantom(cfg):
        return None
    from cxrkit.phantom.oracle import oracle_auc

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
    from cxrkit.phantom.oracle import coupling_matrix

    return coupling_matrix()


def fold_couplings(cfg: StudyConfig, variant: str, kind: str = "effective") -> dict[int, pd.DataFrame]:
    """The coupling matrix of every fold of a variant: ``effective`` (logit units, comparable
    across refiners; :func:`cxrkit.models.effective_coupling`) or ``raw`` (the refiner's own
    parameter: A for the sparse refiners, the fixed prior P(column | row) for cooc_gcn)."""
    name = {"effective": "effective_coupling.csv", "raw": "coupling.csv"}[kind]
    from cxrkit.predict import read_coupling  # refuses a label twice, rows and columns that differ

    return {k: read_coupling(cfg.train_dir(k, variant) / name) for k in range(cfg.n_folds)}


def coupled_variants(cfg: StudyConfig) -> list[str]:
    """Variants whose refiner has a coupling matrix (every one but ``none``)."""
    return [v for v in cfg.variant_names if cfg.train_config(0, v).refiner != "none"]


def lambda_sweep(cfg: StudyConfig) -> pd.DataFrame | None:
    """Per sparse variant with its own ``l1_lambda``: its ``loss_reduction`` (``sum`` or ``mean``,
    :mod:`cxrkit.losses`; the same lambda is L times stronger relative to the data term under
    ``mean``), validation macro AUC (mean, sd over folds), test ensemble macro AUC and the fraction
    of non-zero couplings; sorted by reduction, then lambda. None unless some reduction has at
    least two lambdas."""
    from cxrkit.analysis import sparsity
    from cxrkit.metrics import macro_auc

    rows = {}
    for v in cfg.variant_names:
        t = cfg.train_config(0, v)
        if t.refiner not in ("sparse", "sparse_prior"):
            continue
        aucs = [json.loads((cfg.train_dir(k, v) / "metrics.json").read_text())["val_macro_auc"]
                for k in range(cfg.n_folds)]
        folds = fold_predictions(cfg, v, "test")
        images = folds[0].index
        ens = sum(f.loc[images].to_numpy() for f in folds.values()) / len(folds)
        nonzero = [1 - sparsity(a) for a in fold_couplings(cfg, v, "raw").values()]
        rows[v] = {"refiner": t.refiner, "l1_lambda": t.l1_lambda, "loss_reduction": t.loss_reduction,
                   "val macro AUC (mean)": float(np.mean(aucs)),
                   "val macro AUC (sd)": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else float("nan"),
                   "test ensemble macro AUC": macro_auc(true_labels(cfg, images), ens),
                   "non-zero couplings": float(np.mean(nonzero))}
    table = pd.DataFrame(rows).T
    if len(table) < 2 or table.groupby("loss_reduction")["l1_lambda"].nunique().max() < 2:
        return None
    return table.sort_values(["loss_reduction", "l1_lambda"], ascending=[False, True])


def dataset_table(cfg: StudyConfig) -> pd.DataFrame:
    """The study's dataset table as its runs see it (the labels of ``train.labels`` when set), no
    image decoded."""
    from cxrkit.datasets import create_dataset

    return create_dataset(cfg.dataset, root=cfg.data, check_images=False, labels=cfg.train.get("labels"),
                          **cfg.dataset_options).table


def true_labels(cfg: StudyConfig, images: Sequence[str]) -> Any:
    """Label matrix (NaN = unknown) of ``images`` in that order, over the labels the runs predict."""
    from cxrkit.datasets import label_matrix

    table = dataset_table(cfg)
    return label_matrix(table.set_index("image").loc[list(images)].reset_index(), table.attrs["labels"])


def _patients(cfg: StudyConfig, images: Sequence[str]) -> Any:
    return dataset_table(cfg).set_index("image").loc[list(images), "patient_id"].to_numpy()


def main_variant(cfg: StudyConfig) -> str:
    """The variant the ensemble analyses describe: ``sparse`` (the paper's model) if present, else the last."""
    return "sparse" if "sparse" in cfg.variant_names else cfg.variant_names[-1]


def comparisons(cfg: StudyConfig) -> list[tuple[str, str]]:
    """Paired comparisons (a, b) reported as b - a: every variant against the baseline, plus the
    learned sparse coupling against the co-occurrence GCN when both are in the study."""
    base = cfg.variant_names[0]
    pairs = [(base, v) for v in cfg.variant_names[1:]]
    if "sparse" in cfg.variant_names and "cooc_gcn" in cfg.variant_names:
        pairs.append(("cooc_gcn", "sparse"))
    return pairs


def ablation(cfg: StudyConfig) -> dict[str, Any]:
    """Every variant against the first one (the baseline) on identical folds and seeds.

    Returns ``per_fold`` (validation macro AUC per fold and variant), ``paired`` (paired patient
    bootstrap differences, see :func:`comparisons`: per fold on validation, and on the test
    ensemble with and without flip TTA; columns ``diff, low, high, p_value``,
    ``replicates_rejected`` and ``CI covers``: the CIs cover the sampling of the evaluated images
    only, each variant being trained with one seed), ``per_label_delta`` (per-label AUC change of
    the test ensemble), ``per_label_delta_ap`` (the same for average precision, Rawlekar et al.'s
    ΔAP), ``test_summary`` (single folds, ensemble with its patient-bootstrap 95% CI and the
    ``ensemble CI replicates rejected`` row, TTA on/off, oracle), ``metrics`` (test ensemble:
    macro AUC, mAP, CP/CR/CF1/OP/OR/OF1) and ``headline``. Bootstrap replicates that lose a
    label's positives or negatives are rejected and redrawn (:func:`cxrkit.metrics.bootstrap_macro_auc`).
    """
    from cxrkit.metrics import (
        average_precision,
        bootstrap_macro_auc,
        evaluate,
        macro_auc,
        paired_bootstrap_diff,
        per_label_auc,
    )

    names, base = cfg.variant_names, cfg.variant_names[0]
    seed = int(cfg.train.get("seed", 0))
    per_fold, paired = {}, {}
    for k in range(cfg.n_folds):
        preds = {v: fold_predictions(cfg, v, "val")[k] for v in names}
        images = preds[base].index
        y, groups = true_labels(cfg, images), _patients(cfg, images)
        per_fold[f"fold {k}"] = {v: macro_auc(y, p.loc[images].to_numpy()) for v, p in preds.items()}
        for a, b in comparisons(cfg):
            paired[f"{b} - {a}, fold {k} (val)"] = paired_bootstrap_diff(
                y, preds[a].loc[images].to_numpy(), preds[b].loc[images].to_numpy(), n_boot=cfg.bootstrap,
                seed=seed, groups=groups, labels=list(preds[base].columns))
    per_fold_df = pd.DataFrame(per_fold).T
    per_fold_df.loc["mean"] = per_fold_df.mean()
    per_fold_df.loc["std"] = per_fold_df.iloc[:-1].std(ddof=1)

    test0 = fold_predictions(cfg, base, "test")[0]
    images, labels = test0.index, list(test0.columns)
    y, groups = true_labels(cfg, images), _patients(cfg, images)
    boot = {"n_boot": cfg.bootstrap, "seed": seed, "groups": groups, "labels": labels}
    summary, ens, ens_notta = {}, {}, {}
    for v in names:
        for tta in (True, False):
            folds = fold_predictions(cfg, v, "test", tta=tta)
            stack = [f.loc[images].to_numpy() for f in folds.values()]
            col = f"{v}{'' if tta else ' (no TTA)'}"
            for k, sc in enumerate(stack):
                summary.setdefault(f"fold {k}", {})[col] = macro_auc(y, sc)
            mean = sum(stack) / len(stack)
            summary.setdefault("ensemble", {})[col] = macro_auc(y, mean)
            (ens if tta else ens_notta)[v] = mean
    test_summary = pd.DataFrame(summary).T
    ci = {f"{v}{suffix}": bootstrap_macro_auc(y, e[v], **boot)
          for v in names for suffix, e in (("", ens), (" (no TTA)", ens_notta))}
    test_summary.loc["ensemble 95% CI low"] = {c: ci[c]["low"] for c in test_summary.columns}
    test_summary.loc["ensemble 95% CI high"] = {c: ci[c]["high"] for c in test_summary.columns}
    rejected = {c: ci[c]["replicates_rejected"] for c in test_summary.columns}  # row added below the oracle
    oracle = oracle_table(cfg, by_split=True)
    headline: dict[str, Any] = {f"test_ensemble_{v}": float(test_summary.loc["ensemble", v]) for v in names}
    if oracle is not None:
        test_summary["oracle"] = float(oracle.loc["test", "oracle"])
        test_summary["marginal oracle"] = float(oracle.loc["test", "marginal oracle"])
        for v in names:
            test_summary[f"{v} / oracle"] = test_summary[v] / test_summary["oracle"]
        headline["test_oracle"] = float(oracle.loc["test", "oracle"])
    test_summary.loc["ensemble CI replicates rejected"] = rejected
    per_label = {v: per_label_auc(y, ens[v], labels) for v in names}
    delta = pd.DataFrame({f"{b} - {a}": per_label[b] - per_label[a] for a, b in comparisons(cfg)})
    ap = {v: average_precision(y, ens[v], labels) for v in names}
    delta_ap = pd.DataFrame({f"{b} - {a}": ap[b] - ap[a] for a, b in comparisons(cfg)})
    for a, b in comparisons(cfg):
        d = paired_bootstrap_diff(y, ens[a], ens[b], **boot)
        paired[f"{b} - {a}, test ensemble"] = d
        headline[f"test_diff_{b}_vs_{a}"] = f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    for a, b in comparisons(cfg):
        paired[f"{b} - {a}, test ensemble (no TTA)"] = paired_bootstrap_diff(y, ens_notta[a], ens_notta[b], **boot)
    metrics = {}
    for v in names:
        m = evaluate(y, ens[v], labels, threshold=cfg.threshold)
        metrics[v] = {"macro AUC": m["macro_auc"], "mAP": m["mAP"],
                      **{f"{k}@{cfg.threshold:g}": m[k] for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")}}
    paired_df = pd.DataFrame(paired).T.astype({"replicates_rejected": int})
    paired_df["CI covers"] = [f"{'validation' if '(val)' in k else 'test'}-set sampling (patient bootstrap); "
                              "one training seed per variant" for k in paired_df.index]
    return {"per_fold": per_fold_df, "paired": paired_df, "per_label_delta": delta,
            "per_label_delta_ap": delta_ap, "test_summary": test_summary, "metrics": pd.DataFrame(metrics).T, "headline": headline}


def training_conditional(cfg: StudyConfig) -> pd.DataFrame:
    """P(column | row) on the training part (all folds, never the test split)."""
    from cxrkit.analysis import conditional_probability
    from cxrkit.splits import load_splits

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
    from cxrkit.analysis import gain_trend, top_k_conditional

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


def coupling_recovery(cfg: StudyConfig) -> pd.DataFrame | None:
    """Phantom only (None otherwise, or without coupled variants): how well each coupled
    variant's effective coupling recovers the true structure (:func:`cxrkit.analysis.coupling_recovery`),
    per fold and for the mean over folds; index (variant, ``fold k`` | ``mean``)."""
    from cxrkit.analysis import coupling_recovery as recover

    true, variants = true_coupling(cfg), coupled_variants(cfg)
    if true is None or not variants:
        return None
    rows = {}
    for v in variants:
        mats = fold_couplings(cfg, v)
        rows |= {(v, f"fold {k}"): recover(a, true) for k, a in mats.items()}
        rows[(v, "mean")] = recover(sum(mats.values()) / len(mats), true)
    return pd.DataFrame(rows).T


def best_recovery(recovery: pd.DataFrame) -> str:
    """The variant whose mean coupling over folds ranks the strongest true pairs best (highest
    Spearman correlation; a variant without one counts as lowest; the first in the study on ties)."""
    means = recovery.xs("mean", level=1)
    return str(means["spearman"].astype(float).fillna(-2.0).idxmax())


def final_test_table(cfg: StudyConfig) -> pd.DataFrame:
    """Test macro AUC (patient-bootstrap 95% CI) of each variant's fold ensemble, and the oracle.

    Columns ``macro AUC``, ``95% CI low/high``, ``images``, ``replicates rejected`` (bootstrap
    replicates redrawn to keep every scorable label, :func:`cxrkit.metrics.bootstrap_macro_auc`)
    and ``CI covers`` (test-set sampling only: each variant is trained with one seed); the
    oracle rows are exact and have no CI.
    """
    from cxrkit.metrics import bootstrap_macro_auc

    rows = {}
    for v in cfg.variant_names:
        folds = fold_predictions(cfg, v, "test")
        images = folds[0].index
        ens = sum(f.loc[images].to_numpy() for f in folds.values()) / len(folds)
        ci = bootstrap_macro_auc(true_labels(cfg, images), ens, n_boot=cfg.bootstrap, groups=_patients(cfg, images),
                                 labels=list(folds[0].columns),
                                 seed=int(cfg.train.get("seed", 0)))  # the seed of ablation()'s intervals
        rows[f"{v} ({cfg.n_folds}-fold ensemble, flip TTA)"] = {
            "macro AUC": ci["estimate"], "95% CI low": ci["low"], "95% CI high": ci["high"], "images": len(images),
            "replicates rejected": ci["replicates_rejected"],
            "CI covers": "test-set sampling (patient bootstrap); one training seed per variant"}
    oracle = oracle_table(cfg, by_split=True)
    if oracle is not None:
        rows["oracle (perfect perception, exact)"] = {"macro AUC": float(oracle.loc["test", "oracle"]),
                                                      "images": int(oracle.loc["test", "images"])}
        rows["marginal oracle (no label coupling)"] = {"macro AUC": float(oracle.loc["test", "marginal oracle"]),
                                                       "images": int(oracle.loc["test", "images"])}
    return pd.DataFrame.from_dict(rows, orient="index").astype({"replicates rejected": "Int64"})  # dtype per column


def our_table_i_rows(cfg: StudyConfig, final: pd.DataFrame) -> pd.DataFrame:
    """Our rows for Table I, each labelled with the data it was measured on."""
    dataset = (f"cxrkit phantom (synthetic, {cfg.data}) test split" if is_phantom(cfg)
               else f"{cfg.dataset} at {cfg.data}, held-out test split")
    backbone = cfg.train_config(0, cfg.variant_names[0]).backbone
    rows = [{"study": f"cxrkit ({cfg.name}): {name}", "dataset": dataset,
             "model": backbone if "oracle" not in name else "exact posterior, no model",
             "protocol": f"{cfg.n_folds}-fold {cfg.group}-grouped MIS", "macro AUC": r["macro AUC"]}
            for name, r in final.iterrows()]
    return pd.DataFrame(rows)
