"""Pinhole camera helpers: (un)projection, pixel grids, intrinsics under resize/crop/flip.

All functions are batched torch functions, device- and dtype-agnostic. Pixel centres are at
integer coordinates; camera frame x right, y down, z forward.
"""

from __future__ import annotations

import torch


def pixel_grid(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel coordinates of an ``h x w`` image.

    Returns:
        ``(2,H,W)`` tensor, channel 0 = x (column), channel 1 = y (row).
    """
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs, ys], dim=0)


def to_homogeneous(x: torch.Tensor) -> torch.Tensor:
    """Append a 1 along the last dim: ``(...,D)`` -> ``(...,D+1)``."""
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def project(points: torch.Tensor, K: torch.Tensor, eps: float = 1e-8):
    """Project camera-frame 3D points to pixels.

    Args:
        points: ``(B,N,3)`` points in the camera frame.
        K: ``(B,3,3)`` intrinsics.
    Returns:
        ``(uv, z)``: ``(B,N,2)`` pixel coordinates and ``(B,N)`` depths. Points with ``z <= eps``
        get their depth clamped to ``eps`` for the division (check ``z`` to mask them).
    """
    z = points[..., 2]
    p = points @ K.transpose(-1, -2)
    uv = p[..., :2] / z.clamp(min=eps).unsqueeze(-1)
    return uv, z


def unproject(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Lift pixels with depth to camera-frame 3D points.

    Args:
        uv: ``(B,N,2)`` pixel coordinates.
        depth: ``(B,N)`` depth (z) per pixel.
        K: ``(B,3,3)`` intrinsics.
    Returns:
        ``(B,N,3)`` points.
    """
    return bearing(uv, K) * depth.unsqueeze(-1)


def bearing(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Normalised image coordinates ``K^-1 [u v 1]^T`` (z = 1).

    Args:
        uv: ``(B,N,2)``; K: ``(B,3,3)``.
    Returns:
        ``(B,N,3)`` rays with z = 1.
    """
    return to_homogeneous(uv) @ torch.linalg.inv(K).transpose(-1, -2)


def backproject_depth(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Back-project a depth map to a camera-frame point map.

    Args:
        depth: ``(B,1,H,W)``; K: ``(B,3,3)``.
    Returns:
        ``(B,3,H,W)`` points.
    """
    b, _, h, w = depth.shape
    grid = pixel_grid(h, w, device=depth.device, dtype=depth.dtype).reshape(2, -1).T  # (HW,2)
    rays = bearing(grid.unsqueeze(0).expand(b, -1, -1), K)  # (B,HW,3)
    pts = rays * depth.reshape(b, -1, 1)
    return pts.transpose(1, 2).reshape(b, 3, h, w)


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics after resizing the image by ``sx`` (width) and ``sy`` (height).

    With pixel centres at integer coordinates, a pixel at x maps to ``(x + 0.5) * sx - 0.5``, so
    ``cx' = (cx + 0.5) * sx - 0.5``. Works on ``(3,3)`` or ``(B,3,3)``.
    """
    K = K.clone()
    K[..., 0, 0] = K[..., 0, 0] * sx
    K[..., 0, 1] = K[..., 0, 1] * sx
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 1] = K[..., 1, 1] * sy
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K


def crop_intrinsics(K: torch.Tensor, x0: float, y0: float) -> torch.Tensor:
    """Intrinsics after cropping the image so that pixel ``(x0, y0)`` becomes the origin."""
    K = K.clone()
    K[..., 0, 2] = K[..., 0, 2] - x0
    K[..., 1, 2] = K[..., 1, 2] - y0
    return K


def flip_intrinsics(K: torch.Tensor, width: int) -> torch.Tensor:
    """Intrinsics after a horizontal flip of an image ``width`` pixels wide: ``cx' = W - 1 - cx``."""
    K = K.clone()
    K[..., 0, 2] = (width - 1) - K[..., 0, 2]
    return K
