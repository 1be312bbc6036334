"""A synthetic street-canyon scene rendered by ray casting in numpy, with exact depth, pose and flow.

The scene (built by :func:`build_scene` around the camera path) is a closed axis-aligned "room":
a ground plane 1.5 m below the cameras, two side walls, a far and a back wall and a high ceiling,
plus a few axis-aligned boxes on both sides of the street at different depths. Every surface
carries a deterministic procedural texture defined in world coordinates: multi-scale value noise
(6 octaves from ~3 m down to ~9 cm features) with a strong contrast stretch, mixed with sharp
"blob" edges and a low-frequency colour tint. Octaves finer than the sampling footprint are faded
out (a procedural mip-map), and every pixel averages ``supersample x supersample`` rays, so the
images are anti-aliased and optical flow (e.g. OpenCV DIS) and feature matchers work well. There
is no lighting: a surface point has the same colour in every view (up to the footprint filter).

Conventions (as in the rest of trianflow): camera x right, y down, z forward; poses are 4x4
camera-to-world matrices (column vectors); pixel centres at integer coordinates; depth is the z
coordinate in the camera frame (metres).

Public API: :func:`make_trajectory`, :func:`default_intrinsics`, :func:`build_scene`,
:func:`render_views`, :class:`SyntheticSequence`, :func:`synthetic_sequence`,
:func:`write_kitti_layout`, :class:`SyntheticDataset`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
import torch

from trianflow.data.sequence import FrameSequence
from trianflow.data.transforms import add_aug_copies, to_image_tensor
from trianflow.errors import InputError

log = logging.getLogger(__name__)

TRAJECTORY_KINDS = ("forward_turn", "straight", "rotation")

_TABLE = 256  # size of the periodic random lattice behind each noise octave
_FREQS = np.array([0.35, 0.7, 1.4, 2.8, 5.6, 11.2])  # features per metre
_AMPS = np.array([1.0, 0.85, 0.75, 0.65, 0.55, 0.45])
_CAMERA_HEIGHT = 1.5


# ----------------------------------------------------------------------------------------------
# trajectories and intrinsics


def _rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def make_trajectory(n_frames: int, kind: str = "forward_turn", step: float = 1.0, seed: int = 0) -> np.ndarray:
    """Camera-to-world poses of a smooth synthetic camera path.

    Kinds:

    - ``"forward_turn"``: forward ``step`` metres per frame along the heading, with gentle
      sinusoidal yaw turns (6-9 degrees amplitude, period 36-56 frames, so the path stays in the
      street) and small pitch/roll wiggles (1-2.5 degrees);
    - ``"straight"``: ``step`` metres per frame along +z, no rotation;
    - ``"rotation"``: pure rotation in place (yaw up to ~20 degrees, small pitch/roll), no
      translation (the degenerate case for two-view geometry).

    The seed picks amplitudes, periods and turning direction.

    Returns:
        ``(N,4,4)`` float64 camera-to-world matrices, ``T[0]`` = identity.
    """
    if kind not in TRAJECTORY_KINDS:
        raise InputError(f"unknown trajectory kind {kind!r}: use one of {', '.join(TRAJECTORY_KINDS)}")
    n = int(n_frames)
    if n < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=np.float64)
    poses = np.tile(np.eye(4), (n, 1, 1))
    if kind == "straight":
        poses[:, 2, 3] = i * step
        return poses
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "forward_turn":
        a_yaw, p_yaw = math.radians(rng.uniform(6, 9)) * sign, rng.uniform(36, 56)
        a_pitch, p_pitch = math.radians(rng.uniform(1.0, 2.0)), rng.uniform(14, 24)
        a_roll, p_roll = math.radians(rng.uniform(1.0, 2.5)), rng.uniform(18, 30)
    else:  # rotation
        a_yaw, p_yaw = math.radians(rng.uniform(15, 20)) * sign, rng.uniform(30, 40)
        a_pitch, p_pitch = math.radians(rng.uniform(2.0, 4.0)), rng.uniform(16, 24)
        a_roll, p_roll = math.radians(rng.uniform(1.0, 2.0)), rng.uniform(20, 30)
    yaw = a_yaw * np.sin(2 * np.pi * i / p_yaw)
    pitch = a_pitch * np.sin(2 * np.pi * i / p_pitch)
    roll = a_roll * np.sin(2 * np.pi * i / p_roll)
    pos = np.zeros((n, 3))
    if kind == "forward_turn":
        for k in range(1, n):
            h = 0.5 * (yaw[k - 1] + yaw[k])  # heading between the two frames
            pos[k] = pos[k - 1] + step * np.array([math.sin(h), 0.0, math.cos(h)])
    for k in range(n):
        poses[k, :3, :3] = _rot_y(yaw[k]) @ _rot_x(pitch[k]) @ _rot_z(roll[k])
        poses[k, :3, 3] = pos[k]
    poses[0] = np.eye(4)
    return poses


def default_intrinsics(size: Tuple[int, int] = (192, 640)) -> np.ndarray:
    """KITTI-like pinhole intrinsics for an image of ``size = (H, W)``.

    ``fx = fy = 0.6 W`` (about 80 degrees horizontal field of view, KITTI has ~82), principal
    point at the image centre ``((W-1)/2, (H-1)/2)``.

    Returns:
        ``(3,3)`` float64.
    """
    h, w = int(size[0]), int(size[1])
    f = 0.6 * w
    return np.array([[f, 0, (w - 1) / 2.0], [0, f, (h - 1) / 2.0], [0, 0, 1]], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# the scene


@dataclass
class SyntheticScene:
    """A closed box ("room") with axis-aligned boxes inside and per-surface texture parameters.

    Surface ids: room faces ``2*axis + (0 for the low side, 1 for the high side)`` (0..5), box
    ``b`` is surface ``6 + b``.

    Attributes:
        room_lo, room_hi: ``(3,)`` corners of the room (the cameras are inside).
        boxes_lo, boxes_hi: ``(B,3)`` corners of the boxes.
        offsets: ``(S,2)`` texture-coordinate offsets per surface (decorrelate the surfaces).
        dark, light: ``(S,3)`` the two colours each texture blends between (RGB in [0,1]).
        tint: ``(S,3)`` direction of the low-frequency colour modulation.
        tables: ``(O,256,256)`` float32 random lattices, one per noise octave.
    """

    room_lo: np.ndarray
    room_hi: np.ndarray
    boxes_lo: np.ndarray
    boxes_hi: np.ndarray
    offsets: np.ndarray
    dark: np.ndarray
    light: np.ndarray
    tint: np.ndarray
    tables: np.ndarray

    # -- ray casting -------------------------------------------------------------------------
    def cast(self, origin: np.ndarray, dirs: np.ndarray, uv: Optional[np.ndarray] = None,
             camera: Optional[Tuple[np.ndarray, np.ndarray]] = None):
        """Intersect rays ``origin + t * dirs`` with the scene (first hit, ``t > 0``).

        Args:
            origin: ``(3,)`` ray origin, inside the room and outside every box.
            dirs: ``(M,3)`` ray directions (need not be unit length; ``t`` is in their units).
            uv, camera: optional speed-up when every ray passes through pixel ``uv (M,2)`` of a
                camera ``(pose_c2w (4,4), K (3,3))`` centred at ``origin``: boxes are then only
                tested against the rays inside their projected bounding rectangle.
        Returns:
            ``(t, axis, surf)``: ``(M,)`` hit parameter (float32 for float32 ``dirs``, else float64), ``(M,)`` int axis of the hit
            face's normal (0=x, 1=y, 2=z) and ``(M,)`` int surface id.
        """
        d = np.asarray(dirs)
        dt = np.float32 if d.dtype == np.float32 else np.float64
        d = d.reshape(-1, 3).astype(dt, copy=False)
        o = [float(v) for v in np.asarray(origin, dtype=np.float64).reshape(3)]
        comps = [np.ascontiguousarray(d[:, a]) for a in range(3)]
        inv = [1.0 / np.where(np.abs(c) < 1e-12, dt(1e-12), c) for c in comps]
        # exit through the room (slab test from the inside): t per axis, all > 0
        ts = [(np.where(comps[a] > 0, dt(self.room_hi[a]), dt(self.room_lo[a])) - dt(o[a])) * inv[a] for a in range(3)]
        t = np.minimum(np.minimum(ts[0], ts[1]), ts[2])
        axis = np.where(t == ts[0], 0, np.where(t == ts[1], 1, 2))
        positive = np.where(axis == 0, comps[0] > 0, np.where(axis == 1, comps[1] > 0, comps[2] > 0))
        surf = 2 * axis + positive
        # entry into the boxes
        for b in range(len(self.boxes_lo)):
            lo, hi = self.boxes_lo[b], self.boxes_hi[b]
            sel = None
            if uv is not None and camera is not None:
                rect = _box_rect(lo, hi, camera[0], camera[1])
                if rect is not None:
                    m = (uv[:, 0] >= rect[0]) & (uv[:, 0] <= rect[1]) & (uv[:, 1] >= rect[2]) & (uv[:, 1] <= rect[3])
                    sel = np.nonzero(m)[0]
                    if len(sel) == 0:
                        continue
            near, far, nax = None, None, None
            for a in range(3):
                ia = inv[a] if sel is None else inv[a][sel]
                t1 = (float(lo[a]) - o[a]) * ia
                t2 = (float(hi[a]) - o[a]) * ia
                n_a, f_a = np.minimum(t1, t2), np.maximum(t1, t2)
                if near is None:
                    near, far, nax = n_a, f_a, np.zeros(n_a.shape, np.int64)
                else:
                    nax = np.where(n_a > near, a, nax)
                    near, far = np.maximum(near, n_a), np.minimum(far, f_a)
            tcur = t if sel is None else t[sel]
            hit = (near <= far) & (near > 0) & (near < tcur)
            if not hit.any():
                continue
            idx = np.nonzero(hit)[0] if sel is None else sel[hit]
            t[idx] = near[hit]
            axis[idx] = nax[hit]
            surf[idx] = 6 + b
        return t, axis, surf

    # -- texture -----------------------------------------------------------------------------
    def shade(self, points: np.ndarray, axis: np.ndarray, surf: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Colour of surface points.

        Args:
            points: ``(M,3)`` world points on the surfaces; axis, surf: ``(M,)`` from :meth:`cast`.
            footprint: ``(M,)`` size of one sample on the surface in metres (for anti-aliasing).
        Returns:
            ``(M,3)`` float32 RGB in [0,1].
        """
        iu = np.array([2, 0, 0])[axis]
        iv = np.array([1, 2, 1])[axis]
        off = self.offsets.astype(np.float32)
        u = np.take_along_axis(points, iu[:, None], 1)[:, 0] + off[surf, 0]
        v = np.take_along_axis(points, iv[:, None], 1)[:, 0] + off[surf, 1]
        fp = footprint.astype(np.float32)

        m = len(u)
        cols = 1024
        rows = max(-(-m // cols), 1)
        u32 = np.zeros(rows * cols, np.float32)
        v32 = np.zeros(rows * cols, np.float32)
        u32[:m] = u
        v32[:m] = v

        def octave(k, f, du=0.0, dv=0.0):
            # value noise: bicubic interpolation of a periodic random lattice (cv2.remap wraps
            # around the table; coordinates are reduced modulo the table size first because
            # remap's fixed-point maps only hold +-32767)
            mu = u32 * np.float32(f) + np.float32(du)
            mu -= np.float32(_TABLE) * np.floor(mu * np.float32(1.0 / _TABLE))
            mv = v32 * np.float32(f) + np.float32(dv)
            mv -= np.float32(_TABLE) * np.floor(mv * np.float32(1.0 / _TABLE))
            out = cv2.remap(self.tables[k], mu.reshape(rows, cols), mv.reshape(rows, cols), cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_WRAP)
            return out.reshape(-1)[:m]

        acc = np.zeros(len(u), np.float32)
        for k, (f, a) in enumerate(zip(_FREQS, _AMPS)):
            w = np.clip(2.0 - 4.0 * f * fp, 0.0, 1.0)  # fade out octaves finer than ~2 samples
            if not w.any():
                continue
            acc += (a * w) * (octave(k, f) - 0.5)
        acc /= _AMPS.sum() * 0.22
        lum = 0.5 + 0.5 * np.tanh(2.2 * acc)  # contrast stretch
        # sharp-edged blobs at ~0.7 m, edges softened to the footprint
        fb = 1.4
        nb = octave(2, fb, 91.3, 37.7)
        e = np.clip(1.5 * fb * fp, 0.02, 0.5)
        blob = np.clip((nb - 0.5 + e) / (2 * e), 0.0, 1.0)
        blob = blob * blob * (3 - 2 * blob)
        lum = 0.6 * lum + 0.4 * blob
        lum = lum[:, None]
        rgb = self.dark[surf] + (self.light[surf] - self.dark[surf]) * lum
        tint = octave(0, 0.25, 17.1, 53.9) - 0.5
        rgb = rgb * (1.0 + 0.6 * tint[:, None] * self.tint[surf])
        return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def build_scene(camera_centres: np.ndarray, seed: int = 0) -> SyntheticScene:
    """Build the street-canyon scene around a set of camera centres.

    The room extends 7 m beyond the cameras sideways, 25 m behind the first and 60 m ahead of
    the last camera; boxes stand every 5-10 m on alternating (randomly) sides of the street,
    at least 2 m beside the camera path. Deterministic given ``camera_centres`` and ``seed``.

    Args:
        camera_centres: ``(M,3)`` world positions of every camera that will be rendered.
    Returns:
        a :class:`SyntheticScene`.
    """
    c = np.asarray(camera_centres, dtype=np.float64).reshape(-1, 3)
    rng = np.random.default_rng([int(seed), 7331])
    x_lo, x_hi = c[:, 0].min(), c[:, 0].max()
    z_lo, z_hi = c[:, 2].min(), c[:, 2].max()
    ground = c[:, 1].max() + _CAMERA_HEIGHT
    room_lo = np.array([x_lo - 7.0, ground - 13.0, z_lo - 25.0])
    room_hi = np.array([x_hi + 7.0, ground, z_hi + 60.0])
    lo, hi = [], []
    z = z_lo - 20.0 + rng.uniform(0, 5)
    while z < z_hi + 50.0:
        side = 1 if rng.random() < 0.5 else -1
        width = rng.uniform(0.6, 2.0)
        length = rng.uniform(1.0, 4.0)
        height = rng.uniform(0.8, 4.0)
        gap = rng.uniform(2.0, 3.5)
        if side > 0:
            x0 = x_hi + gap
            x1 = min(x0 + width, room_hi[0] - 0.5)
        else:
            x1 = x_lo - gap
            x0 = max(x1 - width, room_lo[0] + 0.5)
        lo.append([x0, ground - height, z])
        hi.append([x1, ground, z + length])
        z += length + rng.uniform(3.0, 8.0)
    n_surf = 6 + len(lo)
    hues = rng.uniform(0, 1, n_surf)
    dark = np.stack([_hsv(h, rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.22)) for h in hues])
    light = np.stack([_hsv((h + rng.uniform(-0.15, 0.15)) % 1.0, rng.uniform(0.15, 0.5), rng.uniform(0.8, 0.97))
                      for h in hues])
    tint = rng.normal(size=(n_surf, 3))
    tint /= np.linalg.norm(tint, axis=1, keepdims=True)
    tex_rng = np.random.default_rng([int(seed), 4242])
    tables = tex_rng.random((len(_FREQS), _TABLE, _TABLE)).astype(np.float32)
    return SyntheticScene(
        room_lo=room_lo, room_hi=room_hi,
        boxes_lo=np.array(lo, dtype=np.float64).reshape(-1, 3), boxes_hi=np.array(hi, dtype=np.float64).reshape(-1, 3),
        offsets=rng.uniform(0, _TABLE, size=(n_surf, 2)),
        dark=dark.astype(np.float32), light=light.astype(np.float32), tint=tint.astype(np.float32),
        tables=tables,
    )


def _box_rect(lo, hi, pose_c2w, K, margin: float = 2.0):
    """Pixel bounding rectangle ``(u0, u1, v0, v1)`` of a box seen by a camera, or None when
    part of the box is behind the camera (then every ray must be tested)."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    R, c = pose_c2w[:3, :3], pose_c2w[:3, 3]
    pc = (corners - c) @ R  # world -> camera: R^T (X - c)
    if np.any(pc[:, 2] <= 1e-3):
        return None
    uvw = pc @ K.T
    u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    return u.min() - margin, u.max() + margin, v.min() - margin, v.max() + margin


def _hsv(h, s, v):
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


# ----------------------------------------------------------------------------------------------
# rendering


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


def _right_offset(baseline: float) -> np.ndarray:
    """Pose of the right camera in the left camera's frame (camera-to-camera, right at +x)."""
    T = np.eye(4)
    T[0, 3] = baseline
    return T


def relative_pose(pose1_c2w: np.ndarray, pose2_c2w: np.ndarray) -> np.ndarray:
    """``T_1to2 = inv(T_c2w_2) @ T_c2w_1``: maps camera-1 coordinates to camera-2 coordinates. ``(4,4)``."""
    return np.linalg.inv(pose2_c2w) @ pose1_c2w


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


# ----------------------------------------------------------------------------------------------
# sequences


@dataclass
class SyntheticSequence(FrameSequence):
    """A rendered synthetic sequence (kind ``"synthetic"``). Frames are rendered on first access
    and cached. ``gt_poses`` holds the exact camera-to-world poses of the left camera.

    Extra methods: :meth:`depth`, :meth:`depth_right`, :meth:`flow`, :meth:`relative_pose`.
    """

    scene: Optional[SyntheticScene] = None
    supersample: int = 2
    _cache: Dict = field(default_factory=dict, repr=False)

    def _render(self, key, pose):
        if key not in self._cache:
            img, depth = render_views(pose, self.K, self.size, supersample=self.supersample, scene=self.scene)
            self._cache[key] = (img[0], depth[0])
        return self._cache[key]

    def _right_pose(self, i: int) -> np.ndarray:
        return self.gt_poses[i] @ _right_offset(self.baseline)

    def _read(self, i: int) -> np.ndarray:
        return self._render(("L", i), self.gt_poses[i])[0]

    def _read_right(self, i: int) -> np.ndarray:
        return self._render(("R", i), self._right_pose(i))[0]

    def depth(self, i: int) -> np.ndarray:
        """Z-depth of frame ``i`` (left camera), ``(H,W)`` float32 metres."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._render(("L", i), self.gt_poses[i])[1]

    def depth_right(self, i: int) -> np.ndarray:
        """Z-depth of the right frame ``i``, ``(H,W)`` float32 metres."""
        if not self.has_stereo:
            raise InputError("this synthetic sequence has no right camera (pass baseline=...)")
        return self._render(("R", i), self._right_pose(i))[1]

    def relative_pose(self, i: int, j: int) -> np.ndarray:
        """``T_itoj (4,4)`` mapping camera-i coordinates to camera-j coordinates."""
        return relative_pose(self.gt_poses[i], self.gt_poses[j])

    def flow(self, i: int, j: int):
        """Exact flow from frame ``i`` to frame ``j`` and its validity, see :func:`flow_from_depth`.

        Returns:
            ``(flow (2,H,W) float32, valid (H,W) bool)``.
        """
        key = ("F", i, j)
        if key not in self._cache:
            self._cache[key] = flow_from_depth(self.scene, self.depth(i), self.K, self.gt_poses[i], self.gt_poses[j])
        return self._cache[key]

    def render_all(self, workers: Optional[int] = None) -> None:
        """Render (in parallel threads) and cache every frame not rendered yet, right views too."""
        todo = [("L", i, self.gt_poses[i]) for i in range(len(self)) if ("L", i) not in self._cache]
        if self.has_stereo:
            todo += [("R", i, self._right_pose(i)) for i in range(len(self)) if ("R", i) not in self._cache]
        if not todo:
            return
        imgs, depths = render_views(np.stack([t[2] for t in todo]), self.K, self.size,
                                    supersample=self.supersample, scene=self.scene, workers=workers)
        for (side, i, _), img, d in zip(todo, imgs, depths):
            self._cache[(side, i)] = (img, d)

    def clear_cache(self) -> None:
        """Drop cached renderings."""
        self._cache.clear()


def synthetic_sequence(n_frames: int = 40, size: Tuple[int, int] = (192, 640), kind: str = "forward_turn",
                       seed: int = 0, baseline: Optional[float] = None, step: float = 1.0,
                       K: Optional[np.ndarray] = None, supersample: int = 2, fps: float = 10.0) -> SyntheticSequence:
    """A synthetic sequence with exact ground truth (rendered lazily, cached in memory).

    Args:
        n_frames: number of frames N.
        size: ``(H, W)``.
        kind: trajectory kind, see :func:`make_trajectory`.
        seed: seeds the trajectory, the boxes and the textures.
        baseline: stereo baseline in metres (right camera at +x); None = monocular.
        step: metres per frame for the moving trajectory kinds.
        K: ``(3,3)`` intrinsics (default :func:`default_intrinsics`).
        fps: timestamps are ``index / fps``.
    Returns:
        a :class:`SyntheticSequence` with ``gt_poses (N,4,4)`` camera-to-world.
    """
    size = (int(size[0]), int(size[1]))
    poses = make_trajectory(n_frames, kind=kind, step=step, seed=seed)
    K = default_intrinsics(size) if K is None else np.asarray(K, dtype=np.float64)
    if baseline is not None and not baseline > 0:
        raise InputError(f"baseline must be > 0 metres, got {baseline}")
    centres = poses[:, :3, 3]
    if baseline is not None:
        centres = np.concatenate([centres, (poses @ _right_offset(baseline))[:, :3, 3]])
    scene = build_scene(centres, seed)
    return SyntheticSequence(
        name=f"synthetic_{kind}_s{seed}", source=f"synthetic:{kind}:{seed}", K=K,
        timestamps=np.arange(len(poses), dtype=np.float64) / fps, size=size,
        baseline=None if baseline is None else float(baseline), gt_poses=poses, kind="synthetic",
        meta={"trajectory": kind, "seed": seed, "step": step}, scene=scene, supersample=supersample,
    )


def write_kitti_layout(seq: FrameSequence, folder, gray: bool = False) -> Path:
    """Write a sequence as a KITTI odometry folder that :func:`~trianflow.data.open_sequence` reads.

    Writes ``image_2/`` (colour; ``image_3/`` for the right camera when the sequence is stereo) or,
    with ``gray=True``, ``image_0/`` (``image_1/``), as ``%06d.png``; ``calib.txt`` with
    ``P0..P3`` (left cameras ``K [I|0]``, right cameras ``K [I|(-baseline,0,0)]``);
    ``times.txt``; and ``poses.txt`` (KITTI 3x4 camera-to-world rows) when ground truth exists.

    Returns:
        the folder path.
    """
    from trianflow.io.atomic import atomic_path, write_text

    folder = Path(folder)
    left, right = ("image_0", "image_1") if gray else ("image_2", "image_3")
    (folder / left).mkdir(parents=True, exist_ok=True)
    if seq.has_stereo:
        (folder / right).mkdir(parents=True, exist_ok=True)
    for i in range(len(seq)):
        for sub, img in [(left, seq.read(i))] + ([(right, seq.read_right(i))] if seq.has_stereo else []):
            out = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if gray else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            with atomic_path(folder / sub / f"{i:06d}.png") as tmp:
                if not cv2.imwrite(str(tmp), out):
                    raise InputError(f"{folder / sub}: cannot write images there")
    K = np.asarray(seq.K, dtype=np.float64)
    P_left = np.hstack([K, np.zeros((3, 1))])
    P_right = P_left.copy()
    if seq.has_stereo:
        P_right[0, 3] = -K[0, 0] * seq.baseline
    lines = []
    for name, P in (("P0", P_left), ("P1", P_right), ("P2", P_left), ("P3", P_right)):
        lines.append(f"{name}: " + " ".join(f"{v:.12e}" for v in P.reshape(-1)))
    write_text(folder / "calib.txt", "\n".join(lines) + "\n")
    write_text(folder / "times.txt", "".join(f"{t:.6e}\n" for t in seq.timestamps))
    if seq.gt_poses is not None:
        write_text(folder / "poses.txt",
                   "".join(" ".join(f"{v:.9e}" for v in T[:3, :4].reshape(-1)) + "\n" for T in seq.gt_poses))
    return folder


# ----------------------------------------------------------------------------------------------
# training dataset


class SyntheticDataset(torch.utils.data.Dataset):
    """Training/test samples from a rendered synthetic sequence, with exact ground truth.

    Sample ``i`` pairs frame ``i`` (``image``) with frame ``i + stride`` (``image_next``); with
    ``frames=3`` the centre frame is ``i + stride`` and ``image_prev`` is added. Keys (shapes for
    one sample): ``image``, ``image_next`` (``image_prev``) ``(3,H,W)`` float32 in [0,1] with
    ``*_aug`` copies (colour-jittered when ``transform`` jitters, else identical), ``K (3,3)``,
    ``pose_gt (4,4)`` T_1to2 from ``image`` to ``image_next``, ``depth_gt (1,H,W)`` metres,
    ``flow_gt (2,H,W)`` exact flow ``image -> image_next``, ``flow_valid (1,H,W)`` float (1 where
    the pixel stays in view and is not occluded), ``frame_id``; with a baseline also
    ``image_right``, ``image_next_right`` (``image_prev_right``), ``baseline ()`` and
    ``disp_gt (1,H,W) = fx * baseline / depth``.

    Rendering is cached in memory (about ``N * H * W * 4`` bytes per cached image kind).

    Args:
        n_frames, size, kind, seed, baseline, step: passed to :func:`synthetic_sequence`.
        frames: 2 (pairs) or 3 (triplets).
        stride: frame gap between neighbours.
        transform: callable on the sample dict (see :mod:`trianflow.data.transforms`); missing
            ``*_aug`` copies are added after it.
        sequence: use this :class:`SyntheticSequence` instead of creating one.
        prerender: render every frame when the dataset is built (else on first access).
    """

    def __init__(self, n_frames: int = 12, size: Tuple[int, int] = (64, 192), kind: str = "forward_turn",
                 seed: int = 0, baseline: Optional[float] = None, frames: int = 2, stride: int = 1,
                 transform=None, step: float = 1.0, sequence: Optional[SyntheticSequence] = None,
                 prerender: bool = True):
        if frames not in (2, 3):
            raise InputError(f"frames must be 2 or 3, got {frames}")
        self.seq = sequence if sequence is not None else synthetic_sequence(
            n_frames, size=size, kind=kind, seed=seed, baseline=baseline, step=step)
        if prerender:  # render once in the main process; DataLoader workers then share the cache
            self.seq.render_all()
        self.frames, self.stride, self.transform = frames, int(stride), transform
        self.n = len(self.seq) - (frames - 1) * self.stride
        if self.n < 1:
            raise InputError(f"synthetic dataset: {len(self.seq)} frames are too few for {frames} frames "
                             f"with stride {stride}")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < self.n:
            raise IndexError(idx)
        s = self.stride
        i = idx + (s if self.frames == 3 else 0)
        j = i + s
        seq = self.seq
        sample = {
            "image": to_image_tensor(seq.read(i)),
            "image_next": to_image_tensor(seq.read(j)),
            "K": torch.as_tensor(seq.K, dtype=torch.float32),
            "pose_gt": torch.as_tensor(seq.relative_pose(i, j), dtype=torch.float32),
            "depth_gt": torch.from_numpy(seq.depth(i).copy())[None],
            "frame_id": f"{seq.name}/{i}",
        }
        flow, valid = seq.flow(i, j)
        sample["flow_gt"] = torch.from_numpy(flow.copy())
        sample["flow_valid"] = torch.from_numpy(valid.astype(np.float32))[None]
        if self.frames == 3:
            sample["image_prev"] = to_image_tensor(seq.read(i - s))
        if seq.has_stereo:
            sample["image_right"] = to_image_tensor(seq.read_right(i))
            sample["image_next_right"] = to_image_tensor(seq.read_right(j))
            if self.frames == 3:
                sample["image_prev_right"] = to_image_tensor(seq.read_right(i - s))
            sample["baseline"] = torch.tensor(seq.baseline, dtype=torch.float32)
            d = sample["depth_gt"]
            sample["disp_gt"] = torch.where(d > 0, float(seq.K[0, 0] * seq.baseline) / d.clamp(min=1e-6),
                                            torch.zeros_like(d))
        if self.transform is not None:
            sample = self.transform(sample)
        return add_aug_copies(sample)
