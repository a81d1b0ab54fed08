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

import pandas as pd

from cxrkit.config import ConfigError, TrainConfig, from_dict, load_yaml, to_dict
from cxrkit.paths import project_root, resolve
from cxrkit.provenance import environment, write_json

KERNEL_NAME = "cxrkit"
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
        if self.phantom is not None:
            unknown = set(self.phantom) - {"patients", "size", "seed"}
            if unknown:
                raise ConfigError(f"phantom: unknown key(s) {sorted(unknown)} (known: patients, size, seed)")
        if not self.variants:
            raise ConfigError("variants: at least one refiner is needed")
        for key in ("data", "dataset", "dataset_options", "splits", "fold", "refiner", "out"):
            if key in self.train:
                raise ConfigError(f"train.{key}: set by the study, not in 'train'")
        from cxrkit.models import REFINERS

        bad = [v for v in self.variants if v not in REFINERS]
        if bad:
            raise ConfigError(f"variants: unknown refiner(s) {bad}; known: {sorted(REFINERS)}")
        self.train_config(0, self.variants[0])  # validates the train overrides
        return self

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
        """The TrainConfig of one fold and variant (train overrides + the study's data and folds)."""
        values = {**self.train, "data": self.data, "dataset": self.dataset, "dataset_options": self.dataset_options,
                  "splits": str(self.splits_path), "fold": fold, "refiner": variant,
                  "out": str(self.train_dir(fold, variant))}
        return from_dict(TrainConfig, values, source=f"study {self.name!r} train")


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
    """
    from cxrkit.datasets import create_dataset, fingerprint
    from cxrkit.splits import load_splits, make_splits, save_splits

    root = resolve(cfg.data)
    if cfg.phantom is not None and not (root / "train.csv").is_file():
        from cxrkit.phantom.generate import generate

        generate(root, n_patients=cfg.phantom.get("patients", 1700), size=cfg.phantom.get("size", 128),
                 seed=cfg.phantom.get("seed", 0), progress=progress)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist: set 'data' in the parameter file to "
                                f"your copy of the dataset (see README, 'Using a real dataset')")
    ds = create_dataset(cfg.dataset, root=root, check_images=False, **cfg.dataset_options)
    fp = fingerprint(ds.table)
    meta = {"seed": cfg.split_seed, "n_folds": cfg.n_folds, "test_size": cfg.test_size, "group": cfg.group,
            "fingerprint": fp, "dataset": cfg.dataset, "data": str(root)}
    meta_file = cfg.splits_path.with_suffix(".json")
    current = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    if current is None or any(current.get(k) != v for k, v in meta.items() if k != "data"):
        splits = make_splits(ds.table, ds.labels, n_folds=cfg.n_folds, test_size=cfg.test_size,
                             seed=cfg.split_seed, group=cfg.group)
        save_splits(splits, cfg.splits_path, meta)
    else:
        load_splits(cfg.splits_path)
    return {"data": str(root), "splits": str(cfg.splits_path), "data_fingerprint": fp, "n_images": len(ds.table)}


def missing_runs(cfg: StudyConfig, variants: Sequence[str] | None = None) -> list[tuple[int, str]]:
    """(fold, variant) pairs whose training has not finished (no metrics.json)."""
    return [(k, v) for v in (variants or cfg.variants) for k in range(cfg.n_folds)
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
    """The saved predictions of every fold of a variant, indexed by image."""
    from cxrkit.predict import read_predictions

    name = f"pred_{split}{'' if tta else '_notta'}.csv"
    return {k: read_predictions(cfg.train_dir(k, variant) / name)[0].set_index("image") for k in range(cfg.n_folds)}


# --- outputs of the notebooks ------------------------------------------------------------
class Outputs:
    """Where a notebook saves its figures (PNG), tables (CSV) and headline numbers (JSON)."""

    def __init__(self, cfg: StudyConfig, step: str) -> None:
        self.cfg, self.step = cfg, step
        self.figures = cfg.report_dir / "figures"
        self.tables = cfg.report_dir / "tables"
        self.figures.mkdir(parents=True, exist_ok=True)
        self.tables.mkdir(parents=True, exist_ok=True)

    def figure(self, fig: Any, name: str) -> None:
        """Save ``fig`` as ``figures/<name>.png``, show it once in a notebook, and close it."""
        import matplotlib.pyplot as plt

        fig.savefig(self.figures / f"{name}.png", dpi=110, bbox_inches="tight")
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
        return df

    def headline(self, **values: Any) -> dict[str, Any]:
        """Record headline metrics of this step for the index page."""
        path = self.cfg.report_dir / "headlines.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
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
    steps += [Step("03_train", {**p, "fold": k, "refiner": v}) for v in cfg.variants for k in range(cfg.n_folds)]
    steps += [Step(nb, p) for nb in ("04_coupling", "05_ablation", "06_fold_agreement")]
    return steps


def ensure_kernel() -> str:
    """Register the ``cxrkit`` Jupyter kernel in this environment when it is not there yet."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL_NAME, display_name="Python (cxrkit)", prefix=sys.prefix)
    return KERNEL_NAME


def _step_key(step: Step, params_text: str, upstream: str) -> str:
    nb = (project_root() / "notebooks" / f"{step.notebook}.ipynb").read_bytes()
    code = b"".join(p.read_bytes() for p in sorted((project_root() / "cxrkit").rglob("*.py")))
    h = hashlib.sha256()
    for part in (nb, code, params_text.encode(), json.dumps(step.parameters, sort_keys=True).encode(), upstream.encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _render_html(ipynb: Path, out: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(ipynb, as_version=4))
    out.write_text(body)


def run_study(params_file: str | Path, *, force: bool = False, only: Sequence[str] | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Execute every step of the study with papermill and write the HTML report.

    Args:
        params_file: The study parameter file.
        force: Re-run steps even when their inputs did not change.
        only: Run only the steps whose name starts with one of these prefixes.
        progress: Print one line per step.

    Raises:
        StudyError: naming the failing notebook and cell; the partial outputs are kept.
    """
    import papermill as pm

    params_path = resolve(params_file)
    cfg = load_study(params_path).validate()
    params_arg = str(params_path.relative_to(project_root())) if params_path.is_relative_to(project_root()) else str(params_path)
    kernel = ensure_kernel()
    out = cfg.report_dir
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copy(params_path, out / "params.yaml")
    state_file = out / "steps.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    params_text = params_path.read_text()
    upstream = ""
    t_study = time.time()
    for step in plan(cfg, params_arg):
        key = _step_key(step, params_text, upstream)
        upstream = hashlib.sha256((upstream + key).encode()).hexdigest()
        if only and not any(step.name.startswith(o) for o in only):
            continue
        ipynb, page = out / "notebooks" / f"{step.name}.ipynb", out / "notebooks" / f"{step.name}.html"
        prev = state.get(step.name, {})
        if not force and prev.get("key") == key and prev.get("status") == "ok" and ipynb.is_file():
            if progress:
                print(f"[skip] {step.name} (unchanged)", flush=True)
            continue
        if progress:
            print(f"[run ] {step.name} {step.parameters}", flush=True)
        t0 = time.time()
        entry = {"key": key, "notebook": step.notebook, "parameters": step.parameters, "status": "running",
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        state[step.name] = entry
        write_json(state_file, state)
        try:
            pm.execute_notebook(str(project_root() / "notebooks" / f"{step.notebook}.ipynb"), str(ipynb),
                                parameters=step.parameters, kernel_name=kernel, cwd=str(project_root()),
                                progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as exc:
            entry.update(status="failed", seconds=round(time.time() - t0, 1),
                         error=f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}")
            write_json(state_file, state)
            _render_html(ipynb, page)
            write_index(cfg)
            raise StudyError(f"{step.notebook}.ipynb {step.parameters} failed in cell {exc.exec_count}: "
                             f"{exc.ename}: {exc.evalue} (partial notebook: {ipynb})") from None
        _render_html(ipynb, page)
        entry.update(status="ok", seconds=round(time.time() - t0, 1))
        write_json(state_file, state)
        if progress:
            print(f"       done in {entry['seconds']:.0f} s", flush=True)
    write_json(out / "provenance.json", {"params_file": str(params_path), "params": to_dict(cfg),
                                          "wall_seconds_this_invocation": round(time.time() - t_study, 1),
                                          **environment()})
    index = write_index(cfg)
    return {"index": str(index), "report_dir": str(out), "steps": state}


def write_index(cfg: StudyConfig) -> Path:
    """``reports/<name>/index.html`` (steps, figures, tables, headline metrics, provenance) and
    ``reports/index.html`` linking every study report."""
    out = cfg.report_dir
    state = json.loads((out / "steps.json").read_text()) if (out / "steps.json").is_file() else {}
    heads = json.loads((out / "headlines.json").read_text()) if (out / "headlines.json").is_file() else {}
    prov = json.loads((out / "provenance.json").read_text()) if (out / "provenance.json").is_file() else {}
    esc = html.escape
    rows = []
    for name, e in state.items():
        metrics = heads.get(name) or heads.get(e["notebook"]) if e["notebook"] != "03_train" else heads.get(name, {})
        m = "<br>".join(f"{esc(str(k))}: {v:.4f}" if isinstance(v, float) else f"{esc(str(k))}: {esc(str(v))}"
                        for k, v in (metrics or {}).items())
        cls = {"ok": "ok", "failed": "bad"}.get(e["status"], "")
        rows.append(f"<tr><td><a href='notebooks/{esc(name)}.html'>{esc(name)}</a></td>"
                    f"<td><code>{esc(json.dumps(e['parameters']))}</code></td><td class='{cls}'>{esc(e['status'])}"
                    f"{'<br>' + esc(e.get('error', '')) if e.get('error') else ''}</td>"
                    f"<td>{e.get('seconds', '')}</td><td>{m}</td></tr>")
    figs = sorted((out / "figures").glob("*.png")) if (out / "figures").is_dir() else []
    tabs = sorted((out / "tables").glob("*.csv")) if (out / "tables").is_dir() else []
    total = sum(e.get("seconds", 0) for e in state.values())
    git = prov.get("git", {})
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>cxrkit study: {esc(cfg.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:14px}}.ok{{color:#070}}.bad{{color:#b00}}
.figs img{{max-width:420px;border:1px solid #ddd;margin:4px}}.figs div{{display:inline-block;text-align:center;font-size:12px}}</style>
</head><body><h1>cxrkit study: {esc(cfg.name)}</h1><p>{esc(cfg.description)}</p>
<p>Parameters: <a href="params.yaml">params.yaml</a> &middot; dataset <code>{esc(cfg.dataset)}</code> at
<code>{esc(cfg.data)}</code> &middot; {cfg.n_folds} folds ({esc(cfg.group)}-grouped MIS), variants {esc(', '.join(cfg.variants))}
&middot; total notebook time {total / 60:.1f} min &middot; code {esc(str(git.get('commit')))}{' (dirty)' if git.get('dirty') else ''}
&middot; {esc(prov.get('time', ''))}</p>
<h2>Notebooks</h2><table><tr><th>step</th><th>parameters</th><th>status</th><th>seconds</th><th>headline</th></tr>
{''.join(rows)}</table>
<h2>Figures</h2><div class="figs">{''.join(f"<div><a href='figures/{esc(f.name)}'><img src='figures/{esc(f.name)}'></a><br>{esc(f.stem)}</div>" for f in figs)}</div>
<h2>Tables</h2><ul>{''.join(f"<li><a href='tables/{esc(t.name)}'>{esc(t.stem)}</a></li>" for t in tabs)}</ul>
<h2>Provenance</h2><pre>{esc(json.dumps({k: prov.get(k) for k in ('python', 'packages', 'host', 'git')}, indent=1))}</pre>
</body></html>"""
    (out / "index.html").write_text(page)
    studies = sorted(p.parent for p in resolve(cfg.reports).glob("*/index.html"))
    top = "".join(f"<li><a href='{esc(p.name)}/index.html'>{esc(p.name)}</a></li>" for p in studies)
    (resolve(cfg.reports) / "index.html").write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>cxrkit reports</title></head>"
        f"<body style='font-family:sans-serif'><h1>cxrkit reports</h1><ul>{top}</ul></body></html>")
    return out / "index.html"


# --- analyses over a study's outputs ------------------------------------------------------
def is_phantom(cfg: StudyConfig) -> bool:
    """Whether the study's data carries the phantom's ground-truth sidecar."""
    return (resolve(cfg.data) / "truth.csv").is_file()


def oracle_table(cfg: StudyConfig, by_split: bool = False) -> pd.DataFrame | None:
    """Exact oracle and marginal-oracle AUC (phantom only; None otherwise): per label and macro on all
    images, or (``by_split``) the macro AUC on the test split and on every validation fold."""
    if not is_phantom(cfg):
        return None
    from cxrkit.phantom.oracle import oracle_auc
    from cxrkit.splits import load_splits

    root = resolve(cfg.data)
    labels_df, truth = pd.read_csv(root / "train.csv"), pd.read_csv(root / "truth.csv")
    if not by_split:
        cols = {}
        for name, marginal in (("oracle", False), ("marginal oracle", True)):
            per, macro = oracle_auc(truth, labels_df, marginal=marginal)
            cols[name] = pd.concat([per, pd.Series({"macro": macro})])
        return pd.DataFrame(cols)
    splits = load_splits(cfg.splits_path)
    groups = {"test": splits.loc[splits["split"] == "test", "image"]}
    groups |= {f"fold {k}": splits.loc[splits["fold"] == k, "image"] for k in range(cfg.n_folds)}
    rows = {}
    for name, images in groups.items():
        if len(images) == 0:
            continue
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


def fold_couplings(cfg: StudyConfig, variant: str) -> dict[int, pd.DataFrame]:
    """The learned coupling matrix of every fold of a variant."""
    return {k: pd.read_csv(cfg.train_dir(k, variant) / "coupling.csv", index_col=0) for k in range(cfg.n_folds)}


def true_labels(cfg: StudyConfig, images: Sequence[str]) -> Any:
    """Label matrix (NaN = unknown) of ``images`` in that order."""
    from cxrkit.datasets import create_dataset, label_matrix

    table = create_dataset(cfg.dataset, root=cfg.data, check_images=False, **cfg.dataset_options).table
    return label_matrix(table.set_index("image").loc[list(images)].reset_index(), table.attrs["labels"])


def _patients(cfg: StudyConfig, images: Sequence[str]) -> Any:
    from cxrkit.datasets import create_dataset

    table = create_dataset(cfg.dataset, root=cfg.data, check_images=False, **cfg.dataset_options).table
    return table.set_index("image").loc[list(images), "patient_id"].to_numpy()


def ablation(cfg: StudyConfig) -> dict[str, Any]:
    """Every variant against the first one (the baseline) on identical folds and seeds.

    Returns ``per_fold`` (validation macro AUC per fold and variant), ``paired`` (paired patient
    bootstrap differences vs the baseline: per fold on validation, and on the test ensemble),
    ``per_label_delta`` (test ensemble), ``test_summary`` (single folds, ensemble, TTA on/off,
    oracle) and ``headline``.
    """
    from cxrkit.metrics import bootstrap_macro_auc, macro_auc, paired_bootstrap_diff, per_label_auc

    base = cfg.variants[0]
    per_fold, paired = {}, {}
    for k in range(cfg.n_folds):
        preds = {v: fold_predictions(cfg, v, "val")[k] for v in cfg.variants}
        images = preds[base].index
        y, groups = true_labels(cfg, images), _patients(cfg, images)
        per_fold[f"fold {k}"] = {v: macro_auc(y, p.loc[images].to_numpy()) for v, p in preds.items()}
        for v in cfg.variants[1:]:
            d = paired_bootstrap_diff(y, preds[base].loc[images].to_numpy(), preds[v].loc[images].to_numpy(),
                                      n_boot=cfg.bootstrap, seed=cfg.train.get("seed", 0), groups=groups)
            paired[f"{v} - {base}, fold {k} (val)"] = d
    per_fold_df = pd.DataFrame(per_fold).T
    per_fold_df.loc["mean"] = per_fold_df.mean()
    per_fold_df.loc["std"] = per_fold_df.iloc[:-1].std(ddof=1)

    test, summary, ens = {}, {}, {}
    for v in cfg.variants:
        for tta in (True, False):
            folds = fold_predictions(cfg, v, "test", tta=tta)
            images = folds[0].index
            stack = [f.loc[images].to_numpy() for f in folds.values()]
            test[(v, tta)] = sum(stack) / len(stack)
            y = true_labels(cfg, images)
            for k, s in enumerate(stack):
                summary.setdefault(f"fold {k}", {})[f"{v}{'' if tta else ' (no TTA)'}"] = macro_auc(y, s)
            summary.setdefault("ensemble", {})[f"{v}{'' if tta else ' (no TTA)'}"] = macro_auc(y, test[(v, tta)])
        ens[v] = test[(v, True)]
    y, groups = true_labels(cfg, images), _patients(cfg, images)
    test_summary = pd.DataFrame(summary).T
    ci = {v: bootstrap_macro_auc(y, ens[v], n_boot=cfg.bootstrap, groups=groups) for v in cfg.variants}
    test_summary.loc["ensemble 95% CI low"] = {v: ci[v]["low"] for v in cfg.variants}
    test_summary.loc["ensemble 95% CI high"] = {v: ci[v]["high"] for v in cfg.variants}
    oracle = oracle_table(cfg, by_split=True)
    headline: dict[str, Any] = {f"test_ensemble_{v}": float(test_summary.loc["ensemble", v]) for v in cfg.variants}
    if oracle is not None:
        test_summary["oracle"] = float(oracle.loc["test", "oracle"])
        test_summary["marginal oracle"] = float(oracle.loc["test", "marginal oracle"])
        for v in cfg.variants:
            test_summary[f"{v} / oracle"] = test_summary[v] / test_summary["oracle"]
        headline["test_oracle"] = float(oracle.loc["test", "oracle"])
    labels = [c for c in fold_predictions(cfg, base, "test")[0].columns]
    per_label = {v: per_label_auc(y, ens[v], labels) for v in cfg.variants}
    delta = pd.DataFrame({f"{v} - {base}": per_label[v] - per_label[base] for v in cfg.variants[1:]})
    for v in cfg.variants[1:]:
        d = paired_bootstrap_diff(y, ens[base], ens[v], n_boot=cfg.bootstrap, seed=0, groups=groups)
        paired[f"{v} - {base}, test ensemble"] = d
        headline[f"test_diff_{v}_vs_{base}"] = f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    return {"per_fold": per_fold_df, "paired": pd.DataFrame(paired).T, "per_label_delta": delta,
            "test_summary": test_summary, "headline": headline}


def final_test_table(cfg: StudyConfig) -> pd.DataFrame:
    """Test macro AUC (patient-bootstrap 95% CI) of each variant's fold ensemble, and the oracle."""
    from cxrkit.metrics import bootstrap_macro_auc

    rows = {}
    for v in cfg.variants:
        folds = fold_predictions(cfg, v, "test")
        images = folds[0].index
        ens = sum(f.loc[images].to_numpy() for f in folds.values()) / len(folds)
        ci = bootstrap_macro_auc(true_labels(cfg, images), ens, n_boot=cfg.bootstrap, groups=_patients(cfg, images))
        rows[f"{v} ({cfg.n_folds}-fold ensemble, flip TTA)"] = {"macro AUC": ci["estimate"], "95% CI low": ci["low"],
                                                                 "95% CI high": ci["high"], "images": len(images)}
    oracle = oracle_table(cfg, by_split=True)
    if oracle is not None:
        rows["oracle (perfect perception, exact)"] = {"macro AUC": float(oracle.loc["test", "oracle"]),
                                                      "images": int(oracle.loc["test", "images"])}
        rows["marginal oracle (no label coupling)"] = {"macro AUC": float(oracle.loc["test", "marginal oracle"]),
                                                       "images": int(oracle.loc["test", "images"])}
    return pd.DataFrame(rows).T


def our_table_i_rows(cfg: StudyConfig, final: pd.DataFrame) -> pd.DataFrame:
    """Our rows for Table I, each labelled with the data it was measured on."""
    dataset = (f"cxrkit phantom (synthetic, {cfg.data}) test split" if is_phantom(cfg)
               else f"{cfg.dataset} at {cfg.data}, held-out test split")
    backbone = cfg.train_config(0, cfg.variants[0]).backbone
    rows = [{"study": f"cxrkit ({cfg.name}): {name}", "dataset": dataset,
             "model": backbone if "oracle" not in name else "exact posterior, no model",
             "protocol": f"{cfg.n_folds}-fold {cfg.group}-grouped MIS", "macro AUC": r["macro AUC"]}
            for name, r in final.iterrows()]
    return pd.DataFrame(rows)
