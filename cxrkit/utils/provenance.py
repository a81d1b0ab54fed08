"""What every run records next to its outputs: parameters, code version, environment.

The atomic file writes used for checkpoints and results are in :mod:`cxrkit.utils.files`.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from cxrkit.utils.files import write_json
from cxrkit.utils.paths import project_root

PACKAGES = (
    "cxrkit", "torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn",
    "iterative-stratification", "pillow", "papermill",
    "pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle",  # image decoding
)


def git_revision(root: Path | None = None) -> dict[str, Any]:
    """The git commit of the project and whether the work tree has uncommitted changes."""
    root = root or project_root()

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    rev = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": rev, "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info(device: str | None = None) -> dict[str, Any]:
    """The compute device in words (GPU name and count when CUDA is present)."""
    info: dict[str, Any] = {"device": device, "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = torch.version.cuda
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def environment(device: str | None = None) -> dict[str, Any]:
    """Code version and environment of this process."""
    return {
        "git": git_revision(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "host": device_info(device),
        "argv": sys.argv,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


#: Reports a dataset writes into the run folder when the run loads it (cxrkit.data.datasets), and the
#: ``on_bad_image`` value with which each is written on every load (None: whenever it applies).
DATA_REPORTS: dict[str, str | None] = {"excluded_images.csv": "exclude", "reoriented_images.csv": None}


def data_quality(out_dir: str | Path, params: dict[str, Any]) -> dict[str, int]:
    """Rows of each data report in the run folder (:data:`DATA_REPORTS`): images excluded as
    unusable, images decoded with their EXIF orientation; 0 for a report not written."""
    import pandas as pd

    counts = {}
    for name, mode in DATA_REPORTS.items():
        file = Path(out_dir) / name
        written = (mode is None or params.get("on_bad_image") == mode) and file.is_file()
        counts[name.removesuffix(".csv")] = len(pd.read_csv(file, dtype=str)) if written else 0
    return counts


def write_run_record(out_dir: str | Path, params: dict[str, Any], *, device: str | None = None,
                     extra: dict[str, Any] | None = None, name: str = "provenance.json") -> Path:
    """Write ``params.json`` and ``provenance.json`` (code version, packages, device, and the
    ``data_quality`` counts of :func:`data_quality`) into a run folder."""
    out_dir = Path(out_dir)
    write_json(out_dir / "params.json", params)
    record = {"params": params, **environment(device), "data_quality": data_quality(out_dir, params),
              **(extra or {})}
    return write_json(out_dir / name, record)
