"""Geometric verification of a proposed loop, giving the Sim(3) between the two keyframes.

For a query keyframe ``q`` and an older candidate ``c`` (:mod:`trianflow.loop.places`):

1. ORB matches ``q <-> c`` (Hamming, ratio test);
2. an essential matrix with RANSAC on them (the matches must be one rigid scene);
3. the candidate's matched features are triangulated in its own camera from its neighbouring
   keyframes and the (adjusted) odometry poses there, so they carry the map's scale at ``c``;
   PnP with RANSAC of those points against the query's pixels gives ``[R|t]`` from ``c`` to ``q``
   in that scale;
4. the query's features, triangulated the same way around ``q``, give the scale drift between the
   two places: the median ratio of their depths to the candidate's points moved by ``[R|t]``.

The result maps the candidate's camera coordinates to the query's, ``X_q = s (R X_c + t)``. A loop
is accepted only when every step has enough inliers, the depth ratios agree, and the two cameras are
close compared with the path driven between them (a revisit, not the same street seen from further
down the road).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from trianflow.loop.places import Place

__all__ = ["VerifyConfig", "LoopEdge", "match_places", "triangulate_place", "verify_loop"]


@dataclass
class VerifyConfig:
    """Thresholds of the verification (defaults: strict; a false loop is worse than none)."""

    ratio: float = 0.8  # Lowe's ratio test on Hamming distances
    min_matches: int = 60
    essential_px: float = 1.5  # RANSAC threshold (pixels)
    min_essential_inliers: int = 60
    min_essential_ratio: float = 0.35  # inliers / matches
    pnp_px: float = 3.0
    min_pnp_inliers: int = 40
    min_scale_points: int = 15
    max_scale_spread: float = 0.25  # median absolute deviation of log depth ratios
    max_distance_ratio: float = 0.15  # camera distance <= this x the path driven between the two keyframes
    tri_neighbours: Tuple[int, ...] = (1, -1, 2, -2)  # keyframes (offsets in the keyframe list) to triangulate with
    tri_max_px: float = 2.0
    tri_min_angle_deg: float = 1.0  # points seen under less parallax give no reliable depth (forward motion)


@dataclass
class LoopEdge:
    """A verified loop: ``X_q = scale * (R @ X_c + t)`` maps candidate-camera points to query-camera ones."""

    query: int  # frame index of the newer keyframe
    candidate: int  # frame index of the older keyframe
    R: np.ndarray
    t: np.ndarray
    scale: float
    inliers: int  # PnP inliers
    matches: int
    essential_inliers: int
    scale_points: int
    score: float = 0.0  # the appearance score ratio that proposed it
    extra: Dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"query": self.query, "candidate": self.candidate, "inliers": self.inliers, "matches": self.matches,
                "essential_inliers": self.essential_inliers, "scale_points": self.scale_points,
                "scale": float(self.scale), "score": float(self.score),
                "rotation_deg": float(np.degrees(np.linalg.norm(cv2.Rodrigues(self.R)[0]))),
                "distance": float(np.linalg.norm(self.R.T @ self.t)), **self.extra}


def match_places(a: Place, b: Place, ratio: float = 0.8):
    """Ratio-test ORB matches: ``(ia (M,), ib (M,))`` indices into ``a`` and ``b``'s features, one
    match per feature of ``b`` at most."""
    if len(a.desc) < 2 or len(b.desc) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    knn = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.desc, b.desc, k=2)
    ia, ib, dist = [], [], []
    for m in knn:
        if len(m) == 2 and m[0].distance < ratio * m[1].distance:
            ia.append(m[0].queryIdx)
            ib.append(m[0].trainIdx)
            dist.append(m[0].distance)
    ia, ib, dist = np.array(ia, np.int64), np.array(ib, np.int64), np.array(dist)
    if len(ib):  # unique in b: keep the closest
        order = np.lexsort((dist, ib))
        first = np.r_[True, ib[order][1:] != ib[order][:-1]]
        keep = order[first]
        ia, ib = ia[keep], ib[keep]
    return ia, ib


def triangulate_place(places: List[Place], k: int, poses_c2w: np.ndarray, K: np.ndarray,
                      cfg: Optional[VerifyConfig] = None) -> np.ndarray:
    """Points ``(M,3)`` in place ``k``'s camera (nan where none) for each of its features, triangulated
    with the neighbouring places (``cfg.tri_neighbours``) from the poses ``(N,4,4)`` c2w."""
    cfg = cfg or VerifyConfig()
    p = places[k]
    X = np.full((len(p.xy), 3), np.nan)
    for off in cfg.tri_neighbours:
        j = k + off
        if not (0 <= j < len(places)):
            continue
        q = places[j]
        ia, ib = match_places(p, q, cfg.ratio)
        todo = np.isnan(X[ia, 0])
        ia, ib = ia[todo], ib[todo]
        if len(ia) < 8:
            continue
        T = np.linalg.inv(poses_c2w[q.frame]) @ poses_c2w[p.frame]  # k camera -> j camera
        if np.linalg.norm(T[:3, 3]) < 1e-9:
            continue
        P1 = K @ np.eye(3, 4)
        P2 = K @ T[:3]
        h = cv2.triangulatePoints(P1, P2, p.xy[ia].T.astype(np.float64), q.xy[ib].T.astype(np.float64))
        Xk = (h[:3] / h[3]).T
        X2 = Xk @ T[:3, :3].T + T[:3, 3]
        ok = (Xk[:, 2] > 0) & (X2[:, 2] > 0)
        e1 = _reproj(Xk, K, p.xy[ia])
        e2 = _reproj(X2, K, q.xy[ib])
        c2 = -T[:3, :3].T @ T[:3, 3]  # the neighbour's centre in k's camera
        cosang = np.sum(Xk * (Xk - c2), 1) / np.maximum(np.linalg.norm(Xk, axis=1) * np.linalg.norm(Xk - c2, axis=1),
                                                         1e-12)
        ok &= (e1 < cfg.tri_max_px) & (e2 < cfg.tri_max_px) & (cosang < np.cos(np.radians(cfg.tri_min_angle_deg)))
        X[ia[ok]] = Xk[ok]
    return X


def _reproj(X: np.ndarray, K: np.ndarray, xy: np.ndarray) -> np.ndarray:
    z = np.maximum(X[:, 2], 1e-12)
    u = K[0, 0] * X[:, 0] / z + K[0, 2]
    v = K[1, 1] * X[:, 1] / z + K[1, 2]
    return np.hypot(u - xy[:, 0], v - xy[:, 1])


def verify_loop(places: List[Place], q: int, c: int, poses_c2w: np.ndarray, K: np.ndarray,
                path_length: np.ndarray, cfg: Optional[VerifyConfig] = None,
                cache: Optional[dict] = None) -> Tuple[Optional[LoopEdge], str]:
    """Verify the proposal ``q`` (newer) <-> ``c`` (older), indices into ``places``; ``path_length
    (N,)``: distance travelled up to each frame. Returns ``(LoopEdge or None, reason)``; ``cache``
    keeps the places' triangulations between calls."""
    cfg = cfg or VerifyConfig()
    cache = {} if cache is None else cache
    K = np.ascontiguousarray(K, dtype=np.float64)
    pq, pc = places[q], places[c]
    iq, ic = match_places(pq, pc, cfg.ratio)
    if len(iq) < cfg.min_matches:
        return None, f"{len(iq)} ORB matches (< {cfg.min_matches})"
    xq, xc = pq.xy[iq], pc.xy[ic]
    E, mask = cv2.findEssentialMat(xc, xq, K, method=cv2.RANSAC, prob=0.999, threshold=cfg.essential_px)
    if E is None or mask is None:
        return None, "no essential matrix"
    inl = mask.ravel().astype(bool)
    n_e = int(inl.sum())
    if n_e < cfg.min_essential_inliers or n_e < cfg.min_essential_ratio * len(iq):
        return None, f"{n_e} of {len(iq)} matches fit an essential matrix"
    iq, ic = iq[inl], ic[inl]
    for k in (q, c):
        if k not in cache:
            cache[k] = triangulate_place(places, k, poses_c2w, K, cfg)
    Xc_all, Xq_all = cache[c], cache[q]
    has = np.isfinite(Xc_all[ic, 0])
    if has.sum() < cfg.min_pnp_inliers:
        return None, f"{int(has.sum())} of the candidate's matched features triangulated (< {cfg.min_pnp_inliers})"
    obj = Xc_all[ic[has]].astype(np.float64)
    img = pq.xy[iq[has]].astype(np.float64)
    ok, rvec, tvec, pin = cv2.solvePnPRansac(obj, img, K, None, iterationsCount=200, reprojectionError=cfg.pnp_px,
                                             confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
    if not ok or pin is None or len(pin) < cfg.min_pnp_inliers:
        return None, f"{0 if pin is None else len(pin)} PnP inliers (< {cfg.min_pnp_inliers})"
    pin = pin.ravel()
    ok, rvec, tvec = cv2.solvePnP(obj[pin], img[pin], K, None, rvec, tvec, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    R = cv2.Rodrigues(rvec)[0]
    t = tvec.ravel()
    # scale drift: depths of the query's own points vs the candidate's points moved into the query camera
    sel_q = iq[has][pin]
    sel_c = ic[has][pin]
    Xq = Xq_all[sel_q]
    both = np.isfinite(Xq[:, 0])
    if both.sum() < cfg.min_scale_points:
        return None, f"{int(both.sum())} points seen in both places' triangulations (< {cfg.min_scale_points})"
    Xc_in_q = Xc_all[sel_c[both]] @ R.T + t
    zq, zc = Xq[both, 2], Xc_in_q[:, 2]
    good = (zq > 0) & (zc > 0)
    if good.sum() < cfg.min_scale_points:
        return None, "points behind the cameras"
    lr = np.log(zq[good] / zc[good])
    s_log = float(np.median(lr))
    spread = float(np.median(np.abs(lr - s_log)))
    if spread > cfg.max_scale_spread:
        return None, f"depth ratios disagree (spread {spread:.2f} > {cfg.max_scale_spread})"
    dist = float(np.linalg.norm(R.T @ t))  # the query's centre in the candidate's camera (candidate's units)
    driven = float(path_length[pq.frame] - path_length[pc.frame])
    if dist > cfg.max_distance_ratio * max(driven, 1e-12):
        return None, f"cameras {dist:.3g} apart after {driven:.3g} driven: not a revisit"
    edge = LoopEdge(pq.frame, pc.frame, R, t, float(np.exp(s_log)), int(len(pin)), int(len(inl)), n_e,
                    int(good.sum()), extra={"scale_spread": spread, "driven": driven})
    return edge, "accepted"
