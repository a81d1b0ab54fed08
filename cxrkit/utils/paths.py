"""Paths resolved from the project root, never from the caller's working directory.

papermill runs kernels in the caller's cwd, so notebooks and the CLI resolve every relative
path through :func:`resolve` instead of ``os.getcwd()``.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the cxrkit package (this file is in cxrkit/utils)


def project_root() -> Path:
    """The repository root: ``$CXRKIT_ROOT`` if set, else the folder holding ``pyproject.toml``
    above the package, else the current directory (installed, non-editable use)."""
    env = os.environ.get("CXRKIT_ROOT")
    if env:
        return Path(env).resolve()
    cand = _PACKAGE_DIR.parent
    if (cand / "pyproject.toml").is_file():
        return cand
    return Path.cwd().resolve()


def resolve(path: str | os.PathLike) -> Path:
    """Absolute path: ``path`` as given when absolute, else relative to :func:`project_root`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (project_root() / p).resolve()


def data_dir() -> Path:
    """Where generated data lives (ignored by git)."""
    return project_root() / "data"


def runs_dir() -> Path:
    """Where run outputs (checkpoints, predictions) live (ignored by git)."""
    return project_root() / "runs"
