"""The ``trianflow`` training task: TrianFlow's three stages (flow -> depth -> joint).

Stages (``cfg.train.stage``):

``flow``
    Only the FlowNet exists and is trained with the occlusion-aware photometric flow loss
    (:func:`trianflow.losses.flow.flow_loss` over the ``loss.num_scales`` finest levels of the
    flow pyramid that have at least 4x4 pixels, terms ``flow`` and ``flow_smooth``) plus a
    forward-backward consistency term ``flow_consis`` on the visible, consistent pixels, and,
    with ``loss.w_distill > 0``, the warm start ``distill``: the forward-backward consistent
    OpenCV DIS flow of the pair as a teacher for the first ``loss.distill_steps`` steps
    (:func:`trianflow.losses.flow.flow_distill_loss`). The checkpoint of this stage holds only
    the ``flow`` network.
``depth``
    The FlowNet is frozen (eval mode, no gradient; load it with ``train.init_flow``). Per batch,
    on the training device and outside autocast (fp32, fp64 inside the estimators):
    forward/backward flow -> :func:`~trianflow.geometry.sampling.correspondence_scores` ->
    ``loss.num_matches`` correspondences drawn from the best ``loss.match_sample_ratio`` pixels ->
    batched torch RANSAC for the essential matrix (:func:`~trianflow.geometry.ransac.estimate_relative_pose`
    with ``backend="torch"``, ``loss.ransac_iters`` hypotheses per run, 4 runs per pair (the
    one with most inliers is kept), Sampson threshold ``loss.inlier_thresh`` px, poses explaining
    fewer than half of the matches rejected) -> midpoint triangulation of the inliers (rays at least
    ``loss.min_ray_angle_deg`` apart). The DepthNet's disparity at each of ``loss.num_scales``
    scales (upsampled to full resolution) is turned into depth, normalised by its mean (this
    removes the gradient along the global scale that the per-batch scale alignment leaves, which
    otherwise drives the sigmoid disparity into saturation), scale-aligned to the triangulation
    and trained with :func:`~trianflow.losses.triangulation.trianflow_depth_objective`
    (``tri`` = L_d, ``pf`` = L_pf, ``pd`` = L_pd under the epipolar mask M_r, ``smooth``).
``joint``
    Both networks are trained: the FlowNet with the flow loss, the DepthNet with the depth
    objective computed from the current flow. The flow enters L_pf detached (the rigid flow of
    the predicted depth does not pull on the FlowNet): on the synthetic recipe that gradient made
    the flow worse while the depth was still imperfect.

With ``loss.geometry_flow=dis`` the depth and joint stages take the correspondences of the
geometry (pose, triangulation, L_pf's flow and its mask) from OpenCV DIS flow (preset
``loss.distill_preset``) instead of the FlowNet: the DepthNet then learns from good matches while
the FlowNet is still young (the depth stage then runs no FlowNet at all).

Per-sample validity: a sample whose pose estimation fails (too few inliers, degenerate, e.g.
identical images) or whose triangulation leaves fewer than ``MIN_POINTS`` points drops out of
the geometry terms (``tri``, ``pf``, ``pd``); the others still learn, and the loss stays finite.
``n_valid`` (logged) counts the valid samples of the batch.

Logged terms besides the losses: ``n_valid``, ``inlier_ratio``; against ground truth when the
batch has it (synthetic data): ``gt_epe`` (flow end-point error, px), ``gt_abs_rel`` (depth AbsRel
after per-image median scaling), ``gt_rot_err_deg`` (rotation error of the estimated pose).
Tensorboard images (``train.image_every``): ``image``, ``flow`` (colour-coded), ``occlusion``
(visibility mask), ``flow_mask`` (visibility x forward-backward consistency), ``disparity``,
``depth``, ``inliers`` (RANSAC inliers drawn on image 1), ``epipolar_mask`` (M_r) and ``flow_gt``
when present.

Datasets (``cfg.data.dataset``): :func:`trianflow.data.builders.build_trianflow_dataset`
(``synthetic``, ``kitti_odometry``, ``kitti_raw``, ``sequence`` / ``image_folder`` / ``tum`` / ``video``).

This module only composes: flows from :func:`trianflow.models.bidirectional_flow`, the flow loss
terms of :mod:`trianflow.losses.flow`, the two-view geometry of
:func:`trianflow.geometry.two_view.two_view_geometry`, the depth objective of
:mod:`trianflow.losses.triangulation`, the ground-truth metrics of
:mod:`trianflow.evaluation.gt_metrics` and the images of :mod:`trianflow.viz.images`.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from trianflow.config import TrainConfig
from trianflow.data.builders import build_trianflow_dataset
from trianflow.errors import InputError
from trianflow.evaluation.gt_metrics import flow_epe, median_scaled_abs_rel
from trianflow.geometry.flow import occlusion_mask
from trianflow.geometry.pose import rotation_error_deg
from trianflow.geometry.two_view import MIN_POINTS, two_view_geometry
from trianflow.flow_backends import dis_flow_targets
from trianflow.losses.flow import flow_distill_loss, flow_loss_terms, flow_valid_mask, flow_weights
from trianflow.losses.objective import weighted_sum
from trianflow.losses.triangulation import epipolar_distance_map, epipolar_mask, trianflow_depth_objective
from trianflow.models import bidirectional_flow, build_depthnet, build_flownet, disp_to_depth, unwrap_model
from trianflow.training.protocol import StepContext, StepOutput, Task
from trianflow.training.registry import register_task
from trianflow.viz.images import draw_points

log = logging.getLogger(__name__)

__all__ = ["TrianFlowTask", "STAGES", "pair_inputs", "flow_forward", "depth_geometry"]

STAGES = ("flow", "depth", "joint")


# --------------------------------------------------------------------------------------------
# building blocks shared with the stereo_mono task
# --------------------------------------------------------------------------------------------


def pair_inputs(batch: dict):
    """``(img1, img2, in1, in2, K)`` of a batch of frame pairs: the images the losses compare
    (``image``, ``image_next``), the ones the networks see (their ``*_aug`` copies when present) and
    ``K`` in fp32."""
    img1, img2 = batch["image"], batch["image_next"]
    return img1, img2, batch.get("image_aug", img1), batch.get("image_next_aug", img2), batch["K"].float()


def flow_forward(ctx, img1: torch.Tensor, img2: torch.Tensor, train_flow: bool):
    """Forward/backward flow pyramids of ``ctx.models["flow"]`` under the step's autocast, in fp32.

    Without ``train_flow`` the FlowNet runs under ``no_grad`` (frozen in the depth stage).
    """
    grad = torch.enable_grad() if train_flow else torch.no_grad()
    with grad, ctx.autocast():
        fwd, bwd = bidirectional_flow(ctx.models["flow"], img1, img2)
    return [f.float() for f in fwd], [f.float() for f in bwd]


def depth_geometry(L, fwd0: torch.Tensor, bwd0: torch.Tensor, K: torch.Tensor, seed: int):
    """Two-view geometry of the finest flows for the depth losses, and its epipolar distance map.

    Returns ``(geo, epi)``: :class:`~trianflow.geometry.two_view.TwoViewGeometry` and ``(B,1,H,W)`` distances to the epipolar
    lines of F (all zero F for samples without a valid pose).
    """
    b = fwd0.shape[0]
    geo = two_view_geometry(fwd0, bwd0, K, num_matches=L.num_matches, top_ratio=L.match_sample_ratio,
                            threshold=L.inlier_thresh, num_hypotheses=L.ransac_iters,
                            min_angle_deg=L.min_ray_angle_deg, min_points=MIN_POINTS, seed=seed)
    with torch.autocast(device_type=fwd0.device.type, enabled=False):
        Fm = torch.where(geo.valid.view(b, 1, 1), torch.nan_to_num(geo.pose.F.float()),
                         torch.zeros(b, 3, 3, device=fwd0.device))
        epi = epipolar_distance_map(Fm, fwd0.detach())
    return geo, epi


# --------------------------------------------------------------------------------------------
# the task
# --------------------------------------------------------------------------------------------


@register_task("trianflow")
class TrianFlowTask(Task):
    """TrianFlow training (see the module docstring): networks from ``cfg.model.flow`` / ``cfg.model.depth``.

    ``models()`` is ``{"flow": FlowNet}`` in the flow stage and ``{"flow": FlowNet, "depth":
    DepthNet}`` in the depth and joint stages.
    """

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        stage = cfg.train.stage
        if stage not in STAGES:
            raise InputError(f"train.stage={stage!r}: the trianflow task has stages {', '.join(STAGES)}")
        if cfg.loss.geometry_flow not in ("network", "dis"):
            raise InputError(f"loss.geometry_flow={cfg.loss.geometry_flow!r}: use network or dis")
        self.stage = stage
        self._models: dict[str, nn.Module] = {"flow": build_flownet(cfg.model.flow)}
        if stage != "flow":
            self._models["depth"] = build_depthnet(cfg.model.depth)
            if self._models["depth"].stereo:
                raise InputError("model.depth.stereo=true is the stereo task's network; the trianflow task needs "
                                 "a monocular DepthNet (model.depth.stereo=false)")
        if stage == "depth" and not cfg.train.init_flow:
            log.warning("stage 'depth' without train.init_flow: the frozen FlowNet keeps its random weights "
                        "(unless resuming); train the flow stage first and pass train.init_flow=<run>/last.pt")

    def models(self) -> dict[str, nn.Module]:
        """``{"flow": FlowNet}`` (flow stage) or ``{"flow": FlowNet, "depth": DepthNet}``."""
        return self._models

    def set_stage(self, stage: str) -> None:
        """flow: FlowNet trained; depth: FlowNet frozen, DepthNet trained; joint: both trained."""
        if stage not in STAGES:
            raise InputError(f"train.stage={stage!r}: the trianflow task has stages {', '.join(STAGES)}")
        if stage != "flow" and "depth" not in self._models:
            raise InputError(f"stage '{stage}' needs a DepthNet but this task was built for stage '{self.stage}'")
        self.stage = stage
        self._models["flow"].requires_grad_(stage in ("flow", "joint"))
        if "depth" in self._models:
            self._models["depth"].requires_grad_(stage in ("depth", "joint"))

    def build_dataset(self, split: str) -> Dataset:
        """:func:`~trianflow.data.builders.build_trianflow_dataset` of the config (only ``split="train"``)."""
        if split != "train":
            raise InputError(f"the trianflow task has only a 'train' split, not {split!r}")
        return build_trianflow_dataset(self.cfg)

    # ------------------------------------------------------------------ step
    def step(self, batch: dict, ctx: StepContext) -> StepOutput:
        """One TrianFlow step of the current stage; see the module docstring."""
        L = self.cfg.loss
        stage = self.stage
        img1, img2, in1, in2, K = pair_inputs(batch)
        b, _, h, w = img1.shape
        dev = img1.device
        train_flow = stage in ("flow", "joint")

        dis_geometry = stage in ("depth", "joint") and L.geometry_flow == "dis"
        terms: dict[str, torch.Tensor] = {}
        losses = []
        if train_flow or not dis_geometry:
            fwd, bwd = flow_forward(ctx, in1, in2, train_flow)
        if dis_geometry:  # the depth's correspondences from OpenCV DIS instead of the FlowNet
            with torch.no_grad():
                dis_t = dis_flow_targets(img1, img2, preset=L.distill_preset)
            gf, gb = dis_t[0], dis_t[1]
            if not train_flow:
                fwd, bwd = [gf], [gb]
        with torch.autocast(device_type=dev.type, enabled=False):
            flow_mask = flow_valid_mask(fwd[0].detach(), bwd[0].detach(), L.occ_threshold, L.use_fb_mask,
                                        L.fb_abs, L.fb_rel)
            geo_fwd, geo_bwd, geo_mask = fwd[0], bwd[0], flow_mask
            if dis_geometry and train_flow:
                geo_fwd, geo_bwd = gf, gb
                geo_mask = flow_valid_mask(gf, gb, L.occ_threshold, L.use_fb_mask, L.fb_abs, L.fb_rel)
            if train_flow:
                # scales of the pyramid with at least 4x4 pixels (2nd-order smoothness needs 3x3)
                ns = max(1, min(L.num_scales, sum(1 for f in fwd if min(f.shape[-2:]) >= 4)))
                fterms = flow_loss_terms(L, img1, img2, fwd, bwd, flow_mask, ns)
                total_f, _ = weighted_sum(fterms, flow_weights(L), strict=False)
                if L.w_distill > 0 and (L.distill_steps <= 0 or ctx.step < L.distill_steps):
                    dist = self._distill(img1, img2, fwd, bwd, ns, dis_t if dis_geometry else None)
                    total_f = total_f + L.w_distill * dist
                    fterms["distill"] = dist
                losses.append(total_f)
                terms.update({k: v.detach() for k, v in fterms.items()})

        geo = disp_full = depth_full = None
        if stage in ("depth", "joint"):
            geo, epi = depth_geometry(L, geo_fwd, geo_bwd, K, seed=self.cfg.train.seed * 1_000_003 + ctx.step)
            with ctx.autocast():
                disps = ctx.models["depth"](in1)["disp"]
            dnet = unwrap_model(ctx.models["depth"])
            # L_pf trains the depth only, also in the joint stage: the rigid flow of a still imperfect
            # depth pulls the flow away from the true flow (synthetic recipe: EPE 0.60 -> 1.86 px in
            # 60 joint steps with that gradient, 0.60 -> 0.38 px without); the FlowNet keeps its
            # own photometric flow loss
            flow_for_loss = geo_fwd.detach()
            with torch.autocast(device_type=dev.type, enabled=False):
                weights = {"tri": L.w_tri, "pf": L.w_pf, "pd": L.w_pd, "smooth": L.w_smooth}
                nd = max(1, min(L.num_scales, len(disps)))
                dterms: dict[str, torch.Tensor] = {}
                total_d = None
                for s in range(nd):
                    disp = disps[s].float()
                    if disp.shape[-2:] != (h, w):
                        disp = F.interpolate(disp, size=(h, w), mode="bilinear", align_corners=False)
                    sdisp, depth = disp_to_depth(disp, dnet.min_depth, dnet.max_depth)
                    if s == 0:
                        disp_full, depth_full = sdisp, depth
                    # the objective re-aligns the depth scale to the triangulation without a gradient
                    # through the scale; normalising by the mean depth (with its gradient) removes the
                    # remaining gradient along the global scale, which otherwise drifts the disparity
                    # into sigmoid saturation
                    depth = depth / depth.mean(dim=(1, 2, 3), keepdim=True)
                    r = trianflow_depth_objective(img1, img2, depth, flow_for_loss, K, geo.T, geo.corr.x1,
                                                  geo.tri.depth1, geo.tri.valid, sample_valid=geo.valid,
                                                  epi_dist=epi, flow_mask=geo_mask, disp1=sdisp, weights=weights,
                                                  alpha=L.ssim_weight, epi_threshold=L.inlier_thresh,
                                                  min_points=MIN_POINTS, tri_loss=L.tri_loss)
                    total_d = r.total / nd if total_d is None else total_d + r.total / nd
                    for k in ("tri", "pf", "pd", "smooth"):
                        dterms[k] = r.terms[k].detach() / nd + dterms.get(k, 0.0)
                losses.append(total_d)
                terms.update(dterms)
                terms["n_valid"] = geo.valid.sum().float()
                nv = geo.corr.valid.sum(1).clamp(min=1).float()
                terms["inlier_ratio"] = (geo.pose.inliers.sum(1).float() / nv).mean()

        loss = losses[0] if len(losses) == 1 else losses[0] + losses[1]
        terms.update(self._gt_metrics(batch, fwd[0], depth_full, geo))
        images = None
        if ctx.want_images:
            images = self._images(img1, fwd[0], bwd[0], flow_mask, disp_full, depth_full, geo, batch,
                                  None if geo is None else epi)
        return StepOutput(loss=loss, terms=terms, images=images, num_images=b)

    def _distill(self, img1, img2, fwd, bwd, num_scales, targets=None):
        """DIS-flow distillation of both directions (``loss.w_distill``; the teacher sees the
        un-augmented images, the flips of the augmentation act on both images alike)."""
        L = self.cfg.loss
        tf, tb, mf, mb = targets if targets is not None else dis_flow_targets(img1, img2, preset=L.distill_preset)
        return 0.5 * (flow_distill_loss(fwd, tf, mf, num_scales) + flow_distill_loss(bwd, tb, mb, num_scales))

    # ------------------------------------------------------------------ logging helpers
    @staticmethod
    def _gt_metrics(batch, flow, depth, geo) -> dict:
        out = {}
        with torch.no_grad():
            if "flow_gt" in batch:
                out["gt_epe"] = flow_epe(flow, batch["flow_gt"], batch.get("flow_valid")).mean()
            if depth is not None and "depth_gt" in batch:
                ar = median_scaled_abs_rel(depth, batch["depth_gt"])
                out["gt_abs_rel"] = torch.nan_to_num(ar).mean()
            if geo is not None and "pose_gt" in batch and bool(geo.valid.any()):
                err = rotation_error_deg(geo.pose.R.float(), batch["pose_gt"][:, :3, :3].float())
                out["gt_rot_err_deg"] = err[geo.valid].mean()
        return out

    @staticmethod
    def _images(img1, fwd, bwd, flow_mask, disp, depth, geo, batch, epi) -> dict:
        imgs = {"image": img1[:1], "flow": fwd[:1].detach(), "occlusion": occlusion_mask(bwd[:1].detach(), 0.5),
                "flow_mask": flow_mask[:1]}
        if "flow_gt" in batch:
            imgs["flow_gt"] = batch["flow_gt"][:1]
        if disp is not None:
            imgs["disparity"] = disp[:1].detach()
            imgs["depth"] = depth[:1].detach()
        if geo is not None:
            imgs["inliers"] = draw_points(img1[0], geo.corr.x1[0], valid=geo.pose.inliers[0])
            if epi is not None:
                imgs["epipolar_mask"] = epipolar_mask(epi[:1])
        return imgs
