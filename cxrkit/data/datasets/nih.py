"""NIH ChestX-ray14: ``Data_Entry_2017*.csv`` with pipe-separated ``Finding Labels``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from cxrkit.data.datasets.base import CXRDataset
from cxrkit.data.datasets.box_lists import nih_boxes
from cxrkit.data.datasets.fields import Built, age_column, assemble, blank_to_nan, view_column
from cxrkit.data.labels import NIH_LABELS, NIH_SYNONYMS
from cxrkit.data.tables import DataError, lines_of, listing, read_raw_csv, require_columns


class NIHChestXray14(CXRDataset):
    """NIH ChestX-ray14: ``Data_Entry_2017*.csv`` with pipe-separated ``Finding Labels``.

    Images are indexed once under ``root/images/`` and ``root/images_*/images/`` (the official
    tarball layout), or under ``images`` when given. Labels: :data:`NIH_LABELS` + ``No Finding``
    (NIH spellings mapped through :data:`NIH_SYNONYMS`), never NaN. ``train_val_list.txt`` /
    ``test_list.txt`` in root give ``official_split`` (``"train_val"``/``"test"``; the test
    images are what ``test_split: official`` holds out). Views: ``View Position`` (PA, AP).
    """

    name = "nih"
    all_labels = (*NIH_LABELS, "No Finding")
    default_csv = ("Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz")
    view_values = ("PA", "AP")
    official_test = "test_list.txt"
    split_files: ClassVar[dict[str, str]] = {
        "train_val": "train_val_list.txt",
        "test": "test_list.txt",
    }
    _columns = (
        "Image Index",
        "Finding Labels",
        "Follow-up #",
        "Patient ID",
        "Patient Age",
        "Patient Gender",
        "View Position",
    )

    #: NIH's box list, looked for in root by :meth:`boxes`.
    box_files: ClassVar[tuple[str, ...]] = ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")

    def boxes(self, csv: str | os.PathLike | None = None) -> pd.DataFrame:
        """NIH's radiologist boxes (``BBox_List_2017.csv``: 984 boxes on 880 images, 8 findings) of
        the table's images and labels, as a box table (:mod:`cxrkit.data.boxes`; pixels of the
        1024 x 1024 PNGs; :func:`cxrkit.data.datasets.box_lists.nih_boxes`).

        Args:
            csv: the box list, relative to root; None looks for :attr:`box_files` there.

        Raises:
            DataError: no box list, or one that cannot be read.
        """
        path = self.root / csv if csv is not None else self._find_optional(*self.box_files)
        if path is None or not path.is_file():
            raise DataError(f"{self.name}: no box list in {self.root} (looked for {list(self.box_files) if csv is None else [str(csv)]}); "
                            "NIH publishes its boxes as BBox_List_2017.csv beside Data_Entry_2017.csv")
        return nih_boxes(path, set(self.table["image"]), self.labels)

    def _image_dirs(self) -> list[Path]:
        if self.images_dir != self.root:
            return [self.images_dir]
        return [self.root / "images", *sorted(self.root.glob("images_*/images"))]

    def _index(self) -> tuple[dict[str, str], Path]:
        """name -> absolute path over the image folders; the folder for unfound names."""
        dirs = [d for d in self._image_dirs() if d.is_dir()]
        index: dict[str, str] = {}
        clashes: list[str] = []
        for d in dirs:
            with os.scandir(d) as it:
                for entry in it:
                    if entry.name in index:
                        clashes.append(f"{index[entry.name]} and {entry.path}")
                    index[entry.name] = entry.path
        if clashes:
            raise DataError(
                f"{self.name}: the same image name in several folders: {listing(clashes)}"
            )
        return index, dirs[0] if dirs else self._image_dirs()[0]

    def _build(self) -> Built:
        raw = read_raw_csv(self.csv)
        require_columns(raw, self._columns, self.csv)
        lines = pd.Series(raw.index + 2)
        known = set(self.all_labels)
        findings: list[set[str]] = []
        unknown = np.zeros(len(raw), dtype=bool)
        names: set[str] = set()
        for i, cell in enumerate(raw["Finding Labels"]):
            found = {NIH_SYNONYMS.get(x.strip(), x.strip()) for x in cell.split("|")}
            if not found <= known:
                unknown[i] = True
                names |= found - known
            findings.append(found)
        if unknown.any():
            raise DataError(
                f"{self.csv}: unknown finding name(s) {sorted(names)} in 'Finding Labels' at "
                f"{lines_of(unknown, lines, raw['Finding Labels'])}; known: {sorted(known)}"
            )
        y = pd.DataFrame(
            {
                lab: np.fromiter((lab in f for f in findings), float, len(raw))
                for lab in self.labels
            },
            index=raw.index,
        )
        image = raw["Image Index"]
        index, fallback = self._index()
        path = image.map(lambda n: index.get(n) or os.path.join(fallback, n))
        meta = {
            "sex": blank_to_nan(raw["Patient Gender"]),
            "age": age_column(raw["Patient Age"], "Patient Age", self.csv, lines),
        }
        split = self._official_split(image)
        if split is not None:
            meta["official_split"] = split
        table = assemble(
            image,
            path,
            blank_to_nan(raw["Patient ID"]),
            blank_to_nan(raw["Follow-up #"]),
            view_column(raw["View Position"]),
            meta,
            y,
        )
        return Built(table, lines, self.csv)

    def _official_split(self, image: pd.Series) -> pd.Series | None:
        split = pd.Series(np.nan, index=image.index, dtype=object)
        present = False
        known = set(image)
        for value, fname in self.split_files.items():
            file = self._find_optional(fname)
            if file is None:
                continue
            present = True
            self.side_files.append(file)
            listed = [ln.strip() for ln in file.read_text().splitlines() if ln.strip()]
            stray = [n for n in listed if n not in known]
            if stray:
                raise DataError(
                    f"{file}: {len(stray)} image(s) not in {self.csv.name}: {listing(stray)}"
                )
            hit = image.isin(set(listed))
            twice = hit & split.notna()
            if twice.any():
                raise DataError(
                    f"{file}: image(s) also in another split file: {listing(list(image[twice]))}"
                )
            split[hit] = value
        return split if present else None
