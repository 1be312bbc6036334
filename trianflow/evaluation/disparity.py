"""Stereo disparity evaluation: absolute disparity error statistics and a non-occlusion mask.

:func:`disparity_errors` (median / mean / RMSE in pixels, bad-1/2/3 fractions) over the known GT
pixels, optionally restricted to :func:`nonoccluded_mask` (known, in view in the right image and
not occluded, derived from the left GT disparity alone).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from trianflow.errors import InputError

__all__ = ["nonoccluded_mask", "disparity_errors"]


def _known_pixels(d: np.ndarray, mask, who: str, d_name: str, mask_name: str) -> np.ndarray:
    """``(H,W)`` bool: finite positive disparities of ``d (H,W)``, within the optional ``mask``
    (InputError naming ``who`` for a wrong shape)."""
    if d.ndim != 2:
        raise InputError(f"{who}: {d_name} must be (H,W), got shape {d.shape}")
    known = np.isfinite(d) & (d > 0)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != d.shape:
            raise InputError(f"{who}: {mask_name} {m.shape} differs from {d_name} {d.shape}")
        known &= m
    return known


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
    known = _known_pixels(d, valid, "nonoccluded_mask", "disparity", "valid mask")
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
    m = _known_pixels(g, mask, "disparity_errors", "GT", "mask")
    p = resize_prediction(pred_px, g.shape, kind="disp").astype(np.float64)
    if not m.any():
        raise EmptyMaskError("disparity_errors: no GT pixel to evaluate (empty GT mask)")
    e = np.abs(p[m] - g[m])
    if np.isnan(e).any():
        raise InputError(f"disparity_errors: prediction has NaN at {int(np.isnan(e).sum())} evaluated pixel(s)")
    return {"median": float(np.median(e)), "mean": float(e.mean()), "rmse": float(np.sqrt((e * e).mean())),
            "bad1": float((e > 1).mean()), "bad2": float((e > 2).mean()), "bad3": float((e > 3).mean()),
            "n_pixels": int(m.sum())}
