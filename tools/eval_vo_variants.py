#!/usr/bin/env python
"""VO accuracy on variations of a sequence it was not tuned on. Prints ONE JSON line.

Two experiments (``--experiment``, comma separated):

- ``replay``: a KITTI-odometry folder (default: ``../shared/data/kitti_odom_straight``) replayed at
  other speeds and directions: every 2nd / 3rd frame (``2x``, ``3x``), reversed (``rev``, ``rev_3x``)
  and every frame shown three times (``hold_3``, a stalling camera); for each DIS preset in
  ``--presets`` the Sim3-aligned ATE in % of the path and the frames/s.
- ``slow``: the built-in synthetic scene (``forward_turn``, 30 frames at 192x640) driven at
  ``--steps`` metres per frame for seeds ``--seeds``, plain VO matching consecutive pairs only
  (``max_ref_hold=0``) against the default held reference: Sim3 ATE in % of the path and the
  status counts.

Usage: python tools/eval_vo_variants.py [SEQUENCE] [--experiment replay,slow] [--presets fast,balanced]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEQ = ROOT.parent / "shared" / "data" / "kitti_odom_straight"

REPLAYS = {
    "1x": lambda n: list(range(n)),
    "2x": lambda n: list(range(0, n, 2)),
    "3x": lambda n: list(range(0, n, 3)),
    "rev": lambda n: list(range(n - 1, -1, -1)),
    "rev_3x": lambda n: list(range(n - 1, -1, -3)),
    "hold_3": lambda n: sorted(list(range(n // 3)) * 3),
}


def _ate_pct(poses, gt) -> float:
    from trianflow.errors import InputError
    from trianflow.evaluation.trajectory import evaluate_trajectory

    try:
        m = evaluate_trajectory(poses, gt, align="sim3")
    except InputError:  # e.g. a perfectly straight ground truth cannot be Sim3-aligned
        return float("nan")
    return 100.0 * m.ape_rmse / m.path_length


def write_replay(src: Path, idx: list, out: Path) -> Path:
    """A KITTI-odometry folder with the frames ``idx`` of ``src`` (left camera, calib, GT relative
    to the first of them)."""
    from trianflow.data.kitti_odometry import read_kitti_poses

    gt = read_kitti_poses(src / "poses.txt")
    (out / "image_0").mkdir(parents=True)
    image_dir = src / "image_0" if (src / "image_0").is_dir() else src / "image_2"
    for j, i in enumerate(idx):
        shutil.copy(image_dir / f"{i:06d}.png", out / "image_0" / f"{j:06d}.png")
    shutil.copy(src / "calib.txt", out / "calib.txt")
    P = np.linalg.inv(gt[idx[0]]) @ gt[idx]
    (out / "poses.txt").write_text("".join(" ".join(repr(float(v)) for v in p[:3].ravel()) + "\n" for p in P))
    return out


def replay(src: Path, presets: list) -> dict:
    from trianflow.data import open_sequence
    from trianflow.odometry import VOConfig, run_vo

    n = len(open_sequence(src))
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in REPLAYS.items():
            seq = open_sequence(write_replay(src, make(n), Path(tmp) / name))
            out[name] = {}
            for preset in presets:
                res = run_vo(seq, VOConfig(dis_preset=preset))
                out[name][preset] = {"ate_pct": round(_ate_pct(res.poses, seq.gt_poses), 4),
                                     "fps": round(res.timings["fps"], 2), "status": res.status_counts()}
            print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
    return out


def slow(steps: list, seeds: list) -> dict:
    from trianflow.data.synthetic import synthetic_sequence
    from trianflow.odometry import VOConfig, run_vo

    out: dict = {}
    for step in steps:
        for seed in seeds:
            seq = synthetic_sequence(n_frames=30, kind="forward_turn", step=step, seed=seed)
            row = {}
            for name, hold in (("pairwise", 0), ("held", VOConfig().max_ref_hold)):
                res = run_vo(seq, VOConfig(max_ref_hold=hold))
                row[name] = {"ate_pct": round(_ate_pct(res.poses, seq.gt_poses), 4), "status": res.status_counts()}
            out[f"step{step}_seed{seed}"] = row
            print(step, seed, json.dumps(row), file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sequence", nargs="?", default=str(DEFAULT_SEQ), help="KITTI odometry folder with poses.txt")
    ap.add_argument("--experiment", default="replay,slow")
    ap.add_argument("--presets", default="fast,balanced", help="DIS presets compared in the replay experiment")
    ap.add_argument("--steps", default="0.3,0.1,0.05", help="metres per frame in the slow experiment")
    ap.add_argument("--seeds", default="0,2")
    args = ap.parse_args(argv)
    result: dict = {}
    for exp in [e.strip() for e in args.experiment.split(",") if e.strip()]:
        if exp == "replay":
            src = Path(args.sequence)
            if not (src / "poses.txt").is_file():
                print(f"error: {src} is not a KITTI odometry folder with poses.txt", file=sys.stderr)
                return 2
            result["replay"] = replay(src, [p.strip() for p in args.presets.split(",")])
        elif exp == "slow":
            result["slow"] = slow([float(s) for s in args.steps.split(",")], [int(s) for s in args.seeds.split(",")])
        else:
            print(f"error: unknown experiment {exp!r}: use replay or slow", file=sys.stderr)
            return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
