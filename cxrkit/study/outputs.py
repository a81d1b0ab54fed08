"""What the notebooks write into a study's report: figures, tables and headline metrics, recorded
per step (``outputs.json``, ``headlines.json``) under a lock, so that a re-run step or one removed
from the study leaves nothing stale."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.study.config import StudyConfig
from cxrkit.utils.files import write_json

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


def read_json(path: Path) -> dict[str, Any]:
    """A report's JSON record (``steps.json``, ``headlines.json``, ...); empty when absent."""
    return json.loads(path.read_text()) if path.is_file() else {}


def forget_step(report_dir: Path, step: str) -> None:
    """Remove what ``step`` recorded in a report: the figures and tables it wrote (per the
    manifest) and its headline metrics. Done when the step runs again and when it leaves the plan."""
    with _ReportLock(report_dir):
        manifest, heads = read_json(report_dir / MANIFEST), read_json(report_dir / HEADLINES)
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
            manifest = read_json(self.report_dir / MANIFEST)
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
            data = read_json(path)
            data[self.step] = {**data.get(self.step, {}), **values}
            write_json(path, data)
        return values
