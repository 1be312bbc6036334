"""One-page report of a VO run directory: HTML with embedded images, or a set of PNG files.

Sections (each skipped with a note when its data is missing):

1. the metrics table (APE/RPE/KITTI drift against GT, Sim3-aligned for monocular runs and
   SE3 for stereo), status counts, timings and bundle-adjustment counts;
2. the top view of the trajectory against GT, coloured by the APE, and the APE along the path;
3. per-frame matches / inliers (frames that could not be solved and keyframes marked) and
   per-frame processing time;
4. a few frames with their inlier correspondences (pair ``frame -> frame+1`` from
   ``points.npz``, or keyframe tracks from ``tracks.npz``) and the depth of the points
   triangulated in them. There is no depth network in the run directory, so this is the
   *sparse triangulated depth* (in trajectory units), drawn over the frame.

Frames are read again from the input recorded in ``run.json`` (``input.path``); if it moved,
pass ``sequence=`` (CLI ``--sequence``). Ground truth: ``gt=`` a KITTI/TUM file, else the
sequence's own poses when it has them.

The HTML page is self-contained (PNG images embedded as base64), so it can be mailed or
attached to an issue as one file. The figures are drawn by :mod:`trianflow.viz.plots`; this module
gathers the data and writes the page, and never prints.
"""

from __future__ import annotations

import base64
import html
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from trianflow.errors import InputError
from trianflow.io.atomic import atomic_path, write_json, write_text
from trianflow.run_dir import RunData, load_run, loop_pairs
from trianflow.viz.plots import (correspondence_figure, figure_png, frame_stats_figure, ground_plane_axes,
                                  trajectory_error_figure, trajectory_top_view_figure)

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
UNSOLVED = ("pnp", "const_vel")
NOT_TRANSLATED = ("static", "rotation")

__all__ = ["ground_plane_axes", "ReportData", "collect_report", "render_figures", "write_html_report",
           "write_png_report", "make_report"]


@dataclass
class ReportData:
    """Everything the report shows, computed from a run directory.

    Attributes:
        run: the :class:`~trianflow.run_dir.RunData`.
        metrics: ``TrajectoryMetrics.to_dict()`` against GT, or ``None``.
        metrics_arrays: APE per pose ``ape (N,)``, GT / aligned estimate positions ``gt_xyz``,
            ``est_xyz`` ``(N,3)``, or ``None``.
        gt_source: where GT came from (file, sequence) or ``None``.
        frames: ``(index, image (H,W,3) uint8)`` of the frames shown with correspondences.
        notes: human-readable remarks shown at the top (missing data, fallbacks).
    """

    run: RunData
    metrics: Optional[dict] = None
    metrics_arrays: Optional[dict] = None
    gt_source: Optional[str] = None
    frames: List[tuple] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def _open_sequence(run: RunData, sequence: Optional[PathLike], notes: list):
    from trianflow.data import open_sequence

    path = sequence or run.meta.get("input", {}).get("path")
    if not path:
        notes.append("run.json records no input path: frames are not shown")
        return None
    try:
        K = run.meta.get("intrinsics", {}).get("K")
        return open_sequence(path, intrinsics=np.asarray(K) if K is not None else None,
                             stereo=False, max_frames=len(run.poses))
    except InputError as exc:
        notes.append(f"cannot open the input sequence {path} ({exc}); frames are not shown "
                     "(pass --sequence to point at its new place)")
        return None


def _frame_status(run: RunData) -> List[str]:
    st = [r.get("status", "") for r in run.frames]
    return st if len(st) == len(run.poses) else [""] * len(run.poses)


def _pick_frames(run: RunData, n: int) -> List[int]:
    """Up to ``n`` frames spread over the run that have triangulated points."""
    cand = np.zeros(0, np.int64)
    if run.points is not None and len(run.points.get("frame", ())):
        cand = np.unique(run.points["frame"])
    elif run.tracks is not None and len(run.tracks.get("obs_frame", ())):
        cand = np.unique(run.tracks["obs_frame"])[:-1]
    if len(cand) == 0 or n <= 0:
        return []
    pos = np.unique(np.linspace(0, len(cand) - 1, min(n, len(cand))).round().astype(int))
    return [int(cand[p]) for p in pos]


def collect_report(run_dir, gt: Optional[PathLike] = None, sequence: Optional[PathLike] = None,
                   num_frames: int = 3) -> ReportData:
    """Load the run and compute what the report shows (metrics against GT, frames to draw).

    Args:
        run_dir: output folder of ``trianflow vo`` (or a :class:`RunData`).
        gt: ground-truth trajectory file (KITTI/TUM); default: the sequence's own GT.
        sequence: where the input frames are now (default: ``run.json`` ``input.path``).
        num_frames: frames shown with correspondences and depth.
    Raises:
        InputError: not a run directory, unreadable GT.
    """
    from trianflow.evaluation.trajectory import evaluate_trajectory

    run = run_dir if isinstance(run_dir, RunData) else load_run(run_dir)
    data = ReportData(run=run)
    seq = _open_sequence(run, sequence, data.notes) if (num_frames > 0 or gt is None) else None
    gt_poses = None
    if gt is not None:
        gt_poses, data.gt_source = str(gt), str(gt)
    elif seq is not None and seq.gt_poses is not None:
        gt_poses, data.gt_source = seq.gt_poses[: len(run.poses)], f"{seq.source} (sequence ground truth)"
    if gt_poses is None:
        data.notes.append("no ground truth (pass --gt FILE): trajectory errors are not shown")
    else:
        stereo = bool(run.meta.get("input", {}).get("stereo"))
        est = (run.timestamps, run.poses) if (gt is not None and _is_tum(gt)) else run.poses
        m = evaluate_trajectory(est, gt_poses, align="se3" if stereo else "sim3")
        data.metrics = m.to_dict()
        data.metrics_arrays = {"ape": m.ape_errors, "gt_xyz": m.gt_xyz, "est_xyz": m.est_xyz, "gt_poses": m.gt_poses}
    if seq is not None:
        for i in _pick_frames(run, num_frames):
            try:
                data.frames.append((i, seq.read(i)))
            except (InputError, OSError, IndexError) as exc:
                data.notes.append(f"cannot read frame {i} ({exc})")
    return data


def _is_tum(path) -> bool:
    try:
        with open(path) as fh:
            for ln in fh:
                ln = ln.strip()
                if ln and not ln.startswith("#"):
                    return len(ln.replace(",", " ").split()) == 8
    except OSError:
        return False
    return False


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def run_loops(run: RunData) -> List[tuple]:
    """The loop closures of a run, ``[(query frame, candidate frame)]`` (empty without any)."""
    return loop_pairs(run.meta.get("loops"))


def _trajectory_figure(data: ReportData):
    run = data.run
    loops = run_loops(run)
    if data.metrics_arrays is not None:
        a = data.metrics_arrays
        titles = (f"top view ({data.metrics['align']}-aligned estimate, coloured by APE)", "APE along the path")
        same = len(a["est_xyz"]) == len(run.poses)  # frame indices address the evaluated poses
        return trajectory_error_figure(a["gt_xyz"], a["est_xyz"], a["ape"], axes=ground_plane_axes(a["gt_poses"]),
                                       titles=titles, size=(13.0, 5.0), loops=loops if same else None)
    return trajectory_top_view_figure(run.poses[:, :3, 3], axes=ground_plane_axes(run.poses), loops=loops)


def _frames_figure(data: ReportData):
    run = data.run
    n = len(run.poses)

    def col(name):
        vals = []
        for r in run.frames:
            try:
                vals.append(float(r.get(name, "nan")))
            except (TypeError, ValueError):
                vals.append(float("nan"))
        return np.asarray(vals) if len(vals) == n else np.full(n, np.nan)

    kfs = run.meta.get("refine", {}).get("keyframes") if isinstance(run.meta.get("refine"), dict) else None
    return frame_stats_figure(col("matches"), col("inliers"), col("triangulated"), col("seconds"),
                              _frame_status(run), keyframes=kfs)


def _frame_points(run: RunData, i: int):
    """``(xy1 (M,2), xy2 (M,2) or None, depth (M,))`` of frame ``i``'s triangulated points."""
    w2c = np.linalg.inv(run.poses[i])
    if run.points is not None and len(run.points.get("frame", ())):
        m = run.points["frame"] == i
        xyz = np.asarray(run.points["xyz"], np.float64)[m]
        xy = np.asarray(run.points["xy"], np.float64)[m]
        xy2 = np.asarray(run.points["xy2"], np.float64)[m] if "xy2" in run.points else None
    else:
        t = run.tracks
        kfs = np.unique(t["obs_frame"])
        nxt = kfs[kfs > i]
        m = t["obs_frame"] == i
        pid = t["obs_point"][m]
        xy = t["obs_xy"][m]
        xyz = t["xyz"][pid]
        xy2 = None
        if len(nxt):
            m2 = t["obs_frame"] == nxt[0]
            lut = dict(zip(t["obs_point"][m2].tolist(), range(int(m2.sum()))))
            xy2 = np.full_like(xy, np.nan)
            rows = np.array([lut.get(p, -1) for p in pid.tolist()], dtype=np.int64)
            ok = rows >= 0
            xy2[ok] = t["obs_xy"][m2][rows[ok]]
    depth = (xyz @ w2c[:3, :3].T + w2c[:3, 3])[:, 2]
    return xy, xy2, depth


def _correspondence_figure(data: ReportData, i: int, image: np.ndarray, max_lines: int = 400):
    xy, xy2, depth = _frame_points(data.run, i)
    return correspondence_figure(image, i, xy, xy2, depth, max_lines=max_lines)


FRAME_CAPTION = ("Top: the inlier correspondences of the frame (lines to the matched pixel in the next frame). "
                 "Bottom: the sparse triangulated depth of those points, in trajectory units (the run has no "
                 "depth network, so no dense predicted depth is available).")


def render_figures(data: ReportData) -> List[tuple]:
    """All report figures as ``(name, title, png bytes, caption)``, in page order."""
    traj_caption = ("Left: top view of the estimate (aligned to ground truth) coloured by its absolute position "
                    "error; right: the error along the ground-truth path." if data.metrics is not None else
                    "Top view of the estimated trajectory (no ground truth).")
    frames_caption = ("Matches, essential-matrix inliers and triangulated points per frame; frames the VO could "
                      "not solve from the images (pnp, const_vel) and degenerate ones (static, rotation) are "
                      "marked, keyframes are ticked. Below: time per frame.")
    out = [("trajectory", "Trajectory", figure_png(_trajectory_figure(data)), traj_caption),
           ("frames", "Per-frame correspondences and timing", figure_png(_frames_figure(data)), frames_caption)]
    for i, img in data.frames:
        out.append((f"frame_{i:06d}", f"Frame {i}", figure_png(_correspondence_figure(data, i, img)), FRAME_CAPTION))
    return out


# ------------------------------------------------------------------------------------------------
# tables and writers
# ------------------------------------------------------------------------------------------------
def _rows(data: ReportData) -> List[tuple]:
    run = data.run
    meta = run.meta
    rows = []
    inp = meta.get("input", {})
    rows.append(("sequence", f"{inp.get('name', '?')} ({inp.get('kind', '?')}), {len(run.poses)} frames, "
                 f"{inp.get('size', ['?', '?'])[1]}x{inp.get('size', ['?', '?'])[0]} px"))
    cfg = meta.get("config", {})
    rows.append(("settings", f"refine={cfg.get('refine', 'none')}, flow={cfg.get('flow', '?')}, "
                 f"RANSAC={cfg.get('ransac_backend', '?')}, stereo={cfg.get('stereo', False)}"))
    m = data.metrics
    if m is not None:
        pct = 100 * m["ape_rmse"] / max(m["path_length"], 1e-12)
        rows += [
            ("ground truth", data.gt_source or ""),
            ("alignment", f"{m['align']} (scale {m['scale']:.4g})"),
            ("APE RMSE", f"{m['ape_rmse']:.4f} ({pct:.3f} % of the {m['path_length']:.2f} path)"),
            ("APE mean / median / max", f"{m['ape_mean']:.4f} / {m['ape_median']:.4f} / {m['ape_max']:.4f}"),
            ("RPE translation RMSE (per frame)", f"{m['rpe_trans_rmse']:.4f}"),
            ("RPE rotation RMSE (deg per frame)", f"{m['rpe_rot_rmse']:.4f}"),
        ]
        if m.get("kitti_t_err") is not None:
            rows.append(("KITTI drift", f"{m['kitti_t_err']:.3f} %, {m['kitti_r_err']:.4f} deg/100 m"))
    counts = meta.get("status_counts", {})
    rows.append(("frame status", ", ".join(f"{k} {v}" for k, v in counts.items())))
    unsolved = meta.get("unsolved_frames", [])
    rows.append(("frames not solved from the images", ", ".join(map(str, unsolved)) if unsolved else "none"))
    t = meta.get("timings", {})
    if t:
        parts = [f"{t.get('fps', float('nan')):.2f} frames/s"]
        for k, name in (("flow_ms", "flow"), ("select_ms", "selection"), ("geometry_ms", "geometry"),
                        ("ba_ms", "bundle adjustment")):
            if k in t:
                parts.append(f"{name} {t[k]:.0f} ms")
        rows.append(("speed (per frame)", ", ".join(parts)))
    ref = meta.get("refine")
    if isinstance(ref, dict):
        final = ref.get("final") or {}
        rows.append(("bundle adjustment", f"{len(ref.get('keyframes', []))} keyframes, "
                     f"{ref.get('windows_adjusted', 0)} of {ref.get('windows', 0)} windows adjusted, "
                     f"mean {ref.get('mean_points', 0):.0f} points, reprojection error "
                     f"{(ref.get('mean_error_px') or float('nan')):.3f} px"
                     + (f"; final adjustment {final.get('points', 0)} points, {final.get('seconds', 0):.1f} s"
                        if final.get("adjusted") else "")))
    loops = meta.get("loops")
    if isinstance(loops, dict):
        pairs = ", ".join(f"{lp['query']}↔{lp['candidate']}" for lp in loops.get("loops", [])[:12])
        more = len(loops.get("loops", [])) - 12
        rows.append(("loop closure", f"{loops.get('accepted', 0)} accepted of {loops.get('verified', 0)} verified "
                     f"({loops.get('proposals', 0)} proposals), {loops.get('seconds', 0):.1f} s"
                     + (f"; frames {pairs}" + (f" and {more} more" if more > 0 else "")
                        + f"; largest correction {loops.get('max_correction', 0):.3g}" if pairs else "")))
    if run.tracks is not None:
        rows.append(("map (tracks.npz)",
                     f"{len(run.tracks['xyz'])} points, {len(run.tracks['obs_point'])} observations"))
    elif run.points is not None:
        rows.append(("points (points.npz)", f"{len(run.points['xyz'])} triangulated pair points"))
    return rows


def write_html_report(data: ReportData, out_path: PathLike) -> Path:
    """Write the self-contained HTML page (images embedded as base64 PNG) atomically."""
    out_path = Path(out_path)
    figs = render_figures(data)
    esc = html.escape
    title = f"trianflow VO report: {data.run.meta.get('input', {}).get('name', data.run.path.name)}"
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1300px;margin:auto;padding:1em;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd}.note{color:#a60}</style>",
        "</head><body>", f"<h1>{esc(title)}</h1>",
        f"<p>Run directory: <code>{esc(str(data.run.path))}</code></p>",
    ]
    for n in data.notes:
        parts.append(f"<p class='note'>Note: {esc(n)}</p>")
    parts.append("<h2>Metrics</h2><table><tr><th>quantity</th><th>value</th></tr>")
    for k, v in _rows(data):
        parts.append(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>")
    parts.append("</table>")
    for name, heading, png, caption in figs:
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{esc(heading)}</h2><p>{esc(caption)}</p><img id='{esc(name)}' alt='{esc(heading)}' "
                     f"src='data:image/png;base64,{b64}'>")
    parts.append("</body></html>")
    write_text(out_path, "\n".join(parts) + "\n")
    return out_path


def write_png_report(data: ReportData, out_dir: PathLike) -> List[Path]:
    """Write the figures as PNG files and the table as ``metrics.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder; the PNG report is a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, _, png, _ in render_figures(data):
        p = out_dir / f"{name}.png"
        with atomic_path(p) as tmp:
            tmp.write_bytes(png)
        written.append(p)
    write_json(out_dir / "metrics.json", {"table": dict(_rows(data)), "metrics": data.metrics, "notes": data.notes})
    written.append(out_dir / "metrics.json")
    return written


def make_report(run_dir, out: Optional[PathLike] = None, fmt: str = "html", gt: Optional[PathLike] = None,
                sequence: Optional[PathLike] = None, num_frames: int = 3):
    """Build the report of ``run_dir``: ``fmt="html"`` writes ``out`` (default
    ``RUN_DIR/report.html``); ``fmt="png"`` writes a folder (default ``RUN_DIR/report``).
    Returns ``(data, written paths)``."""
    if fmt not in ("html", "png"):
        raise InputError(f"unknown report format {fmt!r}; use html or png")
    run = load_run(run_dir)
    if out is None:
        out = run.path / ("report.html" if fmt == "html" else "report")
    out = Path(out)
    if fmt == "html" and out.is_dir():
        raise InputError(f"--out {out}: is a folder; give a file name such as {out / 'report.html'}")
    data = collect_report(run, gt=gt, sequence=sequence, num_frames=num_frames)
    if fmt == "html":
        return data, [write_html_report(data, out)]
    return data, write_png_report(data, out)
