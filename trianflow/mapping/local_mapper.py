"""The sliding-window mapper of the VO (the default ``trianflow vo``; ``--refine ba``).

:class:`LocalMapper` follows corners through the flow (:class:`~trianflow.mapping.tracks.
FlowTracks`, Lucas-Kanade refined), picks keyframes (:class:`~trianflow.mapping.keyframes.
KeyframeSelector`) and, at every keyframe, adjusts the newest ``window`` keyframes and the points
they see with :func:`~trianflow.mapping.bundle_adjustment.bundle_adjust`, with the
``fixed_window`` keyframes before them held constant but kept with their observations (they
anchor the points, hence the monocular scale, to what earlier windows estimated). The very
first windows hold the first two keyframes of the run constant (gauge: frame 0 = identity,
scale = the first pair's unit translation). The VO continues from each adjusted keyframe and
chains its scale from the adjusted points, so one scale runs through the whole trajectory.
Optionally (``final_ba``) all keyframes are adjusted together once after the last frame, and
non-keyframe poses are re-attached to their keyframes (:meth:`LocalMapper.final_poses`).

Cost on the 2-core CPU (KITTI, 1242x375, keyframes every ~4 frames): ~10-15 ms Lucas-Kanade (one or
two pyramid levels cost the same) and ~5 ms corners per frame, ~45 ms per window adjustment (1200
points, 28 keyframes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from trianflow.mapping.bundle_adjustment import BAOptions, bundle_adjust
from trianflow.mapping.keyframes import KeyframePolicy, KeyframeSelector
from trianflow.mapping.tracks import FlowTracks, TrackObservations, corner_seeds
from trianflow.mapping.triangulation import triangulate_tracks

log = logging.getLogger(__name__)

__all__ = ["MapperConfig", "LocalMapper"]


@dataclass
class MapperConfig:
    """Settings of :class:`LocalMapper` (``trianflow vo --refine ba``).

    window: newest keyframes whose poses are adjusted at every keyframe.
    fixed_window: keyframes before those, held constant but with their observations (they
    anchor the points, hence the scale, to the previous windows).
    final_ba: after the last frame, adjust all keyframes together (first two held constant),
    unless there are more than ``final_max_keyframes``.
    """

    window: int = 8
    fixed_window: int = 20
    max_points: int = 1200  # points per window (longest tracks first)
    min_points: int = 30  # fewer: skip the adjustment
    min_link: int = 20  # a keyframe sharing fewer tracks with the previous one starts a new segment
    min_keyframe_observations: int = 15  # a keyframe seeing fewer adjusted points keeps its pose
    min_tri_angle_deg: float = 0.5
    max_reproj_px: float = 2.0  # observations above this after an adjustment are dropped
    track_fb_px: float = 1.0
    track_refine: bool = True  # Lucas-Kanade refinement of the flow's track prediction
    track_lk_levels: int = 2  # its pyramid levels above full resolution (1 -> 2: KITTI 03 t_err 0.89 -> 0.53 %)
    track_cell_px: int = 12
    seed: str = "corners"  # where tracks start: "corners" (Shi-Tomasi in the keyframe) or "inliers" (VO matches)
    max_corners: int = 3000
    max_pose_change: float = 0.5  # reject a result moving a pose by more than this x window path length
    final_ba: bool = False  # measured: no gain on KITTI 03 (t_err 1.74 vs 1.71 %), 2-60 s at the end
    final_max_keyframes: int = 400
    final_max_iterations: int = 100
    keyframes: KeyframePolicy = field(default_factory=KeyframePolicy)
    ba: BAOptions = field(default_factory=BAOptions)


@dataclass
class _Keyframe:
    frame: int
    obs_ids: np.ndarray  # (M,) track ids observed here
    obs_xy: np.ndarray  # (M,2)
    vo_rel: np.ndarray  # (4,4) VO relative pose previous keyframe -> this one (before adjustment)


class LocalMapper:
    """Keyframes, flow tracks and sliding-window bundle adjustment for the VO.

    Args:
        K: ``(3,3)`` intrinsics.  image_size: ``(H, W)``.  config: :class:`MapperConfig`.

    Per frame the VO calls :meth:`process` with the flows of the last pair and its pose; the
    mapper returns the (possibly refined) pose of that frame, from which the VO continues.
    :meth:`scale_reference` gives the refined points seen by the current keyframe (camera
    coordinates) so the VO can chain its monocular scale from the adjusted map. After the last
    frame, :meth:`finish` runs the final adjustment and :meth:`final_poses` gives every frame's
    pose.

    Gauge and scale: the first adjustments hold the first two keyframes constant (frame 0 =
    identity, the first pair's translation = unit length); later windows hold the
    ``fixed_window`` keyframes before the adjusted ones, whose poses carry the scale of the
    earlier windows, so the monocular scale stays continuous.

    Segments: a keyframe that shares fewer than ``min_link`` tracks with the previous one (the
    tracks were lost: a cut, a dropped stretch, a blurred or rotation-only segment) starts a new
    segment. Windows never reach across segments; the first two keyframes of a segment hold
    its gauge, and its scale is the one the VO carried over the gap.
    """

    def __init__(self, K: np.ndarray, image_size, config: Optional[MapperConfig] = None):
        self.cfg = config or MapperConfig()
        if self.cfg.seed not in ("corners", "inliers"):
            raise ValueError(f"MapperConfig.seed={self.cfg.seed!r}: use 'corners' or 'inliers'")
        self.K = np.asarray(K, dtype=np.float64).copy()
        self.K0 = self.K.copy()
        self.size = (int(image_size[0]), int(image_size[1]))
        self.tracks = FlowTracks(self.size, max_fb_px=self.cfg.track_fb_px, cell_px=self.cfg.track_cell_px,
                                 lk_levels=self.cfg.track_lk_levels)
        self.selector = KeyframeSelector(self.K, self.cfg.keyframes)
        self.keyframes: List[_Keyframe] = []
        self.kf_poses: Dict[int, np.ndarray] = {}  # frame -> (4,4) c2w, latest estimate
        self.kf_reason: Dict[int, str] = {}
        self.frame_ref: Dict[int, tuple] = {}  # frame -> (keyframe, rel (4,4) keyframe->frame from the VO)
        self.xyz = np.zeros((0, 3))  # by track id, nan = not triangulated
        self.rgb = np.zeros((0, 3), np.uint8)
        self.has_rgb = np.zeros(0, bool)
        self.bad: Dict[int, np.ndarray] = {}  # keyframe -> (M,) observation rejected
        self.segment_starts: List[int] = []  # keyframe list positions where a segment starts
        self.stats: List[dict] = []
        self.final_stat: Optional[dict] = None
        self.ba_seconds = 0.0
        self.last_keyframe_pose: Optional[np.ndarray] = None
        self._kf_image: Optional[np.ndarray] = None
        self._prev_gray: Optional[np.ndarray] = None

    # -- per frame --------------------------------------------------------------------------
    def process(self, index: int, pose_c2w: np.ndarray, status: str, image: Optional[np.ndarray],
                flow_fwd: Optional[np.ndarray] = None, flow_bwd: Optional[np.ndarray] = None,
                seeds: Optional[np.ndarray] = None, inlier_ratio: float = 1.0) -> np.ndarray:
        """Feed frame ``index`` with its VO pose ``(4,4)`` c2w, its image ``(H,W,3)`` uint8 and
        the flows ``(H,W,2)`` from the previous frame (``None`` for the first frame).

        ``seeds (N,2)`` (with ``seed="inliers"``): pixels **of the previous frame** (the pair's
        inlier correspondences, best first) where new tracks start when the previous frame is
        a keyframe. With ``seed="corners"`` tracks start at the keyframe's corners. Returns the
        pose ``(4,4)`` to continue from (the adjusted one at a keyframe).
        """
        pose_c2w = np.asarray(pose_c2w, dtype=np.float64)
        gray = None
        if image is not None and self.cfg.track_refine:
            from trianflow.flow_backends import to_gray

            gray = to_gray(image)
        if flow_fwd is not None:
            if (self.cfg.seed == "inliers" and self.keyframes and self.keyframes[-1].frame == index - 1
                    and seeds is not None and len(seeds)):
                self._seed(np.asarray(seeds, dtype=np.float64).reshape(-1, 2))
            self.tracks.advance(flow_fwd, flow_bwd, self._prev_gray, gray)
        self._prev_gray = gray
        if self.selector.last_frame is None:
            is_kf, reason = True, "first"
        else:
            par, ratio = self.selector.measure(self.tracks.ids, self.tracks.xy, pose_c2w)
            is_kf, reason = self.selector.decide(index, status, par, ratio, inlier_ratio)
        if not is_kf:
            kf = self.keyframes[-1].frame
            self.frame_ref[index] = (kf, np.linalg.inv(self.last_keyframe_pose) @ pose_c2w)
            return pose_c2w
        if self.cfg.seed == "corners" and image is not None:
            self.tracks.spawn(corner_seeds(image, self.cfg.max_corners, self.cfg.track_cell_px / 2))
        obs = self.tracks.observe(index)
        self._grow(self.tracks.next_id)
        self._colour(obs, image)
        self._kf_image = image
        prev_pose = self.last_keyframe_pose
        vo_rel = np.eye(4) if prev_pose is None else np.linalg.inv(prev_pose) @ pose_c2w
        if not self.keyframes:
            self.segment_starts.append(0)
        else:
            prev = self.keyframes[-1]
            link = np.intersect1d(prev.obs_ids[~self.bad[prev.frame]], obs.track).size
            if link < self.cfg.min_link:
                self.segment_starts.append(len(self.keyframes))
                log.info("keyframe %d shares %d tracks with keyframe %d: new segment", index, link, prev.frame)
        self.keyframes.append(_Keyframe(index, obs.track, obs.xy, vo_rel))
        self.bad[index] = np.zeros(len(obs.track), bool)
        self.kf_poses[index] = pose_c2w.copy()
        self.kf_reason[index] = reason
        seg = self.segment_starts[-1]
        n = len(self.keyframes)
        first_free = max(seg, n - self.cfg.window)
        free = self.keyframes[first_free:]
        fixed = self.keyframes[max(seg, first_free - self.cfg.fixed_window):first_free]
        stat = self._adjust(free, fixed, self.cfg.max_points, self.cfg.ba)
        self.stats.append(stat)
        refined = self.kf_poses[index]
        self.selector.mark(index, self.keyframes[-1].obs_ids, self.keyframes[-1].obs_xy, refined)
        self.last_keyframe_pose = refined.copy()
        self.frame_ref[index] = (index, np.eye(4))
        return refined.copy()

    def skip(self, index: int, pose_c2w: np.ndarray, new_reference: Optional[np.ndarray] = None) -> None:
        """Frame ``index`` was not matched by the VO (no texture): keep its pose ``(4,4)`` c2w
        relative to the last keyframe, without tracking (the next frame is matched against the
        last good one). ``new_reference (H,W,3)``: the VO restarts from this image (the frames
        before it had no texture): the active tracks are dropped and tracking restarts here."""
        if new_reference is not None:
            self.tracks.ids = np.zeros(0, np.int64)
            self.tracks.xy = np.zeros((0, 2))
            if self.cfg.track_refine:
                from trianflow.flow_backends import to_gray

                self._prev_gray = to_gray(new_reference)
        if self.keyframes:
            self.frame_ref[index] = (self.keyframes[-1].frame,
                                     np.linalg.inv(self.last_keyframe_pose) @ np.asarray(pose_c2w, dtype=np.float64))

    def finish(self) -> Optional[dict]:
        """Final adjustment of all keyframes, segment by segment (the first two keyframes of each
        held constant), when ``config.final_ba`` and there are at most ``final_max_keyframes``;
        returns its stats (summed over segments)."""
        cfg = self.cfg
        if not cfg.final_ba or len(self.keyframes) < 3:
            return None
        if len(self.keyframes) > cfg.final_max_keyframes:
            self.final_stat = {"adjusted": False, "skipped": f"more than {cfg.final_max_keyframes} keyframes"}
            return self.final_stat
        opts = BAOptions(**{**cfg.ba.__dict__, "max_iterations": cfg.final_max_iterations})
        bounds = self.segment_starts + [len(self.keyframes)]
        total = {"adjusted": False, "segments": 0, "points": 0, "observations": 0, "seconds": 0.0, "iterations": 0,
                 "outliers": 0}
        for a, b in zip(bounds[:-1], bounds[1:]):
            kfs = self.keyframes[a:b]
            if len(kfs) < 3:
                continue
            st = self._adjust(kfs[2:], kfs[:2], None, opts)
            if st.get("adjusted"):
                total["adjusted"] = True
                total["segments"] += 1
                for k in ("points", "observations", "seconds", "iterations", "outliers"):
                    total[k] += st.get(k, 0)
                total["mean_error_px"] = st.get("mean_error_px")
        self.final_stat = total
        return total

    def keyframe_ground(self, options=None) -> list:
        """Ground plane under every keyframe, fitted to the adjusted map points it observes.

        Returns ``[(frame, GroundPlane)]`` in keyframe order (see
        :func:`trianflow.geometry.ground.fit_ground_plane`; heights in the map's units).
        """
        from trianflow.geometry.ground import fit_ground_plane

        out = []
        for kf in self.keyframes:
            xy, Xc = self._camera_points(kf)
            out.append((kf.frame, fit_ground_plane(Xc, xy, self.K, self.size, options)))
        return out

    def is_keyframe(self, index: int) -> bool:
        """Whether frame ``index`` was made a keyframe."""
        return index in self.kf_poses

    def scale_reference(self):
        """Adjusted points seen by the newest keyframe: ``(xy (M,2) pixels, X (M,3) camera coords)``
        or ``None`` if there are fewer than ``min_points``."""
        if not self.keyframes:
            return None
        xy, Xc = self._camera_points(self.keyframes[-1])
        if len(Xc) < self.cfg.min_points:
            return None
        front = Xc[:, 2] > 1e-6
        return xy[front], Xc[front]

    def _camera_points(self, kf: _Keyframe):
        """The triangulated points keyframe ``kf`` observes (rejected observations left out):
        ``(xy (M,2) pixels, X (M,3) in its camera coordinates)``."""
        good = ~self.bad[kf.frame]
        X = self.xyz[kf.obs_ids[good]]
        ok = np.isfinite(X).all(axis=1)
        w2c = np.linalg.inv(self.kf_poses[kf.frame])
        return kf.obs_xy[good][ok], X[ok] @ w2c[:3, :3].T + w2c[:3, 3]

    # -- internals --------------------------------------------------------------------------
    def _seed(self, seeds: np.ndarray) -> None:
        """Start tracks at ``seeds`` in the newest keyframe (the previous frame) and add them to
        its observations and to the keyframe selector's reference."""
        kf = self.keyframes[-1]
        new = self.tracks.spawn(seeds)
        if len(new) == 0:
            return
        xy, _ = self.tracks.positions(new)
        kf.obs_ids = np.concatenate([kf.obs_ids, new])
        kf.obs_xy = np.concatenate([kf.obs_xy, xy])
        self.bad[kf.frame] = np.concatenate([self.bad[kf.frame], np.zeros(len(new), bool)])
        self._grow(self.tracks.next_id)
        self._colour(TrackObservations(new, np.full(len(new), kf.frame), xy), self._kf_image)
        self.selector.mark(kf.frame, kf.obs_ids, kf.obs_xy, self.kf_poses[kf.frame])

    def _grow(self, n: int) -> None:
        if n > len(self.xyz):
            extra = n - len(self.xyz) + 1024
            self.xyz = np.concatenate([self.xyz, np.full((extra, 3), np.nan)])
            self.rgb = np.concatenate([self.rgb, np.zeros((extra, 3), np.uint8)])
            self.has_rgb = np.concatenate([self.has_rgb, np.zeros(extra, bool)])

    def _colour(self, obs: TrackObservations, image: Optional[np.ndarray]) -> None:
        if image is None or len(obs) == 0:
            return
        new = ~self.has_rgb[obs.track]
        if not new.any():
            return
        img = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, 2)
        ij = np.clip(np.round(obs.xy[new]).astype(np.int64), 0, [self.size[1] - 1, self.size[0] - 1])
        self.rgb[obs.track[new]] = img[ij[:, 1], ij[:, 0], :3]
        self.has_rgb[obs.track[new]] = True

    def _observations(self, kfs: List[_Keyframe]) -> TrackObservations:
        parts = []
        for kf in kfs:
            good = ~self.bad[kf.frame]
            parts.append(TrackObservations(kf.obs_ids[good], np.full(int(good.sum()), kf.frame, np.int64),
                                           kf.obs_xy[good]))
        return TrackObservations(np.concatenate([p.track for p in parts]), np.concatenate([p.frame for p in parts]),
                                 np.concatenate([p.xy for p in parts]))

    def _adjust(self, free: List[_Keyframe], fixed: List[_Keyframe], max_points: Optional[int],
                options: BAOptions) -> dict:
        """Adjust the poses of ``free`` keyframes and the points they see, ``fixed`` keyframes
        held constant (at least two are: the oldest free ones are moved to ``fixed`` if needed)."""
        cfg = self.cfg
        free, fixed = list(free), list(fixed)
        while len(fixed) < 2 and free:
            fixed.append(free.pop(0))
        stat = {"keyframe": self.keyframes[-1].frame, "free": [k.frame for k in free],
                "fixed": [k.frame for k in fixed], "adjusted": False}
        if not free:
            stat["skipped"] = "window too small"
            return stat
        kfs = fixed + free
        obs = self._observations(kfs)
        free_frames = np.array([k.frame for k in free])
        poses_w2c = {k.frame: np.linalg.inv(self.kf_poses[k.frame]) for k in kfs}
        ids, inv, counts = np.unique(obs.track, return_inverse=True, return_counts=True)
        in_free = np.zeros(len(ids), bool)
        np.logical_or.at(in_free, inv, np.isin(obs.frame, free_frames))
        keep_pt = (counts >= 2) & in_free
        xyz = self.xyz[ids].copy()
        need = keep_pt & ~np.isfinite(xyz).all(axis=1)
        if need.any():  # new points: multi-view triangulation with the current poses
            m = need[inv]
            local = np.full(len(ids), -1)
            local[need] = np.arange(int(need.sum()))
            new_xyz, ok = triangulate_tracks(self.K, poses_w2c, local[inv[m]], obs.frame[m], obs.xy[m],
                                             int(need.sum()), cfg.min_tri_angle_deg, cfg.max_reproj_px)
            idx = np.flatnonzero(need)
            xyz[idx[ok]] = new_xyz[ok]
        keep_pt &= np.isfinite(xyz).all(axis=1)
        if max_points is not None and keep_pt.sum() > max_points:  # longest tracks first, then oldest
            cand = np.flatnonzero(keep_pt)
            order = np.lexsort((ids[cand], -counts[cand]))
            keep_pt[:] = False
            keep_pt[cand[order[:max_points]]] = True
        stat["points"] = int(keep_pt.sum())
        if keep_pt.sum() < cfg.min_points:
            stat["skipped"] = "too few points"
            return stat
        sel = keep_pt[inv]
        local = np.full(len(ids), -1)
        local[keep_pt] = np.arange(int(keep_pt.sum()))
        o_pt, o_fr, o_xy = local[inv[sel]], obs.frame[sel], obs.xy[sel]
        pts0 = xyz[keep_pt]
        # keyframes that see too few of these points cannot be adjusted (nor hold anything)
        seen = {k.frame: int((o_fr == k.frame).sum()) for k in kfs}
        weak = {f for f, c in seen.items() if c < cfg.min_keyframe_observations}
        if weak:
            free = [k for k in free if k.frame not in weak]
            fixed = [k for k in fixed if k.frame not in weak]
            kfs = fixed + free
            m = ~np.isin(o_fr, list(weak))
            o_pt, o_fr, o_xy = o_pt[m], o_fr[m], o_xy[m]
            stat["weak_keyframes"] = sorted(weak)
            if not free or len(fixed) < 2:
                stat["skipped"] = "keyframes see too few points"
                return stat
            # points left with a single observation carry no information
            cnt = np.bincount(o_pt, minlength=len(pts0))
            m = cnt[o_pt] >= 2
            o_pt, o_fr, o_xy = o_pt[m], o_fr[m], o_xy[m]
            poses_w2c = {k.frame: poses_w2c[k.frame] for k in kfs}
        stat["observations"] = int(len(o_pt))
        try:
            res = bundle_adjust(self.K, self.size, poses_w2c, pts0, o_pt, o_fr, o_xy,
                                constant_frames=[k.frame for k in fixed], options=options)
        except Exception as exc:  # pycolmap/Ceres failure: keep the VO poses for this window
            log.warning("bundle adjustment of keyframes %s failed: %s", stat["free"], exc)
            stat["skipped"] = f"solver error: {exc}"
            return stat
        self.ba_seconds += res.seconds
        stat.update(seconds=res.seconds, iterations=res.iterations, initial_cost=res.initial_cost,
                    final_cost=res.final_cost)
        # sanity: a usable solution that does not throw poses far away
        centres0 = np.stack([self.kf_poses[k.frame][:3, 3] for k in kfs])
        path = float(np.linalg.norm(np.diff(centres0, axis=0), axis=1).sum())
        new_c2w = {k.frame: np.linalg.inv(res.poses_w2c[k.frame]) for k in free}
        move = max(float(np.linalg.norm(new_c2w[k.frame][:3, 3] - self.kf_poses[k.frame][:3, 3])) for k in free)
        finite = all(np.all(np.isfinite(T)) for T in new_c2w.values()) and np.all(np.isfinite(res.points))
        if not res.usable or not finite or move > cfg.max_pose_change * max(path, 1e-9):
            stat["skipped"] = "rejected result"
            log.info("bundle adjustment of keyframes %s rejected (usable=%s, move %.3g, path %.3g)",
                     stat["free"], res.usable, move, path)
            return stat
        stat["adjusted"] = True
        for f, T in new_c2w.items():
            self.kf_poses[f] = T
        if options.refine_intrinsics:
            self.K = res.K
        # outliers: drop observations above max_reproj_px, and points left with < 2 observations
        bad_obs = res.errors > cfg.max_reproj_px
        stat["outliers"] = int(bad_obs.sum())
        stat["mean_error_px"] = float(np.mean(res.errors[~bad_obs])) if (~bad_obs).any() else float("nan")
        in_problem = np.bincount(o_pt, minlength=len(pts0)) > 0
        pts_ok = np.bincount(o_pt[~bad_obs], minlength=len(pts0)) >= 2
        gid = ids[keep_pt]
        self.xyz[gid[in_problem & pts_ok]] = res.points[in_problem & pts_ok]
        self.xyz[gid[in_problem & ~pts_ok]] = np.nan
        if bad_obs.any():
            bad_ids = gid[o_pt[bad_obs]]
            bad_fr = o_fr[bad_obs]
            for k in kfs:
                m = bad_fr == k.frame
                if m.any():
                    self.bad[k.frame] |= np.isin(k.obs_ids, bad_ids[m])
        return stat

    # -- results ----------------------------------------------------------------------------
    def final_poses(self, vo_poses: np.ndarray) -> np.ndarray:
        """Camera-to-world poses ``(N,4,4)`` of all frames after the adjustment.

        Keyframes take their adjusted poses. A frame between keyframes ``a`` and ``b`` takes
        ``pose_a @ rel`` where ``rel`` is the VO motion from ``a``, its translation rescaled by the
        adjusted/VO length ratio of ``a -> b``, and the remaining discrepancy at ``b`` spread
        linearly over the frames in between. Frames after the last keyframe follow the VO from
        it. ``vo_poses (N,4,4)`` are used for frames the mapper never saw.
        """
        from scipy.spatial.transform import Rotation

        out = np.array(vo_poses, dtype=np.float64, copy=True)
        kf_frames = [k.frame for k in self.keyframes]
        kf_pos = {f: j for j, f in enumerate(kf_frames)}
        kf_rel = {k.frame: k.vo_rel for k in self.keyframes}
        for i in range(len(out)):
            if i not in self.frame_ref:
                continue
            a, rel = self.frame_ref[i]
            Ta = self.kf_poses[a]
            if a == i:
                out[i] = Ta
                continue
            j = kf_pos[a]
            if j + 1 >= len(kf_frames):
                out[i] = Ta @ rel
                continue
            b = kf_frames[j + 1]
            Tb = self.kf_poses[b]
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

    def map_points(self) -> dict:
        """The adjusted map: ``track_id (P,)``, ``xyz (P,3)``, ``rgb (P,3)`` and the observations
        ``obs_point (O,)`` (row into the point arrays), ``obs_frame (O,)``, ``obs_xy (O,2)``
        (pixels, centres at integers) of every triangulated track over all keyframes."""
        valid = np.isfinite(self.xyz).all(axis=1)
        tid = np.flatnonzero(valid)
        row = np.full(len(self.xyz), -1)
        row[tid] = np.arange(len(tid))
        o_pt, o_fr, o_xy = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros((0, 2))]
        for kf in self.keyframes:
            good = ~self.bad[kf.frame]
            ids = kf.obs_ids[good]
            m = valid[ids]
            o_pt.append(row[ids[m]])
            o_fr.append(np.full(int(m.sum()), kf.frame, np.int64))
            o_xy.append(kf.obs_xy[good][m])
        return {"track_id": tid.astype(np.int64), "xyz": self.xyz[tid].astype(np.float64),
                "rgb": self.rgb[tid].astype(np.uint8), "obs_point": np.concatenate(o_pt).astype(np.int64),
                "obs_frame": np.concatenate(o_fr).astype(np.int64), "obs_xy": np.concatenate(o_xy).astype(np.float64)}

    def summary(self) -> dict:
        """Keyframes, adjustment counts and timings (JSON-serialisable, for ``run.json``)."""
        adjusted = [s for s in self.stats if s.get("adjusted")]
        return {
            "keyframes": [k.frame for k in self.keyframes],
            "keyframe_reasons": {str(k): v for k, v in self.kf_reason.items()},
            "windows": len(self.stats),
            "windows_adjusted": len(adjusted),
            "ba_seconds": self.ba_seconds,
            "mean_iterations": float(np.mean([s["iterations"] for s in adjusted])) if adjusted else 0.0,
            "mean_points": float(np.mean([s["points"] for s in adjusted])) if adjusted else 0.0,
            "mean_error_px": float(np.nanmean([s["mean_error_px"] for s in adjusted])) if adjusted else None,
            "skipped": {str(s["keyframe"]): s["skipped"] for s in self.stats if s.get("skipped")},
            "final": None if self.final_stat is None else {k: v for k, v in self.final_stat.items()
                                                            if k not in ("free", "fixed")},
            "K_initial": self.K0.tolist(),
            "K_final": self.K.tolist(),
        }
