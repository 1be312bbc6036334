"""Edge-aware smoothness: 1st/2nd order on disparity (depth nets) and 2nd order on flow.

Image gradients down-weight the penalty at image edges: ``w = exp(-edge_weight * mean_c |dI|)``.
All functions return one value per sample ``(B,)``; average over the batch yourself.
"""

from __future__ import annotations

import torch

from trianflow.errors import InputError


def _dx(t: torch.Tensor) -> torch.Tensor:
    return t[..., :, 1:] - t[..., :, :-1]


def _dy(t: torch.Tensor) -> torch.Tensor:
    return t[..., 1:, :] - t[..., :-1, :]


def _check(field: torch.Tensor, img: torch.Tensor, name: str, min_size: int):
    if field.shape[0] != img.shape[0] or field.shape[-2:] != img.shape[-2:]:
        raise InputError(
            f"{name}: field {tuple(field.shape)} and image {tuple(img.shape)} must share batch size and H, W"
        )
    if field.shape[-1] < min_size or field.shape[-2] < min_size:
        raise InputError(f"{name}: needs at least {min_size}x{min_size} pixels, got {tuple(field.shape[-2:])}")


def edge_aware_smoothness(disp: torch.Tensor, img: torch.Tensor, order: int = 1, normalize: bool = True,
                          edge_weight: float = 1.0, eps: float = 1e-7) -> torch.Tensor:
    """Edge-aware smoothness of a disparity map.

    ``mean(|d_x^k D| exp(-a |d_x I|)) + mean(|d_y^k D| exp(-a |d_y I|))`` with ``k = order`` and
    ``D = disp / mean(disp)`` when ``normalize`` (mean-normalised disparity as in TrianFlow and
    Monodepth2, which stops the net from shrinking disparity to lower this term). Image
    gradients are first-order, averaged over channels; for ``order=2`` the weight of the second
    difference centred on pixel i is the first-order weight at i.

    Args:
        disp: ``(B,1,H,W)`` disparity (or any 1-channel map).
        img: ``(B,C,H,W)`` guide image.
        order: 1 or 2.
        normalize: divide by the per-sample mean of ``disp`` first.
        edge_weight: ``a`` above (1 for depth; TrianFlow uses 10 for flow).
    Returns:
        ``(B,)`` smoothness per sample.
    """
    if order not in (1, 2):
        raise InputError(f"edge_aware_smoothness: order must be 1 or 2, got {order}")
    _check(disp, img, "edge_aware_smoothness", order + 1)
    if normalize:
        disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + eps)
    wx = torch.exp(-edge_weight * _dx(img).abs().mean(1, keepdim=True))
    wy = torch.exp(-edge_weight * _dy(img).abs().mean(1, keepdim=True))
    gx, gy = _dx(disp), _dy(disp)
    if order == 2:
        gx, gy = _dx(gx), _dy(gy)
        wx, wy = wx[..., :, 1:], wy[..., 1:, :]
    return (gx.abs() * wx).mean(dim=(1, 2, 3)) + (gy.abs() * wy).mean(dim=(1, 2, 3))


def flow_smoothness_2nd(flow: torch.Tensor, img: torch.Tensor, edge_weight: float = 10.0,
                        flow_scale: float = 20.0) -> torch.Tensor:
    """Second-order edge-aware smoothness of optical flow (TrianFlow's flow regulariser).

    ``0.5 * [mean(w_x |d_xx f|) + mean(w_y |d_yy f|)]`` on ``f = flow / flow_scale`` with
    ``w = exp(-edge_weight * mean_c |dI|)``. The defaults (``edge_weight = 10``, ``flow_scale = 20``)
    follow the TrianFlow code; the loss weight is applied by the caller
    (:func:`trianflow.losses.flow.flow_loss`). Second order lets planar, piecewise-affine flow
    (rotation, zoom, slanted planes) cost nothing.

    Args:
        flow: ``(B,2,H,W)`` flow in pixels.
        img: ``(B,C,H,W)`` image the flow starts from.
    Returns:
        ``(B,)`` smoothness per sample; 0 for any flow that is affine in x and y separately.
    """
    _check(flow, img, "flow_smoothness_2nd", 3)
    f = flow / flow_scale
    wx = torch.exp(-edge_weight * _dx(img).abs().mean(1, keepdim=True))[..., :, 1:]
    wy = torch.exp(-edge_weight * _dy(img).abs().mean(1, keepdim=True))[..., 1:, :]
    ex = (wx * _dx(_dx(f)).abs()).mean(dim=(1, 2, 3))
    ey = (wy * _dy(_dy(f)).abs()).mean(dim=(1, 2, 3))
    return 0.5 * (ex + ey)
