"""Issue 4: the co-occurrence GCN refiner, the sparse+prior refiner, re-weighted ASL, effective
couplings, and study variants with their own parameters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cxrkit.data.cooccurrence import conditional_matrix
from cxrkit.losses import AsymmetricLoss, ReweightedAsymmetricLoss, create_loss
from cxrkit.models import create_refiner, effective_coupling
from cxrkit.utils.params import ConfigError

#  4 images x 3 labels; NaN = unknown
Y = np.array([[1, 1, 0], [1, 0, np.nan], [1, 1, 1], [0, 1, 0]], dtype=float)


def test_conditional_matrix_by_hand():
    a = conditional_matrix(Y)
    # P(l1 | l0): l0 positive in rows 0,1,2; l1 known there, positive in 0,2 -> 2/3
    assert a[0, 1] == pytest.approx(2 / 3)
    # P(l2 | l0): l0 positive in 0,1,2 but l2 unknown in row 1 -> known rows 0,2; positive in 2 -> 1/2
    assert a[0, 2] == pytest.approx(1 / 2)
    # P(l0 | l1): l1 positive in 0,2,3 -> l0 positive in 0,2 -> 2/3 ; diagonal is 1
    assert a[1, 0] == pytest.approx(2 / 3) and np.allclose(np.diag(a), 1)


def test_cooc_gcn_prior_from_training_labels_only_and_identity_at_start():
    r = create_refiner("cooc_gcn", 3)
    r.fit_prior(Y)
    prior = r.prior.numpy()
    expected = conditional_matrix(Y)
    assert np.allclose(prior, expected)
    assert np.allclose(r.adjacency.numpy().sum(axis=1), 1.0)  # row-normalised
    r.fit_prior(Y[:2])  # another "fold": the prior changes with the labels it is given
    assert not np.allclose(r.prior.numpy(), expected)
    z = torch.randn(5, 3)
    assert torch.equal(r(z), z)  # zero-initialised last layer: starts as the identity
    assert r.coupling().shape == (3, 3) and np.all(np.diag(r.coupling()) == 0)


def test_cooc_gcn_shapes_and_gradients_flow():
    torch.manual_seed(0)
    r = create_refiner("cooc_gcn", 3, layers=3, hidden=8)
    r.fit_prior(Y)
    opt = torch.optim.SGD(r.parameters(), lr=0.5)
    z = torch.randn(16, 3, requires_grad=True)
    target = (torch.rand(16, 3) > 0.5).float()
    for _ in range(2):  # the first step moves the zero last layer, the second reaches every layer
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(r(z), target)
        loss.backward()
        opt.step()
    assert r(z).shape == (16, 3)
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in r.weights)
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("normalize", ["row", "sym", "none"])
def test_cooc_gcn_normalisations(normalize):
    r = create_refiner("cooc_gcn", 3, normalize=normalize)
    r.fit_prior(Y)
    a = conditional_matrix(Y)
    d = a.sum(axis=1)
    expected = {"row": a / d[:, None], "sym": a / np.sqrt(np.outer(d, d)), "none": a}[normalize]
    assert np.allclose(r.adjacency.numpy(), expected, atol=1e-6)


def test_sparse_prior_starts_from_label_dependencies_with_zero_diagonal():
    rng = np.random.default_rng(0)
    a = rng.random(2000) < 0.4
    b = np.where(a, rng.random(2000) < 0.9, rng.random(2000) < 0.1)  # b follows a
    c = rng.random(2000) < 0.3  # independent
    y = np.stack([a, b, c], axis=1).astype(float)
    r = create_refiner("sparse_prior", 3, alpha=0.3)
    r.fit_prior(y)
    A = r.coupling()
    assert A[0, 1] > 2 and A[1, 0] > 2  # log odds ratio ~4.4, clipped at 4, divided by alpha
    assert abs(A[0, 2]) < 0.5 and np.all(np.diag(A) == 0)
    z = torch.zeros(1, 3)
    assert r(z).shape == (1, 3) and r.penalty() > 0


def test_effective_coupling_of_sparse_refiner_is_alpha_A():
    r = create_refiner("sparse", 4, alpha=0.3)
    with torch.no_grad():
        r.A.copy_(torch.randn(4, 4))
    eff = effective_coupling(r, np.zeros(4), delta=4.0)
    scale = 0.3 * (torch.sigmoid(torch.tensor(4.0)) - torch.sigmoid(torch.tensor(-4.0))).item()
    assert np.allclose(eff, r.coupling() * scale, atol=1e-5)
    assert effective_coupling(create_refiner("none", 4), np.zeros(4)).sum() == 0


def test_rasl_weights_by_hand():
    # positives per label: 3, 3, 1 (NaN not counted); alpha_j = 7 / c_jj -> 7/3, 7/3, 7 ; mean-normalised
    raw = np.array([7 / 3, 7 / 3, 7.0])
    w = ReweightedAsymmetricLoss.label_weights(Y, normalize=False).numpy()
    assert np.allclose(w, raw)
    assert np.allclose(ReweightedAsymmetricLoss.label_weights(Y).numpy(), raw / raw.mean())
    assert np.allclose(ReweightedAsymmetricLoss.label_weights(Y, "literal", normalize=False).numpy(), 3.0)


def test_rasl_gives_a_label_without_positives_the_smallest_weight():
    # as Rawlekar et al.'s code (MLR-GCN utils/asymmetric_loss.py, AsymmetricLoss_imbalanced): a zero
    # count is replaced by 15 x the largest count before inverting. Counts 3, 3, 1, 0 -> 3, 3, 1, 45;
    # alpha_j = 7 / count -> 7/3, 7/3, 7, 7/45
    y = np.column_stack([Y, np.array([0, 0, np.nan, 0])])
    raw = np.array([7 / 3, 7 / 3, 7.0, 7 / 45])
    assert np.allclose(ReweightedAsymmetricLoss.label_weights(y, normalize=False).numpy(), raw)
    w = ReweightedAsymmetricLoss.label_weights(y).numpy()
    assert np.allclose(w, raw / raw.mean()) and w.argmin() == 3 and w.mean() == pytest.approx(1.0)
    assert np.allclose(ReweightedAsymmetricLoss.label_weights(np.zeros((4, 3))).numpy(), 1.0)  # no positives at all


def test_rasl_is_weighted_asl_with_the_papers_defaults_and_masking():
    loss = create_loss("rasl", train_labels=Y)
    assert (loss.gamma_pos, loss.gamma_neg, loss.clip) == (1.0, 3.0, 0.05)
    logits, targets = torch.randn(6, 3), (torch.rand(6, 3) > 0.5).float()
    asl = AsymmetricLoss(gamma_pos=1.0, gamma_neg=3.0, clip=0.05)
    expected = (asl.elementwise(logits, targets) * loss.weights).sum() / 6
    assert torch.allclose(loss(logits, targets), expected)
    mask = torch.ones(6, 3)
    mask[:, 2] = 0
    targets_nan = targets.clone()
    targets_nan[:, 2] = float("nan")
    masked = (asl.elementwise(logits, targets)[:, :2] * loss.weights[:2]).sum() / 6
    assert torch.allclose(loss(logits, targets_nan, mask), masked)
    with pytest.raises(ValueError, match="train_labels"):
        create_loss("rasl")


def test_train_config_passes_refiner_and_loss_options(tiny_cfg):
    from cxrkit.training.config import loss_kwargs, refiner_kwargs

    gcn = dataclasses.replace(tiny_cfg, refiner="cooc_gcn", gcn_layers=2, gcn_normalize="sym", loss="rasl")
    assert refiner_kwargs(gcn) == {"layers": 2, "hidden": 16, "normalize": "sym", "form": "row", "p": 0.2}
    official = dataclasses.replace(gcn, gcn_normalize="row", gcn_form="official", gcn_p=0.3)
    assert refiner_kwargs(official) == {"layers": 2, "hidden": 16, "normalize": "row", "form": "official", "p": 0.3}
    assert loss_kwargs(gcn) == {}  # rasl keeps its own gamma defaults
    assert loss_kwargs(dataclasses.replace(gcn, gamma_neg=2.0)) == {"gamma_neg": 2.0}
    assert refiner_kwargs(dataclasses.replace(tiny_cfg, l1_lambda=0.01)) == {"alpha": 0.3, "lam": 0.01}


def test_trained_gcn_prior_uses_the_training_fold_only(tiny_cfg):
    import pandas as pd

    from cxrkit.data.datasets import create_dataset, label_matrix
    from cxrkit.data.splits import fold_indices, load_splits
    from cxrkit.training.loop import train

    cfg = dataclasses.replace(tiny_cfg, refiner="cooc_gcn", epochs=1)
    train(cfg)
    table = create_dataset("gxs", root=cfg.data, check_images=False).table
    splits = load_splits(cfg.splits, table)
    tr, _ = fold_indices(splits, cfg.fold)
    y = label_matrix(table)
    saved = pd.read_csv(f"{cfg.out}/coupling.csv", index_col=0).to_numpy()
    fold_prior = np.nan_to_num(conditional_matrix(y[tr]), nan=0.0)
    np.fill_diagonal(fold_prior, 0)
    all_prior = np.nan_to_num(conditional_matrix(y), nan=0.0)
    np.fill_diagonal(all_prior, 0)
    assert np.allclose(saved, fold_prior, atol=1e-5) and not np.allclose(saved, all_prior, atol=1e-3)


def test_study_variants_with_their_own_parameters(tmp_path):
    import yaml

    from cxrkit.study import load_study
    from cxrkit.utils.paths import project_root

    values = yaml.safe_load((project_root() / "params" / "smoke.yaml").read_text())
    values["variants"] = ["none", {"name": "sparse_l0", "refiner": "sparse", "l1_lambda": 0.0},
                          {"name": "gcn_rasl", "refiner": "cooc_gcn", "loss": "rasl"}]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(values))
    cfg = load_study(p).validate()
    assert cfg.variant_names == ["none", "sparse_l0", "gcn_rasl"]
    t = cfg.train_config(1, "gcn_rasl")
    assert (t.refiner, t.loss, t.fold) == ("cooc_gcn", "rasl", 1) and t.out.endswith("gcn_rasl/fold1")
    assert cfg.train_config(0, "sparse_l0").l1_lambda == 0.0
    for bad, match in ([{"name": "x", "refiner": "sparse", "l1_lamda": 1}], "unknown parameter 'l1_lamda'"), \
                      (["none", "none"], "duplicate variant"), ([{"refiner": "sparse"}], "mapping with 'name'"):
        values["variants"] = bad
        p.write_text(yaml.safe_dump(values))
        with pytest.raises(ConfigError, match=match):
            load_study(p).validate()
