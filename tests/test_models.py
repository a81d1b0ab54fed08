"""Tests of cxrkit.models: refiners, their registry, and timm backbones with local weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
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
    from cxrkit.labels import VOCABULARY
    from cxrkit.losses import create_loss
    from cxrkit.paths import project_root
    from cxrkit.study import load_study
    from cxrkit.train import loss_kwargs, refiner_kwargs

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
    loss_fn = create_loss(cfg.loss, train_labels=y.numpy(), **loss_kwargs(cfg))
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
