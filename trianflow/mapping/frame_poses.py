"""Poses of every frame after the mapper's adjustments: keyframes take their adjusted poses, the frames
between two keyframes are re-attached to them (:func:`interpolate_frame_poses`).

Poses are ``(4,4)`` camera-to-world matrices (column vectors).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from trianflow.mapping.keyframes import MapKeyframe

__all__ = ["interpolate_frame_poses"]


def interpolate_frame_poses(vo_poses: np.ndarray, keyframes: List[MapKeyframe], kf_poses: Dict[int, np.ndarray],
                            frame_ref: Dict[int, Tuple[int, np.ndarray]]) -> np.ndarray:
    """Camera-to-world poses ``(N,4,4)`` of all frames after the adjustment.

    Keyframes take their adjusted poses. A frame between keyframes ``a`` and ``b`` takes
    ``pose_a @ rel`` where ``rel`` is the VO motion from ``a``, its translation rescaled by the
    adjusted/VO length ratio of ``a -> b``, and the remaining discrepancy at ``b`` spread
    linearly over the frames in between. Frames after the last keyframe follow the VO from
    it. ``vo_poses (N,4,4)`` are used for frames the mapper never saw.

    Args:
        vo_poses: ``(N,4,4)`` the VO's poses.
        keyframes: the map's keyframes in order (their ``vo_rel``: the VO's motion from the previous one).
        kf_poses: keyframe -> ``(4,4)`` adjusted pose.
        frame_ref: frame -> ``(keyframe, rel (4,4))``: the keyframe it was tracked from and the VO's
            motion keyframe -> frame.
    """
    from scipy.spatial.transform import Rotation

    out = np.array(vo_poses, dtype=np.float64, copy=True)
    kf_frames = [k.frame for k in keyframes]
    kf_pos = {f: j for j, f in enumerate(kf_frames)}
    kf_rel = {k.frame: k.vo_rel for k in keyframes}
    for i in range(len(out)):
        if i not in frame_ref:
            continue
        a, rel = frame_ref[i]
        Ta = kf_poses[a]
        if a == i:
            out[i] = Ta
            continue
        j = kf_pos[a]
        if j + 1 >= len(kf_frames):
            out[i] = Ta @ rel
            continue
        b = kf_frames[j + 1]
        Tb = kf_poses[b]
        rel_ab = kf_rel[b]
        t_vo = np.linalg.norm(rel_ab[:3, 3])
        t_ba = np.linalg.norm((np.linalg.inv(Ta) @ Tb)[:3, 3])
        s = t_ba / t_vo if t_vo > 1e-12 and t_ba > 1e-12 else 1.0
        rel_s = rel.copy()
        rel_s[:3, 3] *= s
        rel_ab_s = rel_ab.copy()
        rel_ab_s[:3, 3] *= s
        delta = np.linalg.inv(Ta @ rel_ab_s) @ Tb
        alpha = (i - a) / max(b - a, 1)
        D = np.eye(4)
        D[:3, :3] = Rotation.from_rotvec(alpha * Rotation.from_matrix(delta[:3, :3]).as_rotvec()).as_matrix()
        D[:3, 3] = alpha * delta[:3, 3]
        out[i] = Ta @ rel_s @ D
    return out
