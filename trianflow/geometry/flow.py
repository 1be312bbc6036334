"""Optical-flow geometry: backward warping, forward-backward consistency, occlusion by splatting.

Flow ``(B,2,H,W)`` = coordinates in image 2 minus coordinates in image 1, channel 0 = x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trianflow.geometry.camera import pixel_grid


def normalize_coords(xy: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pixel coordinates ``(...,2)`` -> ``[-1,1]`` for ``grid_sample(align_corners=True)``."""
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=xy.dtype, device=xy.device)
    return xy * scale - 1.0


def sample_at(img: torch.Tensor, xy: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros"):
    """Sample ``img (B,C,H,W)`` at pixel coordinates ``xy (B,H',W',2)`` -> ``(B,C,H',W')``."""
    h, w = img.shape[-2:]
    grid = normalize_coords(xy, h, w).to(img.dtype)
    return F.grid_sample(img, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def flow_warp(img: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros"):
    """Backward-warp ``img`` (image 2) into image 1's frame with ``flow`` (1 -> 2).

    Args:
        img: ``(B,C,H,W)`` image 2.
        flow: ``(B,2,H,W)`` flow from image 1 to image 2.
    Returns:
        ``(warped, valid)``: ``(B,C,H,W)`` image 2 sampled at ``p + flow(p)`` and ``(B,1,H,W)``
        float mask, 1 where the sample lies inside image 2.
    """
    b, _, h, w = flow.shape
    grid = pixel_grid(h, w, device=flow.device, dtype=flow.dtype).unsqueeze(0) + flow  # (B,2,H,W)
    xy = grid.permute(0, 2, 3, 1)
    warped = sample_at(img, xy, padding_mode=padding_mode)
    tol = 1e-3  # float32 round-off must not drop pixels exactly on the border
    valid = (
        (xy[..., 0] >= -tol) & (xy[..., 0] <= w - 1 + tol) & (xy[..., 1] >= -tol) & (xy[..., 1] <= h - 1 + tol)
    ).unsqueeze(1)
    return warped, valid.to(img.dtype)


def flow_magnitude(flow: torch.Tensor) -> torch.Tensor:
    """Per-pixel length ``(B,1,H,W)`` of a flow ``(B,2,H,W)``.

    ``torch.hypot`` of the two channels: ~50x faster on CPU than ``norm(dim=1)``, which reduces over
    a strided size-2 dimension (10 ms vs 0.2 ms at 613x185). Its gradient is undefined at zero
    flow, so use it for masks, scores and metrics, not inside a loss.
    """
    return torch.hypot(flow[:, 0], flow[:, 1]).unsqueeze(1)


def fb_consistency(flow_fwd: torch.Tensor, flow_bwd: torch.Tensor) -> torch.Tensor:
    """Forward-backward distance ``|f(p) + b(p + f(p))|`` per pixel of image 1.

    Args:
        flow_fwd: ``(B,2,H,W)`` flow 1 -> 2.  flow_bwd: ``(B,2,H,W)`` flow 2 -> 1.
    Returns:
        ``(B,1,H,W)`` distance in pixels (large where the forward flow leaves image 2); a score
        for masks and selection (see :func:`flow_magnitude`), not differentiable at 0.
    """
    bwd_at_fwd, valid = flow_warp(flow_bwd, flow_fwd, padding_mode="border")
    dist = flow_magnitude(flow_fwd + bwd_at_fwd)
    big = torch.full_like(dist, 1e3)
    return torch.where(valid > 0, dist, big)


def occlusion_mask(flow_bwd: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Visibility of image-1 pixels in image 2 by forward splatting of the backward flow.

    Every pixel q of image 2 is splatted bilinearly to ``q + flow_bwd(q)`` in image 1. Pixels
    of image 1 that receive (almost) no weight have no counterpart in image 2: occluded or out
    of view. The result is not differentiable (it is a mask).

    Args:
        flow_bwd: ``(B,2,H,W)`` flow from image 2 to image 1.
        threshold: accumulated splat weight below which a pixel counts as occluded; with
            ``threshold <= 0`` the clamped weight itself (in [0,1]) is returned, as TrianFlow does.
    Returns:
        ``(B,1,H,W)`` float mask in [0,1], 1 = visible in image 2.
    """
    with torch.no_grad():
        b, _, h, w = flow_bwd.shape
        grid = pixel_grid(h, w, device=flow_bwd.device, dtype=torch.float32).unsqueeze(0)
        tgt = (grid + flow_bwd.float()).reshape(b, 2, -1)  # (B,2,HW)
        x, y = tgt[:, 0], tgt[:, 1]
        x0, y0 = torch.floor(x), torch.floor(y)
        fx, fy = x - x0, y - y0
        offset = (torch.arange(b, device=flow_bwd.device) * (h * w)).unsqueeze(1)
        idx, wts = [], []
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            xi, yi = x0 + dx, y0 + dy
            wgt = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
            ok = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            idx.append(torch.where(ok, (yi * w + xi).long() + offset, torch.zeros_like(offset).expand_as(ok)))
            wts.append(torch.where(ok, wgt, torch.zeros_like(wgt)))
        acc = torch.bincount(torch.cat(idx, 1).flatten(), weights=torch.cat(wts, 1).flatten(), minlength=b * h * w)
        acc = acc.reshape(b, 1, h, w).float()
        if threshold <= 0:
            return acc.clamp(0, 1).to(flow_bwd.dtype)
        return (acc >= threshold).to(flow_bwd.dtype)
