"""Several datasets as one (``dataset: merged``): their tables stacked with the labels aligned by
name, NaN where a source does not annotate a label, the ids of each source kept apart and the
source recorded on every row.

A study asks for it as::

    data: /datasets                      # the sources' relative 'data' folders are under it
    dataset: merged
    dataset_options:
      sources:
        - {dataset: nih, data: nih}
        - {dataset: padchest, data: padchest, views: [PA]}

Each source is a mapping with ``dataset`` (a single format, :data:`FORMATS`), ``data`` (its
folder, relative to the merged ``data`` folder or absolute), an optional ``name`` (default: the
dataset's; it must differ between sources and is the prefix of their ids) and that loader's own
options (``views``, ``uncertain``, ``aggregation``, ``csv``, ``images``, ...). Everything is
checked by :func:`check_sources` before any file is read.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from cxrkit.data.datasets.base import CXRDataset, logger
from cxrkit.data.datasets.fields import BASE_COLUMNS, Built
from cxrkit.data.datasets.formats import FORMATS
from cxrkit.data.labels import VOCABULARY
from cxrkit.data.tables import DataError
from cxrkit.utils.params import ConfigError

#: Keys of a source that are not loader options.
SOURCE_KEYS: tuple[str, ...] = ("dataset", "data", "name")
#: Loader arguments a source may hold besides its format options.
SOURCE_ARGUMENTS: tuple[str, ...] = ("csv", "images")
#: Between a source's name and an id of that source (``nih:00000001_000.png``).
ID_SEPARATOR = ":"
#: Optional columns of the merged table, after ``source``: NaN for a source without them.
META_COLUMNS: tuple[str, ...] = ("sex", "age", "official_split")


def _check_source(source: Any, where: str) -> str:
    """One source mapping checked (:func:`check_sources`); returns its name."""
    if not isinstance(source, dict):
        raise ConfigError(f"{where}: need a mapping such as {{dataset: nih, data: nih}}, got {source!r}")
    dataset = source.get("dataset")
    if dataset not in FORMATS:
        raise ConfigError(f"{where}.dataset: {dataset!r} is not a single-format dataset; known: {sorted(FORMATS)}")
    if not isinstance(source.get("data"), str) or not source["data"].strip():
        raise ConfigError(f"{where}.data: need the source's folder (relative to the merged 'data' folder, or "
                          f"absolute), got {source.get('data')!r}")
    name = source.get("name", dataset)
    if not isinstance(name, str) or not name.strip() or ID_SEPARATOR in name:
        raise ConfigError(f"{where}.name: need a non-empty name without {ID_SEPARATOR!r}, got {name!r}")
    cls = FORMATS[dataset]
    accepted = sorted({*SOURCE_KEYS, *SOURCE_ARGUMENTS, *cls.option_defaults()})
    for key in source:
        if key in ("labels", "on_bad_image", "report_dir", "check_images", "workers", "root"):
            raise ConfigError(f"{where}.{key}: set for the merged dataset as a whole, not per source")
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}.{key}: not an option of dataset {dataset!r}{hint}; accepted: {accepted}")
    cls.check_options({k: v for k, v in source.items() if k not in SOURCE_KEYS}, where=where)
    return name


def check_sources(sources: Any, where: str = "dataset_options.sources") -> list[str]:
    """Check a merged dataset's ``sources`` before anything runs; return their names.

    Raises:
        ConfigError: fewer than two sources, a source that is not a mapping, an unknown or nested
            dataset, a missing ``data``, an option its loader does not accept (or with a value it
            cannot honour), one set for the whole dataset (``labels``, ``on_bad_image``), or two
            sources with one name (each naming ``sources[i].key``).
    """
    if not isinstance(sources, (list, tuple)) or len(sources) < 2:
        raise ConfigError(f"{where}: need a list of at least two sources such as [{{dataset: nih, data: nih}}, "
                          f"{{dataset: padchest, data: padchest}}], got {sources!r}")
    names = [_check_source(s, f"{where}[{i}]") for i, s in enumerate(sources)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where}: several sources named {twice}; give each a different 'name'")
    return names


class MergedDataset(CXRDataset):
    """The union of several datasets (module docstring), one common table.

    The table: ``image``, ``patient_id`` and ``study`` prefixed with the source's name and
    :data:`ID_SEPARATOR` (``nih:00000001_000.png``, ``padchest:1234``: ids of different sources
    never meet, so a patient is never matched across datasets), ``path`` and ``view`` as the source
    has them, ``source`` (the source's name), ``sex``, ``age``, ``official_split`` where a source
    has them (NaN for the others), then the labels: by default every label some source provides,
    in vocabulary order; NaN where a source does not annotate one. ``quality["sources"]`` holds
    each source's counts and quality record; images are checked (and excluded) as one table.

    Options:
        sources: the list of sources (checked by :func:`check_sources`).

    Raises:
        ConfigError: bad ``sources`` (before any file is read).
        DataError: a source's data, named by the source; labels no source provides.
    """

    name = "merged"
    options: ClassVar[dict[str, Any]] = {"sources": None}
    view_values = ()

    def __init__(self, root: str | os.PathLike, csv: str | os.PathLike | None = None,
                 images: str | os.PathLike | None = None, **kwargs: Any) -> None:
        if csv is not None or images is not None:
            raise DataError("merged: 'csv' and 'images' belong to each source, not to the merged dataset")
        self.source_names = check_sources(kwargs.get("sources"), where=f"{self.name} sources")
        self.all_labels = self.provided_labels(kwargs)
        self.parts: dict[str, CXRDataset] = {}
        super().__init__(root, **kwargs)

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """Only ``sources``: views and the other loader options are set per source."""
        return dict(cls.options)

    @classmethod
    def check_options(cls, options: dict[str, Any], where: str = "dataset_options") -> None:
        """``sources`` is required and checked (:func:`check_sources`); ``csv``/``images`` are per source."""
        for key in SOURCE_ARGUMENTS:
            if key in options:
                raise ConfigError(f"{where}.{key}: set per source (in sources[i].{key}), not for the merged dataset")
        check_sources(options.get("sources"), where=f"{where}.sources")

    @classmethod
    def provided_labels(cls, options: dict[str, Any]) -> tuple[str, ...]:
        """Every label some source annotates, in vocabulary order (``sources`` checked first)."""
        check_sources(options.get("sources"), where=f"{cls.name} sources")
        provided = {lab for s in options["sources"] for lab in FORMATS[s["dataset"]].all_labels}
        return tuple(lab for lab in VOCABULARY if lab in provided)

    @classmethod
    def official_test_problem(cls, options: dict[str, Any]) -> str | None:
        """The first source without an official test split, named."""
        for i, s in enumerate(options.get("sources") or []):
            problem = FORMATS[s["dataset"]].official_test_problem(s)
            if problem is not None:
                return f"source {i} ({s.get('name', s['dataset'])!r}): {problem}"
        return None

    def _find_csv(self, csv: str | os.PathLike | None) -> Any:
        return self.root  # no label file of its own: source_files lists the sources'

    @property
    def source_files(self) -> list[Any]:
        """The label files of every source."""
        return list(self.side_files)

    def _build(self) -> Built:
        parts = [self._part(s, name) for s, name in zip(self.format_options["sources"], self.source_names, strict=True)]
        meta = [c for c in META_COLUMNS if any(c in p.columns for p in parts)]
        columns = [*BASE_COLUMNS, "source", *meta, *self.labels]
        table = pd.concat([p.reindex(columns=columns) for p in parts], ignore_index=True)
        table[self.labels] = table[self.labels].astype(np.float64)
        self.known_bad = {f"{name}{ID_SEPARATOR}{image}": why for name, ds in self.parts.items()
                          for image, why in ds.known_bad.items()}
        logger.info("%s: %s", self.name, ", ".join(f"{n}: {len(ds.table)} images" for n, ds in self.parts.items()))
        return Built(table, pd.Series(np.arange(len(table)) + 1), self.root)

    def _part(self, source: dict[str, Any], name: str) -> pd.DataFrame:
        """One source's table with prefixed ids, its ``source`` and the merged dataset's labels."""
        cls = FORMATS[source["dataset"]]
        labels = [lab for lab in self.labels if lab in cls.all_labels]
        if not labels:
            raise DataError(f"merged source {name!r} ({cls.name}) provides none of the labels {self.labels}")
        options = {k: v for k, v in source.items() if k not in SOURCE_KEYS}
        try:
            ds = cls(self.root / source["data"], labels=labels, check_images=False, **options)
        except DataError as exc:
            raise DataError(f"merged source {name!r} ({cls.name}, {self.root / source['data']}): {exc}") from exc
        self.parts[name] = ds
        self.side_files.extend(ds.source_files)
        t = ds.table.copy()
        for col in ("image", "patient_id", "study"):
            t[col] = (name + ID_SEPARATOR + t[col].astype(str)).where(t[col].notna())
        t["source"] = name
        self.quality.setdefault("sources", {})[name] = {
            "dataset": cls.name, "data": str(ds.root), "images": len(t), "labels": labels,
            "not_annotated": [lab for lab in self.labels if lab not in labels], **ds.quality}
        return t
