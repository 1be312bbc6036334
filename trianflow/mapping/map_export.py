"""What the local mapper gives out: the points a keyframe sees (:func:`keyframe_camera_points`, for the
VO's scale and the ground plane), the whole map with its observations (:func:`export_map`, the run
directory's ``points.npz`` / ``tracks.npz``) and the record of its adjustments (:func:`mapper_summary`,
``run.json``).

Map state as :class:`~trianflow.mapping.local_mapper.LocalMapper` holds it: ``xyz (T,3)`` and ``rgb (T,3)``
by track id (nan: not triangulated), ``bad`` frame -> ``(M,)`` bool rejected observations of that keyframe.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from trianflow.mapping.keyframes import MapKeyframe

__all__ = ["keyframe_camera_points", "export_map", "mapper_summary"]


def keyframe_camera_points(kf: MapKeyframe, bad: np.ndarray, xyz: np.ndarray, pose_c2w: np.ndarray):
    """The triangulated points keyframe ``kf`` observes (``bad (M,)`` rejected observations left out), its
    pose ``(4,4)`` c2w: ``(xy (P,2) pixels, X (P,3) in its camera coordinates)``."""
    good = ~bad
    X = xyz[kf.obs_ids[good]]
    ok = np.isfinite(X).all(axis=1)
    w2c = np.linalg.inv(pose_c2w)
    return kf.obs_xy[good][ok], X[ok] @ w2c[:3, :3].T + w2c[:3, 3]


def export_map(keyframes: List[MapKeyframe], bad: Dict[int, np.ndarray], xyz: np.ndarray, rgb: np.ndarray) -> dict:
    """The adjusted map: ``track_id (P,)``, ``xyz (P,3)``, ``rgb (P,3)`` and the observations
    ``obs_point (O,)`` (row into the point arrays), ``obs_frame (O,)``, ``obs_xy (O,2)``
    (pixels, centres at integers) of every triangulated track over all keyframes."""
    valid = np.isfinite(xyz).all(axis=1)
    tid = np.flatnonzero(valid)
    row = np.full(len(xyz), -1)
    row[tid] = np.arange(len(tid))
    o_pt, o_fr, o_xy = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros((0, 2))]
    for kf in keyframes:
        good = ~bad[kf.frame]
        ids = kf.obs_ids[good]
        m = valid[ids]
        o_pt.append(row[ids[m]])
        o_fr.append(np.full(int(m.sum()), kf.frame, np.int64))
        o_xy.append(kf.obs_xy[good][m])
    return {"track_id": tid.astype(np.int64), "xyz": xyz[tid].astype(np.float64),
            "rgb": rgb[tid].astype(np.uint8), "obs_point": np.concatenate(o_pt).astype(np.int64),
            "obs_frame": np.concatenate(o_fr).astype(np.int64), "obs_xy": np.concatenate(o_xy).astype(np.float64)}


def mapper_summary(keyframes: List[MapKeyframe], kf_reason: Dict[int, str], stats: List[dict], ba_seconds: float,
                   final_stat: Optional[dict], K_initial: np.ndarray, K_final: np.ndarray) -> dict:
    """Keyframes (and why each became one), adjustment counts and timings from the windows' records
    ``stats`` and the final adjustment's ``final_stat``, the intrinsics ``(3,3)`` before and after
    (JSON-serialisable, for ``run.json``)."""
    adjusted = [s for s in stats if s.get("adjusted")]
    return {
        "keyframes": [k.frame for k in keyframes],
        "keyframe_reasons": {str(k): v for k, v in kf_reason.items()},
        "windows": len(stats),
        "windows_adjusted": len(adjusted),
        "ba_seconds": ba_seconds,
        "mean_iterations": float(np.mean([s["iterations"] for s in adjusted])) if adjusted else 0.0,
        "mean_points": float(np.mean([s["points"] for s in adjusted])) if adjusted else 0.0,
        "mean_error_px": float(np.nanmean([s["mean_error_px"] for s in adjusted])) if adjusted else None,
        "skipped": {str(s["keyframe"]): s["skipped"] for s in stats if s.get("skipped")},
        "final": None if final_stat is None else {k: v for k, v in final_stat.items() if k not in ("free", "fixed")},
        "K_initial": K_initial.tolist(),
        "K_final": K_final.tolist(),
    }
