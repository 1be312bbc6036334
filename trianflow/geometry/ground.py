"""Ground plane from triangulated points, and the camera height above it.

Monocular VO knows its trajectory up to a scale that drifts slowly. A camera mounted on a
vehicle (or carried at a steady height) sits at a constant height above a roughly planar
ground; the road points triangulated in the lower part of the image give that height in the
units of the map. :func:`fit_ground_plane` finds the plane robustly and
:func:`ground_scale_profile` turns a sequence of per-keyframe heights into a smooth per-frame
scale correction (metric when the true height is given, drift-free otherwise).

Conventions: camera coordinates x right, y down, z forward; pixels with centres at integers;
a plane is ``n . X + d = 0`` with ``|n| = 1`` and ``n`` pointing up (``n_y < 0``), so the camera
(the origin) is at height ``d > 0`` above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["GroundPlane", "GroundOptions", "FlowGroundOptions", "PhotometricGroundOptions", "fit_ground_plane",
           "fit_ground_from_flow", "fit_ground_photometric", "ground_scale_profile", "rescale_trajectory"]


@dataclass
class GroundOptions:
    """Settings of :func:`fit_ground_plane`.

    min_row: candidates lie below this fraction of the image height *under the principal point*
        (0 = the horizon row of a level camera, 1 = the bottom row).
    max_col: candidates lie within this fraction of the half-width around the principal point
        (kerbs, parked cars and walls crowd the image sides).
    max_tilt_deg: the plane normal must be within this angle of the camera's up axis (-y).
    inlier_rel: inlier distance to the plane as a fraction of the camera height.
    max_range_rel: candidates farther than this many camera heights are left out (the far road
        is triangulated from little parallax).
    max_lateral_rel: ... and farther sideways than this many camera heights (the lane and its
        neighbour: verges, kerbs and embankments lie beyond; a car's camera sits at about half
        the lane width above the road).
    min_inliers / min_inlier_ratio: what a found plane needs.
    iterations: RANSAC samples of 3 points.
    """

    min_row: float = 0.08
    max_col: float = 0.8
    max_tilt_deg: float = 8.0
    inlier_rel: float = 0.04
    max_range_rel: float = 10.0
    max_lateral_rel: float = 2.0
    min_inliers: int = 25
    min_inlier_ratio: float = 0.3
    iterations: int = 200
    seed: int = 0


@dataclass
class GroundPlane:
    """Result of :func:`fit_ground_plane`.

    found: whether a plane passed the checks (else ``reason`` says why and the rest is NaN).
    normal: ``(3,)`` unit normal (camera coordinates, pointing up: ``normal[1] < 0``).
    height: camera height above the plane (``d``), in the units of the points.
    inliers: number of points on the plane; candidates: number of points considered.
    tilt_deg: angle between the normal and the camera's up axis.
    """

    found: bool
    normal: np.ndarray
    height: float
    inliers: int = 0
    candidates: int = 0
    tilt_deg: float = float("nan")
    reason: str = ""
    method: str = ""  # "points", "flow" (DIS flow's homography) or "photometric" (grey-level alignment)


def _not_found(reason: str, candidates: int = 0) -> GroundPlane:
    return GroundPlane(False, np.full(3, np.nan), float("nan"), 0, candidates, float("nan"), reason)


def _plane_lsq(P: np.ndarray):
    c = P.mean(axis=0)
    _, _, Vt = np.linalg.svd(P - c, full_matrices=False)
    n = Vt[2]
    if n[1] > 0:
        n = -n
    return n, -float(n @ c)


def fit_ground_plane(X: np.ndarray, xy: np.ndarray, K: np.ndarray, image_size,
                     options: Optional[GroundOptions] = None) -> GroundPlane:
    """Robust ground plane of points ``X (N,3)`` (camera coordinates) seen at pixels ``xy (N,2)``.

    Candidates: points in front of and below the camera whose pixels lie in the lower middle of
    the image (see :class:`GroundOptions`). A RANSAC over 3-point planes keeps the nearly
    horizontal plane (normal within ``max_tilt_deg`` of the up axis) with the most points within
    ``inlier_rel`` of the camera height; restricting the candidates to the lane ahead (relative
    to a first height guess) keeps verges, kerbs, embankments and most cars out. The plane is
    refitted by least squares on its inliers. Scale-free: every threshold is relative to the
    height itself, so it works in the arbitrary units of a monocular map.

    Returns:
        :class:`GroundPlane` (``found=False`` with a reason when no plane passes).
    """
    opt = options or GroundOptions()
    X = np.asarray(X, dtype=np.float64).reshape(-1, 3)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    K = np.asarray(K, dtype=np.float64)
    H, W = int(image_size[0]), int(image_size[1])
    cx, cy = K[0, 2], K[1, 2]
    ok = np.isfinite(X).all(axis=1) & np.isfinite(xy).all(axis=1)
    ok &= (X[:, 2] > 0) & (X[:, 1] > 0)
    ok &= xy[:, 1] >= cy + opt.min_row * max(H - 1 - cy, 1.0)
    ok &= np.abs(xy[:, 0] - cx) <= opt.max_col * 0.5 * W
    P = X[ok]
    n_cand = len(P)
    if n_cand < opt.min_inliers:
        return _not_found(f"{n_cand} points below the horizon (need {opt.min_inliers})", n_cand)
    # range limit relative to a first height guess: the median 'y' of the candidates is at most
    # the camera height of a level camera (points above the road have smaller y)
    h0 = float(np.percentile(P[:, 1], 75))
    P = P[(np.linalg.norm(P, axis=1) <= opt.max_range_rel * max(h0, 1e-12))
          & (np.abs(P[:, 0]) <= opt.max_lateral_rel * max(h0, 1e-12))]
    if len(P) < opt.min_inliers:
        return _not_found(f"{len(P)} points near enough to the camera (need {opt.min_inliers})", n_cand)
    rng = np.random.default_rng(opt.seed)
    cos_tilt = np.cos(np.radians(opt.max_tilt_deg))
    idx = rng.integers(0, len(P), size=(opt.iterations, 3))
    A, B, C = P[idx[:, 0]], P[idx[:, 1]], P[idx[:, 2]]
    N = np.cross(B - A, C - A)
    nn = np.linalg.norm(N, axis=1)
    good = nn > 1e-12
    N[good] /= nn[good, None]
    N[N[:, 1] > 0] *= -1
    good &= -N[:, 1] >= cos_tilt
    D = -np.einsum("ij,ij->i", N, A)
    good &= D > 0
    if not good.any():
        return _not_found("no nearly horizontal plane below the camera", n_cand)
    N, D = N[good], D[good]
    dist = np.abs(P @ N.T + D[None, :])  # (M,S)
    inl = dist <= opt.inlier_rel * D[None, :]
    counts = inl.sum(axis=0)
    j = int(np.argmax(counts))
    m = inl[:, j]
    n, d = N[j], float(D[j])
    for _ in range(3):  # least-squares refit on the inliers, re-select
        if m.sum() < 3:
            break
        n, d = _plane_lsq(P[m])
        if d <= 0:
            break
        m = np.abs(P @ n + d) <= opt.inlier_rel * d
    n_in = int(m.sum())
    tilt = float(np.degrees(np.arccos(np.clip(-n[1], -1, 1))))
    if d <= 0 or not np.isfinite(d):
        return _not_found("the plane does not lie below the camera", n_cand)
    if tilt > opt.max_tilt_deg:
        return _not_found(f"the best plane is tilted {tilt:.0f} deg from horizontal", n_cand)
    if n_in < opt.min_inliers or n_in < opt.min_inlier_ratio * len(P):
        return _not_found(f"{n_in} of {len(P)} points on the plane", n_cand)
    return GroundPlane(True, n, d, n_in, n_cand, tilt, "", "points")


@dataclass
class FlowGroundOptions:
    """Settings of :func:`fit_ground_from_flow`.

    min_row: the road region starts this fraction of the way from the principal point's row to the bottom.
    max_col: ... and spans this fraction of the half-width around the principal point.
    grid_px: flow sampled every ``grid_px`` pixels there.
    inlier_px: a pixel is on the plane when the plane's homography predicts its flow within this.
    min_inlier_ratio: the share of the region's pixels that must be on the plane (a weakly textured, fast road
        gives DIS flow that no single plane explains: measured 6-42 % on the KITTI snippet, 70-99 % on KITTI 03).
    max_tilt_deg, iterations, seed: as :class:`GroundOptions`.
    """

    min_row: float = 0.3
    max_col: float = 0.5
    grid_px: int = 8
    inlier_px: float = 1.0
    min_inlier_ratio: float = 0.5
    max_tilt_deg: float = 8.0
    iterations: int = 200
    seed: int = 0


def fit_ground_from_flow(flow: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                         options: Optional[FlowGroundOptions] = None) -> GroundPlane:
    """Ground plane of the road region of a dense flow ``(H,W,2)`` from frame 1 to frame 2 whose motion is
    ``X2 = R X1 + t`` (``R (3,3)``, ``t (3,)``): the plane-induced homography ``K (R - t n^T / d) K^-1``.

    For a plane ``n . X + d = 0`` (frame 1's camera) ``m = n / d`` enters the homography linearly, so three
    pixels fix it; a RANSAC over the region's flow keeps the ``m`` that predicts most flows within
    ``inlier_px``, refitted on its inliers. The height ``d = 1 / |m|`` is in the units of ``t`` (a monocular
    pair: its translation length), no triangulated point needed: it works where the road has too little texture
    for tracked points, or recedes from a rear camera, as long as the dense flow there is one plane's.

    Returns:
        :class:`GroundPlane` (``inliers`` / ``candidates``: region pixels on the plane / sampled).
    """
    opt = options or FlowGroundOptions()
    flow = np.asarray(flow, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    H, W = flow.shape[:2]
    if not np.linalg.norm(t) > 1e-12:
        return _not_found("no translation: the plane's distance is unobservable")
    cx, cy = K[0, 2], K[1, 2]
    y0 = cy + opt.min_row * max(H - 1 - cy, 1.0)
    ys, xs = np.mgrid[int(np.ceil(y0)):H - 2:opt.grid_px,
                      int(max(cx - opt.max_col * 0.5 * W, 2)):int(min(cx + opt.max_col * 0.5 * W, W - 2)):opt.grid_px]
    x1 = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    x2 = x1 + flow[ys.ravel(), xs.ravel()]
    ok = np.isfinite(x2).all(axis=1)
    x1, x2 = x1[ok], x2[ok]
    n_cand = len(x1)
    if n_cand < 30:
        return _not_found(f"{n_cand} flow samples in the road region", n_cand)
    Ki = np.linalg.inv(K)
    p1 = np.c_[x1, np.ones(n_cand)] @ Ki.T
    p2 = np.c_[x2, np.ones(n_cand)] @ Ki.T
    # p2 x (R p1 - t (m . p1)) = 0  ->  (p2 x t) (p1 . m) = p2 x R p1: two independent rows per pixel
    a = np.cross(p2, p1 @ R.T)
    b = np.cross(p2, np.broadcast_to(t, p2.shape))
    A = b[:, :, None] * p1[:, None, :]  # (N,3,3)

    def solve(idx):
        m, *_ = np.linalg.lstsq(A[idx].reshape(-1, 3), a[idx].reshape(-1), rcond=None)
        return m

    def err(m):
        Hm = K @ (R - np.outer(t, m)) @ Ki
        q = np.c_[x1, np.ones(n_cand)] @ Hm.T
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.linalg.norm(q[:, :2] / q[:, 2:3] - x2, axis=1)
        return np.where(np.isfinite(e), e, np.inf)

    rng = np.random.default_rng(opt.seed)
    idx = np.stack([rng.choice(n_cand, 3, replace=False) for _ in range(opt.iterations)])  # (S,3)
    As = A[idx].reshape(len(idx), 9, 3)
    bs = a[idx].reshape(len(idx), 9)
    AtA = np.einsum("sij,sik->sjk", As, As) + 1e-12 * np.eye(3)
    ms = np.linalg.solve(AtA, np.einsum("sij,si->sj", As, bs)[..., None])[..., 0]  # (S,3) hypotheses
    below = np.isfinite(ms).all(axis=1) & (ms[:, 1] < 0)  # the plane must lie below the camera (n up: n_y < 0)
    if not below.any():
        return _not_found("no plane below the camera explains the road's flow", n_cand)
    ms = ms[below]
    Hs = np.einsum("ij,sjk,kl->sil", K, R[None] - t[None, :, None] * ms[:, None, :], Ki)  # (S,3,3)
    q = np.einsum("sij,nj->sni", Hs, np.c_[x1, np.ones(n_cand)])
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.linalg.norm(q[..., :2] / q[..., 2:3] - x2[None], axis=2)
    counts = (e <= opt.inlier_px).sum(axis=1)
    j = int(np.argmax(counts))
    best = e[j] <= opt.inlier_px
    if counts[j] < 3:
        return _not_found("no plane below the camera explains the road's flow", n_cand)
    m = solve(np.flatnonzero(best))
    for _ in range(2):
        inl = err(m) <= opt.inlier_px
        if inl.sum() < 3:
            break
        m = solve(np.flatnonzero(inl))
    inl = err(m) <= opt.inlier_px
    d = 1.0 / max(float(np.linalg.norm(m)), 1e-300)
    n = m * d
    if not (np.isfinite(d) and n[1] < 0):
        return _not_found("the plane does not lie below the camera", n_cand)
    tilt = float(np.degrees(np.arccos(np.clip(-n[1], -1, 1))))
    n_in = int(inl.sum())
    if tilt > opt.max_tilt_deg:
        return _not_found(f"the best plane is tilted {tilt:.0f} deg from horizontal", n_cand)
    if n_in < opt.min_inlier_ratio * n_cand:
        return _not_found(f"{n_in} of {n_cand} road pixels on one plane", n_cand)
    return GroundPlane(True, n, d, n_in, n_cand, tilt, "", "flow")


@dataclass
class PhotometricGroundOptions:
    """Settings of :func:`fit_ground_photometric`.

    min_row, max_col: the road region, as :class:`FlowGroundOptions`.
    scales: the pyramid levels aligned, coarse to fine (fractions of the full resolution).
    stride: region pixels sampled every ``stride`` pixels of each level.
    blur_px: Gaussian smoothing of both images (widens the basin of convergence).
    search: ``(low, high, n)``: the initial heights tried, ``n`` log-spaced multiples of the translation length
        between ``low`` and ``high`` (a level road below the camera).
    iterations: Gauss-Newton steps per level.
    max_tilt_deg: the fitted normal within this of the camera's up axis. A vehicle's camera sees the road within
        a degree or two of level; measured on three KITTI drives with the true motion, fits tilted 3-5 deg had locked
        onto kerbs, verges or cars and read 20-30 % high, those under 3 deg within 1.44-1.90 m of 1.65.
    max_rel_std: the height's relative standard deviation from the final Gauss-Newton normal matrix.
    max_cost_ratio: the plane's median absolute residual at most this fraction of that of the rotation alone
        (the plane must explain the road's motion, not only the rotation).
    """

    min_row: float = 0.3
    max_col: float = 0.5
    scales: tuple = (0.25, 0.5)
    stride: int = 2
    blur_px: float = 1.0
    search: tuple = (0.3, 50.0, 24)
    iterations: int = 10
    max_tilt_deg: float = 3.0
    max_rel_std: float = 0.01
    max_cost_ratio: float = 0.8


def _pyramid_level(img: np.ndarray, K: np.ndarray, s: float):
    """``img`` resized by ``s`` and its intrinsics (:func:`~trianflow.geometry.camera.scale_intrinsics`)."""
    import cv2
    import torch

    from trianflow.geometry.camera import scale_intrinsics

    if s == 1.0:
        return img, K.copy()
    out = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    return out, scale_intrinsics(torch.as_tensor(K, dtype=torch.float64), s, s).numpy()


def _remap(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at ``xy (N,2)``; NaN outside."""
    import cv2

    m = np.ascontiguousarray(xy, dtype=np.float32).reshape(-1, 1, 2)
    return cv2.remap(img, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=float("nan")).ravel().astype(np.float64)


def fit_ground_photometric(gray1: np.ndarray, gray2: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                           options: Optional[PhotometricGroundOptions] = None) -> GroundPlane:
    """Ground plane of the road region by direct alignment: the ``m = n / d`` whose plane-induced homography
    ``K (R - t m^T) K^-1`` best maps frame 1's road pixels onto frame 2's grey levels, for a pair of motion
    ``X2 = R X1 + t`` (frame 1's camera, the units of ``t``).

    Where a fast, weakly textured road gives a dense flow that no single plane explains (DIS matches patches;
    :func:`fit_ground_from_flow` finds nothing there), every pixel's grey level still constrains the plane: a
    1-D search over the height of a level road, then Gauss-Newton on the three parameters of ``m`` with Huber
    weights, coarse to fine. ``gray1``, ``gray2``: ``(H,W)`` uint8 (a global gain and offset is removed).

    Returns:
        :class:`GroundPlane` (``inliers`` / ``candidates``: region pixels within 2.5 sigma of the robust residual /
        sampled at the finest level).
    """
    import cv2

    opt = options or PhotometricGroundOptions()
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    K = np.asarray(K, dtype=np.float64)
    tn = float(np.linalg.norm(t))
    if not tn > 1e-12:
        return _not_found("no translation: the plane's distance is unobservable")
    g1 = gray1.astype(np.float32)
    g2 = gray2.astype(np.float32)
    g2 = (g2 - g2.mean()) * (g1.std() / max(float(g2.std()), 1e-6)) + g1.mean()
    if opt.blur_px > 0:
        g1 = cv2.GaussianBlur(g1, (0, 0), opt.blur_px)
        g2 = cv2.GaussianBlur(g2, (0, 0), opt.blur_px)
    m = None
    for s in opt.scales:
        I1, Kl = _pyramid_level(g1, K, s)
        I2, _ = _pyramid_level(g2, K, s)
        gx = cv2.Sobel(I2, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(I2, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        H, W = I1.shape
        cx, cy = Kl[0, 2], Kl[1, 2]
        y0 = cy + opt.min_row * max(H - 1 - cy, 1.0)
        ys, xs = np.mgrid[int(np.ceil(y0)):H - 2:opt.stride,
                          int(max(cx - opt.max_col * 0.5 * W, 2)):int(min(cx + opt.max_col * 0.5 * W, W - 2)):opt.stride]
        if ys.size < 50:
            return _not_found(f"{ys.size} pixels in the road region", ys.size)
        x1 = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        i1 = I1[ys.ravel(), xs.ravel()].astype(np.float64)
        ray = np.c_[x1, np.ones(len(x1))] @ np.linalg.inv(Kl).T
        Rray = ray @ R.T
        Kt = Kl @ t

        def warp(mm):  # the region's pixels in frame 2 and their residuals
            q = (Rray - np.outer(ray @ mm, t)) @ Kl.T
            with np.errstate(divide="ignore", invalid="ignore"):
                x2 = q[:, :2] / q[:, 2:3]
            return _remap(I2, x2) - i1, x2, q

        if m is None:  # a level road at heights search[0] .. search[1] times the translation
            best = None
            for ratio in np.geomspace(opt.search[0], opt.search[1], int(opt.search[2])):
                mm = np.array([0.0, -1.0, 0.0]) / (ratio * tn)
                res = warp(mm)[0]
                ok = np.isfinite(res)
                if ok.mean() < 0.5:
                    continue
                c = float(np.median(np.abs(res[ok])))
                if best is None or c < best[0]:
                    best = (c, mm)
            if best is None:
                return _not_found("the road region leaves the next frame", len(x1))
            m = best[1]
        A = None
        for _ in range(max(1, int(opt.iterations))):
            res, x2, q = warp(m)
            gxs, gys = _remap(gx, x2), _remap(gy, x2)
            ok = np.isfinite(res) & np.isfinite(gxs) & np.isfinite(gys)
            if ok.mean() < 0.3:
                return _not_found("the road region leaves the next frame", len(x1))
            z = q[:, 2]
            # d x2 / d m = (d x2 / d q) (d q / d m), d q / d m = -(K t) ray^T
            dq = -Kt[None, :, None] * ray[:, None, :]  # (N,3,3)
            dxm = dq[:, 0] / z[:, None] - (q[:, 0] / z ** 2)[:, None] * dq[:, 2]
            dym = dq[:, 1] / z[:, None] - (q[:, 1] / z ** 2)[:, None] * dq[:, 2]
            J = (gxs[:, None] * dxm + gys[:, None] * dym)[ok]
            r = res[ok]
            sigma = 1.4826 * float(np.median(np.abs(r))) + 1e-6
            k = 1.345 * sigma
            w = np.minimum(1.0, k / np.maximum(np.abs(r), 1e-12))
            A = (J * w[:, None]).T @ J
            b = (J * w[:, None]).T @ r
            try:
                dm = -np.linalg.solve(A + 1e-9 * np.trace(A) * np.eye(3), b)
            except np.linalg.LinAlgError:
                return _not_found("the road region does not constrain a plane", len(x1))
            m = m + dm
            if np.linalg.norm(dm) < 1e-4 * np.linalg.norm(m):
                break
    d = 1.0 / max(float(np.linalg.norm(m)), 1e-300)
    n = m * d
    n_cand = int(ok.size)
    if not (np.isfinite(d) and n[1] < 0):
        return _not_found("the plane does not lie below the camera", n_cand)
    tilt = float(np.degrees(np.arccos(np.clip(-n[1], -1, 1))))
    if tilt > opt.max_tilt_deg:
        return _not_found(f"the best plane is tilted {tilt:.1f} deg from horizontal", n_cand)
    try:
        cov = np.linalg.inv(A) * sigma ** 2
    except np.linalg.LinAlgError:
        return _not_found("the road region does not constrain a plane", n_cand)
    g = -d ** 2 * n  # d(height) / d m
    rel_std = float(np.sqrt(max(g @ cov @ g, 0.0))) / d
    if rel_std > opt.max_rel_std:
        return _not_found(f"the height is uncertain ({100 * rel_std:.1f} %)", n_cand)
    rot = warp(np.zeros(3))[0]  # the rotation alone (a plane at infinity)
    rot = rot[np.isfinite(rot)]
    ratio = float(np.median(np.abs(r))) / max(float(np.median(np.abs(rot))) if len(rot) else 0.0, 1e-9)
    if ratio > opt.max_cost_ratio:
        return _not_found(f"the plane explains little of the road's motion (residual {ratio:.2f} x the rotation's)",
                          n_cand)
    return GroundPlane(True, n, d, int((np.abs(r) < 2.5 * sigma).sum()), n_cand, tilt, "", "photometric")


def ground_scale_profile(heights: np.ndarray, found: np.ndarray, camera_height: Optional[float] = None,
                         window: int = 7, max_step: float = 0.5) -> np.ndarray:
    """Per-keyframe scale factors that put the camera at a constant height above the ground.

    Args:
        heights: ``(K,)`` camera height above the ground plane at each keyframe, in map units
            (NaN where no plane was found).
        found: ``(K,)`` bool, plane found.
        camera_height: the true height (metres): factors make the map metric. ``None``: the
            median height is kept, so the factors only remove the drift.
        window: robust smoothing (running median of the log factor over this many found
            keyframes, centred).
        max_step: heights further than this (relative, in log) from the local median are
            outliers and are ignored.
    Returns:
        ``(K,)`` factors (multiply the map's lengths around keyframe k by factor k). Keyframes
        without a plane take the factor of the nearest found neighbours (linear in between,
        held before the first and after the last), i.e. they keep the chained scale.
    """
    heights = np.asarray(heights, dtype=np.float64)
    found = np.asarray(found, bool) & np.isfinite(heights) & (heights > 0)
    Kn = len(heights)
    if found.sum() == 0:
        return np.ones(Kn)
    idx = np.flatnonzero(found)
    logh = np.log(heights[idx])
    half = max(window // 2, 1)
    med = np.array([np.median(logh[max(0, i - half): i + half + 1]) for i in range(len(idx))])
    keep = np.abs(logh - med) <= max_step
    if keep.sum() == 0:
        keep[:] = True
    idx, logh = idx[keep], logh[keep]
    smooth = np.array([np.median(logh[max(0, i - half): i + half + 1]) for i in range(len(idx))])
    target = np.log(camera_height) if camera_height is not None else float(np.median(smooth))
    logs = target - smooth
    return np.exp(np.interp(np.arange(Kn), idx, logs))


def rescale_trajectory(poses: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Apply per-frame scale factors to the motion of a trajectory.

    Args:
        poses: ``(N,4,4)`` camera-to-world.
        factors: ``(N,)``: the step from frame ``i-1`` to ``i`` is multiplied by ``factors[i]``
            (``factors[0]`` is unused); rotations are unchanged.
    Returns:
        ``(N,4,4)`` camera-to-world, first pose unchanged.
    """
    poses = np.asarray(poses, dtype=np.float64)
    out = poses.copy()
    if len(poses) < 2:
        return out
    steps = np.diff(poses[:, :3, 3], axis=0) * np.asarray(factors, dtype=np.float64)[1:, None]
    out[1:, :3, 3] = poses[0, :3, 3] + np.cumsum(steps, axis=0)
    return out
