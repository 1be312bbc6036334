"""The synthetic street-canyon scene: :class:`SyntheticScene` (ray casting against a room with boxes, procedural
textures) and :func:`build_scene` (the scene around a camera path). See :mod:`trianflow.data.synthetic`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

_TABLE = 256  # size of the periodic random lattice behind each noise octave
_FREQS = np.array([0.35, 0.7, 1.4, 2.8, 5.6, 11.2])  # features per metre
_AMPS = np.array([1.0, 0.85, 0.75, 0.65, 0.55, 0.45])
_CAMERA_HEIGHT = 1.5


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
            ``(t, axis, surf)``: ``(M,)`` hit parameter (float32 for float32 ``dirs``, else float64),
            ``(M,)`` int axis of the hit face's normal (0=x, 1=y, 2=z) and ``(M,)`` int surface id.
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
