"""SE(3) / Sim(3) helpers with the column-vector convention ``X2 = R X1 + t``.

Batched over leading dims; torch in, torch out. ``rotation_error_deg`` and
``translation_angle_deg`` are the usual relative-pose errors.
"""

from __future__ import annotations

import math

import torch


def make_pose(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Stack ``R (...,3,3)`` and ``t (...,3)`` into ``(...,4,4)``."""
    T = torch.zeros(*R.shape[:-2], 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1
    return T


def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Inverse of a rigid transform ``(...,4,4)`` (uses R^T, not a general inverse)."""
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    Rt = R.transpose(-1, -2)
    return make_pose(Rt, -(Rt @ t.unsqueeze(-1)).squeeze(-1))


def transform_points(T: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Apply ``T (B,4,4)`` to points ``X (B,N,3)``."""
    return X @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix ``[v]_x`` of ``v (...,3)`` -> ``(...,3,3)``."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack(
        [torch.stack([z, -w, y], -1), torch.stack([w, z, -x], -1), torch.stack([-y, x, z], -1)], -2
    )


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle ``(...,3)`` (angle = norm, radians) -> rotation ``(...,3,3)``."""
    theta = aa.norm(dim=-1, keepdim=True).unsqueeze(-1)  # (...,1,1)
    K = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(K.shape)
    small = theta < 1e-8
    theta_s = torch.where(small, torch.ones_like(theta), theta)
    a = torch.where(small, torch.ones_like(theta), torch.sin(theta_s) / theta_s)
    b = torch.where(small, 0.5 * torch.ones_like(theta), (1 - torch.cos(theta_s)) / theta_s**2)
    return eye + a * K + b * (K @ K)


def rotation_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation angle in radians of ``R (...,3,3)``, numerically safe near 0 and pi."""
    tr = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    cos = ((tr - 1) / 2).clamp(-1.0, 1.0)
    # atan2 form is accurate for small angles
    skew_part = torch.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1
    )
    sin = skew_part.norm(dim=-1) / 2
    return torch.atan2(sin, cos)


def rotation_error_deg(R_est: torch.Tensor, R_gt: torch.Tensor) -> torch.Tensor:
    """Angle of ``R_est^T R_gt`` in degrees, ``(...)``."""
    return rotation_angle(R_est.transpose(-1, -2) @ R_gt) * (180.0 / math.pi)


def translation_angle_deg(t_est: torch.Tensor, t_gt: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Angle between translation directions ``(...,3)`` in degrees (sign-sensitive)."""
    a = t_est / t_est.norm(dim=-1, keepdim=True).clamp(min=eps)
    b = t_gt / t_gt.norm(dim=-1, keepdim=True).clamp(min=eps)
    cos = (a * b).sum(-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def project_to_so3(M: torch.Tensor) -> torch.Tensor:
    """Closest rotation to ``M (...,3,3)`` in Frobenius norm (SVD, det fixed to +1)."""
    U, _, Vh = torch.linalg.svd(M)
    d = torch.det(U @ Vh)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    return U @ D @ Vh


def umeyama(src: torch.Tensor, dst: torch.Tensor, with_scale: bool = True):
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991).

    Args:
        src, dst: ``(N,3)`` corresponding points.
    Returns:
        ``(s, R, t)`` with s a 0-dim tensor, R ``(3,3)``, t ``(3,)``.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / src.shape[0]
    U, S, Vh = torch.linalg.svd(cov)
    d = torch.sign(torch.det(U @ Vh))
    D = torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d]))
    R = U @ D @ Vh
    var_s = (xs**2).sum() / src.shape[0]
    s = (S * torch.diagonal(D)).sum() / var_s if with_scale else torch.ones((), dtype=src.dtype)
    t = mu_d - s * (R @ mu_s)
    return s, R, t
