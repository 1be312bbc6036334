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

This module holds the mapper's state and its per-frame flow; the steps live beside it: one window
adjustment in :mod:`trianflow.mapping.window_ba` (point selection, triangulation of new points, the
solve, outlier bookkeeping; it returns an update that :meth:`LocalMapper._adjust` applies), the
final per-frame poses in :mod:`trianflow.mapping.frame_poses`, and what the map gives out (points of a
keyframe, the map with its observations, the summary) in :mod:`trianflow.mapping.map_export`.

Cost on the 2-core CPU (KITTI, 1242x375, keyframes every ~4 frames): ~10-15 ms Lucas-Kanade (one or
two pyramid levels cost the same) and ~5 ms corners per frame, ~45 ms per window adjustment (1200
points, 28 keyframes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from trianflow.mapping.bundle_adjustment import BAOptions
from trianflow.mapping.frame_poses import interpolate_frame_poses
from trianflow.mapping.keyframes import KeyframePolicy, KeyframeSelector, MapKeyframe
from trianflow.mapping.map_export import export_map, keyframe_camera_points, mapper_summary
from trianflow.mapping.tracks import FlowTracks, TrackObservations, corner_seeds
from trianflow.mapping.window_ba import adjust_window

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
    # a result changing a keyframe-to-keyframe rotation by more than max_rotation_change_deg + max_rotation_change_rel
    # x that rotation is solved again with ``rotation_anchors`` points at infinity holding the rotations (0: never).
    # On KITTI 03 forwards no window comes near it (0.27 deg at most); played backwards (receding points) some
    # windows turned the keyframes by 0.75-1.9 deg and bent the drive (seeds 1/2: r_err 3.7/4.9 -> 0.50/0.36);
    # a fixed 0.5 deg would also catch the fast turn's legitimate corrections (kitti_01_turn 1x 1.42 -> 2.38 %)
    max_rotation_change_deg: float = 0.5
    max_rotation_change_rel: float = 0.1
    rotation_anchors: int = 30
    final_ba: bool = False  # measured: no gain on KITTI 03 (t_err 1.74 vs 1.71 %), 2-60 s at the end
    final_max_keyframes: int = 400
    final_max_iterations: int = 100
    keyframes: KeyframePolicy = field(default_factory=KeyframePolicy)
    ba: BAOptions = field(default_factory=BAOptions)


_Keyframe = MapKeyframe  # its name here before it moved to trianflow.mapping.keyframes


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
        self.keyframes: List[MapKeyframe] = []
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
        self.keyframes.append(MapKeyframe(index, obs.track, obs.xy, vo_rel))
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

    def _camera_points(self, kf: MapKeyframe):
        """The triangulated points keyframe ``kf`` observes (rejected observations left out):
        ``(xy (M,2) pixels, X (M,3) in its camera coordinates)``."""
        return keyframe_camera_points(kf, self.bad[kf.frame], self.xyz, self.kf_poses[kf.frame])

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

    def _adjust(self, free: List[MapKeyframe], fixed: List[MapKeyframe], max_points: Optional[int],
                options: BAOptions) -> dict:
        """Adjust the poses of ``free`` keyframes and the points they see, ``fixed`` keyframes
        held constant (see :func:`~trianflow.mapping.window_ba.adjust_window`), and apply the result to
        the map; returns the window's record."""
        upd = adjust_window(self.K, self.size, self.keyframes[-1].frame, free, fixed, self.kf_poses, self.xyz,
                            self.bad, self.cfg, max_points, options)
        self.ba_seconds += upd.seconds
        if not upd.stat["adjusted"]:
            return upd.stat
        self.kf_poses.update(upd.poses_c2w)
        if upd.K is not None:
            self.K = upd.K
        self.xyz[upd.point_ids] = upd.points
        self.xyz[upd.dropped_ids] = np.nan
        for f, rejected in upd.bad_obs.items():
            self.bad[f] |= rejected
        return upd.stat

    # -- results ----------------------------------------------------------------------------
    def final_poses(self, vo_poses: np.ndarray) -> np.ndarray:
        """Camera-to-world poses ``(N,4,4)`` of all frames after the adjustment: keyframes take their
        adjusted poses, the frames between them are re-attached to them (see
        :func:`~trianflow.mapping.frame_poses.interpolate_frame_poses`); ``vo_poses (N,4,4)`` are used for
        frames the mapper never saw."""
        return interpolate_frame_poses(vo_poses, self.keyframes, self.kf_poses, self.frame_ref)

    def map_points(self) -> dict:
        """The adjusted map: ``track_id (P,)``, ``xyz (P,3)``, ``rgb (P,3)`` and the observations
        ``obs_point (O,)`` (row into the point arrays), ``obs_frame (O,)``, ``obs_xy (O,2)``
        (pixels, centres at integers) of every triangulated track over all keyframes."""
        return export_map(self.keyframes, self.bad, self.xyz, self.rgb)

    def summary(self) -> dict:
        """Keyframes, adjustment counts and timings (JSON-serialisable, for ``run.json``)."""
        return mapper_summary(self.keyframes, self.kf_reason, self.stats, self.ba_seconds, self.final_stat,
                              self.K0, self.K)
