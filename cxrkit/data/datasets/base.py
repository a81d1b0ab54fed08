"""The base of every dataset loader: files found, the common table built and checked, every
image decoded up front (:class:`CXRDataset`). One subclass per source format lives next to it.

Nothing is silently dropped, zero-filled or clipped: the only row removals are explicit
(``views``, ``frontal_only=True``, ``on_bad_image="exclude"`` with a written report, MIMIC images
without a label row), logged and counted in ``quality``.
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
from cxrkit.data.datasets.known import refuse_known_bad, with_known_reasons
from cxrkit.data.images import (
    CONVERTED_TO_GREY,
    REORIENTED_COLUMNS,
    REORIENTED_REPORT,
    ImagePolicy,
    decoding_counts,
)
from cxrkit.data.images import (
    scan_images as _scan_image_files,  # __init__ has a parameter check_images
)
from cxrkit.data.images.checked import scan_images_once
from cxrkit.data.labels import LABELS, check_labels
from cxrkit.data.tables import MISSING_SPELLINGS, DataError, bad_keys, lines_of, listing
from cxrkit.data.views import FRONTAL_VIEWS, LATERAL_VIEWS, parse_views, select_views
from cxrkit.utils.paths import resolve

logger = logging.getLogger("cxrkit.datasets")  # one logger for every loader (the name users filter on)

SAMPLE_PATHS = 50  # image paths probed to tell a wrong image directory from a few missing files
#: Options every format takes, with their defaults: ``views`` (:mod:`cxrkit.data.views`; None = all).
COMMON_OPTIONS: dict[str, Any] = {"views": None}


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
        image_policy: how images of more than 8 bits (DICOM, 16-bit PNG) are decoded
            (:class:`cxrkit.data.images.ImagePolicy` or a mapping of its options; None = defaults).
        check_record: folder where the image check is recorded, and found again instead of
            decoding when the files have not changed (:mod:`cxrkit.data.images.checked`); None:
            always decode.
        **format_options: the format's options (see each class's ``options``).

    Attributes:
        table: the common table.
        labels: its label columns.
        quality: what the loader kept, dropped or set missing, by step (``views``: the views kept
            and the images kept and dropped per view; format steps such as CheXpert's ages of 0
            set missing; ``converted_to_grey``: images stored in colour, with a palette or with
            alpha, decoded to grey levels, when there are any), for the data-quality report.
        side_files: label files read besides ``csv`` (split lists, metadata, a test file).
        excluded: excluded rows (image, path, reason); empty unless ``on_bad_image="exclude"``.
        reoriented: rows whose image is stored rotated or mirrored and decoded upright
            (image, path, exif_orientation, applied); filled by the image check.
        decoding: how many of the kept images are decoded each way (e.g. ``{"PNG 8-bit": 3}``);
            filled by the image check.
        check_recorded: the record the image check was read from (``check_record``), None when
            the images were decoded (or not checked).

    Raises:
        DataError: bad files, columns, rows or images (see the module docstring).
    """

    name: ClassVar[str]
    #: Labels this format provides, in table order.
    all_labels: ClassVar[tuple[str, ...]] = LABELS
    #: Format options and their defaults (every format also takes :data:`COMMON_OPTIONS`).
    options: ClassVar[dict[str, Any]] = {}
    #: Glob patterns (relative to root) tried in order for the default CSV.
    default_csv: ClassVar[tuple[str, ...]] = ()
    #: Values the format's ``view`` column can hold (:mod:`cxrkit.data.views`); empty: it records
    #: no view, and a ``views`` option is refused.
    view_values: ClassVar[tuple[str, ...]] = (*FRONTAL_VIEWS, *LATERAL_VIEWS)
    #: Where the format's official test images are (``official_split == "test"``), for
    #: ``test_split: official``; None: it has none.
    official_test: ClassVar[str | None] = None
    #: Image names the public release is known to hold unreadable -> why (refused, or excluded
    #: with ``on_bad_image="exclude"``, when the image check finds them unusable).
    known_bad: ClassVar[dict[str, str]] = {}

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
        image_policy: ImagePolicy | dict[str, Any] | None = None,
        check_record: str | os.PathLike | None = None,
        **format_options: Any,
    ) -> None:
        self.root = resolve(root).resolve()
        if not self.root.is_dir():
            raise DataError(f"{self.name}: dataset root {self.root} is not a directory")
        defaults = self.option_defaults()
        unknown = sorted(set(format_options) - set(defaults))
        if unknown:
            raise DataError(f"{self.name}: unknown option(s) {unknown}; accepted: {sorted(defaults)}")
        self.check_options(format_options, where=self.name)
        self.format_options: dict[str, Any] = {**defaults, **format_options}
        if on_bad_image not in ("error", "exclude"):
            raise DataError(f"on_bad_image must be 'error' or 'exclude', got {on_bad_image!r}")
        if on_bad_image == "exclude" and report_dir is None:
            raise DataError("on_bad_image='exclude' requires report_dir for excluded_images.csv")
        self.quality: dict[str, Any] = {}
        self.labels: list[str] = self._select_labels(labels)
        self.csv: Path = self._find_csv(csv)
        self.side_files: list[Path] = []
        self.images_dir: Path = (
            self.root / images if images is not None else self._default_images()
        ).resolve()

        built = self._build()
        self._check_table(built)
        table = self._select_views(built)
        self.excluded = pd.DataFrame(columns=["image", "path", "reason"], dtype=object)
        self.reoriented = pd.DataFrame(columns=list(REORIENTED_COLUMNS), dtype=object)
        self.table_before_exclusion: pd.DataFrame | None = None
        self.image_policy = ImagePolicy.parse(image_policy)
        self.decoding: dict[str, int] = {}
        self.check_recorded: Path | None = None
        if check_images:
            table = self._check_images(table, on_bad_image, report_dir, workers, check_record)
        table = table.reset_index(drop=True)
        table.attrs.update(labels=list(self.labels), dataset=self.name, source=str(self.csv))
        self.table: pd.DataFrame = table
        if self.table_before_exclusion is not None:
            self.table_before_exclusion.attrs.update(table.attrs)
        else:
            self.table_before_exclusion = table

    def _check_images(self, table: pd.DataFrame, on_bad_image: str, report_dir: str | os.PathLike | None,
                      workers: int | None, check_record: str | os.PathLike | None = None) -> pd.DataFrame:
        """Decode every image up front (or read the check recorded in ``check_record``): refuse the
        unusable ones, or exclude them with a report."""
        self._check_directory(table)
        if on_bad_image == "error":
            refuse_known_bad(self.name, self.known_bad, table, workers, self.image_policy)
        scan, self.check_recorded = scan_images_once(table["path"].tolist(), check_record, workers=workers,
                                                     policy=self.image_policy, scan=_scan_image_files)
        bad, turned = scan.bad, scan.reoriented
        bad = with_known_reasons(self.known_bad, table, bad)
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
        self.decoding = decoding_counts(scan.decoded, table["path"])
        converted = {way: n for way, n in self.decoding.items() if way.endswith(CONVERTED_TO_GREY)}
        if converted:
            self.quality["converted_to_grey"] = sum(converted.values())
            logger.warning("%s: %d image(s) stored in colour, with a palette or with alpha, decoded to grey levels: %s",
                           self.name, self.quality["converted_to_grey"], converted)
        return table

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, rows={len(self)}, labels={len(self.labels)})"

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """Every option the format accepts with its default: :data:`COMMON_OPTIONS` and its own."""
        return {**COMMON_OPTIONS, **cls.options}

    @classmethod
    def check_options(cls, options: dict[str, Any], where: str = "dataset_options") -> None:
        """Check the values of format options (the keys are checked by
        :func:`cxrkit.data.datasets.check_dataset_options`) before any file is read.

        Raises:
            ConfigError: naming ``where.key`` (e.g. a ``views`` the format cannot honour).
        """
        if options.get("views") is not None:
            parse_views(options["views"], cls.name, cls.view_values, f"{where}.views")

    @classmethod
    def provided_labels(cls, options: dict[str, Any]) -> tuple[str, ...]:
        """The labels the format annotates with ``options`` (what ``labels`` may ask for), in table
        order, known before any file is read: :attr:`all_labels` (a merged dataset: its sources')."""
        return tuple(cls.all_labels)

    @classmethod
    def official_test_problem(cls, options: dict[str, Any]) -> str | None:
        """Why ``test_split: official`` cannot be honoured with ``options``, or None when it can."""
        if cls.official_test is None:
            return f"dataset {cls.name!r} has no official test split"
        return None

    @property
    def source_files(self) -> list[Path]:
        """Every label file the table was read from: ``csv`` and ``side_files``."""
        return [self.csv, *self.side_files]

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

    def _select_views(self, built: Built) -> pd.DataFrame:
        """The rows of the ``views`` option (all without one); counts in ``quality["views"]``.

        Raises:
            DataError: no image of the file records a view, or none has a view asked for.
        """
        table, _, file = built
        wanted = self.format_options.get("views")
        if wanted is None:
            return table
        keep = parse_views(wanted, self.name, self.view_values)
        if table["view"].isna().all():
            raise DataError(f"{file}: views {wanted!r} asked for, but no image of it records a view")
        mask, counts = select_views(table["view"], keep)
        if not mask.any():
            raise DataError(f"{self.name}: views {wanted!r} keep none of the {len(table)} images of {file} "
                            f"(their views: {counts['dropped_views']})")
        self.quality["views"] = counts
        logger.info("%s: views %s kept %d of %d images, dropped %d (%s)", self.name, counts["views"],
                    counts["kept"], len(table), counts["dropped"], counts["dropped_views"])
        return table.loc[mask]

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
