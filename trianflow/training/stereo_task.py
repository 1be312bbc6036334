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
      disparity), else ``disp_gt``, else ``1 / depth_gt`` (see :func:`disparity_target`).

    Metric depth is ``depth = fx * baseline / (disp_fraction * W)`` with the batch's ``K`` and
    ``baseline`` (:func:`stereo_depth`).

``stereo_mono``
    Stereo pairs *and* their temporal neighbours (``image``, ``image_right``, ``image_next``,
    ``K``, ``baseline``): the stereo losses above give metric scale; the TrianFlow flow and
    triangulation losses of the ``trianflow`` task (:mod:`trianflow.training.tasks`) add temporal
    supervision, with the stereo DepthNet's left depth as the depth prediction and a FlowNet as
    in the ``trianflow`` task. ``train.stage`` follows the trianflow task (``flow``: FlowNet on
    the flow loss, DepthNet on the stereo losses; ``depth``: FlowNet frozen, DepthNet on stereo +
    triangulation losses; ``joint``: both networks on everything).

Datasets (``data.dataset``; see :func:`build_stereo_dataset`): ``kitti_raw``,
``kitti_odometry``, ``synthetic`` / ``synthetic_stereo`` and ``sequence`` with their right
images (``data.stereo`` is forced on), ``kitti_stereo`` (KITTI stereo 2012/2015),
``stereo_folder`` (a folder of pairs with a ``calib.txt``) and ``middlebury`` (the scikit-image
Middlebury "motorcycle" pair repeated). Random horizontal flips swap left and right
(:mod:`trianflow.data.transforms`), so the right camera stays at +x.

Bad input (a clear :class:`~trianflow.errors.InputError`, see :func:`check_stereo_batch`): a
batch without ``image_right``, left and right images of different sizes, a missing, zero,
negative or non-finite ``baseline``, a missing ``K``. Ground truth of another resolution than
the prediction: the *prediction* is resized to the ground truth (bilinear, disparity values
multiplied by ``W_gt / W_pred``), never the ground truth (:func:`resize_disparity`). An empty GT
mask: the sample is left out of the SSI term (0, no gradient) and logged; evaluation
(:func:`disparity_errors`) raises :class:`~trianflow.evaluation.depth_metrics.EmptyMaskError`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from trianflow.config import TrainConfig
from trianflow.errors import InputError
from trianflow.losses.objective import weighted_sum
from trianflow.losses.scale_shift import ScaleShiftInvariantLoss
from trianflow.losses.stereo import m3depth_consistency_loss, monodepth_loss
from trianflow.models import build_depthnet
from trianflow.training.registry import register_task
from trianflow.training.trainer import StepContext, StepOutput, Task

log = logging.getLogger(__name__)

__all__ = [
    "STEREO_DATASETS",
    "StereoTask",
    "StereoMonoTask",
    "MiddleburyDataset",
    "TransformedDataset",
    "build_stereo_dataset",
    "build_stereo_depthnet",
    "check_stereo_batch",
    "stereo_depth",
    "resize_disparity",
    "disparity_target",
    "stereo_objective",
    "nonoccluded_mask",
    "disparity_errors",
]

#: dataset names accepted by the stereo tasks (``data.dataset``)
STEREO_DATASETS = ("kitti_raw", "kitti_odometry", "synthetic", "synthetic_stereo", "sequence", "kitti_stereo",
                   "stereo_folder", "middlebury")

#: points sampled per cloud for the M3Depth ICP term
ICP_POINTS = 1000
#: ICP iterations per step
ICP_ITERS = 20
#: width of the scikit-image Middlebury motorcycle pair (1/4 of the original Middlebury 2014 size)
MIDDLEBURY_WIDTH = 741


# --------------------------------------------------------------------------------------------
# helpers (pure functions, tested on their own)
# --------------------------------------------------------------------------------------------


def _frame_ids(batch: dict, mask: Optional[torch.Tensor] = None) -> str:
    ids = batch.get("frame_id")
    if not isinstance(ids, (list, tuple)) or not ids:
        return "this batch"
    if mask is not None:
        ids = [i for i, m in zip(ids, mask.tolist()) if m]
    shown = ", ".join(str(i) for i in ids[:3])
    return shown + (f" (+{len(ids) - 3} more)" if len(ids) > 3 else "")


def check_stereo_batch(batch: dict, what: str = "stereo task", need_next: bool = False) -> None:
    """Raise :class:`InputError` unless ``batch`` is a usable rectified stereo batch.

    Checks: ``image`` and ``image_right`` present with the same ``(B,3,H,W)`` shape; ``K``
    ``(B,3,3)`` present; ``baseline`` ``(B,)`` (or scalar) present, finite and > 0 metres;
    with ``need_next`` also ``image_next`` of the same shape.

    Args:
        batch: collated sample dict (see :mod:`trianflow.data`).
        what: how to name the caller in the message.
        need_next: require the temporal neighbour ``image_next`` (``stereo_mono``).
    Raises:
        InputError naming the missing/inconsistent key, the frames and the fix.
    """
    if "image" not in batch:
        raise InputError(f"{what}: the batch has no 'image' (left image)")
    left = batch["image"]
    if "image_right" not in batch:
        raise InputError(
            f"{what}: the batch has no 'image_right' (right image of {_frame_ids(batch)}); use a stereo dataset "
            f"(data.dataset: {', '.join(STEREO_DATASETS)}) whose frames have right images"
        )
    right = batch["image_right"]
    if left.dim() != 4 or left.shape[1] != 3:
        raise InputError(f"{what}: 'image' must be (B,3,H,W), got {tuple(left.shape)}")
    if tuple(right.shape) != tuple(left.shape):
        raise InputError(
            f"{what}: left images are {tuple(left.shape)} but right images are {tuple(right.shape)} "
            f"({_frame_ids(batch)}); a rectified stereo pair must have one size"
        )
    if need_next:
        if "image_next" not in batch:
            raise InputError(f"{what}: the batch has no 'image_next' (temporal neighbour); set data.frames to 2 or 3")
        if tuple(batch["image_next"].shape) != tuple(left.shape):
            raise InputError(f"{what}: 'image_next' is {tuple(batch['image_next'].shape)} but 'image' is "
                             f"{tuple(left.shape)}")
    K = batch.get("K")
    if K is None or tuple(K.shape) != (left.shape[0], 3, 3):
        raise InputError(f"{what}: the batch needs intrinsics 'K' of shape (B,3,3), got "
                         f"{None if K is None else tuple(K.shape)}")
    if "baseline" not in batch:
        raise InputError(f"{what}: the batch has no stereo 'baseline' ({_frame_ids(batch)}); the dataset must give "
                         "the baseline in metres (calibration of the right camera)")
    bl = torch.as_tensor(batch["baseline"]).reshape(-1)
    if bl.numel() not in (1, left.shape[0]):
        raise InputError(f"{what}: 'baseline' has {bl.numel()} values for a batch of {left.shape[0]}")
    bad = ~(torch.isfinite(bl) & (bl > 0))
    if bool(bad.any()):
        vals = ", ".join(f"{float(v):g}" for v in bl[bad][:3])
        raise InputError(f"{what}: stereo baseline must be > 0 metres (right camera at +x), got {vals} for "
                         f"{_frame_ids(batch, bad if bl.numel() > 1 else None)}; fix the calibration")


def stereo_depth(disp_frac: torch.Tensor, K: torch.Tensor, baseline, width: int, eps: float = 1e-6) -> torch.Tensor:
    """Metric depth from a stereo DepthNet disparity given as a fraction of the width.

    ``depth = fx * baseline / (disp_frac * width)``, where ``fx = K[:, 0, 0]`` and ``width`` both
    refer to the image the network saw. A width fraction does not depend on the pyramid scale, so
    any scale of the output can be passed with the input's ``K`` and ``width``.

    Args:
        disp_frac: ``(B,1,H,W)`` disparity as a fraction of the image width.
        K: ``(B,3,3)`` intrinsics of the network input; width: its width in pixels.
        baseline: ``(B,)`` tensor or float, metres (> 0).
        eps: disparity fractions below ``eps`` are clamped (bounded depth, finite gradients).
    Returns:
        ``(B,1,H,W)`` depth in metres.
    """
    fx = K[:, 0, 0].to(disp_frac.dtype).view(-1, 1, 1, 1)
    bl = torch.as_tensor(baseline, dtype=disp_frac.dtype, device=disp_frac.device).reshape(-1)
    bl = bl.expand(disp_frac.shape[0]).reshape(-1, 1, 1, 1)
    return fx * bl / (disp_frac.clamp(min=eps) * float(width))


def resize_disparity(disp_px: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a disparity map (pixels) to ``size = (H, W)``: bilinear, values times ``W / w``.

    This is the rule whenever ground truth has another resolution than the prediction: the
    prediction is brought to the ground truth, never the other way round (the ground truth is
    often sparse).

    Args:
        disp_px: ``(B,1,h,w)`` disparity in pixels of a ``w``-wide image.
        size: target ``(H, W)``.
    Returns:
        ``(B,1,H,W)`` disparity in pixels of a ``W``-wide image (the input itself when the size
        already matches).
    """
    H, W = int(size[0]), int(size[1])
    h, w = disp_px.shape[-2:]
    if (h, w) == (H, W):
        return disp_px
    out = F.interpolate(disp_px, size=(H, W), mode="bilinear", align_corners=False)
    return out * (W / w)


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


def nonoccluded_mask(disp: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Pixels of the LEFT image whose GT disparity is known and that are visible in the right image.

    Middlebury ships no occlusion mask with the scikit-image pair, so it is derived from the left
    GT by forward splatting along each row: pixel ``x`` lands at ``x_r = x - d(x)`` in the right
    image; it is occluded when some pixel to its right lands at or left of it
    (``min_{x' > x} x_r(x') <= x_r(x)``: that pixel has a larger disparity, so it is in front),
    and out of view when ``x_r < -0.5``. Unknown GT pixels (0, non-finite, or ``valid`` False)
    neither count nor occlude.

    Args:
        disp: ``(H,W)`` GT disparity in pixels of the left image.
        valid: optional ``(H,W)`` bool mask of known GT pixels.
    Returns:
        ``(H,W)`` bool mask: known, in view and not occluded.
    """
    d = np.asarray(disp, dtype=np.float64)
    if d.ndim != 2:
        raise InputError(f"nonoccluded_mask: disparity must be (H,W), got shape {d.shape}")
    known = np.isfinite(d) & (d > 0)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != d.shape:
            raise InputError(f"nonoccluded_mask: valid mask {v.shape} differs from disparity {d.shape}")
        known &= v
    H, W = d.shape
    xr = np.where(known, np.arange(W, dtype=np.float64)[None, :] - np.where(known, d, 0.0), np.inf)
    suffix_min = np.minimum.accumulate(xr[:, ::-1], axis=1)[:, ::-1]  # min over x' >= x
    right_min = np.concatenate([suffix_min[:, 1:], np.full((H, 1), np.inf)], axis=1)  # min over x' > x
    return known & (xr > -0.5) & (right_min > xr)


def disparity_errors(pred_px, gt_px, mask=None) -> dict:
    """Absolute disparity error statistics (pixels) over the evaluated GT pixels.

    A prediction of another resolution than the GT is resized to it first (bilinear, values times
    ``W_gt / W_pred``, :func:`trianflow.evaluation.depth_metrics.resize_prediction`); the GT is
    never resized.

    Args:
        pred_px: ``(h,w)`` predicted disparity in pixels (numpy or tensor).
        gt_px: ``(H,W)`` GT disparity in pixels, 0 / non-finite = unknown.
        mask: optional ``(H,W)`` bool of pixels to evaluate (e.g. :func:`nonoccluded_mask`).
    Returns:
        dict with ``median``, ``mean``, ``rmse`` (px), ``bad1``, ``bad2``, ``bad3`` (fraction of
        pixels with error above 1/2/3 px) and ``n_pixels``.
    Raises:
        EmptyMaskError when no pixel is left; InputError for NaN predictions at evaluated pixels.
    """
    from trianflow.evaluation.depth_metrics import EmptyMaskError, resize_prediction

    g = np.asarray(gt_px.detach().cpu() if hasattr(gt_px, "detach") else gt_px, dtype=np.float64)
    if g.ndim != 2:
        raise InputError(f"disparity_errors: GT must be (H,W), got shape {g.shape}")
    p = resize_prediction(pred_px, g.shape, kind="disp").astype(np.float64)
    m = np.isfinite(g) & (g > 0)
    if mask is not None:
        mm = np.asarray(mask, dtype=bool)
        if mm.shape != g.shape:
            raise InputError(f"disparity_errors: mask {mm.shape} differs from GT {g.shape}")
        m &= mm
    if not m.any():
        raise EmptyMaskError("disparity_errors: no GT pixel to evaluate (empty GT mask)")
    e = np.abs(p[m] - g[m])
    if np.isnan(e).any():
        raise InputError(f"disparity_errors: prediction has NaN at {int(np.isnan(e).sum())} evaluated pixel(s)")
    return {"median": float(np.median(e)), "mean": float(e.mean()), "rmse": float(np.sqrt((e * e).mean())),
            "bad1": float((e > 1).mean()), "bad2": float((e > 2).mean()), "bad3": float((e > 3).mean()),
            "n_pixels": int(m.sum())}


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------


class TransformedDataset(Dataset):
    """Apply a sample transform (augmentation) to the samples of another dataset.

    Args:
        dataset: map-style dataset of sample dicts.
        transform: callable ``sample -> sample`` or None; ``*_aug`` copies are added afterwards.
        length: expose this many items, cycling over ``dataset`` (None: ``len(dataset)``).
    """

    def __init__(self, dataset: Dataset, transform=None, length: Optional[int] = None):
        self.dataset, self.transform = dataset, transform
        self.length = len(dataset) if length is None else int(length)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        from trianflow.data.transforms import add_aug_copies

        if not 0 <= i < self.length:
            raise IndexError(i)
        sample = self.dataset[i % len(self.dataset)]  # type: ignore[arg-type]
        sample = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in sample.items()}
        if self.transform is not None:
            sample = self.transform(sample)
        return add_aug_copies(sample)


class MiddleburyDataset(Dataset):
    """The Middlebury 2014 "motorcycle" pair of scikit-image, repeated ``length`` times.

    ``scale`` is relative to the shipped pair (741x500, itself 1/4 of the original Middlebury
    size); the GT is area-downscaled over valid pixels only
    (:func:`trianflow.data.stereo_pairs.middlebury_motorcycle`). Samples (see
    :mod:`trianflow.data.stereo_pairs`): ``image``, ``image_right``, ``K``, ``baseline``,
    ``disp_gt``/``depth_gt`` (0 where unknown), ``frame_id``. Attributes: ``raw`` (the dict of
    :func:`~trianflow.data.stereo_pairs.middlebury_motorcycle`), ``sample`` (the un-augmented
    sample) and ``eval_mask`` (``(H,W)`` bool, known and non-occluded GT pixels of
    :func:`nonoccluded_mask`, for evaluation).

    Args:
        scale: in (0, 1]. length: number of items. transform: augmentation (or None).
    Raises:
        InputError when scikit-image or its data is missing.
    """

    def __init__(self, scale: float = 1.0, length: int = 64, transform=None):
        from trianflow.data.stereo_pairs import middlebury_motorcycle, stereo_sample

        if length < 1:
            raise InputError(f"MiddleburyDataset: length must be >= 1, got {length}")
        m = middlebury_motorcycle(scale)
        self.raw = m
        self.sample = stereo_sample(m["left"], m["right"], m["K"], m["baseline"], m["disp"],
                                    frame_id="middlebury/motorcycle", doffs=m["doffs"])
        self.eval_mask = nonoccluded_mask(m["disp"], m["valid"])
        self.length, self.transform = int(length), transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        from trianflow.data.transforms import add_aug_copies

        if not 0 <= i < self.length:
            raise IndexError(i)
        s = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in self.sample.items()}
        if self.transform is not None:
            s = self.transform(s)
        return add_aug_copies(s)


def _kitti_stereo_year(root) -> int:
    from pathlib import Path

    r = Path(root)
    for base in (r / "training", r / "testing", r):
        if (base / "image_2").is_dir():
            return 2015
        if (base / "colored_0").is_dir() or (base / "image_0").is_dir():
            return 2012
    raise InputError(f"{root}: not a KITTI stereo 2012/2015 folder (no training/image_2/ or training/colored_0/)")


#: baseline of the synthetic stereo rig (metres, KITTI-like)
SYNTHETIC_BASELINE = 0.54


def _synthetic_stereo(cfg: TrainConfig, split: str, frames: int, transform) -> Dataset:
    from torch.utils.data import ConcatDataset, Subset

    from trianflow.data.synthetic import SyntheticDataset
    from trianflow.training.tasks import parse_synthetic_spec

    d = cfg.data
    size = (int(d.size[0]), int(d.size[1]))
    parts = []
    for spec in list(d.sequences) or ["forward_turn:0:40"]:
        kind, seed, n, step = parse_synthetic_spec(spec)
        if split != "train":
            seed += 1000
        parts.append(SyntheticDataset(n_frames=n, size=size, kind=kind, seed=seed, baseline=SYNTHETIC_BASELINE,
                                      frames=max(2, int(frames)), stride=d.stride, step=step, transform=transform))
    ds: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if d.max_samples > 0 and len(ds) > d.max_samples:  # type: ignore[arg-type]
        ds = Subset(ds, range(d.max_samples))
    return ds


def build_stereo_dataset(cfg: TrainConfig, split: str = "train", frames: int = 1) -> Dataset:
    """Training dataset of stereo samples for ``cfg.data`` (see the module docstring).

    * ``kitti_raw``, ``kitti_odometry``, ``sequence``:
      :func:`trianflow.data.sequences_dataset.build_training_dataset` with ``stereo=True`` and
      ``frames``;
    * ``synthetic`` (alias ``synthetic_stereo``): rendered stereo sequences
      (:class:`~trianflow.data.synthetic.SyntheticDataset`, baseline :data:`SYNTHETIC_BASELINE`,
      at least 2 frames per sample) named by ``data.sequences`` entries
      ``"<kind>[:<seed>[:<frames>[:<metres per frame>]]]"`` as in the trianflow task (default
      ``forward_turn:0:40``, 1 m per frame; other splits add 1000 to the seed);
    * ``kitti_stereo``: :class:`~trianflow.data.stereo_pairs.KittiStereoDataset` (``training``
      split, year detected from the layout, resized to ``data.size``);
    * ``stereo_folder``: :class:`~trianflow.data.stereo_pairs.StereoFolderDataset` of
      ``data.root`` with its ``calib.txt`` (focal length and baseline), resized to ``data.size``;
    * ``middlebury``: :class:`MiddleburyDataset` at ``scale = data.size[1] / 741`` (the width of
      ``data.size`` picks the scale, the height follows the aspect ratio), ``data.max_samples``
      items (64 when 0).

    Augmentation (``split="train"`` and ``data.augment``): ``data.scale_crop``, ``data.flip`` (a
    flip swaps left and right) and ``data.color_jitter``. ``data.max_samples > 0`` truncates.

    Args:
        cfg: the training config. split: ``"train"`` (augmented) or another name (not augmented).
        frames: 1 (stereo pairs) or 2/3 (pairs with temporal neighbours, for ``stereo_mono``).
    Raises:
        InputError: unknown dataset name, missing folder/calibration, empty dataset, or a dataset
        without temporal neighbours when ``frames > 1``.
    """
    from trianflow.data.sequences_dataset import build_training_dataset
    from trianflow.data.transforms import default_train_transform

    d = cfg.data
    name = d.dataset
    if name == "stereo_pairs":
        name = "stereo_folder"
    size = tuple(int(v) for v in d.size)
    train = split == "train"
    transform = None
    if train and d.augment:
        transform = default_train_transform(size=None, flip=d.flip, jitter=d.color_jitter, scale_crop=d.scale_crop)
    if name not in STEREO_DATASETS:
        raise InputError(f"unknown stereo dataset {d.dataset!r}: set data.dataset to one of {', '.join(STEREO_DATASETS)}")
    if name in ("synthetic", "synthetic_stereo"):
        return _synthetic_stereo(cfg, split, frames, transform)
    if name in ("kitti_raw", "kitti_odometry", "sequence"):
        dc = dataclasses.replace(d, stereo=True, frames=int(frames))
        return build_training_dataset(dc, split)
    if frames > 1:
        raise InputError(f"data.dataset={name} has no temporal neighbours; the stereo_mono task needs stereo video: "
                         "kitti_raw, kitti_odometry, synthetic or sequence")
    if name == "middlebury":
        scale = min(1.0, size[1] / MIDDLEBURY_WIDTH)
        ds: Dataset = MiddleburyDataset(scale=scale, length=d.max_samples if d.max_samples > 0 else 64,
                                        transform=transform)
        return ds
    if not d.root:
        raise InputError(f"data.root is empty: give the folder of the {name} dataset")
    if name == "kitti_stereo":
        from trianflow.data.stereo_pairs import KittiStereoDataset

        base: Dataset = KittiStereoDataset(d.root, split="training", year=_kitti_stereo_year(d.root), size=size)
    elif name == "stereo_folder":
        from trianflow.data.stereo_pairs import StereoFolderDataset

        base = StereoFolderDataset(d.root, size=size)
    else:  # pragma: no cover - every name of STEREO_DATASETS is handled above
        raise AssertionError(name)
    n = len(base)  # type: ignore[arg-type]
    if d.max_samples > 0:
        n = min(n, d.max_samples)
    return TransformedDataset(base, transform, length=n)


def _metric_abs_rel(depth: torch.Tensor, depth_gt: torch.Tensor, max_depth: float) -> torch.Tensor:
    """Mean AbsRel over the batch WITHOUT median scaling (stereo depth is metric); NaN-free."""
    d = depth.detach().float()
    g = depth_gt.float()
    ok = (g > 1e-3) & (g < max_depth) & torch.isfinite(d)
    rel = torch.where(ok, (d.clamp(1e-3, max_depth) - g).abs() / g.clamp(min=1e-3), torch.zeros_like(d))
    n = ok.flatten(1).sum(1)
    per = rel.flatten(1).sum(1) / n.clamp(min=1)
    return per[n > 0].mean() if bool((n > 0).any()) else torch.zeros((), device=d.device)


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------


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
            named["gt_abs_rel_metric"] = float(_metric_abs_rel(extras["depth"], batch["depth_gt"],
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

    The TrianFlow building blocks come from :mod:`trianflow.training.tasks`
    (``bidirectional_flow``, ``flow_consistency_loss``, ``two_view_geometry``) and
    :mod:`trianflow.losses` (``flow_loss``, ``trianflow_depth_objective``). The stereo depth of
    each scale (width fraction upsampled to full resolution, then ``fx B / (d W)``) is what the
    triangulation losses see; they align it to the triangulation's scale without gradient, so the
    metric scale comes from the stereo terms only. Logged besides the loss terms: ``n_valid``,
    ``inlier_ratio`` and, with ``depth_gt`` in the batch, ``gt_abs_rel_metric`` (AbsRel of the
    metric stereo depth, no median scaling).
    """

    def __init__(self, cfg: TrainConfig):
        from trianflow.models import build_flownet
        from trianflow.training.tasks import STAGES

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
        from trianflow.training.tasks import STAGES

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
        from trianflow.losses.flow import flow_valid_mask
        from trianflow.losses.triangulation import trianflow_depth_objective
        from trianflow.training import tasks as tf

        check_stereo_batch(batch, "stereo_mono task", need_next=True)
        L = self.cfg.loss
        stage = self.stage
        img1, img2 = batch["image"], batch["image_next"]
        in1, in2 = batch.get("image_aug", img1), batch.get("image_next_aug", img2)
        K = batch["K"].float()
        b, _, h, w = img1.shape
        dev = img1.device
        train_flow = stage in ("flow", "joint")

        # ---- networks (autocast on the forwards only)
        fwd, bwd = tf.flow_forward(ctx, in1, in2, train_flow)
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
                fterms = tf.flow_loss_terms(L, img1, img2, fwd, bwd, flow_mask, ns)
                total_f, fnamed = weighted_sum(fterms, tf.flow_weights(L), strict=False)
                total = total + total_f
                terms.update({k: v for k, v in fnamed.items() if k != "total"})
            # ---- TrianFlow triangulation losses on the stereo depth
            geo = None
            if stage in ("depth", "joint"):
                geo, epi = tf.depth_geometry(L, fwd[0], bwd[0], K, seed=self.cfg.train.seed * 1_000_003 + ctx.step)
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
                                                  min_points=tf._MIN_POINTS)
                    total = total + r.total / nd
                    for k in ("tri", "pf", "pd", "smooth"):
                        dterms[k] = dterms.get(k, 0.0) + float(r.terms[k].detach()) / nd
                terms.update(dterms)
                terms["n_valid"] = float(geo.valid.sum())
                nv = geo.corr.valid.sum(1).clamp(min=1).float()
                terms["inlier_ratio"] = float((geo.pose.inliers.sum(1).float() / nv).mean())
        if "depth_gt" in batch:
            terms["gt_abs_rel_metric"] = float(_metric_abs_rel(extras["depth"], batch["depth_gt"], L.max_depth))
        images = None
        if ctx.want_images:
            images = self._images(batch, extras)
            images["flow"] = fwd[0][:1].detach()
            images["flow_mask"] = flow_mask[:1]
            if geo is not None:
                from trianflow.training.trainer import draw_points

                images["inliers"] = draw_points(img1[0], geo.corr.x1[0], valid=geo.pose.inliers[0])
        return StepOutput(loss=total, terms=terms, images=images, num_images=b)
