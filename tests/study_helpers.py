"""Helpers shared by the study tests: parameter-file copies and a notebook stand-in."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import yaml

from cxrkit.utils.paths import project_root

ROOT = project_root()


def smoke_copy(tmp_path: Path, file: str = "smoke.yaml", **changes) -> Path:
    """params/smoke.yaml with data, runs and reports under tmp_path (so tests do not share outputs)."""
    values = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    values.update(data=str(tmp_path / "data"), runs=str(tmp_path / "runs"), reports=str(tmp_path / "reports"))
    if values.get("external"):
        values["external"] = {**values["external"], "data": str(tmp_path / "data_site_b")}
    values.update(changes)
    path = tmp_path / file
    path.write_text(yaml.safe_dump(values))
    return path


def tiny_gxs(root: Path, n: int = 6, flip: int | None = None) -> Path:
    """A gxs train.csv of ``n`` images (their files need not exist: the study's data fingerprint
    reads the table only); ``flip`` changes one label."""
    from cxrkit.data.labels import LABELS

    rows = [{"Image_name": f"img{i}.png", "Patient_ID": f"p{i // 2}", **{lab: (i + j) % 2 for j, lab in enumerate(LABELS)}}
            for i in range(n)]
    if flip is not None:
        rows[flip][LABELS[0]] = 1 - rows[flip][LABELS[0]]
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def fake_study(tmp_path: Path, **changes) -> Path:
    """A study over :func:`tiny_gxs` data (no phantom, no external site), 2 folds, three variants."""
    values = {"phantom": None, "external": None, "data": str(tiny_gxs(tmp_path / "data")), "n_folds": 2,
              "variants": ["none", "sparse", "cooc_gcn"], **changes}
    return smoke_copy(tmp_path, **values)


class FakeNotebooks:
    """Stands in for papermill: like the real notebooks, each step writes a figure, a table and a
    headline through ``study.Outputs``. ``ran`` lists the executed steps in order, ``events`` the
    ("start" | "end", step) events; ``version`` goes into the file names and ``extra`` into the
    headline. ``train_barrier`` (a threading.Barrier) makes every 03_train step wait for another
    one to run at the same time; ``interrupt_at`` raises KeyboardInterrupt at that call (1-based)."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.version = 1
        self.extra: dict = {}
        self.train_barrier: threading.Barrier | None = None
        self.interrupt_at: int | None = None
        self.calls = 0
        self._lock = threading.Lock()

    def execute(self, input_path, output_path, parameters, **kwargs) -> None:
        import matplotlib.pyplot as plt
        import nbformat

        from cxrkit import study

        with self._lock:
            self.calls += 1
            interrupt = self.calls == self.interrupt_at
        if interrupt:
            raise KeyboardInterrupt
        cfg = study.load_study(parameters["params_file"])
        step = study.Step(Path(input_path).stem, {k: v for k, v in parameters.items() if k not in ("device", "threads")})
        with self._lock:
            self.events.append(("start", step.name))
        if self.train_barrier is not None and step.notebook == "03_train":
            self.train_barrier.wait()
        out = study.Outputs(cfg, step.name)
        out.figure(plt.figure(figsize=(1, 1)), f"fig_{step.name}_v{self.version}")
        out.table(pd.DataFrame({"x": [self.version]}), f"table_{step.name}_v{self.version}")
        out.headline(version=self.version, **self.extra)
        if step.notebook == "03_train":  # the run's end, as train() writes it
            run = cfg.train_dir(step.parameters["fold"], step.parameters["refiner"], step.parameters.get("seed"))
            run.mkdir(parents=True, exist_ok=True)
            (run / "metrics.json").write_text("{}")
        Path(output_path).write_text(nbformat.writes(nbformat.v4.new_notebook()))
        with self._lock:
            self.ran.append(step.name)
            self.events.append(("end", step.name))
