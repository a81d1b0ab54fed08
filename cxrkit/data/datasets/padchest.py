"""PadChest (BIMCV, Hospital San Juan, Alicante): one CSV with the report terms of every image as a
Python list in text, 16-bit PNGs in numbered subfolders."""

from __future__ import annotations

import ast
import os
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from cxrkit.data.datasets.base import SAMPLE_PATHS, CXRDataset, logger
from cxrkit.data.datasets.fields import Built, age_column, assemble, blank_to_nan, join_paths
from cxrkit.data.datasets.padchest_terms import (
    NORMAL,
    PADCHEST_KNOWN_BAD,
    PADCHEST_PROJECTIONS,
    PADCHEST_TERMS,
    UNINFORMATIVE,
)
from cxrkit.data.labels import VOCABULARY
from cxrkit.data.tables import MISSING_SPELLINGS, DataError, lines_of, read_raw_csv, require_columns


def parse_terms(labels: pd.Series, file: os.PathLike, lines: pd.Series) -> list[tuple[str, ...] | None]:
    """Each ``Labels`` cell as its terms (stripped), or None for an empty cell (``''``, ``nan``).

    Every distinct cell is parsed once with :func:`ast.literal_eval`.

    Raises:
        DataError: naming the file and lines whose cell is not a list of strings.
    """
    parsed: dict[str, tuple[str, ...] | None] = {}
    bad: set[str] = set()
    for cell in labels.unique():
        if cell.strip() in MISSING_SPELLINGS:
            parsed[cell] = None
            continue
        try:
            value = ast.literal_eval(cell)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
            bad.add(cell)
            continue
        parsed[cell] = tuple(t.strip() for t in value)
    if bad:
        raise DataError(f"{file}: 'Labels' is not a list of terms such as \"['normal']\" at "
                        f"{lines_of(labels.isin(bad), lines, labels)}")
    return [parsed[c] for c in labels]


def term_labels(terms: tuple[str, ...] | None, labels: list[str]) -> np.ndarray:
    """One image's label row (1.0, 0.0, or NaN for every label when its terms say nothing).

    No Finding is 1.0 when ``normal`` comes with only uninformative terms and support devices.
    """
    if terms is None or set(terms) <= UNINFORMATIVE:
        return np.full(len(labels), np.nan)
    found = set(terms)
    devices = set(PADCHEST_TERMS["Support Devices"])
    row = np.empty(len(labels))
    for j, lab in enumerate(labels):
        if lab == "No Finding":
            row[j] = float(NORMAL in found and found - {NORMAL} <= UNINFORMATIVE | devices)
        else:
            row[j] = float(not found.isdisjoint(PADCHEST_TERMS[lab]))
    return row


class PadChest(CXRDataset):
    """PadChest: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or ``.csv.gz``).

    Columns used: ``ImageID`` (the image), ``ImageDir`` (its numbered subfolder), ``StudyID``,
    ``PatientID``, ``Projection`` (the view, :data:`PADCHEST_PROJECTIONS`) and ``Labels``, the
    report's terms as text (``"['normal']"``, ``"['cardiomegaly', 'pleural effusion']"``); when
    present, ``PatientSex_DICOM`` (``sex``) and ``PatientBirth`` with ``StudyDate_DICOM`` (``age``
    = the study's year minus the birth year). Images at ``images/<ImageDir>/<ImageID>`` (default
    images = root), or ``images/<ImageID>`` when that is what exists (the resized copies).

    Labels: the terms mapped by name (:mod:`cxrkit.data.datasets.padchest_terms`, after
    torchxrayvision's ``PC_Dataset``): 1.0 when a mapped term is listed, 0.0 when not, NaN for
    every label of an image whose terms say nothing (empty ``Labels``, or only ``unchanged``,
    ``exclude``, ``suboptimal study``), counted in ``quality["labels"]``. Every image is kept (the
    paediatric and the 'exclude' projections too); use ``views`` to keep some projections.
    Images the release is known to hold unreadable (:data:`PADCHEST_KNOWN_BAD`, from
    torchxrayvision) are refused by the image check, or excluded with
    ``on_bad_image="exclude"``, with that reason.
    """

    name = "padchest"
    all_labels = tuple(lab for lab in VOCABULARY if lab in PADCHEST_TERMS or lab == "No Finding")
    options: ClassVar[dict[str, Any]] = {}
    default_csv = ("PADCHEST_chest_x_ray_images_labels_160K*.csv", "PADCHEST_chest_x_ray_images_labels_160K*.csv.gz")
    view_values = ("PA", "AP", "AP_SUPINE", "LATERAL", "COSTAL", "EXCLUDE")
    known_bad = PADCHEST_KNOWN_BAD
    _columns = ("ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "Labels")

    def _build(self) -> Built:
        raw = read_raw_csv(self.csv)
        require_columns(raw, self._columns, self.csv)
        lines = pd.Series(raw.index + 2)
        terms = parse_terms(raw["Labels"], self.csv, lines)
        y = self._labels(terms, raw.index)
        meta: dict[str, pd.Series] = {}
        if "PatientSex_DICOM" in raw:
            sex = blank_to_nan(raw["PatientSex_DICOM"])
            meta["sex"] = sex.where(~sex.isin(MISSING_SPELLINGS))
        if "PatientBirth" in raw and "StudyDate_DICOM" in raw:
            meta["age"] = self._ages(raw, lines)
        image = raw["ImageID"]
        table = assemble(image, self._paths(raw), blank_to_nan(raw["PatientID"]), blank_to_nan(raw["StudyID"]),
                         self._views(raw["Projection"], lines), meta, y)
        return Built(table, lines, self.csv)

    def _labels(self, terms: list[tuple[str, ...] | None], index: pd.Index) -> pd.DataFrame:
        """The label columns; counts of the images whose terms say nothing in ``quality``."""
        rows = {t: term_labels(t, self.labels) for t in set(terms)}
        y = np.vstack([rows[t] for t in terms]) if terms else np.empty((0, len(self.labels)))
        empty = sum(t is None for t in terms)
        uninformative = sum(t is not None and set(t) <= UNINFORMATIVE for t in terms)
        self.quality["labels"] = {"images": len(terms), "no_labels_cell": empty,
                                  "only_uninformative_terms": uninformative, "all_labels_nan": empty + uninformative}
        if empty + uninformative:
            logger.info("%s: %d image(s) with no label (empty 'Labels': %d; only %s: %d): every label NaN",
                        self.name, empty + uninformative, empty, sorted(UNINFORMATIVE - {""}), uninformative)
        return pd.DataFrame(y, index=index, columns=self.labels)

    def _views(self, projection: pd.Series, lines: pd.Series) -> pd.Series:
        """``Projection`` in the view vocabulary; ``UNK`` and blank are missing (counted).

        Raises:
            DataError: naming the lines of a projection the release does not use.
        """
        text = projection.str.strip()
        unknown = ~text.isin(PADCHEST_PROJECTIONS) & (text != "")
        if unknown.any():
            raise DataError(f"{self.csv}: unknown 'Projection' (known: {list(PADCHEST_PROJECTIONS)}) at "
                            f"{lines_of(unknown, lines, projection)}")
        self.quality["projection_unknown"] = int(text.isin(["UNK", ""]).sum())
        return text.map(PADCHEST_PROJECTIONS).astype(object).where(text != "")

    def _ages(self, raw: pd.DataFrame, lines: pd.Series) -> pd.Series:
        """Age at the study: its year (``StudyDate_DICOM``, YYYYMMDD) minus ``PatientBirth``.

        Raises:
            DataError: naming the lines of a date that is not YYYYMMDD or a non-numeric birth year.
        """
        birth = age_column(raw["PatientBirth"].where(~raw["PatientBirth"].isin(MISSING_SPELLINGS), ""),
                           "PatientBirth", self.csv, lines)
        date = raw["StudyDate_DICOM"].str.strip()
        bad = ~date.str.fullmatch(r"\d{8}")
        if bad.any():
            raise DataError(f"{self.csv}: 'StudyDate_DICOM' is not YYYYMMDD at {lines_of(bad, lines, date)}")
        return date.str[:4].astype(np.float64) - birth

    def _paths(self, raw: pd.DataFrame) -> pd.Series:
        """``images/<ImageDir>/<ImageID>``, or ``images/<ImageID>`` when more sampled files exist so."""
        nested = join_paths(self.images_dir, raw["ImageDir"].str.strip() + "/" + raw["ImageID"])
        flat = join_paths(self.images_dir, raw["ImageID"])
        probe = np.unique(np.linspace(0, len(raw) - 1, min(SAMPLE_PATHS, len(raw))).astype(int)) if len(raw) else []
        hits_nested = sum(os.path.exists(nested.iloc[i]) for i in probe)
        hits_flat = sum(os.path.exists(flat.iloc[i]) for i in probe)
        return flat if hits_flat > hits_nested else nested
