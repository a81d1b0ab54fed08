"""The view vocabulary: every format's view field written in one set of names, and the ``views``
loader option that keeps some of them.

The ``view`` column of every table holds one of

* a position: ``PA``, ``AP``, ``AP_SUPINE`` (antero-posterior taken lying down: PadChest's
  ``AP_horizontal``, "AP Supine" in torchxrayvision), ``LATERAL``, ``LL``, ``RL`` (left and
  right lateral, CheXpert's ``AP/PA`` column and MIMIC's ``ViewPosition``);
* ``FRONTAL``: a frontal image whose position the source does not record, or records in
  contradiction with its frontal/lateral field (CheXpert's ``Frontal/Lateral``, the Grand X-Ray
  Slam ``ViewCategory``: that field decides, and the contradictions are counted);
* another value of the source field, upper case, as written (MIMIC's ``AP AXIAL``, ``LAO``,
  ``SWIMMERS``, ``XTABLE LATERAL``; PadChest's ``COSTAL``, ``EXCLUDE``);
* NaN: not recorded.

Categories: ``frontal`` is :data:`FRONTAL_VIEWS`, ``lateral`` is :data:`LATERAL_VIEWS`; every other
value (oblique, decubitus, axial, costal views) is in neither. ``AP_SUPINE`` is not ``AP``: a
study that wants both names both (``[AP, AP_SUPINE]``) or takes ``frontal``.

Each format's fields, mapped (its loader's ``view_values`` lists what it can hold):

==========  =====================================================================================
``gxs``     ``ViewPosition`` (upper case); ``ViewCategory`` Frontal/Lateral where the position is
            blank or contradicts it
``chexpert`` ``AP/PA`` for frontal images (``AP``, ``PA``), ``LATERAL`` for ``Frontal/Lateral ==
            Lateral`` (``LL``/``RL`` when ``AP/PA`` says so)
``nih``     ``View Position`` (``PA``, ``AP``)
``mimic``   ``ViewPosition`` of the metadata CSV (upper case)
``padchest`` ``Projection``: ``PA``, ``AP``, ``AP_horizontal`` -> ``AP_SUPINE``, ``L`` -> ``LATERAL``,
            ``COSTAL``, ``EXCLUDE``; ``UNK`` -> NaN (counted)
``vindr``   none: the label files record no view (the DICOM headers do; the release describes its
            images as postero-anterior), so a ``views`` option is refused
==========  =====================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.utils.params import ConfigError

#: Views of the ``frontal`` category.
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP", "AP_SUPINE", "FRONTAL")
#: Views of the ``lateral`` category.
LATERAL_VIEWS: tuple[str, ...] = ("LATERAL", "LL", "RL", "XTABLE LATERAL")
#: Category name -> its views.
VIEW_CATEGORIES: dict[str, tuple[str, ...]] = {"frontal": FRONTAL_VIEWS, "lateral": LATERAL_VIEWS}
#: Label of missing views in the counts.
NOT_RECORDED = "(not recorded)"


def view_category(view: Any) -> str:
    """``"frontal"``, ``"lateral"``, ``"other"`` or ``"missing"`` (NaN) for one view value."""
    if not isinstance(view, str):
        return "missing"
    return next((c for c, views in VIEW_CATEGORIES.items() if view in views), "other")


def parse_views(value: Any, dataset: str, offered: Sequence[str], where: str = "views") -> frozenset[str]:
    """The view values a ``views`` option keeps.

    Args:
        value: a category or a view (``"frontal"``, ``"PA"``), or a list of them
            (``["PA", "AP"]``, ``["frontal"]``); views in any case, categories in lower case or
            capitalised.
        dataset: the loader's name, for messages.
        offered: the views the format can hold (its ``view_values``); empty when it records none.
        where: the option's name in messages (``dataset_options.views``).

    Returns:
        The set of view values to keep (a category expands to its views the format offers).

    Raises:
        ConfigError: a value that is not a view or list of views, an empty list, a view the
            format cannot hold, a category it has no view of, or any ``views`` for a format that
            records none (each naming the item, the dataset and what it offers).
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}: need a view or a list of views (e.g. [PA], [PA, AP], frontal), got {value!r}")
    if not offered:
        raise ConfigError(f"{where}: dataset {dataset!r} records no view per image, so {value!r} cannot be "
                          f"honoured; leave 'views' out")
    keep: set[str] = set()
    for item in items:
        key = item.strip()
        if key.lower() in VIEW_CATEGORIES and key in (key.lower(), key.capitalize()):
            found = [v for v in VIEW_CATEGORIES[key.lower()] if v in offered]
            if not found:
                raise ConfigError(f"{where}: dataset {dataset!r} has no {key.lower()} views (its views: "
                                  f"{list(offered)})")
            keep.update(found)
        elif key.upper() in offered:
            keep.add(key.upper())
        else:
            raise ConfigError(f"{where}: {item!r} is not a view dataset {dataset!r} records; its views: "
                              f"{list(offered)}, or a category: {list(VIEW_CATEGORIES)}")
    return frozenset(keep)


def select_views(view: pd.Series, keep: frozenset[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The rows whose view is in ``keep``, and the counts to report.

    Returns:
        ``(mask, counts)``: ``mask`` true for the rows kept; ``counts`` holds ``kept``,
        ``dropped`` and ``dropped_views`` (dropped images per view value, :data:`NOT_RECORDED` for
        NaN), in decreasing order.
    """
    mask = view.isin(keep).to_numpy()
    dropped = view[~mask].fillna(NOT_RECORDED).value_counts()
    counts = {"views": sorted(keep), "kept": int(mask.sum()), "dropped": int((~mask).sum()),
              "dropped_views": {str(k): int(v) for k, v in dropped.items()}}
    return mask, counts


def with_category(position: pd.Series, is_frontal: pd.Series, is_lateral: pd.Series) -> tuple[pd.Series, int]:
    """Views from a position field and a frontal/lateral field that decides the category.

    Where the position belongs to the category the other field gives, it is kept; where it is
    blank or contradicts it, the view is ``FRONTAL`` (or ``LATERAL``); rows in neither category
    keep their position.

    Returns:
        ``(view, contradictions)``: the views and how many rows had a position contradicting
        their category (e.g. CheXpert's frontal images with ``AP/PA == "LL"``).
    """
    view = position.copy()
    cat = position.map(view_category)
    for flag, category, fallback in ((is_frontal, "frontal", "FRONTAL"), (is_lateral, "lateral", "LATERAL")):
        flag = flag.to_numpy(dtype=bool)
        view[flag & (cat != category).to_numpy()] = fallback
    contradictions = int(((is_frontal.to_numpy(dtype=bool) & cat.isin(["lateral", "other"]).to_numpy()) |
                          (is_lateral.to_numpy(dtype=bool) & cat.isin(["frontal", "other"]).to_numpy())).sum())
    return view, contradictions
