#!/usr/bin/env python
"""The VO regression table: ``trianflow vo`` on every real sequence and its replays.

Runs ``trianflow vo`` (the default, or with the options given after ``--``) on every real sequence of
``../shared/data`` and on replays of each — every 2nd frame (``2x``), every 3rd (``3x``), uneven frame rates
(``irregular``: strides 1, 3, 2, 1, 3, 2, ...), played backwards (``rev``) — and prints one JSON line per
row, then the same rows as a Markdown table (also written to ``--markdown FILE``).

Each row: ``sequence``, ``replay``, ``frames``, ``flags``, ``ate_pct`` (Sim3-aligned ATE RMSE in % of the GT
path; ``null`` without ground truth), ``t_err`` / ``r_err`` (KITTI drift in % and deg/100 m over the
100-800 m segments that fit the path, ``null`` on shorter paths), ``fps`` (frames/s of the VO as
``run.json`` records it, image reading included), ``seconds``, ``status`` counts, ``ground`` (frames
whose scale the ground plane set / frames evaluated, where the ground scale ran),
``loops`` (loops the loop closure accepted, where it ran) and, with
``--camera-height`` or ``--stereo`` among the options, ``se3_ate_pct`` and ``length_ratio`` (path length
without scale alignment / GT).

pycolmap's incremental mapper is the peer. Its figures are measured once (``--measure-pycolmap``, rows of
at most ``--pycolmap-max-frames`` frames) and stored in ``tools/bench_vo_suite_pycolmap.json`` with the
command that made them and the frames they cover; every later table shows them beside our row
(``colmap_ate_pct``, ``colmap_seconds``, ``speedup``: pycolmap's seconds per frame / ours).

Usage:
    python tools/bench_vo_suite.py [--sequences kitti_01_turn,...] [--replays 1x,2x,...]
        [--markdown FILE] [--measure-pycolmap] [-- VO OPTIONS]
e.g. ``python tools/bench_vo_suite.py -- --refine none`` for the pair-by-pair VO.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: the shared helpers

import benchlib  # noqa: E402

SUITE_REPLAYS = ("1x", "2x", "3x", "irregular", "rev")
STORED = Path(__file__).resolve().parent / "bench_vo_suite_pycolmap.json"
MIN_FRAMES = 4  # shorter replays are left out (a row of 3 frames measures nothing)


def real_sequences(data: Path) -> list:
    """The folders of ``data`` that ``trianflow vo`` can read as a sequence, sorted by name."""
    from trianflow.data import open_sequence

    out = []
    for d in sorted(p for p in data.iterdir() if p.is_dir()):
        try:
            seq = open_sequence(str(d))
        except Exception:  # not a sequence (stereo pairs, trajectory files)
            continue
        if len(seq) >= 2:
            out.append(d)
    return out


def replay_folder(src: Path, seq, replay: str, tmp: Path):
    """``(folder, extra trianflow-vo arguments)`` of a replay of ``src``: a KITTI folder with its GT where
    ``src`` has ``poses.txt``, else a plain image folder read with the sequence's intrinsics."""
    idx = benchlib.REPLAYS[replay](len(seq))
    out = tmp / f"{src.name}_{replay}"
    if (src / "poses.txt").is_file() and (src / "calib.txt").is_file():
        return benchlib.write_replay(src, idx, out), [], len(idx)
    return benchlib.write_image_replay(seq, idx, out), ["--intrinsics", benchlib.intrinsics_arg(seq.K)], len(idx)


def run_row(src: Path, replay: str, flags: list, tmp: Path) -> dict:
    """One row: the replay written, ``trianflow vo`` run on it in this process, its output evaluated."""
    import numpy as np

    from trianflow.data import open_sequence

    seq = open_sequence(str(src))
    folder, extra, n = replay_folder(src, seq, replay, tmp)
    row = {"sequence": src.name, "replay": replay, "frames": n, "flags": " ".join(flags)}
    out = tmp / f"run_{src.name}_{replay}"
    run, est, error = benchlib.run_cli_vo(folder, out, [*extra, *flags])
    if error:
        row["error"] = error
        return row
    row.update({"fps": run["timings"]["fps"], "seconds": n / max(run["timings"]["fps"], 1e-9),
                "status": run["status_counts"]})
    if run.get("ground"):
        with open(out / "frames.csv", newline="") as fh:
            sources = [r.get("scale_source", "") for r in csv.DictReader(fh)]
        row["ground"] = f"{sum(s == 'ground' for s in sources)}/{len(sources)}"
    if run.get("loops") is not None:  # loop closure ran (the default with --refine ba)
        row["loops"] = run["loops"]["accepted"]
    vseq = open_sequence(str(folder), intrinsics=extra[1] if extra else None)
    row.update({"ate_pct": None, "t_err": None, "r_err": None})
    if vseq.gt_poses is not None:
        gt = np.asarray(vseq.gt_poses)[: len(est)]
        m = benchlib.trajectory_metrics(est, gt)
        row.update({"ate_pct": m["ate_pct_of_path"], "t_err": m["kitti_t_err"], "r_err": m["kitti_r_err"],
                    "path_m": m["path_length"]})
        if "--camera-height" in flags or "--stereo" in flags:
            se3 = benchlib.trajectory_metrics(est, gt, align="se3")
            row["se3_ate_pct"] = se3["ate_pct_of_path"]
            row["length_ratio"] = benchlib.path_length(est) / max(benchlib.path_length(gt), 1e-9)
    return row


def measure_pycolmap(src: Path, replay: str, tmp: Path) -> dict:
    """pycolmap's incremental mapper on the replay (known K, sequential matching): its stored entry."""
    from trianflow.data import open_sequence

    seq = open_sequence(str(src))
    folder, extra, n = replay_folder(src, seq, replay, tmp / "colmap")
    vseq = open_sequence(str(folder), intrinsics=extra[1] if extra else None)
    r = benchlib.pycolmap_benchmark(vseq)
    entry = {"frames": n, "registered": r.get("registered", 0), "seconds": r["seconds"],
             "ate_pct": r.get("ate_pct_of_path"), "t_err": r.get("kitti_t_err"), "r_err": r.get("kitti_r_err")}
    return entry


def load_stored() -> dict:
    return json.loads(STORED.read_text()) if STORED.is_file() else {"rows": {}}


def with_peer(row: dict, stored: dict) -> dict:
    """``row`` with pycolmap's stored figures for the same sequence, replay and frame count beside it."""
    p = stored["rows"].get(f"{row['sequence']}/{row['replay']}")
    if p and p.get("frames") == row["frames"]:
        row["colmap_ate_pct"] = p.get("ate_pct")
        row["colmap_r_err"] = p.get("r_err")
        row["colmap_seconds"] = p["seconds"]
        if row.get("fps"):
            row["speedup"] = (p["seconds"] / p["frames"]) / (1.0 / row["fps"])
    return row


def _fmt(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown(rows: list) -> str:
    """The rows as a Markdown table."""
    head = ("sequence", "replay", "frames", "ATE %", "t_err %", "r_err °/100 m", "frames/s", "ground", "loops",
            "pycolmap ATE %", "pycolmap r_err", "× pycolmap speed")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['sequence']} | {r['replay']} | {r['frames']} | {r['error']} |" + " |" * (len(head) - 4))
            continue
        ate = _fmt(r.get("ate_pct"))
        if r.get("se3_ate_pct") is not None:
            ate += f" (SE3 {_fmt(r['se3_ate_pct'])}, length {_fmt(r['length_ratio'], 3)})"
        lines.append("| " + " | ".join([
            r["sequence"], r["replay"], str(r["frames"]), ate, _fmt(r.get("t_err")), _fmt(r.get("r_err"), 3),
            _fmt(r.get("fps"), 1), r.get("ground", "–"), _fmt(r.get("loops")), _fmt(r.get("colmap_ate_pct")),
            _fmt(r.get("colmap_r_err"), 3), _fmt(r.get("speedup"), 1)]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python tools/bench_vo_suite.py " + shlex.join(argv)
    argv, flags = benchlib.split_vo_flags(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=benchlib.DATA, help="folder of real sequences (../shared/data)")
    ap.add_argument("--sequences", help="comma-separated folder names (default: every sequence in --data)")
    ap.add_argument("--replays", default=",".join(SUITE_REPLAYS),
                    help=f"comma-separated replays of {', '.join(benchlib.REPLAYS)} (default {','.join(SUITE_REPLAYS)})")
    ap.add_argument("--markdown", type=Path, help="also write the Markdown table here")
    ap.add_argument("--measure-pycolmap", action="store_true",
                    help=f"run pycolmap on the rows and store its figures in {STORED.name}")
    ap.add_argument("--pycolmap-max-frames", type=int, default=60,
                    help="with --measure-pycolmap: only rows of at most this many frames (default 60)")
    args = ap.parse_args(argv)
    replays = [r for r in args.replays.split(",") if r]
    bad = [r for r in replays if r not in benchlib.REPLAYS]
    if bad:
        ap.error(f"unknown replay {bad[0]!r}: use {', '.join(benchlib.REPLAYS)}")
    if not args.data.is_dir():
        ap.error(f"--data {args.data}: no such folder")
    seqs = real_sequences(args.data)
    if args.sequences:
        want = args.sequences.split(",")
        missing = [w for w in want if w not in {s.name for s in seqs}]
        if missing:
            ap.error(f"--sequences: {missing[0]!r} is not a sequence in {args.data}")
        seqs = [s for s in seqs if s.name in want]
    stored = load_stored()
    rows = []
    from trianflow.data import open_sequence

    with tempfile.TemporaryDirectory(prefix="vo_suite_") as tmp:
        for src in seqs:
            n_src = len(open_sequence(str(src)))
            for replay in replays:
                n = len(benchlib.REPLAYS[replay](n_src))
                if n < MIN_FRAMES:
                    continue
                row = run_row(src, replay, flags, Path(tmp))
                if args.measure_pycolmap and n <= args.pycolmap_max_frames:
                    entry = measure_pycolmap(src, replay, Path(tmp))
                    entry["command"] = command
                    entry["measured"] = datetime.date.today().isoformat()
                    entry["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
                    entry["load_avg_1min"] = os.getloadavg()[0]  # other work on the machine slows pycolmap too
                    stored["rows"][f"{src.name}/{replay}"] = entry
                    STORED.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
                row = with_peer(row, stored)
                rows.append(row)
                benchlib.print_json(row)
                sys.stdout.flush()
    table = markdown(rows)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
