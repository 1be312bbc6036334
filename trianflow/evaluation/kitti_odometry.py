"""The KITTI odometry benchmark metric (translational and rotational drift over segments).

This follows the official KITTI odometry devkit (``evaluate_odometry.cpp``):

* cumulative distances along the **ground-truth** path, ``dist[0] = 0``;
* first frames every ``step_size = 10`` frames (one second at 10 Hz);
* segment lengths 100, 200, ..., 800 m; the last frame of a segment is the first frame ``i``
  with ``dist[i] > dist[first] + length`` (segments that run past the end are skipped);
* for each segment the error pose ``E = inv(delta_est) @ delta_gt`` with
  ``delta = inv(T_first) @ T_last`` (the devkit's ``pose_error``);
* translation error ``|t(E)| / length`` and rotation error ``angle(E) / length`` where
  ``angle = acos(clip((trace(R)-1)/2, -1, 1))``;
* the sequence error is the plain mean over all segments (of all lengths).

Units returned here: ``t_err`` in **percent** (devkit fraction x 100) and ``r_err`` in
**degrees per 100 m** (devkit rad/m x 180/pi x 100), the numbers usually printed in papers.

The devkit evaluates the raw estimate (no alignment). :func:`trianflow.evaluation.trajectory.
evaluate_trajectory` applies it to the estimate *after* the chosen alignment (Sim3 by default),
which is what monocular methods report (the Sim3 scale fixes the unknown monocular scale; the
rigid part of the alignment cancels in the relative poses). Differences to the C++ devkit: we
use float64 everywhere (the devkit accumulates distances in float32), which can move a segment
end by one frame in rare ties.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

KITTI_LENGTHS = (100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0)
KITTI_STEP_SIZE = 10

__all__ = [
    "KITTI_LENGTHS",
    "KITTI_STEP_SIZE",
    "KittiOdometryErrors",
    "trajectory_distances",
    "segment_errors",
    "kitti_odometry_error",
]


@dataclass
class KittiOdometryErrors:
    """Result of :func:`kitti_odometry_error`.

    Attributes:
        t_err: mean translational drift in percent (``None`` if no segment fits in the GT path).
        r_err: mean rotational drift in degrees per 100 m (``None`` likewise).
        n_segments: number of segments averaged.
        per_length: ``{length_m: (t_err %, r_err deg/100m, n_segments)}`` for lengths with segments.
        note: why the errors are ``None`` (GT path too short), else ``None``.
    """

    t_err: Optional[float]
    r_err: Optional[float]
    n_segments: int
    per_length: dict = field(default_factory=dict)
    note: Optional[str] = None

    def to_dict(self) -> dict:
        """JSON-friendly dict (``per_length`` keys become strings like ``"100"``)."""
        return {
            "kitti_t_err": self.t_err,
            "kitti_r_err": self.r_err,
            "kitti_n_segments": self.n_segments,
            "kitti_per_length": {
                f"{length:g}": {"t_err": t, "r_err": r, "n_segments": n}
                for length, (t, r, n) in self.per_length.items()
            },
            "kitti_note": self.note,
        }


def _as_poses(poses, name: str) -> np.ndarray:
    P = np.asarray(poses, dtype=np.float64)
    if P.ndim != 3 or P.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"{name} must have shape (N,4,4) or (N,3,4), got {P.shape}")
    if P.shape[1] == 3:
        bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (len(P), 1, 4))
        P = np.concatenate([P, bottom], axis=1)
    return P


def trajectory_distances(poses) -> np.ndarray:
    """Cumulative path length ``(N,)`` along the positions of ``poses (N,4,4)``; ``dist[0] = 0``."""
    P = _as_poses(poses, "poses")
    steps = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def segment_errors(
    gt_poses,
    est_poses,
    lengths: Sequence[float] = KITTI_LENGTHS,
    step_size: int = KITTI_STEP_SIZE,
) -> np.ndarray:
    """Per-segment errors as in the devkit's ``calcSequenceErrors``.

    Args:
        gt_poses: ``(N,4,4)`` ground-truth camera-to-world poses.
        est_poses: ``(N,4,4)`` estimated poses, index-aligned with ``gt_poses``.
        lengths: segment lengths in metres (GT path length).
        step_size: spacing of first frames in frames.

    Returns:
        ``(M,5)`` float64 array with columns ``first_frame, last_frame, length (m),
        t_err (fraction per metre, i.e. m/m), r_err (rad per metre)``. ``M = 0`` if no
        segment fits.
    """
    G = _as_poses(gt_poses, "gt_poses")
    P = _as_poses(est_poses, "est_poses")
    if len(G) != len(P):
        raise ValueError(f"gt_poses and est_poses must have the same length, got {len(G)} and {len(P)}")
    if step_size < 1:
        raise ValueError("step_size must be >= 1")
    dist = trajectory_distances(G)
    n = len(G)
    firsts_all = np.arange(0, n, step_size)
    firsts, lasts, lens = [], [], []
    for length in lengths:
        # first index i with dist[i] > dist[first] + length (dist is non-decreasing)
        last = np.searchsorted(dist, dist[firsts_all] + length, side="right")
        ok = last < n
        firsts.append(firsts_all[ok])
        lasts.append(last[ok])
        lens.append(np.full(int(ok.sum()), float(length)))
    # order segments as the devkit does: by first frame, then by length
    f = np.concatenate(firsts)
    l_ = np.concatenate(lasts)
    ln = np.concatenate(lens)
    if len(f) == 0:
        return np.zeros((0, 5))
    order = np.lexsort((ln, f))
    f, l_, ln = f[order], l_[order], ln[order]

    d_gt = np.linalg.inv(G[f]) @ G[l_]
    d_est = np.linalg.inv(P[f]) @ P[l_]
    E = np.linalg.inv(d_est) @ d_gt
    t_err = np.linalg.norm(E[:, :3, 3], axis=1)
    cos = 0.5 * (E[:, 0, 0] + E[:, 1, 1] + E[:, 2, 2] - 1.0)
    r_err = np.arccos(np.clip(cos, -1.0, 1.0))
    return np.stack([f, l_, ln, t_err / ln, r_err / ln], axis=1).astype(np.float64)


def kitti_odometry_error(
    gt_poses,
    est_poses,
    lengths: Sequence[float] = KITTI_LENGTHS,
    step_size: int = KITTI_STEP_SIZE,
) -> KittiOdometryErrors:
    """KITTI odometry drift of ``est_poses`` against ``gt_poses`` (both ``(N,4,4)``, index-aligned).

    Returns mean translational error in percent and rotational error in degrees per 100 m over
    all segments (see the module docstring). If the GT path is shorter than the shortest
    segment length (100 m by default), both are ``None`` and ``note`` says so.
    """
    seg = segment_errors(gt_poses, est_poses, lengths, step_size)
    if len(seg) == 0:
        path_len = float(trajectory_distances(gt_poses)[-1])
        note = (
            f"KITTI drift not computed: the ground-truth path is {path_len:.1f} m, shorter than the "
            f"shortest segment ({min(lengths):g} m)"
        )
        logger.info(note)
        return KittiOdometryErrors(t_err=None, r_err=None, n_segments=0, per_length={}, note=note)
    t_scale = 100.0
    r_scale = 100.0 * 180.0 / math.pi
    per_length = {}
    for length in lengths:
        m = seg[:, 2] == float(length)
        if m.any():
            per_length[float(length)] = (
                float(seg[m, 3].mean() * t_scale),
                float(seg[m, 4].mean() * r_scale),
                int(m.sum()),
            )
    return KittiOdometryErrors(
        t_err=float(seg[:, 3].mean() * t_scale),
        r_err=float(seg[:, 4].mean() * r_scale),
        n_segments=len(seg),
        per_length=per_length,
    )
