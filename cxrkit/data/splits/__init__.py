"""Patient-grouped multilabel stratified splits: a held-out test set plus K cross-validation folds.

With ``group="patient"`` (the default) whole patients are assigned, so no patient is in two
folds or in both test and train, stratified on what the folds are used for: each patient's
positive *image* counts per label, and the parts' sizes in images (own grouped count
stratification, see :mod:`cxrkit.data.splits.stratify`: iterative stratification generalised to counts,
then a local search). ``group="image"`` stratifies images with multilabel iterative
stratification (Sechidis et al. 2011, via ``iterstrat``) as in the paper; it leaks patients
across folds, which :func:`leakage_report` measures. :func:`split_comparison` sets the worst
label-prevalence gap of a split against random patient folds and image-level MIS.

A splits table has one row per image, in the order of the data table it was made from:

* ``image``, ``patient_id``: ids copied from the data table;
* ``split``: ``"train"`` or ``"test"`` (``test_split="official"``: the dataset's official test
  images, the folds made from the rest);
* ``fold``: for train rows the fold ``0..K-1`` in which the row is in *validation*; ``-1`` for
  test rows.

``splits.attrs`` holds ``n_folds``, ``test_size``, ``seed``, ``group`` and ``labels``.

Modules: :mod:`~cxrkit.data.splits.make` (making them), :mod:`~cxrkit.data.splits.files`
(``folds.csv``/``folds.json``), :mod:`~cxrkit.data.splits.leakage`,
:mod:`~cxrkit.data.splits.balance`, :mod:`~cxrkit.data.splits.table` (the table's helpers) and
:mod:`~cxrkit.data.splits.stratify` (the assignment algorithms).
"""

from cxrkit.data.splits.balance import balance_gaps, balance_table, split_comparison
from cxrkit.data.splits.files import load_splits, save_splits
from cxrkit.data.splits.leakage import LeakageError, check_leakage, leakage_report
from cxrkit.data.splits.make import make_splits, official_test_rows
from cxrkit.data.splits.table import (
    GROUPS,
    SPLIT_COLUMNS,
    SPLIT_METHODS,
    TEST_SPLITS,
    fold_indices,
    test_indices,
)

__all__ = [
    "GROUPS",
    "SPLIT_COLUMNS",
    "SPLIT_METHODS",
    "TEST_SPLITS",
    "LeakageError",
    "balance_gaps",
    "balance_table",
    "check_leakage",
    "fold_indices",
    "leakage_report",
    "load_splits",
    "make_splits",
    "official_test_rows",
    "save_splits",
    "split_comparison",
    "test_indices",
]
