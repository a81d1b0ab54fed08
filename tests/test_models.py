"""Tests of cxrkit.models: refiners, their registry, and timm backbones with local weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from cxrkit.models import (
    REFINERS,
    CXRModel,
    IdentityRefiner,
    Refiner,
    SparseCouplingRefiner,
    count_parameters,
    create_model,
    create_refiner,
    register_refiner,
)

L = 5
BACKBONE = "test_resnet"  # timm's ~0.4M-parameter test ResNet
SIZE = 32


def _logits(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, L, generator=torch.Generator().manual_seed(seed)) * 2


def _random_coupling(seed: int = 0) -> torch.Tensor:
    return torch.randn(L, L, generator=torch.Generator().manual_seed(seed))


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- refiners


def test_sparse_refiner_starts_as_identity() -> None:
    refiner = create_refiner("sparse", L)
    z = _logits()
    out = refiner(z)
    assert out.shape == (4, L)
    torch.testing.assert_close(out, z)
    assert refiner.penalty().item() == 0.0
    assert (refiner.alpha.item(), refiner.lam) == (pytest.approx(0.3), 1e-3)


def test_sparse_refiner_formula_rows_are_sources() -> None:
    refiner = SparseCouplingRefiner(L, alpha=0.5)
    with torch.no_grad():
        refiner.A.copy_(_random_coupling())
    z = _logits()
    masked = refiner.A.detach() * (1 - torch.eye(L))
    torch.testing.assert_close(refiner(z), z + 0.5 * torch.sigmoid(z) @ masked)

    # A single source label 0 with A[0, 3] = 2 pushes only target 3.
    with torch.no_grad():
        refiner.A.zero_()
        refiner.A[0, 3] = 2.0
    delta = refiner(z) - z
    torch.testing.assert_close(delta[:, 3], 0.5 * 2.0 * torch.sigmoid(z[:, 0]))
    assert (delta[:, [0, 1, 2, 4]] == 0).all()


def test_sparse_refiner_diagonal_never_contributes() -> None:
    refiner = SparseCouplingRefiner(L)
    with torch.no_grad():
        refiner.A.copy_(torch.diag(torch.arange(1.0, L + 1)))
    z = _logits()
    torch.testing.assert_close(refiner(z), z)
    assert refiner.penalty().item() == 0.0
    np.testing.assert_array_equal(refiner.coupling(), np.zeros((L, L)))

    with torch.no_grad():
        refiner.A.copy_(_random_coupling())
    coupling = refiner.coupling()
    assert isinstance(coupling, np.ndarray) and coupling.shape == (L, L)
    np.testing.assert_array_equal(np.diag(coupling), 0.0)
    off = ~np.eye(L, dtype=bool)
    np.testing.assert_allclose(coupling[off], refiner.A.detach().numpy()[off])


def test_sparse_refiner_gradients_reach_coupling_and_logits() -> None:
    refiner = SparseCouplingRefiner(L)
    with torch.no_grad():
        refiner.A.copy_(_random_coupling())
    z = _logits().requires_grad_(True)
    refiner(z).pow(2).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    grad = refiner.A.grad
    assert grad is not None
    assert (grad[~torch.eye(L, dtype=torch.bool)] != 0).all()
    assert (torch.diag(grad) == 0).all()


def test_sparse_refiner_penalty_is_l1_of_off_diagonal() -> None:
    refiner = SparseCouplingRefiner(L, lam=0.01)
    a = _random_coupling()
    with torch.no_grad():
        refiner.A.copy_(a)
    off = 1 - torch.eye(L)
    penalty = refiner.penalty()
    assert penalty.ndim == 0
    assert penalty.item() == pytest.approx(0.01 * (a * off).abs().sum().item(), rel=1e-6)
    penalty.backward()
    torch.testing.assert_close(refiner.A.grad, 0.01 * torch.sign(a) * off)


def test_sparse_refiner_alpha_is_a_saved_buffer_and_a_is_not_decayed() -> None:
    refiner = SparseCouplingRefiner(L, alpha=0.7)
    assert [name for name, _ in refiner.named_parameters()] == ["A"]
    assert set(refiner.state_dict()) == {"A", "alpha"}
    assert refiner.no_weight_decay() == {"A"}
    assert "alpha=0.7" in repr(refiner)


def test_identity_refiner() -> None:
    refiner = create_refiner("none", L)
    assert isinstance(refiner, IdentityRefiner)
    z = _logits()
    assert refiner(z) is z
    assert refiner.penalty().item() == 0.0
    assert refiner.coupling() is None
    assert refiner.no_weight_decay() == set()
    assert list(refiner.parameters()) == []


def test_refiners_check_logit_width() -> None:
    for name in ("none", "sparse"):
        with pytest.raises(ValueError, match=f"\\(B, {L}\\)"):
            create_refiner(name, L)(torch.zeros(2, L + 1))


def test_fit_prior_checks_training_labels() -> None:
    refiner = create_refiner("sparse", L)
    labels = np.where(np.random.default_rng(0).random((10, L)) < 0.3, 1.0, 0.0)
    labels[0, 0] = np.nan
    refiner.fit_prior(labels)  # accepted; a no-op for the sparse refiner
    torch.testing.assert_close(refiner.A, torch.zeros(L, L))
    with pytest.raises(ValueError, match="shape"):
        refiner.fit_prior(labels[:, :-1])
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        refiner.fit_prior(labels * 2)


def test_refiner_registry() -> None:
    assert {"none", "sparse"} <= set(REFINERS)
    with pytest.raises(ValueError, match=r"unknown refiner 'gcn'.*'none'.*'sparse'"):
        create_refiner("gcn", L)
    with pytest.raises(ValueError, match="already registered"):
        register_refiner("sparse")(IdentityRefiner)
    assert create_refiner("sparse", L, alpha=0.1, lam=0.0).alpha.item() == pytest.approx(0.1)

    @register_refiner("_test_scale")
    class ScaleRefiner(Refiner):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return 2 * z

    try:
        torch.testing.assert_close(create_refiner("_test_scale", L)(_logits()), 2 * _logits())
    finally:
        del REFINERS["_test_scale"]


# ----------------------------------------------------------------------------- models


def test_create_model_forward_and_delegation() -> None:
    model = create_model(BACKBONE, L, refiner="sparse", refiner_kwargs={"alpha": 0.2})
    assert isinstance(model, CXRModel)
    model.eval()
    x = _images()
    out = model(x)
    assert out.shape == (2, L)
    raw, refined = model.forward_with_raw(x)
    torch.testing.assert_close(refined, out)
    torch.testing.assert_close(raw, model.backbone(x))
    assert model.num_labels == L
    assert model.refiner.alpha.item() == pytest.approx(0.2)
    assert model.penalty().item() == 0.0
    assert model.coupling().shape == (L, L)
    assert model.no_weight_decay() == {"refiner.A"}
    assert "refiner.A" in dict(model.named_parameters())

    counts = count_parameters(model)
    assert counts["refiner"] == L * L
    assert counts["backbone"] == sum(p.numel() for p in model.backbone.parameters())
    assert counts["total"] == counts["backbone"] + L * L


def test_create_model_data_config_and_dropout() -> None:
    model = create_model(BACKBONE, L)
    assert (
        model.data_config["mean"] == timm.data.resolve_data_config({}, model=model.backbone)["mean"]
    )
    assert len(model.data_config["std"]) == 3
    assert model.backbone.drop_rate == 0.4
    assert model.backbone.get_classifier().out_features == L

    x = _images()
    model.train()
    assert not torch.allclose(model(x), model(x))  # classifier dropout active in training
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    no_dropout = create_model(BACKBONE, L, drop_rate=0.0).train()
    torch.testing.assert_close(no_dropout(x), no_dropout(x))


def _saved_backbone(tmp_path: Path, num_classes: int) -> tuple[dict[str, torch.Tensor], Path]:
    source = timm.create_model(BACKBONE, pretrained=False, num_classes=num_classes)
    state = source.state_dict()
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    return state, path


def test_pretrained_local_file_roundtrip(tmp_path: Path) -> None:
    state, path = _saved_backbone(tmp_path, num_classes=7)
    model = create_model(BACKBONE, L, pretrained=str(path))
    loaded = model.backbone.state_dict()
    assert loaded["fc.weight"].shape == (L, state["fc.weight"].shape[1])
    assert loaded["fc.bias"].shape == (L,)
    for key, value in state.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, msg=key)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module_prefix", "safetensors"])
def test_pretrained_checkpoint_formats(tmp_path: Path, wrap: str) -> None:
    state, _ = _saved_backbone(tmp_path, num_classes=L)  # same head shape: head loaded too
    path = tmp_path / ("weights.safetensors" if wrap == "safetensors" else "ckpt.pt")
    if wrap == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif wrap == "module_prefix":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save({wrap: state, "epoch": 3}, path)
    loaded = create_model(BACKBONE, L, pretrained=path).backbone.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)


def test_pretrained_headless_file_keeps_new_head(tmp_path: Path) -> None:
    state, _ = _saved_backbone(tmp_path, num_classes=L)
    path = tmp_path / "headless.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, path)
    loaded = create_model(BACKBONE, L, pretrained=path).backbone.state_dict()
    torch.testing.assert_close(loaded["conv1.0.weight"], state["conv1.0.weight"])
    assert loaded["fc.weight"].shape == (L, state["fc.weight"].shape[1])


def test_pretrained_wrong_architecture_names_file_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "effnet.pth"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), path)
    with pytest.raises(ValueError, match="effnet.pth") as err:
        create_model(BACKBONE, L, pretrained=path)
    message = str(err.value)
    assert "missing keys" in message and "layer1." in message
    assert "unexpected keys" in message and "blocks." in message


def test_pretrained_shape_mismatch_outside_head(tmp_path: Path) -> None:
    state, path = _saved_backbone(tmp_path, num_classes=L)
    state["conv1.0.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"shape mismatches \['conv1.0.weight"):
        create_model(BACKBONE, L, pretrained=path)


def test_pretrained_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_model(BACKBONE, L, pretrained=path)


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(ValueError, match=r"unknown timm backbone 'resnet5O'.*resnet50"):
        create_model("resnet5O", L)


def test_unknown_refiner_in_create_model() -> None:
    with pytest.raises(ValueError, match="unknown refiner"):
        create_model(BACKBONE, L, refiner="dense")


def test_cxrmodel_rejects_width_mismatch() -> None:
    backbone = timm.create_model(BACKBONE, pretrained=False, num_classes=L + 1)
    with pytest.raises(ValueError, match="outputs"):
        CXRModel(backbone, create_refiner("none", L))


def test_paper_configuration_model_takes_a_training_step(tmp_path: Path) -> None:
    """params/paper.yaml's backbone (SE-ResNeXt101 32x4d, dropout 0.4), sparse refiner and ASL,
    with ImageNet-layout (1000-class) weights from a local file: one optimiser step on a CPU at a
    small image size moves the backbone and the coupling matrix and keeps the diagonal at zero."""
    from cxrkit.data.labels import VOCABULARY
    from cxrkit.losses import create_loss
    from cxrkit.study import load_study
    from cxrkit.training.config import loss_kwargs, refiner_kwargs
    from cxrkit.utils.paths import project_root

    cfg = load_study(project_root() / "params" / "paper.yaml").validate().train_config(0, "sparse")
    assert cfg.backbone == "seresnext101_32x4d"
    torch.manual_seed(0)
    imagenet = timm.create_model(cfg.backbone, pretrained=False, num_classes=1000)
    weights = tmp_path / "seresnext101_32x4d.pth"
    torch.save(imagenet.state_dict(), weights)
    n = len(VOCABULARY)
    model = create_model(cfg.backbone, n, refiner=cfg.refiner, pretrained=weights, drop_rate=cfg.drop_rate,
                         refiner_kwargs=refiner_kwargs(cfg))
    torch.testing.assert_close(model.backbone.conv1.weight, imagenet.conv1.weight)
    assert model.backbone.drop_rate == 0.4 and model.refiner.alpha.item() == pytest.approx(0.3)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=g)
    y = (torch.rand(2, n, generator=g) < 0.3).float()
    y[0, 3] = float("nan")  # unknown label: masked
    assert (cfg.loss_reduction, cfg.focal_grad) == ("mean", True)  # the authors' code (issue 10 §3)
    loss_fn = create_loss(cfg.loss, train_labels=y.numpy(), reduction=cfg.loss_reduction, **loss_kwargs(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    before_conv = model.backbone.conv1.weight.detach().clone()
    model.train()
    logits = model(x)
    assert logits.shape == (2, n)
    loss = loss_fn(logits, y) + model.penalty()
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert not torch.equal(model.backbone.conv1.weight, before_conv)
    coupling = model.coupling()
    assert np.abs(coupling).sum() > 0 and np.all(np.diag(coupling) == 0)


# ----------------------------------------------------------------------------- co-occurrence GCN (issue 10 §4)

#: 5 images x 3 labels, all known: c_00 = 4, c_11 = 3, c_22 = 2, c_01 = 2, c_02 = 2, c_12 = 1
Y_GCN = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 0], [1, 0, 0]], dtype=float)


def _official_steps(counts: torch.Tensor, p: float = 0.2) -> torch.Tensor:
    """The graph construction of Rawlekar et al.'s code (SamyakR99/MLR-GCN, models/mlrgcn.py,
    Mlrgcn.__init__, coco/voc/foodseg branch), step by step on the co-occurrence counts."""
    r = counts.clone().float()
    kept = torch.zeros_like(r, dtype=torch.bool).scatter_(1, torch.topk(r, len(r)).indices, True)
    assert kept.all()  # their per-row top-k mask has k = L: it keeps every entry (no threshold)
    diag = torch.eye(len(r), dtype=torch.bool)
    r[diag] = 0
    r = r / r.sum(dim=1).reshape(-1, 1) * p
    r[diag] = 1 - p
    r = r / torch.diag(r)
    r[diag] = 1 - p  # set again after the dataset branches
    return r


def test_official_gcn_graph_by_hand() -> None:
    from cxrkit.models.refiners.gcn_graph import reweighted_adjacency

    r = create_refiner("cooc_gcn", 3, form="official")
    r.fit_prior(Y_GCN)
    by_hand = np.array([[0.8, 0.25 * 2 / 4, 0.25 * 2 / 4],   # row 0: c_01 = c_02 = 2
                        [0.25 * 2 / 3, 0.8, 0.25 * 1 / 3],   # row 1: c_10 = 2, c_12 = 1
                        [0.25 * 2 / 3, 0.25 * 1 / 3, 0.8]])  # row 2: c_20 = 2, c_21 = 1
    np.testing.assert_allclose(r.adjacency.numpy(), by_hand, rtol=1e-6)
    counts = torch.as_tensor(Y_GCN.T @ Y_GCN)
    np.testing.assert_allclose(by_hand, _official_steps(counts).numpy(), rtol=1e-6)
    np.testing.assert_allclose(reweighted_adjacency(counts.numpy()), by_hand)  # counts or P(n | m): same rows
    # a label without any co-occurring label keeps only its self-weight (the authors' code: NaN)
    lonely = reweighted_adjacency(np.array([[3.0, 0, 0], [0, 2, 1], [0, 1, 1]]), p=0.3)
    np.testing.assert_allclose(lonely[0], [0.7, 0, 0])
    np.testing.assert_allclose(lonely[1], [0, 0.7, 0.3 / 0.7])


def test_official_gcn_last_layer_has_no_activation() -> None:
    z = torch.tensor([[1.0, 2.0, 0.5], [0.5, 3.0, 2.0]])
    forms = {}
    for form in ("official", "row"):
        r = create_refiner("cooc_gcn", 3, layers=1, form=form)
        r.fit_prior(Y_GCN)
        with torch.no_grad():
            r.weights[0].fill_(-1.0)
        forms[form] = (r(z) - z, r.adjacency)
    correction, adj = forms["official"]
    expected = -(z @ adj.T)  # row m of A_hat mixes the logits of m's neighbours
    assert (expected < 0).all()
    torch.testing.assert_close(correction, expected)  # a negative correction passes unchanged
    row, row_adj = forms["row"]
    torch.testing.assert_close(row, 0.2 * -(z @ row_adj.T))  # the row form's LeakyReLU damps it 5x


def test_official_gcn_three_layers_and_initialisation() -> None:
    torch.manual_seed(0)
    r = create_refiner("cooc_gcn", 3, layers=3, hidden=10, form="official")
    r.fit_prior(Y_GCN)
    assert [tuple(w.shape) for w in r.weights] == [(1, 10), (10, 10), (10, 1)]  # their COCO widths
    for w in r.weights:  # U(-1/sqrt(fan_out), 1/sqrt(fan_out)), no bias
        assert w.abs().max() <= 1 / w.shape[1] ** 0.5 and w.abs().max() > 0.5 / w.shape[1] ** 0.5
    z = torch.randn(4, 3)
    adj, (w1, w2, w3) = r.adjacency, list(r.weights)
    h = F.leaky_relu(adj @ z.unsqueeze(-1) @ w1, 0.2)
    h = F.leaky_relu(adj @ h @ w2, 0.2)
    torch.testing.assert_close(r(z), z + (adj @ h @ w3).squeeze(-1))
    # the authors' code does not start as the identity, so neither does the official form
    assert not torch.allclose(r(z), z)


def test_row_gcn_form_is_unchanged_and_starts_as_identity() -> None:
    torch.manual_seed(0)
    r = create_refiner("cooc_gcn", 3, layers=2, hidden=4)
    assert r.form == "row"
    torch.manual_seed(0)
    w1 = torch.nn.init.xavier_uniform_(torch.empty(1, 4))
    torch.testing.assert_close(r.weights[0].detach(), w1)
    assert (r.weights[1] == 0).all()
    r.fit_prior(Y_GCN)
    from cxrkit.data.cooccurrence import conditional_matrix

    a = conditional_matrix(Y_GCN)
    np.testing.assert_allclose(r.adjacency.numpy(), a / a.sum(axis=1, keepdims=True), rtol=1e-6)
    z = torch.randn(5, 3)
    assert torch.equal(r(z), z)  # identity at the start
    with torch.no_grad():
        r.weights[1].fill_(-0.5)
    adj = r.adjacency
    h = F.leaky_relu(adj @ z.unsqueeze(-1) @ r.weights[0], 0.2)
    torch.testing.assert_close(r(z), z + F.leaky_relu(adj @ h @ r.weights[1], 0.2).squeeze(-1))


def test_gcn_form_options_are_checked_and_come_from_the_parameters() -> None:
    from cxrkit.training.config import TrainConfig, refiner_kwargs
    from cxrkit.utils.params import ConfigError, from_dict

    with pytest.raises(ValueError, match="form must be"):
        create_refiner("cooc_gcn", 3, form="kipf")
    with pytest.raises(ValueError, match="takes no normalize"):
        create_refiner("cooc_gcn", 3, form="official", normalize="sym")
    with pytest.raises(ValueError, match="p must be in"):
        create_refiner("cooc_gcn", 3, form="official", p=1.0)
    cfg = from_dict(TrainConfig, {"refiner": "cooc_gcn", "gcn_form": "official", "gcn_hidden": 10, "gcn_p": 0.3})
    r = create_refiner("cooc_gcn", 3, **refiner_kwargs(cfg))
    assert (r.form, r.p, r.weights[0].shape[1]) == ("official", 0.3, 10)
    for bad, match in (({"gcn_form": "kipf"}, "gcn_form"), ({"gcn_form": "official", "gcn_normalize": "sym"},
                       "gcn_normalize"), ({"gcn_p": 0.3}, "gcn_p"), ({"gcn_form": "official", "gcn_p": 0.0}, "gcn_p")):
        with pytest.raises(ConfigError, match=match):
            from_dict(TrainConfig, bad)
