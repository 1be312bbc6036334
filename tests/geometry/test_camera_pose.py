import math

import pytest
import torch

from trianflow.geometry.camera import (backproject_depth, bearing, crop_intrinsics, flip_intrinsics, pixel_grid,
                                       project, scale_intrinsics, unproject)
from trianflow.geometry.pose import (axis_angle_to_matrix, invert_pose, make_pose, project_to_so3, rotation_angle,
                                     rotation_error_deg, transform_points, translation_angle_deg, umeyama)

K = torch.tensor([[[500.0, 0, 320], [0, 480.0, 240], [0, 0, 1]]], dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_unproject_roundtrip(dtype):
    X = torch.tensor([[[1.0, -2.0, 10.0], [0.0, 0.0, 5.0], [3.0, 1.0, 20.0]]], dtype=dtype)
    uv, z = project(X, K.to(dtype))
    assert torch.allclose(uv[0, 1], torch.tensor([320.0, 240.0], dtype=dtype))
    assert torch.allclose(unproject(uv, z, K.to(dtype)), X, atol=1e-4 if dtype == torch.float32 else 1e-10)
    assert torch.allclose(bearing(uv, K.to(dtype))[..., 2], torch.ones(1, 3, dtype=dtype))


def test_backproject_depth_matches_unproject():
    depth = torch.rand(1, 1, 4, 6, dtype=torch.float64) + 1
    pts = backproject_depth(depth, K)
    grid = pixel_grid(4, 6, dtype=torch.float64)
    uv, z = project(pts.flatten(2).transpose(1, 2), K)
    assert torch.allclose(uv, grid.flatten(1).T.unsqueeze(0), atol=1e-9)
    assert torch.allclose(z, depth.flatten(1))


def test_scale_intrinsics_consistent_with_resize():
    # a 3D point projects to (u, v) at full res; after resizing by s, to (u+0.5)*s-0.5
    X = torch.tensor([[[1.5, -0.7, 8.0]]], dtype=torch.float64)
    uv, _ = project(X, K)
    Ks = scale_intrinsics(K, 0.5, 0.25)
    uv_s, _ = project(X, Ks)
    assert torch.allclose(uv_s[..., 0], (uv[..., 0] + 0.5) * 0.5 - 0.5)
    assert torch.allclose(uv_s[..., 1], (uv[..., 1] + 0.5) * 0.25 - 0.5)


def test_crop_and_flip_intrinsics():
    X = torch.tensor([[[1.5, -0.7, 8.0]]], dtype=torch.float64)
    uv, _ = project(X, K)
    uv_c, _ = project(X, crop_intrinsics(K, 10, 20))
    assert torch.allclose(uv_c, uv - torch.tensor([10.0, 20.0], dtype=torch.float64))
    W = 640
    Xf = X * torch.tensor([-1.0, 1, 1], dtype=torch.float64)  # mirrored scene
    uv_f, _ = project(Xf, flip_intrinsics(K, W))
    assert torch.allclose(uv_f[..., 0], W - 1 - uv[..., 0])


def test_pose_helpers():
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(5, 3, generator=g, dtype=torch.float64)
    R = axis_angle_to_matrix(aa)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3), atol=1e-12)
    assert torch.allclose(rotation_angle(R), aa.norm(dim=1) % (2 * math.pi), atol=1e-9) or True
    ang = aa.norm(dim=1)
    ang = torch.where(ang > math.pi, 2 * math.pi - ang, ang)
    assert torch.allclose(rotation_angle(R), ang, atol=1e-9)
    assert torch.allclose(rotation_angle(axis_angle_to_matrix(torch.tensor([[1e-9, 0, 0]]).double())),
                          torch.tensor([1e-9]).double(), rtol=1e-6)
    T = make_pose(R, torch.randn(5, 3, generator=g, dtype=torch.float64))
    assert torch.allclose(T @ invert_pose(T), torch.eye(4, dtype=torch.float64).expand(5, 4, 4), atol=1e-12)
    X = torch.randn(5, 7, 3, generator=g, dtype=torch.float64)
    Y = transform_points(T, X)
    assert torch.allclose(transform_points(invert_pose(T), Y), X, atol=1e-12)
    assert torch.allclose(rotation_error_deg(R, R), torch.zeros(5, dtype=torch.float64), atol=1e-5)
    t = torch.tensor([[1.0, 0, 0]])
    assert torch.allclose(translation_angle_deg(t, torch.tensor([[0.0, 1, 0]])), torch.tensor([90.0]))
    Rn = project_to_so3(R + 1e-3 * torch.randn(5, 3, 3, generator=g, dtype=torch.float64))
    assert torch.allclose(torch.det(Rn), torch.ones(5, dtype=torch.float64))


def test_umeyama_recovers_similarity():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(50, 3, generator=g, dtype=torch.float64)
    R = axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64))
    dst = 2.5 * src @ R.T + torch.tensor([1.0, 2, 3], dtype=torch.float64)
    s, Re, t = umeyama(src, dst)
    assert abs(float(s) - 2.5) < 1e-10 and torch.allclose(Re, R, atol=1e-10)
    assert torch.allclose(t, torch.tensor([1.0, 2, 3], dtype=torch.float64), atol=1e-10)
