"""Scale sources of the VO: the length of each pair's unit translation.

Every source answers the same question for one pair (:class:`PairScaleInput`: the unit pose, the
triangulated inliers, the carried track) with a :class:`ScaleEstimate`:

- :class:`StereoScale` (metric): the stereo disparity of the reference frame (DIS between its left
  and right images) at the triangulated inliers, aligned robustly to their depths; a pair without
  a usable disparity falls through to the next source;
- :class:`DepthScale` (predicted): a DepthNet's depth at the inliers (TrianFlow's alignment);
- :class:`ChainedScale` (monocular): the points carried from the previous pair (in the chain
  scale), re-triangulated with this pair's unit pose; the median-consensus ratio of their depths
  chains one scale through the trajectory. The first pair defines the unit.

:class:`ScaleSources` tries them in that order (the ones configured). The ground plane
(:mod:`trianflow.vo.ground`) is not a per-pair source: it rescales the whole trajectory after the
loop, where the map's planes are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from trianflow.geometry.flow import sample_at
from trianflow.geometry.sampling import correspondence_scores
from trianflow.geometry.scale import align_scale
from trianflow.geometry.triangulation import triangulate_midpoint
from trianflow.vo.config import VOConfig
from trianflow.vo.track import PointTrack
from trianflow.vo.two_view import flow_tensor

__all__ = ["PairScaleInput", "ScaleEstimate", "StereoScale", "DepthScale", "ChainedScale", "ScaleSources"]


@dataclass
class PairScaleInput:
    """One pair as the scale sources see it."""

    T_unit: torch.Tensor  # (1,4,4) reference -> frame, unit translation
    tri: object  # triangulation of the inliers with T_unit (depth1 (1,N), valid (1,N))
    corr: object  # the pair's correspondences (x1 (1,N,2) in the reference frame)
    tracked: Optional[Tuple[PointTrack, torch.Tensor]]  # carried points and their pixels in this frame
    ref_image: np.ndarray  # (H,W,3) uint8 reference (left) image
    ref_right: Optional[np.ndarray]  # (H,W,3) its right image (stereo) or None
    first: bool  # no scale has been chained yet (this pair may define the unit)


@dataclass
class ScaleEstimate:
    scale: float
    ok: bool
    points: int  # points that decided it (``frames.csv``: ``shared``)


class StereoScale:
    """Metric scale from the reference frame's stereo pair (``baseline`` metres)."""

    fall_through = True  # a pair without usable disparity tries the next source

    def __init__(self, K: np.ndarray, baseline: float, flow_fn: Callable, config: VOConfig,
                 generator: torch.Generator, device: torch.device):
        self.K, self.baseline, self.flow_fn = K, baseline, flow_fn
        self.cfg, self.gen, self.device = config, generator, device

    def estimate(self, p: PairScaleInput) -> Optional[ScaleEstimate]:
        if p.ref_right is None:
            return None
        cfg = self.cfg
        fwd, bwd = self.flow_fn(p.ref_image, p.ref_right)
        ff, fb = flow_tensor(fwd, self.device), flow_tensor(bwd, self.device)
        sc = correspondence_scores(ff, fb)
        xy = p.corr.x1.view(1, 1, -1, 2)
        f = sample_at(ff, xy)[0, :, 0]  # (2,N)
        q = sample_at(sc, xy)[0, 0, 0]
        disp = -f[0]
        depth = self.K[0, 0] * self.baseline / disp.clamp(min=1e-6)
        ok = p.tri.valid[0] & (disp > 0.5) & (f[1].abs() < 1.0) & (q > 1.0)
        s, good, inl = align_scale(p.tri.depth1[0].double().unsqueeze(0), depth.double().unsqueeze(0),
                                   ok.unsqueeze(0), method=cfg.scale_method, min_points=cfg.min_shared,
                                   generator=self.gen)
        return ScaleEstimate(float(s[0]), bool(good[0]), int(inl.sum()))


class DepthScale:
    """Scale from a depth prediction ``depth_fn(image (H,W,3)) -> (H,W)`` of the reference frame."""

    fall_through = False

    def __init__(self, depth_fn: Callable, config: VOConfig, generator: torch.Generator, device: torch.device):
        self.depth_fn, self.cfg, self.gen, self.device = depth_fn, config, generator, device

    def estimate(self, p: PairScaleInput) -> Optional[ScaleEstimate]:
        cfg = self.cfg
        depth = torch.as_tensor(self.depth_fn(p.ref_image), dtype=torch.float32, device=self.device)
        m = p.tri.valid
        xy = p.corr.x1.view(1, 1, -1, 2)
        d = sample_at(depth.view(1, 1, *depth.shape), xy)[0, 0, 0].unsqueeze(0)
        s, ok, _ = align_scale(p.tri.depth1.double(), d.double(), m, method=cfg.scale_method,
                               min_points=cfg.min_shared, generator=self.gen)
        return ScaleEstimate(float(s[0]), bool(ok[0]), int(m.sum()))


class ChainedScale:
    """Monocular scale chained through the points the previous pair (or the map) left."""

    fall_through = False

    def __init__(self, Kt: torch.Tensor, image_size, config: VOConfig, generator: torch.Generator):
        self.Kt, self.size, self.cfg, self.gen = Kt, tuple(image_size), config, generator

    def estimate(self, p: PairScaleInput) -> Optional[ScaleEstimate]:
        cfg = self.cfg
        if p.tracked is None:
            return ScaleEstimate(1.0, p.first, 0)  # the first pair defines the unit of the trajectory
        prev, xy2 = p.tracked
        # re-triangulate the tracked points with the new (unit) pose
        x1 = prev.xy.to(torch.float32).unsqueeze(0)
        x2 = xy2.to(torch.float32).unsqueeze(0)
        tri2 = triangulate_midpoint(x1, x2, self.Kt, self.Kt, p.T_unit, min_angle_deg=cfg.min_tri_angle_deg,
                                    max_reproj=cfg.max_reproj_px, image_size=self.size)
        z_prev = prev.X[:, 2].unsqueeze(0)
        s, ok, inl = align_scale(tri2.depth1.double(), z_prev, tri2.valid, method=cfg.scale_method,
                                 min_points=cfg.min_shared, generator=self.gen)
        return ScaleEstimate(float(s[0]), bool(ok[0]), int(inl.sum()))


class ScaleSources:
    """The configured sources, tried in order: stereo (``config.stereo`` with a baseline), a DepthNet
    (``depth_fn``), then the chained monocular scale."""

    def __init__(self, K: np.ndarray, Kt: torch.Tensor, image_size, config: VOConfig, generator: torch.Generator,
                 device: torch.device, baseline: Optional[float] = None, stereo_flow: Optional[Callable] = None,
                 depth_fn: Optional[Callable] = None):
        self.sources: List = []
        if stereo_flow is not None and baseline:
            self.sources.append(StereoScale(K, baseline, stereo_flow, config, generator, device))
        if depth_fn is not None:
            self.sources.append(DepthScale(depth_fn, config, generator, device))
        self.chained = ChainedScale(Kt, image_size, config, generator)
        self.sources.append(self.chained)

    @property
    def per_pair(self) -> bool:
        """Whether every pair has its own (metric or predicted) scale: nothing to chain from the map."""
        return len(self.sources) > 1

    def estimate(self, p: PairScaleInput) -> ScaleEstimate:
        for src in self.sources:
            est = src.estimate(p)
            if est is None or (not est.ok and src.fall_through):
                continue
            return est
        raise AssertionError("the chained source always answers")  # pragma: no cover
