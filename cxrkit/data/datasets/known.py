"""Images a public release is known to hold unreadable (a loader's ``known_bad``): checked first,
so that they are refused before the long decoding of every other image, and named as known in
the exclusion report."""

from __future__ import annotations

from typing import Any

import pandas as pd

from cxrkit.data.images import scan_images
from cxrkit.data.tables import DataError, listing


def known_rows(known_bad: dict[str, str], table: pd.DataFrame) -> pd.DataFrame:
    """The ``image`` and ``path`` of the rows whose image is in ``known_bad``."""
    return table.loc[table["image"].isin(known_bad), ["image", "path"]]


def refuse_known_bad(name: str, known_bad: dict[str, str], table: pd.DataFrame, workers: int | None,
                     policy: Any = None) -> None:
    """Decode the images of ``table`` that ``known_bad`` names, and refuse those unusable here too.

    Args:
        name: the loader's name, for the message.
        known_bad: image name -> why it is known unreadable (e.g. where it is listed).
        table: the loader's table (``image``, ``path``).
        workers: threads for decoding.
        policy: the decoding policy (:class:`cxrkit.data.images.ImagePolicy`; None = defaults).

    Raises:
        DataError: naming the unusable ones, their reason and why they are known.
    """
    known = known_rows(known_bad, table)
    if known.empty:
        return
    bad = scan_images(known["path"].tolist(), workers=workers, policy=policy).bad
    if len(bad):
        image = dict(zip(known["path"], known["image"], strict=True))
        items = [f"{p} ({r}; {known_bad[image[p]]})" for p, r in zip(bad["path"], bad["reason"], strict=True)]
        raise DataError(f"{name}: {len(bad)} image(s) known to be unreadable in the public release are unusable "
                        f"here too: {listing(items)}; pass on_bad_image='exclude' and report_dir= to drop them "
                        "with a report")


def with_known_reasons(known_bad: dict[str, str], table: pd.DataFrame, bad: pd.DataFrame) -> pd.DataFrame:
    """``bad`` (``path``, ``reason``) with why each known-unreadable image is known added to its reason."""
    known = known_rows(known_bad, table)
    if known.empty or bad.empty:
        return bad
    note = {p: known_bad[i] for i, p in zip(known["image"], known["path"], strict=True)}
    bad = bad.copy()
    bad["reason"] = [f"{r}; {note[p]}" if p in note else r for p, r in zip(bad["path"], bad["reason"], strict=True)]
    return bad
