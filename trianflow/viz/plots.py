"""Matplotlib figures: trajectory top view and error along the path (``eval-traj``, ``demo``, ``report``).

Everything draws on an explicit :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot global state, no display needed) and writes files atomically through
:func:`trianflow.io.atomic.atomic_path`, so a failed plot never leaves a partial image.

Building blocks (reuse them in other commands):

* :func:`check_figure_path` - validate an output path's extension before doing any work;
* :func:`top_view_axes` / :func:`ground_plane_axes` - the two coordinate axes to draw a trajectory
  from above (largest extent / the plane orthogonal to the cameras' "down");
* :func:`plot_top_view` - GT path and estimate coloured by error on one ``Axes``;
* :func:`plot_error_along_path` - an error curve against distance travelled;
* :func:`new_figure` / :func:`save_figure` / :func:`figure_png` - create, atomically save, encode;
* :func:`trajectory_error_figure` - top view + error along the path (``trianflow eval-traj --plot``
  through :func:`plot_trajectory_report`, and the VO report);
* :func:`trajectory_top_view_figure`, :func:`frame_stats_figure`, :func:`correspondence_figure` -
  the other figures of the VO report (:mod:`trianflow.report`).

matplotlib is imported inside the functions only (importing this module draws nothing and loads no
matplotlib); ``evo.tools.plot`` is never used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from trianflow.errors import InputError
from trianflow.io.atomic import atomic_path

PathLike = Union[str, os.PathLike]
AXIS_NAMES = ("x", "y", "z")

__all__ = [
    "check_figure_path",
    "top_view_axes",
    "ground_plane_axes",
    "distance_along",
    "new_figure",
    "save_figure",
    "figure_png",
    "plot_top_view",
    "plot_error_along_path",
    "trajectory_error_figure",
    "plot_trajectory_report",
    "trajectory_top_view_figure",
    "frame_stats_figure",
    "correspondence_figure",
]


def _supported_formats() -> dict:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return FigureCanvasAgg(Figure()).get_supported_filetypes()


def check_figure_path(path: PathLike) -> Path:
    """Return ``path`` as a Path if matplotlib can write its extension, else raise InputError."""
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    formats = _supported_formats()
    if ext not in formats:
        raise InputError(
            f"cannot write plot {path}: unknown image extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join('.' + k for k in sorted(formats))} (e.g. out.png)"
        )
    if path.is_dir():
        raise InputError(f"plot path {path} is a directory; give a file name such as {path / 'plot.png'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"cannot write plot {path}: {parent} is a file, not a folder; choose another path")
            break
    return path


def top_view_axes(xyz: np.ndarray) -> tuple[int, int]:
    """Pick the two axes with the largest extent of ``xyz (N,3)`` for a top view, in index order.

    For KITTI camera poses (y points down, the car drives in x-z) this returns ``(0, 2)``,
    i.e. x horizontal and z vertical; for TUM/world frames usually ``(0, 1)``.
    """
    p = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    extent = p.max(axis=0) - p.min(axis=0) if len(p) else np.zeros(3)
    a, b = sorted(np.argsort(-extent, kind="stable")[:2].tolist())
    return int(a), int(b)


def new_figure(width: float = 12.0, height: float = 5.5, dpi: int = 100):
    """A new matplotlib ``Figure`` with an Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out_path: PathLike, dpi: Optional[int] = None) -> Path:
    """Save ``fig`` to ``out_path`` atomically (format from the extension); returns the path."""
    out_path = check_figure_path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out_path.suffix.lower().lstrip("."), bbox_inches="tight")
    return out_path


def plot_top_view(
    ax,
    gt_xyz: Optional[np.ndarray],
    est_xyz: np.ndarray,
    errors: Optional[np.ndarray] = None,
    axes: Optional[tuple[int, int]] = None,
    cmap: str = "viridis",
    error_label: str = "APE (m)",
    loops: Optional[Sequence[tuple]] = None,
):
    """Draw a top view on ``ax``: GT ``(N,3)`` as a dashed line, the estimate ``(M,3)`` coloured
    by ``errors (M,)`` (or a plain line without errors), and ``loops`` (pairs of indices into the
    estimate: the frames a loop closure matched) as magenta edges. Returns the colour mappable or None.

    ``axes`` selects the plotted coordinates (default :func:`top_view_axes` of GT, else of the
    estimate). The aspect ratio is equal, start and end of the estimate are marked.
    """
    from matplotlib.collections import LineCollection

    est = np.asarray(est_xyz, dtype=np.float64).reshape(-1, 3)
    gt = None if gt_xyz is None else np.asarray(gt_xyz, dtype=np.float64).reshape(-1, 3)
    if axes is None:
        axes = top_view_axes(gt if gt is not None else est)
    i, j = axes
    mappable = None
    if gt is not None:
        ax.plot(gt[:, i], gt[:, j], "--", color="0.3", lw=1.2, label="ground truth")
    if errors is not None and len(est) > 1:
        err = np.asarray(errors, dtype=np.float64).reshape(-1)
        pts = est[:, [i, j]]
        segs = np.stack([pts[:-1], pts[1:]], axis=1)
        seg_err = 0.5 * (err[:-1] + err[1:])
        lc = LineCollection(segs, cmap=cmap, linewidths=2.0, label="estimate")
        lc.set_array(seg_err)
        vmax = float(np.max(err)) if np.max(err) > np.min(err) else float(np.min(err)) + 1e-9
        lc.set_clim(float(np.min(err)), vmax)
        ax.add_collection(lc)
        mappable = lc
        ax.figure.colorbar(lc, ax=ax, label=error_label, shrink=0.85)
    else:
        ax.plot(est[:, i], est[:, j], "-", color="tab:blue", lw=1.5, label="estimate")
    pairs = [(int(a), int(b)) for a, b in (loops or ()) if 0 <= int(a) < len(est) and 0 <= int(b) < len(est)]
    for k, (a, b) in enumerate(pairs):
        ax.plot([est[a, i], est[b, i]], [est[a, j], est[b, j]], "o-", color="magenta", lw=1.2, ms=3, alpha=0.8,
                label=f"loop closures ({len(pairs)})" if k == 0 else None)
    ax.plot(est[0, i], est[0, j], "o", color="tab:green", ms=6, label="start")
    ax.plot(est[-1, i], est[-1, j], "s", color="tab:red", ms=6, label="end")
    ax.set_xlabel(f"{AXIS_NAMES[i]} (m)")
    ax.set_ylabel(f"{AXIS_NAMES[j]} (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return mappable


def plot_error_along_path(
    ax,
    distances: np.ndarray,
    errors: np.ndarray,
    label: str = "APE (m)",
    xlabel: str = "distance along ground truth (m)",
    stats: Sequence[str] = ("rmse", "mean", "median"),
):
    """Plot ``errors (N,)`` against ``distances (N,)`` on ``ax`` with horizontal statistic lines."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    ax.plot(d, e, "-", color="tab:gray", lw=1.0, label=label)
    values = {
        "rmse": float(np.sqrt(np.mean(e**2))),
        "mean": float(np.mean(e)),
        "median": float(np.median(e)),
        "max": float(np.max(e)),
    }
    colours = {"rmse": "tab:red", "mean": "tab:blue", "median": "tab:green", "max": "tab:purple"}
    for s in stats:
        ax.axhline(values[s], color=colours[s], lw=1.0, ls="--", label=f"{s} {values[s]:.4g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def distance_along(xyz: np.ndarray) -> np.ndarray:
    """Distance travelled ``(N,)`` along a path ``xyz (N,3)``, 0 at the first position."""
    p = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])


def ground_plane_axes(poses: np.ndarray) -> tuple:
    """The two world axes of the ground plane for a top view of camera poses ``(N,4,4)`` c2w:
    the axis most aligned with the cameras' mean "down" direction (image y) is left out.
    KITTI-style camera-frame trajectories give ``(0, 2)``, TUM-style world frames ``(0, 1)``."""
    down = np.asarray(poses, dtype=np.float64)[:, :3, 1].mean(axis=0)
    vertical = int(np.argmax(np.abs(down)))
    a, b = [k for k in range(3) if k != vertical]
    return a, b


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (tight bounding box, the figure's dpi)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    return buf.getvalue()


def trajectory_error_figure(
    gt_xyz: np.ndarray,
    est_xyz: np.ndarray,
    errors: np.ndarray,
    axes: Optional[tuple[int, int]] = None,
    error_label: str = "APE (m)",
    titles: Sequence[str] = ("top view (estimate coloured by error)", "error along the path"),
    size: tuple[float, float] = (13.0, 5.5),
    loops: Optional[Sequence[tuple]] = None,
):
    """Two-panel figure: top view of GT ``(N,3)`` vs the (aligned) estimate ``(N,3)`` coloured by
    ``errors (N,)`` (plane ``axes``, default :func:`top_view_axes`), and the error along the GT path.

    Raises InputError for mismatched or empty arrays.
    """
    gt = np.asarray(gt_xyz, dtype=np.float64).reshape(-1, 3)
    est = np.asarray(est_xyz, dtype=np.float64).reshape(-1, 3)
    err = np.asarray(errors, dtype=np.float64).reshape(-1)
    if not (len(gt) == len(est) == len(err)) or len(gt) == 0:
        raise InputError(
            f"plot_trajectory_report: gt ({len(gt)}), est ({len(est)}) and errors ({len(err)}) "
            "must have the same non-zero length"
        )
    fig = new_figure(*size)
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    plot_top_view(ax1, gt, est, err, axes=axes, error_label=error_label, loops=loops)
    ax1.set_title(titles[0])
    plot_error_along_path(ax2, distance_along(gt), err, label=error_label)
    ax2.set_title(titles[1])
    return fig


def plot_trajectory_report(
    gt_xyz: np.ndarray,
    est_xyz: np.ndarray,
    errors: np.ndarray,
    out_path: PathLike,
    title: Optional[str] = None,
    error_label: str = "APE (m)",
) -> Path:
    """:func:`trajectory_error_figure` written atomically to ``out_path`` (``trianflow eval-traj --plot``).

    Returns the written path. Raises InputError for an unsupported image extension or
    mismatched array lengths.
    """
    out_path = check_figure_path(out_path)
    fig = trajectory_error_figure(gt_xyz, est_xyz, errors, error_label=error_label)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_path)


def trajectory_top_view_figure(est_xyz: np.ndarray, axes: Optional[tuple[int, int]] = None,
                               title: str = "top view of the estimate (no ground truth)",
                               loops: Optional[Sequence[tuple]] = None):
    """One-panel top view of an estimated path ``(N,3)`` without ground truth (``loops``: see
    :func:`plot_top_view`)."""
    fig = new_figure(7.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    plot_top_view(ax, None, est_xyz, axes=axes, loops=loops)
    ax.set_title(title)
    return fig


#: markers of the VO frame statuses in :func:`frame_stats_figure`
STATUS_MARKS = {"pnp": ("tab:orange", "v"), "const_vel": ("tab:red", "x"), "static": ("tab:gray", "s"),
                "rotation": ("tab:purple", "o")}


def frame_stats_figure(matches: np.ndarray, inliers: np.ndarray, triangulated: np.ndarray, seconds: np.ndarray,
                       status: Sequence[str], keyframes: Optional[Sequence[int]] = None):
    """Per-frame correspondences (matches, inliers, triangulated points ``(N,)``; frames whose
    ``status`` is in :data:`STATUS_MARKS` marked, ``keyframes`` ticked) above the time per frame
    (``seconds (N,)``)."""
    n = len(matches)
    idx = np.arange(n)
    matches = np.asarray(matches, dtype=np.float64)
    fig = new_figure(13.0, 6.0)
    ax1, ax2 = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2, sharex=None)
    ax1.plot(idx, matches, "-", color="0.6", lw=1, label="matches")
    ax1.plot(idx, inliers, "-", color="tab:blue", lw=1.5, label="inliers")
    ax1.plot(idx, triangulated, "-", color="tab:green", lw=1, label="triangulated")
    ymax = np.nanmax(matches) if np.isfinite(matches).any() else 1.0
    for name, (c, mk) in STATUS_MARKS.items():
        sel = [i for i, s in enumerate(status) if s == name]
        if sel:
            ax1.plot(sel, np.full(len(sel), 0.03 * ymax), mk, color=c, ms=7, ls="none", label=f"{name} ({len(sel)})")
    if keyframes:
        ax1.plot(keyframes, np.full(len(keyframes), 0.97 * ymax), "|", color="k", ms=8, ls="none", label="keyframes")
    ax1.set_ylabel("correspondences")
    ax1.set_title("per-frame correspondences (unsolved / degenerate frames marked)")
    ax1.grid(True, alpha=0.3)
    ax1.legend(loc="best", fontsize="small", ncol=3)
    ax2.plot(idx, 1000 * np.asarray(seconds, dtype=np.float64), "-", color="tab:red", lw=1.2,
             label="frame time (VO step)")
    ax2.set_xlabel("frame")
    ax2.set_ylabel("ms")
    ax2.set_title("per-frame processing time")
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="best", fontsize="small")
    return fig


def correspondence_figure(image: np.ndarray, frame: int, xy: np.ndarray, xy2: Optional[np.ndarray],
                          depth: np.ndarray, max_lines: int = 400):
    """Two panels over ``image (H,W,3)`` uint8: the correspondences ``xy (M,2)`` -> ``xy2 (M,2)``
    (NaN rows skipped, at most ``max_lines`` drawn) of frame ``frame``, and the sparse depth
    ``depth (M,)`` of those points (points behind the camera left out)."""
    from matplotlib.collections import LineCollection

    h, w = image.shape[:2]
    fig = new_figure(13.0, 2 * 13.0 * h / w / 1.9 + 1.2)
    ax1, ax2 = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    ax1.imshow(image)
    if xy2 is not None and len(xy):
        ok = np.isfinite(xy2).all(axis=1)
        sel = np.flatnonzero(ok)
        if len(sel) > max_lines:
            sel = sel[np.linspace(0, len(sel) - 1, max_lines).astype(int)]
        ax1.add_collection(LineCollection(np.stack([xy[sel], xy2[sel]], 1), colors="lime", linewidths=0.8))
        ax1.plot(xy[sel, 0], xy[sel, 1], ".", color="yellow", ms=2)
    ax1.set_title(f"frame {frame}: {len(xy)} inlier correspondences (lines to their position in the next frame)")
    ax1.set_xlim(0, w - 1)
    ax1.set_ylim(h - 1, 0)
    ax1.axis("off")
    ax2.imshow((image * 0.45).astype(np.uint8))
    front = depth > 0
    if front.any():
        sc = ax2.scatter(xy[front, 0], xy[front, 1], c=depth[front], s=6, cmap="turbo_r",
                         vmin=np.percentile(depth[front], 2), vmax=np.percentile(depth[front], 98))
        fig.colorbar(sc, ax=ax2, shrink=0.8, label="depth (trajectory units)")
    ax2.set_title(f"frame {frame}: sparse triangulated depth of {int(front.sum())} points "
                  "(no depth network in this run)")
    ax2.set_xlim(0, w - 1)
    ax2.set_ylim(h - 1, 0)
    ax2.axis("off")
    return fig
