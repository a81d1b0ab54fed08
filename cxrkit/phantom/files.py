"""A phantom dataset read back: its ``train.csv`` and ``truth.csv`` (image names and patient ids as
text, the two checked to hold the same images), and its images per split of a ``folds.csv``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrkit.data.datasets import GrandXRaySlam
from cxrkit.data.splits import load_splits
from cxrkit.data.tables import DataError, read_keyed_csv
from cxrkit.utils.paths import resolve


def phantom_tables(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A phantom's ``train.csv`` and ``truth.csv`` sidecar, image names and patient ids as text.

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
    return labels_df, truth


def split_groups(path: Path, labels_df: pd.DataFrame) -> dict[str, pd.Series]:
    """Image names of the test split and of every validation fold of the splits at ``path``,
    checked to hold exactly the images (and patients) of the phantom's ``train.csv``."""
    ids = pd.DataFrame({"image": labels_df["Image_name"], "patient_id": GrandXRaySlam.patient_ids(labels_df)})
    splits = load_splits(path, ids)
    groups = {"test": splits.loc[splits["split"] == "test", "image"]}
    groups |= {f"fold {k}": splits.loc[splits["fold"] == k, "image"] for k in range(int(splits.attrs["n_folds"]))}
    return {k: v for k, v in groups.items() if len(v)}
