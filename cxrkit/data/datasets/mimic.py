"""MIMIC-CXR-JPG 2.0.0: per-study labels joined to per-image metadata, one row per dicom."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from cxrkit.data.datasets.base import CXRDataset, logger
from cxrkit.data.datasets.fields import (
    Built,
    assemble,
    blank_to_nan,
    join_paths,
    parse_labels,
    view_column,
)
from cxrkit.data.tables import DataError, lines_of, listing, read_raw_csv, require_columns


class MIMICCXRJPG(CXRDataset):
    """MIMIC-CXR-JPG 2.0.0: per-study labels joined to per-image metadata, one row per dicom.

    Files in root (``.csv.gz`` or ``.csv``): ``mimic-cxr-2.0.0-{chexpert|negbio}`` (labels,
    1/0/-1/blank), ``-metadata`` (``dicom_id, subject_id, study_id, ViewPosition``) and,
    optionally, ``-split`` (``official_split``: train/validate/test). Images at
    ``files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg`` under ``images``
    (default root). Images of studies without a label row are dropped with a warning (counted
    in ``quality["unlabelled_images"]``). Views: ``ViewPosition`` (upper case; ``frontal`` is PA
    and AP, ``lateral`` LATERAL, LL and XTABLE LATERAL).

    Options:
        labeler: ``"chexpert"`` (default) or ``"negbio"``.
        uncertain, blank: as for :class:`CheXpert`.
    """

    name = "mimic"
    options: ClassVar[dict[str, Any]] = {
        "labeler": "chexpert",
        "uncertain": "ignore",
        "blank": "zeros",
    }
    labelers: ClassVar[tuple[str, ...]] = ("chexpert", "negbio")
    #: ViewPosition values of MIMIC-CXR 2.0.0's metadata.
    view_values = ("PA", "AP", "LATERAL", "LL", "AP AXIAL", "AP LLD", "AP RLD", "PA LLD", "PA RLD", "LAO", "RAO",
                   "LPO", "SWIMMERS", "XTABLE LATERAL")
    official_test = "the split file's test rows (mimic-cxr-2.0.0-split.csv)"

    def _csv_patterns(self) -> tuple[str, ...]:
        labeler = self.format_options["labeler"]
        if labeler not in self.labelers:
            raise DataError(f"mimic: unknown labeler {labeler!r}; known: {list(self.labelers)}")
        return (f"mimic-cxr-2.0.0-{labeler}.csv.gz", f"mimic-cxr-2.0.0-{labeler}.csv")

    def _side_file(self, kind: str) -> Path | None:
        return self._find_optional(f"mimic-cxr-2.0.0-{kind}.csv.gz", f"mimic-cxr-2.0.0-{kind}.csv")

    @staticmethod
    def _check_ids(df: pd.DataFrame, columns: Sequence[str], file: Path) -> None:
        lines = pd.Series(df.index + 2)
        for col in columns:
            bad = ~df[col].str.fullmatch(r"\d+")
            if bad.any():
                raise DataError(
                    f"{file}: {col!r} must be digits, at {lines_of(bad, lines, df[col])}"
                )

    def _build(self) -> Built:
        keys = ["subject_id", "study_id"]
        raw, studies = self._studies(keys)
        meta_file = self._side_file("metadata")
        if meta_file is None:
            raise DataError(f"mimic: mimic-cxr-2.0.0-metadata.csv(.gz) not found in {self.root}")
        self.side_files.append(meta_file)
        meta = read_raw_csv(meta_file)
        require_columns(meta, ["dicom_id", *keys, "ViewPosition"], meta_file)
        self._check_ids(meta, keys, meta_file)
        meta["_line"] = meta.index + 2
        merged = meta.merge(studies, on=keys, how="left", indicator=True, validate="many_to_one")
        unlabeled = merged["_merge"] == "left_only"
        self.quality["unlabelled_images"] = int(unlabeled.sum())
        if unlabeled.any():
            logger.warning(
                "%s: dropped %d image(s) whose study has no row in %s, e.g. %s",
                self.name,
                int(unlabeled.sum()),
                self.csv.name,
                listing(list(merged.loc[unlabeled, "dicom_id"]), int(unlabeled.sum())),
            )
        imageless = ~raw.set_index(keys).index.isin(meta.set_index(keys).index)
        if imageless.any():
            logger.warning(
                "%s: %d labelled stud(ies) have no image in %s",
                self.name,
                int(imageless.sum()),
                meta_file.name,
            )
        merged = merged.loc[~unlabeled].reset_index(drop=True)
        return Built(self._table(merged, set(meta["dicom_id"]), meta_file), merged["_line"], meta_file)

    def _studies(self, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The label file as read (text) and its studies: ``keys`` and the parsed labels, one row
        per study (a study on several rows is refused)."""
        raw = read_raw_csv(self.csv)
        require_columns(raw, [*keys, *self.labels], self.csv)
        self._check_ids(raw, keys, self.csv)
        lines = pd.Series(raw.index + 2)
        dup = raw.duplicated(keys, keep=False)
        if dup.any():
            raise DataError(
                f"{self.csv}: duplicate (subject_id, study_id) at {lines_of(dup, lines)}"
            )
        y = parse_labels(
            raw,
            self.labels,
            self.csv,
            uncertain=self.format_options["uncertain"],
            blank=self.format_options["blank"],
        )
        return raw, pd.concat([raw[keys], y], axis=1)

    def _table(self, merged: pd.DataFrame, known: set[str], meta_file: Path) -> pd.DataFrame:
        """The common table of the labelled images (``merged``: metadata joined to the labels)."""
        sid = merged["subject_id"]
        image = (
            "files/p"
            + sid.str[:2]
            + "/p"
            + sid
            + "/s"
            + merged["study_id"]
            + "/"
            + merged["dicom_id"]
            + ".jpg"
        )
        extra = {}
        split = self._official_split(merged["dicom_id"], known, meta_file)
        if split is not None:
            extra["official_split"] = split
        return assemble(
            image,
            join_paths(self.images_dir, image),
            sid,
            merged["study_id"],
            view_column(merged["ViewPosition"]),
            extra,
            merged[self.labels],
        )

    def _official_split(
        self, dicom: pd.Series, known: set[str], meta_file: Path
    ) -> pd.Series | None:
        file = self._side_file("split")
        if file is None:
            return None
        self.side_files.append(file)
        split = read_raw_csv(file)
        require_columns(split, ["dicom_id", "split"], file)
        lines = pd.Series(split.index + 2)
        dup = split["dicom_id"].duplicated(keep=False)
        if dup.any():
            raise DataError(
                f"{file}: duplicate dicom_id at {lines_of(dup, lines, split['dicom_id'])}"
            )
        stray = ~split["dicom_id"].isin(known)
        if stray.any():
            raise DataError(
                f"{file}: dicom_id(s) not in {meta_file.name} at "
                f"{lines_of(stray, lines, split['dicom_id'])}"
            )
        return dicom.map(dict(zip(split["dicom_id"], blank_to_nan(split["split"]), strict=True)))
