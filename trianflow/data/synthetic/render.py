"""Rendering of the synthetic scene: colour images and z-depth maps (:func:`render_views`, supersampled rays,
frames in parallel threads) and the exact optical flow between two views with its visibility
(:func:`flow_from_depth`). Pixel centres at integer coordinates; depth is the camera-frame z in metres.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from trianflow.data.synthetic.scene import SyntheticScene, build_scene
from trianflow.data.synthetic.trajectory import relative_pose


def _pixel_rays(K: np.ndarray, h: int, w: int, ss: int, dtype=np.float32):
    """Cached :func:`_pixel_rays_uncached` in ``dtype`` (read-only arrays)."""
    key = (np.asarray(K, dtype=np.float64).tobytes(), h, w, ss, np.dtype(dtype).str)
    with _RAY_LOCK:
        if key not in _RAY_CACHE:
            if len(_RAY_CACHE) >= 8:
                _RAY_CACHE.pop(next(iter(_RAY_CACHE)))
            uv, rays = (a.astype(dtype) for a in _pixel_rays_uncached(K, h, w, ss))
            uv.setflags(write=False)
            rays.setflags(write=False)
            _RAY_CACHE[key] = (uv, rays)
        return _RAY_CACHE[key]


_RAY_CACHE: Dict = {}
_RAY_LOCK = threading.Lock()


def _pixel_rays_uncached(K: np.ndarray, h: int, w: int, ss: int):
    """Sample positions on a ``ss x ss`` grid inside each pixel and their camera-frame rays (z = 1).

    Returns:
        ``(uv, rays)``: ``(h*ss*w*ss, 2)`` pixel coordinates (row-major over the ``(h*ss, w*ss)``
        sample grid) and ``(h*ss*w*ss, 3)`` rays ``K^-1 [u v 1]``.
    """
    off = (np.arange(ss) + 0.5) / ss - 0.5
    xs = (np.arange(w)[:, None] + off[None, :]).reshape(-1)
    ys = (np.arange(h)[:, None] + off[None, :]).reshape(-1)
    X, Y = np.meshgrid(xs, ys)
    uv = np.stack([X.reshape(-1), Y.reshape(-1)], axis=1)
    Kinv = np.linalg.inv(K)
    rays = _affine(np.stack([uv[:, 0], uv[:, 1], np.ones(len(uv))], axis=1), Kinv)
    return uv, rays


def _affine(x: np.ndarray, M: np.ndarray, b: Optional[np.ndarray] = None) -> np.ndarray:
    """``x @ M.T + b`` for ``x (N,3)`` written out per column (large ``(N,3) @ (3,3)`` BLAS
    calls are erratic when other threads are busy). Keeps ``x``'s dtype."""
    dt = x.dtype.type
    cols = [np.ascontiguousarray(x[:, k]) for k in range(3)]
    out = np.empty(x.shape, x.dtype)
    for r in range(3):
        v = cols[0] * dt(M[r, 0]) + cols[1] * dt(M[r, 1]) + cols[2] * dt(M[r, 2])
        if b is not None:
            v += dt(b[r])
        out[:, r] = v
    return out


def _render_one(scene: SyntheticScene, pose: np.ndarray, K: np.ndarray, h: int, w: int, ss: int):
    R, o = pose[:3, :3], pose[:3, 3]
    fx = math.sqrt(abs(K[0, 0] * K[1, 1]))
    # colour: supersampled rays, float32 is plenty here
    uv, rays_c = _pixel_rays(K, h, w, ss)
    rays = _affine(rays_c, R)
    t, axis, surf = scene.cast(o, rays, uv=uv, camera=(pose, K))
    pts = o.astype(np.float32) + t[:, None] * rays
    norm = np.sqrt(np.einsum("ij,ij->i", rays, rays))
    cos = np.abs(np.take_along_axis(rays, axis[:, None], 1)[:, 0]) / norm
    fp = t * norm / np.float32(fx * ss) / np.sqrt(np.maximum(cos, np.float32(0.05)))
    rgb = scene.shade(pts, axis, surf, fp).reshape(h * ss, w * ss, 3)
    if ss > 1:  # INTER_AREA with an integer factor is the exact mean of each ss x ss block
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    img = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # depth: one float64 ray through each pixel centre; t is the camera-frame z because rays have z = 1
    uv1, crays = _pixel_rays(K, h, w, 1, np.float64)
    tc, _, _ = scene.cast(o, _affine(crays, R), uv=uv1, camera=(pose, K))
    depth = tc.reshape(h, w).astype(np.float32)
    return img, depth


def render_views(poses_c2w: np.ndarray, K: np.ndarray, size: Tuple[int, int], seed: int = 0, supersample: int = 2,
                 scene: Optional[SyntheticScene] = None, workers: Optional[int] = None):
    """Render colour images and depth maps of the synthetic scene.

    Args:
        poses_c2w: ``(N,4,4)`` (or ``(4,4)``) camera-to-world poses.
        K: ``(3,3)`` intrinsics (pixel centres at integers).
        size: ``(H, W)``.
        seed: scene seed (textures, boxes); ignored when ``scene`` is given.
        supersample: rays per pixel along each axis (2 -> 4 rays per pixel).
        scene: a scene from :func:`build_scene`; default: built around ``poses_c2w``. Pass the
            same scene to render further views of the same world.
        workers: threads rendering frames in parallel (default: up to 4, one per CPU); the
            result does not depend on it.
    Returns:
        ``(images, depths)``: ``(N,H,W,3)`` uint8 RGB and ``(N,H,W)`` float32 z-depth in metres.
    """
    poses = np.asarray(poses_c2w, dtype=np.float64)
    if poses.ndim == 2:
        poses = poses[None]
    K = np.asarray(K, dtype=np.float64)
    h, w = int(size[0]), int(size[1])
    ss = max(int(supersample), 1)
    if scene is None:
        scene = build_scene(poses[:, :3, 3], seed)
    images = np.empty((len(poses), h, w, 3), np.uint8)
    depths = np.empty((len(poses), h, w), np.float32)
    workers = min(os.cpu_count() or 1, 4) if workers is None else max(int(workers), 1)
    workers = min(workers, len(poses))

    def one(i):
        images[i], depths[i] = _render_one(scene, poses[i], K, h, w, ss)

    if workers <= 1:
        for i in range(len(poses)):
            one(i)
    else:
        _pixel_rays(K, h, w, ss)
        _pixel_rays(K, h, w, 1, np.float64)
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(one, range(len(poses))))
    return images, depths


def flow_from_depth(scene: SyntheticScene, depth1: np.ndarray, K: np.ndarray, pose1_c2w: np.ndarray,
                    pose2_c2w: np.ndarray, K2: Optional[np.ndarray] = None, size2=None):
    """Exact optical flow of a rigid scene from view 1 to view 2, with a visibility mask.

    Each pixel p of view 1 is lifted with its depth, moved into view 2 and projected. It is
    *valid* when it lands inside view 2 (pixel centres ``[0, W-1] x [0, H-1]``), in front of
    the camera, and is not occluded: a ray cast from camera 2 towards the 3D point must not hit
    anything closer (an exact depth test against the scene, not a depth-map lookup).

    Args:
        scene: the rendered scene; depth1: ``(H,W)`` z-depth of view 1; K: ``(3,3)``;
        pose1_c2w, pose2_c2w: ``(4,4)``. K2/size2 default to K and depth1's size.
    Returns:
        ``(flow, valid)``: ``(2,H,W)`` float32 (channel 0 = x) and ``(H,W)`` bool.
    """
    K2 = K if K2 is None else K2
    h, w = depth1.shape
    h2, w2 = (h, w) if size2 is None else size2
    X, Y = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([X, Y, np.ones_like(X)], -1).reshape(-1, 3)
    P1 = _affine(pix, np.linalg.inv(K)) * depth1.reshape(-1, 1).astype(np.float64)
    T12 = relative_pose(pose1_c2w, pose2_c2w)
    P2 = _affine(P1, T12[:3, :3], T12[:3, 3])
    z2 = P2[:, 2]
    uv2 = _affine(P2, K2)[:, :2] / np.maximum(z2, 1e-9)[:, None]
    flow = (uv2 - pix[:, :2]).T.reshape(2, h, w).astype(np.float32)
    inside = (z2 > 1e-6) & (uv2[:, 0] >= 0) & (uv2[:, 0] <= w2 - 1) & (uv2[:, 1] >= 0) & (uv2[:, 1] <= h2 - 1)
    valid = np.zeros(h * w, bool)
    idx = np.nonzero(inside)[0]
    if len(idx):
        Pw = _affine(P1[idx], pose1_c2w[:3, :3], pose1_c2w[:3, 3])
        o2 = pose2_c2w[:3, 3]
        t, _, _ = scene.cast(o2, Pw - o2, uv=uv2[idx], camera=(pose2_c2w, K2))  # t = 1 at the point itself
        valid[idx] = t > 1.0 - 1e-3
    return flow, valid.reshape(h, w)
