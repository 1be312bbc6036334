"""One window bundle adjustment of the local mapper, as a computation with an explicit result.

:func:`adjust_window` takes the keyframes of a window (``free`` ones adjusted, ``fixed`` ones held
constant) and the map as it is, and returns a :class:`WindowUpdate` that the caller applies
(:class:`~trianflow.mapping.local_mapper.LocalMapper` does, after every keyframe and in its final
adjustment). The steps:

1. the window's points (:func:`select_window_points`): tracks seen at least twice, once by a free
   keyframe; new ones triangulated from the current poses (:func:`~trianflow.mapping.triangulation.
   triangulate_tracks`); at most ``max_points``, longest tracks first;
2. keyframes that see fewer than ``min_keyframe_observations`` of those points are left out
   (:func:`drop_weak_keyframes`);
3. the pycolmap solve (:func:`~trianflow.mapping.bundle_adjustment.bundle_adjust`) and its sanity check
   (finite, usable, no pose thrown further than ``max_pose_change`` x the window's path);
4. outlier bookkeeping (:func:`outlier_update`): observations above ``max_reproj_px`` are rejected, points
   left with fewer than two good observations are removed from the map.

Poses are ``(4,4)`` matrices, ``c2w`` camera-to-world and ``w2c`` its inverse; pixels have their centres at
integer coordinates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from trianflow.mapping.bundle_adjustment import BAOptions, bundle_adjust
from trianflow.mapping.keyframes import MapKeyframe
from trianflow.mapping.tracks import TrackObservations
from trianflow.mapping.triangulation import triangulate_tracks

log = logging.getLogger(__name__)

__all__ = ["WindowUpdate", "adjust_window", "window_observations", "select_window_points", "drop_weak_keyframes",
           "outlier_update"]


@dataclass
class WindowUpdate:
    """What one window adjustment changes in the map (empty unless ``stat["adjusted"]``).

    Attributes:
        stat: the window's record (``keyframe``, ``free``, ``fixed``, ``adjusted``, ``points``,
            ``observations``, ``seconds``, ``iterations``, costs, ``outliers``, ``mean_error_px`` or
            ``skipped`` with the reason, ``weak_keyframes``).
        seconds: solver time (counted also when its result is rejected).
        poses_c2w: adjusted keyframe -> ``(4,4)`` camera-to-world pose.
        K: ``(3,3)`` refined intrinsics (``options.refine_intrinsics``), else None.
        point_ids, points: ``(P,)`` track ids and their re-estimated positions ``(P,3)``.
        dropped_ids: ``(D,)`` track ids left with fewer than two good observations: no point any more.
        bad_obs: keyframe -> ``(M,)`` bool over that keyframe's observations, newly rejected ones True.
    """

    stat: dict
    seconds: float = 0.0
    poses_c2w: Dict[int, np.ndarray] = field(default_factory=dict)
    K: Optional[np.ndarray] = None
    point_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    dropped_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bad_obs: Dict[int, np.ndarray] = field(default_factory=dict)


def window_observations(kfs: List[MapKeyframe], bad: Dict[int, np.ndarray]) -> TrackObservations:
    """The observations of keyframes ``kfs`` that are not rejected (``bad[frame] (M,)`` bool per keyframe)."""
    parts = []
    for kf in kfs:
        good = ~bad[kf.frame]
        parts.append(TrackObservations(kf.obs_ids[good], np.full(int(good.sum()), kf.frame, np.int64),
                                       kf.obs_xy[good]))
    return TrackObservations(np.concatenate([p.track for p in parts]), np.concatenate([p.frame for p in parts]),
                             np.concatenate([p.xy for p in parts]))


def select_window_points(K: np.ndarray, obs: TrackObservations, free_frames: np.ndarray,
                         poses_w2c: Dict[int, np.ndarray], xyz_map: np.ndarray, max_points: Optional[int],
                         min_tri_angle_deg: float, max_reproj_px: float):
    """The points of a window: tracks observed at least twice in ``obs``, at least once by a keyframe of
    ``free_frames``, with a position (``xyz_map (T,3)`` by track id, nan = none yet: triangulated here from
    ``poses_w2c``), at most ``max_points`` of them (longest tracks first, then oldest).

    Returns:
        ``(ids, inv, keep, xyz)``: ``ids (U,)`` the distinct tracks of ``obs`` and ``inv (O,)`` each
        observation's row in them (``np.unique``), ``keep (U,)`` bool the selected ones, ``xyz (U,3)`` their
        positions (new triangulations included).
    """
    ids, inv, counts = np.unique(obs.track, return_inverse=True, return_counts=True)
    in_free = np.zeros(len(ids), bool)
    np.logical_or.at(in_free, inv, np.isin(obs.frame, free_frames))
    keep_pt = (counts >= 2) & in_free
    xyz = xyz_map[ids].copy()
    need = keep_pt & ~np.isfinite(xyz).all(axis=1)
    if need.any():  # new points: multi-view triangulation with the current poses
        m = need[inv]
        local = np.full(len(ids), -1)
        local[need] = np.arange(int(need.sum()))
        new_xyz, ok = triangulate_tracks(K, poses_w2c, local[inv[m]], obs.frame[m], obs.xy[m],
                                         int(need.sum()), min_tri_angle_deg, max_reproj_px)
        idx = np.flatnonzero(need)
        xyz[idx[ok]] = new_xyz[ok]
    keep_pt &= np.isfinite(xyz).all(axis=1)
    if max_points is not None and keep_pt.sum() > max_points:  # longest tracks first, then oldest
        cand = np.flatnonzero(keep_pt)
        order = np.lexsort((ids[cand], -counts[cand]))
        keep_pt[:] = False
        keep_pt[cand[order[:max_points]]] = True
    return ids, inv, keep_pt, xyz


def drop_weak_keyframes(free: List[MapKeyframe], fixed: List[MapKeyframe], o_pt: np.ndarray, o_fr: np.ndarray,
                        o_xy: np.ndarray, n_points: int, min_observations: int):
    """Leave out the keyframes that see fewer than ``min_observations`` of the window's points (they can
    neither be adjusted nor hold anything), their observations, and then the observations of points left
    with a single one. ``o_pt (O,)`` point row, ``o_fr (O,)`` frame, ``o_xy (O,2)`` pixel per observation.

    Returns:
        ``(free, fixed, o_pt, o_fr, o_xy, weak)``; ``weak`` the set of frames left out (empty: nothing changed).
    """
    kfs = fixed + free
    seen = {k.frame: int((o_fr == k.frame).sum()) for k in kfs}
    weak = {f for f, c in seen.items() if c < min_observations}
    if not weak:
        return free, fixed, o_pt, o_fr, o_xy, weak
    free = [k for k in free if k.frame not in weak]
    fixed = [k for k in fixed if k.frame not in weak]
    m = ~np.isin(o_fr, list(weak))
    o_pt, o_fr, o_xy = o_pt[m], o_fr[m], o_xy[m]
    if free and len(fixed) >= 2:
        # points left with a single observation carry no information
        cnt = np.bincount(o_pt, minlength=n_points)
        m = cnt[o_pt] >= 2
        o_pt, o_fr, o_xy = o_pt[m], o_fr[m], o_xy[m]
    return free, fixed, o_pt, o_fr, o_xy, weak


def outlier_update(upd: WindowUpdate, errors: np.ndarray, points: np.ndarray, o_pt: np.ndarray, o_fr: np.ndarray,
                   gid: np.ndarray, kfs: List[MapKeyframe], max_reproj_px: float) -> None:
    """Fill ``upd`` with the adjusted points and the outliers: observations whose reprojection error
    ``errors (O,)`` is above ``max_reproj_px`` are rejected, points (``points (P,3)``, track ids ``gid (P,)``)
    left with fewer than two good observations are dropped; ``o_pt``, ``o_fr`` ``(O,)`` as in the problem."""
    bad_obs = errors > max_reproj_px
    upd.stat["outliers"] = int(bad_obs.sum())
    upd.stat["mean_error_px"] = float(np.mean(errors[~bad_obs])) if (~bad_obs).any() else float("nan")
    in_problem = np.bincount(o_pt, minlength=len(points)) > 0
    pts_ok = np.bincount(o_pt[~bad_obs], minlength=len(points)) >= 2
    upd.point_ids, upd.points = gid[in_problem & pts_ok], points[in_problem & pts_ok]
    upd.dropped_ids = gid[in_problem & ~pts_ok]
    if bad_obs.any():
        bad_ids = gid[o_pt[bad_obs]]
        bad_fr = o_fr[bad_obs]
        for k in kfs:
            m = bad_fr == k.frame
            if m.any():
                upd.bad_obs[k.frame] = np.isin(k.obs_ids, bad_ids[m])


def rotation_change_excess(old_c2w: Dict[int, np.ndarray], new_w2c: Dict[int, np.ndarray], frames,
                           base_deg: float, rel: float) -> float:
    """How far (degrees) the solution ``new_w2c`` changes a rotation between consecutive ``frames`` beyond what is
    allowed, ``base_deg + rel x`` that rotation (larger turns are estimated less exactly); <= 0: within. Poses
    missing from ``new_w2c`` keep ``old_c2w``."""
    R0 = {f: old_c2w[f][:3, :3] for f in frames}
    R1 = {f: new_w2c[f][:3, :3].T if f in new_w2c else R0[f] for f in frames}
    ang = lambda R: float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))  # noqa: E731
    worst = -np.inf
    for a, b in zip(frames[:-1], frames[1:]):
        rel0 = R0[a].T @ R0[b]
        worst = max(worst, ang(rel0.T @ (R1[a].T @ R1[b])) - (base_deg + rel * ang(rel0)))
    return worst if np.isfinite(worst) else 0.0


def rotation_anchors(K, size, poses_w2c: Dict[int, np.ndarray], frames, n: int):
    """``n`` points far beyond the scene (``1e4`` times the window's extent) on a grid of the newest keyframe's
    view, and their observations ``(point, frame, xy)`` where the current poses project them: a point at infinity
    is blind to translation, so in the adjustment they hold only the keyframes' relative rotations."""
    H, W = int(size[0]), int(size[1])
    c2w = {f: np.linalg.inv(poses_w2c[f]) for f in frames}
    centres = np.stack([c2w[f][:3, 3] for f in frames])
    extent = float(np.linalg.norm(centres.max(0) - centres.min(0))) + 1.0
    g = int(np.ceil(np.sqrt(n)))
    us, vs = np.meshgrid(np.linspace(0.1 * W, 0.9 * W, g), np.linspace(0.1 * H, 0.9 * H, g))
    pix = np.c_[us.ravel(), vs.ravel(), np.ones(g * g)][:n]
    rays = pix @ np.linalg.inv(K).T
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    last = c2w[frames[-1]]
    X = last[:3, 3] + (rays @ last[:3, :3].T) * (1e4 * extent)
    pt, fr, xy = [], [], []
    for f in frames:
        Xc = X @ poses_w2c[f][:3, :3].T + poses_w2c[f][:3, 3]
        q = Xc @ K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            x = q[:, :2] / q[:, 2:3]
        ok = (Xc[:, 2] > 0) & (x[:, 0] >= 0) & (x[:, 0] <= W - 1) & (x[:, 1] >= 0) & (x[:, 1] <= H - 1)
        pt.append(np.flatnonzero(ok))
        fr.append(np.full(int(ok.sum()), f, np.int64))
        xy.append(x[ok])
    return X, np.concatenate(pt), np.concatenate(fr), np.concatenate(xy)


def adjust_window(K: np.ndarray, size, keyframe: int, free: List[MapKeyframe], fixed: List[MapKeyframe],
                  kf_poses: Dict[int, np.ndarray], xyz_map: np.ndarray, bad: Dict[int, np.ndarray], cfg,
                  max_points: Optional[int], options: BAOptions) -> WindowUpdate:
    """Adjust the poses of the ``free`` keyframes and the points they see, ``fixed`` keyframes held
    constant (at least two are: the oldest free ones are moved to ``fixed`` if needed).

    Args:
        K: ``(3,3)`` intrinsics; size: ``(H, W)``; keyframe: the newest keyframe's frame (for the record).
        kf_poses: frame -> ``(4,4)`` c2w of every keyframe; xyz_map: ``(T,3)`` point per track id (nan: none);
        bad: frame -> ``(M,)`` bool rejected observations per keyframe. None of them is modified.
        cfg: :class:`~trianflow.mapping.local_mapper.MapperConfig` (thresholds); max_points: points per
            window (None: all); options: the solver's :class:`~trianflow.mapping.bundle_adjustment.BAOptions`.
    Returns:
        a :class:`WindowUpdate` to apply.
    """
    free, fixed = list(free), list(fixed)
    while len(fixed) < 2 and free:
        fixed.append(free.pop(0))
    upd = WindowUpdate({"keyframe": keyframe, "free": [k.frame for k in free], "fixed": [k.frame for k in fixed],
                        "adjusted": False})
    stat = upd.stat
    if not free:
        stat["skipped"] = "window too small"
        return upd
    kfs = fixed + free
    obs = window_observations(kfs, bad)
    poses_w2c = {k.frame: np.linalg.inv(kf_poses[k.frame]) for k in kfs}
    ids, inv, keep_pt, xyz = select_window_points(K, obs, np.array([k.frame for k in free]), poses_w2c, xyz_map,
                                                  max_points, cfg.min_tri_angle_deg, cfg.max_reproj_px)
    stat["points"] = int(keep_pt.sum())
    if keep_pt.sum() < cfg.min_points:
        stat["skipped"] = "too few points"
        return upd
    sel = keep_pt[inv]
    local = np.full(len(ids), -1)
    local[keep_pt] = np.arange(int(keep_pt.sum()))
    o_pt, o_fr, o_xy = local[inv[sel]], obs.frame[sel], obs.xy[sel]
    pts0 = xyz[keep_pt]
    free, fixed, o_pt, o_fr, o_xy, weak = drop_weak_keyframes(free, fixed, o_pt, o_fr, o_xy, len(pts0),
                                                              cfg.min_keyframe_observations)
    if weak:
        kfs = fixed + free
        stat["weak_keyframes"] = sorted(weak)
        if not free or len(fixed) < 2:
            stat["skipped"] = "keyframes see too few points"
            return upd
        poses_w2c = {k.frame: poses_w2c[k.frame] for k in kfs}
    stat["observations"] = int(len(o_pt))
    constant = [k.frame for k in fixed]
    frames = sorted(k.frame for k in kfs)
    try:
        res = bundle_adjust(K, size, poses_w2c, pts0, o_pt, o_fr, o_xy, constant_frames=constant, options=options)
        excess = rotation_change_excess(kf_poses, res.poses_w2c, frames, cfg.max_rotation_change_deg,
                                        cfg.max_rotation_change_rel)
        if excess > 0 and cfg.rotation_anchors > 0:
            # the window traded rotation for translation (receding points: a camera driving backwards): solve
            # again with points at infinity that hold the keyframes' relative rotations as they were
            A, a_pt, a_fr, a_xy = rotation_anchors(K, size, poses_w2c, frames, cfg.rotation_anchors)
            n_pts, n_obs = len(pts0), len(o_pt)
            res = bundle_adjust(K, size, poses_w2c, np.concatenate([pts0, A]), np.concatenate([o_pt, a_pt + n_pts]),
                                np.concatenate([o_fr, a_fr]), np.concatenate([o_xy, a_xy]), constant_frames=constant,
                                options=options)
            res.points, res.errors = res.points[:n_pts], res.errors[:n_obs]
            stat["rotation_anchored"] = {"excess_deg": excess}
    except Exception as exc:  # pycolmap/Ceres failure: keep the VO poses for this window
        log.warning("bundle adjustment of keyframes %s failed: %s", stat["free"], exc)
        stat["skipped"] = f"solver error: {exc}"
        return upd
    upd.seconds = res.seconds
    stat.update(seconds=res.seconds, iterations=res.iterations, initial_cost=res.initial_cost,
                final_cost=res.final_cost)
    # sanity: a usable solution that does not throw poses far away
    centres0 = np.stack([kf_poses[k.frame][:3, 3] for k in kfs])
    path = float(np.linalg.norm(np.diff(centres0, axis=0), axis=1).sum())
    new_c2w = {k.frame: np.linalg.inv(res.poses_w2c[k.frame]) for k in free}
    move = max(float(np.linalg.norm(new_c2w[k.frame][:3, 3] - kf_poses[k.frame][:3, 3])) for k in free)
    finite = all(np.all(np.isfinite(T)) for T in new_c2w.values()) and np.all(np.isfinite(res.points))
    if not res.usable or not finite or move > cfg.max_pose_change * max(path, 1e-9):
        stat["skipped"] = "rejected result"
        log.info("bundle adjustment of keyframes %s rejected (usable=%s, move %.3g, path %.3g)",
                 stat["free"], res.usable, move, path)
        return upd
    stat["adjusted"] = True
    upd.poses_c2w = new_c2w
    if options.refine_intrinsics:
        upd.K = res.K
    outlier_update(upd, res.errors, res.points, o_pt, o_fr, ids[keep_pt], kfs, cfg.max_reproj_px)
    return upd
