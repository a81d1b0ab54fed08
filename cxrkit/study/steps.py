"""The steps of a study: the numbered notebooks in order, ``03_train`` once per fold and variant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cxrkit.study.config import StudyConfig

NOTEBOOKS = ("01_explore", "02_folds", "03_train", "04_coupling", "05_ablation", "06_fold_agreement", "07_external",
             "08_trust", "09_saliency")


class NotebookFailed(Exception):
    """A step's notebook did not finish: ``error`` says where and why (``cell 3: ValueError: ...``,
    recorded in ``steps.json``), ``where`` where to look besides the partial notebook (a job's logs)."""

    def __init__(self, error: str, where: str = "") -> None:
        super().__init__(error)
        self.error, self.where = error, where


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
    """The ordered steps of a study (``07_external`` only with an ``external:`` block)."""
    p = {"params_file": params_file}
    steps = [Step("01_explore", p), Step("02_folds", p)]
    if cfg.seeds is None:
        steps += [Step("03_train", {**p, "fold": k, "refiner": v}) for v in cfg.variant_names for k in range(cfg.n_folds)]
    else:  # seed by seed, so that the first seed's comparison is complete first
        steps += [Step("03_train", {**p, "fold": k, "refiner": v, "seed": s}) for s in cfg.seeds
                  for v in cfg.variant_names for k in range(cfg.n_folds)]
    after = ("04_coupling", "05_ablation", "06_fold_agreement", *(("07_external",) if cfg.external is not None else ()),
             "08_trust", "09_saliency")
    steps += [Step(nb, p) for nb in after]
    return steps
