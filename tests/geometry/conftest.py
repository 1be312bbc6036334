"""Synthetic two-view scenes with exact ground truth for the geometry tests."""

import pytest
import torch

from trianflow.geometry.pose import axis_angle_to_matrix, make_pose


def make_scene(b=2, n=500, noise=0.0, outliers=0.0, seed=0, forward=True, dtype=torch.float64):
    """Random 3D points seen by two cameras; returns dict with x1, x2, K, T (1->2), X (cam1)."""
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]], dtype=dtype).expand(b, 3, 3).clone()
    X = torch.rand(b, n, 3, generator=g, dtype=dtype) * torch.tensor([20.0, 14, 30], dtype=dtype) \
        - torch.tensor([10.0, 7, -6], dtype=dtype)
    R = axis_angle_to_matrix(torch.randn(b, 3, generator=g, dtype=dtype) * 0.05)
    if forward:
        t = torch.tensor([0.1, -0.05, 1.0], dtype=dtype) + 0.1 * torch.randn(b, 3, generator=g, dtype=dtype)
    else:
        t = torch.tensor([1.0, 0.1, 0.1], dtype=dtype) + 0.1 * torch.randn(b, 3, generator=g, dtype=dtype)
    T = make_pose(R, t)
    X2 = X @ R.transpose(1, 2) + t.unsqueeze(1)
    p1 = X @ K.transpose(1, 2)
    p2 = X2 @ K.transpose(1, 2)
    x1 = p1[..., :2] / p1[..., 2:]
    x2 = p2[..., :2] / p2[..., 2:]
    if noise > 0:
        x2 = x2 + noise * torch.randn(x2.shape, generator=g, dtype=dtype)
    out_mask = torch.rand(b, n, generator=g) < outliers
    if outliers > 0:
        x2 = torch.where(out_mask.unsqueeze(-1), x2 + 40 * torch.randn(x2.shape, generator=g, dtype=dtype), x2)
    return dict(x1=x1, x2=x2, K=K, T=T, R=R, t=t, X=X, outliers=out_mask)


@pytest.fixture
def scene():
    return make_scene()
