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
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: the shared helpers

import benchlib  # noqa: E402


def replay(src: Path, presets: list) -> dict:
    from trianflow.data import open_sequence
    from trianflow.vo import VOConfig, run_vo

    n = len(open_sequence(src))
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in benchlib.REPLAYS.items():
            seq = open_sequence(benchlib.write_replay(src, make(n), Path(tmp) / name))
            out[name] = {}
            for preset in presets:
                res = run_vo(seq, VOConfig(dis_preset=preset))
                out[name][preset] = {"ate_pct": round(benchlib.ate_pct(res.poses, seq.gt_poses), 4),
                                     "fps": round(res.timings["fps"], 2), "status": res.status_counts()}
            print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
    return out


def slow(steps: list, seeds: list) -> dict:
    from trianflow.data.synthetic import synthetic_sequence
    from trianflow.vo import VOConfig, run_vo

    out: dict = {}
    for step in steps:
        for seed in seeds:
            seq = synthetic_sequence(n_frames=30, kind="forward_turn", step=step, seed=seed)
            row = {}
            for name, hold in (("pairwise", 0), ("held", VOConfig().max_ref_hold)):
                res = run_vo(seq, VOConfig(max_ref_hold=hold))
                row[name] = {"ate_pct": round(benchlib.ate_pct(res.poses, seq.gt_poses), 4),
                             "status": res.status_counts()}
            out[f"step{step}_seed{seed}"] = row
            print(step, seed, json.dumps(row), file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sequence", nargs="?", default=str(benchlib.DEFAULT_SEQ),
                    help="KITTI odometry folder with poses.txt")
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
    benchlib.print_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
