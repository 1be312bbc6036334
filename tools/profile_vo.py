#!/usr/bin/env python
"""Where the time of ``trianflow vo`` goes, stage by stage (one JSON object).

Runs ``trianflow vo SEQUENCE`` (the default, or the options after ``--``) in this process under cProfile and
adds up, per stage, the cumulative time of the functions that do it, on the VO's own thread (cProfile sees
only that thread: work the frame pipeline's worker does ahead is reported from ``run.json`` as
``worker_ms``). Stages (ms per frame): ``flow`` (DIS forward + backward), ``selection`` (scores, top 20 %,
sampling), ``essential_ransac`` (E-RANSAC and its refinement), ``triangulation``, ``scale``, ``tracks_lk``
(the map's Lucas-Kanade tracks), ``mapper_other`` (keyframe decision, spawning, map book-keeping),
``bundle_adjustment`` (the windows and the final one), ``ground``, ``read_decode`` (reading and decoding
frames in the loop), ``wait_worker`` (the loop waiting for the pipeline), ``write_outputs``, ``startup``
(imports, opening the sequence) and ``other``. cProfile adds its own overhead (~10 %): the shares matter,
the end-to-end ``process_s`` without cProfile is what ``tools/bench_peers.py`` or ``/usr/bin/time`` give.

Usage:
    python tools/profile_vo.py [SEQUENCE] [-- trianflow vo options]   (default: ../shared/data/kitti_03_first400)
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import DATA, print_json, split_vo_flags  # noqa: E402

# stage -> (file suffix, function name) pairs whose cumulative times add up to it
STAGES = {
    "flow": [("flow_backends.py", "__call__")],
    "selection": [("vo/two_view.py", "_select"), ("vo/two_view.py", "prepare")],
    "essential_ransac": [("geometry/ransac.py", "estimate_relative_pose")],
    "triangulation": [("geometry/triangulation.py", "triangulate_midpoint")],
    "scale": [("vo/scale.py", "estimate")],
    "tracks_lk": [("mapping/tracks.py", "advance")],
    "mapper": [("mapping/local_mapper.py", "process")],
    "bundle_adjustment": [("mapping/window_ba.py", "adjust_window")],
    "ground": [("vo/ground.py", "apply_ground_scale"), ("mapping/local_mapper.py", "keyframe_ground")],
    "loop_closure": [("loop/places.py", "add"), ("loop/closure.py", "close_loops")],
    "read_decode": [("vo/pipeline.py", "read_frame"), ("vo/run.py", "_read_frame")],
    "write_outputs": [("trianflow/run_dir.py", "save_run")],
    "run_vo": [("vo/run.py", "run_vo")],
}


def _cum(stats: pstats.Stats, file_suffix: str, name: str) -> float:
    total = 0.0
    for (file, _, func), (_, _, _, ct, _) in stats.stats.items():
        if func == name and file.replace("\\", "/").endswith(file_suffix):
            total += ct
    return total


def main(argv=None) -> int:
    argv, flags = split_vo_flags(argv)
    seq = argv[0] if argv else str(DATA / "kitti_03_first400")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        from trianflow.cli import main as cli_main

        rc = cli_main(["vo", seq, "--out", str(out), "--no-progress", *flags])
        prof.disable()
        wall = time.perf_counter() - t0
        if rc != 0:
            return rc
        meta = json.loads((out / "run.json").read_text())
    stats = pstats.Stats(prof)
    n = meta["timings"]["frames"]
    sec = {k: sum(_cum(stats, f, fn) for f, fn in v) for k, v in STAGES.items()}
    # the mapper's own work: process() less its tracks and windows (the final adjustment runs in finish())
    sec["mapper_other"] = max(sec.pop("mapper") - sec["tracks_lk"] - sec["bundle_adjustment"], 0.0)
    sec["wait_worker"] = meta["timings"].get("wait_s", 0.0) if meta["timings"].get("threads", {}).get("pipeline") \
        else 0.0
    run_vo_s = sec.pop("run_vo")
    loop = ("flow", "selection", "essential_ransac", "triangulation", "scale", "tracks_lk", "mapper_other",
            "bundle_adjustment", "ground", "read_decode", "wait_worker")
    sec["other"] = max(run_vo_s - sum(sec[k] for k in loop), 0.0)
    sec["startup"] = max(wall - run_vo_s - sec["write_outputs"], 0.0)
    ms = {k: round(1000 * v / n, 2) for k, v in sec.items()}
    t = meta["timings"]
    worker = {}
    if t.get("threads", {}).get("pipeline"):
        worker = {"flow": round(t["flow_ms"], 2), "read_decode": round(1000 * t["read_s"] / n, 2)}
    print_json({"sequence": seq, "flags": flags, "frames": n, "process_s_profiled": round(wall, 2),
                "ms_per_frame": ms, "share_pct": {k: round(100 * v / wall, 1) for k, v in sec.items()},
                "worker_ms": worker, "threads": t.get("threads"), "commit": _commit()})
    return 0


def _commit() -> str:
    import subprocess

    try:
        import trianflow

        root = Path(trianflow.__file__).resolve().parents[1]
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    except Exception:  # noqa: BLE001 - a benchmark's provenance, not its result
        return ""


if __name__ == "__main__":
    sys.exit(main())
