"""Stereo training tasks: ``stereo`` (Monodepth / M3Depth) and ``stereo_mono`` (stereo + TrianFlow).

``stereo``
    A :class:`~trianflow.models.DepthNet` in stereo mode sees the LEFT image (its colour-jittered
    ``image_aug`` copy) and predicts left and right disparities as a fraction of the width at
    ``num_scales`` scales. Losses (weights from ``cfg.loss``; a weight of 0 disables a term):

    * ``stereo_ap`` / ``stereo_smooth`` / ``stereo_lr``: Monodepth appearance (SSIM + L1 with
      ``loss.ssim_weight``, both directions), edge-aware smoothness (``/ 2^s`` per scale) and
      left-right consistency (:func:`trianflow.losses.stereo.monodepth_loss`);
    * ``icp`` (``loss.w_icp``): M3Depth 3-D consistency, the ICP residual between the
      back-projected left and right depth maps (:func:`~trianflow.losses.stereo.m3depth_consistency_loss`,
      1000 points per cloud, points deeper than ``loss.max_depth`` ignored);
    * ``ssi`` / ``ssi_grad`` (``loss.w_ssi`` / ``loss.w_ssi_grad``): MiDaS scale-and-shift
      invariant loss against a relative target in the batch: ``disp_teacher`` (a teacher's
      disparity), else ``disp_gt``, else ``1 / depth_gt`` (see :func:`trianflow.losses.stereo_objective.disparity_target`).

    Metric depth is ``depth = fx * baseline / (disp_fraction * W)`` with the batch's ``K`` and
    ``baseline`` (:func:`trianflow.geometry.warp.stereo_depth`).

``stereo_mono``
    Stereo pairs *and* their temporal neighbours (``image``, ``image_right``, ``image_next``,
    ``K``, ``baseline``): the stereo losses above give metric scale; the TrianFlow flow and
    triangulation losses of the ``trianflow`` task (:mod:`trianflow.training.tasks`) add temporal
    supervision, with the stereo DepthNet's left depth as the depth prediction and a FlowNet as
    in the ``trianflow`` task. ``train.stage`` follows the trianflow task (``flow``: FlowNet on
    the flow loss, DepthNet on the stereo losses; ``depth``: FlowNet frozen, DepthNet on stereo +
    triangulation losses; ``joint``: both networks on everything).

Datasets (``data.dataset``; see :func:`trianflow.data.builders.build_stereo_dataset`): ``kitti_raw``,
``kitti_odometry``, ``synthetic`` / ``synthetic_stereo`` and ``sequence`` with their right
images (``data.stereo`` is forced on), ``kitti_stereo`` (KITTI stereo 2012/2015),
``stereo_folder`` (a folder of pairs with a ``calib.txt``) and ``middlebury`` (the scikit-image
Middlebury "motorcycle" pair repeated). Random horizontal flips swap left and right
(:mod:`trianflow.data.transforms`), so the right camera stays at +x.

Bad input (a clear :class:`~trianflow.errors.InputError`, see :func:`trianflow.data.stereo_pairs.check_stereo_batch`): a
batch without ``image_right``, left and right images of different sizes, a missing, zero,
negative or non-finite ``baseline``, a missing ``K``. Ground truth of another resolution than
the prediction: the *prediction* is resized to the ground truth (bilinear, disparity values
multiplied by ``W_gt / W_pred``), never the ground truth (:func:`trianflow.geometry.warp.resize_disparity`). An empty GT
mask: the sample is left out of the SSI term (0, no gradient) and logged; evaluation
(:func:`trianflow.evaluation.disparity.disparity_errors`) raises :class:`~trianflow.evaluation.depth_metrics.EmptyMaskError`.

This module only composes the tasks; the loss is :func:`trianflow.losses.stereo_objective.stereo_objective`
and the TrianFlow blocks are shared with :mod:`trianflow.training.tasks`.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from trianflow.config import TrainConfig
from trianflow.data.builders import build_stereo_dataset
from trianflow.data.stereo_pairs import check_stereo_batch
from trianflow.errors import InputError
from trianflow.evaluation.gt_metrics import metric_abs_rel
from trianflow.geometry.two_view import MIN_POINTS
from trianflow.geometry.warp import stereo_depth
from trianflow.losses.flow import flow_loss_terms, flow_valid_mask, flow_weights
from trianflow.losses.objective import weighted_sum
from trianflow.losses.scale_shift import ScaleShiftInvariantLoss
from trianflow.losses.stereo_objective import stereo_objective
from trianflow.losses.triangulation import trianflow_depth_objective
from trianflow.models import build_depthnet, build_flownet
from trianflow.training.protocol import StepContext, StepOutput, Task
from trianflow.training.registry import register_task
from trianflow.training.tasks import STAGES, depth_geometry, flow_forward, pair_inputs
from trianflow.viz.images import draw_points

log = logging.getLogger(__name__)

__all__ = ["StereoTask", "StereoMonoTask", "build_stereo_depthnet"]

def build_stereo_depthnet(cfg: TrainConfig):
    """A stereo :class:`~trianflow.models.DepthNet` from ``cfg.model.depth`` (``stereo`` forced on;
    ``num_scales`` defaults to ``cfg.loss.num_scales``). InputError if ``model.depth.stereo`` is false."""
    args = dict(cfg.model.depth)
    if args.get("stereo", True) is False:
        raise InputError("the stereo tasks need a stereo DepthNet: remove model.depth.stereo=false")
    args["stereo"] = True
    args.setdefault("num_scales", cfg.loss.num_scales)
    return build_depthnet(args)


@register_task("stereo")
class StereoTask(Task):
    """``stereo``: Monodepth / M3Depth training of a stereo DepthNet (see the module docstring).

    Models: ``{"depth": DepthNet(stereo=True)}``. ``train.stage`` is ignored (one stage).
    """

    frames = 1

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.depth_net = build_stereo_depthnet(cfg)
        self._ssi = ScaleShiftInvariantLoss(alpha=1.0 if cfg.loss.w_ssi_grad > 0 else 0.0)

    def models(self) -> dict:
        """``{"depth": DepthNet}``."""
        return {"depth": self.depth_net}

    def build_dataset(self, split: str) -> Dataset:
        """Stereo pairs (:func:`build_stereo_dataset` with ``frames=1``)."""
        return build_stereo_dataset(self.cfg, split, frames=self.frames)

    def forward_depth(self, batch: dict, ctx: StepContext) -> dict:
        """Run the DepthNet on the (jittered) left image under autocast; returns its output dict."""
        net_in = batch.get("image_aug", batch["image"])
        with ctx.autocast():
            return ctx.models["depth"](net_in)

    def step(self, batch: dict, ctx: StepContext) -> StepOutput:
        """Stereo losses for one batch (see :func:`stereo_objective`)."""
        check_stereo_batch(batch, "stereo task")
        out = self.forward_depth(batch, ctx)
        total, named, extras = stereo_objective(out["disp_left"], out["disp_right"], batch, self.cfg.loss, self._ssi)
        if "depth_gt" in batch:
            named["gt_abs_rel_metric"] = float(metric_abs_rel(extras["depth"], batch["depth_gt"],
                                                               self.cfg.loss.max_depth))
        images = self._images(batch, extras) if ctx.want_images else None
        return StepOutput(loss=total, terms=named, images=images, num_images=int(batch["image"].shape[0]))

    @staticmethod
    def _images(batch: dict, extras: dict) -> dict:
        images = {"left": batch["image"][:1], "right": batch["image_right"][:1],
                  "disp_left": extras["disp_px"][:1].detach(), "depth": extras["depth"][:1].detach()}
        if "disp_gt" in batch:
            images["disp_gt"] = batch["disp_gt"][:1]
        return images



@register_task("stereo_mono")
class StereoMonoTask(StereoTask):
    """``stereo_mono``: stereo losses (metric scale) + TrianFlow flow / triangulation losses (see the
    module docstring). Models: ``{"flow": FlowNet, "depth": DepthNet(stereo=True)}``.

    The TrianFlow building blocks come from :mod:`trianflow.training.tasks` (``flow_forward``,
    ``depth_geometry``), :mod:`trianflow.losses.flow` (``flow_loss_terms``) and
    :mod:`trianflow.losses.triangulation` (``trianflow_depth_objective``). The stereo depth of
    each scale (width fraction upsampled to full resolution, then ``fx B / (d W)``) is what the
    triangulation losses see; they align it to the triangulation's scale without gradient, so the
    metric scale comes from the stereo terms only. Logged besides the loss terms: ``n_valid``,
    ``inlier_ratio`` and, with ``depth_gt`` in the batch, ``gt_abs_rel_metric`` (AbsRel of the
    metric stereo depth, no median scaling).
    """

    def __init__(self, cfg: TrainConfig):
        if cfg.train.stage not in STAGES:
            raise InputError(f"train.stage={cfg.train.stage!r}: the stereo_mono task has stages {', '.join(STAGES)}")
        super().__init__(cfg)
        self.frames = max(2, int(cfg.data.frames))
        self.stage = cfg.train.stage
        self.flow_net = build_flownet(cfg.model.flow)
        if self.stage == "depth" and not cfg.train.init_flow:
            log.warning("stereo_mono stage 'depth' without train.init_flow: the frozen FlowNet keeps random weights")

    def models(self) -> dict:
        """``{"flow": FlowNet, "depth": DepthNet(stereo=True)}``."""
        return {"flow": self.flow_net, "depth": self.depth_net}

    def set_stage(self, stage: str) -> None:
        """flow: FlowNet on the flow loss, DepthNet on the stereo losses; depth: FlowNet frozen;
        joint: both trained on everything. The DepthNet is always trained."""
        if stage not in STAGES:
            raise InputError(f"train.stage={stage!r}: the stereo_mono task has stages {', '.join(STAGES)}")
        self.stage = stage
        self.flow_net.requires_grad_(stage in ("flow", "joint"))
        self.depth_net.requires_grad_(True)

    def build_dataset(self, split: str) -> Dataset:
        """Stereo pairs with temporal neighbours (:func:`build_stereo_dataset`, ``frames >= 2``)."""
        return build_stereo_dataset(self.cfg, split, frames=self.frames)

    def step(self, batch: dict, ctx: StepContext) -> StepOutput:
        """Stereo objective + TrianFlow flow loss (flow/joint) + triangulation objective (depth/joint)."""
        check_stereo_batch(batch, "stereo_mono task", need_next=True)
        L = self.cfg.loss
        stage = self.stage
        img1, img2, in1, in2, K = pair_inputs(batch)
        b, _, h, w = img1.shape
        dev = img1.device
        train_flow = stage in ("flow", "joint")

        # ---- networks (autocast on the forwards only)
        fwd, bwd = flow_forward(ctx, in1, in2, train_flow)
        out = self.forward_depth(batch, ctx)

        with torch.autocast(device_type=dev.type, enabled=False):
            # ---- stereo (metric scale)
            total, named, extras = stereo_objective(out["disp_left"], out["disp_right"], batch, L, self._ssi)
            terms: dict = dict(named)
            terms["stereo_total"] = terms.pop("total")
            flow_mask = flow_valid_mask(fwd[0].detach(), bwd[0].detach(), L.occ_threshold, L.use_fb_mask,
                                        L.fb_abs, L.fb_rel)
            # ---- TrianFlow flow loss
            if train_flow:
                ns = max(1, min(L.num_scales, len(fwd)))
                fterms = flow_loss_terms(L, img1, img2, fwd, bwd, flow_mask, ns)
                total_f, fnamed = weighted_sum(fterms, flow_weights(L), strict=False)
                total = total + total_f
                terms.update({k: v for k, v in fnamed.items() if k != "total"})
            # ---- TrianFlow triangulation losses on the stereo depth
            geo = None
            if stage in ("depth", "joint"):
                geo, epi = depth_geometry(L, fwd[0], bwd[0], K, seed=self.cfg.train.seed * 1_000_003 + ctx.step)
                flow_for_loss = fwd[0] if stage == "joint" else fwd[0].detach()
                weights = {"tri": L.w_tri, "pf": L.w_pf, "pd": L.w_pd, "smooth": L.w_smooth}
                dl = out["disp_left"]
                nd = max(1, min(L.num_scales, len(dl)))
                dterms: dict = {}
                for s in range(nd):
                    frac = dl[s].float()
                    if frac.shape[-2:] != (h, w):
                        frac = F.interpolate(frac, size=(h, w), mode="bilinear", align_corners=False)
                    depth_s = stereo_depth(frac, K, batch["baseline"].float(), w)
                    r = trianflow_depth_objective(img1, img2, depth_s, flow_for_loss, K, geo.T, geo.corr.x1,
                                                  geo.tri.depth1, geo.tri.valid, sample_valid=geo.valid,
                                                  epi_dist=epi, flow_mask=flow_mask, disp1=frac, weights=weights,
                                                  alpha=L.ssim_weight, epi_threshold=L.inlier_thresh,
                                                  min_points=MIN_POINTS, tri_loss=L.tri_loss)
                    total = total + r.total / nd
                    for k in ("tri", "pf", "pd", "smooth"):
                        dterms[k] = dterms.get(k, 0.0) + float(r.terms[k].detach()) / nd
                terms.update(dterms)
                terms["n_valid"] = float(geo.valid.sum())
                nv = geo.corr.valid.sum(1).clamp(min=1).float()
                terms["inlier_ratio"] = float((geo.pose.inliers.sum(1).float() / nv).mean())
        if "depth_gt" in batch:
            terms["gt_abs_rel_metric"] = float(metric_abs_rel(extras["depth"], batch["depth_gt"], L.max_depth))
        images = None
        if ctx.want_images:
            images = self._images(batch, extras)
            images["flow"] = fwd[0][:1].detach()
            images["flow_mask"] = flow_mask[:1]
            if geo is not None:
                images["inliers"] = draw_points(img1[0], geo.corr.x1[0], valid=geo.pose.inliers[0])
        return StepOutput(loss=total, terms=terms, images=images, num_images=b)
