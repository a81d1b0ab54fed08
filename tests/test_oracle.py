"""Tests of cxrkit.phantom.oracle against brute-force enumeration and Monte Carlo samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrkit.data.labels import LABELS
from cxrkit.phantom import model
from cxrkit.phantom.model import DRAWABLE, PATHOLOGIES, PhantomConfig
from cxrkit.phantom.oracle import (
    coupling_matrix,
    expected_positive_count,
    marginal_posterior,
    oracle_auc,
    oracle_scores,
    population_auc,
    posterior,
    prevalences,
)
from cxrkit.phantom.posterior import _canonicalise, _pattern_table, _posterior_patterns, _states
from cxrkit.phantom.sampling import sample_studies, split_table


@pytest.fixture(scope="module")
def first_studies() -> pd.DataFrame:
    """First study of 150000 patients: independent draws from the per-study model."""
    df = sample_studies(150_000, seed=21)
    return df[df["Study"] == 1].reset_index(drop=True)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return sample_studies(20_000, seed=22)


@pytest.fixture(scope="module")
def seed7() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(labels, truth) of sample_studies(20000, seed=7), the exact-ties example of issue 10."""
    return split_table(sample_studies(20_000, seed=7))


def _brute_force_posterior(r: np.ndarray, config: PhantomConfig) -> np.ndarray:
    """P(y_obs | r) by enumerating causes and all 13 true drawable labels (no shortcuts)."""
    n_c, n_y = 2 ** len(model.CAUSES), 2 ** len(DRAWABLE)
    c = (np.arange(n_c)[:, None] >> np.arange(len(model.CAUSES))) & 1
    y = ((np.arange(n_y)[:, None] >> np.arange(len(DRAWABLE))) & 1).astype(float)
    prior = np.ones(n_c)
    for k, cause in enumerate(model.CAUSES):
        prior *= np.where(c[:, k] == 1, model.CAUSE_PRIOR[cause], 1 - model.CAUSE_PRIOR[cause])
    joint = np.tile(prior[:, None], (1, n_y))
    for f in model.NOISY_OR_FINDINGS:
        keep = np.prod(
            [(1 - w) ** c[:, model.CAUSES.index(k)] for k, w in model.WEIGHTS[f].items()], axis=0
        )
        p = 1 - (1 - model.LEAK[f]) * keep
        yd = y[:, DRAWABLE.index(f)]
        joint *= np.where(yd[None] == 1, p[:, None], 1 - p[:, None])
    lo = DRAWABLE.index("Lung Opacity")
    child = y[:, [DRAWABLE.index(ch) for ch in model.LUNG_OPACITY_CHILDREN]].max(axis=1)
    p_lo = np.where(child == 1, model.LO_GIVEN_CHILD, model.LO_LEAK)
    lik = np.where(y[:, lo] == 1, p_lo, 1 - p_lo)
    for d, lab in enumerate(DRAWABLE):
        if lab == "Lung Opacity":
            p_r = y[:, lo] * (1 - child) * model.LO_LEAK_VISIBILITY
        else:
            p_r = y[:, d] * model.VISIBILITY[lab]
        lik = lik * (p_r if r[d] == 1 else 1 - p_r)
    w = (joint * lik[None]).sum(axis=0)
    w = w / w.sum()
    f10 = model.FLIP_POS_TO_NEG if config.report_noise else 0.0
    f01 = model.FLIP_NEG_TO_POS if config.report_noise else 0.0
    p_obs = y * (1 - f10) + (1 - y) * f01
    p_obs[:, DRAWABLE.index("Support Devices")] = y[:, DRAWABLE.index("Support Devices")]
    out = np.zeros(len(LABELS))
    for d, lab in enumerate(DRAWABLE):
        out[LABELS.index(lab)] = w @ p_obs[:, d]
    path = [DRAWABLE.index(p) for p in PATHOLOGIES]
    out[LABELS.index("No Finding")] = w @ np.prod(1 - p_obs[:, path], axis=1)
    return out


def _pattern(*drawn: str) -> np.ndarray:
    r = np.zeros(len(DRAWABLE))
    r[[DRAWABLE.index(lab) for lab in drawn]] = 1
    return r


PATTERNS = [
    (),
    ("Lung Opacity",),
    ("Pneumonia",),
    ("Cardiomegaly", "Pleural Effusion"),
    ("Support Devices", "Atelectasis", "Pneumothorax"),
    ("Fracture", "Enlarged Cardiomediastinum", "Lung Opacity"),
    ("Pleural Other", "Lung Lesion", "Edema"),
]


@pytest.mark.parametrize("report_noise", [True, False])
def test_posterior_equals_brute_force(report_noise: bool) -> None:
    config = PhantomConfig(report_noise=report_noise)
    r = np.stack([_pattern(*p) for p in PATTERNS])
    got = posterior(r, config)
    expected = np.stack([_brute_force_posterior(row, config) for row in r])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_posterior_rejects_impossible_pattern() -> None:
    with pytest.raises(ValueError, match="impossible"):
        posterior(_pattern("Lung Opacity", "Edema")[None])
    with pytest.raises(ValueError):
        posterior(np.zeros((2, 12)))


def test_posterior_matches_monte_carlo(first_studies: pd.DataFrame) -> None:
    drawn_cols = [f"drawn_{lab}" for lab in DRAWABLE]
    groups = first_studies.groupby(drawn_cols)
    top = groups.size().sort_values(ascending=False).index[:8]
    for key in top:
        rows = groups.get_group(key)
        n = len(rows)
        p = posterior(np.array(key)[None])[0]
        freq = rows[list(LABELS)].mean().to_numpy()
        tol = 5 * np.sqrt(p * (1 - p) / n) + 2 / n
        assert (np.abs(freq - p) < tol).all(), (key, n, freq - p, tol)


def test_marginal_posterior_matches_monte_carlo(first_studies: pd.DataFrame) -> None:
    scores = marginal_posterior(first_studies)
    for lab in DRAWABLE:
        j = LABELS.index(lab)
        r = first_studies[f"drawn_{lab}"].to_numpy()
        for flag in (0, 1):
            sel = r == flag
            p = scores[sel, j]
            assert np.ptp(p) == 0  # depends on its own flag only
            n, freq = sel.sum(), first_studies.loc[sel, lab].mean()
            assert abs(freq - p[0]) < 5 * np.sqrt(p[0] * (1 - p[0]) / n) + 2 / n, (lab, flag)
    nf = scores[:, LABELS.index("No Finding")]
    assert np.ptp(nf) == 0 and nf[0] == pytest.approx(prevalences()["No Finding"])


def test_prevalences_match_sample(sample: pd.DataFrame) -> None:
    prev = prevalences()
    assert list(prev.index) == list(LABELS)
    assert expected_positive_count() == pytest.approx(prev.sum())
    y = sample[list(LABELS)].to_numpy(dtype=float)
    n = len(y)
    for j, lab in enumerate(LABELS):
        # Studies of one patient are correlated: cluster-robust standard error by patient.
        resid = pd.Series(y[:, j] - prev[lab]).groupby(sample["Patient_ID"].to_numpy()).sum()
        se = np.sqrt((resid**2).sum()) / n
        assert abs(y[:, j].mean() - prev[lab]) < 5 * se, lab
    per_image = sample[list(LABELS)].sum(axis=1)
    se = np.sqrt(((per_image - prev.sum()).groupby(sample["Patient_ID"]).sum() ** 2).sum()) / n
    assert abs(per_image.mean() - prev.sum()) < 5 * se


def test_prevalences_without_noise_are_true_label_rates(first_studies: pd.DataFrame) -> None:
    prev = prevalences(PhantomConfig(report_noise=False))
    noisy = prevalences()
    for lab in LABELS:
        p, freq = prev[lab], first_studies[f"true_{lab}"].mean()
        assert abs(freq - p) < 5 * np.sqrt(p * (1 - p) / len(first_studies)), lab
    assert prev["Support Devices"] == pytest.approx(noisy["Support Devices"], abs=1e-15)
    assert prev["No Finding"] > noisy["No Finding"]  # 0 -> 1 flips remove No Finding


def _empirical_lor(df: pd.DataFrame, a: str, b: str) -> tuple[float, float]:
    x, y = df[a].to_numpy() == 1, df[b].to_numpy() == 1
    cells = np.array([(x & y).sum(), (x & ~y).sum(), (~x & y).sum(), (~x & ~y).sum()], dtype=float)
    lor = np.log(cells[0]) + np.log(cells[3]) - np.log(cells[1]) - np.log(cells[2])
    return lor, float(np.sqrt((1 / cells).sum()))


def test_coupling_matrix_matches_sample(first_studies: pd.DataFrame) -> None:
    cm = coupling_matrix()
    assert list(cm.index) == list(cm.columns) == list(LABELS)
    assert np.isnan(np.diag(cm.to_numpy())).all()
    off = ~np.eye(len(LABELS), dtype=bool)
    np.testing.assert_allclose(cm.to_numpy()[off], cm.to_numpy().T[off], rtol=1e-12, atol=1e-12)
    pairs = [
        ("Cardiomegaly", "Edema"),
        ("Consolidation", "Pneumonia"),
        ("Fracture", "Pneumothorax"),
        ("Atelectasis", "Lung Opacity"),
        ("Support Devices", "No Finding"),
        ("Atelectasis", "Cardiomegaly"),
    ]
    for a, b in pairs:
        lor, se = _empirical_lor(first_studies, a, b)
        assert abs(lor - cm.loc[a, b]) < 5 * se, (a, b, lor, cm.loc[a, b])
    assert cm.loc["Cardiomegaly", "Edema"] > 1.0
    assert cm.loc["Atelectasis", "Cardiomegaly"] == pytest.approx(0.0, abs=1e-9)
    for path in PATHOLOGIES:
        assert cm.loc["No Finding", path] == -np.inf
    both = (first_studies["No Finding"] == 1) & (first_studies["Pleural Effusion"] == 1)
    assert not both.any()


def test_oracle_beats_marginal_and_matches_population(sample: pd.DataFrame) -> None:
    train, truth = split_table(sample)
    per_label, macro = oracle_auc(truth, train)
    per_label_m, macro_m = oracle_auc(truth, train, marginal=True)
    assert list(per_label.index) == list(LABELS)
    assert macro > macro_m + 0.05
    assert per_label_m["No Finding"] == pytest.approx(0.5)
    pop, pop_macro = population_auc()
    _, pop_macro_m = population_auc(marginal=True)
    assert abs(macro - pop_macro) < 0.01 and abs(macro_m - pop_macro_m) < 0.01
    assert (per_label >= per_label_m - 0.01).all()


def test_design_page_reference_numbers() -> None:
    """The page's stated prevalences and oracle AUCs (section 2) come out of the constants."""
    prev = prevalences()
    page = {
        "Lung Opacity": 0.46,
        "Support Devices": 0.43,
        "Pleural Effusion": 0.32,
        "No Finding": 0.31,
        "Edema": 0.21,
        "Pleural Other": 0.025,
    }
    for lab, p in page.items():
        assert abs(prev[lab] - p) < 0.01, lab
    assert abs(expected_positive_count() - 2.5) < 0.1
    assert abs(population_auc()[1] - 0.895) < 0.005
    assert abs(population_auc(marginal=True)[1] - 0.80) < 0.01


def test_oracle_auc_alignment_and_missing(sample: pd.DataFrame) -> None:
    train, truth = split_table(sample.iloc[:4000])
    rng = np.random.default_rng(0)
    labels = train.sample(frac=1.0, random_state=1).reset_index(drop=True)
    labels["Edema"] = labels["Edema"].astype(float)
    labels.loc[rng.random(len(labels)) < 0.2, "Edema"] = np.nan
    labels.loc[rng.random(len(labels)) < 0.2, "Atelectasis"] = -1
    labels["Fracture"] = 0
    per_label, macro = oracle_auc(truth, labels)
    scores = oracle_scores(truth).set_index("Image_name").loc[labels["Image_name"]]
    for lab in ("Edema", "Atelectasis", "Cardiomegaly"):
        keep = labels[lab].isin([0, 1]).to_numpy()
        expected = roc_auc_score(labels.loc[keep, lab], scores[lab].to_numpy()[keep])
        assert per_label[lab] == pytest.approx(expected), lab
    assert np.isnan(per_label["Fracture"])
    assert macro == pytest.approx(per_label.drop("Fracture").mean())


def test_oracle_scores_layout(sample: pd.DataFrame) -> None:
    _, truth = split_table(sample.iloc[:50])
    scores = oracle_scores(truth)
    assert list(scores.columns) == ["Image_name", *LABELS]
    assert (scores["Image_name"] == truth["Image_name"].to_numpy()).all()
    values = scores[list(LABELS)].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    np.testing.assert_allclose(
        values, posterior(truth[[f"drawn_{lab}" for lab in DRAWABLE]].to_numpy())
    )


def test_exact_ties_on_finite_sample(seed7: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Pleural Other depends on its own flag only: 2 scores, and the marginal oracle's AUC."""
    labels, truth = seed7
    po = LABELS.index("Pleural Other")
    assert len(np.unique(posterior(truth)[:, po])) == 2
    per_label, macro = oracle_auc(truth, labels)
    per_label_m, _ = oracle_auc(truth, labels, marginal=True)
    assert per_label["Pleural Other"] == pytest.approx(0.7440, abs=5e-5)
    assert macro == pytest.approx(0.8926, abs=5e-5)
    assert per_label["Pleural Other"] == pytest.approx(per_label_m["Pleural Other"], abs=1e-12)
    pop, _ = population_auc()
    pop_m, _ = population_auc(marginal=True)
    assert pop["Pleural Other"] == pytest.approx(pop_m["Pleural Other"], abs=1e-12)
    # The marginal oracle stays tie-exact: two scores per drawable label, one for No Finding.
    marg = marginal_posterior(truth)
    assert all(len(np.unique(marg[:, LABELS.index(lab)])) <= 2 for lab in DRAWABLE)
    assert len(np.unique(marg[:, LABELS.index("No Finding")])) == 1


@pytest.mark.parametrize("report_noise", [True, False])
def test_canonical_table_is_well_separated(report_noise: bool) -> None:
    table = _pattern_table(report_noise)
    assert len(table.patterns) == 2 ** len(DRAWABLE) - 2**7 * 31  # haze excludes drawn children
    assert table.prob.sum() == pytest.approx(1.0, abs=1e-12)
    assert table.spread.max() < 1e-13 and table.gap.min() > 1e-9
    raw, _ = _posterior_patterns(np.asarray(table.patterns), _states(report_noise))
    np.testing.assert_allclose(table.post, raw, rtol=1e-12, atol=0)  # only rounding moved
    config = PhantomConfig(report_noise=report_noise)
    assert np.array_equal(posterior(table.patterns, config), table.post)
    assert not table.post.flags.writeable


@pytest.mark.parametrize("report_noise", [True, False])
def test_context_specific_exact_ties(report_noise: bool) -> None:
    """Ties that d-separation alone does not give, exact in the table."""
    config = PhantomConfig(report_noise=report_noise)
    f10, f01 = config.flip_pos_to_neg, config.flip_neg_to_pos
    table = _pattern_table(report_noise)
    r, post = table.patterns, table.post
    child = r[:, [DRAWABLE.index(ch) for ch in model.LUNG_OPACITY_CHILDREN]].max(axis=1) == 1
    lo = np.unique(post[child, LABELS.index("Lung Opacity")])
    assert len(lo) == 1
    p_lo = model.LO_GIVEN_CHILD
    assert lo[0] == pytest.approx(p_lo * (1 - f10) + (1 - p_lo) * f01, abs=1e-12)
    for d, lab in enumerate(DRAWABLE):  # a drawn finding is present whatever else is drawn
        value = np.unique(post[r[:, d] == 1, LABELS.index(lab)])
        expected = 1.0 if lab == "Support Devices" else 1 - f10
        assert len(value) == 1 and value[0] == pytest.approx(expected, abs=1e-12), lab
    if not report_noise:
        drawn_path = r[:, [DRAWABLE.index(p) for p in PATHOLOGIES]].max(axis=1) == 1
        assert (post[drawn_path, LABELS.index("No Finding")] == 0).all()


def test_canonicalise_rejects_ambiguous_ties() -> None:
    values = np.array([0.6, 0.3, 0.3 * (1 + 1e-15), 0.0, 0.0])
    canon, spread, gap = _canonicalise(values)
    assert canon[1] == canon[2] and canon[0] == 0.6 and (canon[3:] == 0).all()
    assert spread < 1e-13 and gap == pytest.approx(0.5)
    with pytest.raises(ValueError, match="ambiguous"):  # a chain of small steps: spread too large
        _canonicalise(0.5 * (1 + 6e-13 * np.arange(3)))
    with pytest.raises(ValueError, match="ambiguous"):  # two values too close to tell apart
        _canonicalise(np.array([0.5, 0.5 + 1e-11]))
    with pytest.raises(ValueError, match="non-negative"):
        _canonicalise(np.array([0.5, -0.1]))
