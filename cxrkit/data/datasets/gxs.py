"""Grand X-Ray Slam (Division B) and the authors' format; the phantom writes it too."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from cxrkit.data.datasets.base import CXRDataset, logger
from cxrkit.data.datasets.fields import (
    Built,
    age_column,
    assemble,
    blank_to_nan,
    join_paths,
    parse_labels,
    view_column,
)
from cxrkit.data.tables import read_raw_csv, require_columns
from cxrkit.data.views import with_category


class GrandXRaySlam(CXRDataset):
    """Grand X-Ray Slam (Division B) / authors' format, also written by the phantom.

    ``train.csv`` with ``Image_name`` and the 14 labels (0/1), optional ``Patient_ID, Study,
    Sex, Age, ViewCategory, ViewPosition``; images in ``root/images/`` or ``root``. Without
    ``Patient_ID`` (warned) or ``Study``, the image name stands in for the missing id. Views:
    ``ViewPosition`` upper case; where ``ViewCategory`` (Frontal/Lateral) is given and the position
    is blank or of the other category, ``FRONTAL``/``LATERAL`` (counted in
    ``quality["view_replaced"]``).

    Options:
        uncertain: None (default: -1 and blank are errors) or a CheXpert uncertainty policy;
            when given, blank cells follow ``blank`` (default ``"zeros"``).
        blank: None or a blank policy (``"zeros"``/``"nan"``).
    """

    name = "gxs"
    options: ClassVar[dict[str, Any]] = {"uncertain": None, "blank": None}
    default_csv = ("train.csv",)

    def _default_images(self) -> Path:
        sub = self.root / "images"
        return sub if sub.is_dir() else self.root

    @staticmethod
    def patient_ids(raw: pd.DataFrame) -> pd.Series:
        """The patient id of each row of a ``train.csv`` read as text: ``Patient_ID`` (stripped,
        blank = missing) or, without that column, the image name (each image its own patient)."""
        return blank_to_nan(raw["Patient_ID"]) if "Patient_ID" in raw else raw["Image_name"]

    def _build(self) -> Built:
        raw = read_raw_csv(self.csv)
        require_columns(raw, ["Image_name", *self.labels], self.csv)
        lines = pd.Series(raw.index + 2)
        uncertain, blank = self.format_options["uncertain"], self.format_options["blank"]
        if uncertain is not None and blank is None:
            blank = "zeros"
        y = parse_labels(raw, self.labels, self.csv, uncertain=uncertain, blank=blank)
        image = raw["Image_name"]
        if "Patient_ID" not in raw:
            logger.warning(
                "%s: no Patient_ID column; each image is its own patient, so splits cannot "
                "group a patient's images",
                self.csv,
            )
        patient = self.patient_ids(raw)
        study = blank_to_nan(raw["Study"]) if "Study" in raw else image
        view = (
            view_column(raw["ViewPosition"])
            if "ViewPosition" in raw
            else pd.Series(np.nan, index=raw.index, dtype=object)
        )
        if "ViewCategory" in raw:
            side = raw["ViewCategory"].str.strip().str.lower()
            view, self.quality["view_replaced"] = with_category(view, side == "frontal", side == "lateral")
        meta = {}
        if "Sex" in raw:
            meta["sex"] = blank_to_nan(raw["Sex"])
        if "Age" in raw:
            meta["age"] = age_column(raw["Age"], "Age", self.csv, lines)
        path = join_paths(self.images_dir, image)
        return Built(assemble(image, path, patient, study, view, meta, y), lines, self.csv)
