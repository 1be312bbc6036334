#!/usr/bin/env python
"""Rotation of the default VO against ground truth *and* against pycolmap's incremental mapper.

The KITTI ``r_err`` of a visual odometry can be limited by the data rather than by the method: if
the images and the ground-truth rotations disagree, every visual method shows the same rotation
error. This tool separates the two. On frame windows of a sequence it compares the relative rotation
over sub-intervals of ``--step`` frames estimated by

- ``trianflow``: ``trianflow vo`` as it runs with no option, over the whole sequence (one run), and
- ``pycolmap``: SIFT + sequential matching + incremental mapping with the known intrinsics and
  global bundle adjustment, run separately on each window (``tools/bench_vo.py``'s setting, from
  ``tools/benchlib.py``),

with the ground-truth rotation over the same interval. ``--self-calibrate`` adds a third estimate: pycolmap
with a RADIAL camera whose focal length, principal point and distortion its bundle adjustments refine (does a
better camera model bring the images closer to the ground truth?). For each interval it reports the three
relative rotation vectors (degrees, axis x angle in the first camera's frame: x right, y down, z forward; yaw
about y) and the angles between them: ``ours_vs_gt``, ``pycolmap_vs_gt`` and ``ours_vs_pycolmap``.
``ours_vs_pycolmap`` much smaller than the other two means the two methods agree with each other and the rest
of the error lies in the data.

Prints ONE JSON line.

Usage: python tools/bench_rotation.py SEQUENCE [--windows 50:130,200:300] [--step 25] [--run RUN_DIR]
``--run`` reuses the poses of an earlier ``trianflow vo`` run of the same sequence instead of running it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: the shared helpers

import benchlib  # noqa: E402


def _rotvec_deg(R: np.ndarray) -> list:
    """Rotation vector (degrees, 4 decimals) of the rotation matrix ``R (3,3)``."""
    from scipy.spatial.transform import Rotation

    return np.rad2deg(Rotation.from_matrix(R).as_rotvec()).round(4).tolist()


def parse_windows(text: str, n: int) -> list:
    """``"a:b,c:d"`` -> ``[(a, b), (c, d)]`` (inclusive ends, inside ``[0, n-1]``, at least 10 frames)."""
    out = []
    for part in text.split(","):
        a, _, b = part.strip().partition(":")
        try:
            a, b = int(a), int(b)
        except ValueError:
            raise SystemExit(f"--windows: {part!r} is not FIRST:LAST") from None
        if not 0 <= a < b < n or b - a < 10:
            raise SystemExit(f"--windows: {part!r} must satisfy 0 <= FIRST, FIRST + 10 <= LAST <= {n - 1}")
        out.append((a, b))
    return out


def compare_window(gt: np.ndarray, ours: np.ndarray, colmap: dict, a: int, b: int, step: int) -> dict:
    """Per-interval rotations of window ``[a, b]``: ``gt``, ``ours`` ``(N,4,4)`` c2w over the whole
    sequence, ``colmap`` ``{frame: (4,4)}`` of the window (frames it did not register are skipped)."""
    import torch

    from trianflow.geometry.pose import rotation_error_deg

    def rel(Ti, Tj):
        return torch.from_numpy(np.ascontiguousarray(Ti[:3, :3].T @ Tj[:3, :3]))

    def angle(Ra, Rb):
        return float(rotation_error_deg(Ra, Rb))

    bounds = list(range(a, b, step)) + [b]
    intervals = []
    for i, j in list(zip(bounds[:-1], bounds[1:])) + [(a, b)]:
        if i not in colmap or j not in colmap:
            continue
        g, o, c = rel(gt[i], gt[j]), rel(ours[i], ours[j]), rel(colmap[i], colmap[j])
        intervals.append({"first": i, "last": j, "gt_deg": _rotvec_deg(g.numpy()), "ours_deg": _rotvec_deg(o.numpy()),
                          "pycolmap_deg": _rotvec_deg(c.numpy()), "ours_vs_gt": angle(o, g),
                          "pycolmap_vs_gt": angle(c, g), "ours_vs_pycolmap": angle(o, c)})
    return {"window": [a, b], "intervals": intervals}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sequence")
    ap.add_argument("--windows", default="50:130,200:300", help="FIRST:LAST frame windows (comma separated)")
    ap.add_argument("--step", type=int, default=25, help="frames per compared interval")
    ap.add_argument("--self-calibrate", action="store_true", help="also run pycolmap refining a RADIAL camera")
    ap.add_argument("--run", help="RUN_DIR of an earlier `trianflow vo` of this sequence (its poses.txt)")
    args = ap.parse_args(argv)

    from trianflow.io.trajectory import read_trajectory

    seq = benchlib.load_sequence(args.sequence)
    if seq.gt_poses is None:
        raise SystemExit(f"{args.sequence}: no ground-truth poses")
    gt = np.asarray(seq.gt_poses, dtype=np.float64)
    windows = parse_windows(args.windows, len(seq))
    if args.run:
        ours = read_trajectory(Path(args.run) / "poses.txt", fmt="kitti")[1]
        if len(ours) != len(seq):
            raise SystemExit(f"{args.run}: {len(ours)} poses for {len(seq)} frames")
        vo_seconds = None
    else:
        ours, vo_seconds = benchlib.run_default_vo(seq)
    out = {"sequence": str(args.sequence), "frames": len(seq), "step": args.step, "trianflow_seconds": vo_seconds,
           "windows": []}
    for a, b in windows:
        colmap, seconds, _ = benchlib.pycolmap_poses(seq, range(a, b + 1))
        w = compare_window(gt, ours, colmap, a, b, args.step)
        w.update(pycolmap_seconds=seconds, pycolmap_registered=len(colmap))
        if args.self_calibrate:
            cal, _, params = benchlib.pycolmap_poses(seq, range(a, b + 1), self_calibrate=True)
            ivs = compare_window(gt, ours, cal, a, b, args.step)["intervals"]
            w["self_calibrated"] = {"camera_params": params, "registered": len(cal), "intervals": [
                {"first": iv["first"], "last": iv["last"], "vs_gt": iv["pycolmap_vs_gt"],
                 "vs_ours": iv["ours_vs_pycolmap"]} for iv in ivs]}
        out["windows"].append(w)
    sub = [iv for w in out["windows"] for iv in w["intervals"] if iv["last"] - iv["first"] <= args.step]
    if sub:
        for key in ("ours_vs_gt", "pycolmap_vs_gt", "ours_vs_pycolmap"):
            out[f"mean_{key}"] = float(np.mean([iv[key] for iv in sub]))
    benchlib.print_json(out)


if __name__ == "__main__":
    sys.exit(main())
