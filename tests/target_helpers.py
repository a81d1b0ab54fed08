"""External-validation targets made from a phantom: its images and labels written in another
dataset's format (NIH ChestX-ray14), so a model trained on the phantom meets other label names."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

#: Phantom labels NIH ChestX-ray14 also annotates, and their NIH spelling where it differs.
NIH_SHARED = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Pneumonia", "Pneumothorax")
NIH_SPELLING = {"Pleural Effusion": "Effusion"}


def write_nih_target(phantom: Path, out: Path, images: Sequence[str] | None = None) -> Path:
    """The phantom's images (all, or ``images``) as an NIH ChestX-ray14 folder.

    ``Finding Labels`` holds the phantom's positive labels NIH annotates, with NIH's spelling
    (``Effusion``), plus ``Nodule`` (a finding NIH has and the phantom's labels do not) for the
    phantom's Lung Lesion, or ``No Finding``; images are copied into ``out/images``.

    Returns:
        ``out``.
    """
    table = pd.read_csv(phantom / "train.csv", dtype={"Image_name": str, "Patient_ID": str})
    if images is not None:
        table = table[table["Image_name"].isin(set(images))]
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for r in table.to_dict("records"):
        found = [NIH_SPELLING.get(lab, lab) for lab in NIH_SHARED if r[lab] == 1]
        found += ["Nodule"] if r["Lung Lesion"] == 1 else []
        rows.append({"Image Index": r["Image_name"], "Finding Labels": "|".join(found) or "No Finding",
                     "Follow-up #": r["Study"], "Patient ID": r["Patient_ID"], "Patient Age": r["Age"],
                     "Patient Gender": r["Sex"], "View Position": r["ViewPosition"]})
        shutil.copy2(phantom / "images" / r["Image_name"], out / "images" / r["Image_name"])
    pd.DataFrame(rows).to_csv(out / "Data_Entry_2017.csv", index=False)
    return out
