"""Matplotlib plotting helpers for the CLI (``eval-traj``, ``demo``, ``report``).

Everything draws on an explicit :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot global state, no display needed) and writes files atomically through
:func:`trianflow.io.atomic.atomic_path`, so a failed plot never leaves a partial image.

Building blocks (reuse them in other commands):

* :func:`check_figure_path` - validate an output path's extension before doing any work;
* :func:`top_view_axes` - the two coordinate axes to draw a trajectory from above;
* :func:`plot_top_view` - GT path and estimate coloured by error on one ``Axes``;
* :func:`plot_error_along_path` - an error curve against distance travelled;
* :func:`new_figure` / :func:`save_figure` - create and atomically save a figure;
* :func:`plot_trajectory_report` - the two-panel figure of ``trianflow eval-traj --plot``.
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
    "new_figure",
    "save_figure",
    "plot_top_view",
    "plot_error_along_path",
    "plot_trajectory_report",
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
):
    """Draw a top view on ``ax``: GT ``(N,3)`` as a dashed line, the estimate ``(M,3)`` coloured
    by ``errors (M,)`` (or a plain line without errors). Returns the colour mappable or None.

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


def plot_trajectory_report(
    gt_xyz: np.ndarray,
    est_xyz: np.ndarray,
    errors: np.ndarray,
    out_path: PathLike,
    title: Optional[str] = None,
    error_label: str = "APE (m)",
) -> Path:
    """Two-panel figure written atomically to ``out_path``: top view of GT ``(N,3)`` vs the
    (aligned) estimate ``(N,3)`` coloured by ``errors (N,)``, and the error along the GT path.

    Returns the written path. Raises InputError for an unsupported image extension or
    mismatched array lengths.
    """
    out_path = check_figure_path(out_path)
    gt = np.asarray(gt_xyz, dtype=np.float64).reshape(-1, 3)
    est = np.asarray(est_xyz, dtype=np.float64).reshape(-1, 3)
    err = np.asarray(errors, dtype=np.float64).reshape(-1)
    if not (len(gt) == len(est) == len(err)) or len(gt) == 0:
        raise InputError(
            f"plot_trajectory_report: gt ({len(gt)}), est ({len(est)}) and errors ({len(err)}) "
            "must have the same non-zero length"
        )
    dist = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(gt, axis=0), axis=1))])
    fig = new_figure(13.0, 5.5)
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    plot_top_view(ax1, gt, est, err, error_label=error_label)
    ax1.set_title("top view (estimate coloured by error)")
    plot_error_along_path(ax2, dist, err, label=error_label)
    ax2.set_title("error along the path")
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_path)
