"""Multi-view geometry of flow tracks over keyframes (numpy): reprojection errors and
linear (midpoint) triangulation of tracks from their observations and known poses.

Poses are given as ``{frame: (4,4) world-to-camera}``; pixels have centres at integers.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

__all__ = ["reprojection_errors", "triangulate_tracks"]


def reprojection_errors(K: np.ndarray, poses_w2c: Dict[int, np.ndarray], points: np.ndarray, obs_point: np.ndarray,
                        obs_frame: np.ndarray, obs_xy: np.ndarray) -> np.ndarray:
    """Pixel reprojection error of every observation.

    Args:
        K: ``(3,3)``.  poses_w2c: frame -> ``(4,4)`` world-to-camera.  points: ``(P,3)`` world.
        obs_point: ``(O,)`` row into ``points``.  obs_frame: ``(O,)`` frame of the observation.
        obs_xy: ``(O,2)`` observed pixels.
    Returns:
        ``(O,)`` float64 errors; ``inf`` for points behind the camera or non-finite points.
    """
    obs_point = np.asarray(obs_point, dtype=np.int64)
    obs_frame = np.asarray(obs_frame, dtype=np.int64)
    if len(obs_point) == 0:
        return np.zeros(0)
    frames = np.unique(obs_frame)
    Rs = np.stack([poses_w2c[int(f)][:3, :3] for f in frames])
    ts = np.stack([poses_w2c[int(f)][:3, 3] for f in frames])
    fi = np.searchsorted(frames, obs_frame)
    X = np.asarray(points, dtype=np.float64)[obs_point]
    Xc = np.einsum("nij,nj->ni", Rs[fi], X) + ts[fi]
    z = Xc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * Xc[:, 0] / z + K[0, 2]
        v = K[1, 1] * Xc[:, 1] / z + K[1, 2]
        err = np.hypot(u - obs_xy[:, 0], v - obs_xy[:, 1])
    return np.where((z > 1e-9) & np.isfinite(err), err, np.inf)


def triangulate_tracks(K: np.ndarray, poses_w2c: Dict[int, np.ndarray], obs_point: np.ndarray, obs_frame: np.ndarray,
                       obs_xy: np.ndarray, num_points: int, min_angle_deg: float = 1.0, max_reproj_px: float = 2.0):
    """Multi-view midpoint triangulation: the point closest (least squares) to all its rays.

    Args:
        K: ``(3,3)``.  poses_w2c: frame -> ``(4,4)`` world-to-camera for every observed frame.
        obs_point: ``(O,)`` point index in ``[0, num_points)``.  obs_frame: ``(O,)``.
        obs_xy: ``(O,2)`` pixels (centres at integers).
        num_points: ``P``.
        min_angle_deg: the largest angle between a point's rays must reach this.
        max_reproj_px: every observation must reproject within this many pixels.
    Returns:
        ``(xyz (P,3) float64, valid (P,) bool)``; points with fewer than 2 observations, too
        small a ray angle, behind a camera or with a large reprojection error are invalid.
    """
    obs_point = np.asarray(obs_point, dtype=np.int64)
    obs_frame = np.asarray(obs_frame, dtype=np.int64)
    obs_xy = np.asarray(obs_xy, dtype=np.float64)
    P = int(num_points)
    xyz = np.full((P, 3), np.nan)
    valid = np.zeros(P, bool)
    if len(obs_point) == 0 or P == 0:
        return xyz, valid
    frames = np.unique(obs_frame)
    Rwc = np.stack([poses_w2c[int(f)][:3, :3].T for f in frames])  # camera-to-world rotations
    centres = np.stack([-poses_w2c[int(f)][:3, :3].T @ poses_w2c[int(f)][:3, 3] for f in frames])
    fi = np.searchsorted(frames, obs_frame)
    Kinv = np.linalg.inv(K)
    rays = np.c_[obs_xy, np.ones(len(obs_xy))] @ Kinv.T
    d = np.einsum("nij,nj->ni", Rwc[fi], rays)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    c = centres[fi]
    A_o = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # (O,3,3) projector orthogonal to the ray
    A = np.zeros((P, 3, 3))
    b = np.zeros((P, 3))
    np.add.at(A, obs_point, A_o)
    np.add.at(b, obs_point, np.einsum("nij,nj->ni", A_o, c))
    count = np.bincount(obs_point, minlength=P)
    # largest ray angle ~ angle between the rays most different from the mean ray
    dsum = np.zeros((P, 3))
    np.add.at(dsum, obs_point, d)
    dmean = dsum / np.maximum(np.linalg.norm(dsum, axis=1, keepdims=True), 1e-12)
    cosang = np.einsum("ni,ni->n", d, dmean[obs_point])
    min_cos = np.ones(P)
    np.minimum.at(min_cos, obs_point, cosang)
    angle = 2 * np.degrees(np.arccos(np.clip(min_cos, -1, 1)))
    ok = (count >= 2) & (angle >= min_angle_deg)
    ok &= np.abs(np.linalg.det(A)) > 1e-12
    if ok.any():
        xyz[ok] = np.linalg.solve(A[ok], b[ok][:, :, None])[:, :, 0]
    err = reprojection_errors(K, poses_w2c, np.nan_to_num(xyz, nan=0.0), obs_point, obs_frame, obs_xy)
    worst = np.zeros(P)
    np.maximum.at(worst, obs_point, err)
    ok &= worst <= max_reproj_px
    xyz[~ok] = np.nan
    valid[:] = ok
    return xyz, valid
