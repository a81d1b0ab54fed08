"""Tests of cxrkit.losses: ASL against the official formula, weighted BCE, masks, reduction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cxrkit.losses import (
    LOSSES,
    AsymmetricLoss,
    WeightedBCE,
    create_loss,
    pos_weight_from_labels,
)

B, L = 6, 5


def _batch(seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, generator=gen) * scale
    targets = (torch.rand(B, L, generator=gen) < 0.4).float()
    return logits, targets


def _losses() -> list[nn.Module]:
    return [AsymmetricLoss(), WeightedBCE(torch.linspace(1.0, 10.0, L))]


def asl_reference(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    eps: float = 1e-8,
) -> float:
    """The official ASL, element by element: -sum(loss) / batch size."""
    total = 0.0
    for x, y in zip(logits.flatten().tolist(), targets.flatten().tolist(), strict=True):
        p = 1.0 / (1.0 + math.exp(-x))
        if y == 1.0:
            total -= (1.0 - p) ** gamma_pos * math.log(max(p, eps))
        else:
            p_m = max(p - clip, 0.0)
            total -= p_m**gamma_neg * math.log(max(1.0 - p_m, eps))
    return total / logits.shape[0]


def asl_torch(logits: torch.Tensor, targets: torch.Tensor, detach: bool) -> torch.Tensor:
    """ASL(0, 4, 0.05) in torch, with the focusing weight detached or not."""
    p = torch.sigmoid(logits)
    p_m = (p - 0.05).clamp(min=0)
    loss = targets * torch.log(p.clamp(min=1e-8)) + (1 - targets) * torch.log(
        (1 - p_m).clamp(min=1e-8)
    )
    weight = targets * 1.0 + (1 - targets) * p_m**4
    weight = weight.detach() if detach else weight
    return -(loss * weight).sum() / logits.shape[0]


@pytest.mark.parametrize(
    ("gamma_pos", "gamma_neg", "clip"), [(0.0, 4.0, 0.05), (1.0, 2.0, 0.2), (0.0, 4.0, 0.0)]
)
def test_asl_matches_official_formula(gamma_pos: float, gamma_neg: float, clip: float) -> None:
    logits, targets = _batch()
    loss = AsymmetricLoss(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip)(logits, targets)
    expected = asl_reference(logits, targets, gamma_pos, gamma_neg, clip)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_asl_defaults_are_the_papers() -> None:
    loss = AsymmetricLoss()
    assert (loss.gamma_pos, loss.gamma_neg, loss.clip, loss.eps) == (0.0, 4.0, 0.05, 1e-8)


def test_asl_without_focusing_and_clip_is_bce() -> None:
    logits, targets = _batch(scale=2.0)
    loss = AsymmetricLoss(gamma_pos=0.0, gamma_neg=0.0, clip=0.0)(logits, targets)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / B
    assert loss.item() == pytest.approx(bce.item(), rel=1e-5)


def test_asl_focusing_weight_is_detached() -> None:
    logits, targets = _batch()
    grads = {}
    for name, fn in {
        "asl": lambda x: AsymmetricLoss()(x, targets),
        "detached": lambda x: asl_torch(x, targets, detach=True),
        "attached": lambda x: asl_torch(x, targets, detach=False),
    }.items():
        x = logits.clone().requires_grad_(True)
        fn(x).backward()
        grads[name] = x.grad
    torch.testing.assert_close(grads["asl"], grads["detached"])
    assert not torch.allclose(grads["asl"], grads["attached"], atol=1e-4)


@pytest.mark.parametrize("loss_fn", _losses(), ids=lambda m: type(m).__name__)
def test_masked_entries_change_nothing(loss_fn: nn.Module) -> None:
    logits, targets = _batch()
    mask = torch.rand(B, L, generator=torch.Generator().manual_seed(1)) < 0.6
    logits.requires_grad_(True)
    reference = loss_fn(logits, targets, mask)
    reference.backward()

    other_logits = torch.where(mask, logits, logits + 5.0).detach().requires_grad_(True)
    nan_targets = torch.where(mask, targets, torch.full_like(targets, float("nan")))
    loss = loss_fn(other_logits, nan_targets, mask.float())
    loss.backward()
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.isfinite(other_logits.grad).all()
    assert (other_logits.grad[~mask] == 0).all()
    torch.testing.assert_close(other_logits.grad[mask], logits.grad[mask])
    assert other_logits.grad[mask].abs().sum() > 0

    # Without a mask, NaN targets alone mark the unknown entries.
    assert loss_fn(logits, nan_targets).item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize("loss_fn", _losses(), ids=lambda m: type(m).__name__)
def test_reduction_is_sum_over_labels_mean_over_images(loss_fn: nn.Module) -> None:
    logits, targets = _batch()
    loss = loss_fn(logits, targets)
    doubled = loss_fn(torch.cat([logits, logits]), torch.cat([targets, targets]))
    assert doubled.item() == pytest.approx(loss.item(), rel=1e-6)

    per_image = [loss_fn(logits[i : i + 1], targets[i : i + 1]).item() for i in range(B)]
    assert loss.item() == pytest.approx(sum(per_image) / B, rel=1e-6)

    # An image with every label unknown still counts in the batch size.
    mask = torch.ones(B, L)
    mask[0] = 0
    assert loss_fn(logits, targets, mask).item() == pytest.approx(sum(per_image[1:]) / B, rel=1e-6)


@pytest.mark.parametrize("loss_fn", _losses(), ids=lambda m: type(m).__name__)
def test_half_precision_logits_are_computed_in_float32(loss_fn: nn.Module) -> None:
    logits, targets = _batch(scale=8.0)
    half = loss_fn(logits.half(), targets)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(loss_fn(logits.half().float(), targets).item(), rel=1e-6)


def test_shape_mismatch_raises() -> None:
    logits, targets = _batch()
    with pytest.raises(ValueError, match="must both be"):
        AsymmetricLoss()(logits, targets[:, :-1])


def test_pos_weight_from_labels_clips_both_ends() -> None:
    nan = np.nan
    columns = [
        [1] * 1 + [0] * 99,  # 99 -> clipped to 10
        [1] * 50 + [0] * 50,  # 1
        [1] * 80 + [0] * 20,  # 0.25 -> clipped to 1
        [0] * 100,  # no positive -> 10 (the upper clip)
        [1] * 2 + [0] * 6 + [nan] * 92,  # NaN ignored: 3
        [1] * 10 + [0] * 45 + [nan] * 45,  # 4.5
    ]
    labels = np.array(columns, dtype=float).T
    weights = pos_weight_from_labels(labels)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor([10.0, 1.0, 1.0, 10.0, 3.0, 4.5]))


@pytest.mark.parametrize("bad", [np.array([[0.0, 2.0]]), np.array([[-1.0, 1.0]]), np.zeros(3)])
def test_pos_weight_from_labels_rejects_bad_labels(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="train_labels"):
        pos_weight_from_labels(bad)


def test_weighted_bce_equals_torch() -> None:
    logits, targets = _batch()
    pos_weight = torch.tensor([1.0, 2.0, 5.0, 10.0, 3.3])
    loss = WeightedBCE(pos_weight)(logits, targets)
    expected = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="sum")(logits, targets) / B
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_create_loss_registry() -> None:
    assert {"asl", "bce"} <= set(LOSSES)
    asl = create_loss("asl", gamma_neg=2.0)
    assert isinstance(asl, AsymmetricLoss) and asl.gamma_neg == 2.0

    labels = np.array([[1, 0], [0, 0], [0, 1], [0, np.nan]], dtype=float)
    bce = create_loss("bce", labels)
    assert isinstance(bce, WeightedBCE)
    torch.testing.assert_close(bce.pos_weight, torch.tensor([3.0, 2.0]))

    with pytest.raises(ValueError, match="needs train_labels"):
        create_loss("bce")
    with pytest.raises(ValueError, match=r"unknown loss 'focal'.*'asl'.*'bce'"):
        create_loss("focal")


# ------------------------------------------------------------------ reduction: sum vs mean (issue 10 §3)


def _authors_objective(z: torch.Tensor, y: torch.Tensor, a: torch.Tensor, alpha: float = 0.3,
                       l1: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Srivastava et al.'s training objective, re-derived from their code (utkarsh231/Learning-Sparse-
    Label-Couplings-for-Multilabel-Chest-X-Ray-Diagnosis): ``crxml/models/refiner.py`` (the diagonal
    removed from A, ``logits + alpha * sigmoid(logits) @ A``, ``reg = l1 * |A|.sum()``),
    ``crxml/losses.py`` (ASL 0/4/0.05 whose focusing weight is *not* detached, ``-loss.mean()``
    over the B x L entries) and ``crxml/engine.py`` (``loss = loss_sup + reg``).
    Returns (data term, L1 term)."""
    off = a - torch.diag(torch.diag(a))
    refined = z + alpha * (torch.sigmoid(z) @ off)
    p_pos = torch.sigmoid(refined)
    p_neg = torch.clamp(1.0 - p_pos + 0.05, max=1.0)
    ce = y * torch.log(torch.clamp(p_pos, min=1e-8)) + (1 - y) * torch.log(torch.clamp(p_neg, min=1e-8))
    focus = torch.pow(1 - (p_pos * y + p_neg * (1 - y)), 0.0 * y + 4.0 * (1 - y))
    return -(ce * focus).mean(), l1 * off.abs().sum()


def _coupling_grads(loss_fn: nn.Module, z: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cxrkit's gradients on A of the data term and of the L1 term (sparse refiner, alpha 0.3, 1e-3)."""
    from cxrkit.models import SparseCouplingRefiner

    refiner = SparseCouplingRefiner(z.shape[1], alpha=0.3, lam=1e-3)
    with torch.no_grad():
        refiner.A.copy_(a)
    data = torch.autograd.grad(loss_fn(refiner(z), y, mask), refiner.A)[0]
    l1 = torch.autograd.grad(refiner.penalty(), refiner.A)[0]
    return data, l1


def _paper_batch(b: int = 24, labels: int = 14) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(b, labels, generator=gen) * 2 - 1
    y = (torch.rand(b, labels, generator=gen) < 0.2).float()
    a = torch.randn(labels, labels, generator=gen) * 0.5  # non-zero: the L1 gradient is sign(A)
    return z, y, a


def test_mean_reduction_gives_the_authors_gradients_on_the_coupling_matrix() -> None:
    z, y, a = _paper_batch()
    theirs = {}
    for name in ("data", "l1"):
        a_t = a.clone().requires_grad_(True)
        terms = dict(zip(("data", "l1"), _authors_objective(z, y, a_t), strict=True))
        theirs[name] = torch.autograd.grad(terms[name], a_t)[0]
    data, l1 = _coupling_grads(AsymmetricLoss(focal_grad=True, reduction="mean"), z, y, a)
    torch.testing.assert_close(data, theirs["data"], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(l1, theirs["l1"])
    # with the focusing weight detached (the official ASL), the data gradient is another one
    detached, _ = _coupling_grads(AsymmetricLoss(reduction="mean"), z, y, a)
    assert not torch.allclose(detached, theirs["data"], rtol=1e-3)


def test_l1_to_data_ratio_is_L_times_larger_under_mean() -> None:
    z, y, a = _paper_batch()
    ratio = {}
    for reduction in ("sum", "mean"):
        data, l1 = _coupling_grads(AsymmetricLoss(focal_grad=True, reduction=reduction), z, y, a)
        ratio[reduction] = (l1.norm() / data.norm()).item()
    assert ratio["mean"] / ratio["sum"] == pytest.approx(z.shape[1], rel=1e-5)  # L = 14, all labels known


def _asl_and_bce(reduction: str) -> list[nn.Module]:
    return [AsymmetricLoss(reduction=reduction), WeightedBCE(torch.linspace(1.0, 10.0, L), reduction=reduction)]


@pytest.mark.parametrize("which", [0, 1], ids=["asl", "bce"])
def test_mean_reduction_averages_over_known_entries_only(which: int) -> None:
    mean_fn, sum_fn = _asl_and_bce("mean")[which], _asl_and_bce("sum")[which]
    logits, targets = _batch()
    assert mean_fn(logits, targets).item() == pytest.approx(sum_fn(logits, targets).item() / L, rel=1e-6)

    mask = torch.rand(B, L, generator=torch.Generator().manual_seed(1)) < 0.6
    n_known = int(mask.sum())
    x = logits.clone().requires_grad_(True)
    loss = mean_fn(x, torch.where(mask, targets, torch.full_like(targets, float("nan"))), mask.float())
    # the known entries' losses, each computed alone, averaged
    singles = [mean_fn(logits[i : i + 1, j : j + 1], targets[i : i + 1, j : j + 1]).item()
               for i, j in mask.nonzero().tolist()] if which == 0 else None
    if singles is not None:
        assert loss.item() == pytest.approx(sum(singles) / n_known, rel=1e-5)
    assert loss.item() == pytest.approx(sum_fn(logits, targets, mask).item() * B / n_known, rel=1e-5)
    loss.backward()
    assert (x.grad[~mask] == 0).all() and x.grad[mask].abs().sum() > 0
    # masked entries change nothing; a batch without a known entry gives 0 and no gradient
    assert mean_fn(torch.where(mask, logits, logits + 5.0), targets, mask).item() == pytest.approx(loss.item())
    empty = logits.clone().requires_grad_(True)
    none_known = mean_fn(empty, targets, torch.zeros(B, L))
    none_known.backward()
    assert none_known.item() == 0.0 and (empty.grad == 0).all()


def test_focal_grad_is_finite_on_saturated_logits() -> None:
    logits = torch.tensor([[40.0, -40.0, 0.0], [-40.0, 40.0, 3.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    AsymmetricLoss(focal_grad=True, reduction="mean")(logits, targets).backward()
    assert torch.isfinite(logits.grad).all()


def test_reduction_is_validated_and_passed_by_create_loss() -> None:
    with pytest.raises(ValueError, match="reduction must be one of"):
        AsymmetricLoss(reduction="median")
    assert create_loss("asl", reduction="mean").reduction == "mean"
    assert create_loss("bce", np.array([[1, 0], [0, 1]], dtype=float), reduction="mean").reduction == "mean"
    rasl = create_loss("rasl", np.array([[1, 0], [0, 1]], dtype=float), reduction="mean", focal_grad=True)
    assert (rasl.reduction, rasl.focal_grad) == ("mean", True)
    assert create_loss("asl").reduction == "sum"
