"""A study's training runs: which are missing (trained on demand with ``auto_train``), and what
they saved: every fold's predictions and coupling matrices, per variant."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd

from cxrkit.evaluation.predictions import read_coupling, read_predictions
from cxrkit.study.config import StudyConfig, StudyError
from cxrkit.study.data import prepare


def missing_runs(cfg: StudyConfig, variants: Sequence[str] | None = None,
                 seeds: Sequence[int] | None = None) -> list[tuple[int, str, int]]:
    """(fold, variant, seed) of the runs whose training has not finished (no metrics.json), over
    ``seeds`` (default: the study's first training seed; every seed: ``cfg.seed_list``)."""
    seeds = list(seeds) if seeds is not None else cfg.seed_list[:1]
    return [(k, v, s) for s in seeds for v in (variants or cfg.variant_names) for k in range(cfg.n_folds)
            if not (cfg.train_dir(k, v, s) / "metrics.json").is_file()]


def require_runs(cfg: StudyConfig, variants: Sequence[str] | None = None, params_file: str = "",
                 seeds: Sequence[int] | None = None) -> None:
    """Make sure every fold of ``variants`` is trained (for ``seeds``, default the first training
    seed): train them when ``auto_train``, else raise naming the missing runs and the commands
    that produce them."""
    missing = missing_runs(cfg, variants, seeds)
    if not missing:
        return
    if cfg.auto_train:
        from cxrkit.training.loop import train  # torch: only when runs are trained here

        prepare(cfg, progress=False)
        for fold, variant, seed in missing:
            train(dataclasses.replace(cfg.train_config(fold, variant, seed), progress=False))
        return
    cmds = "\n".join(f"  papermill notebooks/03_train.ipynb out.ipynb -p params_file {params_file or '<file>'} "
                     f"-p fold {k} -p refiner {v}{f' -p seed {s}' if cfg.seeds is not None else ''}"
                     for k, v, s in missing)
    raise StudyError(f"{len(missing)} training run(s) of study {cfg.name!r} are missing: {missing}. "
                     f"Run `cxrkit study -f {params_file or '<file>'}` or:\n{cmds}")


def fold_predictions(cfg: StudyConfig, variant: str, split: str = "test", tta: bool = True,
                     seed: int | None = None) -> dict[int, pd.DataFrame]:
    """The saved predictions of every fold of a variant (trained with ``seed``; None: the first
    training seed), indexed by image: with flip TTA (``pred_<split>.csv``) or without
    (``pred_<split>_notta.csv``). A variant trained with ``tta: false`` saved only its predictions
    without TTA, as ``pred_<split>.csv``: they are returned for both."""
    with_tta = cfg.train_config(0, variant).tta
    name = f"pred_{split}{'' if tta or not with_tta else '_notta'}.csv"
    folds = {}
    for k in range(cfg.n_folds):
        path = cfg.train_dir(k, variant, seed) / name
        folds[k] = read_predictions(path)[0].set_index("image")
        folds[k].attrs["path"] = str(path)  # named by same_images
    return folds


def same_images(folds: dict[int, pd.DataFrame]) -> pd.Index:
    """The images of the first of ``folds`` (:func:`fold_predictions`), after checking that every
    fold predicted the same set of images (to average them image by image).

    Raises:
        StudyError: a fold's prediction file lacks images the first one has, or has others;
            naming the file and the first such image ids.
    """
    (k0, first), *rest = folds.items()
    images = first.index
    have = set(images)
    for k, f in rest:
        other = set(f.index)
        if other == have:
            continue
        missing = [im for im in images if im not in other][:5]
        extra = [im for im in f.index if im not in have][:5]
        raise StudyError(f"{f.attrs.get('path', f'fold {k}')}: the fold's predictions are not of the same images "
                         f"as {first.attrs.get('path', f'fold {k0}')}: "
                         + "; ".join(([f"missing {missing}"] if missing else []) + ([f"extra {extra}"] if extra else []))
                         + " (the first ids)")
    return images


def fold_couplings(cfg: StudyConfig, variant: str, kind: str = "effective") -> dict[int, pd.DataFrame]:
    """The coupling matrix of every fold of a variant: ``effective`` (logit units, comparable
    across refiners; :func:`cxrkit.models.refiners.effective_coupling`) or ``raw`` (the refiner's own
    parameter: A for the sparse refiners, the fixed prior P(column | row) for cooc_gcn)."""
    name = {"effective": "effective_coupling.csv", "raw": "coupling.csv"}[kind]
    return {k: read_coupling(cfg.train_dir(k, variant) / name) for k in range(cfg.n_folds)}


def coupled_variants(cfg: StudyConfig) -> list[str]:
    """Variants whose refiner has a coupling matrix (every one but ``none``)."""
    return [v for v in cfg.variant_names if cfg.train_config(0, v).refiner != "none"]


def main_variant(cfg: StudyConfig) -> str:
    """The variant the ensemble analyses describe: ``sparse`` (the paper's model) if present, else the last."""
    return "sparse" if "sparse" in cfg.variant_names else cfg.variant_names[-1]
