"""The base of every dataset loader: files found, the common table built and checked, every
image decoded up front (:class:`CXRDataset`). One subclass per source format lives next to it.

Nothing is silently dropped, zero-filled or clipped: the only row removals are explicit
(``frontal_only=True``, ``on_bad_image="exclude"`` with a written report, MIMIC images without a
label row, logged with counts).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from cxrkit.data.datasets.fields import Built
from cxrkit.data.images import REORIENTED_COLUMNS, REORIENTED_REPORT
from cxrkit.data.images import (
    scan_images as _scan_image_files,  # __init__ has a parameter check_images
)
from cxrkit.data.labels import LABELS, check_labels
from cxrkit.data.tables import MISSING_SPELLINGS, DataError, bad_keys, lines_of, listing
from cxrkit.utils.paths import resolve

logger = logging.getLogger("cxrkit.datasets")  # one logger for every loader (the name users filter on)

SAMPLE_PATHS = 50  # image paths probed to tell a wrong image directory from a few missing files


class CXRDataset:
    """Base loader: resolves files, builds the common table, validates it and its images.

    Args:
        root: dataset folder (relative paths resolve from the project root).
        csv: label file; relative to ``root``; None = the format's default.
        images: image folder; relative to ``root``; None = the format's default.
        labels: label columns to keep, in this order; None = all the format has.
        check_images: decode every image up front.
        on_bad_image: ``"error"`` (raise) or ``"exclude"`` (drop and write
            ``report_dir/excluded_images.csv``).
        report_dir: where the exclusion report goes (required with ``"exclude"``), and
            ``reoriented_images.csv`` when images were decoded with their EXIF orientation.
        workers: threads for the image check.
        **format_options: the format's options (see each class's ``options``).

    Attributes:
        table: the common table.
        labels: its label columns.
        excluded: excluded rows (image, path, reason); empty unless ``on_bad_image="exclude"``.
        reoriented: rows whose image is stored rotated or mirrored and decoded upright
            (image, path, exif_orientation, applied); filled by the image check.

    Raises:
        DataError: bad files, columns, rows or images (see the module docstring).
    """

    name: ClassVar[str]
    #: Labels this format provides, in table order.
    all_labels: ClassVar[tuple[str, ...]] = LABELS
    #: Format options and their defaults.
    options: ClassVar[dict[str, Any]] = {}
    #: Glob patterns (relative to root) tried in order for the default CSV.
    default_csv: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        root: str | os.PathLike,
        csv: str | os.PathLike | None = None,
        images: str | os.PathLike | None = None,
        labels: Sequence[str] | None = None,
        check_images: bool = True,
        on_bad_image: str = "error",
        report_dir: str | os.PathLike | None = None,
        workers: int | None = None,
        **format_options: Any,
    ) -> None:
        self.root = resolve(root).resolve()
        if not self.root.is_dir():
            raise DataError(f"{self.name}: dataset root {self.root} is not a directory")
        unknown = sorted(set(format_options) - set(self.options))
        if unknown:
            raise DataError(
                f"{self.name}: unknown option(s) {unknown}; accepted: {sorted(self.options)}"
            )
        self.format_options: dict[str, Any] = {**self.options, **format_options}
        if on_bad_image not in ("error", "exclude"):
            raise DataError(f"on_bad_image must be 'error' or 'exclude', got {on_bad_image!r}")
        if on_bad_image == "exclude" and report_dir is None:
            raise DataError("on_bad_image='exclude' requires report_dir for excluded_images.csv")
        self.labels: list[str] = self._select_labels(labels)
        self.csv: Path = self._find_csv(csv)
        self.images_dir: Path = (
            self.root / images if images is not None else self._default_images()
        ).resolve()

        built = self._build()
        self._check_table(built)
        table = built.table
        self.excluded = pd.DataFrame(columns=["image", "path", "reason"], dtype=object)
        self.reoriented = pd.DataFrame(columns=list(REORIENTED_COLUMNS), dtype=object)
        self.table_before_exclusion: pd.DataFrame | None = None
        if check_images:
            self._check_directory(table)
            bad, turned = _scan_image_files(table["path"].tolist(), workers=workers)
            if on_bad_image == "exclude":
                self.table_before_exclusion = table.reset_index(drop=True)
                table = self._exclude(table, bad, report_dir)  # type: ignore[arg-type]
            elif len(bad):
                items = [f"{p} ({r})" for p, r in zip(bad["path"], bad["reason"], strict=True)]
                raise DataError(
                    f"{self.name}: {len(bad)} of {len(table)} images are unusable: "
                    f"{listing(items)}; pass on_bad_image='exclude' and report_dir= to drop "
                    "them with a report"
                )
            self._record_reoriented(table, turned, report_dir)
        table = table.reset_index(drop=True)
        table.attrs.update(labels=list(self.labels), dataset=self.name, source=str(self.csv))
        self.table: pd.DataFrame = table
        if self.table_before_exclusion is not None:
            self.table_before_exclusion.attrs.update(table.attrs)
        else:
            self.table_before_exclusion = table

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, rows={len(self)}, labels={len(self.labels)})"

    # -- hooks

    def _build(self) -> Built:
        """Read and validate the source files into the common table."""
        raise NotImplementedError

    def _default_images(self) -> Path:
        return self.root

    def _csv_patterns(self) -> tuple[str, ...]:
        return self.default_csv

    # -- shared steps

    def _select_labels(self, labels: Sequence[str] | None) -> list[str]:
        if labels is None:
            return list(self.all_labels)
        try:
            chosen = check_labels(list(labels), where=f"{self.name} labels")
        except ValueError as exc:
            raise DataError(str(exc)) from exc
        absent = [lab for lab in chosen if lab not in self.all_labels]
        if absent:
            raise DataError(
                f"{self.name}: label(s) {absent} are not provided by this format; "
                f"available: {list(self.all_labels)}"
            )
        return chosen

    def _find_csv(self, csv: str | os.PathLike | None) -> Path:
        if csv is not None:
            path = self.root / csv
            if not path.is_file():
                raise DataError(f"{self.name}: CSV {path} does not exist")
            return path
        for pattern in self._csv_patterns():
            found = sorted(self.root.glob(pattern))
            if len(found) > 1:
                raise DataError(
                    f"{self.name}: several files match {pattern!r} in {self.root}: "
                    f"{[f.name for f in found]}; pass csv= to choose one"
                )
            if found:
                return found[0]
        raise DataError(
            f"{self.name}: no CSV found in {self.root} (looked for {list(self._csv_patterns())}); "
            "pass csv="
        )

    def _find_optional(self, *names: str) -> Path | None:
        return next((self.root / n for n in names if (self.root / n).is_file()), None)

    def _check_table(self, built: Built) -> None:
        """Each image once, with a name and a patient id (naming the source lines)."""
        t, lines, file = built
        empty, repeated = bad_keys(t["image"])
        if empty.any():
            raise DataError(f"{file}: empty image name at {lines_of(empty, lines)}")
        if repeated:
            dup = np.zeros(len(t), dtype=bool)
            dup[[pos for rows in repeated.values() for pos in rows]] = True
            raise DataError(
                f"{file}: duplicate image name(s) {listing([repr(n) for n in repeated])} "
                f"at {lines_of(dup, lines)}"
            )
        pid = t["patient_id"]
        no_pid = pid.isna() | pid.astype(str).str.strip().isin(MISSING_SPELLINGS)
        if no_pid.any():
            raise DataError(f"{file}: missing patient id at {lines_of(no_pid, lines)}")

    def _check_directory(self, table: pd.DataFrame) -> None:
        """One clear error when the image folder does not match the CSV at all."""
        if table.empty:
            return
        idx = np.unique(np.linspace(0, len(table) - 1, min(SAMPLE_PATHS, len(table))).astype(int))
        sample = table["path"].iloc[idx]
        if not any(os.path.exists(p) for p in sample):
            raise DataError(
                f"{self.name}: image directory {self.images_dir} does not match {self.csv}: none "
                f"of {len(sample)} sampled image files exist (e.g. expected {sample.iloc[0]})"
            )

    def _record_reoriented(
        self, table: pd.DataFrame, turned: pd.DataFrame, report_dir: str | os.PathLike | None
    ) -> None:
        """Keep the rows whose EXIF orientation decoding applies, log them, and write
        ``report_dir/reoriented_images.csv`` (when there are any; one left by an earlier load
        into the same folder is removed otherwise, so the folder describes this load)."""
        info = turned.set_index("path")
        kept = table.loc[table["path"].isin(info.index), ["image", "path"]].astype(object)
        kept["exif_orientation"] = kept["path"].map(info["exif_orientation"]).astype(int)
        kept["applied"] = kept["path"].map(info["applied"])
        self.reoriented = kept.reset_index(drop=True)
        out = resolve(report_dir) / REORIENTED_REPORT if report_dir is not None else None
        if self.reoriented.empty:
            if out is not None:
                out.unlink(missing_ok=True)
            return
        logger.warning("%s: %d image(s) stored rotated or mirrored, decoded upright with their EXIF "
                       "orientation, e.g. %s (%s)%s", self.name, len(kept), kept["image"].iloc[0],
                       kept["applied"].iloc[0], f"; list: {out}" if out is not None else "")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.reoriented.to_csv(out, index=False)

    def _exclude(
        self, table: pd.DataFrame, bad: pd.DataFrame, report_dir: str | os.PathLike
    ) -> pd.DataFrame:
        """Drop the bad images' rows; always write the (possibly empty) report."""
        reason = dict(zip(bad["path"], bad["reason"], strict=True))
        drop = table["path"].isin(reason)
        if drop.all():
            raise DataError(
                f"{self.name}: every image is unusable, e.g. {bad['path'].iloc[0]} "
                f"({bad['reason'].iloc[0]})"
            )
        excluded = table.loc[drop, ["image", "path"]].astype(object)
        excluded["reason"] = excluded["path"].map(reason)
        self.excluded = excluded.reset_index(drop=True)
        out = resolve(report_dir) / "excluded_images.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        self.excluded.to_csv(out, index=False)
        if len(excluded):
            logger.warning(
                "%s: excluded %d unusable image(s); report: %s", self.name, len(excluded), out
            )
        return table.loc[~drop]
