"""Bundle adjustment with pycolmap, multi-view triangulation, and the sliding-window mapper.

Three layers:

- :func:`triangulate_tracks`: linear multi-view (midpoint) triangulation of tracks from their
  observations and known poses, with parallax-angle, cheirality and reprojection checks;
- :func:`bundle_adjust`: one pycolmap (Ceres) bundle adjustment of given poses, points and
  observations, some poses held constant, intrinsics fixed (default) or refined, robust loss;
- :class:`LocalMapper`: the VO's ``--refine ba`` back end. It follows corners through the flow
  (:class:`~trianflow.mapping.tracks.FlowTracks`, Lucas-Kanade refined), picks keyframes
  (:class:`~trianflow.mapping.keyframes.KeyframeSelector`) and, at every keyframe, adjusts the
  newest ``window`` keyframes and the points they see, with the ``fixed_window`` keyframes
  before them held constant but kept with their observations (they anchor the points, hence
  the monocular scale, to what earlier windows estimated). The very first windows hold the
  first two keyframes of the run constant (gauge: frame 0 = identity, scale = the first pair's
  unit translation). The VO continues from each adjusted keyframe and chains its scale from
  the adjusted points, so one scale runs through the whole trajectory. After the last frame
  all keyframes are adjusted together once (``final_ba``, bounded by ``final_max_keyframes``),
  and non-keyframe poses are re-attached to their keyframes (:meth:`LocalMapper.final_poses`).

Cost on the 2-core CPU (KITTI, 1226x370, about every frame a keyframe): ~15 ms Lucas-Kanade and
~5 ms corners per frame, ~70 ms per window adjustment (1200 points, 14 keyframes, 6 Ceres
iterations), ~3 s for the final adjustment of 50 keyframes.

Poses: the public API speaks camera-to-world ``(4,4)`` (like :mod:`trianflow.odometry`),
pycolmap speaks ``cam_from_world``. Pixels: ours have centres at integers, COLMAP's at +0.5;
the conversion is done here and nowhere else.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from trianflow.mapping.keyframes import KeyframePolicy, KeyframeSelector
from trianflow.mapping.tracks import FlowTracks, TrackObservations

log = logging.getLogger(__name__)

__all__ = [
    "BAOptions",
    "BAResult",
    "bundle_adjust",
    "triangulate_tracks",
    "reprojection_errors",
    "MapperConfig",
    "LocalMapper",
    "rigid3d_from_matrix",
    "matrix_from_rigid3d",
    "COLMAP_PIXEL_OFFSET",
]

COLMAP_PIXEL_OFFSET = 0.5  # COLMAP pixel (centre of the top-left pixel = 0.5) = ours + 0.5


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def rigid3d_from_matrix(T: np.ndarray):
    """``pycolmap.Rigid3d`` from a ``(4,4)`` or ``(3,4)`` rigid transform (rotation re-orthonormalised)."""
    import pycolmap

    T = np.asarray(T, dtype=np.float64)
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    return pycolmap.Rigid3d(np.ascontiguousarray(np.c_[R, T[:3, 3]]))


def matrix_from_rigid3d(rigid) -> np.ndarray:
    """``(4,4)`` float64 matrix of a ``pycolmap.Rigid3d``."""
    T = np.eye(4)
    T[:3, :] = rigid.matrix()
    return T


def _camera_params(K: np.ndarray) -> list:
    return [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]) + COLMAP_PIXEL_OFFSET,
            float(K[1, 2]) + COLMAP_PIXEL_OFFSET]


def _K_from_params(p) -> np.ndarray:
    return np.array([[p[0], 0, p[2] - COLMAP_PIXEL_OFFSET], [0, p[1], p[3] - COLMAP_PIXEL_OFFSET], [0, 0, 1.0]])


def reprojection_errors(K: np.ndarray, poses_w2c: Dict[int, np.ndarray], points: np.ndarray, obs_point: np.ndarray,
                        obs_frame: np.ndarray, obs_xy: np.ndarray) -> np.ndarray:
    """Pixel reprojection error of every observation.

    Args:
        K: ``(3,3)``.  poses_w2c: frame -> ``(4,4)`` world-to-camera.  points: ``(P,3)`` world.
        obs_point: ``(O,)`` row into ``points``.  obs_frame: ``(O,)`` frame of the observation.
        obs_xy: ``(O,2)`` observed pixels.
    Returns:
        ``(O,)`` float64 errors; ``inf`` for points behind the camera or non-finite points.
    """
    obs_point = np.asarray(obs_point, dtype=np.int64)
    obs_frame = np.asarray(obs_frame, dtype=np.int64)
    if len(obs_point) == 0:
        return np.zeros(0)
    frames = np.unique(obs_frame)
    Rs = np.stack([poses_w2c[int(f)][:3, :3] for f in frames])
    ts = np.stack([poses_w2c[int(f)][:3, 3] for f in frames])
    fi = np.searchsorted(frames, obs_frame)
    X = np.asarray(points, dtype=np.float64)[obs_point]
    Xc = np.einsum("nij,nj->ni", Rs[fi], X) + ts[fi]
    z = Xc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * Xc[:, 0] / z + K[0, 2]
        v = K[1, 1] * Xc[:, 1] / z + K[1, 2]
        err = np.hypot(u - obs_xy[:, 0], v - obs_xy[:, 1])
    return np.where((z > 1e-9) & np.isfinite(err), err, np.inf)


def triangulate_tracks(K: np.ndarray, poses_w2c: Dict[int, np.ndarray], obs_point: np.ndarray, obs_frame: np.ndarray,
                       obs_xy: np.ndarray, num_points: int, min_angle_deg: float = 1.0, max_reproj_px: float = 2.0):
    """Multi-view midpoint triangulation: the point closest (least squares) to all its rays.

    Args:
        K: ``(3,3)``.  poses_w2c: frame -> ``(4,4)`` world-to-camera for every observed frame.
        obs_point: ``(O,)`` point index in ``[0, num_points)``.  obs_frame: ``(O,)``.
        obs_xy: ``(O,2)`` pixels (centres at integers).
        num_points: ``P``.
        min_angle_deg: the largest angle between a point's rays must reach this.
        max_reproj_px: every observation must reproject within this many pixels.
    Returns:
        ``(xyz (P,3) float64, valid (P,) bool)``; points with fewer than 2 observations, too
        small a ray angle, behind a camera or with a large reprojection error are invalid.
    """
    obs_point = np.asarray(obs_point, dtype=np.int64)
    obs_frame = np.asarray(obs_frame, dtype=np.int64)
    obs_xy = np.asarray(obs_xy, dtype=np.float64)
    P = int(num_points)
    xyz = np.full((P, 3), np.nan)
    valid = np.zeros(P, bool)
    if len(obs_point) == 0 or P == 0:
        return xyz, valid
    frames = np.unique(obs_frame)
    Rwc = np.stack([poses_w2c[int(f)][:3, :3].T for f in frames])  # camera-to-world rotations
    centres = np.stack([-poses_w2c[int(f)][:3, :3].T @ poses_w2c[int(f)][:3, 3] for f in frames])
    fi = np.searchsorted(frames, obs_frame)
    Kinv = np.linalg.inv(K)
    rays = np.c_[obs_xy, np.ones(len(obs_xy))] @ Kinv.T
    d = np.einsum("nij,nj->ni", Rwc[fi], rays)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    c = centres[fi]
    A_o = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # (O,3,3) projector orthogonal to the ray
    A = np.zeros((P, 3, 3))
    b = np.zeros((P, 3))
    np.add.at(A, obs_point, A_o)
    np.add.at(b, obs_point, np.einsum("nij,nj->ni", A_o, c))
    count = np.bincount(obs_point, minlength=P)
    # largest ray angle ~ angle between the rays most different from the mean ray
    dsum = np.zeros((P, 3))
    np.add.at(dsum, obs_point, d)
    dmean = dsum / np.maximum(np.linalg.norm(dsum, axis=1, keepdims=True), 1e-12)
    cosang = np.einsum("ni,ni->n", d, dmean[obs_point])
    min_cos = np.ones(P)
    np.minimum.at(min_cos, obs_point, cosang)
    angle = 2 * np.degrees(np.arccos(np.clip(min_cos, -1, 1)))
    ok = (count >= 2) & (angle >= min_angle_deg)
    ok &= np.abs(np.linalg.det(A)) > 1e-12
    if ok.any():
        xyz[ok] = np.linalg.solve(A[ok], b[ok][:, :, None])[:, :, 0]
    err = reprojection_errors(K, poses_w2c, np.nan_to_num(xyz, nan=0.0), obs_point, obs_frame, obs_xy)
    worst = np.zeros(P)
    np.maximum.at(worst, obs_point, err)
    ok &= worst <= max_reproj_px
    xyz[~ok] = np.nan
    valid[:] = ok
    return xyz, valid


# ------------------------------------------------------------------------------------------------
# one bundle adjustment
# ------------------------------------------------------------------------------------------------
@dataclass
class BAOptions:
    """Options of :func:`bundle_adjust`.

    loss: ``"cauchy"``, ``"huber"``, ``"soft_l1"`` or ``"trivial"`` (squared error), with
    ``loss_scale_px``. ``refine_intrinsics`` refines fx, fy, cx, cy (PINHOLE) instead of holding
    them. ``max_iterations`` / ``function_tolerance`` bound the Ceres solve; ``num_threads``
    (``-1`` = all cores).
    """

    loss: str = "cauchy"
    loss_scale_px: float = 1.0
    max_iterations: int = 6
    function_tolerance: float = 1e-6
    gradient_tolerance: float = 1e-8
    parameter_tolerance: float = 1e-8
    refine_intrinsics: bool = False
    num_threads: int = 1


@dataclass
class BAResult:
    """Output of :func:`bundle_adjust`.

    poses_w2c: frame -> refined ``(4,4)`` world-to-camera; points: ``(P,3)`` refined;
    K: ``(3,3)`` (refined when asked); errors: ``(O,)`` final reprojection errors (px);
    initial_cost / final_cost: Ceres costs; iterations; seconds; usable: Ceres' verdict.
    """

    poses_w2c: Dict[int, np.ndarray]
    points: np.ndarray
    K: np.ndarray
    errors: np.ndarray
    initial_cost: float
    final_cost: float
    iterations: int
    seconds: float
    usable: bool


def bundle_adjust(K: np.ndarray, image_size, poses_w2c: Dict[int, np.ndarray], points: np.ndarray,
                  obs_point: np.ndarray, obs_frame: np.ndarray, obs_xy: np.ndarray,
                  constant_frames: Sequence[int] = (), options: Optional[BAOptions] = None) -> BAResult:
    """Refine poses and points by minimising the (robust) reprojection error with pycolmap.

    Args:
        K: ``(3,3)`` pinhole intrinsics (pixel centres at integers; shifted by +0.5 for COLMAP).
        image_size: ``(H, W)``.
        poses_w2c: frame -> ``(4,4)`` world-to-camera initial pose, for every observed frame.
        points: ``(P,3)`` initial world points.
        obs_point: ``(O,)`` index into ``points``; obs_frame: ``(O,)``; obs_xy: ``(O,2)`` pixels.
            Points with fewer than two observations are left out (returned unchanged).
        constant_frames: frames whose pose is held fixed (fix at least two for a monocular
            problem: they set the gauge and the scale).
        options: :class:`BAOptions`.
    Returns:
        :class:`BAResult` (inputs are not modified).
    """
    import pycolmap

    opt = options or BAOptions()
    t0 = time.perf_counter()
    obs_point = np.asarray(obs_point, dtype=np.int64)
    obs_frame = np.asarray(obs_frame, dtype=np.int64)
    obs_xy = np.asarray(obs_xy, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    H, W = int(image_size[0]), int(image_size[1])
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera(model="PINHOLE", width=W, height=H, params=_camera_params(K), camera_id=1)
    rec.add_camera_with_trivial_rig(cam)
    frames = sorted(int(f) for f in poses_w2c)
    image_id = {f: i + 1 for i, f in enumerate(frames)}
    # point2D index of every observation inside its image
    order = np.lexsort((obs_point, obs_frame))
    p2d_idx = np.empty(len(obs_point), np.int64)
    for f in frames:
        rows = order[obs_frame[order] == f]
        p2d_idx[rows] = np.arange(len(rows))
        img = pycolmap.Image(name=f"{f:06d}", keypoints=obs_xy[rows] + COLMAP_PIXEL_OFFSET, camera_id=1,
                             image_id=image_id[f])
        rec.add_image_with_trivial_frame(img, rigid3d_from_matrix(poses_w2c[f]))
    by_point = np.argsort(obs_point, kind="stable")
    starts = np.searchsorted(obs_point[by_point], np.arange(len(points) + 1))
    pid = np.zeros(len(points), np.int64)
    TE = pycolmap.TrackElement
    for j in range(len(points)):
        rows = by_point[starts[j]:starts[j + 1]]
        if len(rows) < 2:  # a single observation constrains nothing (and pycolmap refuses it)
            continue
        track = pycolmap.Track([TE(image_id[int(obs_frame[r])], int(p2d_idx[r])) for r in rows])
        pid[j] = rec.add_point3D(points[j], track)
    ba_opts = pycolmap.BundleAdjustmentOptions()
    ba_opts.refine_focal_length = bool(opt.refine_intrinsics)
    ba_opts.refine_principal_point = bool(opt.refine_intrinsics)
    ba_opts.refine_extra_params = False
    ba_opts.print_summary = False
    loss = {"cauchy": "CAUCHY", "huber": "HUBER", "soft_l1": "SOFT_L1", "trivial": "TRIVIAL"}[opt.loss]
    ba_opts.ceres.loss_function_type = getattr(pycolmap.LossFunctionType, loss)
    ba_opts.ceres.loss_function_scale = float(opt.loss_scale_px)
    so = ba_opts.ceres.solver_options
    so.max_num_iterations = int(opt.max_iterations)
    so.function_tolerance = float(opt.function_tolerance)
    so.gradient_tolerance = float(opt.gradient_tolerance)
    so.parameter_tolerance = float(opt.parameter_tolerance)
    so.num_threads = int(opt.num_threads)
    config = pycolmap.BundleAdjustmentConfig()
    for f in frames:
        config.add_image(image_id[f])
    for f in constant_frames:
        if int(f) in image_id:
            config.set_constant_rig_from_world_pose(image_id[int(f)])  # trivial rig: rig = camera
    if not opt.refine_intrinsics:
        config.set_constant_cam_intrinsics(1)
    adjuster = pycolmap.create_default_bundle_adjuster(ba_opts, config, rec)
    summary = adjuster.solve()
    cs = summary.ceres_summary
    out_poses = {f: matrix_from_rigid3d(rec.image(image_id[f]).cam_from_world()) for f in frames}
    out_points = points.copy()
    for j in range(len(points)):
        if pid[j] > 0:
            out_points[j] = rec.point3D(int(pid[j])).xyz
    K_out = _K_from_params(rec.camera(1).params) if opt.refine_intrinsics else np.asarray(K, dtype=np.float64).copy()
    errors = reprojection_errors(K_out, out_poses, out_points, obs_point, obs_frame, obs_xy)
    return BAResult(poses_w2c=out_poses, points=out_points, K=K_out, errors=errors,
                    initial_cost=float(cs.initial_cost), final_cost=float(cs.final_cost),
                    iterations=int(cs.num_successful_steps + cs.num_unsuccessful_steps),
                    seconds=time.perf_counter() - t0, usable=bool(summary.is_solution_usable()))


def corner_seeds(image: np.ndarray, max_corners: int = 3000, min_distance: float = 8.0) -> np.ndarray:
    """Shi-Tomasi corners of ``image (H,W,3|H,W)`` uint8, strongest first: ``(N,2)`` pixels."""
    import cv2

    from trianflow.flow_backends import to_gray

    c = cv2.goodFeaturesToTrack(to_gray(image), int(max_corners), 0.01, float(min_distance))
    return np.zeros((0, 2)) if c is None else c.reshape(-1, 2).astype(np.float64)


# ------------------------------------------------------------------------------------------------
# the sliding-window mapper used by the VO
# ------------------------------------------------------------------------------------------------
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
    track_lk_levels: int = 1  # its pyramid levels above full resolution
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
            good = ~self.bad[kf.frame]
            X = self.xyz[kf.obs_ids[good]]
            ok = np.isfinite(X).all(axis=1)
            w2c = np.linalg.inv(self.kf_poses[kf.frame])
            Xc = X[ok] @ w2c[:3, :3].T + w2c[:3, 3]
            out.append((kf.frame, fit_ground_plane(Xc, kf.obs_xy[good][ok], self.K, self.size, options)))
        return out

    def is_keyframe(self, index: int) -> bool:
        """Whether frame ``index`` was made a keyframe."""
        return index in self.kf_poses

    def scale_reference(self):
        """Adjusted points seen by the newest keyframe: ``(xy (M,2) pixels, X (M,3) camera coords)``
        or ``None`` if there are fewer than ``min_points``."""
        if not self.keyframes:
            return None
        kf = self.keyframes[-1]
        good = ~self.bad[kf.frame]
        ids, xy = kf.obs_ids[good], kf.obs_xy[good]
        X = self.xyz[ids]
        ok = np.isfinite(X).all(axis=1)
        if ok.sum() < self.cfg.min_points:
            return None
        w2c = np.linalg.inv(self.kf_poses[kf.frame])
        Xc = X[ok] @ w2c[:3, :3].T + w2c[:3, 3]
        front = Xc[:, 2] > 1e-6
        return xy[ok][front], Xc[front]

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
