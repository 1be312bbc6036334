"""``trianflow eval-traj EST GT``: APE / RPE (as evo computes them) and the KITTI drift metric.

Prints a table by default, one JSON object with ``--json``; ``--plot out.png`` writes the top
view of GT vs the aligned estimate coloured by APE and the APE along the path. The numbers equal
``evo_ape`` / ``evo_rpe`` on the same files with the same options (GT comes first for evo)::

    trianflow eval-traj est.txt gt.txt                  # == evo_ape kitti gt.txt est.txt -as
    trianflow eval-traj est.txt gt.txt --align se3      # == ... -a
    trianflow eval-traj est.txt gt.txt --delta 10       # == evo_rpe ... -as --delta 10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``eval-traj`` sub-command."""
    p = subparsers.add_parser(
        "eval-traj",
        help="evaluate a trajectory against ground truth (APE, RPE, KITTI drift)",
        description=(
            "Evaluate an estimated trajectory EST against ground truth GT. Files are KITTI (12 numbers per "
            "line) or TUM ('t tx ty tz qx qy qz qw', associated by timestamp). APE/RPE equal evo_ape/evo_rpe "
            "with the same options; the KITTI odometry drift (t_err %, r_err deg/100 m over 100..800 m "
            "segments) is computed on the aligned estimate."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("est", help="estimated trajectory file (KITTI or TUM)")
    p.add_argument("gt", help="ground-truth trajectory file (KITTI or TUM)")
    p.add_argument(
        "--align",
        choices=("sim3", "se3", "none"),
        default="sim3",
        help="Umeyama alignment of EST onto GT: sim3 (with scale, right for monocular), se3 (rigid), none",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--plot", metavar="OUT.png", default=None, help="write a top-view + error plot to this image")
    p.add_argument("--delta", type=float, default=1, help="RPE pair distance (in --delta-unit)")
    p.add_argument(
        "--delta-unit",
        choices=("frames", "m", "deg", "rad"),
        default="frames",
        help="unit of --delta (evo's --delta_unit f/m/d/r)",
    )
    p.add_argument(
        "--all-pairs",
        action="store_true",
        help="RPE over all pairs --delta apart instead of consecutive pairs (evo's --all_pairs)",
    )
    p.add_argument(
        "--max-diff",
        type=float,
        default=0.01,
        help="maximum timestamp difference in seconds when associating TUM trajectories",
    )
    p.add_argument(
        "--format",
        choices=("auto", "kitti", "tum"),
        default="auto",
        help="file format of EST and GT (auto: 12 numbers/line = KITTI, 8 = TUM)",
    )
    p.set_defaults(func=run)
    return p


def _f(x, fmt="{:.6g}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return fmt.format(x)


def format_table(m) -> str:
    """Human-readable table of a :class:`TrajectoryMetrics`."""
    lines = [
        f"trajectory evaluation: {m.est_name}  vs  {m.gt_name}",
        f"  poses            {m.n_poses} evaluated (estimate {m.n_est}, ground truth {m.n_gt}), "
        f"matched by {m.association}",
        f"  alignment        {m.align}" + (f" (scale {m.scale:.6g})" if m.align == "sim3" else ""),
        f"  GT path length   {m.path_length:.3f} m",
        "",
        f"  {'metric':<22}{'rmse':>12}{'mean':>12}{'median':>12}{'max':>12}",
        f"  {'APE (m)':<22}{m.ape_rmse:>12.6g}{m.ape_mean:>12.6g}{m.ape_median:>12.6g}{m.ape_max:>12.6g}",
        f"  {'RPE trans (m)':<22}{m.rpe_trans_rmse:>12.6g}{m.rpe_trans_mean:>12.6g}"
        f"{m.rpe_trans_median:>12.6g}{m.rpe_trans_max:>12.6g}",
        f"  {'RPE rot (deg)':<22}{m.rpe_rot_rmse:>12.6g}{m.rpe_rot_mean:>12.6g}"
        f"{m.rpe_rot_median:>12.6g}{m.rpe_rot_max:>12.6g}",
        f"  (RPE: delta {m.rpe_delta:g} {m.rpe_unit}, {'all' if m.rpe_all_pairs else 'consecutive'} pairs)",
        "",
        f"  KITTI t_err      {_f(m.kitti_t_err, '{:.4f}')} %",
        f"  KITTI r_err      {_f(m.kitti_r_err, '{:.4f}')} deg/100 m"
        + (f"   ({m.kitti_n_segments} segments of 100..800 m, aligned estimate)" if m.kitti_t_err is not None else ""),
    ]
    if m.kitti_note:
        lines.append(f"  note: {m.kitti_note}")
    for note in m.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code (InputError is turned into exit 2 by the dispatcher)."""
    from trianflow.errors import InputError
    from trianflow.evaluation.trajectory import evaluate_trajectory

    if args.plot is not None:
        from trianflow.viz.plots import check_figure_path

        check_figure_path(args.plot)  # fail before any work on a bad extension

    m = evaluate_trajectory(
        args.est,
        args.gt,
        align=args.align,
        rpe_delta=args.delta,
        rpe_unit=args.delta_unit,
        max_diff=args.max_diff,
        rpe_all_pairs=args.all_pairs,
        fmt=args.format,
    )

    if args.plot is not None:
        from trianflow.viz.plots import plot_trajectory_report

        title = f"{Path(m.est_name).name} vs {Path(m.gt_name).name} ({m.align}"
        title += f", scale {m.scale:.4g}" if m.align == "sim3" else ""
        title += f"): APE rmse {m.ape_rmse:.4g} m"
        if m.kitti_t_err is not None:
            title += f", KITTI {m.kitti_t_err:.3g} % / {m.kitti_r_err:.3g} deg/100 m"
        try:
            plot_trajectory_report(m.gt_xyz, m.est_xyz, m.ape_errors, args.plot, title=title)
        except OSError as exc:
            raise InputError(
                f"cannot write plot {args.plot} ({exc.strerror or exc}); check that its folder is writable"
            ) from None

    if args.json:
        d = m.to_dict()
        if args.plot is not None:
            d["plot"] = str(args.plot)
        sys.stdout.write(json.dumps(d) + "\n")
    else:
        print(format_table(m))
        if args.plot is not None:
            print(f"  plot written to {args.plot}")
    return 0
