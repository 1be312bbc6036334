"""The weighted objective of the ``stereo`` training task (Monodepth / M3Depth / MiDaS terms).

:func:`stereo_objective` combines, with the weights of the ``loss`` config section (0 disables a
term): Monodepth appearance / smoothness / left-right consistency
(:func:`~trianflow.losses.stereo.monodepth_loss`), the M3Depth ICP residual between the
back-projected left and right depths (:func:`~trianflow.losses.stereo.m3depth_consistency_loss`,
:data:`ICP_POINTS` points per cloud, :data:`ICP_ITERS` iterations) and the MiDaS
scale-and-shift-invariant loss against the relative target of :func:`disparity_target`.
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import torch

from trianflow.data.stereo_pairs import check_stereo_batch
from trianflow.errors import InputError
from trianflow.geometry.warp import resize_disparity, stereo_depth
from trianflow.losses.objective import weighted_sum
from trianflow.losses.scale_shift import ScaleShiftInvariantLoss
from trianflow.losses.stereo import m3depth_consistency_loss, monodepth_loss

log = logging.getLogger(__name__)

__all__ = ["ICP_POINTS", "ICP_ITERS", "disparity_target", "stereo_objective"]

#: points sampled per cloud for the M3Depth ICP term
ICP_POINTS = 1000


#: ICP iterations per step
ICP_ITERS = 20


def disparity_target(batch: dict):
    """The relative disparity target of a batch for the scale-and-shift-invariant loss.

    Preference: ``disp_teacher`` (a teacher network's disparity, any positive scale), then
    ``disp_gt`` (pixels), then ``1 / depth_gt``. Pixels that are 0 or non-finite are unknown.

    Args:
        batch: collated sample dict.
    Returns:
        ``(target (B,1,H,W), mask (B,1,H,W) bool, key)`` or ``None`` when the batch has none of
        these keys.
    """
    for key in ("disp_teacher", "disp_gt", "depth_gt"):
        if key in batch:
            t = batch[key].float()
            if t.dim() == 3:
                t = t.unsqueeze(1)
            mask = torch.isfinite(t) & (t > 0)
            if key == "depth_gt":
                t = torch.where(mask, 1.0 / t.clamp(min=1e-6), torch.zeros_like(t))
            return torch.where(mask, t, torch.zeros_like(t)), mask, key
    return None


def stereo_objective(disp_left: Sequence[torch.Tensor], disp_right: Sequence[torch.Tensor], batch: dict, loss_cfg,
                     ssi: Optional[ScaleShiftInvariantLoss] = None):
    """Weighted stereo objective of the ``stereo`` task (see the module docstring).

    Args:
        disp_left, disp_right: lists of ``(B,1,H_s,W_s)`` width fractions (DepthNet stereo output),
            finest first, ``(H_0, W_0)`` = the size of ``batch["image"]``.
        batch: collated stereo batch (``image``, ``image_right``, ``K``, ``baseline`` and, for the
            SSI term, a target of :func:`disparity_target`); checked with :func:`check_stereo_batch`.
        loss_cfg: ``cfg.loss`` (``ssim_weight``, ``w_stereo_ap``, ``w_stereo_smooth``,
            ``w_stereo_lr``, ``w_icp``, ``w_ssi``, ``w_ssi_grad``, ``max_depth``).
        ssi: the SSI loss module (built from the weights when None).
    Returns:
        ``(total, named, extras)``: 0-dim loss, dict of unweighted terms as floats (plus
        ``"total"``), and ``extras`` with ``disp_px`` (``(B,1,H,W)`` left disparity in pixels),
        ``depth`` (``(B,1,H,W)`` left metric depth) and ``depth_right``.
    Raises:
        InputError for a bad batch, negative weights, or ``w_ssi > 0`` without a target.
    """
    check_stereo_batch(batch)
    lc = loss_cfg
    weights = {"stereo_ap": lc.w_stereo_ap, "stereo_smooth": lc.w_stereo_smooth, "stereo_lr": lc.w_stereo_lr}
    for k, v in {**weights, "icp": lc.w_icp, "ssi": lc.w_ssi, "ssi_grad": lc.w_ssi_grad}.items():
        if not (math.isfinite(v) and v >= 0):
            raise InputError(f"loss.w_{k} must be a finite number >= 0, got {v}")
    left, right = batch["image"].float(), batch["image_right"].float()
    K, baseline = batch["K"].float(), batch["baseline"].float()
    H, W = left.shape[-2:]
    if tuple(disp_left[0].shape[-2:]) != (H, W):
        raise InputError(f"stereo objective: finest disparity is {tuple(disp_left[0].shape[-2:])} but the images "
                         f"are {(H, W)}")
    res = monodepth_loss(left, right, disp_left, disp_right, alpha=lc.ssim_weight, w_smooth=lc.w_stereo_smooth,
                         w_lr=lc.w_stereo_lr)
    terms = dict(res.terms)
    depth = stereo_depth(disp_left[0], K, baseline, W)
    depth_right = stereo_depth(disp_right[0], K, baseline, W)
    if lc.w_icp > 0:
        icp = m3depth_consistency_loss(depth, depth_right, K, baseline, n_points=ICP_POINTS, iters=ICP_ITERS,
                                       max_depth=lc.max_depth)
        terms["icp"] = icp.terms["icp"]
        weights["icp"] = lc.w_icp
    disp_px = disp_left[0] * W
    if lc.w_ssi > 0 or lc.w_ssi_grad > 0:
        tgt = disparity_target(batch)
        if tgt is None:
            raise InputError("loss.w_ssi / loss.w_ssi_grad > 0 need a relative target in the batch (disp_teacher, "
                             "disp_gt or depth_gt) but the dataset gives none; set loss.w_ssi=0 and loss.w_ssi_grad=0")
        target, mask, key = tgt
        if ssi is None:
            ssi = ScaleShiftInvariantLoss(alpha=1.0 if lc.w_ssi_grad > 0 else 0.0)
        pred = resize_disparity(disp_px, target.shape[-2:])
        r = ssi(pred, target, mask)
        n_bad = int((~r.per_sample["valid"]).sum())
        if n_bad:
            log.debug("SSI loss: %d sample(s) without usable %s (empty mask) left out", n_bad, key)
        terms["ssi"], weights["ssi"] = r.terms["ssi"], lc.w_ssi
        terms["ssi_grad"], weights["ssi_grad"] = r.terms["ssi_grad"], lc.w_ssi_grad
    total, named = weighted_sum(terms, weights)
    return total, named, {"disp_px": disp_px, "depth": depth, "depth_right": depth_right}
