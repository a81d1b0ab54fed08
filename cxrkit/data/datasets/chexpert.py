"""CheXpert (Stanford): ``train.csv`` / ``valid.csv`` with ``Path`` and labels 1/0/-1/blank."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from cxrkit.data.datasets.base import SAMPLE_PATHS, CXRDataset, logger
from cxrkit.data.datasets.fields import (
    Built,
    age_column,
    assemble,
    blank_to_nan,
    join_paths,
    parse_labels,
    view_column,
)
from cxrkit.data.tables import DataError, lines_of, read_raw_csv, require_columns
from cxrkit.data.views import with_category
from cxrkit.utils.params import ConfigError


class CheXpert(CXRDataset):
    """CheXpert (Stanford) ``train.csv`` / ``valid.csv``.

    ``Path`` like ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``, resolved
    against ``images`` (default root); a leading folder equal to the root's name or matching
    ``CheXpert-v1.0*`` is dropped when that is what makes the files exist. Labels 1/0/-1/blank.
    Views (:mod:`cxrkit.data.views`): ``AP/PA`` for frontal images, ``LATERAL`` for lateral ones;
    ``Frontal/Lateral`` decides (a frontal image whose ``AP/PA`` says ``LL``/``RL``, 17 in the
    real train.csv, is ``FRONTAL``, counted in ``quality["view_replaced"]``). An ``Age`` of 0 (3
    images of the real train.csv; CheXpert's patients are adults) is missing (NaN), counted in
    ``quality["age_zero"]``.

    Options:
        uncertain: -1 policy, ``"ones"``, ``"zeros"``, ``"ignore"`` (default; NaN, masked) or a
            dict ``{label: policy, "default": policy}`` (missing default = ``"ignore"``).
        blank: ``"zeros"`` (default; unmentioned = negative) or ``"nan"``.
        frontal_only: keep only ``Frontal/Lateral == "Frontal"`` rows (before the labels are
            parsed; ``views: frontal`` keeps the same rows after, with counts).
        include_valid: also read ``valid.csv`` next to the CSV, CheXpert's official evaluation
            set: ``official_split`` is ``"train"`` for the CSV's rows and ``"test"`` for
            valid.csv's (what ``test_split: official`` holds out).
    """

    name = "chexpert"
    options: ClassVar[dict[str, Any]] = {
        "uncertain": "ignore",
        "blank": "zeros",
        "frontal_only": False,
        "include_valid": False,
    }
    default_csv = ("train.csv", "CheXpert-v1.0*/train.csv")
    view_values = ("PA", "AP", "LL", "RL", "LATERAL", "FRONTAL")
    official_test = "valid.csv (with include_valid: true)"

    @classmethod
    def check_options(cls, options: dict[str, Any], where: str = "dataset_options") -> None:
        """Also: ``frontal_only`` and ``include_valid`` are booleans; not ``frontal_only`` with ``views``."""
        super().check_options(options, where)
        for key in ("frontal_only", "include_valid"):
            if key in options and not isinstance(options[key], bool):
                raise ConfigError(f"{where}.{key}: need true or false, got {options[key]!r}")
        if options.get("frontal_only") and options.get("views") is not None:
            raise ConfigError(f"{where}.frontal_only: give either frontal_only or views (views: frontal keeps the "
                              "same images)")

    @classmethod
    def official_test_problem(cls, options: dict[str, Any]) -> str | None:
        if not options.get("include_valid"):
            return "chexpert's official test set is valid.csv: set dataset_options include_valid: true to read it"
        return None

    def _build(self) -> Built:
        files = {"train": self.csv}
        if self.format_options["include_valid"]:
            valid = self.csv.with_name("valid.csv")
            if not valid.is_file():
                raise DataError(f"{self.name}: include_valid: no valid.csv next to {self.csv}")
            files["test"] = valid
            self.side_files.append(valid)
        parts = [self._read(file) for file in files.values()]
        table = pd.concat([t for t, _, _ in parts], ignore_index=True)
        if len(files) > 1:
            table.insert(table.columns.get_loc(self.labels[0]), "official_split",
                         np.repeat(list(files), [len(t) for t, _, _ in parts]).astype(object))
        for key in ("age_zero", "view_replaced"):
            self.quality[key] = sum(q.get(key, 0) for _, _, q in parts)
        if self.quality["age_zero"]:
            logger.info("%s: %d image(s) with Age 0 read as a missing age (NaN)", self.name, self.quality["age_zero"])
        return Built(table, pd.concat([ln for _, ln, _ in parts], ignore_index=True), self.csv)

    def _read(self, file: Path) -> tuple[pd.DataFrame, pd.Series, dict[str, int]]:
        """One CSV's table, its rows' lines, and its counts (ages of 0, views replaced)."""
        quality: dict[str, int] = {}
        raw = read_raw_csv(file)
        require_columns(raw, ["Path", *self.labels], file)
        if self.format_options["frontal_only"]:
            require_columns(raw, ["Frontal/Lateral"], file)
            raw = raw[raw["Frontal/Lateral"].str.strip() == "Frontal"]
        lines = pd.Series(raw.index + 2)
        y = parse_labels(raw, self.labels, file, uncertain=self.format_options["uncertain"],
                         blank=self.format_options["blank"])
        image = raw["Path"]
        ids = image.str.replace("\\", "/", regex=False).str.extract(r"(patient\d+)/(study\d+)/")
        if ids[0].isna().any():
            raise DataError(f"{file}: no 'patientNNNNN/studyN/' in 'Path' at {lines_of(ids[0].isna(), lines, image)}")
        view = view_column(raw["AP/PA"]) if "AP/PA" in raw else pd.Series(np.nan, index=raw.index, dtype=object)
        if "Frontal/Lateral" in raw:
            side = raw["Frontal/Lateral"].str.strip()
            view, quality["view_replaced"] = with_category(view, side == "Frontal", side == "Lateral")
        meta = {}
        if "Sex" in raw:
            meta["sex"] = blank_to_nan(raw["Sex"])
        if "Age" in raw:
            age = age_column(raw["Age"], "Age", file, lines)
            quality["age_zero"] = int((age == 0).sum())
            meta["age"] = age.where(age != 0)
        return assemble(image, self._paths(image), ids[0], ids[1], view, meta, y), lines, quality

    def _paths(self, image: pd.Series) -> pd.Series:
        """Join to images_dir, dropping a leading dataset folder if that is what exists."""
        rel = image.str.replace("\\", "/", regex=False)
        parts = rel.str.partition("/")
        head, tail = parts[0], parts[2]
        strippable = ((head == self.images_dir.name) | head.str.match(r"CheXpert-v1\.0")) & (
            tail != ""
        )
        direct = join_paths(self.images_dir, rel)
        if not strippable.any():
            return direct
        stripped = join_paths(self.images_dir, tail)
        probe = np.flatnonzero(strippable.to_numpy())[:SAMPLE_PATHS]
        hits_direct = sum(os.path.exists(direct.iloc[i]) for i in probe)
        hits_stripped = sum(os.path.exists(stripped.iloc[i]) for i in probe)
        return stripped.where(strippable, direct) if hits_stripped > hits_direct else direct
