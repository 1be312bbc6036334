"""``trianflow view RUN_DIR [--save FILE.rrd]``: a finished VO run in the Rerun 3D viewer."""

from __future__ import annotations

import argparse
from pathlib import Path

from trianflow.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "view",
        help="show a VO run directory in the Rerun 3D viewer (pip install trianflow[viz])",
        description="Build the Rerun recording of a finished `trianflow vo` run (camera poses and frustum, "
        "trajectory and aligned GT, images with their inlier correspondences, triangulated points and map, "
        "keyframes, per-frame status and timings) and open it in the viewer, or write it to FILE.rrd "
        "(without a display: RUN_DIR/recording.rrd).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `trianflow vo`")
    p.add_argument("--save", metavar="FILE.rrd", help="write the recording to this file instead of opening it")
    p.add_argument("--no-images", action="store_true", help="leave the frames out (smaller file)")
    p.add_argument("--gt", metavar="GT", help="ground-truth trajectory (KITTI/TUM file) to show aligned; default: "
                   "the sequence's own when the run was evaluated against it and the sequence is still there")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trianflow.run_dir import load_run
    from trianflow.viz.rerun_log import has_display, record_run_dir, require_rerun

    require_rerun()
    run_dir = Path(args.run_dir)
    data = load_run(run_dir)
    save = Path(args.save) if args.save else None
    if save is not None:
        if save.suffix != ".rrd":
            raise InputError(f"--save {save}: give a file name ending in .rrd")
        if save.is_dir():
            raise InputError(f"--save {save}: is a folder; give a file name ending in .rrd")
        if not save.parent.is_dir():
            raise InputError(f"--save {save}: the folder {save.parent} does not exist")
    spawn = save is None and has_display()
    if save is None and not spawn:
        save = run_dir / "recording.rrd"
    gt = _ground_truth(data, args.gt)
    written = record_run_dir(data, save_path=save, spawn=spawn, gt_poses=gt, images=not args.no_images)
    if written is not None:
        why = "" if args.save else "no display: "
        print(f"{why}wrote {written} ({len(data.poses)} frames); open it with `rerun {written}`")
    else:
        print(f"{run_dir}: {len(data.poses)} frames sent to the Rerun viewer")
    return 0


def _ground_truth(data, gt_path):
    """GT poses ``(N,4,4)`` for the view: ``--gt``, else the sequence's own when the run was
    evaluated against it (and the sequence can still be opened), else None."""
    import numpy as np

    if gt_path:
        from trianflow.io.trajectory import read_trajectory

        if not Path(gt_path).is_file():
            raise InputError(f"--gt {gt_path}: no such file")
        _, poses = read_trajectory(gt_path)
        if len(poses) < len(data.poses):
            raise InputError(f"--gt {gt_path}: {len(poses)} poses for a run of {len(data.poses)} frames")
        return np.asarray(poses)[: len(data.poses)]
    if not data.meta.get("evaluation"):
        return None
    src = data.meta.get("input", {}).get("path")
    if not src or not Path(src).exists():
        return None
    from trianflow.data import open_sequence

    try:
        K = data.K
        seq = open_sequence(src, intrinsics=K, max_frames=len(data.poses))
    except InputError:
        return None
    if seq.gt_poses is None or len(seq.gt_poses) < len(data.poses):
        return None
    return np.asarray(seq.gt_poses[: len(data.poses)])
