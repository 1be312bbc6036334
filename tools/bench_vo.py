#!/usr/bin/env python
"""Benchmark VO: speed and accuracy of trianflow against pycolmap's incremental mapper.

Prints ONE JSON line. Modes (``--modes``, comma separated):

- ``default``: ``trianflow vo`` as it runs with no option (keyframes + sliding-window bundle
  adjustment, scale held through the map and by the ground under the camera where it is seen):
  frames/s end to end incl. image reading, per-stage milliseconds, Sim3-aligned ATE RMSE and its
  percentage of the GT path length, and the KITTI drift ``kitti_t_err`` (%) / ``kitti_r_err``
  (deg/100 m) over the segments that fit the path (100 m, 200 m, ...; ``null`` below 100 m);
- ``plain``: ``--refine none``, the pair-by-pair VO;
- ``ba``: the bundle adjustment without the ground scale (``--no-ground-scale``);
- ``height``: the default with ``--camera-height`` (``--camera-height H``, default 1.65 as on
  KITTI): metric, so also the SE(3)-aligned ATE and the path-length ratio without scale alignment;
- ``network``: network flow (``--flow CKPT``, optional ``--depth CKPT``), on ``--device``;
- ``pycolmap``: pycolmap SIFT + sequential matching + incremental mapping with the known
  intrinsics; ATE and KITTI drift over the frames it registered (reported), seconds. It runs on
  the first ``--pycolmap-frames`` frames (default: all); ``frames`` in its entry says how many.

Usage: python tools/bench_vo.py [SEQUENCE] [--max-frames N] [--modes plain,pycolmap]
SEQUENCE defaults to ../shared/data/kitti_odom_straight (relative to the repository root); the word
``synthetic`` renders the built-in synthetic scene (40 frames at 192x640, exact ground truth). With ground truth
the output also holds the per-pair rotation error (deg/frame) and translation-direction error (deg).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: the shared helpers

import benchlib  # noqa: E402


def bench_trianflow(seq, mode, args):
    import torch

    flow_fn = depth_fn = None
    cfg = benchlib.vo_config(mode, dis_preset=args.dis_preset, backend=args.backend, device=args.device,
                             camera_height=args.camera_height)
    if mode == "network":
        if not args.flow:
            return {"skipped": "network mode needs --flow CKPT"}
        from trianflow.inference import load_depth_fn, load_flow_fn

        flow_fn = load_flow_fn(args.flow, device=args.device)
        depth_fn = load_depth_fn(args.depth, device=args.device) if args.depth else None
    res, total = benchlib.run_timed_vo(seq, cfg, flow_fn=flow_fn, depth_fn=depth_fn)
    out = benchlib.vo_speed(res, total, len(seq))
    out["device"] = args.device if mode == "network" else "cpu"
    if mode == "network" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    if seq.gt_poses is not None:
        out.update(benchlib.vo_accuracy(res, seq.gt_poses, metric=mode == "height"))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sequence", nargs="?", default=str(benchlib.DEFAULT_SEQ))
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--intrinsics")
    ap.add_argument("--modes", default="default,plain,pycolmap")
    ap.add_argument("--camera-height", type=float, default=1.65, help="metres, for the 'height' mode")
    ap.add_argument("--pycolmap-frames", type=int, help="run pycolmap on this prefix only (it is slow)")
    ap.add_argument("--dis-preset", default="auto")
    ap.add_argument("--backend", default="opencv")
    ap.add_argument("--flow")
    ap.add_argument("--depth")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    seq = benchlib.load_sequence(args.sequence, max_frames=args.max_frames, intrinsics=args.intrinsics)
    result = {
        "sequence": str(args.sequence),
        "frames": len(seq),
        "size": list(seq.size),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if mode == "pycolmap":
            result["pycolmap"] = benchlib.pycolmap_benchmark(seq, args.pycolmap_frames)
        elif mode in benchlib.VO_MODES:
            result[mode] = bench_trianflow(seq, mode, args)
        else:
            ap.error(f"unknown mode {mode!r}")
    pc = result.get("pycolmap", {})
    if pc.get("seconds") and pc.get("frames"):
        per_frame = pc["seconds"] / pc["frames"]  # per-frame: pycolmap may have run on a prefix
        for mode in ("default", "plain"):
            if "seconds" in result.get(mode, {}):
                result[f"speedup_vs_pycolmap_{mode}"] = per_frame / (result[mode]["seconds"] / len(seq))
    benchlib.print_json(result)


if __name__ == "__main__":
    sys.exit(main())
