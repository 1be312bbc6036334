"""Keyframe selection by parallax and inlier ratio.

A frame becomes a keyframe when the scene has moved enough *in translation* since the last
keyframe to triangulate, or when the two-view geometry starts to degrade:

- **parallax**: the median displacement of the tracks shared with the last keyframe after
  removing the rotation between the two frames (pixel ``p`` of the keyframe is mapped by the
  infinite homography ``K R K^-1`` before comparing with its tracked position) is at least
  ``min_parallax_px``;
- **inlier ratio**: the current pair's essential-matrix inliers / matches fell below
  ``min_inlier_ratio`` (blur, exposure change, moving objects) and there is some parallax;
- **track loss**: fewer than ``min_track_ratio`` of the last keyframe's tracks are still alive
  (also without parallax: new tracks must start before the old ones are all gone, e.g. after
  a cut, a rotation or a dropped stretch of video);
- **interval**: ``max_interval`` frames since the last keyframe (with some parallax).

Frames whose pose was not solved from the images (``static``, ``rotation`` and ``const_vel``
statuses of :mod:`trianflow.vo`) never become keyframes: they carry no usable parallax
or their pose is a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

__all__ = ["KeyframePolicy", "KeyframeSelector", "MapKeyframe", "derotated_parallax", "NON_KEYFRAME_STATUSES"]

NON_KEYFRAME_STATUSES = ("static", "rotation", "const_vel")


@dataclass
class KeyframePolicy:
    """Thresholds of :class:`KeyframeSelector` (pixels / ratios / frames)."""

    min_parallax_px: float = 30.0
    min_inlier_ratio: float = 0.6
    min_track_ratio: float = 0.5
    max_interval: int = 8
    min_parallax_any_px: float = 2.0  # the inlier and interval rules need at least this parallax


@dataclass
class MapKeyframe:
    """A keyframe of the local map (:class:`~trianflow.mapping.local_mapper.LocalMapper`).

    Attributes:
        frame: frame index.
        obs_ids: ``(M,)`` int64 ids of the tracks observed here.
        obs_xy: ``(M,2)`` float64 their pixels (centres at integers).
        vo_rel: ``(4,4)`` the VO's relative pose previous keyframe -> this one (before adjustment).
    """

    frame: int
    obs_ids: np.ndarray
    obs_xy: np.ndarray
    vo_rel: np.ndarray


def derotated_parallax(xy_kf: np.ndarray, xy_cur: np.ndarray, K: np.ndarray, R_cur_from_kf: np.ndarray) -> np.ndarray:
    """Per-point parallax in pixels after removing the rotation between two views.

    Args:
        xy_kf: ``(M,2)`` pixels in the keyframe.  xy_cur: ``(M,2)`` the same points in the
            current frame.  K: ``(3,3)``.  R_cur_from_kf: ``(3,3)`` rotation taking keyframe
            camera coordinates to current camera coordinates.
    Returns:
        ``(M,)`` distance between ``xy_cur`` and ``xy_kf`` mapped by ``K R K^-1``.
    """
    xy_kf = np.asarray(xy_kf, dtype=np.float64).reshape(-1, 2)
    xy_cur = np.asarray(xy_cur, dtype=np.float64).reshape(-1, 2)
    K = np.asarray(K, dtype=np.float64)
    H = K @ np.asarray(R_cur_from_kf, dtype=np.float64) @ np.linalg.inv(K)
    p = np.c_[xy_kf, np.ones(len(xy_kf))] @ H.T
    with np.errstate(divide="ignore", invalid="ignore"):
        q = p[:, :2] / p[:, 2:]
    d = np.linalg.norm(q - xy_cur, axis=1)
    return np.where(np.isfinite(d), d, np.inf)


class KeyframeSelector:
    """Decides, frame by frame, whether the current frame is a keyframe.

    Args:
        K: ``(3,3)`` intrinsics.
        policy: :class:`KeyframePolicy`.

    Use: :meth:`decide` after the frame's pose is known, :meth:`mark` when the caller made it a
    keyframe (the first frame must be marked by the caller).
    """

    def __init__(self, K: np.ndarray, policy: Optional[KeyframePolicy] = None):
        self.K = np.asarray(K, dtype=np.float64)
        self.policy = policy or KeyframePolicy()
        self.last_frame: Optional[int] = None
        self.last_ids = np.zeros(0, np.int64)
        self.last_xy = np.zeros((0, 2))
        self.last_R_w2c = np.eye(3)

    def mark(self, frame: int, ids: np.ndarray, xy: np.ndarray, pose_c2w: np.ndarray) -> None:
        """Register ``frame`` as the new reference keyframe with its tracks ``ids (M,)``,
        pixels ``xy (M,2)`` and camera-to-world pose ``(4,4)``."""
        self.last_frame = int(frame)
        self.last_ids = np.asarray(ids, dtype=np.int64).copy()
        self.last_xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2).copy()
        self.last_R_w2c = np.asarray(pose_c2w, dtype=np.float64)[:3, :3].T.copy()

    def measure(self, ids: np.ndarray, xy: np.ndarray, pose_c2w: np.ndarray) -> Tuple[float, float]:
        """``(median de-rotated parallax in px, fraction of the keyframe's tracks alive)`` of
        the current frame with tracks ``ids (M,)`` at ``xy (M,2)`` and pose ``(4,4)`` c2w."""
        if self.last_frame is None or len(self.last_ids) == 0:
            return 0.0, 0.0
        ids = np.asarray(ids, dtype=np.int64)
        common, ia, ib = np.intersect1d(self.last_ids, ids, assume_unique=True, return_indices=True)
        ratio = len(common) / len(self.last_ids)
        if len(common) == 0:
            return 0.0, 0.0
        R_cur_from_kf = np.asarray(pose_c2w, dtype=np.float64)[:3, :3].T @ self.last_R_w2c.T
        par = derotated_parallax(self.last_xy[ia], np.asarray(xy, dtype=np.float64)[ib], self.K, R_cur_from_kf)
        return float(np.median(par)), float(ratio)

    def decide(self, frame: int, status: str, parallax_px: float, track_ratio: float,
               inlier_ratio: float) -> Tuple[bool, str]:
        """Keyframe decision for ``frame``: ``(is_keyframe, reason)``.

        ``reason`` is one of ``"first"``, ``"parallax"``, ``"inliers"``, ``"tracks"``,
        ``"interval"`` for a keyframe, ``"status"`` / ``""`` otherwise.
        """
        p = self.policy
        if self.last_frame is None:
            return True, "first"
        if status in NON_KEYFRAME_STATUSES:
            return False, "status"
        if parallax_px >= p.min_parallax_px:
            return True, "parallax"
        if track_ratio < p.min_track_ratio:
            return True, "tracks"
        if parallax_px < p.min_parallax_any_px:
            return False, ""
        if inlier_ratio < p.min_inlier_ratio:
            return True, "inliers"
        if frame - self.last_frame >= p.max_interval:
            return True, "interval"
        return False, ""
