"""Look at the HTML report the way a reader does: a headless Chromium screenshot.

Needs Debian's ``chromium`` (``apt-get install chromium``); used by ``make bench``, never by the
test suite (CI machines do not have a browser).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def find_chromium() -> str:
    """Path of a Chromium/Chrome executable, or FileNotFoundError saying how to install one."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    raise FileNotFoundError("no Chromium found: `apt-get install chromium` (Debian) to take report screenshots")


def screenshot(html: str | Path, png: str | Path, width: int = 1400, height: int = 3000) -> dict[str, float]:
    """Render ``html`` headless into ``png`` and check the page is not blank.

    Returns simple statistics of the screenshot (size, fraction of non-white pixels, number of
    distinct colours). Raises RuntimeError when Chromium fails or the page renders blank.
    """
    html, png = Path(html).resolve(), Path(png).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"no report at {html}: run `make study` first")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [find_chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", html.as_uri()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if res.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({res.returncode}): {res.stderr[-2000:]}")
    img = np.asarray(Image.open(png).convert("RGB"))
    stats = {"width": img.shape[1], "height": img.shape[0],
             "non_white_fraction": float(np.mean(img.min(axis=2) < 245)),
             "colours": int(len(np.unique(img.reshape(-1, 3)[::7], axis=0)))}
    if stats["non_white_fraction"] < 0.02 or stats["colours"] < 50:
        raise RuntimeError(f"the screenshot of {html} looks blank: {stats}")
    return stats
