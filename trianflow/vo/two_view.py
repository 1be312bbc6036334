"""Two-view pose from a flow pair: correspondence selection, essential matrix, the static and
rotation-only tests, and triangulation of the inliers (unit baseline).

:class:`TwoViewPose` is the per-pair step of the VO (steps 2-4 of :mod:`trianflow.vo`):

1. score every pixel of the forward flow (``visible / (0.1 + fb distance)``), keep the top
   ``top_ratio`` and draw ``num_samples`` at random (on every ``score_stride``-th pixel, the
   flows read at full resolution there);
2. median flow below ``static_flow_px``: **static**;
3. essential matrix by robust RANSAC (``ransac_backend``), the cheirality-checked [R|t]
   refined on the inliers' Sampson error;
4. parallax after de-rotation (the infinite homography ``K R K^-1``) below ``min_parallax_px``
   (or ``min_parallax_rel`` of the median flow, whichever is larger): **rotation** only, R from
   Kabsch on the bearings. When E fails on enough matches the rotation-only model is checked the
   same way before the pair counts as **failed**;
5. otherwise **pose**: midpoint triangulation of the inliers with the unit translation.

The result says which case it was; what the VO then does with it (hold the reference, chain the
scale, fall back to PnP) is the frame loop's business (:mod:`trianflow.vo.tracker`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from trianflow.geometry.pose import make_pose
from trianflow.geometry.ransac import estimate_relative_pose
from trianflow.geometry.sampling import Correspondences, correspondence_scores, sample_correspondences
from trianflow.geometry.triangulation import triangulate_midpoint
from trianflow.vo.config import VOConfig
from trianflow.vo.track import PointTrack, advect

__all__ = ["TwoViewResult", "TwoViewPose", "parallax_px", "rotation_only", "flow_tensor"]


@dataclass
class TwoViewResult:
    """What one flow pair gave.

    ``kind``: ``"static"`` (no motion), ``"rotation"`` (no parallax: ``R`` only), ``"failed"``
    (neither E nor the rotation model: fall back) or ``"pose"`` (``R``, ``t_unit``, ``tri``).
    """

    kind: str
    matches: int
    median_flow: float  # px, over the sampled matches
    parallax: float  # median parallax after de-rotation (px); the median flow where not measured
    tracked: Optional[Tuple[PointTrack, torch.Tensor]]  # the carried points and their pixels in the new frame
    inliers: int = 0
    reason: str = ""
    R: Optional[torch.Tensor] = None  # (3,3) float64 reference -> frame
    t_unit: Optional[torch.Tensor] = None  # (3,) float64, unit length
    T_unit: Optional[torch.Tensor] = None  # (1,4,4)
    tri: object = None  # TriangulationResult of the inliers (kind "pose")
    corr: Optional[Correspondences] = None
    inlier_xy: Optional[Tuple[np.ndarray, np.ndarray]] = None  # (x1 (M,2) reference, x2 (M,2) frame) E inliers


def flow_tensor(f: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(H,W,2)`` numpy flow -> ``(1,2,H,W)`` tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1))).unsqueeze(0).to(device)


def parallax_px(Kt: torch.Tensor, R: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Per-match distance (px) between ``x2 (N,2)`` and ``x1 (N,2)`` moved by the rotation ``R (3,3)``
    alone (the infinite homography ``K R K^-1``, ``Kt (1,3,3)``): the parallax translation must explain."""
    Kd = Kt[0].double()
    p = torch.cat([x1, torch.ones_like(x1[:, :1])], 1) @ (Kd @ R @ torch.linalg.inv(Kd)).T
    return (p[:, :2] / p[:, 2:] - x2).norm(dim=-1)


def _kabsch_origin(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rotation-only Kabsch (no centring): ``R`` with ``b ~ R a`` for ``(N,3)`` unit bearings."""
    U, _, Vh = torch.linalg.svd(b.T @ a)
    d = torch.sign(torch.det(U @ Vh))
    D = torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d]))
    return U @ D @ Vh


def rotation_only(Kt: torch.Tensor, fx: float, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Rotation ``(3,3)`` with ``b2 ~ R b1`` on the unit bearings of ``x1, x2 (N,2)`` (Kabsch), with two
    outlier-rejection passes (bearing error above 3 px / ``fx`` and 3x the median)."""
    Kinv = torch.linalg.inv(Kt[0].double())
    b1 = torch.cat([x1, torch.ones_like(x1[:, :1])], 1) @ Kinv.T
    b2 = torch.cat([x2, torch.ones_like(x2[:, :1])], 1) @ Kinv.T
    b1 = b1 / b1.norm(dim=1, keepdim=True)
    b2 = b2 / b2.norm(dim=1, keepdim=True)
    R = _kabsch_origin(b1, b2)
    for _ in range(2):
        err = (b1 @ R.T - b2).norm(dim=1)
        keep = err < max(3.0 / fx, float(err.median()) * 3)
        if keep.sum() >= 3:
            R = _kabsch_origin(b1[keep], b2[keep])
    return R


@dataclass
class PreparedFlows:
    """:meth:`TwoViewPose.prepare`'s result: full-resolution flow tensors ``(1,2,H,W)``, the strided
    forward flow and its score map ``(1,1,h,w)``, that map at full resolution, and the seconds it took."""

    ff: torch.Tensor
    fb: torch.Tensor
    ffs: torch.Tensor
    score_s: torch.Tensor
    score: torch.Tensor  # the score map at full resolution (nearest)
    seconds: float


class TwoViewPose:
    """The two-view step of the VO for one camera.

    Args:
        K: ``(3,3)`` intrinsics; image_size: ``(H, W)``; config: :class:`~trianflow.vo.VOConfig`.
        score_stride: select correspondences on every n-th pixel.
        generator: the VO's random generator (sampling of the correspondences).
    ``seconds_select`` accumulates the time of the selection (scores + sampling), ``seconds_ahead`` the part
    of it the frame pipeline computed ahead (:meth:`prepare` on its worker).
    """

    def __init__(self, K: np.ndarray, image_size, config: VOConfig, score_stride: int, generator: torch.Generator,
                 device: torch.device):
        self.cfg = config
        self.K = np.asarray(K, dtype=np.float64)
        self.Kt = torch.as_tensor(self.K, dtype=torch.float32, device=device).unsqueeze(0)
        self.size = tuple(image_size)
        self.stride = score_stride
        self.gen = generator
        self.device = device
        self.seconds_select = 0.0
        self._prepared = None  # (fwd, bwd, PreparedFlows) offered by the frame pipeline
        self.seconds_ahead = 0.0  # the part of seconds_select computed ahead on the pipeline's worker

    def prepare(self, fwd: np.ndarray, bwd: np.ndarray) -> "PreparedFlows":
        """What the pair's selection needs from its flows alone: the flow tensors and the score map on
        every ``score_stride``-th pixel. Pure (no state, no random numbers): the frame pipeline runs
        it on its worker thread (:mod:`trianflow.vo.pipeline`)."""
        t0 = time.perf_counter()
        ff, fb = flow_tensor(fwd, self.device), flow_tensor(bwd, self.device)
        st = self.stride
        ffs, fbs = ff[..., ::st, ::st] / st, fb[..., ::st, ::st] / st
        score_s = correspondence_scores(ffs, fbs)
        score = score_s if st == 1 else torch.nn.functional.interpolate(score_s, size=ff.shape[-2:], mode="nearest")
        return PreparedFlows(ff, fb, ffs, score_s, score, time.perf_counter() - t0)

    def offer(self, fwd: np.ndarray, bwd: np.ndarray, prepared: "PreparedFlows") -> None:
        """Hand in :meth:`prepare`'s result for these flow arrays (used by :meth:`estimate` when it gets
        exactly these arrays, by identity)."""
        self._prepared = (fwd, bwd, prepared)

    def estimate(self, fwd: np.ndarray, bwd: np.ndarray, track: Optional[PointTrack]) -> TwoViewResult:
        """Pose of the pair from its flows ``(H,W,2)`` (reference -> frame and back); ``track`` is
        advected into the frame along the way (``TwoViewResult.tracked``)."""
        cfg = self.cfg
        ts = time.perf_counter()
        pre, self._prepared = self._prepared, None
        if pre is not None and pre[0] is fwd and pre[1] is bwd:
            pre = pre[2]
            self.seconds_select += pre.seconds  # computed on the worker: counted as work, not as waiting
            self.seconds_ahead += pre.seconds
        else:
            pre = self.prepare(fwd, bwd)
        ff = pre.ff
        corr, score = self._select(pre)
        self.seconds_select += time.perf_counter() - ts
        valid = corr.valid
        matches = int(valid.sum())
        tracked = advect(track, ff, score)  # the carried points, moved into this frame by the flow
        mags = (corr.x2 - corr.x1).norm(dim=-1)[valid]
        med_flow = float(mags.median()) if matches else 0.0
        out = TwoViewResult("static", matches, med_flow, med_flow, tracked, corr=corr)
        if matches == 0 or med_flow < cfg.static_flow_px:
            return out
        est = estimate_relative_pose(
            corr.x1, corr.x2, self.Kt, valid=valid, backend=cfg.ransac_backend, threshold=cfg.ransac_threshold,
            confidence=cfg.ransac_confidence, max_iters=cfg.ransac_max_iters, min_inliers=cfg.min_inliers,
            seed=cfg.seed, refine_iters=cfg.refine_iters, lo_rounds=cfg.lo_rounds,
        )
        out.inliers = int(est.num_inliers[0])
        x1, x2 = corr.x1[0].double(), corr.x2[0].double()
        # flow error grows with the displacement: large flows need more parallax to count as translation
        min_parallax = max(cfg.min_parallax_px, cfg.min_parallax_rel * med_flow)
        fx = float(self.K[0, 0])
        if not bool(est.valid[0]):
            out.kind, out.reason = "failed", est.reason[0]
            # pure rotation makes E degenerate (every t fits): check the rotation-only model first
            if matches >= cfg.min_inliers:
                Rrot = rotation_only(self.Kt, fx, x1[valid[0]], x2[valid[0]])
                out.parallax = float(parallax_px(self.Kt, Rrot, x1[valid[0]], x2[valid[0]]).median())
                if out.parallax < min_parallax:
                    out.kind, out.reason, out.R = "rotation", "", Rrot
            return out
        R = est.R[0].double()
        inl = est.inliers[0]
        out.inlier_xy = (corr.x1[0][inl].cpu().numpy(), corr.x2[0][inl].cpu().numpy())
        # parallax after de-rotation: pure rotation leaves (almost) none
        out.parallax = float(parallax_px(self.Kt, R, x1, x2)[inl].median())
        if out.parallax < min_parallax:
            out.kind, out.R = "rotation", rotation_only(self.Kt, fx, x1[valid[0]], x2[valid[0]])
            return out
        t_unit = est.t[0].double()
        T_unit = make_pose(R, t_unit).unsqueeze(0)
        out.tri = triangulate_midpoint(corr.x1, corr.x2, self.Kt, self.Kt, T_unit, valid=inl.unsqueeze(0),
                                       min_angle_deg=cfg.min_tri_angle_deg, max_reproj=cfg.max_reproj_px,
                                       image_size=self.size)
        out.kind, out.R, out.t_unit, out.T_unit = "pose", R, t_unit, T_unit
        return out

    def _select(self, pre: "PreparedFlows"):
        """Correspondences (full-resolution pixels) and the score map ``(1,1,H,W)``."""
        cfg = self.cfg
        st = self.stride
        ff, ffs, score_s = pre.ff, pre.ffs, pre.score_s
        corr = sample_correspondences(ffs, score=score_s, num_samples=cfg.num_samples, top_ratio=cfg.top_ratio,
                                      generator=self.gen)
        if st == 1:
            return corr, score_s
        # back to full-resolution pixels, with the full-resolution flow there
        x1 = corr.x1 * st
        xi = x1.long()
        corr.x1 = x1
        corr.x2 = x1 + ff[0, :, xi[0, :, 1], xi[0, :, 0]].T.unsqueeze(0)
        return corr, pre.score
