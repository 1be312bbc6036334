"""Backward warping by depth + pose and by stereo disparity; stereo depth <-> disparity.

All functions are batched, differentiable torch functions that run on the input's device and
dtype. Conventions (see DESIGN.md): images ``(B,C,H,W)``, depth ``(B,1,H,W)``, flow
``(B,2,H,W)`` = coords in image 2 minus coords in image 1 (channel 0 = x), ``K (B,3,3)``,
``T_1to2 (B,4,4)`` maps camera-1 points to camera-2 points, ``X2 = R X1 + t``. Pixel centres
are at integer coordinates.

Warping by optical flow lives in :mod:`trianflow.geometry.flow` (:func:`flow_warp`).
:func:`stereo_depth` turns a stereo network's width-fraction disparity into metric depth;
:func:`resize_disparity` brings a disparity map (pixels) to another resolution.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from trianflow.errors import InputError
from trianflow.geometry.camera import backproject_depth, pixel_grid, project
from trianflow.geometry.flow import flow_warp, sample_at
from trianflow.geometry.pose import transform_points


def project_depth_pose(depth1: torch.Tensor, T_1to2: torch.Tensor, K: torch.Tensor, K2: torch.Tensor | None = None,
                       eps: float = 1e-6):
    """Where every pixel of image 1 lands in image 2, given its depth and the relative pose.

    Args:
        depth1: ``(B,1,H,W)`` depth of image 1 (> 0 where known).
        T_1to2: ``(B,4,4)`` camera-1 -> camera-2 transform.
        K: ``(B,3,3)`` intrinsics of camera 1 (and of camera 2 unless ``K2`` is given).
        K2: optional ``(B,3,3)`` intrinsics of camera 2.
        eps: smallest depth in camera 2 that counts as "in front of the camera".
    Returns:
        ``(uv2, z2)``: ``(B,2,H,W)`` pixel coordinates in image 2 (channel 0 = x) and ``(B,1,H,W)``
        depth of the point in camera 2. Pixels whose point lies behind camera 2 have ``z2 <= eps``
        (their ``uv2`` is finite but meaningless; mask them with ``z2 > eps``).
    """
    b, _, h, w = depth1.shape
    pts1 = backproject_depth(depth1, K).reshape(b, 3, h * w).transpose(1, 2)  # (B,HW,3)
    pts2 = transform_points(T_1to2.to(pts1.dtype), pts1)
    uv2, z2 = project(pts2, (K if K2 is None else K2).to(pts1.dtype), eps=eps)
    uv2 = uv2.transpose(1, 2).reshape(b, 2, h, w)
    return uv2, z2.reshape(b, 1, h, w)


def depth_pose_flow(depth1: torch.Tensor, T_1to2: torch.Tensor, K: torch.Tensor,
                    K2: torch.Tensor | None = None) -> torch.Tensor:
    """Rigid flow induced by the depth of image 1 and the camera motion.

    Args:
        depth1: ``(B,1,H,W)``; T_1to2: ``(B,4,4)``; K: ``(B,3,3)``; K2: optional ``(B,3,3)``.
    Returns:
        ``(B,2,H,W)`` flow 1 -> 2 (``uv2 - uv1``) in pixels.
    """
    b, _, h, w = depth1.shape
    uv2, _ = project_depth_pose(depth1, T_1to2, K, K2)
    return uv2 - pixel_grid(h, w, device=depth1.device, dtype=uv2.dtype).unsqueeze(0)


def in_image(uv: torch.Tensor, h: int, w: int, tol: float = 1e-3) -> torch.Tensor:
    """Whether pixel coordinates lie inside an ``h x w`` image, with a small tolerance.

    The tolerance keeps pixels that land exactly on the border (e.g. ``y = h - 1`` under a pure
    x translation) valid despite rounding (float32 gives ``h - 1 + 1e-6``).

    Args:
        uv: ``(B,2,H,W)`` coordinates, channel 0 = x.
        h, w: target image size; tol: tolerance in pixels.
    Returns:
        ``(B,1,H,W)`` bool.
    """
    x, y = uv[:, 0:1], uv[:, 1:2]
    return (x >= -tol) & (x <= w - 1 + tol) & (y >= -tol) & (y <= h - 1 + tol)


def warp_by_depth_pose(img2: torch.Tensor, depth1: torch.Tensor, T_1to2: torch.Tensor, K: torch.Tensor,
                       K2: torch.Tensor | None = None, padding_mode: str = "zeros", eps: float = 1e-6):
    """Synthesise image 1 from image 2 by backward warping with depth 1 and pose 1 -> 2.

    Every pixel p of image 1 is back-projected with ``depth1(p)``, moved into camera 2 with
    ``T_1to2``, projected with ``K`` (or ``K2``) and image 2 is sampled there (bilinear).

    Args:
        img2: ``(B,C,H2,W2)`` image 2 (any channel count: images, depth maps, features).
        depth1: ``(B,1,H,W)`` depth of image 1.
        T_1to2: ``(B,4,4)``; K: ``(B,3,3)``; K2: optional ``(B,3,3)`` for camera 2.
        padding_mode: ``grid_sample`` padding for samples outside image 2.
    Returns:
        ``(warped, valid)``: ``(B,C,H,W)`` image 2 seen from camera 1 and ``(B,1,H,W)`` float mask,
        1 where the projection lies inside image 2 (1e-3 px tolerance, see :func:`in_image`)
        and in front of camera 2.
    """
    if img2.shape[0] != depth1.shape[0]:
        raise InputError(f"warp_by_depth_pose: batch sizes differ (image {img2.shape[0]}, depth {depth1.shape[0]})")
    h2, w2 = img2.shape[-2:]
    uv2, z2 = project_depth_pose(depth1, T_1to2, K, K2, eps=eps)
    xy = uv2.permute(0, 2, 3, 1)  # (B,H,W,2)
    warped = sample_at(img2, xy, padding_mode=padding_mode)
    valid = in_image(uv2, h2, w2) & (z2 > eps)
    return warped, valid.to(img2.dtype)


def disparity_warp(img: torch.Tensor, disp_px: torch.Tensor, direction: str, padding_mode: str = "border"):
    """Backward warping along image rows for a rectified stereo pair (right camera at +x).

    A scene point at column x in the left image appears at ``x - d`` in the right image.

    * ``direction="to_left"``: ``img`` is the RIGHT image (or right-aligned map), ``disp_px`` the
      LEFT disparity; returns ``img(x - d_left(x), y)``, i.e. the left view synthesised.
    * ``direction="to_right"``: ``img`` is the LEFT image, ``disp_px`` the RIGHT disparity;
      returns ``img(x + d_right(x), y)``, the right view synthesised.

    Args:
        img: ``(B,C,H,W)``.
        disp_px: ``(B,1,H,W)`` disparity in pixels (>= 0 for points in front of the rig).
        direction: ``"to_left"`` or ``"to_right"``.
        padding_mode: ``grid_sample`` padding; ``"border"`` as in Monodepth.
    Returns:
        ``(warped, valid)``: ``(B,C,H,W)`` and a ``(B,1,H,W)`` float mask, 1 where the sample lies
        inside ``img``.
    """
    if direction == "to_left":
        sign = -1.0
    elif direction == "to_right":
        sign = 1.0
    else:
        raise InputError(f"disparity_warp: direction must be 'to_left' or 'to_right', got {direction!r}")
    if disp_px.shape[1] != 1 or disp_px.shape[-2:] != img.shape[-2:]:
        raise InputError(
            f"disparity_warp: disparity shape {tuple(disp_px.shape)} does not match image {tuple(img.shape)}; "
            "expected (B,1,H,W) at the image's resolution"
        )
    flow = torch.cat([sign * disp_px, torch.zeros_like(disp_px)], dim=1)
    return flow_warp(img, flow, padding_mode=padding_mode)


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
