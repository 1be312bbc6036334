"""Tests for trianflow.geometry.warp with exact synthetic ground truth."""

import pytest
import torch

from trianflow.errors import InputError
from trianflow.geometry.pose import axis_angle_to_matrix, make_pose
from trianflow.geometry.warp import (depth_pose_flow, disparity_warp, project_depth_pose, resize_disparity, stereo_depth,
                                     warp_by_depth_pose)

DT = torch.float64


def _K(b=1, f=50.0, cx=15.5, cy=11.0):
    K = torch.tensor([[f, 0, cx], [0, f * 1.1, cy], [0, 0, 1]], dtype=DT)
    return K.expand(b, 3, 3).clone()


def _pose(t, aa=(0.0, 0.0, 0.0)):
    R = axis_angle_to_matrix(torch.tensor([aa], dtype=DT))
    return make_pose(R, torch.tensor([t], dtype=DT))


def test_plane_lateral_translation_gives_constant_flow():
    h, w, Z = 24, 32, 5.0
    depth = torch.full((1, 1, h, w), Z, dtype=DT)
    K = _K()
    flow = depth_pose_flow(depth, _pose([0.2, -0.1, 0.0]), K)
    assert torch.allclose(flow[:, 0], torch.full((1, h, w), 50.0 * 0.2 / Z, dtype=DT), atol=1e-10)
    assert torch.allclose(flow[:, 1], torch.full((1, h, w), 55.0 * -0.1 / Z, dtype=DT), atol=1e-10)


def test_plane_forward_translation_gives_radial_flow():
    h, w, Z, tz = 24, 32, 4.0, -1.0
    depth = torch.full((1, 1, h, w), Z, dtype=DT)
    K = _K()
    flow = depth_pose_flow(depth, _pose([0.0, 0.0, tz]), K)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=DT), torch.arange(w, dtype=DT), indexing="ij")
    k = Z / (Z + tz) - 1.0
    assert torch.allclose(flow[0, 0], (xs - 15.5) * k, atol=1e-10)
    assert torch.allclose(flow[0, 1], (ys - 11.0) * k, atol=1e-10)
    _, z2 = project_depth_pose(depth, _pose([0.0, 0.0, tz]), K)
    assert torch.allclose(z2, torch.full_like(z2, Z + tz))


def test_pure_rotation_flow_independent_of_depth():
    h, w = 12, 16
    K = _K(cx=7.5, cy=5.5)
    T = _pose([0, 0, 0], aa=(0.01, -0.02, 0.005))
    f1 = depth_pose_flow(torch.full((1, 1, h, w), 2.0, dtype=DT), T, K)
    f2 = depth_pose_flow(torch.rand(1, 1, h, w, dtype=DT) * 10 + 1, T, K)
    assert torch.allclose(f1, f2, atol=1e-9)
    assert f1.abs().max() > 0.1


def test_warp_by_depth_pose_integer_shift_is_exact():
    torch.manual_seed(0)
    h, w, Z = 10, 20, 5.0
    K = _K(f=50.0, cx=9.5, cy=4.5)
    img2 = torch.rand(2, 3, h, w, dtype=DT)
    depth = torch.full((2, 1, h, w), Z, dtype=DT)
    T = _pose([0.2, 0.0, 0.0]).expand(2, 4, 4)  # flow = 50 * 0.2 / 5 = 2 px to the right
    warped, valid = warp_by_depth_pose(img2, depth, T, K.expand(2, 3, 3))
    assert torch.allclose(warped[..., : w - 2], img2[..., 2:], atol=1e-10)
    assert valid[..., : w - 2].eq(1).all() and valid[..., w - 2:].eq(0).all()


def test_warp_behind_camera_is_invalid():
    h, w = 6, 8
    K = _K(f=10.0, cx=3.5, cy=2.5)
    depth = torch.full((1, 1, h, w), 1.0, dtype=DT)
    T = _pose([0.0, 0.0, -2.0])  # camera 2 is beyond the plane
    _, valid = warp_by_depth_pose(torch.rand(1, 1, h, w, dtype=DT), depth, T, K)
    assert valid.sum() == 0


def test_disparity_warp_integer_and_linear():
    torch.manual_seed(1)
    h, w, d = 5, 16, 3
    left = torch.rand(1, 3, h, w, dtype=DT)
    right = torch.zeros_like(left)
    right[..., : w - d] = left[..., d:]  # R(x) = L(x + d)
    disp = torch.full((1, 1, h, w), float(d), dtype=DT)
    left_est, v_l = disparity_warp(right, disp, "to_left")
    assert torch.allclose(left_est[..., d: w - d], left[..., d: w - d], atol=1e-12)
    assert v_l[..., :d].eq(0).all() and v_l[..., d:].eq(1).all()
    right_est, v_r = disparity_warp(left, disp, "to_right")
    assert torch.allclose(right_est[..., : w - d], right[..., : w - d], atol=1e-12)
    # bilinear sampling is exact on a linear ramp, also for fractional disparity
    xs = torch.arange(w, dtype=DT).view(1, 1, 1, w).expand(1, 1, h, w)
    ramp = 0.1 * xs + 0.3
    out, _ = disparity_warp(ramp, torch.full((1, 1, h, w), 1.25, dtype=DT), "to_right")
    assert torch.allclose(out[..., : w - 2], 0.1 * (xs[..., : w - 2] + 1.25) + 0.3, atol=1e-12)


def test_disparity_warp_bad_direction():
    with pytest.raises(InputError):
        disparity_warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), "up")
    with pytest.raises(InputError):
        disparity_warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), "to_left")


def test_warp_gradcheck():
    torch.manual_seed(2)
    h, w = 5, 6
    K = _K(f=6.0, cx=2.5, cy=2.0)
    img2 = torch.rand(1, 1, h, w, dtype=DT)
    depth = (torch.rand(1, 1, h, w, dtype=DT) + 2.0).requires_grad_()
    T = _pose([0.13, 0.07, 0.05], aa=(0.01, 0.02, -0.01))
    assert torch.autograd.gradcheck(lambda d: warp_by_depth_pose(img2, d, T, K, padding_mode="border")[0], (depth,))


def test_in_image_tolerates_rounding_at_the_border():
    from trianflow.geometry.warp import in_image

    uv = torch.tensor([[[[0.0, -1e-6, 9 + 1e-6, 9.01, -0.5]], [[0.0, 0.0, 4 + 1e-6, 2.0, 2.0]]]])
    assert in_image(uv, 5, 10)[0, 0, 0].tolist() == [True, True, True, False, False]
    # float32 pure x translation: rows 0 and H-1 stay valid
    h, w = 12, 16
    K = torch.tensor([[[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]]])
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = 0.1
    _, valid = warp_by_depth_pose(torch.rand(1, 3, h, w), torch.rand(1, 1, h, w) + 2, T, K)
    assert valid[0, 0, [0, h - 1], :10].all()


def test_stereo_depth_is_f_b_over_d_and_scale_free():
    K = torch.tensor([[[100.0, 0, 31.5], [0, 100.0, 15.5], [0, 0, 1]]]).repeat(2, 1, 1)
    frac = torch.full((2, 1, 8, 16), 0.05)
    depth = stereo_depth(frac, K, torch.tensor([0.5, 0.25]), width=64)
    # d = 0.05 * 64 = 3.2 px -> z = 100 * B / 3.2
    assert torch.allclose(depth[0], torch.full_like(depth[0], 100 * 0.5 / 3.2))
    assert torch.allclose(depth[1], torch.full_like(depth[1], 100 * 0.25 / 3.2))
    assert torch.isfinite(stereo_depth(torch.zeros(1, 1, 2, 2), K[:1], 0.5, 64)).all()


def test_resize_disparity_scales_values_with_width():
    d = torch.full((1, 1, 10, 20), 3.0)
    up = resize_disparity(d, (20, 40))
    assert up.shape == (1, 1, 20, 40) and torch.allclose(up, torch.full_like(up, 6.0))
    assert resize_disparity(d, (10, 20)) is d
