"""Colour maps as ``(H,W,3)`` uint8 RGB (numpy): depth, inverse depth, errors, and the Middlebury flow
colour wheel (:func:`flow_to_color`, the ``.png`` of ``trianflow flow``).

matplotlib is imported inside :func:`colorize_map` only (its colour-map tables), never pyplot.
Used by ``trianflow depth`` (``--vis``), ``trianflow eval-depth --vis`` and
:func:`trianflow.evaluation.depth_metrics.depth_error_image`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from trianflow.errors import InputError

__all__ = ["colorize_map", "colorize_inverse_depth", "colorize_error", "flow_to_color"]


def colorize_map(values: np.ndarray, mask: Optional[np.ndarray] = None, cmap: str = "magma",
             vmin: Optional[float] = None, vmax: Optional[float] = None,
             invalid_color=(0, 0, 0)) -> np.ndarray:
    """Map ``(H,W)`` values to an ``(H,W,3)`` uint8 RGB image with a matplotlib colour map.

    Args:
        values: ``(H,W)`` numbers (numpy or torch).
        mask: optional ``(H,W)`` bool; False pixels (and non-finite values) get ``invalid_color``.
        cmap: any matplotlib colour-map name (``"magma"``, ``"viridis"``, ``"jet"``, ...).
        vmin, vmax: value range mapped to the ends of the colour map; by default the 5th / 95th
            percentile of the valid values (min/max when fewer than 20 valid pixels).
    """
    import matplotlib

    v = _numpy(values).astype(np.float64)
    if v.ndim != 2:
        raise InputError(f"colorize_map: expected a (H,W) map, got shape {v.shape}")
    valid = np.isfinite(v)
    if mask is not None:
        m = _numpy(mask).astype(bool)
        if m.shape != v.shape:
            raise InputError(f"colorize_map: mask shape {m.shape} differs from values {v.shape}")
        valid &= m
    vals = v[valid]
    if vmin is None or vmax is None:
        if vals.size == 0:
            lo, hi = 0.0, 1.0
        elif vals.size < 20:
            lo, hi = float(vals.min()), float(vals.max())
        else:
            lo, hi = (float(x) for x in np.percentile(vals, [5, 95]))
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    span = vmax - vmin if vmax > vmin else 1.0
    t = np.clip((np.where(valid, v, vmin) - vmin) / span, 0.0, 1.0)
    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError as exc:
        raise InputError(f"unknown colour map {cmap!r} (use a matplotlib name such as magma or jet)") from exc
    rgb = (cm(t)[..., :3] * 255.0 + 0.5).astype(np.uint8)
    rgb[~valid] = np.asarray(invalid_color, dtype=np.uint8)
    return rgb


def colorize_inverse_depth(depth: np.ndarray, mask: Optional[np.ndarray] = None, cmap: str = "magma") -> np.ndarray:
    """Colour-map ``(H,W)`` depth by its inverse (near = bright): ``(H,W,3)`` uint8 RGB.

    Pixels with depth <= 0, non-finite, or outside ``mask`` are black.
    """
    d = _numpy(depth).astype(np.float64)
    valid = np.isfinite(d) & (d > 0)
    if mask is not None:
        valid &= _numpy(mask).astype(bool)
    inv = np.zeros_like(d)
    inv[valid] = 1.0 / d[valid]
    vmax = float(np.percentile(inv[valid], 95)) if valid.any() else 1.0
    return colorize_map(inv, valid, cmap=cmap, vmin=0.0, vmax=vmax)


def colorize_error(error: np.ndarray, mask: Optional[np.ndarray] = None, vmax: float = 0.3,
                   cmap: str = "jet") -> np.ndarray:
    """Colour-map an ``(H,W)`` error map on the fixed range ``[0, vmax]`` (blue = 0, red >= vmax).

    A fixed range makes images of different frames comparable. Pixels outside ``mask`` are black.
    """
    return colorize_map(error, mask, cmap=cmap, vmin=0.0, vmax=vmax)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _color_wheel() -> np.ndarray:
    """The 55 colours of the Baker et al. (Middlebury) flow colour wheel, ``(55,3)`` float in [0,255]."""
    # hue segments: red->yellow, yellow->green, green->cyan, cyan->blue, blue->magenta, magenta->red
    segments = ((15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)),
                (4, (0, 255, 0), (0, 255, 255)), (11, (0, 255, 255), (0, 0, 255)),
                (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0)))
    rows = []
    for n, start, end in segments:
        t = np.floor(255.0 * np.arange(n) / n) / 255.0  # integer colour steps as in the reference
        rows.append(np.asarray(start, float)[None] + t[:, None] * (np.asarray(end, float) - np.asarray(start, float)))
    return np.concatenate(rows, 0)


def flow_to_color(flow: np.ndarray, max_flow: Optional[float] = None) -> np.ndarray:
    """Colour-code ``(H,W,2)`` flow with the Middlebury colour wheel (Baker et al., IJCV 2011).

    Hue = direction: the angle ``atan2(-v, -u)`` indexes the 55-colour wheel (+x is red, +y
    (down) orange-yellow, -x cyan-blue, -y violet); saturation = magnitude / ``max_flow``
    (default: the largest finite magnitude), so zero flow is white; magnitudes above
    ``max_flow`` are darkened (x0.75). Non-finite vectors are black.

    Returns:
        ``(H,W,3)`` uint8 RGB.
    """
    f = np.asarray(flow)
    if f.ndim != 3 or f.shape[2] != 2:
        raise InputError(f"flow_to_color: expected an (H,W,2) flow, got shape {f.shape}")
    f = f.astype(np.float64)
    u, v = f[..., 0], f[..., 1]
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u = np.where(bad, 0.0, u)
    v = np.where(bad, 0.0, v)
    rad = np.sqrt(u * u + v * v)
    m = float(max_flow) if max_flow is not None else float(rad.max()) if rad.size else 0.0
    m = max(m, 1e-9)
    u, v, rad = u / m, v / m, rad / m
    wheel = _color_wheel() / 255.0
    ncols = len(wheel)
    a = np.arctan2(-v, -u) / np.pi  # (-1, 1]
    fk = (a + 1.0) / 2.0 * (ncols - 1)
    k0 = np.floor(fk).astype(int) % ncols
    k1 = (k0 + 1) % ncols
    frac = (fk - np.floor(fk))[..., None]
    col = (1 - frac) * wheel[k0] + frac * wheel[k1]
    inside = (rad <= 1)[..., None]
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)
    out = np.floor(255.0 * np.clip(col, 0, 1)).astype(np.uint8)
    out[bad] = 0
    return out
