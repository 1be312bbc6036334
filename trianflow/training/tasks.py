"""The ``trianflow`` training task: TrianFlow's three stages (flow -> depth -> joint).

Stages (``cfg.train.stage``):

``flow``
    Only the FlowNet exists and is trained with the occlusion-aware photometric flow loss
    (:func:`trianflow.losses.flow.flow_loss` over the ``loss.num_scales`` finest levels of the
    flow pyramid that have at least 4x4 pixels, terms ``flow`` and ``flow_smooth``) plus a
    forward-backward consistency term ``flow_consis`` on the visible, consistent pixels. The
    checkpoint of this stage holds only the ``flow`` network.
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

Per-sample validity: a sample whose pose estimation fails (too few inliers, degenerate, e.g.
identical images) or whose triangulation leaves fewer than ``_MIN_POINTS`` points drops out of
the geometry terms (``tri``, ``pf``, ``pd``); the others still learn, and the loss stays finite.
``n_valid`` (logged) counts the valid samples of the batch.

Logged terms besides the losses: ``n_valid``, ``inlier_ratio``; against ground truth when the
batch has it (synthetic data): ``gt_epe`` (flow end-point error, px), ``gt_abs_rel`` (depth AbsRel
after per-image median scaling), ``gt_rot_err_deg`` (rotation error of the estimated pose).
Tensorboard images (``train.image_every``): ``image``, ``flow`` (colour-coded), ``occlusion``
(visibility mask), ``flow_mask`` (visibility x forward-backward consistency), ``disparity``,
``depth``, ``inliers`` (RANSAC inliers drawn on image 1), ``epipolar_mask`` (M_r) and ``flow_gt``
when present.

Datasets (``cfg.data.dataset``): ``synthetic`` (rendered street scenes with exact ground truth;
``data.sequences`` entries ``"<kind>[:<seed>[:<frames>[:<metres per frame>]]]"``, default
``["forward_turn:0:40"]`` (1 m per frame), kinds from
:data:`trianflow.data.synthetic.TRAJECTORY_KINDS`), ``kitti_odometry`` (``data.root``,
``data.sequences``), ``kitti_raw`` (``data.root``, ``data.split_file``), and ``sequence`` /
``image_folder`` / ``tum`` / ``video`` (any folder or video :func:`~trianflow.data.open_sequence`
reads: ``data.root``, or ``data.root/<name>`` for each name of ``data.sequences``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from trianflow.config import TrainConfig
from trianflow.errors import InputError
from trianflow.geometry.flow import flow_magnitude, flow_warp, occlusion_mask
from trianflow.geometry.pose import make_pose, rotation_error_deg
from trianflow.geometry.ransac import TwoViewResult, estimate_relative_pose
from trianflow.geometry.sampling import Correspondences, correspondence_scores, sample_correspondences
from trianflow.geometry.triangulation import Triangulation, triangulate_midpoint
from trianflow.losses.flow import flow_loss, flow_valid_mask
from trianflow.losses.objective import weighted_sum
from trianflow.losses.photometric import masked_mean
from trianflow.losses.triangulation import epipolar_distance_map, epipolar_mask, trianflow_depth_objective
from trianflow.models import build_depthnet, build_flownet, disp_to_depth
from trianflow.training.registry import register_task
from trianflow.training.trainer import StepContext, StepOutput, Task, draw_points

log = logging.getLogger(__name__)

__all__ = [
    "TrianFlowTask",
    "TwoViewGeometry",
    "build_training_dataset",
    "bidirectional_flow",
    "flow_consistency_loss",
    "two_view_geometry",
    "flow_epe",
    "median_scaled_abs_rel",
    "evaluate_against_gt",
    "STAGES",
]

STAGES = ("flow", "depth", "joint")
_MIN_POINTS = 20  # fewest triangulated points for a sample to enter the geometry terms
_RANSAC_RESTARTS = 4  # independent torch-RANSAC runs per sample, the one with most inliers is kept
_MIN_INLIER_RATIO = 0.5  # a pose explaining fewer of the valid matches is not trusted
_GT_MAX_DEPTH = 80.0  # depth cap of the ground-truth AbsRel (as in the KITTI protocol)


# --------------------------------------------------------------------------------------------
# building blocks (public, tested on their own)
# --------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def flow_forward(ctx, img1: torch.Tensor, img2: torch.Tensor, train_flow: bool):
    """Forward/backward flow pyramids of ``ctx.models["flow"]`` under the step's autocast, in fp32.

    Without ``train_flow`` the FlowNet runs under ``no_grad`` (frozen in the depth stage).
    """
    grad = torch.enable_grad() if train_flow else torch.no_grad()
    with grad, ctx.autocast():
        fwd, bwd = bidirectional_flow(ctx.models["flow"], img1, img2)
    return [f.float() for f in fwd], [f.float() for f in bwd]


def flow_loss_terms(L, img1: torch.Tensor, img2: torch.Tensor, fwd: list, bwd: list, flow_mask: torch.Tensor,
                    num_scales: int) -> dict:
    """The unweighted TrianFlow flow-loss terms of both directions (``flow``, ``flow_smooth`` and,
    when ``L.w_flow_consis > 0``, ``flow_consis``) over the first ``num_scales`` pyramid levels.

    Args:
        L: the loss config section; fwd, bwd: flow pyramids (finest first); flow_mask: the forward
            valid mask of the finest level (:func:`~trianflow.losses.flow.flow_valid_mask`).
    """
    res = flow_loss(img1, img2, fwd[:num_scales], bwd[:num_scales], alpha=L.ssim_weight,
                    occ_threshold=L.occ_threshold, use_fb_mask=L.use_fb_mask, fb_abs=L.fb_abs, fb_rel=L.fb_rel,
                    edge_weight=L.edge_weight, flow_units="scale")
    terms = dict(res.terms)
    if L.w_flow_consis > 0:
        mask_b = flow_valid_mask(bwd[0].detach(), fwd[0].detach(), L.occ_threshold, L.use_fb_mask, L.fb_abs, L.fb_rel)
        terms["flow_consis"] = (flow_consistency_loss(fwd[0], bwd[0], flow_mask)
                                + flow_consistency_loss(bwd[0], fwd[0], mask_b)).mean()
    return terms


def flow_weights(L) -> dict:
    """Term name -> weight of the flow-loss terms, from the loss config section."""
    return {"flow": L.w_flow, "flow_smooth": L.w_flow_smooth, "flow_consis": L.w_flow_consis}


def depth_geometry(L, fwd0: torch.Tensor, bwd0: torch.Tensor, K: torch.Tensor, seed: int):
    """Two-view geometry of the finest flows for the depth losses, and its epipolar distance map.

    Returns ``(geo, epi)``: :class:`TwoViewGeometry` and ``(B,1,H,W)`` distances to the epipolar
    lines of F (all zero F for samples without a valid pose).
    """
    b = fwd0.shape[0]
    geo = two_view_geometry(fwd0, bwd0, K, num_matches=L.num_matches, top_ratio=L.match_sample_ratio,
                            threshold=L.inlier_thresh, num_hypotheses=L.ransac_iters,
                            min_angle_deg=L.min_ray_angle_deg, min_points=_MIN_POINTS, seed=seed)
    with torch.autocast(device_type=fwd0.device.type, enabled=False):
        Fm = torch.where(geo.valid.view(b, 1, 1), torch.nan_to_num(geo.pose.F.float()),
                         torch.zeros(b, 3, 3, device=fwd0.device))
        epi = epipolar_distance_map(Fm, fwd0.detach())
    return geo, epi


def bidirectional_flow(model: nn.Module, img1: torch.Tensor, img2: torch.Tensor):
    """Forward and backward flow pyramids of a FlowNet (or its DDP wrapper).

    A plain :class:`~trianflow.models.FlowNet` runs :meth:`~trianflow.models.FlowNet.forward_bidirectional`
    (one feature pass for both directions). A DDP wrapper only forwards ``forward``, so the pairs
    ``(1,2)`` and ``(2,1)`` are stacked along the batch and run through it in one call.

    Args:
        model: FlowNet or ``DistributedDataParallel(FlowNet)``.
        img1, img2: ``(B,3,H,W)`` in [0,1].
    Returns:
        ``(fwd, bwd)``: lists of 5 flows ``(B,2,H_s,W_s)`` (strides 1, 4, 8, 16, 32), fp32.
    """
    if _unwrap(model) is model:
        return model.forward_bidirectional(img1, img2)
    b = img1.shape[0]
    outs = model(torch.cat([img1, img2], 0), torch.cat([img2, img1], 0))
    return [o[:b] for o in outs], [o[b:] for o in outs]


def flow_consistency_loss(flow_fwd: torch.Tensor, flow_bwd: torch.Tensor, mask: torch.Tensor | None = None):
    """Forward-backward consistency ``|f(p) + b(p + f(p))|`` (L1 over both channels) per sample.

    Args:
        flow_fwd: ``(B,2,H,W)`` flow 1 -> 2 (gradients flow into both flows).
        flow_bwd: ``(B,2,H,W)`` flow 2 -> 1.
        mask: ``(B,1,H,W)`` weights (e.g. :func:`~trianflow.losses.flow.flow_valid_mask`), None = all.
    Returns:
        ``(B,)`` masked mean of the consistency error in pixels (matches leaving image 2 are
        ignored).
    """
    bwd_at, inside = flow_warp(flow_bwd, flow_fwd, padding_mode="border")
    m = inside if mask is None else inside * mask.to(inside.dtype)
    return masked_mean((flow_fwd + bwd_at).abs(), m.detach())


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
                      min_angle_deg: float = 0.5, min_points: int = _MIN_POINTS, seed: int = 0,
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


def flow_epe(flow: torch.Tensor, flow_gt: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean end-point error per sample.

    Args:
        flow, flow_gt: ``(B,2,H,W)``; valid: ``(B,1,H,W)`` mask of pixels with ground truth.
    Returns:
        ``(B,)`` mean ``||flow - flow_gt||`` over the valid pixels (0 where none).
    """
    err = flow_magnitude(flow.detach().float() - flow_gt.float())
    return masked_mean(err, None if valid is None else (valid > 0).float())


def median_scaled_abs_rel(depth: torch.Tensor, depth_gt: torch.Tensor, max_depth: float = _GT_MAX_DEPTH,
                          min_depth: float = 1e-3) -> torch.Tensor:
    """AbsRel ``mean(|d - d_gt| / d_gt)`` per image after median scaling (monocular protocol).

    The prediction is multiplied by ``median(d_gt) / median(d)`` over the pixels with
    ``min_depth < d_gt < max_depth``, then clamped to ``[min_depth, max_depth]``.

    Args:
        depth: ``(B,1,H,W)`` predicted depth (> 0, any scale).
        depth_gt: ``(B,1,H,W)`` ground truth, 0 where unknown.
    Returns:
        ``(B,)`` AbsRel (NaN for an image without valid ground truth).
    """
    d = depth.detach().float().flatten(1)
    g = depth_gt.float().flatten(1)
    ok = (g > min_depth) & (g < max_depth) & torch.isfinite(d) & (d > 0)
    nan = torch.full_like(d, float("nan"))
    ratio = torch.nanmedian(torch.where(ok, g, nan), 1).values / torch.nanmedian(torch.where(ok, d, nan), 1).values
    ds = (d * ratio[:, None]).clamp(min_depth, max_depth)
    rel = torch.where(ok, (ds - g).abs() / g.clamp(min=min_depth), torch.zeros_like(d))
    n = ok.sum(1)
    return torch.where(n > 0, rel.sum(1) / n.clamp(min=1), torch.full_like(rel[:, 0], float("nan")))


@torch.no_grad()
def evaluate_against_gt(dataset: Dataset, flow_net: nn.Module | None = None, depth_net: nn.Module | None = None,
                        batch_size: int = 4, device=None) -> dict:
    """Mean flow EPE and median-scaled depth AbsRel of networks over a dataset with ground truth.

    The networks run in eval mode on the un-augmented images (``image``, ``image_next``) at the
    dataset's resolution; their previous train/eval mode is restored afterwards.

    Args:
        dataset: samples with ``flow_gt``/``flow_valid`` (for EPE) and ``depth_gt`` (for AbsRel),
            e.g. :class:`trianflow.data.synthetic.SyntheticDataset`.
        flow_net: a FlowNet or None; depth_net: a mono DepthNet or None.
        batch_size: samples per forward pass; device: default the first network's device.
    Returns:
        ``{"epe": float | None, "abs_rel": float | None, "pairs": int}`` (means over samples).
    """
    from torch.utils.data import default_collate

    nets = [m for m in (flow_net, depth_net) if m is not None]
    if device is None:
        device = next(nets[0].parameters()).device if nets else torch.device("cpu")
    modes = [m.training for m in nets]
    for m in nets:
        m.eval()
    epes, rels = [], []
    try:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in default_collate(items).items()}
            if flow_net is not None and "flow_gt" in batch:
                fwd = _unwrap(flow_net)(batch["image"], batch["image_next"])[0]
                epes.append(flow_epe(fwd, batch["flow_gt"], batch.get("flow_valid")))
            if depth_net is not None and "depth_gt" in batch:
                dn = _unwrap(depth_net)
                depth = dn.depth(dn(batch["image"])["disp"][0].float())
                rels.append(median_scaled_abs_rel(depth, batch["depth_gt"]))
    finally:
        for m, mode in zip(nets, modes):
            m.train(mode)
    epe = float(torch.cat(epes).mean()) if epes else None
    rel = torch.cat(rels) if rels else None
    return {"epe": epe, "abs_rel": float(torch.nanmean(rel)) if rel is not None else None, "pairs": len(dataset)}


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------

_SEQUENCE_KINDS = ("sequence", "image_folder", "tum", "video")


def _train_transform(cfg: TrainConfig, size):
    from trianflow.data.transforms import default_train_transform

    d = cfg.data
    if not d.augment:
        return None
    return default_train_transform(size=size, flip=d.flip, jitter=d.color_jitter, scale_crop=d.scale_crop)


def parse_synthetic_spec(spec: str) -> tuple[str, int, int, float]:
    """``'<kind>[:<seed>[:<frames>[:<metres per frame>]]]'`` (a ``data.sequences`` entry of a synthetic
    config) -> ``(kind, seed, frames, step)``; defaults ``forward_turn``, 0, 40, 1.0.

    Raises:
        InputError: unknown kind, non-numeric fields, too many fields or a non-positive step.
    """
    from trianflow.data.synthetic import TRAJECTORY_KINDS

    parts = str(spec).split(":")
    kind = parts[0] or "forward_turn"
    usage = "synthetic sequences are '<kind>[:<seed>[:<frames>[:<metres per frame>]]]', e.g. 'forward_turn:3:40:0.5'"
    try:
        seed = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        n = int(parts[2]) if len(parts) > 2 and parts[2] else 40
        step = float(parts[3]) if len(parts) > 3 and parts[3] else 1.0
    except ValueError:
        raise InputError(f"data.sequences entry {spec!r}: {usage}") from None
    if kind not in TRAJECTORY_KINDS or len(parts) > 4 or not step > 0:
        raise InputError(f"data.sequences entry {spec!r}: {usage}, kind one of {', '.join(TRAJECTORY_KINDS)}")
    return kind, seed, n, step


def build_training_dataset(cfg: TrainConfig) -> Dataset:
    """The training dataset of image pairs named by ``cfg.data`` (see the module docstring).

    Samples hold at least ``image``, ``image_next`` (+ ``*_aug``) and ``K``; images are
    ``cfg.data.size``. ``data.max_samples > 0`` keeps the first samples only.

    Raises:
        InputError: unknown ``data.dataset``, ``data.frames=1``, a missing/empty path, or no samples.
    """
    d = cfg.data
    if d.frames < 2:
        raise InputError(f"data.frames={d.frames}: the trianflow task trains on frame pairs; set data.frames=2")
    size = (int(d.size[0]), int(d.size[1]))
    static = float(d.static_threshold) if d.static_filter else None
    name = d.dataset
    if name == "synthetic":
        from trianflow.data.synthetic import SyntheticDataset

        specs = list(d.sequences) or ["forward_turn:0:40"]
        parts = []
        for spec in specs:
            kind, seed, n, step = parse_synthetic_spec(spec)
            parts.append(SyntheticDataset(n_frames=n, size=size, kind=kind, seed=seed, frames=d.frames,
                                          stride=d.stride, step=step, transform=_train_transform(cfg, None)))
        ds: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    elif name == "kitti_odometry":
        from trianflow.data.kitti_odometry import KittiOdometryDataset

        if not d.root:
            raise InputError("data.dataset=kitti_odometry needs data.root (a KITTI odometry sequence folder or root)")
        ds = KittiOdometryDataset(d.root, sequences=list(d.sequences) or None, frames=d.frames, stride=d.stride,
                                  size=size, transform=_train_transform(cfg, None), static_threshold=static,
                                  static_method=d.static_method)
    elif name == "kitti_raw":
        from trianflow.data.kitti_raw import KittiRawDataset

        if not d.root:
            raise InputError("data.dataset=kitti_raw needs data.root (the KITTI raw root with <date>/ folders)")
        ds = KittiRawDataset(d.root, split=d.split_file or None, frames=d.frames, stride=d.stride, size=size,
                             transform=_train_transform(cfg, None), static_threshold=static,
                             static_method=d.static_method)
    elif name in _SEQUENCE_KINDS:
        from pathlib import Path

        from trianflow.data import open_sequence
        from trianflow.data.sequences_dataset import SequencePairsDataset

        if not d.root:
            raise InputError(f"data.dataset={name} needs data.root (a sequence folder or video)")
        paths = [Path(d.root) / s for s in d.sequences] if d.sequences else [Path(d.root)]
        parts = []
        for p in paths:
            seq = open_sequence(p)
            parts.append(SequencePairsDataset(seq, frames=d.frames, stride=d.stride, size=size,
                                              transform=_train_transform(cfg, None), static_threshold=static,
                                              static_method=d.static_method))
        ds = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    else:
        raise InputError(f"data.dataset={name!r} is not supported by the trianflow task; use synthetic, "
                         f"kitti_odometry, kitti_raw or one of {', '.join(_SEQUENCE_KINDS)}")
    if len(ds) == 0:
        raise InputError(f"data.dataset={name} (data.root={d.root or '<unset>'}) has no training pairs")
    if d.max_samples > 0 and len(ds) > d.max_samples:
        ds = Subset(ds, range(d.max_samples))
    return ds


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
        """:func:`build_training_dataset` of the config (only ``split="train"`` exists)."""
        if split != "train":
            raise InputError(f"the trianflow task has only a 'train' split, not {split!r}")
        return build_training_dataset(self.cfg)

    # ------------------------------------------------------------------ step
    def step(self, batch: dict, ctx: StepContext) -> StepOutput:
        """One TrianFlow step of the current stage; see the module docstring."""
        L = self.cfg.loss
        stage = self.stage
        img1, img2 = batch["image"], batch["image_next"]
        in1, in2 = batch.get("image_aug", img1), batch.get("image_next_aug", img2)
        K = batch["K"].float()
        b, _, h, w = img1.shape
        dev = img1.device
        train_flow = stage in ("flow", "joint")

        fwd, bwd = flow_forward(ctx, in1, in2, train_flow)

        terms: dict[str, torch.Tensor] = {}
        losses = []
        with torch.autocast(device_type=dev.type, enabled=False):
            flow_mask = flow_valid_mask(fwd[0].detach(), bwd[0].detach(), L.occ_threshold, L.use_fb_mask,
                                        L.fb_abs, L.fb_rel)
            if train_flow:
                # scales of the pyramid with at least 4x4 pixels (2nd-order smoothness needs 3x3)
                ns = max(1, min(L.num_scales, sum(1 for f in fwd if min(f.shape[-2:]) >= 4)))
                fterms = flow_loss_terms(L, img1, img2, fwd, bwd, flow_mask, ns)
                total_f, _ = weighted_sum(fterms, flow_weights(L), strict=False)
                losses.append(total_f)
                terms.update({k: v.detach() for k, v in fterms.items()})

        geo = disp_full = depth_full = None
        if stage in ("depth", "joint"):
            geo, epi = depth_geometry(L, fwd[0], bwd[0], K, seed=self.cfg.train.seed * 1_000_003 + ctx.step)
            with ctx.autocast():
                disps = ctx.models["depth"](in1)["disp"]
            dnet = _unwrap(ctx.models["depth"])
            # L_pf trains the depth only, also in the joint stage: the rigid flow of a still imperfect
            # depth pulls the flow away from the true flow (synthetic recipe: EPE 0.60 -> 1.86 px in
            # 60 joint steps with that gradient, 0.60 -> 0.38 px without); the FlowNet keeps its
            # own photometric flow loss
            flow_for_loss = fwd[0].detach()
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
                                                  epi_dist=epi, flow_mask=flow_mask, disp1=sdisp, weights=weights,
                                                  alpha=L.ssim_weight, epi_threshold=L.inlier_thresh,
                                                  min_points=_MIN_POINTS)
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


# the stereo task lives in its own module (written separately); importing it registers it
try:  # pragma: no cover - depends on whether that module exists
    from trianflow.training import stereo_task  # noqa: F401,E402
except ModuleNotFoundError as _exc:  # pragma: no cover
    if _exc.name != "trianflow.training.stereo_task":
        raise
