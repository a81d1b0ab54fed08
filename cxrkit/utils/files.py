"""Safe file writes: atomic replacement, JSON, and the "can the kit write there?" check made
before any long work whose result would go there.

A crash while saving never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


class NotWritableError(PermissionError):
    """An output location the kit cannot write to (found before any work is done)."""


def check_writable(folder: str | Path, what: str, hint: str = "") -> Path:
    """Check that files can be created in ``folder`` (or, when it does not exist yet, that its
    nearest existing parent lets it be created), before any long work whose result would go there.

    Uses :func:`os.access` (write and search permission; false on a read-only file system, even
    for root).

    Args:
        folder: the output folder.
        what: what would be written there, for the message (e.g. ``"the folds"``).
        hint: how to write elsewhere (e.g. ``"use --out FILE"``), appended to the message.

    Returns:
        ``folder`` as a Path.

    Raises:
        NotWritableError: naming the folder (and the read-only parent) and the hint.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    why = None
    if not probe.is_dir():
        why = f"{probe} is not a folder"
    elif not os.access(probe, os.W_OK | os.X_OK):
        why = "it is read-only" if probe == folder else f"{probe} is read-only"
    if why is not None:
        raise NotWritableError(f"cannot write {what} to {folder} ({why})" + (f"; {hint}" if hint else ""))
    return folder


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, writer: Callable[[str], None]) -> Path:
    """Write via ``writer(tmp_path)`` to a temporary file in the same folder, then rename.

    The rename is atomic on POSIX, so ``path`` is either the old complete file or the new one.
    The file gets the permissions ``open`` would give it (0666 less the process's umask), not the
    temporary file's private 0600, so that a lab's shared run folders stay readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        writer(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (non-JSON values via ``str``)."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
