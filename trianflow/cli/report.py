"""``trianflow report RUN_DIR [--gt GT]``: one HTML page (or a PNG set) about a VO run."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="HTML report of a VO run: trajectory vs GT, errors, inliers, timing, frames, metrics",
        description="Write a self-contained HTML page (images embedded) about the output folder of `trianflow vo`: "
        "top view of the trajectory against ground truth, the error along the path, per-frame inliers and timing, "
        "a few frames with their inlier correspondences and sparse triangulated depth, and the metrics table. "
        "--format png writes the same figures as PNG files plus metrics.json into a folder.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `trianflow vo`")
    p.add_argument("--gt", metavar="GT", help="ground-truth trajectory (KITTI or TUM file); default: the "
                   "sequence's own poses when it has them")
    p.add_argument("--out", metavar="PATH", help="output file (html) or folder (png); default RUN_DIR/report.html "
                   "or RUN_DIR/report/")
    p.add_argument("--format", choices=("html", "png"), default="html")
    p.add_argument("--sequence", metavar="PATH", help="where the input frames are now, if they moved since the run")
    p.add_argument("--frames", type=int, default=3, metavar="N", help="frames shown with correspondences (default 3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trianflow.errors import InputError
    from trianflow.report import make_report

    if args.frames < 0:
        raise InputError(f"--frames {args.frames}: give 0 or more frames")
    data, written = make_report(args.run_dir, out=args.out, fmt=args.format, gt=args.gt, sequence=args.sequence,
                                num_frames=args.frames)
    for n in data.notes:
        print(f"note: {n}")
    if data.metrics is not None:
        m = data.metrics
        print(f"APE RMSE ({m['align']}-aligned): {m['ape_rmse']:.4f} over {m['path_length']:.2f} "
              f"({100 * m['ape_rmse'] / max(m['path_length'], 1e-12):.3f} % of the path)")
    if args.format == "html":
        print(f"wrote {written[0]}")
    else:
        print(f"wrote {len(written)} files into {written[0].parent}")
    return 0
