"""Issue 15 (B): the stacking headroom of 05, the column share of 04, the ``sparse_centred`` refiner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrkit.models import REFINERS, create_refiner
from cxrkit.study.coupling import column_share
from cxrkit.study.headroom import headroom_row, logit, stacked_scores

# --- stacking headroom --------------------------------------------------------------------------


def _two_labels(n: int, rng: np.random.Generator, copy: bool) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n, 2) and logits (n, 2): label 0's logit is informative (y0 * 3 + noise). With
    ``copy`` label 1 *is* label 0 but its own logit is pure noise (so label 0's logit predicts it);
    otherwise label 1 is independent with its own informative logit."""
    y0 = rng.integers(0, 2, n).astype(float)
    y1 = y0.copy() if copy else rng.integers(0, 2, n).astype(float)
    z0 = 3 * y0 + rng.normal(size=n)
    z1 = rng.normal(size=n) if copy else 3 * y1 + rng.normal(size=n)
    return np.stack([y0, y1], 1), np.stack([z0, z1], 1)


def test_stacking_gains_when_a_label_is_a_noisy_copy_of_another():
    rng = np.random.default_rng(0)
    y_val, z_val = _two_labels(400, rng, copy=True)
    y_test, z_test = _two_labels(300, rng, copy=True)
    stacked = stacked_scores(z_val, y_val, z_test)
    boot = {"n_boot": 200, "seed": 0}
    row = headroom_row(y_test, z_test, stacked, boot)
    # unstacked: label 0 about 0.98, label 1 (noise) about 0.5 -> macro about 0.74; stacked: label 1
    # is scored by label 0's logit, as good as label 0 -> macro about 0.98
    assert row["test macro AUC"] < 0.8 and row["stacked test macro AUC"] > 0.95
    assert row["gain"] == pytest.approx(row["stacked test macro AUC"] - row["test macro AUC"])
    assert row["95% CI low"] > 0.15


def test_stacking_gains_nothing_on_independent_labels():
    rng = np.random.default_rng(1)
    y_val, z_val = _two_labels(400, rng, copy=False)
    y_test, z_test = _two_labels(300, rng, copy=False)
    stacked = stacked_scores(z_val, y_val, z_test)
    row = headroom_row(y_test, z_test, stacked, {"n_boot": 200, "seed": 0})
    assert abs(row["gain"]) < 0.005
    assert row["95% CI low"] <= 0 <= row["95% CI high"] or abs(row["gain"]) < 1e-3


def test_stacking_masks_unknown_targets_and_keeps_unfittable_labels():
    rng = np.random.default_rng(2)
    y_val, z_val = _two_labels(200, rng, copy=True)
    y_val[::3, 1] = np.nan  # unknown entries of the target are left out of its regression
    y_val[:, 0] = 1.0  # one class only: label 0 keeps its own logit
    z_test = rng.normal(size=(50, 2))
    stacked = stacked_scores(z_val, y_val, z_test)
    assert np.array_equal(stacked[:, 0], z_test[:, 0])
    assert np.isfinite(stacked).all()
    with pytest.raises(ValueError, match="must share the labels"):
        stacked_scores(z_val, y_val, z_test[:, :1])


def test_logit_inverts_the_sigmoid_and_clips():
    p = np.array([0.1, 0.5, 0.9, 0.0, 1.0])
    z = logit(p)
    assert np.allclose(1 / (1 + np.exp(-z[:3])), p[:3])
    assert np.isfinite(z).all()


# --- column share -------------------------------------------------------------------------------


def test_column_share_by_hand():
    # off-diagonal entries: column 0: 1, 3 (mean 2); column 1: 2, 2 (mean 2); column 2: 0, 4 (mean 2)
    a = np.array([[9.0, 2.0, 0.0],
                  [1.0, 9.0, 4.0],
                  [3.0, 2.0, 9.0]])  # the diagonal (9) never counts
    # ||A||^2 (off-diagonal) = 1 + 9 + 4 + 4 + 0 + 16 = 34; residuals: -1, 1, 0, 0, -2, 2 -> 10
    assert column_share(a) == pytest.approx(1 - 10 / 34)
    assert column_share(np.array([[0, 5, -1], [2, 0, -1], [2, 5, 0.0]])) == pytest.approx(1.0)  # constant columns
    assert column_share(np.array([[0, 1, -1], [-1, 0, 1], [1, -1, 0.0]])) == pytest.approx(0.0)  # column means 0
    assert np.isnan(column_share(np.zeros((3, 3))))


# --- sparse_centred -----------------------------------------------------------------------------


def _centred(num_labels: int = 4, **kwargs):
    ref = create_refiner("sparse_centred", num_labels, **kwargs)
    y = np.array([[1, 0, np.nan, 1], [0, 0, 1, 1], [1, np.nan, 0, 1], [np.nan, 0, 1, 0]], dtype=float)[:, :num_labels]
    ref.fit_prior(y)
    return ref, y


def test_sparse_centred_is_registered_and_fits_the_prevalence():
    assert "sparse_centred" in REFINERS
    ref, _ = _centred()
    # known entries per label: [1,0,1] -> 2/3, [0,0,0] -> 0, [1,0,1] -> 2/3, [1,1,1,0] -> 3/4
    assert torch.allclose(ref.prevalence, torch.tensor([2 / 3, 0.0, 2 / 3, 0.75]))
    assert "prevalence" in ref.state_dict()  # checkpoints carry it


def test_sparse_centred_output_is_z_when_a_is_zero_and_at_the_prevalence():
    ref, _ = _centred()
    z = torch.randn(5, 4)
    assert torch.equal(ref(z), z)  # A starts at zero
    with torch.no_grad():
        ref.A.copy_(torch.randn(4, 4))
        ref.prevalence.copy_(torch.tensor([0.2, 0.5, 0.7, 0.9]))
    prev = ref.prevalence
    z_prev = torch.log(prev / (1 - prev)).repeat(3, 1)  # sigmoid(z) = prevalence: nothing to push
    assert torch.allclose(ref(z_prev), z_prev, atol=1e-5)
    assert not torch.allclose(ref(z), z)


def test_sparse_centred_formula_zero_diagonal_and_l1():
    ref, _ = _centred(alpha=0.5, lam=0.1)
    a = torch.randn(4, 4)
    with torch.no_grad():
        ref.A.copy_(a)
    masked = a * (1 - torch.eye(4))
    assert torch.equal(torch.from_numpy(ref.coupling()).diagonal(), torch.zeros(4))
    z = torch.randn(6, 4)
    expected = z + 0.5 * ((torch.sigmoid(z) - ref.prevalence) @ masked)
    assert torch.allclose(ref(z), expected, atol=1e-6)
    assert float(ref.penalty().detach()) == pytest.approx(0.1 * float(masked.abs().sum()), rel=1e-6)
    assert ref.no_weight_decay() == {"A"}
    # the diagonal does not move the output
    with torch.no_grad():
        ref.A.copy_(torch.diag(torch.ones(4)))
    assert torch.equal(ref(z), z)


def test_sparse_centred_trains_through_the_model_factory():
    from cxrkit.models import create_model

    model = create_model("test_resnet", 4, refiner="sparse_centred", refiner_kwargs={"alpha": 0.3, "lam": 1e-3})
    model.fit_prior(np.array([[1, 0, 1, 0], [1, 1, 0, 0.0]]))
    assert torch.allclose(model.refiner.prevalence, torch.tensor([1.0, 0.5, 0.5, 0.0]))
    restored = create_model("test_resnet", 4, refiner="sparse_centred")
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.refiner.prevalence, model.refiner.prevalence)


# --- on a study's saved runs (the hand-made study of test_study_analyses) --------------------------

from test_study_analyses import study  # noqa: E402, F401  (the module-scoped fixture)


def test_stacking_headroom_and_column_shares_of_a_study(study):  # noqa: F811
    from cxrkit import study as S

    table = S.stacking_headroom(study)
    assert list(table.index) == study.variant_names
    assert {"test macro AUC", "stacked test macro AUC", "gain", "95% CI low", "95% CI high",
            "validation images", "CI covers"} <= set(table.columns)
    assert (table["validation images"] == 12).all()  # two folds of six out-of-fold images
    abl_auc = S.final_test_table(study)["macro AUC"]
    for v in study.variant_names:
        row = table.loc[v]
        assert row["test macro AUC"] == pytest.approx(abl_auc.filter(like=f"{v} (").iloc[0])
        assert row["gain"] == pytest.approx(row["stacked test macro AUC"] - row["test macro AUC"])
        assert row["95% CI low"] <= row["gain"] <= row["95% CI high"]
    shares = S.column_shares(study)
    assert list(shares.index) == ["fold 0", "fold 1", "mean matrix"]
    assert list(shares.columns) == S.coupled_variants(study)
    for v in shares.columns:
        raw = S.fold_couplings(study, v, "raw")
        assert shares.loc["fold 1", v] == pytest.approx(column_share(raw[1])) or np.isnan(shares.loc["fold 1", v])


def test_stacker_is_applied_to_each_fold_then_averaged():
    """The stacker is fitted on single folds' out-of-fold logits, so it scores each fold's test
    logits (the same kind) and the stacked probabilities are averaged, as the fold ensemble
    averages probabilities; never the logit of the averaged probability, whose scale differs
    (here one fold is much noisier than the other)."""
    from cxrkit.evaluation.metrics import macro_auc
    from cxrkit.study.headroom import stacked_fold_ensemble

    rng = np.random.default_rng(3)
    y_val = (rng.random((400, 3)) < 0.4).astype(float)
    val_logits = 3 * (2 * y_val - 1) + rng.normal(0, 2, y_val.shape)
    y_test = (rng.random((300, 3)) < 0.4).astype(float)
    folds = np.stack([1 / (1 + np.exp(-(3 * (2 * y_test - 1) + rng.normal(0, s, y_test.shape)))) for s in (1, 6)])
    got = stacked_fold_ensemble(val_logits, y_val, folds)
    by_hand = sum(1 / (1 + np.exp(-stacked_scores(val_logits, y_val, logit(f)))) for f in folds) / 2
    np.testing.assert_allclose(got, by_hand, rtol=0, atol=1e-12)
    on_ensemble = stacked_scores(val_logits, y_val, logit(folds.mean(axis=0)))
    assert abs(macro_auc(y_test, on_ensemble) - macro_auc(y_test, got)) > 1e-4
