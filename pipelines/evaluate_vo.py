"""Visual odometry over many sequences, evaluated against their ground truth: one table.

    python pipelines/evaluate_vo.py SEQ [SEQ ...] --out runs/eval_vo [--flow CKPT] [--depth CKPT]
    python pipelines/evaluate_vo.py --smoke          # 12 frames of ../shared/data/kitti_odom_straight

Each SEQ is anything :func:`trianflow.data.open_sequence` reads (a KITTI odometry sequence folder,
TUM, ...) and must carry ground-truth poses. VO is :func:`trianflow.vo.run_vo` (DIS flow,
or a trained FlowNet with ``--flow``); the errors are the KITTI drift t_err (%) / r_err (deg per
100 m) and the ATE (m, Sim3-aligned for monocular runs), written as ``results.md`` and
``results.json`` in ``--out`` (:mod:`trianflow.evaluation.summary`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from trianflow.data import open_sequence
from trianflow.evaluation.summary import results_markdown, vo_errors, write_results
from trianflow.vo import VOConfig, run_vo

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def evaluate_sequences(paths, out_dir, max_frames=None, refine="ba", flow=None, depth=None, device="cpu",
                       title="Visual odometry"):
    """VO on every sequence of ``paths`` and the table of their errors; returns the rows."""
    cfg = VOConfig(refine=refine, device=device)
    flow_fn = depth_fn = None
    if flow or depth:
        from trianflow.inference import load_depth_fn, load_flow_fn

        if flow:
            flow_fn, cfg.flow = load_flow_fn(flow, device=device), "network"
        if depth:
            depth_fn = load_depth_fn(depth, device=device)
    rows = []
    for path in paths:
        seq = open_sequence(path, max_frames=max_frames)
        if seq.gt_poses is None:
            raise SystemExit(f"{path}: the sequence has no ground-truth poses to evaluate against")
        result = run_vo(seq, cfg, flow_fn=flow_fn, depth_fn=depth_fn)
        rows.append(vo_errors(seq.name, result.poses, seq.gt_poses, align="se3" if cfg.stereo else "sim3"))
    write_results(out_dir, rows, title=title, meta={"sequences": [str(p) for p in paths], "max_frames": max_frames,
                                                    "refine": refine, "flow": flow or "dis", "depth": depth})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sequences", nargs="*", help="sequence folders with ground truth")
    p.add_argument("--out", default="runs/evaluate_vo", help="folder for results.md / results.json")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first frames of each sequence")
    p.add_argument("--refine", choices=("ba", "none"), default="ba", help="bundle adjustment (default) or pair by pair")
    p.add_argument("--flow", help="FlowNet checkpoint (default: DIS)")
    p.add_argument("--depth", help="DepthNet checkpoint (per-pair scale)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--smoke", action="store_true", help="12 frames of ../shared/data/kitti_odom_straight")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.sequences = args.sequences or [str(SHARED / "kitti_odom_straight")]
        args.max_frames = args.max_frames or 12
    if not args.sequences:
        p.error("give at least one sequence (or --smoke)")
    rows = evaluate_sequences(args.sequences, args.out, args.max_frames, args.refine, args.flow, args.depth,
                              args.device)
    print(results_markdown(rows, title="Visual odometry"))
    print(f"written: {Path(args.out) / 'results.md'}, {Path(args.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
