"""Photometric error: SSIM on 3x3 average pooling mixed with L1, and masked means.

``photometric_error = alpha * (1 - SSIM) / 2 + (1 - alpha) * |x - y|`` with ``alpha = 0.85``
(Monodepth, TrianFlow). SSIM uses 3x3 mean pooling (not a Gaussian window) with reflection
padding, so the map has the input's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trianflow.errors import InputError


def ssim(x: torch.Tensor, y: torch.Tensor, c1: float = 0.01**2, c2: float = 0.03**2) -> torch.Tensor:
    """Per-pixel SSIM of two images with 3x3 average pooling and reflection padding.

    Args:
        x, y: ``(B,C,H,W)`` images in [0,1] (H, W >= 2).
        c1, c2: stabilising constants ``(0.01 L)^2`` and ``(0.03 L)^2`` for data range ``L = 1``.
    Returns:
        ``(B,C,H,W)`` SSIM map, 1 where the local windows are identical (range [-1, 1]).
    """
    if x.shape != y.shape:
        raise InputError(f"ssim: image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise InputError(f"ssim: images must be at least 2x2 pixels, got {tuple(x.shape[-2:])}")
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    yp = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(xp, 3, 1)
    mu_y = F.avg_pool2d(yp, 3, 1)
    sigma_x = F.avg_pool2d(xp * xp, 3, 1) - mu_x * mu_x
    sigma_y = F.avg_pool2d(yp * yp, 3, 1) - mu_y * mu_y
    sigma_xy = F.avg_pool2d(xp * yp, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
    return num / den


def photometric_error(x: torch.Tensor, y: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """Per-pixel photometric error ``alpha * (1 - SSIM)/2 + (1 - alpha) * L1``, averaged over channels.

    ``(1 - SSIM)/2`` is clamped to [0, 1].

    Args:
        x, y: ``(B,C,H,W)`` images in [0,1].
        alpha: SSIM weight (0.85 in Monodepth / TrianFlow).
    Returns:
        ``(B,1,H,W)`` error, 0 for identical images.
    """
    l1 = (x - y).abs().mean(1, keepdim=True)
    if alpha == 0:
        return l1
    dssim = ((1 - ssim(x, y)) / 2).clamp(0, 1).mean(1, keepdim=True)
    return alpha * dssim + (1 - alpha) * l1


def masked_mean(err: torch.Tensor, mask: torch.Tensor | None = None, per_sample: bool = True,
                eps: float = 1e-12) -> torch.Tensor:
    """Mean of ``err`` over the pixels where ``mask`` is set (soft masks weight the mean).

    Args:
        err: ``(B,C,H,W)`` error map.
        mask: ``(B,1,H,W)`` or ``(B,C,H,W)`` weights in [0,1] (bool allowed), or None (all ones).
        per_sample: True -> ``(B,)`` mean per sample; False -> scalar mean over the whole batch.
        eps: guards the division; a sample (or batch) with an empty mask gets 0 (finite, and the
            gradient is 0).
    Returns:
        ``(B,)`` or a 0-dim tensor.
    """
    if mask is None:
        mask = torch.ones_like(err[:, :1])
    mask = mask.to(err.dtype)
    if mask.shape[1] == 1 and err.shape[1] != 1:
        mask = mask.expand(-1, err.shape[1], -1, -1)
    if mask.shape != err.shape:
        raise InputError(f"masked_mean: mask shape {tuple(mask.shape)} does not match error {tuple(err.shape)}")
    # where() instead of err * mask so that NaN/inf in masked-out pixels cannot leak into the mean
    num = torch.where(mask > 0, err * mask, torch.zeros_like(err))
    if per_sample:
        return num.flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=eps)
    return num.sum() / mask.sum().clamp(min=eps)
