"""Tests for trianflow.losses.stereo (Monodepth losses, post-processing, ICP, M3Depth term)."""

import math

import pytest
import torch

from trianflow.errors import InputError
from trianflow.geometry.pose import axis_angle_to_matrix, make_pose, transform_points
from trianflow.losses.smoothness import edge_aware_smoothness
from trianflow.losses.stereo import (
    disp_to_depth_stereo,
    flip_postprocess,
    icp_point_to_point,
    m3depth_consistency_loss,
    monodepth_loss,
    sample_points,
)

DT = torch.float64


def _stereo(b=1, h=16, w=24, d=2, seed=0):
    """right(x) = left(x + d): constant disparity of d px; 2-scale disparity pyramids (fraction of W)."""
    g = torch.Generator().manual_seed(seed)
    left = torch.nn.functional.avg_pool2d(torch.rand(b, 3, h + 2, w + 2, generator=g, dtype=DT), 3, 1)
    right = torch.rand(b, 3, h, w, generator=g, dtype=DT)
    right[..., : w - d] = left[..., d:]
    disps = [torch.full((b, 1, h >> s, w >> s), d / w, dtype=DT) for s in range(2)]
    return left, right, disps


def test_lr_consistency_is_zero_for_consistent_pair():
    left, right, disps = _stereo()
    res = monodepth_loss(left, right, disps, [x.clone() for x in disps])
    assert res.terms["stereo_lr"].item() < 1e-15
    assert res.terms["stereo_smooth"].item() < 1e-15
    wrong = monodepth_loss(left, right, disps, [x * 1.5 for x in disps])
    assert wrong.terms["stereo_lr"].item() > 0.01


def test_appearance_prefers_the_true_disparity():
    left, right, disps = _stereo()
    good = monodepth_loss(left, right, disps, disps).terms["stereo_ap"]
    for f in (0.0, 0.5, 2.0):
        scaled = [x * f for x in disps]
        assert monodepth_loss(left, right, scaled, scaled).terms["stereo_ap"] > 2 * good


def test_total_decomposition_and_smoothness_scale_division():
    torch.manual_seed(0)
    left, right, _ = _stereo()
    dl = [torch.rand(1, 1, 16 >> s, 24 >> s, dtype=DT) * 0.1 for s in range(2)]
    dr = [torch.rand(1, 1, 16 >> s, 24 >> s, dtype=DT) * 0.1 for s in range(2)]
    res = monodepth_loss(left, right, dl, dr, w_smooth=0.3, w_lr=2.0)
    t = res.terms
    assert torch.allclose(res.total, t["stereo_ap"] + 0.3 * t["stereo_smooth"] + 2.0 * t["stereo_lr"])
    l1 = torch.nn.functional.adaptive_avg_pool2d(left, (8, 12))
    r1 = torch.nn.functional.adaptive_avg_pool2d(right, (8, 12))
    def sm(d, img):
        return edge_aware_smoothness(d, img, normalize=False)

    expected = sm(dl[0], left) + sm(dr[0], right) + (sm(dl[1], l1) + sm(dr[1], r1)) / 2
    assert torch.allclose(t["stereo_smooth"], expected.mean())


def test_monodepth_per_sample_and_gradient():
    a = _stereo(seed=1)
    b = _stereo(seed=2, d=3)
    dl = [torch.cat([x, y * 1.3]).requires_grad_() for x, y in zip(a[2], b[2])]
    both = monodepth_loss(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), dl, [x.detach() for x in dl])
    one = monodepth_loss(a[0], a[1], a[2], a[2])
    assert torch.allclose(both.per_sample["total"][0], one.per_sample["total"][0])
    both.total.backward()
    assert all(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 for x in dl)
    with pytest.raises(InputError):
        monodepth_loss(a[0], a[1], a[2], a[2][:1])


def test_disp_to_depth_stereo():
    disp = torch.tensor([35.0, 70.0]).view(2, 1, 1, 1)
    assert torch.allclose(disp_to_depth_stereo(disp, 700.0, 0.5).flatten(), torch.tensor([10.0, 5.0]))
    per = disp_to_depth_stereo(disp, torch.tensor([700.0, 350.0]), torch.tensor([0.5, 1.0]))
    assert torch.allclose(per.flatten(), torch.tensor([10.0, 5.0]))
    assert torch.isfinite(disp_to_depth_stereo(torch.zeros(1, 1, 2, 2), 700.0, 0.5)).all()


def test_flip_postprocess_ramp():
    w = 101
    disp = torch.ones(1, 1, 3, w)
    flipped = torch.full((1, 1, 3, w), 3.0)  # flipped-back value 3 everywhere
    out = flip_postprocess(disp, flipped)[0, 0, 0]
    x = torch.linspace(0, 1, w)
    assert torch.allclose(out[x <= 0.05], torch.tensor(3.0))  # left border: flipped prediction
    assert torch.allclose(out[x >= 0.95], torch.tensor(1.0))  # right border: plain prediction
    middle = (x >= 0.1 + 1e-6) & (x <= 0.9 - 1e-6)
    assert torch.allclose(out[middle], torch.tensor(2.0))  # mean elsewhere
    assert torch.allclose(out[10], torch.tensor(2.0)) and 2.0 < out[7] < 3.0  # linear ramp in between
    # the flipped input is flipped back before use
    ramp = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, 3, w)
    assert torch.allclose(flip_postprocess(ramp, torch.flip(ramp, dims=[-1])), ramp)


def _rigid(aa, t):
    return make_pose(axis_angle_to_matrix(torch.tensor([aa], dtype=DT)), torch.tensor([t], dtype=DT))


def test_icp_recovers_known_rigid_transform():
    g = torch.Generator().manual_seed(0)
    src = (torch.rand(2, 300, 3, generator=g, dtype=DT) - 0.5) * torch.tensor([2.0, 1.0, 0.6], dtype=DT)
    T_true = torch.cat([_rigid([0.05, -0.03, 0.04], [0.1, -0.05, 0.08]), _rigid([-0.02, 0.06, 0.0], [-0.3, 0.0, 0.1])])
    dst = transform_points(T_true, src)[:, torch.randperm(300, generator=g)]
    axis = torch.tensor([1.0, 2.0, -1.0], dtype=DT) / math.sqrt(6)
    T_init = _rigid((axis * math.radians(3)).tolist(), [0.05, -0.05, 0.05]) @ T_true
    assert (T_init - T_true).abs().max() > 0.04
    T, rmse = icp_point_to_point(src, dst, T_init, iters=50)
    assert (T - T_true).abs().max() < 1e-4
    assert rmse.max() < 1e-6
    # float32 input, and a destination cloud with extra points
    extra = torch.cat([dst, dst[:, :50] + 5.0], 1).float()
    T32, _ = icp_point_to_point(src.float(), extra, T_init.float(), iters=50)
    assert T32.dtype == torch.float32 and (T32.double() - T_true).abs().max() < 1e-4


def test_icp_masks_and_empty_sample():
    g = torch.Generator().manual_seed(1)
    src = torch.rand(2, 50, 3, generator=g, dtype=DT)
    T_true = _rigid([0.01, 0.0, 0.02], [0.02, 0.0, -0.01]).expand(2, 4, 4)
    dst = transform_points(T_true, src)
    src_valid = torch.ones(2, 50, dtype=torch.bool)
    src_valid[1] = False  # second sample: nothing usable
    src_bad = src.clone()
    src_bad[0, :5] = float("nan")  # non-finite points are ignored
    T, rmse = icp_point_to_point(src_bad, dst, torch.eye(4, dtype=DT).expand(2, 4, 4), src_valid=src_valid)
    assert (T[0] - T_true[0]).abs().max() < 1e-6 and rmse[0] < 1e-6
    assert torch.allclose(T[1], torch.eye(4, dtype=DT)) and rmse[1] == 0


def test_icp_rmse_gradcheck():
    g = torch.Generator().manual_seed(2)
    src = torch.rand(1, 8, 3, generator=g, dtype=DT)
    noise = 0.03 * torch.randn(1, 8, 3, generator=g, dtype=DT)
    dst = transform_points(_rigid([0.02, 0.01, 0.0], [0.05, 0.0, 0.0]), src) + noise
    T0 = torch.eye(4, dtype=DT)[None]
    src.requires_grad_()
    dst.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: icp_point_to_point(a, b, T0, iters=10)[1], (src, dst))


def _scene_depth(h, w, f, center, r=2.0, wall=9.0):
    """Ray-cast depth of a sphere in front of a fronto-parallel wall (exact for any camera)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=DT), torch.arange(w, dtype=DT), indexing="ij")
    d = torch.stack([(xs - (w - 1) / 2) / f, (ys - (h - 1) / 2) / f, torch.ones_like(xs)], -1)
    c = torch.tensor(center, dtype=DT)
    dc, dd = (d * c).sum(-1), (d * d).sum(-1)
    disc = dc**2 - dd * ((c * c).sum() - r * r)
    t = (dc - torch.sqrt(disc.clamp(min=0))) / dd
    return torch.where(disc > 0, t, torch.full_like(t, wall))[None, None]


def test_m3depth_consistency_exact_and_inconsistent():
    h, w, f, B = 24, 32, 30.0, 0.5
    K = torch.tensor([[[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]]], dtype=DT)
    dl = _scene_depth(h, w, f, [0.5, 0, 6.0])
    # same camera, all pixels sampled: the two clouds coincide exactly
    same = m3depth_consistency_loss(dl, dl.clone(), K, 0.0, n_points=h * w)
    assert same.total.item() < 1e-9
    dr = _scene_depth(h, w, f, [0.5 - B, 0, 6.0])
    g = torch.Generator().manual_seed(0)
    good = m3depth_consistency_loss(dl, dr, K, B, n_points=300, generator=g)
    g = torch.Generator().manual_seed(0)
    bumpy = dr * (1 + 0.1 * torch.sin(torch.arange(w, dtype=DT) / 2))
    bad = m3depth_consistency_loss(dl, bumpy, K, B, n_points=300, generator=g)
    assert bad.total > 1.5 * good.total
    assert abs(good.per_sample["T"][0, 0, 3].item() + B) < 0.1  # stays near the stereo extrinsics


def test_m3depth_gradient_and_invalid_sample():
    h, w, f = 12, 16, 15.0
    K = torch.tensor([[f, 0, 7.5], [0, f, 5.5], [0, 0, 1]], dtype=DT).expand(2, 3, 3)
    dl = torch.cat([_scene_depth(h, w, f, [0.3, 0, 6.0]), torch.zeros(1, 1, h, w, dtype=DT)]).requires_grad_()
    dr = torch.cat([_scene_depth(h, w, f, [-0.2, 0, 6.0]), torch.zeros(1, 1, h, w, dtype=DT)]).requires_grad_()
    res = m3depth_consistency_loss(dl, dr, K, torch.tensor([0.5, 0.5], dtype=DT), n_points=100,
                                   generator=torch.Generator().manual_seed(0))
    assert res.per_sample["valid"].tolist() == [True, False] and res.per_sample["icp"][1] == 0
    assert torch.allclose(res.total, res.per_sample["icp"][0])
    res.total.backward()
    assert torch.isfinite(dl.grad).all() and dl.grad[0].abs().sum() > 0 and dl.grad[1].abs().sum() == 0


def test_sample_points_only_valid_pixels():
    depth = torch.zeros(1, 1, 4, 4, dtype=DT)
    depth[..., 1, 2] = 3.0
    K = torch.eye(3, dtype=DT)[None]
    pts, valid = sample_points(depth, K, 5, generator=torch.Generator().manual_seed(0))
    assert valid.all() and torch.allclose(pts, torch.tensor([6.0, 3.0, 3.0], dtype=DT).expand(1, 5, 3))
