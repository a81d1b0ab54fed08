"""The radiologists' boxes some datasets publish, read into the kit's box table
(:mod:`cxrkit.data.boxes`: ``image, label, x0, y0, x1, y1, source`` in pixels of the stored image),
for the loaders' ``boxes()`` (:meth:`cxrkit.data.datasets.nih.NIHChestXray14.boxes`,
:meth:`cxrkit.data.datasets.vindr.VinDrCXR.boxes`).

* NIH ChestX-ray14: ``BBox_List_2017.csv``, 984 boxes on 880 images for 8 findings, drawn by a
  board-certified radiologist (Wang et al., CVPR 2017, Sec. 3.3), ``Bbox [x, y, w, h]`` in pixels
  of the released 1024 x 1024 PNGs: ``x0, y0 = x, y`` and ``x1, y1 = x + w, y + h``, reference
  grid 1024 x 1024 (``ref_width, ref_height``; a list with those columns says otherwise), also
  for a downsampled copy of the images (224 or 512 px sets). The list
  spells two findings its own way: ``Infiltrate`` (``Infiltration`` in the label table) and
  ``Effusion`` (the vocabulary's ``Pleural Effusion``, as the loader maps it).
* VinDr-CXR: one row per box and reader (``image_id, rad_id, class_name, x_min, y_min, x_max,
  y_max`` in pixels of the DICOM image; the Kaggle VinBigData ``train.csv``, torchxrayvision's
  ``vinbigdata-train.csv``, the official ``annotations_train.csv`` / ``annotations_test.csv``;
  Nguyen et al., Scientific Data 2022). Every reader's box is kept as its own row (``source``
  ``vindr R8``; the test set's consensus rows ``vindr consensus``). Their reference grid is the
  DICOM's (``ref_width, ref_height`` NaN: read from its header when the stored file is the DICOM);
  for a non-DICOM copy (Kaggle's PNGs) the box file must give it in columns ``ref_width,
  ref_height`` (the original Columns, Rows), else scaling refuses. The true region of a finding is
  the union of the boxes its readers drew (a saliency map pointing at what any reader marked is
  on the finding), not a fusion of them. Class names map to labels as the loader's
  :data:`~cxrkit.data.datasets.vindr.VINDR_FINDINGS` (``Nodule/Mass`` is Lung Lesion); classes
  without a label of the vocabulary (Aortic enlargement, Calcification, ILD, Other lesion, ...)
  and the box-less ``No finding`` rows are left out.

Only the boxes of images in the loader's table and of its labels are returned.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import pandas as pd

from cxrkit.data.boxes import BOX_COLUMNS, REF_COLUMNS, box_table, empty_boxes
from cxrkit.data.tables import DataError, read_raw_csv

#: NIH's box list: its finding names -> the vocabulary's.
NIH_BOX_NAMES: dict[str, str] = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Pleural Effusion",
    "Infiltrate": "Infiltration", "Infiltration": "Infiltration", "Mass": "Mass", "Nodule": "Nodule",
    "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax",
}
#: Box columns of a VinDr-CXR annotation file.
VINDR_BOX_COLUMNS: tuple[str, ...] = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
#: The grid of NIH's boxes, (width, height): the released originals.
NIH_GRID: tuple[int, int] = (1024, 1024)


def _grid(raw: pd.DataFrame, default: tuple[float, float]) -> dict[str, object]:
    """The reference grid columns of a box file's rows: its ``ref_width``/``ref_height``, else ``default``."""
    return {c: pd.to_numeric(raw[c], errors="coerce") if c in raw.columns else d for c, d in zip(REF_COLUMNS, default)}


def _keep(boxes: pd.DataFrame, images: Collection[str], labels: Collection[str]) -> pd.DataFrame:
    keep = boxes["image"].isin(set(images)) & boxes["label"].isin(set(labels))
    return boxes.loc[keep].reset_index(drop=True)


def nih_boxes(path: Path, images: Collection[str], labels: Collection[str]) -> pd.DataFrame:
    """NIH's ``BBox_List_2017.csv`` (or ``.csv.gz``) as a box table (``source`` ``nih``).

    Raises:
        DataError: fewer than six columns, or a finding name the list does not use (naming it).
    """
    raw = read_raw_csv(path)
    if raw.shape[1] < 6:
        raise DataError(f"{path}: not NIH's box list (expected Image Index, Finding Label, Bbox [x, y, w, h]; "
                        f"columns: {list(raw.columns)})")
    name = raw.iloc[:, 1].str.strip()
    unknown = sorted(set(name) - set(NIH_BOX_NAMES))
    if unknown:
        raise DataError(f"{path}: unknown finding name(s) {unknown}; known: {sorted(NIH_BOX_NAMES)}")
    x, y, w, h = (pd.to_numeric(raw.iloc[:, k], errors="coerce") for k in range(2, 6))
    table = pd.DataFrame({"image": raw.iloc[:, 0].str.strip(), "label": name.map(NIH_BOX_NAMES),
                          "x0": x, "y0": y, "x1": x + w, "y1": y + h, "source": "nih", **_grid(raw, NIH_GRID)})
    return _keep(box_table(table, where=str(path)), images, labels)


def vindr_boxes(files: Sequence[Path], names: Mapping[str, str], images: Collection[str],
                labels: Collection[str]) -> pd.DataFrame:
    """The boxes of VinDr-CXR annotation files, one row per box and reader (see the module).

    Args:
        files: annotation files with :data:`VINDR_BOX_COLUMNS` (and ``rad_id``, optional).
        names: class name -> label (the loader's ``VINDR_FINDINGS``).
        images, labels: the table's images and labels (the others' boxes are left out).

    Raises:
        DataError: a file without the box columns, or a box without finite corners.
    """
    parts = []
    for file in files:
        raw = read_raw_csv(file)
        missing = [c for c in VINDR_BOX_COLUMNS if c not in raw.columns]
        if missing:
            raise DataError(f"{file}: no box column(s) {missing}; a VinDr-CXR box file has {list(VINDR_BOX_COLUMNS)}")
        label = raw["class_name"].str.strip().map(names)
        boxed = label.notna() & (label != "No Finding") & (raw["x_min"].str.strip() != "")
        raw, label = raw.loc[boxed], label.loc[boxed]
        reader = raw["rad_id"].str.strip() if "rad_id" in raw.columns else pd.Series("consensus", index=raw.index)
        table = pd.DataFrame({"image": raw["image_id"].str.strip(), "label": label,
                              **{k: pd.to_numeric(raw[c], errors="coerce") for k, c in
                                 zip(("x0", "y0", "x1", "y1"), VINDR_BOX_COLUMNS[2:])},
                              "source": "vindr " + reader.replace("", "consensus"),
                              **_grid(raw, (float("nan"), float("nan")))})
        parts.append(box_table(table, where=str(file)))
    if not parts:
        return empty_boxes()
    return _keep(pd.concat(parts, ignore_index=True)[[*BOX_COLUMNS, *REF_COLUMNS]], images, labels)
