"""What the end-to-end runs report, as the papers do: per-sequence VO errors and the Eigen depth
metrics, gathered into one table written as Markdown and JSON.

* :func:`vo_errors` - KITTI drift ``t_err`` (%) and ``r_err`` (deg / 100 m) and the ATE (APE RMSE
  after alignment, metres) of one estimated trajectory against its ground truth;
* :func:`evaluate_depth_predictions` - mean Eigen metrics (AbsRel, SqRel, RMSE, RMSE log,
  delta < 1.25^k) over predicted / ground-truth depth pairs (KITTI protocol: Garg crop, 80 m cap,
  median scaling for monocular networks); :func:`sample_rgb` turns a sample's image into the input
  of the :mod:`trianflow.inference` callables;
* :func:`results_markdown` / :func:`write_results` - the table.

``t_err`` / ``r_err`` need a ground-truth path of at least 100 m (the KITTI segments); shorter
sequences get ``None`` (``n/a`` in the table) and a note.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from trianflow.evaluation.depth_metrics import evaluate_depth_pair
from trianflow.evaluation.trajectory import evaluate_trajectory
from trianflow.io.atomic import write_json, write_text

PathLike = Union[str, os.PathLike]

__all__ = ["DEPTH_METRICS", "vo_errors", "evaluate_depth_predictions", "sample_rgb", "results_markdown", "write_results"]

#: the Eigen depth metrics, in the order the papers print them
DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def vo_errors(name: str, poses: np.ndarray, gt_poses: np.ndarray, align: str = "sim3") -> dict:
    """KITTI drift and ATE of one VO run.

    Args:
        name: sequence name for the table.
        poses: ``(N,4,4)`` estimated camera-to-world poses; gt_poses: ``(M,4,4)``, ``M >= N``, same
            frames from the first (only the first ``N`` are used).
        align: ``"sim3"`` (monocular) or ``"se3"`` (stereo / metric).
    Returns:
        ``{"sequence", "frames", "path_m", "t_err", "r_err", "ate", "align", "note"}`` (``t_err`` in
        %, ``r_err`` in deg / 100 m, ``ate`` in metres; ``None`` where not computable).
    """
    poses = np.asarray(poses, dtype=np.float64)
    m = evaluate_trajectory(poses, np.asarray(gt_poses, dtype=np.float64)[: len(poses)], align=align)
    return {"sequence": str(name), "frames": int(len(poses)), "path_m": float(m.path_length),
            "t_err": m.kitti_t_err, "r_err": m.kitti_r_err, "ate": float(m.ape_rmse), "align": align,
            "note": m.kitti_note}


def sample_rgb(sample: dict) -> np.ndarray:
    """The ``image`` of a sample dict (``(3,H,W)`` float in [0,1], or already ``(H,W,3)`` uint8) as
    ``(H,W,3)`` uint8 RGB, the input of the depth / flow callables of :mod:`trianflow.inference`."""
    a = sample["image"]
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.transpose(a, (1, 2, 0)) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def evaluate_depth_predictions(pairs: Iterable[tuple], crop: Optional[str] = "garg", median_scaling: bool = True,
                               min_depth: float = 1e-3, max_depth: float = 80.0) -> dict:
    """Mean Eigen depth metrics over ``(prediction, ground truth)`` pairs (per-image metrics, then averaged).

    Args:
        pairs: ``(pred (h,w), depth_gt (H,W) or (1,H,W))`` in metres (0 = unknown GT); predictions are
            resized to the ground truth.
        crop, median_scaling, min_depth, max_depth: see
            :func:`~trianflow.evaluation.depth_metrics.evaluate_depth_pair` (KITTI protocol: Garg crop,
            80 m, median scaling for monocular networks, none for metric stereo depth).
    Returns:
        the metrics of :data:`DEPTH_METRICS` plus ``n_images``, ``crop`` and ``median_scaling``.
    """
    per = []
    for pred, gt in pairs:
        gt = gt.detach().cpu().numpy() if hasattr(gt, "detach") else np.asarray(gt)
        metrics, _ = evaluate_depth_pair(pred, gt.reshape(gt.shape[-2:]), crop=crop, min_depth=min_depth,
                                         max_depth=max_depth, median_scaling=median_scaling)
        per.append(metrics)
    out = {k: float(np.mean([m[k] for m in per])) if per else None for k in DEPTH_METRICS}
    out.update(n_images=len(per), crop=crop or "none", median_scaling=bool(median_scaling))
    return out


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def results_markdown(vo_rows: Sequence[dict] = (), depth: Optional[dict] = None, title: str = "Results") -> str:
    """The table as Markdown: one row per VO sequence (t_err %, r_err deg/100 m, ATE m), a mean row
    when there are several, and the depth metrics."""
    lines = [f"# {title}", ""]
    if vo_rows:
        lines += ["| sequence | frames | path (m) | t_err (%) | r_err (deg/100 m) | ATE (m) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in vo_rows:
            lines.append(f"| {r['sequence']} | {r['frames']} | {_fmt(r['path_m'], 1)} | {_fmt(r['t_err'], 2)} | "
                         f"{_fmt(r['r_err'], 2)} | {_fmt(r['ate'], 3)} |")
        if len(vo_rows) > 1:
            def mean(k):
                vals = [r[k] for r in vo_rows if r.get(k) is not None]
                return float(np.mean(vals)) if vals else None
            lines.append(f"| mean | {sum(r['frames'] for r in vo_rows)} | {_fmt(mean('path_m'), 1)} | "
                         f"{_fmt(mean('t_err'), 2)} | {_fmt(mean('r_err'), 2)} | {_fmt(mean('ate'), 3)} |")
        notes = [f"{r['sequence']}: {r['note']}" for r in vo_rows if r.get("note")]
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        lines.append("")
    if depth is not None:
        lines += ["| depth | " + " | ".join(DEPTH_METRICS) + " |", "|---|" + "---:|" * len(DEPTH_METRICS),
                  f"| {depth.get('n_images', '?')} images, crop {depth.get('crop')}, "
                  f"{'median-scaled' if depth.get('median_scaling') else 'metric'} | "
                  + " | ".join(_fmt(depth.get(k)) for k in DEPTH_METRICS) + " |", ""]
    return "\n".join(lines)


def write_results(out_dir: PathLike, vo_rows: Sequence[dict] = (), depth: Optional[dict] = None,
                  meta: Optional[dict] = None, title: str = "Results", stem: str = "results") -> tuple[Path, Path]:
    """Write ``<out_dir>/<stem>.md`` (:func:`results_markdown`) and ``<out_dir>/<stem>.json``
    (``{"vo": rows, "depth": metrics, "meta": meta}``) atomically; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{stem}.md", out / f"{stem}.json"
    write_text(md, results_markdown(vo_rows, depth, title))
    write_json(js, {"vo": list(vo_rows), "depth": depth, "meta": meta or {}})
    return md, js
