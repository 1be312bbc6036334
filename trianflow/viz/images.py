"""Torch images for tensorboard: flow colour wheel, scalar maps, dots on an image.

Every function takes and returns ``(…,3,H,W)`` float tensors in [0, 1]; nothing here imports
matplotlib. Used by the trainer (:func:`to_display` for every logged image) and the training
tasks (:func:`draw_points` for the RANSAC inliers).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["flow_to_rgb", "colorize", "draw_points", "to_display"]


def flow_to_rgb(flow: torch.Tensor, max_mag: float | None = None) -> torch.Tensor:
    """Colour-code flow: hue = direction, saturation = magnitude / ``max_mag`` (zero flow is white).

    Args:
        flow: ``(B,2,H,W)``, channel 0 = x. Direction +x is red, +y (down) yellow-green, -x cyan.
        max_mag: magnitude shown fully saturated; default per-sample maximum.

    Returns:
        ``(B,3,H,W)`` float in [0, 1].
    """
    flow = flow.detach().float()
    u, v = flow[:, 0], flow[:, 1]
    mag = torch.sqrt(u * u + v * v)
    if max_mag is None:
        m = mag.flatten(1).amax(dim=1).clamp_min(1e-6)[:, None, None]
    else:
        m = torch.as_tensor(float(max_mag), device=flow.device).clamp_min(1e-6)
    hue = (torch.atan2(v, u) / (2 * math.pi)) % 1.0
    sat = (mag / m).clamp(0, 1)
    val = torch.ones_like(sat)
    chans = []
    for n in (5.0, 3.0, 1.0):  # HSV -> RGB
        k = (n + hue * 6.0) % 6.0
        chans.append(val - val * sat * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(chans, dim=1)


def colorize(x: torch.Tensor, vmin: float | None = None, vmax: float | None = None) -> torch.Tensor:
    """Grey image of a scalar map, min-max normalised per sample over finite values.

    Args:
        x: ``(B,1,H,W)`` (depth, disparity, mask, ...).
        vmin, vmax: fixed range instead of the per-sample min/max.

    Returns:
        ``(B,3,H,W)`` float in [0, 1]; non-finite pixels are 0.
    """
    x = x.detach().float()
    finite = torch.isfinite(x)
    flat = torch.where(finite, x, torch.nan).flatten(1)
    lo = torch.nan_to_num(torch.from_numpy(np.nanmin(flat.cpu().numpy(), axis=1))).to(x.device) if vmin is None \
        else torch.full((x.shape[0],), float(vmin), device=x.device)
    hi = torch.nan_to_num(torch.from_numpy(np.nanmax(flat.cpu().numpy(), axis=1))).to(x.device) if vmax is None \
        else torch.full((x.shape[0],), float(vmax), device=x.device)
    lo, hi = lo.view(-1, 1, 1, 1), hi.view(-1, 1, 1, 1)
    y = ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    y = torch.where(finite, y, torch.zeros_like(y))
    return y.expand(-1, 3, -1, -1).contiguous()


def draw_points(image: torch.Tensor, points: torch.Tensor, color=(0.0, 1.0, 0.0),
                valid: torch.Tensor | None = None, radius: int = 1) -> torch.Tensor:
    """Draw square dots (e.g. inlier correspondences) on a copy of an image.

    Args:
        image: ``(3,H,W)`` float in [0, 1].
        points: ``(N,2)`` pixel x, y (pixel centres at integer coordinates).
        color: RGB of the dots.
        valid: ``(N,)`` bool; only these points are drawn.
        radius: half size of the square in pixels (0 = single pixel).

    Returns:
        ``(3,H,W)`` copy with the dots drawn; points outside the image are ignored.
    """
    out = image.detach().clone().float()
    _, h, w = out.shape
    pts = points.detach().to(out.device).float()
    if valid is not None:
        pts = pts[valid.to(out.device).bool()]
    xy = torch.round(pts).long()
    col = torch.tensor(color, dtype=out.dtype, device=out.device)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            x = xy[:, 0] + dx
            y = xy[:, 1] + dy
            keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            out[:, y[keep], x[keep]] = col[:, None]
    return out


def to_display(t: torch.Tensor) -> torch.Tensor:
    """First sample of an image-like tensor as ``(3,H,W)`` float in [0, 1] on CPU.

    ``(B,C,H,W)``, ``(C,H,W)`` or ``(H,W)``; ``C`` = 3 (RGB), 2 (flow) or 1 (scalar map).
    """
    t = t.detach()
    if t.dim() == 2:
        t = t[None]
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4 or t.shape[1] not in (1, 2, 3):
        raise ValueError(f"image must be (B,C,H,W) with C in 1, 2, 3; got shape {tuple(t.shape)}")
    t = t[:1].float()
    if t.shape[1] == 3:
        img = t.clamp(0, 1)
    elif t.shape[1] == 2:
        img = flow_to_rgb(t)
    else:
        img = colorize(t)
    return img[0].cpu()
