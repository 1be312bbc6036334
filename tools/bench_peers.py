#!/usr/bin/env python
"""``trianflow vo`` beside ORB-SLAM3 (monocular) on the same frames, in one run.

Runs the default ``trianflow vo`` (or the options after ``--``) as its own process, then ORB-SLAM3 through
the ``pyorbslam3`` binding ``--runs`` times (3 by default: it is multi-threaded and not deterministic), each
in its own process, frames fed as fast as it takes them (unpaced). Prints one JSON object: for both, frames/s
(frames / seconds of the whole process, and of the tracking loop alone) and the Sim3-aligned ATE (% of the GT
path, KITTI t_err / r_err where the path allows); for ORB-SLAM3 every run, its best ATE and median speed, and
``speed_ratio`` (our whole-process frames/s / ORB-SLAM3's median).

ORB-SLAM3 is a benchmark peer only (GPL-3.0; never a dependency): ``pip install pyorbslam3`` (the notes and
the vocabulary are in ``../shared/peers``). Without it the tool says so and exits 2. Its poses: after
``shutdown()`` the EuRoC export of its biggest map; frames it lacks (before initialisation, lost, in another
map) take the pose of the nearest earlier frame it has (the first one it has before that): a lost map costs
accuracy here, as it would in use. ``lost`` counts frames tracked as LOST / RECENTLY_LOST, ``missing`` the
frames its final trajectory lacks.

Usage:
    python tools/bench_peers.py [SEQUENCE] [--runs 3] [--max-frames N] [--vocab FILE] [-- trianflow vo options]
(default SEQUENCE: ../shared/data/kitti_03_first400).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import DATA, ROOT, print_json, split_vo_flags, trajectory_metrics  # noqa: E402

PEERS = ROOT.parent / "shared" / "peers"
DEFAULT = DATA / "kitti_03_first400"
SETTINGS = """%YAML:1.0
File.version: "1.0"
Camera.type: "PinHole"
Camera1.fx: {fx}
Camera1.fy: {fy}
Camera1.cx: {cx}
Camera1.cy: {cy}
Camera1.k1: 0.0
Camera1.k2: 0.0
Camera1.p1: 0.0
Camera1.p2: 0.0
Camera.width: {w}
Camera.height: {h}
Camera.fps: {fps}
Camera.RGB: 1
ORBextractor.nFeatures: 2000
ORBextractor.scaleFactor: 1.2
ORBextractor.nLevels: 8
ORBextractor.iniThFAST: 20
ORBextractor.minThFAST: 7
Viewer.KeyFrameSize: 0.05
Viewer.KeyFrameLineWidth: 1.0
Viewer.GraphLineWidth: 0.9
Viewer.PointSize: 2.0
Viewer.CameraSize: 0.08
Viewer.CameraLineWidth: 3.0
Viewer.ViewpointX: 0.0
Viewer.ViewpointY: -0.7
Viewer.ViewpointZ: -1.8
Viewer.ViewpointF: 500.0
"""


def _accuracy(poses, gt) -> dict:
    if gt is None:
        return {}
    m = trajectory_metrics(np.asarray(poses), np.asarray(gt)[: len(poses)])
    return {"ate_pct": m["ate_pct_of_path"], "t_err": m["kitti_t_err"] if m["kitti_segments"] else None,
            "r_err": m["kitti_r_err"] if m["kitti_segments"] else None, "path_m": m["path_length"]}


def vocabulary(path: str | None) -> Path:
    """The ORB vocabulary as text: ``path``, or ``../shared/peers/ORBvoc.txt.gz`` unpacked once into a cache."""
    if path:
        return Path(path)
    src = PEERS / "ORBvoc.txt.gz"
    if not src.is_file():
        raise SystemExit(f"error: no ORB vocabulary: give --vocab (looked for {src})")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trianflow-peers"
    out = cache / "ORBvoc.txt"
    if not out.is_file() or out.stat().st_mtime < src.stat().st_mtime:
        cache.mkdir(parents=True, exist_ok=True)
        with gzip.open(src, "rb") as fi, open(out.with_suffix(".part"), "wb") as fo:
            shutil.copyfileobj(fi, fo)
        out.with_suffix(".part").replace(out)
    return out


def orb_worker(args) -> None:
    """One ORB-SLAM3 run (in its own process): writes its poses and timings as JSON to ``args.result``
    (ORB-SLAM3 prints to the same stdout)."""
    import pyorbslam3 as pos

    from trianflow.data import open_sequence
    from trianflow.flow_backends import to_gray

    t_proc = time.perf_counter()
    seq = open_sequence(args.sequence, max_frames=args.max_frames)
    K, (h, w) = np.asarray(seq.K), seq.size[:2]
    ts = np.asarray(seq.timestamps, np.float64)
    fps = 1.0 / max(float(np.median(np.diff(ts))), 1e-3) if len(ts) > 1 else 10.0
    work = Path(tempfile.mkdtemp(prefix="orbslam3-"))
    settings = work / "settings.yaml"
    settings.write_text(SETTINGS.format(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], w=w, h=h, fps=max(1, int(round(fps)))))
    slam = pos.Slam(str(args.vocab), str(settings), pos.Sensor.MONOCULAR, use_viewer=False)
    lost = 0
    bad = {pos.TrackingState.LOST, pos.TrackingState.RECENTLY_LOST}
    t0 = time.perf_counter()
    for i in range(len(seq)):
        r = slam.track_monocular(to_gray(seq.read(i)), float(ts[i]))
        lost += r.state in bad
    t_track = time.perf_counter() - t0
    slam.shutdown()
    traj = work / "traj.txt"
    slam.save_trajectory_euroc(str(traj))
    rows = np.loadtxt(traj, ndmin=2) if traj.is_file() and traj.stat().st_size else np.zeros((0, 8))
    shutil.rmtree(work, ignore_errors=True)
    Path(args.result).write_text(json.dumps({"tracking_s": t_track, "process_s": time.perf_counter() - t_proc,
                                             "lost": int(lost), "rows": rows.tolist()}))


def orb_poses(rows: np.ndarray, ts: np.ndarray):
    """Per-frame camera-to-world poses from the EuRoC rows ``t[ns or s] x y z qx qy qz qw``; frames it lacks
    take the nearest earlier frame's pose (the first pose it has before that). Returns ``(poses, missing)``."""
    from scipy.spatial.transform import Rotation

    n = len(ts)
    poses = np.tile(np.eye(4), (n, 1, 1))
    if len(rows) == 0:
        return poses, n
    t = rows[:, 0] / (1e9 if rows[:, 0].max() > 1e6 * max(ts.max(), 1.0) else 1.0)
    have = np.full(n, -1)
    for k, tk in enumerate(t):
        i = int(np.argmin(np.abs(ts - tk)))
        if abs(ts[i] - tk) < 1e-3:
            have[i] = k
    first = int(np.flatnonzero(have >= 0)[0]) if (have >= 0).any() else None
    last = None
    for i in range(n):
        k = have[i] if have[i] >= 0 else (last if last is not None else (have[first] if first is not None else -1))
        if k < 0:
            continue
        last = k
        poses[i, :3, :3] = Rotation.from_quat(rows[k, 4:8]).as_matrix()
        poses[i, :3, 3] = rows[k, 1:4]
    return poses, int((have < 0).sum())


def run_ours(seq_path: str, max_frames, flags: list, out: Path) -> dict:
    cmd = [sys.executable, "-m", "trianflow", "vo", seq_path, "--out", str(out), "--no-progress", *flags]
    if max_frames:
        cmd += ["--max-frames", str(max_frames)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"error: trianflow vo failed ({r.returncode}): {r.stderr.strip()[-1000:]}")
    meta = json.loads((out / "run.json").read_text())
    from trianflow.io.trajectory import read_trajectory

    n = meta["timings"]["frames"]
    return {"frames": n, "process_s": wall, "fps": n / wall, "loop_fps": meta["timings"]["fps"],
            "threads": meta.get("threads"), "poses": read_trajectory(out / "poses.txt")[1]}


def main(argv=None) -> int:
    argv, flags = split_vo_flags(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sequence", nargs="?", default=str(DEFAULT))
    ap.add_argument("--runs", type=int, default=3, help="ORB-SLAM3 runs (default 3)")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--vocab", help="ORB vocabulary (text; default: ../shared/peers/ORBvoc.txt.gz, unpacked)")
    ap.add_argument("--no-ours", action="store_true", help="ORB-SLAM3 only")
    ap.add_argument("--orb-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.orb_worker:
        orb_worker(args)
        return 0
    try:
        import pyorbslam3  # noqa: F401
    except ImportError as exc:
        print(f"error: ORB-SLAM3 is not installed ({exc}): `pip install pyorbslam3` (a benchmark peer only, GPL; "
              f"notes in {PEERS / 'README.md'})", file=sys.stderr)
        return 2
    from trianflow.data import open_sequence

    seq = open_sequence(args.sequence, max_frames=args.max_frames)
    gt = seq.gt_poses
    ts = np.asarray(seq.timestamps, np.float64)
    vocab = vocabulary(args.vocab)
    out = {"sequence": args.sequence, "frames": len(seq), "cores": os.cpu_count(),
           "load_avg_1min": os.getloadavg()[0], "flags": flags}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_ours:
            ours = run_ours(args.sequence, args.max_frames, flags, Path(tmp) / "ours")
            out["trianflow"] = {**{k: v for k, v in ours.items() if k != "poses"}, **_accuracy(ours["poses"], gt)}
    runs = []
    for k in range(args.runs):
        result = Path(tempfile.gettempdir()) / f"trianflow-orb-{os.getpid()}-{k}.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, args.sequence, "--orb-worker", "--vocab", str(vocab), "--result", str(result)]
        if args.max_frames:
            cmd += ["--max-frames", str(args.max_frames)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if not result.is_file():  # it crashed before its result (a crash after it, at exit, is only recorded)
            runs.append({"error": r.stderr.strip()[-500:], "returncode": r.returncode})
            continue
        res = json.loads(result.read_text())
        result.unlink()
        poses, missing = orb_poses(np.asarray(res["rows"]).reshape(-1, 8), ts)
        runs.append({"process_s": wall, "fps": len(seq) / wall, "loop_fps": len(seq) / res["tracking_s"],
                     "lost": res["lost"], "missing": missing, "returncode": r.returncode, **_accuracy(poses, gt)})
    ok = [r for r in runs if "error" not in r]
    out["orbslam3"] = {"runs": runs, "vocabulary": str(vocab)}
    if ok:
        out["orbslam3"]["fps_median"] = float(np.median([r["fps"] for r in ok]))
        if gt is not None:
            out["orbslam3"]["best_ate_pct"] = float(min(r["ate_pct"] for r in ok))
        if "trianflow" in out:
            out["speed_ratio"] = out["trianflow"]["fps"] / out["orbslam3"]["fps_median"]
    print_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
