"""Tests for trianflow.losses.smoothness."""

import pytest
import torch

from trianflow.errors import InputError
from trianflow.losses.smoothness import edge_aware_smoothness, flow_smoothness_2nd

DT = torch.float64


def test_constant_disparity_is_smooth_and_hand_value():
    img = torch.rand(2, 3, 5, 6, dtype=DT)
    assert edge_aware_smoothness(torch.full((2, 1, 5, 6), 3.0, dtype=DT), img).abs().max() < 1e-12
    # disparity ramp along x on a flat image: |dx D| = 1 everywhere in x, 0 in y; weights 1
    xs = torch.arange(6, dtype=DT).view(1, 1, 1, 6).expand(1, 1, 5, 6)
    flat = torch.zeros(1, 3, 5, 6, dtype=DT)
    assert torch.allclose(edge_aware_smoothness(xs + 1, flat, normalize=False), torch.tensor([1.0], dtype=DT))
    # mean-normalised: the ramp's mean is 3.5, so the value is 1 / 3.5
    assert torch.allclose(edge_aware_smoothness(xs + 1, flat), torch.tensor([1 / 3.5], dtype=DT), atol=1e-6)
    # second order of a linear ramp is zero
    assert edge_aware_smoothness(xs + 1, flat, order=2).abs().max() < 1e-9


def test_normalised_smoothness_is_scale_invariant():
    torch.manual_seed(0)
    d = torch.rand(1, 1, 6, 7, dtype=DT) + 0.5
    img = torch.rand(1, 3, 6, 7, dtype=DT)
    assert torch.allclose(edge_aware_smoothness(d, img), edge_aware_smoothness(5 * d, img), atol=1e-6)


def test_image_edges_reduce_the_penalty():
    d = torch.zeros(1, 1, 4, 8, dtype=DT)
    d[..., 4:] = 1.0  # a disparity step between columns 3 and 4
    flat = torch.zeros(1, 3, 4, 8, dtype=DT)
    edge = flat.clone()
    edge[..., 4:] = 1.0  # the image has an edge at the same place
    assert edge_aware_smoothness(d, edge, normalize=False) < 0.5 * edge_aware_smoothness(d, flat, normalize=False)


def test_flow_smoothness_zero_for_affine_flow_and_positive_otherwise():
    h, w = 8, 9
    ys, xs = torch.meshgrid(torch.arange(h, dtype=DT), torch.arange(w, dtype=DT), indexing="ij")
    affine = torch.stack([0.1 * xs - 0.3 * ys + 2, 0.2 * xs + 0.05 * ys - 1])[None]
    img = torch.rand(1, 3, h, w, dtype=DT)
    assert flow_smoothness_2nd(affine, img).abs().max() < 1e-12
    bumpy = affine.clone()
    bumpy[0, 0, 4, 4] += 20.0
    # flat image -> weights 1; one +1 (after /20) bump: |d_xx| = 1,2,1 on 3 of 8x7 entries, same in y
    val = flow_smoothness_2nd(bumpy, torch.zeros(1, 3, h, w, dtype=DT))
    expected = 0.5 * (4.0 / (2 * h * (w - 2)) + 4.0 / (2 * (h - 2) * w))
    assert torch.allclose(val, torch.tensor([expected], dtype=DT))


def test_gradcheck_smoothness():
    torch.manual_seed(1)
    d = (torch.rand(1, 1, 4, 5, dtype=DT) + 0.5).requires_grad_()
    img = torch.rand(1, 3, 4, 5, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: edge_aware_smoothness(a, b), (d, img))
    assert torch.autograd.gradcheck(lambda a, b: edge_aware_smoothness(a, b, order=2), (d, img))
    f = torch.randn(1, 2, 4, 5, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: flow_smoothness_2nd(a, b), (f, img))


def test_bad_input():
    with pytest.raises(InputError):
        edge_aware_smoothness(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(InputError):
        edge_aware_smoothness(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4), order=3)
