"""A phantom dataset read back: its ``train.csv`` and ``truth.csv`` (image names and patient ids as
text, the two checked to hold the same images), the config it was generated with (its site
included, from ``phantom.json``), and its images per split of a ``folds.csv``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cxrkit.data.datasets import GrandXRaySlam
from cxrkit.data.splits import load_splits
from cxrkit.data.tables import DataError, read_keyed_csv
from cxrkit.phantom.generate import MARKER
from cxrkit.phantom.model import PhantomConfig
from cxrkit.phantom.oracle import CONFIG_ATTR
from cxrkit.phantom.site import get_site
from cxrkit.utils.paths import resolve


def phantom_config(root: str | Path) -> PhantomConfig:
    """The label-model options and site a phantom was generated with, from its ``phantom.json``.

    A folder without ``phantom.json``, or one written before sites existed (no ``site`` key), is
    the default site; a missing ``config`` is the default options.

    Raises:
        cxrkit.data.tables.DataError: ``phantom.json`` is not JSON or holds an invalid site or
            config (naming the file and the key).
    """
    marker = resolve(root) / MARKER
    if not marker.is_file():
        return PhantomConfig()
    try:
        info = json.loads(marker.read_text())
        options = info.get("config") or {}
        return PhantomConfig(report_noise=bool(options.get("report_noise", True)),
                             uncertain_rate=float(options.get("uncertain_rate", 0.0)),
                             site=get_site(info.get("site"), where="site"))
    except (ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{marker}: not a valid phantom marker ({exc})") from None


def phantom_tables(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A phantom's ``train.csv`` and ``truth.csv`` sidecar, image names and patient ids as text.

    The truth table carries the phantom's config (:func:`phantom_config`, its site included) in
    ``truth.attrs["phantom_config"]``, which the oracle (:func:`cxrkit.phantom.oracle.oracle_auc`)
    uses when it is given no config: the oracle of a site's phantom is that site's.

    Raises:
        FileNotFoundError: a file is missing.
        cxrkit.data.tables.DataError: an image name empty or on several rows of a file, or images in
            one file and not in the other (naming them).
    """
    root = resolve(root)
    labels_df = read_keyed_csv(root / "train.csv", "Image_name", text=("Patient_ID", "Study"), what="label table")
    truth = read_keyed_csv(root / "truth.csv", "Image_name", what="truth sidecar")
    for a, b, name in ((labels_df, truth, "truth.csv"), (truth, labels_df, "train.csv")):
        absent = a.loc[~a["Image_name"].isin(b["Image_name"]), "Image_name"]
        if len(absent):
            raise DataError(f"{root / name}: {len(absent)} image(s) of the other file are missing: "
                            f"{', '.join(map(repr, absent[:10]))}{' ...' if len(absent) > 10 else ''}")
    truth.attrs[CONFIG_ATTR] = phantom_config(root)
    return labels_df, truth


def split_groups(path: Path, labels_df: pd.DataFrame) -> dict[str, pd.Series]:
    """Image names of the test split and of every validation fold of the splits at ``path``,
    checked to hold exactly the images (and patients) of the phantom's ``train.csv``."""
    ids = pd.DataFrame({"image": labels_df["Image_name"], "patient_id": GrandXRaySlam.patient_ids(labels_df)})
    splits = load_splits(path, ids)
    groups = {"test": splits.loc[splits["split"] == "test", "image"]}
    groups |= {f"fold {k}": splits.loc[splits["fold"] == k, "image"] for k in range(int(splits.attrs["n_folds"]))}
    return {k: v for k, v in groups.items() if len(v)}
