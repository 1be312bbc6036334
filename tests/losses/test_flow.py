"""Tests for trianflow.losses.flow (TrianFlow flow-stage loss)."""

import pytest
import torch
import torch.nn.functional as F

from trianflow.errors import InputError
from trianflow.losses.flow import flow_consistency_loss, flow_loss, flow_valid_mask

DT = torch.float64


def _pair(b=1, h=16, w=20, shift=2, seed=0):
    """img2 = img1 moved ``shift`` px to the right; exact fwd/bwd flow at 2 scales."""
    g = torch.Generator().manual_seed(seed)
    img1 = F.avg_pool2d(torch.rand(b, 3, h + 2, w + 2, generator=g, dtype=DT), 3, 1)  # mild texture
    img2 = torch.rand(b, 3, h, w, generator=g, dtype=DT)
    img2[..., shift:] = img1[..., :-shift]
    fwd = [torch.zeros(b, 2, h >> s, w >> s, dtype=DT) for s in range(2)]
    bwd = [torch.zeros(b, 2, h >> s, w >> s, dtype=DT) for s in range(2)]
    for s in range(2):
        fwd[s][:, 0] = shift / 2**s
        bwd[s][:, 0] = -shift / 2**s
    return img1, img2, fwd, bwd


def test_exact_flow_gives_zero_l1_loss_under_occlusion_masks():
    img1, img2, fwd, bwd = _pair()
    res = flow_loss(img1, img2, fwd, bwd, alpha=0.0)
    assert res.total.item() < 1e-12
    assert res.terms["flow_smooth"].item() < 1e-12
    m = flow_valid_mask(fwd[0], bwd[0])
    assert m[..., :, -2:].abs().max() == 0 and m[..., :, :-2].min() == 1


def test_exact_flow_beats_wrong_flow_with_ssim():
    img1, img2, fwd, bwd = _pair()
    good = flow_loss(img1, img2, fwd, bwd).total
    wrong = flow_loss(img1, img2, [f * 0 for f in fwd], [f * 0 for f in bwd]).total
    assert good < 1e-6 and wrong > 0.5


def test_occluded_pixels_do_not_count():
    img1, img2, fwd, bwd = _pair()
    a = flow_loss(img1, img2, fwd, bwd).total
    img2b = img2.clone()
    img2b[..., :2] = torch.rand_like(img2b[..., :2])  # disoccluded columns of image 2
    b = flow_loss(img1, img2b, fwd, bwd).total
    assert torch.allclose(a, b, atol=1e-12)


def test_full_resolution_units_match_per_scale_units():
    img1, img2, fwd, bwd = _pair()
    full_f = [fwd[0], fwd[1] * 2]
    full_b = [bwd[0], bwd[1] * 2]
    a = flow_loss(img1, img2, fwd, bwd).total
    b = flow_loss(img1, img2, full_f, full_b, flow_units="full").total
    assert torch.allclose(a, b, atol=1e-12)


def test_per_sample_losses_are_independent():
    i1, i2, f, b = _pair(seed=1)
    j1, j2, g, c = _pair(seed=2)
    g = [x + 0.7 for x in g]  # second sample gets a wrong flow
    both = flow_loss(torch.cat([i1, j1]), torch.cat([i2, j2]), [torch.cat(p) for p in zip(f, g)],
                     [torch.cat(p) for p in zip(b, c)])
    one = flow_loss(i1, i2, f, b)
    two = flow_loss(j1, j2, g, c)
    assert torch.allclose(both.per_sample["total"], torch.cat([one.per_sample["total"], two.per_sample["total"]]))
    assert torch.allclose(both.total, both.per_sample["total"].mean())


def test_smoothness_weight_beta_and_gradient():
    img1, img2, fwd, bwd = _pair()
    noisy = [(f + 0.5 * torch.randn_like(f)).requires_grad_() for f in fwd]
    r0 = flow_loss(img1, img2, noisy, bwd, beta=0.0)
    r1 = flow_loss(img1, img2, noisy, bwd, beta=0.1)
    assert torch.allclose(r1.total - r0.total, 0.1 * r1.terms["flow_smooth"])
    r1.total.backward()
    assert all(torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0 for f in noisy)


def test_bad_input():
    img1, img2, fwd, bwd = _pair()
    with pytest.raises(InputError):
        flow_loss(img1, img2, fwd, bwd[:1])
    with pytest.raises(InputError):
        flow_loss(img1, img2, fwd, bwd, flow_units="metres")


def test_flow_consistency_loss_values():
    f = torch.zeros(1, 2, 8, 10)
    f[:, 0] = 1.0
    assert float(flow_consistency_loss(f, -f)) == 0.0
    b = torch.zeros_like(f)
    f.requires_grad_(True)
    val = flow_consistency_loss(f, b)
    assert val.shape == (1,) and abs(float(val.detach()) - 0.5) < 1e-6  # |1 + 0| and |0 + 0| averaged over channels
    val.sum().backward()
    assert f.grad is not None and float(f.grad.abs().sum()) > 0
    mask = torch.zeros(1, 1, 8, 10)
    mask[..., :4] = 1
    b2 = torch.zeros_like(b)
    b2[:, 0, :, 4:] = 5.0  # wrong only where the mask is 0 (and where f points to)
    assert float(flow_consistency_loss(f.detach() * 0, b2, mask)) == 0.0
