"""The frame loop of the VO: :class:`VisualOdometry` takes one frame at a time and continues the
trajectory. Each frame goes through the steps, one module each:

- blank or unreadable frames are bridged (:mod:`trianflow.vo.fallback`);
- flow from the reference frame (DIS or a FlowNet), then the two-view pose
  (:class:`~trianflow.vo.two_view.TwoViewPose`): static / rotation / failed / pose;
- static and rotation frames may hold the reference (:class:`~trianflow.vo.reference.ReferenceHold`);
- a pose gets its scale from the configured sources (:class:`~trianflow.vo.scale.ScaleSources`),
  a failed pair falls back to PnP or constant velocity;
- the pair's triangulated points feed the ground collector (:mod:`trianflow.vo.ground`) and, with
  ``refine="ba"``, the frame goes to the mapper (:class:`trianflow.mapping.LocalMapper`), whose
  adjusted keyframe poses and points the VO continues from.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch

from trianflow.errors import InputError
from trianflow.vo.config import FrameInfo, VOConfig, resolve_dis_preset, validate_config
from trianflow.vo.fallback import bridge, pnp_or_constant_velocity, pose_power
from trianflow.io.point_store import PointStore
from trianflow.vo.ground import GroundCollector
from trianflow.vo.reference import ReferenceHold
from trianflow.vo.scale import PairScaleInput, ScaleSources
from trianflow.vo.state import FrameState
from trianflow.vo.track import PointTrack
from trianflow.vo.two_view import TwoViewPose, TwoViewResult

__all__ = ["VisualOdometry"]


class VisualOdometry:
    """Stateful monocular/stereo VO over consecutive frames.

    Args:
        K: ``(3,3)`` intrinsics of the (left) camera.
        image_size: ``(H, W)``.
        config: :class:`~trianflow.vo.VOConfig`.
        flow_fn: callable ``(img1, img2) -> (fwd, bwd)`` on ``(H,W,3)`` uint8 frames giving
            ``(H,W,2)`` float32 flows; defaults to DIS with ``config.dis_preset``.
        baseline: stereo baseline in metres (enables metric scale with ``config.stereo``).
        depth_fn: optional callable ``img -> (H,W)`` depth (e.g. a DepthNet); when given (and not
            stereo) each pair's scale comes from aligning triangulated to predicted depth.
        keep_points: collect every pair's triangulated points (``points``).

    What a viewer may read after each :meth:`step` (without modifying it): ``last_inliers``
    (the E inliers ``(x1, x2)``), ``new_points`` (the pair's triangulated points), ``points``
    (a :class:`~trianflow.io.point_store.PointStore`: ``len`` and the latest pair's chunk ``points.last``), ``mapper``.
    """

    def __init__(self, K, image_size, config: Optional[VOConfig] = None, flow_fn: Optional[Callable] = None,
                 baseline: Optional[float] = None, depth_fn: Optional[Callable] = None, keep_points: bool = False):
        from trianflow.flow_backends import DISFlow

        self.cfg = config or VOConfig()
        cfg = self.cfg
        self.device = torch.device(cfg.device)
        self.K = np.asarray(K, dtype=np.float64)
        self.Kt = torch.as_tensor(self.K, dtype=torch.float32, device=self.device).unsqueeze(0)
        self.size = tuple(image_size)
        if min(self.size[:2]) < 16:  # OpenCV's DIS crashes (SIGSEGV) on frames less than 16 px high
            raise InputError(f"frames of {self.size[1]}x{self.size[0]} px are too small for visual odometry; "
                             "use frames of at least 16x16 px")
        preset = resolve_dis_preset(cfg.dis_preset, self.size, cfg.refine)
        self.score_stride = max(1, cfg.score_stride) if cfg.score_stride > 0 else \
            (4 if cfg.refine == "none" and self.size[1] >= 960 else 2)
        self.flow_fn = flow_fn or DISFlow(preset)
        stereo_flow = DISFlow(preset) if (cfg.stereo and baseline) else None
        self.baseline = baseline
        self.depth_fn = depth_fn
        self.gen = torch.Generator().manual_seed(cfg.seed)
        validate_config(cfg)
        self.state = FrameState()
        self.hold = ReferenceHold(cfg.max_ref_hold, cfg.hold_max_flow * self.size[1])
        self.two_view = TwoViewPose(self.K, self.size, cfg, self.score_stride, self.gen, self.device)
        self.scale = ScaleSources(self.K, self.Kt, self.size, cfg, self.gen, self.device, baseline=baseline,
                                  stereo_flow=stereo_flow, depth_fn=depth_fn)
        self.ground = GroundCollector(cfg, self.K, self.size, depth_fn)
        self._corrections: dict = {}  # index -> revised camera-to-world pose (see pop_corrections)
        self.stage_seconds = {"flow": 0.0, "select": 0.0, "geometry": 0.0}
        self.keep_points = keep_points
        # per pair: (frame index, world xyz, pixel xy in that frame, rgb, pixel in next); spilled to disk when large
        self.points = PointStore()
        self.new_points = None  # (X1 (M,3) reference camera, xy1 (M,2), xy2 (M,2)) of the last pair
        self.last_inliers = None  # (x1 (M,2) in the reference frame, x2 (M,2) here) of the last E inliers
        self.mapper = None
        if cfg.refine == "ba":
            from trianflow.mapping.bundle_adjustment import BAOptions
            from trianflow.mapping.local_mapper import LocalMapper, MapperConfig

            mcfg = MapperConfig(window=cfg.ba_window, ba=BAOptions(refine_intrinsics=cfg.ba_refine_intrinsics))
            self.mapper = LocalMapper(self.K, self.size, mcfg)

    @property
    def pose_c2w(self) -> np.ndarray:
        """``(4,4)`` camera-to-world pose of the current reference frame."""
        return self.state.pose_c2w

    # -- public -----------------------------------------------------------------------------
    def step(self, index: int, timestamp: float, image: np.ndarray, image_right: Optional[np.ndarray] = None):
        """Process one frame; returns ``(pose_c2w (4,4), FrameInfo)``."""
        t0 = time.perf_counter()
        st = self.state
        if image is None and st.ref_image is None:  # unreadable before any usable frame
            return st.pose_c2w.copy(), FrameInfo(index, timestamp, "unreadable", seconds=time.perf_counter() - t0,
                                                 reason="frame could not be read: skipped")
        blank = image is None or not self._informative(image)
        if st.ref_image is None:
            st.set_reference(image, image_right, index)
            st.ref_blank = blank
            if self.mapper is not None:
                self.mapper.process(index, st.pose_c2w, "first", image)
            return st.pose_c2w.copy(), FrameInfo(index, timestamp, "first", seconds=time.perf_counter() - t0,
                                                 reason="no texture" if blank else "")
        if blank or st.ref_blank:
            info = FrameInfo(index, timestamp, "const_vel")
            pose = bridge(st, self.hold, self.mapper, info, image, image_right, blank)
            info.seconds = time.perf_counter() - t0
            if image is None:
                info.status = "unreadable"
                info.reason = "frame could not be read: bridged with constant velocity"
            return pose, info
        st.bridge_pose = None
        info = FrameInfo(index, timestamp, "ok", ref=st.ref_index)
        fwd, bwd = self.flow_fn(st.ref_image, image)
        t1 = time.perf_counter()
        self.stage_seconds["flow"] += t1 - t0
        self.new_points = None
        self.last_inliers = None
        span = max(index - st.ref_index, 1)
        sel0 = self.two_view.seconds_select
        pair = self.two_view.estimate(fwd, bwd, st.track)
        self.stage_seconds["select"] += self.two_view.seconds_select - sel0
        rel, held = self._apply(pair, info, span)
        self.stage_seconds["geometry"] += time.perf_counter() - t1
        info.rot_deg = float(np.degrees(np.arccos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1, 1))))
        info.trans = float(np.linalg.norm(rel[:3, 3]))
        if held:  # keep the reference (image, pose, track): parallax accumulates
            self.hold.add(index, rel[:3, :3], pair.parallax)
            info.reason = info.reason or f"low parallax: the next frame is matched against frame {st.ref_index}"
            info.seconds = time.perf_counter() - t0
            pose = st.pose_c2w @ np.linalg.inv(rel)
            if self.mapper is not None and self.mapper.keyframes:  # not tracked: re-attached to its keyframe
                self.mapper.skip(index, pose)
            return pose, info
        self.hold.release()
        if self.hold.frames:
            self._revise_held(rel, index, pair.parallax)
        if self.new_points is not None:
            self.ground.observe_pair(index, st.ref_index, self.new_points[0], self.new_points[1],
                                     float(np.linalg.norm(rel[:3, 3])))
            if self.mapper is not None and self.mapper.is_keyframe(st.ref_index):
                self.ground.observe_flow(st.ref_index, index, st.ref_image, image, rel)
        if self.keep_points and self.new_points is not None:
            self._keep_points()
        st.pose_c2w = st.pose_c2w @ np.linalg.inv(rel)
        st.last_rel = pose_power(rel, 1.0 / span)  # a gap or a held reference spans several frames
        if self.mapper is not None:
            self._refine(index, image, fwd, bwd, info)
        st.set_reference(image, image_right, index)
        info.seconds = time.perf_counter() - t0
        return st.pose_c2w.copy(), info

    def pop_corrections(self) -> dict:
        """Poses revised since the last call, ``{frame index: (4,4) camera-to-world}``.

        Frames matched against a held reference get a rotation-only pose when they are processed;
        once a later frame solves the translation from that reference, their camera centres are
        placed along it (see :meth:`~trianflow.vo.reference.ReferenceHold.revise`) and reported
        here. :func:`~trianflow.vo.run_vo` applies them.
        """
        out, self._corrections = self._corrections, {}
        return out

    # -- internals --------------------------------------------------------------------------
    def _apply(self, pair: TwoViewResult, info: FrameInfo, span: int):
        """The relative motion ``(4,4)`` reference -> frame from the two-view result, and whether the
        reference is held. Updates the carried track, ``info`` and the chain speed."""
        st = self.state
        info.matches, info.inliers, info.reason = pair.matches, pair.inliers, pair.reason
        tracked = pair.tracked
        self.last_inliers = pair.inlier_xy
        if pair.kind == "static":
            if pair.matches and self.hold.can_hold(pair.median_flow):
                info.status = "static"
                return np.eye(4), True
            info.status = "static"
            st.track = PointTrack(tracked[1], tracked[0].X) if tracked is not None else None
            return np.eye(4), False
        if pair.kind == "rotation":
            info.status = "rotation"
            rel = np.eye(4)
            rel[:3, :3] = pair.R.cpu().numpy()
            if self.hold.can_hold(pair.median_flow):
                return rel, True
            st.track = None
            if tracked is not None:
                st.track = PointTrack(tracked[1], tracked[0].X @ pair.R.T.to(tracked[0].X.dtype))
            return rel, False
        if pair.kind == "failed":
            return pnp_or_constant_velocity(st, tracked, self.K, self.cfg.pnp_min_inliers, span, info), False
        return self._scaled_pose(pair, info, span), False

    def _scaled_pose(self, pair: TwoViewResult, info: FrameInfo, span: int) -> np.ndarray:
        """The pair's pose with its translation scaled; the inliers become the carried track."""
        st = self.state
        tri, corr, R, t_unit = pair.tri, pair.corr, pair.R, pair.t_unit
        info.triangulated = int(tri.valid.sum())
        est = self.scale.estimate(PairScaleInput(pair.T_unit, tri, corr, pair.tracked, st.ref_image, st.ref_right,
                                                 first=st.last_speed is None))
        scale = est.scale
        info.shared = est.points
        if not est.ok:
            info.status = "ok_const_scale"
            scale = st.last_speed * span if st.last_speed is not None else 1.0
        info.scale = float(scale)
        st.last_speed = float(scale) / span
        rel = np.eye(4)
        rel[:3, :3] = R.cpu().numpy()
        rel[:3, 3] = (t_unit * scale).cpu().numpy()
        # new track: this pair's triangulated points in the new frame, at their observed pixels
        m = tri.valid[0]
        X1 = tri.points[0][m].double() * scale
        X2 = X1 @ R.T + t_unit * scale
        st.track = PointTrack(corr.x2[0][m].double(), X2)
        self.new_points = (X1.cpu().numpy(), corr.x1[0][m].cpu().numpy(), corr.x2[0][m].cpu().numpy())
        return rel

    def _revise_held(self, rel: np.ndarray, index: int, parallax: float) -> None:
        """Place the frames held on the reference along the translation ``rel`` solved."""
        revised = self.hold.revise(rel, index, self.state.ref_index, parallax, self.state.pose_c2w)
        for j, pose in revised.items():
            self._corrections[j] = pose
            if self.mapper is not None and self.mapper.keyframes:  # re-attached to the adjusted keyframes
                self.mapper.skip(j, pose)

    def _keep_points(self) -> None:
        st = self.state
        X1, xy, xy2 = self.new_points  # points in the previous camera frame, their pixels there and here
        Xw = X1 @ st.pose_c2w[:3, :3].T + st.pose_c2w[:3, 3]
        ij = np.clip(np.round(xy).astype(int), 0, [self.size[1] - 1, self.size[0] - 1])
        img = st.ref_image
        col = img[ij[:, 1], ij[:, 0]] if img.ndim == 3 else np.repeat(img[ij[:, 1], ij[:, 0], None], 3, 1)
        self.points.append((np.full(len(Xw), st.ref_index, np.int32), Xw.astype(np.float32),
                            xy.astype(np.float32), col.astype(np.uint8), xy2.astype(np.float32)))

    def _informative(self, image: np.ndarray) -> bool:
        """Whether ``image`` has enough texture to be matched (grey-level std on a 4x subsample)."""
        g = image[::4, ::4]
        if g.ndim == 3:
            g = g[..., 0] if g.shape[2] >= 1 else g
        return float(np.std(g)) >= self.cfg.min_image_std

    def _refine(self, index: int, image: np.ndarray, fwd: np.ndarray, bwd: np.ndarray, info: FrameInfo) -> None:
        """``refine="ba"``: hand the frame to the mapper; at a keyframe continue from the adjusted
        pose and chain the monocular scale from the adjusted points."""
        st = self.state
        ratio = info.inliers / max(info.matches, 1)
        # where new flow tracks may start (seed="inliers"): this pair's triangulated inliers
        seeds = self.new_points[1] if self.new_points is not None else None
        pose = self.mapper.process(index, st.pose_c2w, info.status, image, fwd, bwd, seeds, ratio)
        if not self.mapper.is_keyframe(index):
            return
        st.pose_c2w = pose
        if self.scale.per_pair:
            return  # metric/predicted scale per pair: nothing to chain
        ref = self.mapper.scale_reference()
        if ref is not None:
            xy, X = ref
            st.track = PointTrack(torch.from_numpy(xy).to(self.device, torch.float64),
                                  torch.from_numpy(X).to(self.device, torch.float64))
