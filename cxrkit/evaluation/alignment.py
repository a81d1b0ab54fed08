"""Labels of a model and of a target dataset aligned by name, for external validation.

A model predicts the labels it was trained on; another dataset annotates its own. Both are
names of the kit's vocabulary (:mod:`cxrkit.data.labels`) *after* each loader's mapping: NIH's
``Effusion`` is read as ``Pleural Effusion``, PadChest's and VinDr-CXR's terms as the names their
loaders map them to. So alignment is by exact name: the labels both have are scored, the ones
the target lacks are listed (NaN, not scored) and so are the ones it has that the model cannot
predict (:class:`LabelAlignment`).

The data fingerprint of predictions made on a dataset (``cxrkit infer --dataset``) and the one
``cxrkit evaluate`` checks them against are both that of the dataset's table restricted to the
shared labels in the model's order (:func:`target_dataset`), which for a model whose labels the
dataset all provides is the fingerprint its training run recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cxrkit.data.datasets import DATASETS, CXRDataset, check_dataset_options, create_dataset
from cxrkit.data.labels import check_labels


@dataclass(frozen=True)
class LabelAlignment:
    """The labels of a model and of a target, aligned by name.

    Attributes:
        model: the labels the model predicts, in its order.
        target: the labels the target dataset annotates, in its order.
    """

    model: tuple[str, ...]
    target: tuple[str, ...]

    @property
    def shared(self) -> list[str]:
        """Labels both have, in the model's order: the ones scored."""
        return [lab for lab in self.model if lab in self.target]

    @property
    def lacking(self) -> list[str]:
        """Labels the model predicts and the target does not annotate (NaN, not scored)."""
        return [lab for lab in self.model if lab not in self.target]

    @property
    def extra(self) -> list[str]:
        """Labels the target annotates and the model cannot predict (not scored)."""
        return [lab for lab in self.target if lab not in self.model]

    def as_dict(self) -> dict[str, list[str]]:
        """``scored``, ``lacking`` and ``extra`` label lists (as written to a sidecar)."""
        return {"scored": self.shared, "lacking": self.lacking, "extra": self.extra}

    def describe(self, target: str = "the target") -> str:
        """One line: which labels are scored, which the target lacks, which it has extra."""
        def names(labels: list[str]) -> str:
            return ", ".join(labels) if labels else "none"

        return (f"labels scored ({len(self.shared)}, shared by the model and {target}): {names(self.shared)}; "
                f"lacking in {target} ({len(self.lacking)}, NaN, not scored): {names(self.lacking)}; "
                f"in {target} but not predicted by the model ({len(self.extra)}, not scored): {names(self.extra)}")


def align_labels(model: Sequence[str], target: Sequence[str], *, where: str = "model labels") -> LabelAlignment:
    """Align a model's labels with a target's by name.

    Args:
        model: the labels the model predicts (e.g. a prediction file's columns).
        target: the labels the target annotates.
        where: what ``model`` is, for the error message (e.g. the prediction file).

    Returns:
        :class:`LabelAlignment`.

    Raises:
        ValueError: a name outside the vocabulary (naming it and the close spelling), or a name
            given twice: an unknown name would otherwise never match and be skipped silently.
    """
    return LabelAlignment(tuple(check_labels(list(model), where=where)),
                          tuple(check_labels(list(target), where="target labels")))


def dataset_labels(dataset: str, options: dict[str, Any] | None = None) -> list[str]:
    """The labels the loader ``dataset`` provides with ``options``, before any file is read.

    Raises:
        ConfigError: an unknown dataset or options it does not accept (naming the key).
    """
    options = options or {}
    check_dataset_options(dataset, options)
    return list(DATASETS[dataset].provided_labels(options))


def target_dataset(dataset: str, data: Any, options: dict[str, Any] | None, model_labels: Sequence[str],
                   **loader: Any) -> tuple[CXRDataset, LabelAlignment]:
    """Load a target dataset with the labels it shares with a model.

    Args:
        dataset: the loader (``gxs``, ``nih``, ...; :data:`cxrkit.data.datasets.DATASETS`).
        data: its folder.
        options: the loader's options (``views``, ...).
        model_labels: the labels the model predicts.
        **loader: further loader arguments (``check_images``, ``on_bad_image``,
            ``image_policy``, ``report_dir``, ``workers``).

    Returns:
        The dataset, whose table holds the shared labels in the model's order (all its labels when
        it shares none: predictions can still be made, not scored), and the alignment.

    Raises:
        ConfigError: bad dataset options (naming the key).
        ValueError: model labels outside the vocabulary.
        DataError: the loader's refusals (files, rows, images).
    """
    options = dict(options or {})
    alignment = align_labels(model_labels, dataset_labels(dataset, options))
    ds = create_dataset(dataset, root=data, labels=alignment.shared or None, **options, **loader)
    return ds, alignment
