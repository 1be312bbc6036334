"""TrianFlow's two-view geometry of a flow pair, batched on the flows' device.

:func:`two_view_geometry`: forward/backward flows -> correspondence scores -> sampled
correspondences -> batched torch RANSAC for the essential matrix (several restarts, the run with
most inliers kept) -> midpoint triangulation of the inliers, with a per-sample ``valid`` flag.
Used by the training tasks (``trianflow``, ``stereo_mono``) to supervise the depth network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trianflow.geometry.pose import make_pose
from trianflow.geometry.ransac import TwoViewResult, estimate_relative_pose
from trianflow.geometry.sampling import Correspondences, correspondence_scores, sample_correspondences
from trianflow.geometry.triangulation import Triangulation, triangulate_midpoint

__all__ = ["TwoViewGeometry", "two_view_geometry", "MIN_POINTS"]

#: fewest triangulated points for a sample to be valid (and to enter the geometry loss terms)
MIN_POINTS = 20
_RANSAC_RESTARTS = 4  # independent torch-RANSAC runs per sample, the one with most inliers is kept
_MIN_INLIER_RATIO = 0.5  # a pose explaining fewer of the valid matches is not trusted


@dataclass
class TwoViewGeometry:
    """Pose and sparse depth of a batch of image pairs, from their flows.

    Attributes:
        corr: sampled :class:`~trianflow.geometry.sampling.Correspondences` ``(B,N,...)``.
        pose: :class:`~trianflow.geometry.ransac.TwoViewResult` of the torch backend.
        T: ``(B,4,4)`` fp32 ``T_1to2`` with unit translation (identity where invalid).
        tri: :class:`~trianflow.geometry.triangulation.Triangulation` of the inliers.
        score: ``(B,1,H,W)`` correspondence score map.
        valid: ``(B,)`` bool, pose valid and at least ``min_points`` triangulated points.
    """

    corr: Correspondences
    pose: TwoViewResult
    T: torch.Tensor
    tri: Triangulation
    score: torch.Tensor
    valid: torch.Tensor


def two_view_geometry(flow_fwd: torch.Tensor, flow_bwd: torch.Tensor, K: torch.Tensor, num_matches: int = 6000,
                      top_ratio: float = 0.2, threshold: float = 0.5, num_hypotheses: int = 100,
                      min_angle_deg: float = 0.5, min_points: int = MIN_POINTS, seed: int = 0,
                      generator: torch.Generator | None = None, restarts: int = _RANSAC_RESTARTS,
                      min_inlier_ratio: float = _MIN_INLIER_RATIO) -> TwoViewGeometry:
    """TrianFlow's pose-and-triangulation step, batched on the device of the flows.

    Runs with autocast disabled: flows and K are cast to fp32, the RANSAC and the triangulation
    work in fp64 inside. No gradient flows through any of it.

    Args:
        flow_fwd, flow_bwd: ``(B,2,H,W)`` flows 1 -> 2 and 2 -> 1 at full resolution.
        K: ``(B,3,3)`` intrinsics of both images.
        num_matches: correspondences drawn per sample; top_ratio: fraction of best-scoring pixels
            they are drawn from.
        threshold: RANSAC Sampson inlier threshold in pixels.
        num_hypotheses: RANSAC minimal-set hypotheses per sample.
        min_angle_deg: triangulated points need at least this ray angle (parallax).
        min_points: a sample needs this many triangulated points to be valid.
        seed: seeds the RANSAC minimal sets; generator: RNG of the correspondence sampling
            (default: the global torch RNG of the device).
        restarts: independent RANSAC runs per sample (batched together); the run with the most
            inliers is kept. The 8-point hypotheses of the torch backend often lock onto a
            dominant plane when the selected matches concentrate on it; restarts make it likelier
            that one run finds the motion that explains all of them.
        min_inlier_ratio: a pose explaining fewer than this fraction of the valid matches is
            marked invalid (a plane-degenerate or wrong essential matrix explains few of the
            forward-backward-consistent matches; a right one nearly all on a rigid scene).
    Returns:
        :class:`TwoViewGeometry`.
    """
    dev = flow_fwd.device
    with torch.no_grad(), torch.autocast(device_type=dev.type, enabled=False):
        ff, fb = flow_fwd.detach().float(), flow_bwd.detach().float()
        Kf = K.detach().float()
        b, _, h, w = ff.shape
        score = correspondence_scores(ff, fb)
        corr = sample_correspondences(ff, score=score, num_samples=int(num_matches), top_ratio=float(top_ratio),
                                      generator=generator)
        min_inl = max(15, int(0.02 * int(corr.valid.shape[1])))
        r = max(int(restarts), 1)
        rep = (lambda x: x.repeat_interleave(r, 0)) if r > 1 else (lambda x: x)
        pose = estimate_relative_pose(rep(corr.x1), rep(corr.x2), rep(Kf), rep(Kf), rep(corr.valid), backend="torch",
                                      threshold=float(threshold), num_hypotheses=int(num_hypotheses),
                                      min_inliers=min_inl, seed=int(seed))
        if r > 1:  # keep the run with the most inliers per sample
            best = (pose.num_inliers * pose.valid).view(b, r).argmax(1) + torch.arange(b, device=dev) * r
            pose = TwoViewResult(E=pose.E[best], F=pose.F[best], R=pose.R[best], t=pose.t[best],
                                 inliers=pose.inliers[best], num_inliers=pose.num_inliers[best],
                                 valid=pose.valid[best], reason=[pose.reason[i] for i in best.tolist()])
        enough = pose.num_inliers >= min_inlier_ratio * corr.valid.sum(1)
        pose.valid = pose.valid & enough
        T = make_pose(pose.R.float(), pose.t.float())
        tri = triangulate_midpoint(corr.x1, corr.x2, Kf, Kf, T, valid=pose.inliers, min_angle_deg=min_angle_deg,
                                   image_size=(h, w))
        valid = pose.valid & (tri.valid.sum(1) >= int(min_points))
    return TwoViewGeometry(corr=corr, pose=pose, T=T, tri=tri, score=score, valid=valid)
