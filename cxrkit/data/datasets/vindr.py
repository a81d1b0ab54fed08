"""VinDr-CXR (Vingroup Big Data Institute): DICOM images, image-level labels from three
radiologists per training image and the consensus of five per test image, in two formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from cxrkit.data.datasets.base import SAMPLE_PATHS, CXRDataset, logger
from cxrkit.data.datasets.box_lists import VINDR_BOX_COLUMNS, vindr_boxes
from cxrkit.data.datasets.fields import Built, assemble, join_paths, parse_labels
from cxrkit.data.labels import VOCABULARY
from cxrkit.data.tables import DataError, lines_of, listing, read_raw_csv
from cxrkit.utils.params import ConfigError

#: VinDr finding -> kit label. ``Nodule/Mass`` is CheXpert's Lung Lesion (the CheXpert labeler's
#: lung_lesion phrases: mass, nodule); clavicle and rib fractures are Fracture. The other findings
#: (Aortic enlargement, Calcification, ILD, Other lesion, Enlarged PA, Lung cavity, Lung cyst,
#: Mediastinal shift, and the diagnoses COPD, Lung tumor, Tuberculosis, Other disease(s)) have no
#: label of the vocabulary and are read but not used.
VINDR_FINDINGS: dict[str, str] = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
    "Edema": "Edema", "Emphysema": "Emphysema", "Infiltration": "Infiltration", "Lung Opacity": "Lung Opacity",
    "Nodule/Mass": "Lung Lesion", "Pleural effusion": "Pleural Effusion", "Pleural thickening": "Pleural Thickening",
    "Pneumothorax": "Pneumothorax", "Pulmonary fibrosis": "Fibrosis", "Pneumonia": "Pneumonia",
    "Clavicle fracture": "Fracture", "Rib fracture": "Fracture", "No finding": "No Finding",
}
#: Every finding name of the two formats (the official release's 28 image-level labels, the
#: Kaggle challenge's 15 classes); another name is refused.
VINDR_NAMES: frozenset[str] = frozenset({
    *VINDR_FINDINGS, "Aortic enlargement", "Calcification", "ILD", "Other lesion", "Enlarged PA", "Lung cavity",
    "Lung cyst", "Mediastinal shift", "COPD", "Lung tumor", "Tuberculosis", "Other disease", "Other diseases",
})
#: The Kaggle challenge's classes: a box file with no other name follows that scheme; one with
#: others is the official release's annotations_*.csv, whose boxes cover its 22 local findings
#: (the 6 global diagnoses, Pneumonia among them, are not boxed: NaN).
KAGGLE_CLASSES: frozenset[str] = frozenset({
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
    "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "No finding"})
#: The global labels of the official release (diagnoses, never boxed).
GLOBAL_LABELS: frozenset[str] = frozenset({"COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other disease",
                                           "Other diseases"})
#: Aggregation policies of several readers' labels (:meth:`VinDrCXR.aggregate`).
AGGREGATIONS: tuple[str, ...] = ("any", "majority", "consensus")
#: Columns of the box format (one row per finding and reader; Kaggle's train.csv, torchxrayvision's
#: vinbigdata-train.csv, the official annotations_*.csv).
BOX_COLUMNS: tuple[str, ...] = ("image_id", "rad_id", "class_name")


class VinDrCXR(CXRDataset):
    """VinDr-CXR: DICOM images (``<split>/<image_id>.dicom``) with image-level labels.

    Two label formats, told apart by their columns:

    * the official release (PhysioNet ``vindr-cxr`` 1.0.0): ``annotations/image_labels_train.csv``
      and ``annotations/image_labels_test.csv`` (also found directly in root), with ``image_id``,
      ``rad_id`` (optional in the test file) and one 0/1 column per finding;
    * boxes, one row per finding and reader (``image_id, class_name, rad_id``, optional
      ``class_id`` and box columns; "No finding" rows carry no box): the Kaggle VinBigData
      ``train.csv`` and torchxrayvision's ``vinbigdata-train.csv(.gz)``.

    The train file's images get ``official_split`` ``"train"``, the test file's ``"test"`` (a
    ``csv`` given explicitly is a test file when its name says so). Images are at
    ``images/<official_split>/<image_id>.dicom`` (default images = root), or
    ``images/<image_id>.dicom`` when that is what exists; they decode through
    :mod:`cxrkit.data.images`.

    The public release has no patient ids: each image is its own patient (``patient_id`` =
    ``study`` = ``image_id``), so leakage across the images of one patient cannot be checked (a
    warning says so). No view is recorded (the ``views`` option is refused).

    Options:
        aggregation: how the readers of an image make its label (:meth:`aggregate`):
            ``"majority"`` (default: what most of its readers say; a tie is NaN), ``"any"`` (positive
            when any reader marks the finding; No Finding only when every reader gives it) or
            ``"consensus"`` (the value all readers agree on, NaN where they disagree). The test
            images' single consensus row is the same under every policy. Majority is the default
            because one reader's mark is noisy (``any`` adds every reader's false positives) and
            ``consensus`` masks every disagreement, while three independent reads always have a
            majority.
    """

    name = "vindr"
    options: ClassVar[dict[str, Any]] = {"aggregation": "majority"}
    all_labels = tuple(lab for lab in VOCABULARY if lab in VINDR_FINDINGS.values())
    view_values = ()
    official_test = "the test label file (image_labels_test.csv)"
    default_csv = ("annotations/image_labels_train.csv", "image_labels_train.csv", "train.csv",
                   "vinbigdata-train.csv", "vinbigdata-train.csv.gz")
    test_csv: ClassVar[tuple[str, ...]] = ("annotations/image_labels_test.csv", "image_labels_test.csv")

    #: Official box files, looked for in root by :meth:`boxes` besides the label files themselves.
    box_files: ClassVar[tuple[str, ...]] = ("annotations/annotations_train.csv", "annotations_train.csv",
                                            "annotations/annotations_test.csv", "annotations_test.csv")

    def boxes(self) -> pd.DataFrame:
        """The readers' boxes of the table's images and labels as a box table (:mod:`cxrkit.data.boxes`;
        pixels of the DICOM images): one row per box and reader, ``source`` ``vindr <rad_id>``; a
        finding's region is the union of its readers' boxes
        (:func:`cxrkit.data.datasets.box_lists.vindr_boxes`). Read from the label files in the box
        format (Kaggle ``train.csv``, ``vinbigdata-train.csv``) and the official
        ``annotations_train.csv`` / ``annotations_test.csv``.

        Raises:
            DataError: no box file among them.
        """
        found = [self.csv, *self.side_files, *(self.root / n for n in self.box_files)]
        files = [f for f in dict.fromkeys(found) if f.is_file() and set(VINDR_BOX_COLUMNS) <= set(read_raw_csv(f).columns)]
        if not files:
            raise DataError(f"{self.name}: no box file in {self.root} (the label file {self.csv.name} has no boxes; looked "
                            f"for {list(self.box_files)})")
        return vindr_boxes(files, VINDR_FINDINGS, set(self.table["image"]), self.labels)

    def _select_labels(self, labels: Any) -> list[str]:
        self._default_labels = labels is None  # then labels no file annotates are left out
        return super()._select_labels(labels)

    @classmethod
    def check_options(cls, options: dict[str, Any], where: str = "dataset_options") -> None:
        """Also: ``aggregation`` is one of :data:`AGGREGATIONS`."""
        super().check_options(options, where)
        if "aggregation" in options and options["aggregation"] not in AGGREGATIONS:
            raise ConfigError(f"{where}.aggregation: {options['aggregation']!r} is not one of {list(AGGREGATIONS)}")

    def _build(self) -> Built:
        explicit = self.csv.name not in {Path(p).name for p in self.default_csv}
        files = {("test" if explicit and "test" in self.csv.name.lower() else "train"): self.csv}
        test = None if explicit else next((self.root / p for p in self.test_csv if (self.root / p).is_file()), None)
        if test is not None:
            files["test"] = test
            self.side_files.append(test)
        parts = [self._read(file, split) for split, file in files.items()]
        if len(parts) == 2:
            both = sorted(set(parts[0][0]["image"]) & set(parts[1][0]["image"]))
            if both:
                raise DataError(f"{self.name}: image(s) in both {files['train']} and {files['test']}: {listing(both)}")
        table = pd.concat([p[0] for p in parts], ignore_index=True)
        lines = pd.concat([p[1] for p in parts], ignore_index=True)
        unlabelled = [lab for lab in self.labels if table[lab].isna().all()]
        self.quality["not_annotated"] = unlabelled
        if unlabelled and self._default_labels:
            self.labels = [lab for lab in self.labels if lab not in unlabelled]
            table = table.drop(columns=unlabelled)
            logger.info("%s: %s left out: no label file annotates them", self.name, unlabelled)
        logger.warning("%s: the public release has no patient ids: each image is its own patient (patient_id = "
                       "image_id), so leakage across the images of one patient cannot be checked", self.name)
        return Built(table, lines, self.csv)

    def _read(self, file: Path, split: str) -> tuple[pd.DataFrame, pd.Series]:
        """One label file's images: the common table and each image's first line in the file."""
        raw = read_raw_csv(file)
        if "image_id" not in raw.columns:
            raise DataError(f"{file}: no 'image_id' column; not a VinDr-CXR label file (columns: {list(raw.columns)})")
        if set(BOX_COLUMNS) <= set(raw.columns):
            readers = self._box_readers(raw, file)
        else:
            readers = self._label_readers(raw, file)
        counts = readers.groupby("image_id", sort=False).size()
        policy = self.format_options["aggregation"]
        by_policy = {p: self.aggregate(readers, p) for p in AGGREGATIONS}
        y = by_policy[policy]
        image = pd.Series(y.index, dtype=object)
        first_line = raw.drop_duplicates("image_id").set_index("image_id")["_line"].loc[image].reset_index(drop=True)
        self.quality.setdefault("readers", {})[split] = {"file": file.name,
            "images": len(y), "reads": int(counts.sum()),
            "readers_per_image": {int(k): int(v) for k, v in counts.value_counts().sort_index().items()},
            **agreement(by_policy, policy)}
        rel = split + "/" + image + ".dicom"
        table = assemble(image, self._paths(rel, image), image, image, pd.Series(np.nan, index=image.index, dtype=object),
                         {"official_split": pd.Series(split, index=image.index, dtype=object)},
                         y.reset_index(drop=True))
        return table, first_line

    def _box_readers(self, raw: pd.DataFrame, file: Path) -> pd.DataFrame:
        """One row per (image, reader): a 0/1 column per finding name read from the box rows.

        Raises:
            DataError: an unknown finding name, an empty image or reader id, or a reader who gives
                both "No finding" and a finding for one image (naming the lines).
        """
        raw["_line"] = raw.index + 2
        lines = pd.Series(raw["_line"])
        empty = (raw["image_id"].str.strip() == "") | (raw["rad_id"].str.strip() == "")
        if empty.any():
            raise DataError(f"{file}: empty 'image_id' or 'rad_id' at {lines_of(empty, lines)}")
        name = raw["class_name"].str.strip()
        unknown = ~name.isin(VINDR_NAMES)
        if unknown.any():
            raise DataError(f"{file}: unknown 'class_name' at {lines_of(unknown, lines, name)}; known: {sorted(VINDR_NAMES)}")
        wide = pd.crosstab([raw["image_id"], raw["rad_id"]], name).clip(upper=1).astype(float)  # a finding's boxes count once
        both = (wide.get("No finding", 0) == 1) & (wide.drop(columns="No finding", errors="ignore").sum(axis=1) > 0)
        if np.any(both):
            pairs = [f"{i} by {r}" for i, r in wide.index[np.asarray(both)]]
            raise DataError(f"{file}: a reader gives both 'No finding' and a finding for image(s) {listing(pairs)}")
        boxed = KAGGLE_CLASSES if set(name) <= KAGGLE_CLASSES else VINDR_NAMES - GLOBAL_LABELS
        for col in VINDR_FINDINGS:
            if col not in wide.columns:
                wide[col] = 0.0 if col in boxed else np.nan  # not marked, or not in the file's scheme
        return wide.reset_index()

    def _label_readers(self, raw: pd.DataFrame, file: Path) -> pd.DataFrame:
        """The official format: one row per (image, reader), 0/1 per finding, checked.

        Raises:
            DataError: missing finding columns of the labels asked for, values other than 0/1,
                or an (image, reader) on several rows (naming the lines).
        """
        raw["_line"] = raw.index + 2
        lines = pd.Series(raw["_line"])
        names = [c for c in raw.columns if c.strip() in VINDR_NAMES]
        unknown = [c for c in raw.columns if c not in names and c not in ("image_id", "rad_id", "_line")]
        if unknown or "No finding" not in [n.strip() for n in names]:
            raise DataError(f"{file}: not a VinDr-CXR label file: " + (f"unknown column(s) {unknown}" if unknown else
                            "no 'No finding' column") + "; expected image_id, rad_id and one 0/1 column per finding "
                            f"(known: {sorted(VINDR_NAMES)}), or the box format with columns {list(BOX_COLUMNS)}")
        key = ["image_id", "rad_id"] if "rad_id" in raw.columns else ["image_id"]
        dup = raw.duplicated(key, keep=False)
        if dup.any():
            raise DataError(f"{file}: {' and '.join(key)} on several rows at {lines_of(dup, lines)}")
        values = parse_labels(raw, names, file, uncertain=None, blank=None)
        values.columns = [n.strip() for n in names]
        for col in VINDR_FINDINGS:
            if col not in values.columns:
                values[col] = np.nan  # a finding this file does not label (Kaggle-era files)
        readers = pd.concat([raw[key], values], axis=1)
        return readers if "rad_id" in key else readers.assign(rad_id="consensus")

    def aggregate(self, readers: pd.DataFrame, policy: str) -> pd.DataFrame:
        """Image-level labels (index ``image_id``, one column per label asked for) from per-reader 0/1 rows.

        Each reader's label is the largest of its findings mapped to the label (clavicle or rib
        fracture = Fracture). Then, over an image's readers: ``any`` = 1 if any reader has 1
        (No Finding: 1 only if every reader has 1), ``majority`` = the value of more than half of
        them (NaN on a tie), ``consensus`` = the common value (NaN if they differ). NaN (a finding
        a file does not label) stays NaN.
        """
        per_reader = pd.DataFrame({lab: readers[[n for n, m in VINDR_FINDINGS.items() if m == lab]].max(axis=1, skipna=False)
                                   for lab in self.labels})
        grouped = per_reader.groupby(readers["image_id"].to_numpy(), sort=False)
        mean = grouped.mean()
        if policy == "any":
            out = (grouped.max() > 0).astype(float).where(grouped.max().notna())
            if "No Finding" in out:
                out["No Finding"] = (grouped["No Finding"].min() > 0).astype(float).where(mean["No Finding"].notna())
        elif policy == "majority":
            out = (mean > 0.5).astype(float).where(mean.ne(0.5) & mean.notna())
        else:
            out = mean.where(mean.isin([0.0, 1.0]))
        out.index.name = "image_id"
        return out.astype(np.float64).reindex(columns=self.labels)

    def _paths(self, rel: pd.Series, image: pd.Series) -> pd.Series:
        """``images/<split>/<id>.dicom``, or ``images/<id>.dicom`` when more sampled files exist so."""
        nested, flat = join_paths(self.images_dir, rel), join_paths(self.images_dir, image + ".dicom")
        probe = np.unique(np.linspace(0, len(rel) - 1, min(SAMPLE_PATHS, len(rel))).astype(int)) if len(rel) else []
        hits = [sum(Path(p.iloc[i]).exists() for i in probe) for p in (nested, flat)]
        return flat if hits[1] > hits[0] else nested


def agreement(by_policy: dict[str, pd.DataFrame], policy: str) -> dict[str, Any]:
    """How far the readers of a label file agree, from its labels under each policy
    (:meth:`VinDrCXR.aggregate`, one table per name of :data:`AGGREGATIONS`), for ``quality``.

    Returns:
        ``aggregation`` (the policy in use); ``disagreement``: the ``images`` with at least one
        label its readers differ on and the image-label ``values`` they differ on (given a value
        by some reader, not the same by all); ``made_nan``: per policy, the values it turns into
        NaN although some reader gave one (``any`` none, ``majority`` its ties, ``consensus``
        every disagreement); ``made_nan_labels``: those of the policy in use, per label (labels
        with none left out).
    """
    annotated = by_policy["any"].notna()  # some reader gives the label a value
    differ = by_policy["consensus"].isna() & annotated
    made_nan = {p: by_policy[p].isna() & annotated for p in AGGREGATIONS}
    return {"aggregation": policy,
            "disagreement": {"images": int(differ.any(axis=1).sum()), "values": int(differ.to_numpy().sum())},
            "made_nan": {p: int(m.to_numpy().sum()) for p, m in made_nan.items()},
            "made_nan_labels": {str(lab): int(n) for lab, n in made_nan[policy].sum().items() if n}}
