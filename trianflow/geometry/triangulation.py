"""Midpoint triangulation of correspondences with ray-angle, positive-depth and in-image filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from trianflow.geometry.epipolar import midpoint_normalized, normalize_points


@dataclass
class Triangulation:
    """Triangulated points, batched.

    Attributes:
        points: ``(B,N,3)`` in camera-1 coordinates.
        depth1, depth2: ``(B,N)`` depths in camera 1 and camera 2.
        angle_deg: ``(B,N)`` angle between the two viewing rays.
        reproj_error: ``(B,N)`` mean reprojection error in pixels of the midpoint in both images.
        valid: ``(B,N)`` bool: input-valid and passing every filter.
    """

    points: torch.Tensor
    depth1: torch.Tensor
    depth2: torch.Tensor
    angle_deg: torch.Tensor
    reproj_error: torch.Tensor
    valid: torch.Tensor


def triangulate_midpoint(
    x1: torch.Tensor,
    x2: torch.Tensor,
    K1: torch.Tensor,
    K2: torch.Tensor,
    T_1to2: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    min_angle_deg: float = 0.05,
    max_reproj: float = 2.0,
    image_size: Optional[tuple] = None,
    max_depth: Optional[float] = None,
) -> Triangulation:
    """Midpoint of the closest points of the two viewing rays.

    Ray 1 starts at the origin of camera 1 with direction ``K1^-1 x1``; ray 2 at camera 2's centre
    ``-R^T t`` with direction ``R^T K2^-1 x2``. Filters: positive depth in both cameras, ray angle
    at least ``min_angle_deg``, reprojection error at most ``max_reproj`` px, projection inside
    ``image_size = (H, W)`` when given, depth at most ``max_depth`` when given.

    Args:
        x1, x2: ``(B,N,2)`` pixels; K1, K2: ``(B,3,3)``; T_1to2: ``(B,4,4)``; valid: ``(B,N)``.
    Returns:
        :class:`Triangulation` (computed in fp64, returned in the dtype of ``x1``).
    """
    dt = x1.dtype
    x1d, x2d = x1.double(), x2.double()
    K1d, K2d, T = K1.double(), K2.double(), T_1to2.double()
    R, t = T[:, :3, :3], T[:, :3, 3]
    X, X2, cosang = midpoint_normalized(normalize_points(x1d, K1d), normalize_points(x2d, K2d), R, t)
    z1, z2 = X[..., 2], X2[..., 2]
    angle = torch.rad2deg(torch.acos(cosang.clamp(-1, 1)))
    p1 = X @ K1d.transpose(-1, -2)
    p1 = p1[..., :2] / p1[..., 2:].clamp(min=1e-12)
    p2 = X2 @ K2d.transpose(-1, -2)
    p2 = p2[..., :2] / p2[..., 2:].clamp(min=1e-12)
    err = 0.5 * ((p1 - x1d).norm(dim=-1) + (p2 - x2d).norm(dim=-1))
    ok = (z1 > 0) & (z2 > 0) & (angle >= min_angle_deg) & (err <= max_reproj) & torch.isfinite(X).all(-1)
    if valid is not None:
        ok = ok & valid
    if image_size is not None:
        h, w = image_size
        for p in (p1, p2):
            ok = ok & (p[..., 0] >= -0.5) & (p[..., 0] <= w - 0.5) & (p[..., 1] >= -0.5) & (p[..., 1] <= h - 0.5)
    if max_depth is not None:
        ok = ok & (z1 <= max_depth)
    return Triangulation(points=X.to(dt), depth1=z1.to(dt), depth2=z2.to(dt), angle_deg=angle.to(dt),
                         reproj_error=err.to(dt), valid=ok)
