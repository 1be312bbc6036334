"""Batched torch metrics against the ground truth a training batch carries, and an evaluation of
networks over a dataset with ground truth.

* :func:`flow_epe` - mean flow end-point error per sample (px);
* :func:`median_scaled_abs_rel` - depth AbsRel per image after median scaling (monocular protocol);
* :func:`metric_abs_rel` - batch-mean AbsRel of a metric (stereo) depth, no scaling;
* :func:`evaluate_against_gt` - mean EPE and median-scaled AbsRel of a FlowNet / DepthNet over a
  dataset (e.g. :class:`trianflow.data.synthetic.SyntheticDataset`).

The full KITTI depth protocol (Eigen metrics, crops, files) is :mod:`trianflow.evaluation.depth_metrics`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from trianflow.geometry.flow import flow_magnitude
from trianflow.models import unwrap_model

__all__ = ["flow_epe", "median_scaled_abs_rel", "metric_abs_rel", "evaluate_against_gt"]

GT_MAX_DEPTH = 80.0  # depth cap of the ground-truth AbsRel (as in the KITTI protocol)


def flow_epe(flow: torch.Tensor, flow_gt: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean end-point error per sample.

    Args:
        flow, flow_gt: ``(B,2,H,W)``; valid: ``(B,1,H,W)`` mask of pixels with ground truth.
    Returns:
        ``(B,)`` mean ``||flow - flow_gt||`` over the valid pixels (0 where none).
    """
    err = flow_magnitude(flow.detach().float() - flow_gt.float())
    m = torch.ones_like(err) if valid is None else (valid > 0).to(err.dtype)
    num = torch.where(m > 0, err * m, torch.zeros_like(err))
    return num.flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1e-12)


def median_scaled_abs_rel(depth: torch.Tensor, depth_gt: torch.Tensor, max_depth: float = GT_MAX_DEPTH,
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


def metric_abs_rel(depth: torch.Tensor, depth_gt: torch.Tensor, max_depth: float) -> torch.Tensor:
    """Mean AbsRel over the batch WITHOUT median scaling (stereo depth is metric); NaN-free."""
    d = depth.detach().float()
    g = depth_gt.float()
    ok = (g > 1e-3) & (g < max_depth) & torch.isfinite(d)
    rel = torch.where(ok, (d.clamp(1e-3, max_depth) - g).abs() / g.clamp(min=1e-3), torch.zeros_like(d))
    n = ok.flatten(1).sum(1)
    per = rel.flatten(1).sum(1) / n.clamp(min=1)
    return per[n > 0].mean() if bool((n > 0).any()) else torch.zeros((), device=d.device)


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
                fwd = unwrap_model(flow_net)(batch["image"], batch["image_next"])[0]
                epes.append(flow_epe(fwd, batch["flow_gt"], batch.get("flow_valid")))
            if depth_net is not None and "depth_gt" in batch:
                dn = unwrap_model(depth_net)
                depth = dn.depth(dn(batch["image"])["disp"][0].float())
                rels.append(median_scaled_abs_rel(depth, batch["depth_gt"]))
    finally:
        for m, mode in zip(nets, modes):
            m.train(mode)
    epe = float(torch.cat(epes).mean()) if epes else None
    rel = torch.cat(rels) if rels else None
    return {"epe": epe, "abs_rel": float(torch.nanmean(rel)) if rel is not None else None, "pairs": len(dataset)}
