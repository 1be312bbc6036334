"""The VO loop: frames -> flow -> correspondences -> pose -> triangulation -> scale -> trajectory.

Every consecutive pair goes through the same path as TrianFlow's pose estimation:

1. dense forward and backward flow (OpenCV DIS, or a FlowNet checkpoint);
2. correspondence selection: score = visible / (0.1 + fb distance), top 20 %, 6000 at random;
3. essential matrix by robust RANSAC (``opencv`` / ``pycolmap`` / ``torch`` backend) and the
   cheirality-checked [R|t], refined on the inliers' Sampson error;
4. midpoint triangulation of the inliers (unit baseline);
5. scale: stereo depth of the first frame of the pair (metric), a DepthNet prediction (robust
   regression, TrianFlow style), or - monocular - the triangulated points shared with the previous
   pair: the previous pair's points (in the previous chain scale) are tracked into the new pair by
   the flow and re-triangulated, and the median-consensus ratio of their depths chains one scale
   through the whole trajectory.

Degenerate pairs fall back, and the per-frame ``status`` says which path was taken:

- ``ok``: essential matrix + triangulation, scale chained (or metric);
- ``ok_const_scale``: pose from E but too few shared points: translation length from the previous pair;
- ``static``: median flow below ``static_flow_px``: identity motion;
- ``rotation``: parallax after de-rotation below ``min_parallax_px`` (or ``min_parallax_rel`` of the
  median flow, whichever is larger): rotation-only (t = 0);
- ``pnp``: E failed (too few inliers): PnP-RANSAC on the previous triangulated points;
- ``const_vel``: everything failed: constant-velocity guess (previous relative motion). A
  frame without texture (black, blown out, lens cap: grey-level standard deviation below
  ``min_image_std``) gets this status without being matched; the next textured frame is
  matched against the last good one, so such gaps are bridged instead of breaking the chain.

Slow motion: a ``static`` or ``rotation`` frame does not replace the reference frame. The next
frame is matched against the same reference (``ref`` in ``frames.csv``), so parallax accumulates
until the translation can be solved, instead of being lost pair by pair (a handheld camera at
30 Hz, a car creeping forward). The reference is held for at most ``max_ref_hold`` frames and
while the next frame's median flow to it (extrapolated) stays below ``hold_max_flow`` of the image
width: a camera turning in place moves on before the displacement becomes too large for the flow.

``refine="ba"`` (the default) adds keyframes and a sliding-window bundle adjustment with pycolmap
(:class:`trianflow.mapping.LocalMapper`): at every keyframe the VO continues from the adjusted
pose and chains its scale from the adjusted points; :attr:`VOResult.mapping` holds the map
(points with their keyframe observations) and the adjustment summary. With ``refine="none"``
nothing of the mapping runs and the loop is the plain pair-by-pair VO (the fast mode).

Ground-plane scale (:mod:`trianflow.geometry.ground`): after the loop, monocular runs hold the
camera's height above a ground plane seen below it constant - relative by default with the
bundle adjustment (removes the remaining scale drift), metric with ``camera_height`` (also
pair by pair). Frames without a plane keep the chained scale (``FrameInfo.scale_source``).

Long runs: an unreadable frame is bridged (status ``unreadable``) unless
``skip_unreadable=False``; ``run_vo(should_stop=...)`` ends the loop early and still returns a
complete result for the frames done (the CLI wires SIGINT / SIGTERM to it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional

import cv2
import numpy as np
import torch

from trianflow.errors import InputError
from trianflow.geometry.flow import sample_at
from trianflow.geometry.pose import make_pose
from trianflow.geometry.ransac import estimate_relative_pose
from trianflow.geometry.sampling import correspondence_scores, sample_correspondences
from trianflow.geometry.scale import align_scale
from trianflow.geometry.triangulation import triangulate_midpoint

log = logging.getLogger(__name__)

# median parallax (px) that flow noise alone produces between frames that differ by a rotation
# (measured 0.07-0.17 px with DIS on KITTI turned in place; real creep of a slow camera: 0.4-1 px)
_PARALLAX_NOISE_PX = 0.25

STATUSES = ("first", "ok", "ok_const_scale", "static", "rotation", "pnp", "const_vel", "unreadable")


@dataclass
class VOConfig:
    """Settings of the VO loop (defaults are the documented ones)."""

    flow: str = "dis"  # "dis" or "network"
    dis_preset: str = "auto"  # auto: "balanced" ("fast" with refine="ba") for images >= 960 px wide, else "medium"
    num_samples: int = 6000
    top_ratio: float = 0.2
    score_stride: int = 0  # score / select on every n-th pixel, flows read at full resolution; 0 = auto: 4 for
    # refine="none" on frames >= 960 px wide (the fast mode), else 2
    ransac_backend: str = "opencv"
    ransac_threshold: float = 1.0  # px, Sampson
    ransac_confidence: float = 0.999
    ransac_max_iters: int = 1000
    refine_iters: int = 10
    lo_rounds: int = 2
    min_inliers: int = 50
    static_flow_px: float = 0.5
    min_parallax_px: float = 1.0
    min_parallax_rel: float = 0.03  # ... and at least this fraction of the median flow
    min_tri_angle_deg: float = 0.1
    max_reproj_px: float = 2.0
    scale_method: str = "ransac"
    min_shared: int = 20
    pnp_min_inliers: int = 15
    stereo: bool = False
    seed: int = 0
    device: str = "cpu"
    torch_threads: int = 1  # small-tensor geometry is fastest single-threaded; 0 keeps torch's default
    min_image_std: float = 2.0  # frames with less grey-level spread are skipped (const_vel, bridged)
    refine: str = "ba"  # "ba": keyframes + sliding-window bundle adjustment (trianflow.mapping); "none": pair by pair
    ba_window: int = 8  # keyframes adjusted per window (refine="ba"); 20 older ones are held fixed
    ba_refine_intrinsics: bool = False  # refine fx, fy, cx, cy in the adjustment (refine="ba")
    max_ref_hold: int = 10  # static/rotation frames matched against a held reference (0: consecutive pairs)
    hold_max_flow: float = 0.08  # ... while the next frame's median flow to it stays below this fraction of the width
    camera_height: Optional[float] = None  # metres above the ground: metric monocular scale (see geometry.ground)
    ground_scale: str = "auto"  # "auto": refine="ba" monocular runs hold the height above a visible ground constant
    ground_window: int = 41  # frames in the running median of the ground heights
    skip_unreadable: bool = True  # an unreadable frame is bridged (status "unreadable"); False: InputError


@dataclass
class FrameInfo:
    """Per-frame record written to ``frames.csv``."""

    index: int
    timestamp: float
    status: str
    ref: int = -1  # the frame this one was matched against (the previous one, or a held reference)
    matches: int = 0
    inliers: int = 0
    triangulated: int = 0
    shared: int = 0
    scale: float = float("nan")
    rot_deg: float = 0.0
    trans: float = 0.0
    seconds: float = 0.0
    reason: str = ""
    ground_height: float = float("nan")  # camera height above the ground plane fitted here (map units, before scaling)
    scale_source: str = ""  # "ground" (a plane at this frame's keyframe set its scale) or "chained"


@dataclass
class VOResult:
    """Output of :func:`run_vo`: camera-to-world poses (first = identity) and per-frame info."""

    poses: np.ndarray  # (N,4,4) camera-to-world
    timestamps: np.ndarray
    frames: List[FrameInfo]
    K: np.ndarray
    config: VOConfig
    timings: dict = field(default_factory=dict)
    points: Optional[dict] = None  # frame (M,), xyz (M,3) world, xy (M,2) pixel in that frame, rgb (M,3)
    mapping: Optional[dict] = None  # refine="ba": {"summary": dict, "map": LocalMapper.map_points()}
    ground: Optional[dict] = None  # ground-plane scale: mode, camera_height, keyframes evaluated, planes found
    interrupted: Optional[str] = None  # why the run stopped early (e.g. "SIGTERM"); frames holds those done
    warnings: List[str] = field(default_factory=list)  # user-facing warnings (unreadable frames, no ground, ...)

    def status_counts(self) -> dict:
        out: dict = {}
        for f in self.frames:
            out[f.status] = out.get(f.status, 0) + 1
        return out


@dataclass
class _Track:
    """Points triangulated in the last pair, expressed in the current frame (chain scale)."""

    xy: torch.Tensor  # (M,2) pixels in the current frame
    X: torch.Tensor  # (M,3) current-camera coordinates


class VisualOdometry:
    """Stateful monocular/stereo VO over consecutive frames.

    Args:
        K: ``(3,3)`` intrinsics of the (left) camera.
        image_size: ``(H, W)``.
        config: :class:`VOConfig`.
        flow_fn: callable ``(img1, img2) -> (fwd, bwd)`` on ``(H,W,3)`` uint8 frames giving
            ``(H,W,2)`` float32 flows; defaults to DIS with ``config.dis_preset``.
        baseline: stereo baseline in metres (enables metric scale with ``config.stereo``).
        depth_fn: optional callable ``img -> (H,W)`` depth (e.g. a DepthNet); when given (and not
            stereo) each pair's scale comes from aligning triangulated to predicted depth.
    """

    def __init__(self, K, image_size, config: Optional[VOConfig] = None, flow_fn: Optional[Callable] = None,
                 baseline: Optional[float] = None, depth_fn: Optional[Callable] = None, keep_points: bool = False):
        from trianflow.flow_backends import DISFlow

        self.cfg = config or VOConfig()
        self.device = torch.device(self.cfg.device)
        self.K = np.asarray(K, dtype=np.float64)
        self.Kt = torch.as_tensor(self.K, dtype=torch.float32, device=self.device).unsqueeze(0)
        self.size = tuple(image_size)
        if min(self.size[:2]) < 16:  # OpenCV's DIS crashes (SIGSEGV) on frames less than 16 px high
            raise InputError(f"frames of {self.size[1]}x{self.size[0]} px are too small for visual odometry; "
                             "use frames of at least 16x16 px")
        preset = resolve_dis_preset(self.cfg.dis_preset, self.size, self.cfg.refine)
        self.score_stride = max(1, self.cfg.score_stride) if self.cfg.score_stride > 0 else \
            (4 if self.cfg.refine == "none" and self.size[1] >= 960 else 2)
        self.flow_fn = flow_fn or DISFlow(preset)
        self.stereo_flow = DISFlow(preset) if (self.cfg.stereo and baseline) else None
        self.baseline = baseline
        self.depth_fn = depth_fn
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        self.prev_img = None
        self.prev_right = None
        self.prev_index = -1
        self._ref_blank = False
        self._bridge_pose: Optional[np.ndarray] = None
        self.track: Optional[_Track] = None
        self.last_rel = np.eye(4)  # relative motion per frame (constant-velocity guesses)
        self.last_speed: Optional[float] = None  # translation length per frame (chain scale)
        self.held = 0  # frames matched against the current reference without replacing it
        self._held_frames: list = []  # (index, rotation ref->frame, parallax px) of those frames
        self._parallax = 0.0  # median parallax (after de-rotation) of the last matched frame, px
        self._corrections: dict = {}  # index -> revised camera-to-world pose (see pop_corrections)
        self._hold = False
        self._span = 1
        self.pose_c2w = np.eye(4)
        self.stage_seconds = {"flow": 0.0, "select": 0.0, "geometry": 0.0}
        self.keep_points = keep_points
        self.points: list = []  # per pair: (frame index, world xyz, pixel xy in that frame, rgb, pixel in next)
        self.new_points = None
        self.mapper = None
        if self.cfg.refine not in ("none", "ba"):
            raise InputError(f"VOConfig.refine={self.cfg.refine!r}: use 'none' or 'ba'")
        if self.cfg.ground_scale not in ("auto", "off"):
            raise InputError(f"VOConfig.ground_scale={self.cfg.ground_scale!r}: use 'auto' or 'off'")
        h = self.cfg.camera_height
        if h is not None and not (np.isfinite(h) and h > 0):
            raise InputError(f"camera height {h!r}: give the height of the camera above the ground in metres (> 0)")
        if h is not None and self.cfg.stereo:
            raise InputError("--camera-height and --stereo both set the metric scale: give only one")
        # ground planes fitted pair by pair: frame -> (GroundPlane, the pair's translation length, ref frame),
        # both lengths in the chain units of that moment (their ratio is free of the scale drift)
        self.ground_fits: dict = {}
        self._ground = (h is not None or (self.cfg.ground_scale == "auto" and self.cfg.refine == "ba")) \
            and not self.cfg.stereo and depth_fn is None
        # the pairs' planes serve the metric scale only (see _ground_fits)
        self._ground_per_pair = self._ground and h is not None
        if self.cfg.refine == "ba":
            from trianflow.mapping.bundle_adjustment import BAOptions
            from trianflow.mapping.local_mapper import LocalMapper, MapperConfig

            mcfg = MapperConfig(window=self.cfg.ba_window,
                                ba=BAOptions(refine_intrinsics=self.cfg.ba_refine_intrinsics))
            self.mapper = LocalMapper(self.K, self.size, mcfg)
        self._candidates = None

    # -- public -----------------------------------------------------------------------------
    def step(self, index: int, timestamp: float, image: np.ndarray, image_right: Optional[np.ndarray] = None):
        """Process one frame; returns ``(pose_c2w (4,4), FrameInfo)``."""
        t0 = time.perf_counter()
        if image is None and self.prev_img is None:  # unreadable before any usable frame
            return self.pose_c2w.copy(), FrameInfo(index, timestamp, "unreadable", seconds=time.perf_counter() - t0,
                                                   reason="frame could not be read: skipped")
        blank = image is None or not self._informative(image)
        if self.prev_img is None:
            self.prev_img, self.prev_right, self.prev_index, self._ref_blank = image, image_right, index, blank
            if self.mapper is not None:
                self.mapper.process(index, self.pose_c2w, "first", image)
            return self.pose_c2w.copy(), FrameInfo(index, timestamp, "first", seconds=time.perf_counter() - t0,
                                                   reason="no texture" if blank else "")
        if blank or self._ref_blank:
            pose, info = self._bridge(index, timestamp, image, image_right, blank, t0)
            if image is None:
                info.status = "unreadable"
                info.reason = "frame could not be read: bridged with constant velocity"
            return pose, info
        self._bridge_pose = None
        info = FrameInfo(index, timestamp, "ok", ref=self.prev_index)
        fwd, bwd = self.flow_fn(self.prev_img, image)
        t1 = time.perf_counter()
        self.stage_seconds["flow"] += t1 - t0
        self.new_points = None
        self._candidates = None
        self._hold = False
        self._span = max(index - self.prev_index, 1)
        rel = self._relative_pose(fwd, bwd, info)
        self.stage_seconds["geometry"] += time.perf_counter() - t1
        info.rot_deg = float(np.degrees(np.arccos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1, 1))))
        info.trans = float(np.linalg.norm(rel[:3, 3]))
        if self._hold:  # keep the reference (image, pose, track): parallax accumulates
            self.held += 1
            self._held_frames.append((index, rel[:3, :3].copy(), self._parallax))
            info.reason = info.reason or f"low parallax: the next frame is matched against frame {self.prev_index}"
            info.seconds = time.perf_counter() - t0
            pose = self.pose_c2w @ np.linalg.inv(rel)
            if self.mapper is not None and self.mapper.keyframes:  # not tracked: re-attached to its keyframe
                self.mapper.skip(index, pose)
            return pose, info
        self.held = 0
        if self._held_frames:
            self._revise_held(rel, index)
        if self._ground_per_pair and self.new_points is not None:
            from trianflow.geometry.ground import fit_ground_plane

            g = fit_ground_plane(self.new_points[0], self.new_points[1], self.K, self.size)
            self.ground_fits[index] = (g, float(np.linalg.norm(rel[:3, 3])), self.prev_index)
        if self.keep_points and self.new_points is not None:
            X1, xy, xy2 = self.new_points  # points in the previous camera frame, their pixels there and here
            Xw = X1 @ self.pose_c2w[:3, :3].T + self.pose_c2w[:3, 3]
            ij = np.clip(np.round(xy).astype(int), 0, [self.size[1] - 1, self.size[0] - 1])
            col = self.prev_img[ij[:, 1], ij[:, 0]] if self.prev_img.ndim == 3 else \
                np.repeat(self.prev_img[ij[:, 1], ij[:, 0], None], 3, 1)
            self.points.append((np.full(len(Xw), self.prev_index, np.int32), Xw.astype(np.float32),
                                xy.astype(np.float32), col.astype(np.uint8), xy2.astype(np.float32)))
        self.pose_c2w = self.pose_c2w @ np.linalg.inv(rel)
        self.last_rel = _pose_power(rel, 1.0 / self._span)  # a gap or a held reference spans several frames
        if self.mapper is not None:
            self._refine(index, image, fwd, bwd, info)
        self.prev_img, self.prev_right, self.prev_index = image, image_right, index
        info.seconds = time.perf_counter() - t0
        return self.pose_c2w.copy(), info

    def pop_corrections(self) -> dict:
        """Poses revised since the last call, ``{frame index: (4,4) camera-to-world}``.

        Frames matched against a held reference get a rotation-only pose when they are processed;
        once a later frame solves the translation from that reference, their camera centres are
        placed along it (see :meth:`_revise_held`) and reported here. :func:`run_vo` applies them.
        """
        out, self._corrections = self._corrections, {}
        return out

    # -- internals --------------------------------------------------------------------------
    def _revise_held(self, rel: np.ndarray, index: int) -> None:
        """Spread the translation that ``rel`` (reference -> frame ``index``) solved over the frames
        that were held on the reference. Each keeps its rotation; its centre moves by the fraction
        of the span it lies at (steady motion) or, when smaller, by the fraction its parallax is of
        this frame's (a duplicated frame or a turn in place does not move; the parallax of sub-pixel
        motion is biased up by flow noise, so it only ever lowers the fraction). Parallax below
        the flow's noise floor (``_PARALLAX_NOISE_PX``) counts as none."""
        centre = -rel[:3, :3].T @ rel[:3, 3]  # of frame `index`, in the reference camera
        ref = self.prev_index
        for j, R, parallax in self._held_frames:
            frac = min((j - ref) / max(index - ref, 1), parallax / max(self._parallax, 1e-9))
            if parallax < _PARALLAX_NOISE_PX:
                frac = 0.0
            T = np.eye(4)
            T[:3, :3] = R.T
            T[:3, 3] = centre * frac
            self._corrections[j] = self.pose_c2w @ T
            if self.mapper is not None and self.mapper.keyframes:  # re-attached to the adjusted keyframes
                self.mapper.skip(j, self._corrections[j])
        self._held_frames = []

    def _informative(self, image: np.ndarray) -> bool:
        """Whether ``image`` has enough texture to be matched (grey-level std on a 4x subsample)."""
        g = image[::4, ::4]
        if g.ndim == 3:
            g = g[..., 0] if g.shape[2] >= 1 else g
        return float(np.std(g)) >= self.cfg.min_image_std

    def _bridge(self, index, timestamp, image, image_right, blank: bool, t0: float):
        """A frame that cannot be matched: a blank frame gets a constant-velocity pose and the
        reference (last good frame, its pose and tracked points) is kept for the next one; a
        good frame after a blank reference becomes the new reference (identity motion)."""
        info = FrameInfo(index, timestamp, "const_vel")
        if blank:
            base = self._bridge_pose if self._bridge_pose is not None else self.pose_c2w
            self._bridge_pose = base @ np.linalg.inv(self.last_rel)
            pose = self._bridge_pose
            info.reason = "no texture (blank or badly exposed frame): bridged with constant velocity"
            if self.mapper is not None:
                self.mapper.skip(index, pose)
        else:  # the reference was blank: start again from here
            pose = self._bridge_pose if self._bridge_pose is not None else self.pose_c2w
            self.pose_c2w = pose.copy()
            self._bridge_pose = None
            self.track = None
            self._held_frames, self.held = [], 0
            self.prev_img, self.prev_right, self.prev_index, self._ref_blank = image, image_right, index, False
            info.reason = "previous frames had no texture: new reference"
            if self.mapper is not None:
                self.mapper.skip(index, pose, new_reference=image)
        info.trans = float(np.linalg.norm(self.last_rel[:3, 3])) if blank else 0.0
        info.seconds = time.perf_counter() - t0
        return pose.copy(), info

    def _flow_tensor(self, f: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1))).unsqueeze(0).to(self.device)

    def _relative_pose(self, fwd: np.ndarray, bwd: np.ndarray, info: FrameInfo) -> np.ndarray:
        cfg = self.cfg
        self.last_inliers = None  # (x1 (M,2) in the reference frame, x2 (M,2) here) of the E inliers, for viewers
        ff, fb = self._flow_tensor(fwd), self._flow_tensor(bwd)
        ts = time.perf_counter()
        st = self.score_stride
        ffs, fbs = ff[..., ::st, ::st] / st, fb[..., ::st, ::st] / st
        score_s = correspondence_scores(ffs, fbs)
        corr = sample_correspondences(ffs, score=score_s, num_samples=cfg.num_samples, top_ratio=cfg.top_ratio,
                                      generator=self.gen)
        if st > 1:  # back to full-resolution pixels, with the full-resolution flow there
            x1 = corr.x1 * st
            xi = x1.long()
            corr.x1 = x1
            corr.x2 = x1 + ff[0, :, xi[0, :, 1], xi[0, :, 0]].T.unsqueeze(0)
            score = torch.nn.functional.interpolate(score_s, size=ff.shape[-2:], mode="nearest")
        else:
            score = score_s
        self.stage_seconds["select"] += time.perf_counter() - ts
        valid = corr.valid
        info.matches = int(valid.sum())
        # tracked points of the previous pair, moved into this frame by the flow
        tracked = self._advect_track(ff, score)
        mags = (corr.x2 - corr.x1).norm(dim=-1)[valid]
        med_flow = float(mags.median()) if info.matches else 0.0
        self._parallax = med_flow
        if info.matches == 0 or med_flow < cfg.static_flow_px:
            info.status = "static"
            if info.matches and self._can_hold(med_flow):
                self._hold = True
            else:
                self.track = _Track(tracked[1], tracked[0].X) if tracked is not None else None
            return np.eye(4)
        est = estimate_relative_pose(
            corr.x1, corr.x2, self.Kt, valid=valid, backend=cfg.ransac_backend, threshold=cfg.ransac_threshold,
            confidence=cfg.ransac_confidence, max_iters=cfg.ransac_max_iters, min_inliers=cfg.min_inliers,
            seed=cfg.seed, refine_iters=cfg.refine_iters, lo_rounds=cfg.lo_rounds,
        )
        info.inliers = int(est.num_inliers[0])
        x1, x2 = corr.x1[0].double(), corr.x2[0].double()
        # flow error grows with the displacement: large flows need more parallax to count as translation
        min_parallax = max(cfg.min_parallax_px, cfg.min_parallax_rel * med_flow)
        if not bool(est.valid[0]):
            info.reason = est.reason[0]
            # pure rotation makes E degenerate (every t fits): check the rotation-only model first
            if info.matches >= cfg.min_inliers:
                Rrot = self._rotation_only(x1[valid[0]], x2[valid[0]])
                self._parallax = float(self._parallax_px(Rrot, x1[valid[0]], x2[valid[0]]).median())
                if self._parallax < min_parallax:
                    info.reason = ""
                    return self._rotation_result(Rrot, tracked, info, med_flow)
            return self._fallback(tracked, info)
        R = est.R[0].double()
        inl = est.inliers[0]
        self.last_inliers = (corr.x1[0][inl].cpu().numpy(), corr.x2[0][inl].cpu().numpy())
        # parallax after de-rotation: pure rotation leaves (almost) none
        self._parallax = float(self._parallax_px(R, x1, x2)[inl].median())
        if self._parallax < min_parallax:
            return self._rotation_result(self._rotation_only(x1[valid[0]], x2[valid[0]]), tracked, info, med_flow)
        t_unit = est.t[0].double()
        T_unit = make_pose(R, t_unit).unsqueeze(0)
        tri = triangulate_midpoint(corr.x1, corr.x2, self.Kt, self.Kt, T_unit, valid=inl.unsqueeze(0),
                                   min_angle_deg=cfg.min_tri_angle_deg, max_reproj=cfg.max_reproj_px,
                                   image_size=self.size)
        info.triangulated = int(tri.valid.sum())
        scale, scale_ok, shared = self._scale(T_unit, tri, corr, tracked)
        info.shared = shared
        if not scale_ok:
            info.status = "ok_const_scale"
            scale = self.last_speed * self._span if self.last_speed is not None else 1.0
        info.scale = float(scale)
        self.last_speed = float(scale) / self._span
        rel = np.eye(4)
        rel[:3, :3] = R.cpu().numpy()
        rel[:3, 3] = (t_unit * scale).cpu().numpy()
        # new track: this pair's triangulated points in the new frame, at their observed pixels
        m = tri.valid[0]
        X1 = tri.points[0][m].double() * scale
        X2 = X1 @ R.T + t_unit * scale
        self.track = _Track(corr.x2[0][m].double(), X2)
        self.new_points = (X1.cpu().numpy(), corr.x1[0][m].cpu().numpy(), corr.x2[0][m].cpu().numpy())
        if self.mapper is not None:  # where new flow tracks may start: this pair's triangulated inliers
            self._candidates = corr.x1[0][m].cpu().numpy()
        return rel

    def _refine(self, index: int, image: np.ndarray, fwd: np.ndarray, bwd: np.ndarray, info: FrameInfo) -> None:
        """``refine="ba"``: hand the frame to the mapper; at a keyframe continue from the adjusted
        pose and chain the monocular scale from the adjusted points."""
        ratio = info.inliers / max(info.matches, 1)
        pose = self.mapper.process(index, self.pose_c2w, info.status, image, fwd, bwd, self._candidates, ratio)
        if not self.mapper.is_keyframe(index):
            return
        self.pose_c2w = pose
        if self.depth_fn is not None or (self.cfg.stereo and self.stereo_flow is not None):
            return  # metric/predicted scale per pair: nothing to chain
        ref = self.mapper.scale_reference()
        if ref is not None:
            xy, X = ref
            self.track = _Track(torch.from_numpy(xy).to(self.device, torch.float64),
                                torch.from_numpy(X).to(self.device, torch.float64))

    def _parallax_px(self, R: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Per-match distance (px) between ``x2`` and ``x1`` moved by the rotation ``R`` alone
        (the infinite homography K R K^-1): the parallax that translation must explain."""
        Kd = self.Kt[0].double()
        p = torch.cat([x1, torch.ones_like(x1[:, :1])], 1) @ (Kd @ R @ torch.linalg.inv(Kd)).T
        return (p[:, :2] / p[:, 2:] - x2).norm(dim=-1)

    def _rotation_result(self, Rrot: torch.Tensor, tracked, info: FrameInfo, med_flow: float) -> np.ndarray:
        """Status ``rotation``: rotation-only motion; the reference is held when allowed, else the
        tracked points are rotated into the new frame."""
        info.status = "rotation"
        rel = np.eye(4)
        rel[:3, :3] = Rrot.cpu().numpy()
        if self._can_hold(med_flow):
            self._hold = True
            return rel
        self.track = None
        if tracked is not None:
            self.track = _Track(tracked[1], tracked[0].X @ Rrot.T.to(tracked[0].X.dtype))
        return rel

    def _can_hold(self, median_flow_px: float) -> bool:
        """Whether a static/rotation frame may leave the reference in place. With ``refine="ba"``
        the mapper does not see held frames: its tracks advance from the reference straight to
        the frame that solves the translation (the flow of that pair)."""
        cfg = self.cfg
        # the next frame will be one more frame away from the reference: extrapolate its flow
        expected = median_flow_px * (self.held + 2) / (self.held + 1)
        return self.held < cfg.max_ref_hold and expected < cfg.hold_max_flow * self.size[1]

    def _advect_track(self, ff: torch.Tensor, score: torch.Tensor):
        """Move the previous track's pixels into the new frame along the forward flow.

        Returns ``None`` or ``(track_in_previous_frame, xy_in_new_frame (M,2))`` for the points
        whose flow is reliable (visible and forward-backward consistent to ~1 px).
        """
        if self.track is None or len(self.track.xy) == 0:
            return None
        xy = self.track.xy.to(ff.dtype).view(1, 1, -1, 2)
        fl = sample_at(ff, xy)[0, :, 0].T  # (M,2)
        sc = sample_at(score, xy)[0, 0, 0]
        keep = sc > 1.0  # fb distance below ~0.9 px and visible
        if not bool(keep.any()):
            return None
        return _Track(self.track.xy[keep], self.track.X[keep]), self.track.xy[keep] + fl[keep].double()

    def _scale(self, T_unit, tri, corr, tracked):
        """Scale of the unit translation; returns (scale, ok, n_points_used)."""
        cfg = self.cfg
        if self.cfg.stereo and self.stereo_flow is not None and self.prev_right is not None:
            s, ok, n = self._stereo_scale(tri, corr)
            if ok:
                return s, True, n
        if self.depth_fn is not None:
            depth = torch.as_tensor(self.depth_fn(self.prev_img), dtype=torch.float32, device=self.device)
            m = tri.valid
            xy = corr.x1.view(1, 1, -1, 2)
            d = sample_at(depth.view(1, 1, *depth.shape), xy)[0, 0, 0].unsqueeze(0)
            s, ok, _ = align_scale(tri.depth1.double(), d.double(), m, method=cfg.scale_method,
                                   min_points=cfg.min_shared, generator=self.gen)
            return float(s[0]), bool(ok[0]), int(m.sum())
        if tracked is None:
            return 1.0, self.last_speed is None, 0  # first pair defines the unit of the trajectory
        prev, xy2 = tracked
        # re-triangulate the tracked points with the new (unit) pose
        x1 = prev.xy.to(torch.float32).unsqueeze(0)
        x2 = xy2.to(torch.float32).unsqueeze(0)
        tri2 = triangulate_midpoint(x1, x2, self.Kt, self.Kt, T_unit, min_angle_deg=cfg.min_tri_angle_deg,
                                    max_reproj=cfg.max_reproj_px, image_size=self.size)
        z_prev = prev.X[:, 2].unsqueeze(0)
        s, ok, inl = align_scale(tri2.depth1.double(), z_prev, tri2.valid, method=cfg.scale_method,
                                 min_points=cfg.min_shared, generator=self.gen)
        return float(s[0]), bool(ok[0]), int(inl.sum())

    def _stereo_scale(self, tri, corr):
        cfg = self.cfg
        fwd, bwd = self.stereo_flow(self.prev_img, self.prev_right)
        ff, fb = self._flow_tensor(fwd), self._flow_tensor(bwd)
        sc = correspondence_scores(ff, fb)
        xy = corr.x1.view(1, 1, -1, 2)
        f = sample_at(ff, xy)[0, :, 0]  # (2,N)
        q = sample_at(sc, xy)[0, 0, 0]
        disp = -f[0]
        depth = self.K[0, 0] * self.baseline / disp.clamp(min=1e-6)
        ok = tri.valid[0] & (disp > 0.5) & (f[1].abs() < 1.0) & (q > 1.0)
        s, good, inl = align_scale(tri.depth1[0].double().unsqueeze(0), depth.double().unsqueeze(0),
                                   ok.unsqueeze(0), method=cfg.scale_method, min_points=cfg.min_shared,
                                   generator=self.gen)
        return float(s[0]), bool(good[0]), int(inl.sum())

    def _rotation_only(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Rotation with ``b2 ~ R b1`` on unit bearings (Kabsch), with one outlier-rejection pass."""
        Kinv = torch.linalg.inv(self.Kt[0].double())
        b1 = torch.cat([x1, torch.ones_like(x1[:, :1])], 1) @ Kinv.T
        b2 = torch.cat([x2, torch.ones_like(x2[:, :1])], 1) @ Kinv.T
        b1 = b1 / b1.norm(dim=1, keepdim=True)
        b2 = b2 / b2.norm(dim=1, keepdim=True)
        R = _kabsch_origin(b1, b2)
        for _ in range(2):
            err = (b1 @ R.T - b2).norm(dim=1)
            keep = err < max(3.0 / self.K[0, 0], float(err.median()) * 3)
            if keep.sum() >= 3:
                R = _kabsch_origin(b1[keep], b2[keep])
        return R

    def _fallback(self, tracked, info: FrameInfo) -> np.ndarray:
        cfg = self.cfg
        if tracked is not None and len(tracked[0].xy) >= cfg.pnp_min_inliers:
            prev, xy2 = tracked
            obj = prev.X.cpu().numpy().astype(np.float64)
            img = xy2.cpu().numpy().astype(np.float64)
            ok, rvec, tvec, inl = cv2.solvePnPRansac(obj, img, np.ascontiguousarray(self.K), None,
                                                      reprojectionError=2.0, iterationsCount=200,
                                                      flags=cv2.SOLVEPNP_EPNP)
            if ok and inl is not None and len(inl) >= cfg.pnp_min_inliers:
                Rm, _ = cv2.Rodrigues(rvec)
                rel = np.eye(4)
                rel[:3, :3] = Rm
                rel[:3, 3] = tvec.ravel()
                info.status = "pnp"
                info.inliers = int(len(inl))
                X = torch.from_numpy(obj[inl.ravel()] @ Rm.T + tvec.ravel())
                self.track = _Track(torch.from_numpy(img[inl.ravel()]), X)
                return rel
        info.status = "const_vel"
        self.track = None
        return _pose_power(self.last_rel, self._span)


def _pose_power(rel: np.ndarray, k: float) -> np.ndarray:
    """``rel`` to the power ``k`` for small motions: rotation angle and translation times ``k``
    (per-frame velocity from a motion spanning 1/k frames, or k frames of constant velocity)."""
    if k == 1:
        return rel.copy()
    out = np.eye(4)
    rvec, _ = cv2.Rodrigues(np.ascontiguousarray(rel[:3, :3]))
    out[:3, :3] = cv2.Rodrigues(rvec * k)[0]
    out[:3, 3] = rel[:3, 3] * k
    return out


def resolve_dis_preset(preset: str, size, refine: str = "none") -> str:
    """``"auto"`` -> ``"fast"`` for frames at least 960 px wide, ``"medium"`` below (DIS "fast" and
    "balanced" estimate at 1/4 resolution, which is accurate enough on KITTI-sized frames but not on small
    ones; see :mod:`trianflow.flow_backends` for the measurements). With ``refine="ba"`` (the default) the
    bundle adjustment removes the drift the denser "balanced" patches would: on the KITTI snippet "fast" is
    quicker (6.7 vs 5.0 frames/s) and as accurate (ATE 0.021 vs 0.023 m). ``refine="none"`` is the fast
    mode since the bundle adjustment became the default: "fast" with selection on every 4th pixel takes
    KITTI 03 from 13.4 to 22 frames/s (t_err 9.2 -> 11.9 %; pass ``"balanced"`` for the former)."""
    if preset != "auto":
        return preset
    if size[1] >= 960:
        return "fast"
    return "medium"


def _kabsch_origin(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rotation-only Kabsch (no centring): ``R`` with ``b ~ R a`` for ``(N,3)`` unit bearings."""
    U, _, Vh = torch.linalg.svd(b.T @ a)
    d = torch.sign(torch.det(U @ Vh))
    D = torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d]))
    return U @ D @ Vh


def run_vo(seq, config: Optional[VOConfig] = None, flow_fn=None, depth_fn=None, progress: Optional[Callable] = None,
           keep_points: bool = True, should_stop: Optional[Callable[[], Optional[str]]] = None,
           observer: Optional[Callable] = None):
    """Run VO over a :class:`~trianflow.data.FrameSequence`.

    Args:
        seq: the frames (and K, timestamps, optional stereo).
        config: :class:`VOConfig`.
        progress: optional callable ``(FrameInfo) -> None`` called after each frame (the CLI
            drives a tqdm bar with it).
        keep_points: collect the triangulated points of every pair in world coordinates
            (``VOResult.points``: dict of arrays ``frame``, ``xyz``, ``xy``, ``rgb``).
        should_stop: optional callable checked before every frame; when it returns a reason
            (e.g. ``"SIGTERM"``) the loop stops and the result covers the frames done so far,
            finished as a complete run would be (bundle adjustment, ground scale), with
            ``VOResult.interrupted`` set to that reason.
        observer: optional callable ``(index, image (H,W,3) uint8 or None, pose_c2w (4,4), FrameInfo,
            VisualOdometry) -> None`` called after ``progress`` for every frame (a live viewer reads
            ``vo.last_inliers``, ``vo.new_points``, ``vo.mapper`` from it; it must not modify them).
    Returns:
        :class:`VOResult`.

    A frame that cannot be read (corrupt or truncated file) is bridged like a black frame,
    with status ``unreadable`` and a warning naming the file, unless ``config.skip_unreadable``
    is False (then the :class:`~trianflow.errors.InputError` propagates).
    """
    cfg = config or VOConfig()
    vo = VisualOdometry(seq.K, seq.size, cfg, flow_fn=flow_fn, baseline=seq.baseline if cfg.stereo else None,
                        depth_fn=depth_fn, keep_points=keep_points)
    poses, frames = [], []
    warnings: List[str] = []
    interrupted = None
    if len(seq) == 0:
        raise InputError("the sequence has no frames; visual odometry needs at least 2")
    threads = torch.get_num_threads()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    t_start = time.perf_counter()
    t_read = 0.0
    try:
        for i in range(len(seq)):
            if should_stop is not None:
                interrupted = should_stop()
                if interrupted:
                    log.warning("stopped (%s) after %d of %d frames: writing what was done", interrupted, i, len(seq))
                    break
            t0 = time.perf_counter()
            img, right = _read_frame(seq, i, cfg, warnings)
            t_read += time.perf_counter() - t0
            pose, info = vo.step(i, float(seq.timestamps[i]), img, right)
            poses.append(pose)
            for j, revised in vo.pop_corrections().items():
                poses[j] = revised
            frames.append(info)
            if progress is not None:
                progress(info)
            if observer is not None:
                observer(i, img, pose, info, vo)
    finally:
        torch.set_num_threads(threads)
    n = len(poses)
    if n == 0:
        raise InputError(f"stopped ({interrupted}) before the first frame: nothing to write")
    total = time.perf_counter() - t_start
    n_pairs = max(n - 1, 1)
    geom = vo.stage_seconds["geometry"] - vo.stage_seconds["select"]
    timings = {
        "flow_ms": 1000 * vo.stage_seconds["flow"] / n_pairs,
        "select_ms": 1000 * vo.stage_seconds["select"] / n_pairs,
        "geometry_ms": 1000 * geom / n_pairs,
        "total_s": total,
        "read_s": t_read,
        "frames": n,
        "fps": n / total if total > 0 else float("nan"),
        "mean_frame_s": float(np.mean([f.seconds for f in frames[1:]])) if len(frames) > 1 else 0.0,
    }
    points = None
    keys = ("frame", "xyz", "xy", "rgb", "xy2")
    if keep_points and vo.points:
        points = {k: np.concatenate([p[i] for p in vo.points]) for i, k in enumerate(keys)}
    elif keep_points:
        points = {"frame": np.zeros(0, np.int32), "xyz": np.zeros((0, 3), np.float32),
                  "xy": np.zeros((0, 2), np.float32), "rgb": np.zeros((0, 3), np.uint8),
                  "xy2": np.zeros((0, 2), np.float32)}
    poses = _orthonormalize(np.stack(poses))  # exact rotations (the geometry runs partly in fp32)
    K = np.asarray(seq.K)
    mapping = None
    t_fin = time.perf_counter()
    if vo.mapper is not None:
        vo.mapper.finish()
        poses = _orthonormalize(vo.mapper.final_poses(poses))
        mapping = {"summary": vo.mapper.summary(), "map": vo.mapper.map_points()}
        K = vo.mapper.K.copy()
        timings["ba_ms"] = 1000 * vo.mapper.ba_seconds / n_pairs
    ground = None
    fits = _ground_fits(vo, cfg, depth_fn)
    if fits is not None:
        poses, ground = _apply_ground_scale(poses, fits, frames, cfg, points, mapping, warnings)
    total += time.perf_counter() - t_fin
    timings["total_s"] = total
    timings["fps"] = n / total if total > 0 else float("nan")
    return VOResult(poses=poses, timestamps=np.asarray(seq.timestamps[:n], dtype=np.float64), frames=frames,
                    K=K, config=cfg, timings=timings, points=points, mapping=mapping, ground=ground,
                    interrupted=interrupted, warnings=warnings)


def _read_frame(seq, i: int, cfg: VOConfig, warnings: List[str]):
    """Frame ``i`` (and its right image with stereo); ``(None, None)`` for an unreadable frame
    when ``cfg.skip_unreadable`` (a warning naming the file is logged and collected)."""
    try:
        img = seq.read(i)
        right = seq.read_right(i) if (cfg.stereo and seq.has_stereo) else None
        return img, right
    except InputError as exc:
        if not cfg.skip_unreadable:
            raise
        msg = f"frame {i} skipped: {exc} (bridged like a black frame; use --strict to stop instead)"
        log.warning(msg)
        warnings.append(msg)
        return None, None


def _ground_fits(vo: VisualOdometry, cfg: VOConfig, depth_fn) -> Optional[list]:
    """``[(frame, GroundPlane, pair translation length or None, reference frame)]`` the ground
    scale uses for this run, or ``None`` when it does not apply (metric scale from stereo or a
    DepthNet, ``ground_scale="off"`` without a camera height, pair-by-pair VO without a camera
    height).

    With the bundle adjustment the planes come from the adjusted map points each keyframe sees
    (Lucas-Kanade-refined tracks: measured 1.8 % from the true height on KITTI 03, where the
    pair-by-pair DIS points of the near road give 6 %); where the map has too few road points
    (fewer than 3 keyframes with a plane, e.g. small frames), and without the adjustment, the
    planes come from every pair's triangulated points (translation length given: the height is
    then converted to the final trajectory's units) - but only for a metric scale
    (``camera_height``): in the relative mode the pairs' planes are noisier than the drift they
    would remove (KITTI snippet with its untextured road: heights 1.5-2.3 map units from frame to
    frame, ATE 0.15 m with them against 0.022 m with the bundle adjustment's own scale), so the
    run keeps the chained scale there."""
    if not vo._ground:
        return None
    pairs = [(f, g, step, ref) for f, (g, step, ref) in sorted(vo.ground_fits.items())]
    if vo.mapper is not None:
        kfs = [(f, g, None, f) for f, g in vo.mapper.keyframe_ground()]
        if sum(g.found for _, g, _, _ in kfs) >= 3 or not vo._ground_per_pair:
            return kfs
    return pairs


def _apply_ground_scale(poses, fits, frames, cfg: VOConfig, points, mapping, warnings):
    """Scale the trajectory (and the points) so the camera keeps a constant height above the
    ground (metric with ``cfg.camera_height``, else the median height is kept).

    Keyframe planes (bundle adjustment) give heights in the final map's units directly. A plane
    fitted to a pair's triangulated points gives its height divided by the pair's translation
    length (both in the chain units of that moment); times the step length of the final
    trajectory that is the height in the final trajectory's units. The per-frame heights are smoothed
    (:func:`~trianflow.geometry.ground.ground_scale_profile`) and applied to the steps; frames
    without a plane keep the chained scale of their neighbours. Records ``ground_height`` and
    ``scale_source`` per frame. Returns ``(poses, summary dict)``."""
    from trianflow.geometry.ground import ground_scale_profile, rescale_trajectory

    n = len(poses)
    fits = [t for t in fits if t[0] < n]
    kf = np.array([t[0] for t in fits], dtype=np.int64)
    heights = np.full(len(fits), np.nan)
    found = np.zeros(len(fits), bool)
    for j, (f, g, step, ref) in enumerate(fits):
        if not g.found:
            continue
        if step is None:  # fitted in the final map's units already
            heights[j] = g.height
        else:
            final_step = float(np.linalg.norm(poses[f, :3, 3] - poses[ref, :3, 3]))
            if step <= 1e-12 or final_step <= 1e-12:
                continue
            heights[j] = g.height / step * final_step
        found[j] = True
        frames[f].ground_height = float(g.height)
    summary = {"mode": "metric" if cfg.camera_height is not None else "relative",
               "camera_height": cfg.camera_height, "evaluated": int(len(fits)), "planes_found": int(found.sum())}
    src = np.full(n, "chained", dtype=object)
    if len(kf):
        src[kf[found]] = "ground"
    for f, s in zip(frames, src):
        f.scale_source = str(s)
    if not found.any():
        what = "the trajectory keeps the chained scale" + ("" if cfg.camera_height is None else
                                                             " (not metric: --camera-height had no effect)")
        msg = f"no ground plane found in {len(fits)} evaluated frames: {what}"
        if cfg.camera_height is not None:
            log.warning(msg)
            warnings.append(msg)
        else:
            log.info(msg)
        return poses, summary
    # the smoothing window spans about ground_window frames, whichever frames were evaluated
    window = max(3, int(round(cfg.ground_window * len(fits) / max(n, 1))))
    factors_k = ground_scale_profile(heights, found, cfg.camera_height, window=window)
    factors = np.interp(np.arange(n), kf, factors_k)
    new = rescale_trajectory(poses, factors)
    summary["median_height"] = float(np.nanmedian(heights))
    summary["factor_min"], summary["factor_max"] = float(factors.min()), float(factors.max())
    if points is not None and len(points["xyz"]):
        r = np.clip(points["frame"].astype(np.int64), 0, n - 1)
        points["xyz"] = _move_points(points["xyz"], r, poses, new, factors).astype(points["xyz"].dtype)
    if mapping is not None and len(mapping["map"]["xyz"]):
        m = mapping["map"]
        first = np.full(len(m["xyz"]), n - 1, np.int64)
        np.minimum.at(first, m["obs_point"], m["obs_frame"])
        m["xyz"] = _move_points(m["xyz"], np.clip(first, 0, n - 1), poses, new, factors)
    return new, summary


def _move_points(X: np.ndarray, ref: np.ndarray, old: np.ndarray, new: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """World points ``X (M,3)`` seen from frames ``ref (M,)``: kept at the same place relative to
    that camera, with distances scaled by its factor (``old``/``new`` ``(N,4,4)`` poses)."""
    X = np.asarray(X, dtype=np.float64)
    c_old, c_new = old[ref, :3, 3], new[ref, :3, 3]
    return c_new + factors[ref, None] * (X - c_old)


def _orthonormalize(poses: np.ndarray) -> np.ndarray:
    """Project the rotation block of every pose ``(N,4,4)`` onto SO(3) (nearest rotation)."""
    U, _, Vt = np.linalg.svd(poses[:, :3, :3])
    d = np.sign(np.linalg.det(U @ Vt))
    out = poses.copy()
    out[:, :3, :3] = U @ (Vt * np.stack([np.ones_like(d), np.ones_like(d), d], 1)[:, :, None])
    return out


def config_dict(cfg: VOConfig) -> dict:
    return asdict(cfg)
