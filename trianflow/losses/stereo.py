"""Stereo losses: Monodepth (Godard et al., CVPR 2017) and M3Depth's ICP 3D consistency.

Monodepth: from the LEFT image the DepthNet predicts left and right disparities at several
scales, as a fraction of the image width (sigmoid x 0.3). At each scale s, with disparities in
pixels ``d = disp * W_s``:

* appearance: ``alpha (1 - SSIM)/2 + (1 - alpha) L1`` of ``left`` vs ``right(x - d_L)`` and of
  ``right`` vs ``left(x + d_R)`` (bilinear backward warping, border padding);
* smoothness: edge-aware 1st-order smoothness of both disparities, weight ``w_smooth / 2^s``;
* left-right consistency: ``|d_L - d_R(x - d_L)| + |d_R - d_L(x + d_R)|`` (in width fractions),
  weight ``w_lr``.

M3Depth-style 3D consistency: both depth maps are back-projected, ~1000 points are sampled from
each, the left cloud is aligned to the right one by a batched point-to-point ICP started from
the known stereo extrinsics, and the residual RMSE is a loss (weight 1e-3 by default, see
:data:`DEFAULT_STEREO_WEIGHTS`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from trianflow.errors import InputError
from trianflow.geometry.camera import backproject_depth
from trianflow.geometry.pose import transform_points
from trianflow.geometry.warp import disparity_warp
from trianflow.losses.flow import resize_image
from trianflow.losses.objective import LossResult, valid_mean
from trianflow.losses.photometric import photometric_error
from trianflow.losses.smoothness import edge_aware_smoothness

#: default weights of the stereo recipe (Monodepth: appearance 1, smoothness 0.1, LR 1; M3Depth
#: ICP residual 1e-3), keyed by the term names of :func:`monodepth_loss` and
#: :func:`m3depth_consistency_loss`, for :func:`trianflow.losses.objective.weighted_sum`.
DEFAULT_STEREO_WEIGHTS = {"stereo_ap": 1.0, "stereo_smooth": 0.1, "stereo_lr": 1.0, "icp": 1e-3}


def monodepth_loss(left: torch.Tensor, right: torch.Tensor, disp_left_list: Sequence[torch.Tensor],
                   disp_right_list: Sequence[torch.Tensor], alpha: float = 0.85, w_smooth: float = 0.1,
                   w_lr: float = 1.0, normalize_smooth: bool = False) -> LossResult:
    """Monodepth training loss over a disparity pyramid.

    Args:
        left, right: ``(B,3,H,W)`` rectified stereo images in [0,1] (right camera at +x).
        disp_left_list, disp_right_list: lists of ``(B,1,H_s,W_s)`` disparities as a fraction of
            the width, finest first; images are area-resized to each scale.
        alpha: SSIM weight of the appearance term.
        w_smooth: smoothness weight (divided by ``2^s`` at scale s).
        w_lr: left-right consistency weight.
        normalize_smooth: smooth the mean-normalised disparity (Monodepth2) instead of the raw
            one (Monodepth, default).
    Returns:
        :class:`~trianflow.losses.objective.LossResult` with terms ``stereo_ap`` (appearance),
        ``stereo_smooth`` (already divided by 2^s, not multiplied by ``w_smooth``), ``stereo_lr``
        and ``total = stereo_ap + w_smooth * stereo_smooth + w_lr * stereo_lr``; per_sample
        ``(B,)``. Term names match the config weights ``w_stereo_ap/_smooth/_lr``.
    """
    if len(disp_left_list) == 0 or len(disp_left_list) != len(disp_right_list):
        raise InputError(
            f"monodepth_loss: need the same non-zero number of left and right disparities, got "
            f"{len(disp_left_list)} and {len(disp_right_list)}"
        )
    if left.shape != right.shape:
        raise InputError(f"monodepth_loss: left {tuple(left.shape)} and right {tuple(right.shape)} differ")
    b = left.shape[0]
    app = left.new_zeros(b)
    smooth = left.new_zeros(b)
    lr = left.new_zeros(b)
    for s, (dl, dr) in enumerate(zip(disp_left_list, disp_right_list)):
        if dl.shape != dr.shape or dl.shape[0] != b or dl.shape[1] != 1:
            raise InputError(
                f"monodepth_loss: scale {s}: disparities {tuple(dl.shape)} and {tuple(dr.shape)} must both be "
                f"(B,1,H_s,W_s) with B = {b}"
            )
        hs, ws = dl.shape[-2:]
        l_s, r_s = resize_image(left, (hs, ws)), resize_image(right, (hs, ws))
        dl_px, dr_px = dl * ws, dr * ws
        left_est, _ = disparity_warp(r_s, dl_px, "to_left")
        right_est, _ = disparity_warp(l_s, dr_px, "to_right")
        app = app + photometric_error(l_s, left_est, alpha).mean(dim=(1, 2, 3)) \
            + photometric_error(r_s, right_est, alpha).mean(dim=(1, 2, 3))
        r_to_l, _ = disparity_warp(dr, dl_px, "to_left")
        l_to_r, _ = disparity_warp(dl, dr_px, "to_right")
        lr = lr + (dl - r_to_l).abs().mean(dim=(1, 2, 3)) + (dr - l_to_r).abs().mean(dim=(1, 2, 3))
        smooth = smooth + (
            edge_aware_smoothness(dl, l_s, normalize=normalize_smooth)
            + edge_aware_smoothness(dr, r_s, normalize=normalize_smooth)
        ) / (2**s)
    total_ps = app + w_smooth * smooth + w_lr * lr
    return LossResult(
        total=total_ps.mean(),
        terms={"stereo_ap": app.mean(), "stereo_smooth": smooth.mean(), "stereo_lr": lr.mean()},
        per_sample={"stereo_ap": app, "stereo_smooth": smooth, "stereo_lr": lr, "total": total_ps},
    )


def disp_to_depth_stereo(disp_px: torch.Tensor, focal, baseline, eps: float = 1e-6) -> torch.Tensor:
    """Metric depth from stereo disparity: ``depth = f * B / disparity``.

    Args:
        disp_px: ``(B,1,H,W)`` disparity in pixels (at the resolution ``focal`` refers to).
        focal: focal length in pixels, float or ``(B,)``.
        baseline: baseline in metres, float or ``(B,)``.
        eps: disparities below ``eps`` are clamped (depth ``f B / eps``).
    Returns:
        ``(B,1,H,W)`` depth in metres.
    """
    f = torch.as_tensor(focal, dtype=disp_px.dtype, device=disp_px.device)
    bl = torch.as_tensor(baseline, dtype=disp_px.dtype, device=disp_px.device)
    if f.dim() == 1:
        f = f.view(-1, 1, 1, 1)
    if bl.dim() == 1:
        bl = bl.view(-1, 1, 1, 1)
    return f * bl / disp_px.clamp(min=eps)


def flip_postprocess(disp: torch.Tensor, disp_flipped: torch.Tensor, ramp: float = 0.05) -> torch.Tensor:
    """Monodepth test-time post-processing with a horizontally flipped input.

    ``disp`` is the prediction for the image, ``disp_flipped`` the prediction for the flipped
    image (still in flipped coordinates; it is flipped back here). The two are averaged, except
    in the outer ``ramp`` (5 %) of the width, where a linear ramp hands over to the prediction
    that does not suffer from the stereo disocclusion at that border: near the left border the
    flipped-back prediction is used, near the right border the plain one.

    Args:
        disp, disp_flipped: ``(B,1,H,W)`` disparities.
        ramp: fraction of the width covered by each edge ramp.
    Returns:
        ``(B,1,H,W)`` post-processed disparity.
    """
    if disp.shape != disp_flipped.shape:
        raise InputError(f"flip_postprocess: shapes differ: {tuple(disp.shape)} vs {tuple(disp_flipped.shape)}")
    w = disp.shape[-1]
    back = torch.flip(disp_flipped, dims=[-1])
    x = torch.linspace(0, 1, w, dtype=disp.dtype, device=disp.device).view(1, 1, 1, w)
    l_mask = 1.0 - ((x - ramp) / ramp).clamp(0, 1)  # 1 at the left border, 0 beyond 2*ramp
    r_mask = torch.flip(l_mask, dims=[-1])
    mean = 0.5 * (disp + back)
    return r_mask * disp + l_mask * back + (1.0 - l_mask - r_mask) * mean


def _kabsch(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor):
    """Weighted rigid fit ``dst ~ R src + t`` per batch element (float64 inside).

    Returns ``(T (B,4,4), ok (B,))``; ``ok`` is False with fewer than 3 weighted points or a
    non-finite result.
    """
    src, dst, w = src.double(), dst.double(), w.double()
    wsum = w.sum(1, keepdim=True)  # (B,1)
    wn = w / wsum.clamp(min=1e-30)
    mu_s = (wn.unsqueeze(-1) * src).sum(1)
    mu_d = (wn.unsqueeze(-1) * dst).sum(1)
    xs, xd = src - mu_s.unsqueeze(1), dst - mu_d.unsqueeze(1)
    cov = (wn.unsqueeze(-1) * xd).transpose(1, 2) @ xs  # (B,3,3) sum w xd xs^T
    cov = torch.nan_to_num(cov)
    U, _, Vh = torch.linalg.svd(cov)
    d = torch.sign(torch.det(U @ Vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = U @ D @ Vh
    t = mu_d - (R @ mu_s.unsqueeze(-1)).squeeze(-1)
    T = torch.eye(4, dtype=torch.float64, device=src.device).repeat(src.shape[0], 1, 1)
    T[:, :3, :3] = R
    T[:, :3, 3] = t
    ok = ((w > 0).sum(1) >= 3) & torch.isfinite(T).flatten(1).all(1)
    return T, ok


def _nearest(X: torch.Tensor, dst: torch.Tensor, dst_valid: torch.Tensor):
    d2 = torch.cdist(X, dst) ** 2  # (B,N,M)
    if not bool(dst_valid.all()):
        d2 = torch.where(dst_valid.unsqueeze(1), d2, torch.full_like(d2, float("inf")))
    dist2, idx = d2.min(dim=2)
    return idx, dist2


def icp_point_to_point(src: torch.Tensor, dst: torch.Tensor, T_init: torch.Tensor, iters: int = 30,
                       src_valid: torch.Tensor | None = None, dst_valid: torch.Tensor | None = None,
                       max_corr_dist: float | None = None, tol: float = 1e-10):
    """Batched point-to-point ICP: find ``T`` with ``T src ~ dst`` (nearest-neighbour matching).

    Each iteration matches every source point (transformed by the current ``T``) to its nearest
    valid destination point (``torch.cdist``) and re-fits ``T`` in closed form (weighted
    Kabsch/SVD in float64; a sample whose fit is degenerate keeps its previous ``T``). The
    iterations run without gradient. The returned RMSE is recomputed with gradient from the
    final matches and the final Kabsch fit, which is the exact minimiser for those matches, so
    by the envelope theorem ``d rmse / d points`` is exact without back-propagating through the
    SVD (robust to repeated singular values). ``T`` itself is returned detached.

    Args:
        src: ``(B,N,3)`` source points; dst: ``(B,M,3)`` destination points.
        T_init: ``(B,4,4)`` initial guess of the source -> destination transform.
        iters: maximum number of iterations (stops early once ``T`` changes less than ``tol``).
        src_valid: ``(B,N)`` bool, dst_valid: ``(B,M)`` bool (None = all valid; non-finite points
            are always invalid).
        max_corr_dist: matches farther than this are ignored (None = keep all).
    Returns:
        ``(T, rmse)``: ``(B,4,4)`` (dtype of ``src``, detached) and ``(B,)`` RMSE of the matched
        residuals (0 for a sample without a usable match).
    """
    if src.dim() != 3 or src.shape[-1] != 3 or dst.dim() != 3 or dst.shape[-1] != 3:
        raise InputError(
            f"icp_point_to_point: points must be (B,N,3) and (B,M,3), got {tuple(src.shape)}, {tuple(dst.shape)}"
        )
    b = src.shape[0]
    sv = torch.isfinite(src).all(-1) if src_valid is None else src_valid.to(torch.bool) & torch.isfinite(src).all(-1)
    dv = torch.isfinite(dst).all(-1) if dst_valid is None else dst_valid.to(torch.bool) & torch.isfinite(dst).all(-1)
    src_c = torch.where(sv.unsqueeze(-1), src, torch.zeros_like(src))
    dst_c = torch.where(dv.unsqueeze(-1), dst, torch.zeros_like(dst))
    max_d2 = float("inf") if max_corr_dist is None else float(max_corr_dist) ** 2

    def match(T):
        X = transform_points(T.to(src.dtype), src_c.detach())
        idx, dist2 = _nearest(X, dst_c.detach(), dv)
        w = sv & torch.isfinite(dist2) & (dist2 <= max_d2)
        return idx, w

    T = T_init.detach().to(torch.float64).clone()
    with torch.no_grad():
        for _ in range(iters):
            idx, w = match(T)
            matched = torch.gather(dst_c, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
            T_new, ok = _kabsch(src_c, matched, w.to(src.dtype))
            T_new = torch.where(ok.view(b, 1, 1), T_new, T)
            delta = (T_new - T).abs().flatten(1).max(1).values
            T = T_new
            if bool((delta < tol).all()):
                break
        idx, w = match(T)
        matched = torch.gather(dst_c, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
        T_fit, ok = _kabsch(src_c, matched, w.to(src.dtype))
        T = torch.where(ok.view(b, 1, 1), T_fit, T)
    # differentiable residual at the (detached) optimum
    matched = torch.gather(dst_c, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
    res = transform_points(T.to(src.dtype), src_c) - matched
    wf = w.to(src.dtype)
    sq = torch.where(w, (res * res).sum(-1), torch.zeros_like(wf))
    mse = sq.sum(1) / wf.sum(1).clamp(min=1)
    rmse = torch.sqrt(mse.clamp(min=1e-24))
    rmse = torch.where(w.any(1), rmse, torch.zeros_like(rmse))
    return T.to(src.dtype), rmse


def sample_points(depth: torch.Tensor, K: torch.Tensor, n_points: int, generator: torch.Generator | None = None,
                  max_depth: float | None = None):
    """Back-project a depth map and sample points uniformly among the valid pixels.

    Args:
        depth: ``(B,1,H,W)`` (valid where finite and > 0, and <= ``max_depth`` if given).
        K: ``(B,3,3)``; n_points: points per sample (with replacement when fewer valid pixels).
        generator: optional ``torch.Generator`` for reproducible sampling.
    Returns:
        ``(points, valid)``: ``(B,n,3)`` camera-frame points (differentiable w.r.t. depth) and
        ``(B,n)`` bool (all False for a sample without valid pixel).
    """
    b = depth.shape[0]
    pts = backproject_depth(depth, K).flatten(2).transpose(1, 2)  # (B,HW,3)
    ok = torch.isfinite(depth) & (depth > 0)
    if max_depth is not None:
        ok = ok & (depth <= max_depth)
    ok = ok.flatten(1)
    probs = ok.to(torch.float64) + 1e-12  # samples without any valid pixel still draw (then masked)
    n_valid = ok.sum(1)
    replace = bool((n_valid < n_points).any())
    idx = torch.multinomial(probs, n_points, replacement=replace, generator=generator)
    pts = torch.gather(pts, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
    valid = torch.gather(ok, 1, idx)
    return pts, valid


def m3depth_consistency_loss(depth_left: torch.Tensor, depth_right: torch.Tensor, K: torch.Tensor, baseline,
                             n_points: int = 1000, iters: int = 20, max_corr_dist: float | None = None,
                             max_depth: float | None = None, generator: torch.Generator | None = None) -> LossResult:
    """M3Depth 3D consistency: ICP residual between the left and right back-projected clouds.

    Both depth maps are back-projected with ``K`` (rectified pair, same intrinsics), ``n_points``
    points are sampled from each, and the left cloud is aligned to the right one by
    :func:`icp_point_to_point` started at the stereo extrinsics ``T_left_to_right`` =
    translation ``(-baseline, 0, 0)`` (right camera at +x). The loss is the residual RMSE in
    metres, differentiable with respect to both depth maps. Note that two independently sampled
    clouds of the same surface keep a residual of the order of the sample spacing.

    Args:
        depth_left, depth_right: ``(B,1,H,W)`` metric depth of the left and right images.
        K: ``(B,3,3)``; baseline: float or ``(B,)`` metres.
        n_points: points sampled per cloud; iters, max_corr_dist: ICP settings.
        max_depth: ignore pixels deeper than this (far points dominate the RMSE otherwise).
        generator: optional ``torch.Generator`` for the point sampling.
    Returns:
        :class:`~trianflow.losses.objective.LossResult` with term ``icp`` (mean RMSE over valid
        samples); per_sample ``icp``, ``valid`` and ``T`` (``(B,4,4)`` ICP result, detached).
    """
    if depth_left.shape != depth_right.shape:
        raise InputError(
            f"m3depth_consistency_loss: left depth {tuple(depth_left.shape)} and right depth "
            f"{tuple(depth_right.shape)} differ"
        )
    b = depth_left.shape[0]
    pl, vl = sample_points(depth_left, K, n_points, generator, max_depth)
    pr, vr = sample_points(depth_right, K, n_points, generator, max_depth)
    bl = torch.as_tensor(baseline, dtype=depth_left.dtype, device=depth_left.device).reshape(-1).expand(b)
    T0 = torch.eye(4, dtype=depth_left.dtype, device=depth_left.device).repeat(b, 1, 1)
    T0[:, 0, 3] = -bl
    T, rmse = icp_point_to_point(pl, pr, T0, iters=iters, src_valid=vl, dst_valid=vr, max_corr_dist=max_corr_dist)
    valid = (vl.sum(1) >= 3) & (vr.sum(1) >= 3)
    rmse = torch.where(valid, rmse, torch.zeros_like(rmse))
    loss = valid_mean(rmse, valid)
    return LossResult(total=loss, terms={"icp": loss}, per_sample={"icp": rmse, "valid": valid, "T": T,
                                                                   "total": rmse})
