"""Relative pose of two images: flow -> correspondences -> essential matrix -> [R|t] -> points.

The same path as one step of the VO loop (:mod:`trianflow.vo`), for a single pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from trianflow.geometry.pose import make_pose
from trianflow.geometry.ransac import estimate_relative_pose
from trianflow.geometry.sampling import correspondence_scores, sample_correspondences
from trianflow.geometry.triangulation import triangulate_midpoint


@dataclass
class TwoViewEstimate:
    """Pose of camera 2 w.r.t. camera 1 (``X2 = R X1 + t``, ``|t| = 1``) and what supports it."""

    R: np.ndarray  # (3,3)
    t: np.ndarray  # (3,) unit
    inliers: int
    points: int  # triangulated inliers passing the filters
    matches: int  # sampled correspondences
    status: str  # "ok", "static", or why it failed
    xyz: Optional[np.ndarray] = None  # (M,3) triangulated points in camera 1 (unit baseline)
    x1: Optional[np.ndarray] = None  # (M,2) their pixels in image 1

    def to_dict(self) -> dict:
        return {"R": self.R.tolist(), "t": self.t.tolist(), "inliers": int(self.inliers), "points": int(self.points),
                "status": self.status}


def estimate_two_view(img1: np.ndarray, img2: np.ndarray, K: np.ndarray, flow_fn: Optional[Callable] = None,
                      num_samples: int = 6000, backend: str = "opencv", threshold: float = 1.0, seed: int = 0,
                      static_flow_px: float = 0.5, min_inliers: int = 50) -> TwoViewEstimate:
    """Estimate the relative pose of two ``(H,W,3)`` uint8 frames with intrinsics ``K (3,3)``.

    ``flow_fn(img1, img2) -> (fwd, bwd)`` defaults to OpenCV DIS (preset chosen by image size).
    """
    from trianflow.flow_backends import DISFlow
    from trianflow.vo import resolve_dis_preset

    h, w = img1.shape[:2]
    # one pair, no bundle adjustment behind it: the denser "balanced" patches on wide frames
    flow_fn = flow_fn or DISFlow("balanced" if w >= 960 else resolve_dis_preset("auto", (h, w)))
    fwd, bwd = flow_fn(img1, img2)
    ff = torch.from_numpy(np.ascontiguousarray(fwd.transpose(2, 0, 1))).unsqueeze(0)
    fb = torch.from_numpy(np.ascontiguousarray(bwd.transpose(2, 0, 1))).unsqueeze(0)
    score = correspondence_scores(ff, fb)
    corr = sample_correspondences(ff, score=score, num_samples=num_samples,
                                  generator=torch.Generator().manual_seed(seed))
    Kt = torch.as_tensor(np.asarray(K, dtype=np.float64), dtype=torch.float32).unsqueeze(0)
    n = int(corr.valid.sum())
    eye = np.eye(3)
    if n == 0 or float((corr.x2 - corr.x1).norm(dim=-1)[corr.valid].median()) < static_flow_px:
        return TwoViewEstimate(eye, np.zeros(3), 0, 0, n, "static")
    est = estimate_relative_pose(corr.x1, corr.x2, Kt, valid=corr.valid, backend=backend, threshold=threshold,
                                 min_inliers=min_inliers, seed=seed)
    if not bool(est.valid[0]):
        return TwoViewEstimate(eye, np.zeros(3), int(est.num_inliers[0]), 0, n, est.reason[0])
    T = make_pose(est.R, est.t)
    tri = triangulate_midpoint(corr.x1, corr.x2, Kt, Kt, T, valid=est.inliers, image_size=(h, w))
    m = tri.valid[0]
    return TwoViewEstimate(
        R=est.R[0].double().numpy(), t=est.t[0].double().numpy(), inliers=int(est.num_inliers[0]),
        points=int(m.sum()), matches=n, status="ok", xyz=tri.points[0][m].double().numpy(), x1=corr.x1[0][m].numpy(),
    )
