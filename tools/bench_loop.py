#!/usr/bin/env python
"""Loop closure on a sequence: the default ``trianflow vo`` and the same with ``--no-loop``, one JSON object.

For each mode: Sim3 ATE (m and % of the GT path), KITTI t_err / r_err, frames/s of the whole run, and for the
default the loop closure's record: loops accepted (each with its frame pair, inliers, scale drift, correction
and the two frames' distance in the ground truth, which says whether it is a true revisit), proposals,
verified, its seconds and their share of the run. Any further VO options go after ``--``.

Usage:
    python tools/bench_loop.py SEQUENCE [--max-frames N] [-- VO OPTIONS]
e.g. KITTI 00 frames 0-1699 (see DEVELOPERS.md for getting it):
    python tools/bench_loop.py ~/data/kitti00
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: the shared helpers

import benchlib  # noqa: E402


def run_mode(sequence: str, flags: list, gt, out_dir: Path) -> dict:
    """``trianflow vo SEQUENCE FLAGS`` in this process; its record and accuracy."""
    run, poses, error = benchlib.run_cli_vo(sequence, out_dir, flags)
    if error:
        return {"error": error}
    t = run["timings"]
    out = {"seconds": t["total_s"], "fps": t["fps"], "status": run["status_counts"]}
    if gt is not None:
        m = benchlib.trajectory_metrics(poses, gt[: len(poses)])
        out.update({k: m[k] for k in ("ate_rmse", "ate_pct_of_path", "kitti_t_err", "kitti_r_err", "path_length")})
    lp = run.get("loops")
    if lp is not None:
        out["loop"] = {k: lp[k] for k in ("keyframes", "proposals", "verified", "accepted", "seconds")}
        out["loop"]["share_of_run"] = lp["seconds"] / max(t["total_s"], 1e-9)
        out["loop"]["max_correction"] = lp.get("max_correction", 0.0)
        pairs = []
        for e in lp["loops"]:
            row = {k: e[k] for k in ("query", "candidate", "inliers", "scale", "correction_m")}
            if gt is not None:
                row["gt_distance_m"] = float(np.linalg.norm(gt[e["query"], :3, 3] - gt[e["candidate"], :3, 3]))
            pairs.append(row)
        out["loop"]["loops"] = pairs
    return out


def main(argv=None) -> int:
    own, flags = benchlib.split_vo_flags(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sequence", nargs="?", default=str(benchlib.DEFAULT_SEQ))
    ap.add_argument("--max-frames", type=int, default=None)
    args = ap.parse_args(own)
    seq = benchlib.load_sequence(args.sequence, max_frames=args.max_frames)
    gt = None if seq.gt_poses is None else np.asarray(seq.gt_poses)
    if args.max_frames:
        flags = ["--max-frames", str(args.max_frames), *flags]
    out = {"sequence": str(args.sequence), "frames": len(seq), "flags": " ".join(flags)}
    with tempfile.TemporaryDirectory() as tmp:
        out["default"] = run_mode(args.sequence, flags, gt, Path(tmp) / "default")
        out["no_loop"] = run_mode(args.sequence, [*flags, "--no-loop"], gt, Path(tmp) / "no_loop")
    benchlib.print_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
