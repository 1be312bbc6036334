"""Tests for trianflow.losses.triangulation (TrianFlow depth-stage losses)."""

import math

import pytest
import torch

from trianflow.errors import InputError
from trianflow.geometry.pose import axis_angle_to_matrix, make_pose, skew
from trianflow.geometry.warp import depth_pose_flow, warp_by_depth_pose
from trianflow.losses.triangulation import (
    align_scale,
    depth_photometric_loss,
    epipolar_distance_map,
    epipolar_mask,
    flow_reprojection_loss,
    triangulation_depth_loss,
    trianflow_depth_objective,
)

DT = torch.float64
H, W = 20, 28


def _scene(seed=0, n=60):
    """Exact two-view scene: slanted-plane depth, pose, flow, F, triangulated points, images."""
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[[30.0, 0, 13.5], [0, 30.0, 9.5], [0, 0, 1]]], dtype=DT)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=DT), torch.arange(W, dtype=DT), indexing="ij")
    depth = (4.0 + 0.05 * xs + 0.08 * ys)[None, None]
    R = axis_angle_to_matrix(torch.tensor([[0.01, -0.015, 0.005]], dtype=DT))
    t = torch.tensor([[0.15, 0.02, -0.3]], dtype=DT)
    T = make_pose(R, t)
    Kinv = torch.linalg.inv(K)
    F = Kinv.transpose(1, 2) @ skew(t) @ R @ Kinv
    flow = depth_pose_flow(depth, T, K)
    img2 = torch.nn.functional.avg_pool2d(torch.rand(1, 3, H + 2, W + 2, generator=g, dtype=DT), 3, 1)
    img1, _ = warp_by_depth_pose(img2, depth, T, K, padding_mode="border")
    uv = torch.stack([torch.randint(2, W - 2, (n,), generator=g), torch.randint(2, H - 2, (n,), generator=g)], -1)
    uv = uv.to(DT)[None]
    depth_tri = depth[0, 0, uv[0, :, 1].long(), uv[0, :, 0].long()][None]
    return dict(img1=img1, img2=img2, depth=depth, flow=flow, K=K, T=T, F=F, uv=uv, depth_tri=depth_tri,
                tri_valid=torch.ones(1, n, dtype=torch.bool))


def _objective(s, depth1, **kw):
    return trianflow_depth_objective(s["img1"], s["img2"], depth1, s["flow"], s["K"], s["T"], s["uv"],
                                     s["depth_tri"], s["tri_valid"], F=s["F"], **kw)


def _cat(a, b):
    return {k: torch.cat([a[k], b[k]]) for k in a}


def test_epipolar_distance_hand_example():
    # pure x translation, identity K and R: epipolar lines are the rows, distance = |dy|
    F = skew(torch.tensor([[1.0, 0.0, 0.0]], dtype=DT))
    flow = torch.zeros(1, 2, 3, 4, dtype=DT)
    flow[:, 0] = 5.0
    flow[:, 1] = -0.3
    assert torch.allclose(epipolar_distance_map(F, flow), torch.full((1, 1, 3, 4), 0.3, dtype=DT))


def test_epipolar_distance_zero_for_rigid_flow():
    s = _scene()
    assert epipolar_distance_map(s["F"], s["flow"]).abs().max() < 1e-9


def test_epipolar_mask_values():
    d = torch.tensor([0.0, 0.25, 0.49, 0.5, 3.0, float("nan")], dtype=DT).view(1, 1, 1, 6)
    expected = torch.tensor([1.0, 0.8, 1 / 1.49, 0.0, 0.0, 0.0], dtype=DT).view(1, 1, 1, 6)
    assert torch.allclose(epipolar_mask(d), expected)


def test_align_scale_median_lsq_and_empty():
    pred = torch.tensor([[1.0, 2.0, 4.0, 100.0], [1.0, 1.0, 1.0, 1.0]], dtype=DT)
    tri = torch.tensor([[3.0, 6.0, 12.0, -1.0], [5.0, 5.0, 5.0, 5.0]], dtype=DT)
    valid = torch.tensor([[True, True, True, True], [False, False, False, False]])
    s = align_scale(pred, tri, valid)  # negative triangulated depth is ignored
    assert torch.allclose(s, torch.tensor([3.0, 1.0], dtype=DT))
    # lsq_rel minimises sum(((tri - s pred)/tri)^2): s = sum(r) / sum(r^2), r = pred / tri
    pred2 = torch.tensor([[1.0, 2.0]], dtype=DT)
    tri2 = torch.tensor([[2.0, 2.0]], dtype=DT)
    s2 = align_scale(pred2, tri2, torch.ones(1, 2, dtype=torch.bool), method="lsq_rel")
    assert torch.allclose(s2, torch.tensor([1.5 / 1.25], dtype=DT))
    with pytest.raises(InputError):
        align_scale(pred2, tri2, torch.ones(1, 2, dtype=torch.bool), method="mean")


def test_triangulation_depth_loss_hand_value_and_validity():
    depth = torch.full((2, 1, 4, 5), 2.0, dtype=DT)
    uv = torch.tensor([[[1.0, 1.0], [2.5, 1.5], [3.0, 2.0]]], dtype=DT).expand(2, 3, 2)
    tri = torch.tensor([[4.0, 4.0, float("nan")]], dtype=DT).expand(2, 3)
    valid = torch.tensor([[True, True, False]]).expand(2, 3)
    loss, per = triangulation_depth_loss(depth, uv, tri, valid, torch.tensor([True, False]))
    assert torch.allclose(per, torch.tensor([0.25, 0.0], dtype=DT))
    assert loss.item() == pytest.approx(0.25)


def test_triangulation_depth_loss_gradcheck():
    torch.manual_seed(0)
    depth = (torch.rand(1, 1, 4, 5, dtype=DT) + 1).requires_grad_()
    uv = torch.tensor([[[0.3, 1.7], [2.5, 1.2], [3.9, 2.6]]], dtype=DT)
    tri = torch.tensor([[1.5, 2.0, 1.2]], dtype=DT)
    valid = torch.ones(1, 3, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda d: triangulation_depth_loss(d, uv, tri, valid)[0], (depth,))


def test_log_l1_triangulation_loss_is_bounded_and_symmetric():
    depth = torch.full((1, 1, 4, 5), 2.0, dtype=DT)
    uv = torch.tensor([[[1.0, 1.0], [2.0, 2.0]]], dtype=DT)
    valid = torch.ones(1, 2, dtype=torch.bool)
    for tri, want in (([4.0, 4.0], math.log(2)), ([1.0, 1.0], math.log(2)), ([2.0, 2.0], 0.0)):
        loss, _ = triangulation_depth_loss(depth, uv, torch.tensor([tri], dtype=DT), valid, kind="log_l1")
        assert loss.item() == pytest.approx(want)
    # a point triangulated 100x too near: rel2 explodes, log_l1 grows only with log(100)
    tri = torch.tensor([[0.02, 2.0]], dtype=DT)
    big, _ = triangulation_depth_loss(depth, uv, tri, valid)
    small, _ = triangulation_depth_loss(depth, uv, tri, valid, kind="log_l1")
    assert big.item() > 4000 and small.item() == pytest.approx(math.log(100) / 2)
    d = (torch.rand(1, 1, 4, 5, dtype=DT) + 1).requires_grad_()
    uv2 = torch.tensor([[[0.3, 1.7], [2.5, 1.2]]], dtype=DT)
    assert torch.autograd.gradcheck(
        lambda x: triangulation_depth_loss(x, uv2, torch.tensor([[1.5, 3.0]], dtype=DT), valid, kind="log_l1")[0], (d,))
    with pytest.raises(InputError, match="triangulation loss"):
        triangulation_depth_loss(depth, uv, tri, valid, kind="l2")


def test_flow_reprojection_and_photometric_hand_values():
    flow = torch.zeros(1, 2, 2, 2, dtype=DT)
    rigid = torch.zeros(1, 2, 2, 2, dtype=DT)
    rigid[:, 0, 0, 0] = 2.0  # |diff| = (2 + 0)/2 channel mean at (0,0)
    rigid[:, 1, 1, 1] = 100.0  # masked out
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]], dtype=DT)
    loss, per = flow_reprojection_loss(flow, rigid, mask)
    assert torch.allclose(per, torch.tensor([0.5], dtype=DT)) and loss.item() == pytest.approx(0.5)
    img = torch.rand(1, 3, 4, 4, dtype=DT)
    l0, _ = depth_photometric_loss(img, img, torch.ones(1, 1, 4, 4, dtype=DT), None)
    l1, _ = depth_photometric_loss(img, img + 0.1, torch.ones(1, 1, 4, 4, dtype=DT), None, alpha=0.0)
    assert l0.item() < 1e-12 and l1.item() == pytest.approx(0.1)


def test_objective_is_zero_for_consistent_scene_at_any_depth_scale():
    s = _scene()
    res = _objective(s, s["depth"] * 3.7)  # the network's depth has an arbitrary scale
    assert res.terms["tri"].item() < 1e-20
    assert res.terms["pf"].item() < 1e-9
    assert res.terms["pd"].item() < 1e-9
    assert res.terms["n_valid"].item() == 1
    bad = _objective(s, s["depth"] * (1 + 0.3 * torch.rand_like(s["depth"])))
    for k in ("tri", "pf", "pd"):
        assert bad.terms[k] > 1e-4


def test_invalid_sample_drops_out_of_geometry_terms():
    good = _scene(seed=1)
    depth_good = good["depth"] * (1 + 0.2 * torch.rand_like(good["depth"]))
    broken = _scene(seed=2)
    broken["T"] = torch.full_like(broken["T"], float("nan"))  # failed pose
    broken["depth_tri"] = torch.full_like(broken["depth_tri"], float("nan"))
    broken["F"] = torch.full_like(broken["F"], float("nan"))
    alone = _objective(good, depth_good)
    batch = _cat(good, broken)
    d = torch.cat([depth_good, broken["depth"]]).requires_grad_()
    res = trianflow_depth_objective(batch["img1"], batch["img2"], d, batch["flow"], batch["K"], batch["T"],
                                    batch["uv"], batch["depth_tri"], batch["tri_valid"], F=batch["F"])
    assert res.per_sample["valid"].tolist() == [True, False]
    for k in ("tri", "pf", "pd"):
        assert torch.allclose(res.terms[k], alone.terms[k], atol=1e-12), k
        assert res.per_sample[k][1] == 0
    assert torch.isfinite(res.total)
    res.total.backward()
    assert torch.isfinite(d.grad).all() and d.grad[0].abs().sum() > 0


def test_explicit_sample_valid_and_too_few_points():
    s = _scene(seed=3)
    d = s["depth"] * (1 + 0.2 * torch.rand_like(s["depth"]))
    res = _objective(s, d, sample_valid=torch.tensor([False]))
    assert res.terms["n_valid"] == 0 and res.terms["tri"] == 0
    s["tri_valid"][:, 5:] = False  # 5 points survive < min_points = 10
    assert _objective(s, d).terms["n_valid"] == 0
    assert _objective(s, d, min_points=5).terms["n_valid"] == 1


def test_all_invalid_batch_is_finite_and_differentiable():
    s = _scene(seed=4)
    s["depth_tri"] = torch.full_like(s["depth_tri"], float("nan"))
    s["T"] = torch.full_like(s["T"], float("nan"))
    d = (s["depth"] * 1.0).requires_grad_()
    res = _objective(s, d, weights={"smooth": 0.0})
    assert res.total.item() == 0 and torch.isfinite(res.total)
    res.total.backward()
    assert d.grad is not None and torch.isfinite(d.grad).all()


def test_weights_are_applied_and_unknown_rejected():
    s = _scene(seed=5)
    d = s["depth"] * (1 + 0.2 * torch.rand_like(s["depth"]))
    r = _objective(s, d, weights={"tri": 2.0, "pf": 0.5, "pd": 0.25, "smooth": 0.01, "flow": 9.0})
    expect = 2.0 * r.terms["tri"] + 0.5 * r.terms["pf"] + 0.25 * r.terms["pd"] + 0.01 * r.terms["smooth"]
    assert torch.allclose(r.total, expect)
    assert torch.allclose(r.per_sample["total"].mean(), expect)
    with pytest.raises(InputError):
        _objective(s, d, weights={"triangulation": 1.0})
