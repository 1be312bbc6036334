"""``trianflow export RUN_DIR --format colmap|ply|tum|kitti --out PATH``: a VO run for other tools."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a VO run: COLMAP model, coloured PLY point cloud, TUM/KITTI trajectory",
        description="Export the output folder of `trianflow vo` (RUN_DIR). colmap: a COLMAP model folder "
        "(cameras, images, points3D written by pycolmap; open it with pycolmap.Reconstruction or the COLMAP GUI); "
        "ply: the triangulated points with colours; tum / kitti: the trajectory. Points come from the adjusted "
        "map (tracks.npz, `vo --refine ba`) when present, else from the per-pair points (points.npz).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `trianflow vo`")
    p.add_argument("--format", required=True, choices=("colmap", "ply", "tum", "kitti"), help="what to write")
    p.add_argument("--out", required=True, metavar="PATH", help="a folder for colmap, a file otherwise")
    p.add_argument("--text", action="store_true", help="colmap: write the text format (.txt) instead of binary")
    p.add_argument("--points", choices=("auto", "map", "pairs"), default="auto",
                   help="point source: adjusted map (tracks.npz), per-pair points (points.npz), or auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trianflow.export import export_run

    info = export_run(args.run_dir, args.format, args.out, text=args.text, points=args.points)
    if args.format == "colmap":
        print(f"wrote COLMAP model {info['path']}: {info['images']} images, {info['points']} points "
              f"({info['observations']} observations, from {info['source']})")
    elif args.format == "ply":
        print(f"wrote {info['path']}: {info['points']} points (from {info['source']})")
    else:
        print(f"wrote {info['path']}: {info['poses']} poses ({args.format.upper()} format)")
    return 0
