"""Assigning stratification units (patients or images) to a test set and K folds.

Three assignments, each returning ``is_test`` (bool per unit) and ``fold`` (int per unit, ``-1``
for test units), deterministic for a seed and for units given in a fixed (sorted id) order:

* :func:`assign_mis` - multilabel iterative stratification (Sechidis et al. 2011) of units with
  boolean label vectors, via ``iterstrat``; :mod:`cxrkit.data.splits` uses it for images
  (``group="image"``, the paper's splits).
* :func:`assign_grouped` - whole patients, stratified on what the folds are used for: per-patient
  positive *image* counts per label, and fold size in images. Own code, because no library does
  grouped multilabel stratification with counts: scikit-learn's ``StratifiedGroupKFold`` is
  single-label and ``iterstrat`` has no groups. Two steps, for the test/train split (shares
  ``test_size``, ``1 - test_size`` of the images) and then the K folds of train (equal shares):

  1. Iterative stratification (Sechidis, Tsoumakas and Vlahavas, "On the stratification of
     multi-label data", ECML PKDD 2011) generalised to count vectors: the desired count of each
     part and label is the label's total positive images times the part's share; labels are
     taken rarest first (fewest remaining positive images), and each unassigned patient
     positive for the label, largest count first, goes to the part that most lacks the label,
     ties broken by the part's image-count deficit and then at random (seeded). Patients with
     no positive image go, largest first, to the part with the largest image deficit.
  2. A bounded, deterministic local search: move one patient to another part, or swap two
     patients between parts, while that lowers the sum over parts of squared deviations
     ``sum_l w_l^2 (P_fl - p_l K_fl)^2 + (N_f - s_f N)^2``, each part's term divided by its
     share squared: ``P_fl`` positive images of label ``l`` in part ``f``, ``K_fl`` its images
     with a known (non-NaN) value, ``p_l`` the label's prevalence in the units being split,
     ``N_f`` the part's images, ``s_f`` its share of the ``N`` images and
     ``w_l = min(N / K_l, 10)``. The label terms are, up to a constant factor, the part's
     squared prevalence gaps (what :func:`cxrkit.data.splits.balance_gaps` reports the worst of);
     the last keeps the parts at their share of images. Each step takes the best move; when no move helps, the best swap of the
     best moves' patients (all of them up to ~1,400 patients, fewer above) with any patient of
     the target part; at most 2 steps per patient (plus 100). Deviations are integers in
     1/16 image, so the search is exact and gives the same folds on any machine.

  A patient holding more than a part's share of a label's positive images forces a gap that no
  grouped split avoids (image-level splits do, by leaking the patient).

* :func:`assign_random` - units at random, for comparison.
"""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

_RESOLUTION = 16  # deviations are counted in 1/16 image, as integers
_MAX_WEIGHT = 10.0  # cap of N / K_l for labels mostly unknown (NaN)
_SWAP_PAIRS = 2_000_000  # swaps evaluated per round, at most: all of them for up to ~1,400 units
_MAX_STEPS_PER_UNIT = 2  # bound on the moves and swaps: this many per unit, plus 100
_MIN_GAIN = 0.5  # a move or swap must lower the objective by this much (in (1/16 image)^2)


def _n_test(n: int, n_folds: int, test_size: float, unit: str) -> int:
    """Units held out for test when ``test_size`` of ``n`` are; raises when too few remain."""
    n_test = int(np.ceil(test_size * n)) if test_size > 0 else 0
    if n - n_test < n_folds:
        if n_test:
            raise ValueError(f"n_folds={n_folds} needs at least {n_folds} {unit}s in train; {n} {unit}s with "
                             f"test_size={test_size} leave {n - n_test}")
        raise ValueError(f"n_folds={n_folds} needs at least {n_folds} {unit}s in train; got {n}")
    return n_test


def assign_mis(y: np.ndarray, n_folds: int, test_size: float, seed: int,
               unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Iterative stratification of units with boolean label rows ``y``, via ``iterstrat``."""
    n = len(y)
    # iterstrat accepts only a 2-D multilabel indicator with >= 2 columns; an all-zero column
    # never drives the assignment, so it makes a single label acceptable without changing it.
    if y.shape[1] < 2:
        y = np.hstack([y, np.zeros((n, 1), dtype=bool)])
    is_test = np.zeros(n, dtype=bool)
    if _n_test(n, n_folds, test_size, unit):
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        _, test_idx = next(splitter.split(np.zeros(n), y))
        is_test[test_idx] = True
    train_idx = np.flatnonzero(~is_test)
    fold = np.full(n, -1, dtype=int)
    kfold = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val) in enumerate(kfold.split(np.zeros(len(train_idx)), y[train_idx])):
        fold[train_idx[val]] = k
    return is_test, fold


def assign_random(n: int, n_folds: int, test_size: float, seed: int,
                  unit: str = "patient") -> tuple[np.ndarray, np.ndarray]:
    """Units at random: ``ceil(test_size * n)`` to test, the rest dealt round-robin to the folds."""
    n_test = _n_test(n, n_folds, test_size, unit)
    order = np.random.default_rng(seed).permutation(n)
    fold = np.full(n, -1, dtype=int)
    fold[order[n_test:]] = np.arange(n - n_test) % n_folds
    return fold < 0, fold


def assign_grouped(counts: np.ndarray, known: np.ndarray, sizes: np.ndarray, n_folds: int,
                   test_size: float, seed: int, unit: str = "patient") -> tuple[np.ndarray, np.ndarray]:
    """Grouped count stratification (module docstring) of units with positive-image ``counts``
    and ``known``-value counts (both units x labels) and ``sizes`` (images per unit).

    Raises:
        ValueError: fewer than ``n_folds`` units would remain in train (``ceil(test_size * n)``
            units counted for test, as for the other assignments).
    """
    n = len(sizes)
    counts, known, sizes = (np.asarray(a, dtype=np.int64) for a in (counts, known, sizes))
    rng = np.random.default_rng(seed)
    is_test = np.zeros(n, dtype=bool)
    if _n_test(n, n_folds, test_size, unit):
        shares = np.array([test_size, 1 - test_size])
        is_test = _assign(counts, known, sizes, shares, rng, min_train=n_folds) == 0
    train = np.flatnonzero(~is_test)  # at least n_folds units: see _assign's min_train
    fold = np.full(n, -1, dtype=int)
    fold[train] = _assign(counts[train], known[train], sizes[train], np.full(n_folds, 1 / n_folds), rng)
    return is_test, fold


def _features(counts: np.ndarray, known: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per unit: ``w_l (P_il - p_l K_il)`` for each label and the unit's images, in 1/16 image.

    Integers: the sums and products of the search are exact, hence the same on every machine
    (and int64 products stay clear of BLAS threads, slow on busy machines for these shapes).
    """
    pos, kno = counts.sum(axis=0), known.sum(axis=0)
    prevalence = np.divide(pos, kno, out=np.zeros(len(pos)), where=kno > 0)
    weight = np.minimum(np.divide(sizes.sum(), kno, out=np.zeros(len(pos)), where=kno > 0), _MAX_WEIGHT)
    residual = (counts - prevalence * known) * weight
    return np.rint(_RESOLUTION * np.column_stack([residual, sizes])).astype(np.int64)


def _assign(counts: np.ndarray, known: np.ndarray, sizes: np.ndarray, shares: np.ndarray,
            rng: np.random.Generator, min_train: int = 1) -> np.ndarray:
    """Part (index into ``shares``) of each unit: iterative stratification, then local search.

    Units are visited in a seeded random order, so ties depend on the seed. ``min_train`` units
    at least stay in the last part (train, when splitting off test), one at least in the others.
    """
    n = len(sizes)
    order = rng.permutation(n)
    tie = rng.random((n, len(shares)))
    part = _iterative(counts[order], sizes[order], shares, tie)
    minimum = np.ones(len(shares), dtype=int)
    minimum[-1] = min_train
    part = _fill_empty(part, sizes[order], minimum)
    part = _local_search(_features(counts, known, sizes)[order], part, shares, minimum)
    out = np.empty(n, dtype=int)
    out[order] = part
    return out


def _pick(lack: np.ndarray, room: np.ndarray, tie: np.ndarray) -> int:
    """The part that most lacks the label, then has the most room (image deficit), then ``tie``."""
    best = np.flatnonzero(lack == lack.max())
    if len(best) > 1:
        best = best[room[best] == room[best].max()]
    return int(best[np.argmax(tie[best])])


def _iterative(counts: np.ndarray, sizes: np.ndarray, shares: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Sechidis et al.'s iterative stratification with positive-image counts (module docstring)."""
    n, n_labels = counts.shape
    lack = np.outer(shares, counts.sum(axis=0)).astype(float)  # desired minus assigned, per part, label
    room = shares * sizes.sum()
    left = counts.sum(axis=0).astype(float)  # positive images of unassigned units
    part = np.full(n, -1, dtype=int)
    for _ in range(n_labels):
        if not (left > 0).any():
            break
        label = int(np.argmin(np.where(left > 0, left, np.inf)))
        units = np.flatnonzero((counts[:, label] > 0) & (part < 0))
        for i in units[np.argsort(-counts[units, label], kind="stable")]:
            f = _pick(lack[:, label], room, tie[i])
            part[i] = f
            lack[f] -= counts[i]
            room[f] -= sizes[i]
            left -= counts[i]
    rest = np.flatnonzero(part < 0)
    for i in rest[np.argsort(-sizes[rest], kind="stable")]:
        f = _pick(room, room, tie[i])
        part[i] = f
        room[f] -= sizes[i]
    return part


def _fill_empty(part: np.ndarray, sizes: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    """Give each part its ``minimum`` of units: the smallest unit of the part with the most units."""
    part = part.copy()
    n_parts = len(minimum)
    while True:
        have = np.bincount(part, minlength=n_parts)
        short = np.flatnonzero(have < minimum)
        if not len(short):
            return part
        donor = int(np.argmax(have - minimum))
        units = np.flatnonzero(part == donor)
        part[units[np.argmin(sizes[units])]] = short[0]


def _local_search(x: np.ndarray, part: np.ndarray, shares: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    """Moves and swaps of units between parts while they lower the objective (module docstring)."""
    part = part.copy()
    n, n_parts = len(x), len(shares)
    total = x.sum(axis=0)
    target = np.rint(np.outer(shares, total)).astype(np.int64)
    dev = np.zeros((n_parts, x.shape[1]), dtype=np.int64)
    np.add.at(dev, part, x)
    dev -= target
    scale = 1.0 / shares**2  # a part's squared deviations count relative to its size
    sq = (x * x).sum(axis=1)
    units = np.arange(n)
    for _ in range(_MAX_STEPS_PER_UNIT * n + 100):
        g = x @ dev.T  # (units, parts): exact, integer-valued
        have = np.bincount(part, minlength=n_parts)
        leave = (sq - 2 * g[units, part]) * scale[part]
        delta = (sq[:, None] + 2 * g) * scale[None, :] + leave[:, None]
        delta[units, part] = np.inf
        delta[have[part] <= minimum[part]] = np.inf
        best = int(np.argmin(delta))
        if delta.flat[best] < -_MIN_GAIN:
            i, f = divmod(best, n_parts)
            dev[part[i]] -= x[i]
            dev[f] += x[i]
            part[i] = f
            continue
        swap = _best_swap(x, sq, g, dev, part, scale, delta)
        if swap is None:
            break
        i, j = swap
        a, b = part[i], part[j]
        dev[a] += x[j] - x[i]
        dev[b] += x[i] - x[j]
        part[i], part[j] = b, a
    return part


def _best_swap(x: np.ndarray, sq: np.ndarray, g: np.ndarray, dev: np.ndarray, part: np.ndarray,
               scale: np.ndarray, delta: np.ndarray) -> tuple[int, int] | None:
    """The best swap of one of the best single moves (unit ``i`` to part ``b``) with any unit
    ``j`` of ``b``, or None when none lowers the objective. The single moves tried are all of
    them for small data, the best ``_SWAP_PAIRS / units`` (at least 64) for large."""
    n_parts = len(scale)
    flat = np.argsort(delta, axis=None, kind="stable")[:max(64, _SWAP_PAIRS // len(part))]
    flat = flat[np.isfinite(delta.flat[flat])]
    best, found = -_MIN_GAIN, None
    for b in np.unique(flat % n_parts):
        cand = flat[flat % n_parts == b] // n_parts  # units i, each in a part a != b
        others = np.flatnonzero(part == b)  # units j
        a = part[cand]
        cross = x[others] @ x[cand].T  # (j, i)
        v2 = sq[cand][None, :] + sq[others][:, None] - 2 * cross  # |x_i - x_j|^2
        to_b = 2 * (g[cand, b][None, :] - g[others, b][:, None]) + v2
        to_a = -2 * (g[cand, a][None, :] - g[others][:, a]) + v2
        change = to_b * scale[b] + to_a * scale[a][None, :]
        k = int(np.argmin(change))
        if change.flat[k] < best:
            best, found = change.flat[k], (int(cand[k % len(cand)]), int(others[k // len(cand)]))
    return found
