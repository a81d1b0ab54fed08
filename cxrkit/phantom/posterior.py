"""The exact posterior of the phantom's observed labels given what is drawn (section 5 of
``shared/design/synthetic_cxr.md``), the machinery behind :mod:`cxrkit.phantom.oracle`.

"Perfect perception" sees exactly which findings are drawn (the 13 flags r, DRAWABLE order)
and nothing else. Everything here is computed in closed form by enumerating the 2048 states
s = (c, h): the 2^6 cause configurations c and the 2^5 true values h of Lung Opacity's
children. Given s, the other noisy-OR findings, Lung Opacity, report noise and the drawn flags
are independent, so every quantity is a sum over states of products. No sampling, no training.

Exact ties: many posteriors are equal in exact arithmetic (Pleural Other depends on its own
flag only; a drawn finding is present whatever else is drawn) but come out ulps apart. So the
posterior of every possible drawn pattern (4224 of 2^13) is tabulated once per label-model
configuration (:class:`~cxrkit.phantom.model.LabelModel`: the site's cause priors and report-noise
rates, no noise without ``report_noise``), each label's values equal up to rounding are given one
value (checked unambiguous), and every oracle score is looked up there: AUCs on a finite split see
the exact ties as ties. A site's scanner does not enter: perfect perception sees what is drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from cxrkit.data.labels import LABELS
from cxrkit.phantom.model import (
    CAUSES,
    DEFAULT_CONFIG,
    DRAWABLE,
    LO_GIVEN_CHILD,
    LO_LEAK,
    LO_LEAK_VISIBILITY,
    LUNG_OPACITY_CHILDREN,
    NOISY_OR_FINDINGS,
    PATHOLOGIES,
    VISIBILITY,
    LabelModel,
    PhantomConfig,
    finding_probabilities,
)

_NF = LABELS.index("No Finding")
#: Position in LABELS of each DRAWABLE label.
_DRAWABLE_IN_LABELS = [LABELS.index(lab) for lab in DRAWABLE]
#: Positions in DRAWABLE of the pathologies (report-noised, define No Finding).
_PATH_IN_DRAWABLE = [DRAWABLE.index(p) for p in PATHOLOGIES]
#: Patterns per chunk of the state-posterior computation (chunk x 2048 float64 arrays).
_CHUNK = 2048
#: Tie canonicalisation (relative to the larger value): neighbours closer than _TIE_RTOL are one
#: value; a group wider than _MAX_SPREAD or a gap between groups below _MIN_GAP is ambiguous.
_TIE_RTOL, _MAX_SPREAD, _MIN_GAP = 1e-12, 1e-13, 1e-9


@dataclass(frozen=True)
class _States:
    """Per-state quantities, arrays over the 2048 states s = (c, h)."""

    prior: np.ndarray  # (S,) P(s)
    p_drawn: np.ndarray  # (S, 13) P(r_d = 1 | s)
    obs_if_drawn: np.ndarray  # (S, 13) P(y_obs_d = 1 | s, r_d = 1)
    obs_if_hidden: np.ndarray  # (S, 13) P(y_obs_d = 1 | s, r_d = 0)
    obs: np.ndarray  # (S, 14) P(y_obs_j = 1 | s), LABELS order (No Finding included)


def _label_model(spec: LabelModel | PhantomConfig | bool) -> LabelModel:
    """The label model of a config; a bool is ``report_noise`` at the default site."""
    if isinstance(spec, LabelModel):
        return spec
    if isinstance(spec, PhantomConfig):
        return spec.label_model
    if isinstance(spec, (bool, np.bool_)):
        return PhantomConfig(report_noise=bool(spec)).label_model
    raise TypeError(f"expected a LabelModel, PhantomConfig or report_noise bool, got {spec!r}")


def _states(spec: LabelModel | PhantomConfig | bool) -> _States:
    """The per-state quantities of a label model (cached per :class:`LabelModel`)."""
    return _states_of(_label_model(spec))


@lru_cache(maxsize=8)
def _states_of(lm: LabelModel) -> _States:
    """Enumerate the states and tabulate everything the oracle needs (design doc, section 5).

    The prior of a state is prod_k P(c_k) (the site's cause priors, ``lm.cause_prior``) times the
    noisy-OR probabilities of Lung Opacity's children given c; report noise enters through
    P(y_obs | y_true) with the rates ``lm.flip_pos_to_neg`` and ``lm.flip_neg_to_pos``.
    """
    n_c, n_h = 2 ** len(CAUSES), 2 ** len(LUNG_OPACITY_CHILDREN)
    c = (np.arange(n_c)[:, None] >> np.arange(len(CAUSES))) & 1  # (64, 6)
    h = (np.arange(n_h)[:, None] >> np.arange(len(LUNG_OPACITY_CHILDREN))) & 1  # (32, 5)
    cause_prior = np.asarray(lm.cause_prior, dtype=float)
    prior_c = np.prod(np.where(c == 1, cause_prior, 1 - cause_prior), axis=1)
    p_find = finding_probabilities(c)  # (64, 12)
    child_idx = [NOISY_OR_FINDINGS.index(ch) for ch in LUNG_OPACITY_CHILDREN]
    p_child = p_find[:, child_idx]  # (64, 5)
    prior_h = np.prod(
        np.where(h[None] == 1, p_child[:, None], 1 - p_child[:, None]), axis=2
    )  # (64, 32)

    # State s = ci * 32 + hi.
    ci = np.repeat(np.arange(n_c), n_h)
    hs = np.tile(h, (n_c, 1)).astype(float)  # (S, 5)
    prior = prior_c[ci] * prior_h.reshape(-1)
    any_child = hs.max(axis=1)

    n_s, n_d = prior.size, len(DRAWABLE)
    p_drawn = np.zeros((n_s, n_d))
    true_if_drawn = np.ones((n_s, n_d))
    true_if_hidden = np.zeros((n_s, n_d))
    true_marg = np.zeros((n_s, n_d))
    for j, f in enumerate(NOISY_OR_FINDINGS):
        d, v = DRAWABLE.index(f), VISIBILITY[f]
        if f in LUNG_OPACITY_CHILDREN:
            t = hs[:, LUNG_OPACITY_CHILDREN.index(f)]
            p_drawn[:, d] = t * v
            true_if_hidden[:, d] = t
            true_marg[:, d] = t
        else:
            p = p_find[ci, j]
            p_drawn[:, d] = p * v
            true_if_hidden[:, d] = p * (1 - v) / (1 - p * v)
            true_marg[:, d] = p
    lo = DRAWABLE.index("Lung Opacity")
    vis = LO_LEAK_VISIBILITY
    p_drawn[:, lo] = (1 - any_child) * LO_LEAK * vis
    true_if_drawn[:, lo] = np.where(any_child == 1, LO_GIVEN_CHILD, 1.0)
    true_if_hidden[:, lo] = np.where(
        any_child == 1, LO_GIVEN_CHILD, LO_LEAK * (1 - vis) / (1 - LO_LEAK * vis)
    )
    true_marg[:, lo] = np.where(any_child == 1, LO_GIVEN_CHILD, LO_LEAK)

    obs_marg = true_marg.copy()
    obs_if_drawn, obs_if_hidden = true_if_drawn.copy(), true_if_hidden.copy()
    for arr in (obs_marg, obs_if_drawn, obs_if_hidden):
        t = arr[:, _PATH_IN_DRAWABLE]
        arr[:, _PATH_IN_DRAWABLE] = t * (1 - lm.flip_pos_to_neg) + (1 - t) * lm.flip_neg_to_pos
    obs = np.zeros((n_s, len(LABELS)))
    obs[:, _DRAWABLE_IN_LABELS] = obs_marg
    obs[:, _NF] = np.prod(1 - obs_marg[:, _PATH_IN_DRAWABLE], axis=1)
    return _States(prior, p_drawn, obs_if_drawn, obs_if_hidden, obs)


def _drawn_array(drawn: np.ndarray | pd.DataFrame) -> np.ndarray:
    """(N, 13) 0/1 float array of drawn flags in DRAWABLE order."""
    if isinstance(drawn, pd.DataFrame):
        cols = [f"drawn_{lab}" for lab in DRAWABLE]
        missing = [col for col in cols if col not in drawn.columns]
        if missing:
            raise KeyError(f"drawn table lacks columns {missing}")
        arr = drawn[cols].to_numpy()
    else:
        arr = np.asarray(drawn)
    if arr.ndim != 2 or arr.shape[1] != len(DRAWABLE):
        raise ValueError(f"drawn must have shape (N, {len(DRAWABLE)}), got {arr.shape}")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError("drawn flags must be 0/1")
    return arr.astype(float)


def _product(r: np.ndarray, if_one: np.ndarray, if_zero: np.ndarray) -> np.ndarray:
    """prod_d (if_one[s, d] if r[m, d] else if_zero[s, d]) as an (M, S) array, exact zeros kept."""
    zero = (r @ (if_one == 0).T + (1 - r) @ (if_zero == 0).T) > 0
    with np.errstate(divide="ignore"):
        log1 = np.where(if_one > 0, np.log(if_one), 0.0)
        log0 = np.where(if_zero > 0, np.log(if_zero), 0.0)
    out = np.exp(r @ log1.T + (1 - r) @ log0.T)
    out[zero] = 0.0
    return out


def _posterior_patterns(r: np.ndarray, st: _States) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of the observed labels for distinct drawn patterns.

    Returns:
        ``(post, evidence)``: (M, 14) P(y_obs = 1 | r) in LABELS order (zeros where
        P(r) = 0) and (M,) P(r).
    """
    lik = _product(r, st.p_drawn, 1 - st.p_drawn)  # (M, S) P(r | s)
    joint = lik * st.prior
    evidence = joint.sum(axis=1)
    w = joint / np.where(evidence > 0, evidence, 1.0)[:, None]
    post = np.zeros((r.shape[0], len(LABELS)))
    post[:, _DRAWABLE_IN_LABELS] = np.where(r == 1, w @ st.obs_if_drawn, w @ st.obs_if_hidden)
    rp = r[:, _PATH_IN_DRAWABLE]
    none = _product(
        rp, 1 - st.obs_if_drawn[:, _PATH_IN_DRAWABLE], 1 - st.obs_if_hidden[:, _PATH_IN_DRAWABLE]
    )
    post[:, _NF] = (w * none).sum(axis=1)
    return np.clip(post, 0.0, 1.0), evidence  # clip rounding (e.g. 1 + 1e-16)


def _canonicalise(values: np.ndarray, name: str = "values") -> tuple[np.ndarray, float, float]:
    """Give values equal up to rounding one value, the group's upper median (design doc, 5).

    Sorted neighbours at most ``_TIE_RTOL`` apart relative to the larger form a group (relative:
    the posteriors are sums of non-negative products, and No Finding has distinct values down
    to 1e-18). ``values``: (P,) finite, >= 0; ``name`` labels the error message.

    Returns:
        ``(canonical, spread, gap)``: (P,) values; the largest relative spread (max - min) / max
        within a group; the smallest relative gap between groups (inf for a single group).

    Raises:
        ValueError: on negative or non-finite values, or an ambiguous grouping (spread >=
            ``_MAX_SPREAD`` or gap <= ``_MIN_GAP``), so that a model change cannot mis-merge.
    """
    values = np.asarray(values, dtype=float)
    if not (np.isfinite(values).all() and (values >= 0).all()):
        raise ValueError(f"{name}: scores to canonicalise must be finite and non-negative")
    order = np.argsort(values, kind="stable")
    v = values[order]
    rel = np.diff(v) / np.where(v[1:] > 0, v[1:], 1.0)
    new = rel > _TIE_RTOL
    starts = np.flatnonzero(np.concatenate([[v.size > 0], new]))
    sizes = np.diff(np.append(starts, v.size))
    lo, hi = v[starts], v[starts + sizes - 1]
    spread = float(((hi - lo) / np.where(hi > 0, hi, 1.0)).max(initial=0.0))
    gap = float(rel[new].min(initial=np.inf))
    if spread >= _MAX_SPREAD or gap <= _MIN_GAP:
        raise ValueError(
            f"{name}: ambiguous exact ties (relative spread within a group {spread:.3g}"
            f" must be < {_MAX_SPREAD:g}, gap between groups {gap:.3g} > {_MIN_GAP:g})"
        )
    out = np.empty_like(v)
    out[order] = np.repeat(v[starts + sizes // 2], sizes)
    return out, spread, gap


@dataclass(frozen=True)
class _Table:
    """The oracle on every possible drawn pattern (read-only arrays)."""

    patterns: np.ndarray  # (P, 13) possible 0/1 patterns, DRAWABLE order, by increasing code
    row: np.ndarray  # (2^13,) row in ``patterns`` of pattern code sum_d r_d 2^d, -1 if impossible
    post: np.ndarray  # (P, 14) canonical P(y_obs = 1 | r), LABELS order
    prob: np.ndarray  # (P,) P(r)
    spread: np.ndarray  # (14,) largest relative spread within a tie group, per label
    gap: np.ndarray  # (14,) smallest relative gap between tie groups, per label


def _pattern_table(spec: LabelModel | PhantomConfig | bool) -> _Table:
    """The canonical posterior of all possible drawn patterns of a label model (cached per
    :class:`LabelModel`; a bool is ``report_noise`` at the default site).

    Raises:
        ValueError: if a label's ties are ambiguous (see :func:`_canonicalise`).
    """
    return _pattern_table_of(_label_model(spec))


@lru_cache(maxsize=8)
def _pattern_table_of(lm: LabelModel) -> _Table:
    """Tabulate the canonical posterior of all possible drawn patterns (design doc, section 5).

    Raises:
        ValueError: if a label's ties are ambiguous (see :func:`_canonicalise`).
    """
    st = _states_of(lm)
    n_d = len(DRAWABLE)
    r = ((np.arange(2**n_d)[:, None] >> np.arange(n_d)) & 1).astype(float)
    parts = [_posterior_patterns(r[i : i + _CHUNK], st) for i in range(0, len(r), _CHUNK)]
    prob = np.concatenate([e for _, e in parts])
    possible = prob > 0
    raw = np.concatenate([p for p, _ in parts])[possible]
    post, spread, gap = np.empty_like(raw), np.empty(len(LABELS)), np.empty(len(LABELS))
    for j, lab in enumerate(LABELS):
        post[:, j], spread[j], gap[j] = _canonicalise(
            raw[:, j], f"oracle posterior of {lab} ({lm.describe()})"
        )
    row = np.full(2**n_d, -1)
    row[possible] = np.arange(possible.sum())
    table = _Table(r[possible], row, post, prob[possible], spread, gap)
    for arr in vars(table).values():
        arr.setflags(write=False)
    return table


def posterior(
    drawn: np.ndarray | pd.DataFrame, config: PhantomConfig = DEFAULT_CONFIG
) -> np.ndarray:
    """Exact oracle scores P(y_obs_j = 1 | r) given all 13 drawn flags (design doc, section 5).

    Looked up in the canonical table of all possible patterns: exact ties are kept.

    Args:
        drawn: (N, 13) 0/1 flags in DRAWABLE order, or a table with ``drawn_<label>`` columns.
        config: label-model options: only its label model matters (``report_noise`` and the
            site's cause priors and report-noise rates, :attr:`PhantomConfig.label_model`).

    Returns:
        (N, 14) probabilities in LABELS order.

    Raises:
        ValueError: if a pattern is impossible under the model (e.g. the Lung Opacity haze
            drawn together with one of its children), or if the flags are malformed.
    """
    r = _drawn_array(drawn)
    table = _pattern_table(config.label_model)
    codes = r.astype(np.int64) @ (1 << np.arange(len(DRAWABLE), dtype=np.int64))
    rows = table.row[codes]
    if (rows < 0).any():
        bad = np.unique(codes[rows < 0])
        example = ((bad[0] >> np.arange(len(DRAWABLE))) & 1).tolist()
        raise ValueError(
            f"{len(bad)} drawn pattern(s) impossible under the phantom model, e.g. {example}"
        )
    return table.post[rows]


def _marginal_tables(config: PhantomConfig) -> tuple[np.ndarray, np.ndarray]:
    """P(y_obs_d = 1 | r_d = 1) and P(y_obs_d = 1 | r_d = 0) for the 13 drawable labels."""
    st = _states(config.label_model)
    p1 = st.prior @ st.p_drawn
    given1 = (st.prior @ (st.p_drawn * st.obs_if_drawn)) / p1
    given0 = (st.prior @ ((1 - st.p_drawn) * st.obs_if_hidden)) / (1 - p1)
    return np.clip(given1, 0.0, 1.0), np.clip(given0, 0.0, 1.0)


def marginal_posterior(
    drawn: np.ndarray | pd.DataFrame, config: PhantomConfig = DEFAULT_CONFIG
) -> np.ndarray:
    """Marginal oracle scores P(y_obs_j = 1 | r_j), each label from its own drawn flag only.

    No Finding has no drawn flag of its own, so its marginal score is its prevalence
    P(y_obs = 1), a constant (AUC 0.5). This is the literal reading of "only the label's own
    evidence" and reproduces the page's marginal macro AUC of about 0.80 and its statement
    that No Finding gains most from the dependencies. (Scoring it instead as the product over
    the pathologies of (1 - their marginal score) would give it an AUC of about 0.93 and a
    marginal macro AUC of about 0.83.)

    Args:
        drawn: (N, 13) 0/1 flags in DRAWABLE order, or a table with ``drawn_<label>`` columns.
        config: label-model options (only its label model matters, as in :func:`posterior`).

    Returns:
        (N, 14) probabilities in LABELS order.
    """
    r = _drawn_array(drawn)
    given1, given0 = _marginal_tables(config)
    m = np.where(r == 1, given1, given0)
    out = np.zeros((r.shape[0], len(LABELS)))
    out[:, _DRAWABLE_IN_LABELS] = m
    out[:, _NF] = prevalences(config)["No Finding"]
    return out


def prevalences(config: PhantomConfig = DEFAULT_CONFIG) -> pd.Series:
    """Exact P(y_obs_j = 1) of the 14 labels under the config's label model (their sum is the
    expected positives per image)."""
    st = _states(config.label_model)
    return pd.Series(st.prior @ st.obs, index=list(LABELS), name="prevalence")
