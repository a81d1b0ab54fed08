"""Dataset loaders: one class per real chest X-ray format, one common table.

Every loader reads its source files, validates them *before* any long work and returns the
same table (modelled on torchxrayvision): ``image`` (id/relative path as in the source CSV),
``path`` (absolute image path), ``patient_id``, ``study``, ``view``, optional metadata
(``sex``, ``age``, ``official_split``) and one float64 column per label in the common
vocabulary (:mod:`cxrkit.labels`) holding 1.0, 0.0 or NaN (unknown / masked).

Bad input raises :class:`DataError` naming the file, rows (1-based CSV line numbers, header =
line 1) and keys. Nothing is silently dropped, zero-filled or clipped: the only row removals
are explicit (``frontal_only=True``, ``on_bad_image="exclude"`` with a written report, MIMIC
images without a label row, logged with counts).

Formats (:data:`DATASETS`): ``gxs`` (Grand X-Ray Slam and the phantom), ``chexpert``, ``nih``
(ChestX-ray14) and ``mimic`` (MIMIC-CXR-JPG).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
from PIL import ExifTags, Image, ImageFile, ImageOps

from cxrkit.labels import LABELS, NIH_LABELS, NIH_SYNONYMS, check_labels
from cxrkit.paths import resolve

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "CXRDataset",
    "CheXpert",
    "DataError",
    "GrandXRaySlam",
    "MIMICCXRJPG",
    "NIHChestXray14",
    "check_images",
    "create_dataset",
    "fingerprint",
    "label_matrix",
    "load_image",
    "read_keyed_csv",
    "scan_images",
]

#: Columns every table starts with, in this order.
BASE_COLUMNS: tuple[str, ...] = ("image", "path", "patient_id", "study", "view")

#: Uncertainty policies for -1 labels: value each maps to.
UNCERTAIN_POLICIES: dict[str, float] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}
#: Blank-cell policies: value each maps to.
BLANK_POLICIES: dict[str, float] = {"zeros": 0.0, "nan": np.nan}

_MAX_LISTED = 10  # offending rows / files named in an error message
_SAMPLE = 50  # image paths probed to tell a wrong image directory from a few missing files
_UNSUPPORTED_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # would clip in convert("L")

#: EXIF orientations that :func:`PIL.ImageOps.exif_transpose` applies (1 = stored upright), with
#: what it does to the stored pixels.
EXIF_ORIENTATIONS: dict[int, str] = {
    2: "mirrored left-right", 3: "rotated 180 degrees", 4: "mirrored top-bottom",
    5: "transposed (mirrored about the main diagonal)", 6: "rotated 90 degrees clockwise",
    7: "transversed (mirrored about the anti-diagonal)", 8: "rotated 90 degrees counter-clockwise",
}
#: Report of the images decoded with their EXIF orientation, written to a dataset's report_dir.
REORIENTED_REPORT = "reoriented_images.csv"
REORIENTED_COLUMNS = ("image", "path", "exif_orientation", "applied")
#: Version of :func:`load_image`'s output; derived data (the uint8 cache) is keyed on it.
#: 2: the EXIF orientation is applied.
DECODE_VERSION = 2


#: Cell values read as a missing id (pandas' NA spellings; ids are read as literal strings).
MISSING_SPELLINGS = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "n/a", "null", "NULL", "None", "none",
                               "<NA>", "#N/A", "-nan", "-NaN"})


class DataError(ValueError):
    """Bad dataset input: a file, column, row or image that cannot be used as given."""


# ----------------------------------------------------------------------------- images


def _guard_truncated_flag() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code); truncated images "
            "would be decoded as partly grey instead of failing. Set it back to False."
        )


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation :func:`PIL.ImageOps.exif_transpose` would apply, or None (upright)."""
    value = img.getexif().get(ExifTags.Base.Orientation)
    return value if value in EXIF_ORIENTATIONS else None


def _check_one(path: str) -> tuple[str | None, int | None]:
    """``(reason path is unusable or None when it decodes fully, EXIF orientation to apply or None)``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing", None
    except OSError as exc:
        return f"unreadable: {exc}", None
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file", None
    if st.st_size == 0:
        return "empty file (0 bytes)", None
    try:
        with Image.open(path) as img:
            if img.mode in _UNSUPPORTED_MODES:
                return f"unsupported mode {img.mode} (high bit depth; convert to 8-bit)", None
            if img.format == "JPEG":
                img.draft("L", (64, 64))
            img.load()
            return None, _orientation(img)
    except Exception as exc:  # noqa: BLE001 - every decoder failure is a reason, not a crash
        msg = str(exc)
        return ("truncated" if "truncated" in msg.lower() else f"cannot decode: {msg}"), None


def _check_batch(paths: list[str]) -> list[tuple[str | None, int | None]]:
    return [_check_one(p) for p in paths]


class ImageScan(NamedTuple):
    """What :func:`scan_images` found."""

    bad: pd.DataFrame  # path, reason: the unusable images
    reoriented: pd.DataFrame  # path, exif_orientation, applied: images decoded with their EXIF orientation


def scan_images(
    paths: Sequence[str], workers: int | None = None, progress: bool = False
) -> ImageScan:
    """Open and fully decode every image, in parallel threads (PIL releases the GIL).

    JPEGs are decoded at reduced DCT scale (``draft``), which still reads every byte, so
    truncation is caught cheaply. Each good image's EXIF orientation is read: :func:`load_image`
    applies it (:func:`PIL.ImageOps.exif_transpose`), and the scan lists where it does.

    Args:
        paths: image file paths.
        workers: threads; None = ThreadPoolExecutor's default.
        progress: show a tqdm bar.

    Returns:
        ``bad``: the unusable images, columns ``path`` and ``reason`` ('missing', 'empty file
        (0 bytes)', 'truncated', 'cannot decode: <PIL message>', ...); ``reoriented``: the good
        images stored rotated or mirrored, columns ``path``, ``exif_orientation`` (2..8) and
        ``applied`` (what decoding does, e.g. 'rotated 90 degrees clockwise'). Both in input
        order, empty when there are none.

    Raises:
        DataError: when PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set.
    """
    _guard_truncated_flag()
    paths = [str(p) for p in paths]
    size = max(1, min(256, len(paths) // 64 or 1))
    batches = [paths[i : i + size] for i in range(0, len(paths), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_check_batch, batches)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(batches), desc="checking images", unit="batch")
        found = [r for batch in results for r in batch]
    bad = [(p, r) for p, (r, _) in zip(paths, found, strict=True) if r is not None]
    turned = [(p, o, EXIF_ORIENTATIONS[o]) for p, (_, o) in zip(paths, found, strict=True) if o is not None]
    return ImageScan(pd.DataFrame(bad, columns=["path", "reason"], dtype=object),
                     pd.DataFrame(turned, columns=["path", "exif_orientation", "applied"]).astype(
                         {"path": object, "exif_orientation": int, "applied": object}))


def check_images(
    paths: Sequence[str], workers: int | None = None, progress: bool = False
) -> pd.DataFrame:
    """The unusable images only (``scan_images(...).bad``): columns ``path`` and ``reason``.

    Raises:
        DataError: when PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set.
    """
    return scan_images(paths, workers=workers, progress=progress).bad


_scan_image_files = scan_images  # CXRDataset.__init__ has a parameter named check_images


def load_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Decode an image as (H, W) uint8 grayscale, upright, resized to (size, size) when given.

    An EXIF orientation (a JPEG stored sideways or mirrored, :data:`EXIF_ORIENTATIONS`) is
    applied with :func:`PIL.ImageOps.exif_transpose`; :func:`scan_images` lists such images.

    Raises:
        DataError: naming the file when it is missing, truncated, undecodable or high bit depth.
    """
    _guard_truncated_flag()
    try:
        with Image.open(path) as img:
            if img.mode in _UNSUPPORTED_MODES:
                raise DataError(
                    f"{path}: unsupported mode {img.mode} (high bit depth; convert to 8-bit)"
                )
            if size is not None and img.format == "JPEG":
                img.draft("L", (size, size))
            ImageOps.exif_transpose(img, in_place=True)
            img = img.convert("L")
            if size is not None:
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure names the file
        raise DataError(f"cannot read image {path}: {exc}") from exc


# ----------------------------------------------------------------------------- tables


def label_matrix(table: pd.DataFrame, labels: Sequence[str] | None = None) -> np.ndarray:
    """(N, L) float64 label matrix with NaN for unknown; columns ``labels`` or ``attrs['labels']``."""
    labels = list(labels) if labels is not None else table.attrs.get("labels")
    if labels is None:
        raise DataError("table has no attrs['labels']; pass labels= explicitly")
    return table[labels].to_numpy(dtype=np.float64)


def fingerprint(table: pd.DataFrame) -> str:
    """Short sha256 hex (16 chars) of image ids, patient ids and labels, in row order."""
    labels = table.attrs["labels"]
    code = {1.0: "1", 0.0: "0"}
    parts = [table["image"].astype(str), table["patient_id"].astype(str)]
    parts += [table[lab].map(code).fillna("").astype(str) for lab in labels]
    rows = parts[0].str.cat(parts[1:], sep="\x1f")
    h = hashlib.sha256("\x1f".join(labels).encode())
    h.update("\n".join(rows.tolist()).encode())
    return h.hexdigest()[:16]


def _listing(items: Sequence[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({total} in total)" if total > _MAX_LISTED else "")


def _lines_of(
    mask: pd.Series | np.ndarray, lines: pd.Series, values: pd.Series | None = None
) -> str:
    """'line 5: 'x', line 9: 'y', ...' for the rows where ``mask`` is true."""
    mask = np.asarray(mask, dtype=bool)
    sel = np.flatnonzero(mask)
    items = [
        f"line {lines.iloc[i]}" + (f": {values.iloc[i]!r}" if values is not None else "")
        for i in sel[:_MAX_LISTED]
    ]
    return _listing(items, len(sel))


def _read_csv(path: Path) -> pd.DataFrame:
    """Every cell as a raw string (blank = ''), index 0..n-1 (CSV line = index + 2)."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return df.reset_index(drop=True)


def check_keys(keys: pd.Series, file: str | os.PathLike, column: str) -> None:
    """Refuse empty or repeated keys (each row of ``file`` must name a different one).

    Args:
        keys: the key column as text, index 0..n-1 (CSV line = index + 2).
        file: the file named in the message.
        column: the key column's name.

    Raises:
        DataError: naming the file, the column, the repeated keys and their CSV lines.
    """
    keys = keys.reset_index(drop=True)
    lines = pd.Series(keys.index + 2)
    empty = keys.isna() | (keys.astype(str).str.strip() == "")
    if empty.any():
        raise DataError(f"{file}: empty {column!r} at {_lines_of(empty, lines)}")
    dup = keys.duplicated(keep=False)
    if dup.any():
        where: dict[str, list[str]] = {}
        for key, line in zip(keys[dup], lines[dup], strict=True):
            where.setdefault(key, []).append(str(line))
        items = [f"{k!r} on lines {', '.join(v[:-1])} and {v[-1]}" for k, v in where.items()]
        raise DataError(f"{file}: {column!r} is not unique: {_listing(items)}")


def read_keyed_csv(path: str | os.PathLike, key: str, *, text: Sequence[str] = (),
                   what: str = "table") -> pd.DataFrame:
    """Read back a table the kit wrote (or a dataset's CSV) with one row per ``key``.

    The ``key`` column and the ``text`` columns present are read as literal text (no NA
    conversion, no numbers: ``000700`` stays ``000700``, ``NA`` stays ``NA``); every other
    column is parsed by pandas as usual (numbers, blank = NaN).

    Args:
        path: the CSV file.
        key: the identifier column; every row must hold a different, non-empty one.
        text: other identifier columns kept as text when present (e.g. ``Patient_ID``).
        what: what the file is, for the missing-file message.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: the file cannot be parsed, has no ``key`` column, or a key is empty or on
            several rows (naming the file, the keys and the CSV lines).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    wanted = {key, *text}
    try:
        table = pd.read_csv(path)
        ids = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, usecols=lambda c: c in wanted)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if key not in table.columns:
        raise DataError(f"{path}: no {key!r} column; the file has {list(table.columns)}")
    for col in ids.columns:
        table[col] = ids[col].to_numpy()
    check_keys(table[key], path, key)
    return table


def _require_columns(df: pd.DataFrame, required: Sequence[str], file: Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if not missing:
        return
    extra = [c for c in df.columns if c not in required]
    hints = []
    for col in missing:
        close = difflib.get_close_matches(col, extra, n=1, cutoff=0.75)
        hints.append(
            f"{col!r}" + (f" (found {close[0]!r}: did you mean {col!r}?)" if close else "")
        )
    raise DataError(
        f"{file}: missing required column(s) {', '.join(hints)}; the file has {list(df.columns)}"
    )


def _blank_to_nan(s: pd.Series) -> pd.Series:
    s = s.str.strip()
    return s.where(s != "")


def _view(s: pd.Series) -> pd.Series:
    return _blank_to_nan(s).str.upper()


def _age(s: pd.Series, column: str, file: Path, lines: pd.Series) -> pd.Series:
    text = _blank_to_nan(s)
    num = pd.to_numeric(text, errors="coerce")
    bad = text.notna() & num.isna()
    if bad.any():
        raise DataError(f"{file}: non-numeric {column!r} at {_lines_of(bad, lines, s)}")
    return num.astype(np.float64)


def _resolve_policy(policy: str | dict[str, str], labels: Sequence[str]) -> dict[str, str]:
    """Per-label uncertainty policy from a name or a {label: policy, 'default': policy} dict."""
    if isinstance(policy, str):
        per = dict.fromkeys(labels, policy)
    elif isinstance(policy, dict):
        unknown = [k for k in policy if k != "default" and k not in labels]
        if unknown:
            raise DataError(f"uncertain: keys {unknown} are not among the labels {list(labels)}")
        default = policy.get("default", "ignore")
        per = {lab: policy.get(lab, default) for lab in labels}
    else:
        raise DataError(f"uncertain must be a policy name or a dict, got {policy!r}")
    bad = sorted({p for p in per.values() if p not in UNCERTAIN_POLICIES})
    if bad:
        raise DataError(f"unknown uncertainty policy {bad}; known: {list(UNCERTAIN_POLICIES)}")
    return per


def _parse_labels(
    raw: pd.DataFrame,
    labels: Sequence[str],
    file: Path,
    *,
    uncertain: str | dict[str, str] | None,
    blank: str | None,
) -> pd.DataFrame:
    """Validate and map raw label strings to float64 1/0/NaN.

    Accepted values: 0 and 1; -1 only with an ``uncertain`` policy; blank only with a ``blank``
    policy. Every violation, in every column, is reported in one DataError.
    """
    per = _resolve_policy(uncertain, labels) if uncertain is not None else None
    if blank is not None and blank not in BLANK_POLICIES:
        raise DataError(f"unknown blank policy {blank!r}; known: {list(BLANK_POLICIES)}")
    lines = pd.Series(raw.index + 2)
    accepted = {0.0, 1.0} | ({-1.0} if per is not None else set())
    accepted_text = "0, 1" + (", -1" if per is not None else "") + (", blank" if blank else "")
    out: dict[str, np.ndarray] = {}
    problems = []
    for lab in labels:
        text = raw[lab].str.strip()
        is_blank = (text == "").to_numpy()
        num = pd.to_numeric(text.where(~is_blank), errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isin(num, list(accepted)) & ~(is_blank & (blank is not None))
        if bad.any():
            problems.append(f"column {lab!r}: {_lines_of(bad, lines, raw[lab])}")
            continue
        vals = num.copy()
        if per is not None:
            vals[num == -1.0] = UNCERTAIN_POLICIES[per[lab]]
        if blank is not None:
            vals[is_blank] = BLANK_POLICIES[blank]
        out[lab] = vals
    if problems:
        raise DataError(
            f"{file}: invalid label values (accepted: {accepted_text}) in " + "; ".join(problems)
        )
    return pd.DataFrame(out, index=raw.index)


def _assemble(
    image: pd.Series,
    path: pd.Series,
    patient_id: pd.Series,
    study: pd.Series,
    view: pd.Series,
    meta: dict[str, pd.Series],
    labels: pd.DataFrame,
) -> pd.DataFrame:
    cols: dict[str, Any] = {
        "image": image.to_numpy(),
        "path": path.to_numpy(),
        "patient_id": patient_id.to_numpy(),
        "study": study.to_numpy(),
        "view": view.to_numpy(),
    }
    cols.update({k: v.to_numpy() for k, v in meta.items()})
    cols.update({k: labels[k].to_numpy(dtype=np.float64) for k in labels.columns})
    return pd.DataFrame(cols)


def _join(base: Path, rel: pd.Series) -> pd.Series:
    prefix = str(base) + os.sep
    return prefix + rel.str.replace("/", os.sep, regex=False)


class _Built(NamedTuple):
    """A loader's table before the common checks, with its rows' source lines."""

    table: pd.DataFrame
    lines: pd.Series  # CSV line number of each row in ``file``
    file: Path


# ----------------------------------------------------------------------------- loaders


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
                    f"{_listing(items)}; pass on_bad_image='exclude' and report_dir= to drop "
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

    def _build(self) -> _Built:
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

    def _check_table(self, built: _Built) -> None:
        t, lines, file = built
        empty = t["image"].isna() | (t["image"].astype(str).str.strip() == "")
        if empty.any():
            raise DataError(f"{file}: empty image name at {_lines_of(empty, lines)}")
        dup = t["image"].duplicated(keep=False)
        if dup.any():
            names = list(dict.fromkeys(t.loc[dup, "image"]))
            raise DataError(
                f"{file}: duplicate image name(s) {_listing([repr(n) for n in names])} "
                f"at {_lines_of(dup, lines)}"
            )
        pid = t["patient_id"]
        no_pid = pid.isna() | pid.astype(str).str.strip().isin(MISSING_SPELLINGS)
        if no_pid.any():
            raise DataError(f"{file}: missing patient id at {_lines_of(no_pid, lines)}")

    def _check_directory(self, table: pd.DataFrame) -> None:
        """One clear error when the image folder does not match the CSV at all."""
        if table.empty:
            return
        idx = np.unique(np.linspace(0, len(table) - 1, min(_SAMPLE, len(table))).astype(int))
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


class GrandXRaySlam(CXRDataset):
    """Grand X-Ray Slam (Division B) / authors' format, also written by the phantom.

    ``train.csv`` with ``Image_name`` and the 14 labels (0/1), optional ``Patient_ID, Study,
    Sex, Age, ViewCategory, ViewPosition``; images in ``root/images/`` or ``root``. Without
    ``Patient_ID`` (warned) or ``Study``, the image name stands in for the missing id.

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

    def _build(self) -> _Built:
        raw = _read_csv(self.csv)
        _require_columns(raw, ["Image_name", *self.labels], self.csv)
        lines = pd.Series(raw.index + 2)
        uncertain, blank = self.format_options["uncertain"], self.format_options["blank"]
        if uncertain is not None and blank is None:
            blank = "zeros"
        y = _parse_labels(raw, self.labels, self.csv, uncertain=uncertain, blank=blank)
        image = raw["Image_name"]
        if "Patient_ID" in raw:
            patient = _blank_to_nan(raw["Patient_ID"])
        else:
            logger.warning(
                "%s: no Patient_ID column; each image is its own patient, so splits cannot "
                "group a patient's images",
                self.csv,
            )
            patient = image
        study = _blank_to_nan(raw["Study"]) if "Study" in raw else image
        view = (
            _view(raw["ViewPosition"])
            if "ViewPosition" in raw
            else pd.Series(np.nan, index=raw.index, dtype=object)
        )
        meta = {}
        if "Sex" in raw:
            meta["sex"] = _blank_to_nan(raw["Sex"])
        if "Age" in raw:
            meta["age"] = _age(raw["Age"], "Age", self.csv, lines)
        path = _join(self.images_dir, image)
        return _Built(_assemble(image, path, patient, study, view, meta, y), lines, self.csv)


class CheXpert(CXRDataset):
    """CheXpert (Stanford) ``train.csv`` / ``valid.csv``.

    ``Path`` like ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``, resolved
    against ``images`` (default root); a leading folder equal to the root's name or matching
    ``CheXpert-v1.0*`` is dropped when that is what makes the files exist. Labels 1/0/-1/blank.

    Options:
        uncertain: -1 policy, ``"ones"``, ``"zeros"``, ``"ignore"`` (default; NaN, masked) or a
            dict ``{label: policy, "default": policy}`` (missing default = ``"ignore"``).
        blank: ``"zeros"`` (default; unmentioned = negative) or ``"nan"``.
        frontal_only: keep only ``Frontal/Lateral == "Frontal"`` rows.
    """

    name = "chexpert"
    options: ClassVar[dict[str, Any]] = {
        "uncertain": "ignore",
        "blank": "zeros",
        "frontal_only": False,
    }
    default_csv = ("train.csv", "CheXpert-v1.0*/train.csv")

    def _build(self) -> _Built:
        raw = _read_csv(self.csv)
        _require_columns(raw, ["Path", *self.labels], self.csv)
        if self.format_options["frontal_only"]:
            _require_columns(raw, ["Frontal/Lateral"], self.csv)
            raw = raw[raw["Frontal/Lateral"].str.strip() == "Frontal"]
        lines = pd.Series(raw.index + 2)
        y = _parse_labels(
            raw,
            self.labels,
            self.csv,
            uncertain=self.format_options["uncertain"],
            blank=self.format_options["blank"],
        )
        image = raw["Path"]
        ids = image.str.replace("\\", "/", regex=False).str.extract(r"(patient\d+)/(study\d+)/")
        if ids[0].isna().any():
            raise DataError(
                f"{self.csv}: no 'patientNNNNN/studyN/' in 'Path' at "
                f"{_lines_of(ids[0].isna(), lines, image)}"
            )
        view = pd.Series(np.nan, index=raw.index, dtype=object)
        if "AP/PA" in raw:
            view = _view(raw["AP/PA"])
        if "Frontal/Lateral" in raw:
            view = view.mask(raw["Frontal/Lateral"].str.strip() == "Lateral", "LATERAL")
        meta = {}
        if "Sex" in raw:
            meta["sex"] = _blank_to_nan(raw["Sex"])
        if "Age" in raw:
            meta["age"] = _age(raw["Age"], "Age", self.csv, lines)
        path = self._paths(image)
        return _Built(_assemble(image, path, ids[0], ids[1], view, meta, y), lines, self.csv)

    def _paths(self, image: pd.Series) -> pd.Series:
        """Join to images_dir, dropping a leading dataset folder if that is what exists."""
        rel = image.str.replace("\\", "/", regex=False)
        parts = rel.str.partition("/")
        head, tail = parts[0], parts[2]
        strippable = ((head == self.images_dir.name) | head.str.match(r"CheXpert-v1\.0")) & (
            tail != ""
        )
        direct = _join(self.images_dir, rel)
        if not strippable.any():
            return direct
        stripped = _join(self.images_dir, tail)
        probe = np.flatnonzero(strippable.to_numpy())[:_SAMPLE]
        hits_direct = sum(os.path.exists(direct.iloc[i]) for i in probe)
        hits_stripped = sum(os.path.exists(stripped.iloc[i]) for i in probe)
        return stripped.where(strippable, direct) if hits_stripped > hits_direct else direct


class NIHChestXray14(CXRDataset):
    """NIH ChestX-ray14: ``Data_Entry_2017*.csv`` with pipe-separated ``Finding Labels``.

    Images are indexed once under ``root/images/`` and ``root/images_*/images/`` (the official
    tarball layout), or under ``images`` when given. Labels: :data:`NIH_LABELS` + ``No Finding``
    (NIH spellings mapped through :data:`NIH_SYNONYMS`), never NaN. ``train_val_list.txt`` /
    ``test_list.txt`` in root give ``official_split`` (``"train_val"``/``"test"``).
    """

    name = "nih"
    all_labels = (*NIH_LABELS, "No Finding")
    default_csv = ("Data_Entry_2017*.csv",)
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
                f"{self.name}: the same image name in several folders: {_listing(clashes)}"
            )
        return index, dirs[0] if dirs else self._image_dirs()[0]

    def _build(self) -> _Built:
        raw = _read_csv(self.csv)
        _require_columns(raw, self._columns, self.csv)
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
                f"{_lines_of(unknown, lines, raw['Finding Labels'])}; known: {sorted(known)}"
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
            "sex": _blank_to_nan(raw["Patient Gender"]),
            "age": _age(raw["Patient Age"], "Patient Age", self.csv, lines),
        }
        split = self._official_split(image)
        if split is not None:
            meta["official_split"] = split
        table = _assemble(
            image,
            path,
            _blank_to_nan(raw["Patient ID"]),
            _blank_to_nan(raw["Follow-up #"]),
            _view(raw["View Position"]),
            meta,
            y,
        )
        return _Built(table, lines, self.csv)

    def _official_split(self, image: pd.Series) -> pd.Series | None:
        split = pd.Series(np.nan, index=image.index, dtype=object)
        present = False
        known = set(image)
        for value, fname in self.split_files.items():
            file = self._find_optional(fname)
            if file is None:
                continue
            present = True
            listed = [ln.strip() for ln in file.read_text().splitlines() if ln.strip()]
            stray = [n for n in listed if n not in known]
            if stray:
                raise DataError(
                    f"{file}: {len(stray)} image(s) not in {self.csv.name}: {_listing(stray)}"
                )
            hit = image.isin(set(listed))
            twice = hit & split.notna()
            if twice.any():
                raise DataError(
                    f"{file}: image(s) also in another split file: {_listing(list(image[twice]))}"
                )
            split[hit] = value
        return split if present else None


class MIMICCXRJPG(CXRDataset):
    """MIMIC-CXR-JPG 2.0.0: per-study labels joined to per-image metadata, one row per dicom.

    Files in root (``.csv.gz`` or ``.csv``): ``mimic-cxr-2.0.0-{chexpert|negbio}`` (labels,
    1/0/-1/blank), ``-metadata`` (``dicom_id, subject_id, study_id, ViewPosition``) and,
    optionally, ``-split`` (``official_split``: train/validate/test). Images at
    ``files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg`` under ``images``
    (default root). Images of studies without a label row are dropped with a warning.

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
                    f"{file}: {col!r} must be digits, at {_lines_of(bad, lines, df[col])}"
                )

    def _build(self) -> _Built:
        raw = _read_csv(self.csv)
        keys = ["subject_id", "study_id"]
        _require_columns(raw, [*keys, *self.labels], self.csv)
        self._check_ids(raw, keys, self.csv)
        lines = pd.Series(raw.index + 2)
        dup = raw.duplicated(keys, keep=False)
        if dup.any():
            raise DataError(
                f"{self.csv}: duplicate (subject_id, study_id) at {_lines_of(dup, lines)}"
            )
        y = _parse_labels(
            raw,
            self.labels,
            self.csv,
            uncertain=self.format_options["uncertain"],
            blank=self.format_options["blank"],
        )
        studies = pd.concat([raw[keys], y], axis=1)

        meta_file = self._side_file("metadata")
        if meta_file is None:
            raise DataError(f"mimic: mimic-cxr-2.0.0-metadata.csv(.gz) not found in {self.root}")
        meta = _read_csv(meta_file)
        _require_columns(meta, ["dicom_id", *keys, "ViewPosition"], meta_file)
        self._check_ids(meta, keys, meta_file)
        meta["_line"] = meta.index + 2
        merged = meta.merge(studies, on=keys, how="left", indicator=True, validate="many_to_one")
        unlabeled = merged["_merge"] == "left_only"
        if unlabeled.any():
            logger.warning(
                "%s: dropped %d image(s) whose study has no row in %s, e.g. %s",
                self.name,
                int(unlabeled.sum()),
                self.csv.name,
                _listing(list(merged.loc[unlabeled, "dicom_id"]), int(unlabeled.sum())),
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
        split = self._official_split(merged["dicom_id"], set(meta["dicom_id"]), meta_file)
        if split is not None:
            extra["official_split"] = split
        table = _assemble(
            image,
            _join(self.images_dir, image),
            sid,
            merged["study_id"],
            _view(merged["ViewPosition"]),
            extra,
            merged[self.labels],
        )
        return _Built(table, merged["_line"], meta_file)

    def _official_split(
        self, dicom: pd.Series, known: set[str], meta_file: Path
    ) -> pd.Series | None:
        file = self._side_file("split")
        if file is None:
            return None
        split = _read_csv(file)
        _require_columns(split, ["dicom_id", "split"], file)
        lines = pd.Series(split.index + 2)
        dup = split["dicom_id"].duplicated(keep=False)
        if dup.any():
            raise DataError(
                f"{file}: duplicate dicom_id at {_lines_of(dup, lines, split['dicom_id'])}"
            )
        stray = ~split["dicom_id"].isin(known)
        if stray.any():
            raise DataError(
                f"{file}: dicom_id(s) not in {meta_file.name} at "
                f"{_lines_of(stray, lines, split['dicom_id'])}"
            )
        return dicom.map(dict(zip(split["dicom_id"], _blank_to_nan(split["split"]), strict=True)))


#: Format name -> loader class.
DATASETS: dict[str, type[CXRDataset]] = {
    cls.name: cls for cls in (GrandXRaySlam, CheXpert, NIHChestXray14, MIMICCXRJPG)
}


#: Loader arguments that are not format options: the ones a parameter file may still put in
#: ``dataset_options`` (file locations, decoding threads) ...
DATASET_ARGUMENTS: tuple[str, ...] = ("csv", "images", "workers")
#: ... and the ones set elsewhere (the parameter that sets each), which must not be repeated there.
SET_ELSEWHERE: dict[str, str] = {
    "root": "'data'",
    "labels": "'labels' (train.labels in a study)",
    "on_bad_image": "'on_bad_image' (train.on_bad_image in a study)",
    "report_dir": "the run (excluded_images.csv goes to its folder)",
    "check_images": "the run (training decodes every image up front)",
}


def dataset_option_names(name: str) -> list[str]:
    """The keys ``dataset_options`` may hold for the loader ``name``: its format options and
    :data:`DATASET_ARGUMENTS`."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return sorted({*DATASETS[name].options, *DATASET_ARGUMENTS})


def check_dataset_options(name: str, options: Any) -> None:
    """Check a parameter file's ``dataset`` and ``dataset_options`` before anything runs.

    Raises:
        ConfigError: for an unknown dataset, options that are not a mapping, a key the loader
            does not accept (naming it, the closest accepted key and the accepted ones), or a
            key set by another parameter (``on_bad_image``, ``labels``, ...), naming that one.
    """
    from cxrkit.config import ConfigError

    if name not in DATASETS:
        raise ConfigError(f"dataset: unknown dataset {name!r}; known: {sorted(DATASETS)}")
    if not isinstance(options, dict):
        raise ConfigError(f"dataset_options: expected a mapping, got {options!r}")
    accepted = dataset_option_names(name)
    for key in options:
        if key in SET_ELSEWHERE:
            raise ConfigError(f"dataset_options.{key}: set by {SET_ELSEWHERE[key]}, not in dataset_options")
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"dataset_options.{key}: not an option of dataset {name!r}{hint}; "
                              f"accepted: {accepted}")


def create_dataset(name: str, **kwargs: Any) -> CXRDataset:
    """Build the loader registered as ``name`` (see :data:`DATASETS`) with ``kwargs``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        cls = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None
    return cls(**kwargs)
