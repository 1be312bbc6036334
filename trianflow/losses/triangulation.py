"""TrianFlow depth-stage losses: triangulation depth loss, reprojection losses, epipolar mask.

Notation (TrianFlow, CVPR 2020): ``D_t`` predicted depth of image 1 after scale alignment to the
triangulated points, ``D_tri`` triangulated depth of sparse correspondences, ``D_epi`` the
distance of the flow correspondence to its epipolar line under the estimated F.

* ``L_d  = mean(((D_tri - D_t) / D_tri)^2)`` over the valid triangulated points;
* ``L_pf = mean_{M}(|flow - rigid_flow(D_t, T)|)`` flow vs depth-and-pose induced flow;
* ``L_pd = mean_{M}(pe(I1, warp(I2; D_t, T)))`` photometric error of depth+pose warping;
* ``M = M_r * M_valid`` with the epipolar (rigidity) mask ``M_r = [D_epi < 0.5] / (1 + D_epi)``;
* ``L_s`` edge-aware smoothness of the mean-normalised disparity.

Per-sample validity: a sample whose pose or triangulation failed (``sample_valid`` False, or
fewer than ``min_points`` valid points) contributes 0 to the geometry terms ``L_d, L_pf, L_pd``
and the batch mean is over the valid samples only. With no valid sample the geometry terms are
0, finite and still attached to the graph. Garbage (NaN) in the pose / points of an invalid
sample cannot leak into the loss or its gradient.
"""

from __future__ import annotations

from typing import Mapping

import torch

from trianflow.errors import InputError
from trianflow.geometry.camera import pixel_grid
from trianflow.geometry.flow import sample_at
from trianflow.geometry.warp import in_image, project_depth_pose, warp_by_depth_pose
from trianflow.losses.objective import LossResult, valid_mean
from trianflow.losses.photometric import masked_mean, photometric_error
from trianflow.losses.smoothness import edge_aware_smoothness

#: default weights of :func:`trianflow_depth_objective`, keyed like the config's ``w_tri``,
#: ``w_pf``, ``w_pd``, ``w_smooth`` (TrianFlow's KITTI config: w_pt_depth = 1, w_pj_depth = 0.1,
#: w_depth_smooth = 0.001). The issue's ``L = w1 L_f + w2 L_d + w3 L_p + w4 L_s`` with
#: ``L_p = L_pf + L_pd`` is ``pf = pd = w3``; the flow term ``w1 L_f`` is added by the trainer.
DEFAULT_DEPTH_WEIGHTS = {"tri": 1.0, "pf": 1.0, "pd": 0.1, "smooth": 0.001}
_FLOW_STAGE_TERMS = {"flow", "flow_smooth", "flow_consis"}


def epipolar_distance_map(F: torch.Tensor, flow: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Distance in image 2 of each flow correspondence to its epipolar line.

    For pixel ``x1`` of image 1 and ``x2 = x1 + flow(x1)``: ``|x2^T F x1| / ||(F x1)_{0:2}||``.

    Args:
        F: ``(B,3,3)`` fundamental matrix in pixel coordinates, ``x2^T F x1 = 0``.
        flow: ``(B,2,H,W)`` flow 1 -> 2.
    Returns:
        ``(B,1,H,W)`` distance in pixels.
    """
    b, _, h, w = flow.shape
    x1 = pixel_grid(h, w, device=flow.device, dtype=flow.dtype).unsqueeze(0).expand(b, -1, -1, -1)
    x2 = x1 + flow
    ones = torch.ones_like(flow[:, :1])
    x1h = torch.cat([x1, ones], 1).reshape(b, 3, -1)
    x2h = torch.cat([x2, ones], 1).reshape(b, 3, -1)
    lines = F.to(flow.dtype) @ x1h  # (B,3,HW)
    num = (lines * x2h).sum(1).abs()
    den = torch.sqrt(lines[:, 0] ** 2 + lines[:, 1] ** 2 + eps)
    return (num / den).reshape(b, 1, h, w)


def epipolar_mask(dist: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """TrianFlow's rigidity score ``M_r = [dist < threshold] / (1 + dist)`` (no gradient).

    Args:
        dist: ``(B,1,H,W)`` epipolar distance in pixels (NaN counts as far).
    Returns:
        ``(B,1,H,W)`` weights in [0, 1].
    """
    with torch.no_grad():
        d = torch.nan_to_num(dist.detach(), nan=float("inf"))
        return torch.where(d < threshold, 1.0 / (1.0 + d.clamp(min=0)), torch.zeros_like(d))


def sample_depth_at(depth: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample a depth map at sparse pixels (border padding).

    Args:
        depth: ``(B,1,H,W)``; uv: ``(B,N,2)`` pixel x, y.
    Returns:
        ``(B,N)`` depth values.
    """
    return sample_at(depth, uv.unsqueeze(2).to(depth.dtype), padding_mode="border")[:, 0, :, 0]


def _point_validity(depth_at: torch.Tensor, depth_tri: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    ok = valid.to(torch.bool) & torch.isfinite(depth_tri) & (depth_tri > 0)
    return ok & torch.isfinite(depth_at) & (depth_at > 0)


def align_scale(depth_at_pts: torch.Tensor, depth_tri: torch.Tensor, valid: torch.Tensor,
                method: str = "median") -> torch.Tensor:
    """Scale ``s`` per sample with ``s * D_pred ~ D_tri`` (no gradient, as in TrianFlow).

    Args:
        depth_at_pts: ``(B,N)`` predicted depth at the triangulated points.
        depth_tri: ``(B,N)`` triangulated depth.
        valid: ``(B,N)`` bool; points with non-positive / non-finite depth are also ignored.
        method: ``"median"``: median of the ratios ``D_tri / D_pred`` (robust);
            ``"lsq_rel"``: the closed-form minimiser of ``sum(((D_tri - s D_pred) / D_tri)^2)``,
            i.e. of ``L_d`` itself: ``s = sum(r) / sum(r^2)`` with ``r = D_pred / D_tri``.
    Returns:
        ``(B,)`` scale; 1 for a sample without any valid point.
    """
    with torch.no_grad():
        ok = _point_validity(depth_at_pts, depth_tri, valid)
        pred = torch.where(ok, depth_at_pts, torch.ones_like(depth_at_pts))
        tri = torch.where(ok, depth_tri, torch.ones_like(depth_tri))
        if method == "median":
            ratio = torch.where(ok, tri / pred, torch.full_like(tri, float("nan")))
            s = torch.nanmedian(ratio, dim=1).values
        elif method == "lsq_rel":
            r = torch.where(ok, pred / tri, torch.zeros_like(pred))
            s = r.sum(1) / (r * r).sum(1).clamp(min=1e-30)
        else:
            raise InputError(f"align_scale: method must be 'median' or 'lsq_rel', got {method!r}")
        s = torch.where(ok.any(1) & torch.isfinite(s) & (s > 0), s, torch.ones_like(s))
    return s.detach()


TRI_LOSSES = ("rel2", "log_l1")


def triangulation_depth_loss(depth_pred: torch.Tensor, uv: torch.Tensor, depth_tri: torch.Tensor,
                             valid: torch.Tensor, sample_valid: torch.Tensor | None = None, eps: float = 1e-12,
                             kind: str = "rel2"):
    """Triangulation depth loss on sparse points: ``kind="rel2"`` is TrianFlow's
    ``L_d = mean(((D_tri - D_t) / D_tri)^2)``; ``kind="log_l1"`` is ``mean(|log D_t - log D_tri|)``.

    The caller aligns the scale of ``depth_pred`` to the triangulation first (see
    :func:`align_scale`). ``rel2`` is unbounded in ``D_t / D_tri``: one point triangulated far too
    near (or a depth map whose far parts run away) gives a huge loss and gradient, which made the
    depth stage diverge on real KITTI frames (L_d 0.09 -> 100 within 60 steps). ``log_l1`` is
    symmetric in over- and under-estimation, and its gradient on the log-depth is bounded;
    the median scale alignment is its exact minimiser.

    Args:
        depth_pred: ``(B,1,H,W)`` scale-aligned predicted depth ``D_t``.
        uv: ``(B,N,2)`` pixel coordinates of the triangulated points in image 1.
        depth_tri: ``(B,N)`` triangulated depth ``D_tri``.
        valid: ``(B,N)`` bool per point.
        sample_valid: ``(B,)`` bool per sample (None = all valid).
        kind: ``"rel2"`` or ``"log_l1"``.
    Returns:
        ``(loss, per_sample)``: 0-dim mean over valid samples and ``(B,)`` (0 for invalid samples
        and for samples without a valid point).
    """
    if kind not in TRI_LOSSES:
        raise InputError(f"triangulation loss {kind!r}: use one of {', '.join(TRI_LOSSES)}")
    b, n = depth_tri.shape
    if uv.shape != (b, n, 2) or valid.shape != (b, n):
        raise InputError(
            f"triangulation_depth_loss: uv {tuple(uv.shape)}, depth_tri {tuple(depth_tri.shape)}, valid "
            f"{tuple(valid.shape)} must be (B,N,2), (B,N), (B,N)"
        )
    ok = valid.to(torch.bool) & torch.isfinite(depth_tri) & (depth_tri > 0) & torch.isfinite(uv).all(-1)
    uv_s = torch.where(ok.unsqueeze(-1), uv, torch.zeros_like(uv))
    tri = torch.where(ok, depth_tri, torch.ones_like(depth_tri)).to(depth_pred.dtype)
    d = sample_depth_at(depth_pred, uv_s)
    if kind == "rel2":
        err = ((tri - d) / (tri + eps)) ** 2
    else:
        err = (torch.log(d.clamp(min=eps)) - torch.log(tri.clamp(min=eps))).abs()
    okf = ok.to(err.dtype)
    per_sample = torch.where(ok, err, torch.zeros_like(err)).sum(1) / okf.sum(1).clamp(min=1)
    sv = ok.any(1)
    if sample_valid is not None:
        sv = sv & sample_valid.to(torch.bool).to(sv.device)
    per_sample = torch.where(sv, per_sample, torch.zeros_like(per_sample))
    return valid_mean(per_sample, sv), per_sample


def flow_reprojection_loss(flow: torch.Tensor, rigid_flow: torch.Tensor, mask: torch.Tensor | None = None,
                           sample_valid: torch.Tensor | None = None):
    """``L_pf``: L1 distance between the optical flow and the depth+pose induced (rigid) flow.

    Args:
        flow: ``(B,2,H,W)`` optical flow 1 -> 2.
        rigid_flow: ``(B,2,H,W)`` flow induced by depth and pose (see
            :func:`trianflow.geometry.warp.depth_pose_flow`).
        mask: ``(B,1,H,W)`` weights (e.g. ``M_r`` times occlusion / in-image validity), None = all.
        sample_valid: ``(B,)`` bool, None = all valid.
    Returns:
        ``(loss, per_sample)``: mean over valid samples and ``(B,)`` channel-mean L1 under the mask.
    """
    per_sample = masked_mean((flow - rigid_flow).abs(), mask)
    if sample_valid is not None:
        per_sample = torch.where(sample_valid.to(torch.bool), per_sample, torch.zeros_like(per_sample))
    return valid_mean(per_sample, sample_valid), per_sample


def depth_photometric_loss(img1: torch.Tensor, img2_warped: torch.Tensor, valid: torch.Tensor | None = None,
                           mask: torch.Tensor | None = None, sample_valid: torch.Tensor | None = None,
                           alpha: float = 0.85):
    """``L_pd``: photometric error between image 1 and image 2 warped by depth + pose.

    Args:
        img1: ``(B,3,H,W)``; img2_warped: ``(B,3,H,W)`` from
            :func:`trianflow.geometry.warp.warp_by_depth_pose`.
        valid: ``(B,1,H,W)`` in-image validity of the warp; mask: ``(B,1,H,W)`` extra weights
            (``M_r``); either may be None.
        sample_valid: ``(B,)`` bool, None = all valid.
        alpha: SSIM weight.
    Both images are zeroed outside the support of ``valid * mask`` before the SSIM, and the
    error is averaged with the weights ``valid * mask``.

    Returns:
        ``(loss, per_sample)``.
    """
    m = None
    for x in (valid, mask):
        if x is not None:
            m = x.to(img1.dtype) if m is None else m * x.to(img1.dtype)
    if m is None:
        pe = photometric_error(img1, img2_warped, alpha)
    else:
        # zero both images outside the support so that invalid warps (zeros outside image 2)
        # cannot spill into the 3x3 SSIM windows of their valid neighbours
        support = (m > 0).to(img1.dtype)
        pe = photometric_error(img1 * support, img2_warped * support, alpha)
    per_sample = masked_mean(pe, m)
    if sample_valid is not None:
        per_sample = torch.where(sample_valid.to(torch.bool), per_sample, torch.zeros_like(per_sample))
    return valid_mean(per_sample, sample_valid), per_sample


def trianflow_depth_objective(img1: torch.Tensor, img2: torch.Tensor, depth1: torch.Tensor, flow: torch.Tensor,
                              K: torch.Tensor, T_1to2: torch.Tensor, uv_tri: torch.Tensor, depth_tri: torch.Tensor,
                              tri_valid: torch.Tensor, sample_valid: torch.Tensor | None = None,
                              F: torch.Tensor | None = None, epi_dist: torch.Tensor | None = None,
                              flow_mask: torch.Tensor | None = None, disp1: torch.Tensor | None = None,
                              weights: Mapping[str, float] | None = None, alpha: float = 0.85,
                              epi_threshold: float = 0.5, min_points: int = 10,
                              align_method: str = "median", tri_loss: str = "rel2") -> LossResult:
    """TrianFlow depth-stage objective ``w_tri L_d + w_pf L_pf + w_pd L_pd + w_smooth L_s``, per-sample validity.

    The predicted depth is first scale-aligned (no gradient through the scale) to the
    triangulation, whose scale is that of ``T_1to2``; the aligned depth then drives ``L_d``, the
    rigid flow of ``L_pf`` and the warping of ``L_pd``. The flow-stage term ``w1 L_f`` comes from
    :func:`trianflow.losses.flow.flow_loss`; add it with
    :func:`trianflow.losses.objective.weighted_sum`.

    Args:
        img1, img2: ``(B,3,H,W)`` images in [0,1].
        depth1: ``(B,1,H,W)`` predicted depth of image 1 (> 0).
        flow: ``(B,2,H,W)`` flow 1 -> 2 (detach it yourself if the flow net is frozen).
        K: ``(B,3,3)``; T_1to2: ``(B,4,4)`` relative pose from the flow (up to scale).
        uv_tri: ``(B,N,2)``, depth_tri: ``(B,N)``, tri_valid: ``(B,N)`` triangulated points in image 1.
        sample_valid: ``(B,)`` bool, False where pose estimation or triangulation failed.
        F: ``(B,3,3)`` fundamental matrix for ``M_r``, or ``epi_dist (B,1,H,W)`` precomputed;
            with neither, ``M_r = 1``.
        flow_mask: ``(B,1,H,W)`` occlusion / consistency weights of the flow, None = all ones.
        disp1: ``(B,1,H,W)`` disparity for ``L_s`` (default ``1 / depth1``).
        weights: any of ``"tri"``, ``"pf"``, ``"pd"``, ``"smooth"`` (missing ones default to
            :data:`DEFAULT_DEPTH_WEIGHTS`); flow-stage names (``"flow"``, ``"flow_smooth"``,
            ``"flow_consis"``) are ignored here, any other name raises ``InputError``.
        alpha: SSIM weight of ``L_pd``; epi_threshold: ``M_r`` threshold in pixels.
        min_points: fewest valid triangulated points for a sample to count as valid.
        align_method: see :func:`align_scale`.
        tri_loss: the form of ``L_d``: ``"rel2"`` (TrianFlow) or ``"log_l1"`` (see
            :func:`triangulation_depth_loss`).
    Returns:
        :class:`~trianflow.losses.objective.LossResult`; terms ``tri`` (L_d), ``pf`` (L_pf),
        ``pd`` (L_pd), ``smooth`` (L_s) and ``n_valid`` (number of valid samples, no grad, not a
        loss); per_sample ``(B,)`` values plus ``"valid"`` (bool) and ``"total"``.
    """
    w = dict(DEFAULT_DEPTH_WEIGHTS)
    if weights is not None:
        unknown = sorted(set(weights) - set(DEFAULT_DEPTH_WEIGHTS) - _FLOW_STAGE_TERMS)
        if unknown:
            raise InputError(
                f"trianflow_depth_objective: unknown weight(s) {unknown}; known: {sorted(DEFAULT_DEPTH_WEIGHTS)}"
            )
        w.update({k: float(v) for k, v in weights.items() if k in DEFAULT_DEPTH_WEIGHTS})
    b, _, h, wd = depth1.shape
    dev, dt = depth1.device, depth1.dtype

    # ---- per-sample validity and sanitised inputs (garbage of invalid samples never leaks)
    depth_at = sample_depth_at(depth1.detach(), torch.nan_to_num(uv_tri.detach()))
    pts_ok = _point_validity(depth_at, depth_tri, tri_valid) & torch.isfinite(uv_tri).all(-1)
    sv = pts_ok.sum(1) >= max(int(min_points), 1)
    if sample_valid is not None:
        sv = sv & sample_valid.to(torch.bool).to(dev)
    sv = sv & torch.isfinite(T_1to2.reshape(b, -1)).all(1)
    eye = torch.eye(4, dtype=dt, device=dev).expand(b, 4, 4)
    T = torch.where(sv.view(b, 1, 1), T_1to2.to(dt), eye)
    pts_ok = pts_ok & sv.unsqueeze(1)

    # ---- scale alignment (no gradient through the scale)
    scale = align_scale(depth_at, depth_tri, pts_ok, method=align_method)
    depth_t = depth1 * scale.view(b, 1, 1, 1)

    # ---- L_d
    _, l_d = triangulation_depth_loss(depth_t, uv_tri, depth_tri, pts_ok, sv, kind=tri_loss)

    # ---- masks
    if epi_dist is None and F is not None:
        Fs = torch.where(sv.view(b, 1, 1), torch.nan_to_num(F.to(dt)), torch.zeros(b, 3, 3, dtype=dt, device=dev))
        epi_dist = epipolar_distance_map(Fs, flow.detach())
    if epi_dist is not None:
        m_r = epipolar_mask(epi_dist, epi_threshold)
    else:
        m_r = torch.ones(b, 1, h, wd, dtype=dt, device=dev)
    mask = m_r if flow_mask is None else m_r * flow_mask.detach().to(dt)

    # ---- L_pf: flow vs rigid flow of the aligned depth
    uv2, z2 = project_depth_pose(depth_t, T, K)
    grid = pixel_grid(h, wd, device=dev, dtype=uv2.dtype).unsqueeze(0)
    in_img = (in_image(uv2, h, wd) & (z2 > 1e-6)).to(dt).detach()
    _, l_pf = flow_reprojection_loss(flow, uv2 - grid, mask * in_img, sv)

    # ---- L_pd: photometric error of depth+pose warping
    warped, valid = warp_by_depth_pose(img2, depth_t, T, K)
    _, l_pd = depth_photometric_loss(img1, warped, valid.detach(), mask, sv, alpha)

    # ---- L_s: all samples (no geometry involved)
    disp = disp1 if disp1 is not None else 1.0 / depth1.clamp(min=1e-6)
    l_s = edge_aware_smoothness(disp, img1, order=1, normalize=True)

    total_ps = w["tri"] * l_d + w["pf"] * l_pf + w["pd"] * l_pd + w["smooth"] * l_s
    terms = {
        "tri": valid_mean(l_d, sv),
        "pf": valid_mean(l_pf, sv),
        "pd": valid_mean(l_pd, sv),
        "smooth": l_s.mean(),
    }
    total = sum(w[k] * terms[k] for k in ("tri", "pf", "pd", "smooth"))
    terms["n_valid"] = sv.sum().to(dt)
    per_sample = {"tri": l_d, "pf": l_pf, "pd": l_pd, "smooth": l_s, "valid": sv, "total": total_ps}
    return LossResult(total=total, terms=terms, per_sample=per_sample)
