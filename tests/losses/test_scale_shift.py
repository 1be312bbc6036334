"""Tests for trianflow.losses.scale_shift (MiDaS scale-and-shift-invariant loss)."""

import pytest
import torch

from trianflow.errors import InputError
from trianflow.losses.scale_shift import (
    ScaleShiftInvariantLoss,
    compute_scale_shift,
    gradient_matching_loss,
    normalize_median_mad,
    ssi_loss,
)

DT = torch.float64


def _data(b=3, h=12, w=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 1, h, w, generator=g, dtype=DT) + 0.2
    pred = target + 0.1 * torch.randn(b, 1, h, w, generator=g, dtype=DT)
    mask = torch.rand(b, 1, h, w, generator=g) > 0.3
    return pred, target, mask


def test_compute_scale_shift_recovers_affine_map():
    _, target, mask = _data()
    s_true = torch.tensor([0.5, 2.0, 7.0], dtype=DT)
    t_true = torch.tensor([-1.0, 0.3, 4.0], dtype=DT)
    pred = (target - t_true.view(-1, 1, 1, 1)) / s_true.view(-1, 1, 1, 1)
    pred = torch.where(mask, pred, torch.full_like(pred, 1e6))  # masked-out pixels must not matter
    s, t = compute_scale_shift(pred, target, mask)
    assert torch.allclose(s, s_true, atol=1e-9) and torch.allclose(t, t_true, atol=1e-6)


def test_compute_scale_shift_degenerate_is_finite():
    target = torch.rand(2, 1, 4, 4, dtype=DT)
    pred = torch.ones(2, 1, 4, 4, dtype=DT)  # constant prediction
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    mask[1] = False  # empty
    s, t = compute_scale_shift(pred, target, mask)
    assert torch.allclose(s, torch.zeros(2, dtype=DT))
    assert torch.allclose(t[0], target[0].mean()) and t[1] == 0


@pytest.mark.parametrize("alignment", ["median", "lstsq"])
@pytest.mark.parametrize("trimmed", [0.0, 0.2])
def test_ssi_invariant_to_positive_scale_and_shift(alignment, trimmed):
    pred, target, mask = _data()
    loss_fn = ScaleShiftInvariantLoss(alpha=0.5, scales=3, trimmed=trimmed, alignment=alignment)
    ref = loss_fn(pred, target, mask)
    assert ref.total > 1e-3
    for a, b in [(1e-3, 0.0), (3.7, -12.0), (250.0, 1e3), (0.02, 5.0)]:
        out = loss_fn(a * pred + b, target, mask)
        assert torch.allclose(out.per_sample["total"], ref.per_sample["total"], atol=1e-6, rtol=0)
        l2, _ = ssi_loss(a * pred + b, target, mask, trimmed=trimmed, alignment=alignment)
        assert torch.allclose(l2, ref.terms["ssi"], atol=1e-6, rtol=0)


def test_ssi_zero_for_affine_prediction_and_target_invariance_median():
    _, target, mask = _data()
    for alignment in ("median", "lstsq"):
        l, per = ssi_loss(2.5 * target - 1.0, target, mask, alignment=alignment)
        assert l.item() < 1e-12 and per.abs().max() < 1e-12
    # the median variant normalises the target too: invariant to its scale and shift as well
    pred, target, mask = _data(seed=1)
    a, _ = ssi_loss(pred, target, mask)
    b, _ = ssi_loss(pred, 4 * target + 2, mask)
    assert torch.allclose(a, b, atol=1e-9)


def test_ssi_hand_value_plain_mae_and_trimming():
    # lstsq with a target that is already affine in the pred except one outlier pixel
    pred = torch.arange(10, dtype=DT).view(1, 1, 1, 10)
    target = pred.clone()
    target[..., 9] += 1.0
    mask = torch.ones_like(pred, dtype=torch.bool)
    s, t = compute_scale_shift(pred, target, mask)
    resid = (s * pred + t - target).abs().sum()
    l_mae, _ = ssi_loss(pred, target, mask, trimmed=0.0, alignment="lstsq")
    assert l_mae.item() == pytest.approx(resid.item() / 20)
    # trimming 10 % drops the largest residual
    r = (s * pred + t - target).abs().flatten().sort().values
    l_trim, _ = ssi_loss(pred, target, mask, trimmed=0.1, alignment="lstsq")
    assert l_trim.item() == pytest.approx(r[:9].sum().item() / 20)


def test_mask_respected_and_empty_mask_finite():
    pred, target, mask = _data()
    a = ScaleShiftInvariantLoss()(pred, target, mask)
    p2 = torch.where(mask, pred, torch.full_like(pred, float("nan")))  # garbage outside the mask
    b = ScaleShiftInvariantLoss()(p2, target, mask)
    assert torch.allclose(a.total, b.total)
    empty = torch.zeros_like(mask)
    p = pred.clone().requires_grad_()
    c = ScaleShiftInvariantLoss()(p, target, empty)
    assert c.total.item() == 0 and not c.per_sample["valid"].any()
    c.total.backward()
    assert torch.isfinite(p.grad).all()


def test_per_sample_validity():
    pred, target, mask = _data()
    mask[1] = False
    full = ScaleShiftInvariantLoss()(pred, target, mask)
    alone = ScaleShiftInvariantLoss()(pred[[0, 2]], target[[0, 2]], mask[[0, 2]])
    assert torch.allclose(full.total, alone.total)


def test_normalize_median_mad_values():
    x = torch.tensor([1.0, 2.0, 3.0, 10.0, 100.0], dtype=DT).view(1, 1, 1, 5)
    m = torch.tensor([True, True, True, True, False]).view(1, 1, 1, 5)
    xh, ok = normalize_median_mad(x, m)
    # torch median of an even count takes the lower middle value: 2; MAD = (1 + 0 + 1 + 8) / 4 = 2.5
    assert ok.all()
    assert torch.allclose(xh.flatten(), torch.tensor([-0.4, 0.0, 0.4, 3.2, 0.0], dtype=DT))


def test_gradient_matching_zero_for_constant_residual_and_hand_value():
    t = torch.rand(1, 1, 8, 8, dtype=DT)
    mask = torch.ones_like(t, dtype=torch.bool)
    l0, _ = gradient_matching_loss(t + 3.0, t, mask, scales=4)
    assert l0.item() < 1e-12
    r = torch.zeros(1, 1, 8, 8, dtype=DT)
    r[..., 0, 0] = 1.0  # residual spike at a pixel present at every scale
    l1, _ = gradient_matching_loss(t + r, t, mask, scales=4)
    # each scale sees one x and one y jump of 1 at the corner (scale 3 is 1x1: none)
    assert l1.item() == pytest.approx(6.0 / 64)


def test_gradcheck_ssi_and_gradient_matching():
    pred, target, mask = _data(b=2, h=5, w=6)
    p = pred.clone().requires_grad_()
    for alignment in ("median", "lstsq"):
        fn = ScaleShiftInvariantLoss(alpha=0.5, scales=2, trimmed=0.2, alignment=alignment)
        assert torch.autograd.gradcheck(lambda x: fn(x, target, mask).total, (p,))
    assert torch.autograd.gradcheck(lambda x: gradient_matching_loss(x, target, mask, 2)[0], (p,))


def test_bad_input():
    pred, target, mask = _data()
    with pytest.raises(InputError):
        ssi_loss(pred, target[..., :5], mask)
    with pytest.raises(InputError):
        ssi_loss(pred, target, mask, trimmed=1.0)
    with pytest.raises(InputError):
        ScaleShiftInvariantLoss(alignment="mean")
