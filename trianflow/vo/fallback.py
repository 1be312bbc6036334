"""Fallbacks of the VO: frames the two-view step cannot solve.

- a frame without texture (black, blown out, lens cap) or an unreadable one is **bridged**
  (:func:`bridge`): it gets a constant-velocity pose and the reference (the last good frame, its
  pose and carried points) is kept, so the next textured frame is matched against it; a good frame
  after a blank reference becomes the new reference;
- a pair whose essential matrix failed is solved by **PnP** on the carried points
  (:func:`pnp_or_constant_velocity`), or else by the previous motion (``const_vel``).
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
import torch

from trianflow.vo.config import FrameInfo
from trianflow.vo.reference import ReferenceHold
from trianflow.vo.state import FrameState
from trianflow.vo.track import PointTrack

__all__ = ["bridge", "pnp_or_constant_velocity", "pose_power"]


def pose_power(rel: np.ndarray, k: float) -> np.ndarray:
    """``rel (4,4)`` to the power ``k`` for small motions: rotation angle and translation times ``k``
    (per-frame velocity from a motion spanning 1/k frames, or k frames of constant velocity)."""
    if k == 1:
        return rel.copy()
    out = np.eye(4)
    rvec, _ = cv2.Rodrigues(np.ascontiguousarray(rel[:3, :3]))
    out[:3, :3] = cv2.Rodrigues(rvec * k)[0]
    out[:3, 3] = rel[:3, 3] * k
    return out


def bridge(state: FrameState, hold: ReferenceHold, mapper, info: FrameInfo, image: Optional[np.ndarray],
           image_right: Optional[np.ndarray], blank: bool) -> np.ndarray:
    """Pose ``(4,4)`` c2w of a frame that cannot be matched (``info`` gets status ``const_vel``).

    ``blank``: this frame has no texture: constant velocity from the last bridged pose, the
    reference is kept. Otherwise the reference was blank: this frame becomes the reference at the
    bridged pose (identity motion) and the carried points and held frames are dropped."""
    info.status = "const_vel"
    if blank:
        base = state.bridge_pose if state.bridge_pose is not None else state.pose_c2w
        state.bridge_pose = base @ np.linalg.inv(state.last_rel)
        pose = state.bridge_pose
        info.reason = "no texture (blank or badly exposed frame): bridged with constant velocity"
        if mapper is not None:
            mapper.skip(info.index, pose)
    else:  # the reference was blank: start again from here
        pose = state.bridge_pose if state.bridge_pose is not None else state.pose_c2w
        state.pose_c2w = pose.copy()
        state.bridge_pose = None
        state.track = None
        hold.clear()
        state.set_reference(image, image_right, info.index)
        state.ref_blank = False
        info.reason = "previous frames had no texture: new reference"
        if mapper is not None:
            mapper.skip(info.index, pose, new_reference=image)
    info.trans = float(np.linalg.norm(state.last_rel[:3, 3])) if blank else 0.0
    return pose.copy()


def pnp_or_constant_velocity(state: FrameState, tracked, K: np.ndarray, min_inliers: int, span: int,
                             info: FrameInfo) -> np.ndarray:
    """Relative motion ``(4,4)`` reference -> frame when E failed: PnP-RANSAC (EPnP, 2 px) of the carried
    points ``tracked`` at their advected pixels (status ``pnp``; they become the new track), else
    ``span`` frames of the previous motion (status ``const_vel``; the track is dropped)."""
    if tracked is not None and len(tracked[0].xy) >= min_inliers:
        prev, xy2 = tracked
        obj = prev.X.cpu().numpy().astype(np.float64)
        img = xy2.cpu().numpy().astype(np.float64)
        ok, rvec, tvec, inl = cv2.solvePnPRansac(obj, img, np.ascontiguousarray(K), None,
                                                  reprojectionError=2.0, iterationsCount=200,
                                                  flags=cv2.SOLVEPNP_EPNP)
        if ok and inl is not None and len(inl) >= min_inliers:
            Rm, _ = cv2.Rodrigues(rvec)
            rel = np.eye(4)
            rel[:3, :3] = Rm
            rel[:3, 3] = tvec.ravel()
            info.status = "pnp"
            info.inliers = int(len(inl))
            X = torch.from_numpy(obj[inl.ravel()] @ Rm.T + tvec.ravel())
            state.track = PointTrack(torch.from_numpy(img[inl.ravel()]), X)
            return rel
    info.status = "const_vel"
    state.track = None
    return pose_power(state.last_rel, span)
