"""The VO run directory: what ``trianflow vo`` writes and ``export`` / ``report`` read back.

Layout of ``RUN_DIR`` (every file written atomically):

- ``poses.txt``: KITTI format, one 3x4 camera-to-world line per input frame, first = identity.
- ``poses_tum.txt``: TUM format ``timestamp tx ty tz qx qy qz qw`` (timestamps from the input,
  or frame index / fps).
- ``frames.csv``: one row per frame: ``index,timestamp,status,ref,matches,inliers,triangulated,
  shared,scale,rot_deg,trans,seconds,reason,ground_height,scale_source`` (``ref``: the frame it
  was matched against, -1 for none; ``rot_deg``/``trans``: the motion relative to that frame;
  ``ground_height``: the camera height above the ground plane fitted at this (key)frame, in map
  units before the ground scale, ``nan`` where none was found or none was fitted;
  ``scale_source``: ``ground`` where the ground plane set the scale, ``chained`` where the
  frame kept the scale chained through the map, empty when the ground scale was not used;
  ``loop``: at a keyframe that closed a loop, the older keyframe it was matched to, else -1).
- ``run.json``: trianflow version, input (path, reader kind, size, frame count, stereo/baseline,
  ``files``: the frame file names when the input is a folder of images, ``image_dir``: their
  folder), intrinsics (fx, fy, cx, cy and K; pixel centres at integers), the VO config,
  timings, status counts, ``unsolved_frames`` (statuses ``pnp``/``const_vel``), and with
  ``--refine ba`` a ``refine`` section (keyframes, why each was chosen, adjustment counts,
  timings, initial and final intrinsics), ``ground`` (the ground-plane scale: ``mode``
  metric / relative, ``camera_height``, keyframes evaluated, planes found), ``interrupted``
  (``null``, or ``"SIGINT"`` / ``"SIGTERM"`` when the run was stopped: the files then hold the
  frames done so far), ``warnings`` (e.g. unreadable frames that were skipped) and ``loops`` (the loop
  closure: keyframes described, proposals, verified, accepted; per loop the frame pair ``query`` /
  ``candidate``, its inliers, scale drift and the correction it made; the pose graph; seconds; ``null``
  with ``--no-loop`` or ``--refine none``). Poses, points and tracks are the loop-corrected ones.
- ``points.npz``: triangulated points of every pair in world coordinates: ``frame (M,)`` index
  of the first frame of the pair, ``xyz (M,3)``, ``xy (M,2)`` pixel in that frame, ``rgb (M,3)``,
  ``xy2 (M,2)`` pixel in the next frame (the pair's inlier correspondence ``xy -> xy2``).
- ``tracks.npz`` (``--refine ba`` only): the adjusted map. Points ``track_id (P,)``,
  ``xyz (P,3)`` world, ``rgb (P,3)`` uint8; observations, one row each, ``obs_point (O,)`` (row
  into the point arrays), ``obs_frame (O,)`` (keyframe index), ``obs_xy (O,2)`` pixel (centres
  at integers); ``keyframes (F,)`` frame indices.

All poses are in the units of the trajectory: metres for stereo/metric runs, the first pair's
translation = 1 for monocular runs. ``trianflow export`` turns a run directory into a COLMAP
model, a PLY point cloud or a KITTI/TUM trajectory; ``trianflow report`` into an HTML page.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import List, Optional

import numpy as np

from trianflow.errors import InputError
from trianflow.io.atomic import atomic_path, write_json, write_text
from trianflow.io.point_store import write_npz
from trianflow.io.trajectory import read_trajectory, write_kitti, write_tum

FRAME_FIELDS = ("index", "timestamp", "status", "ref", "matches", "inliers", "triangulated", "shared", "scale",
                "rot_deg", "trans", "seconds", "reason", "ground_height", "scale_source", "loop")


@dataclass
class RunData:
    """A VO run read back from disk."""

    path: Path
    poses: np.ndarray  # (N,4,4) camera-to-world
    timestamps: np.ndarray  # (N,)
    K: np.ndarray  # (3,3)
    size: tuple  # (H, W)
    frames: List[dict]
    meta: dict
    points: Optional[dict]
    tracks: Optional[dict] = None  # tracks.npz (refine="ba"), see the module docstring

    @property
    def frame_names(self) -> List[str]:
        """Image name of every frame: the input's file names, else ``000000.png``, ..."""
        files = self.meta.get("input", {}).get("files")
        if files and len(files) == len(self.poses):
            return list(files)
        return [f"{i:06d}.png" for i in range(len(self.poses))]


def loop_pairs(loops: Optional[dict]) -> List[tuple]:
    """The ``(query, candidate)`` frame pairs of a run's loop closure record (``run.json`` ``"loops"``,
    ``VOResult.loops``); empty when it found none or did not run."""
    return [(int(lp["query"]), int(lp["candidate"])) for lp in (loops or {}).get("loops", [])]


def save_run(run_dir, result, seq, extra: Optional[dict] = None) -> Path:
    """Write a :class:`~trianflow.vo.VOResult` of sequence ``seq`` to ``run_dir``."""
    from trianflow import __version__

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_kitti(run_dir / "poses.txt", result.poses)
    write_tum(run_dir / "poses_tum.txt", result.timestamps, result.poses)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(FRAME_FIELDS)
    for f in result.frames:
        d = asdict(f)
        w.writerow([_fmt(d[k]) for k in FRAME_FIELDS])
    write_text(run_dir / "frames.csv", buf.getvalue())
    if result.points is not None:  # uncompressed, streamed from disk for a long run (trianflow.io.point_store)
        with atomic_path(run_dir / "points.npz") as tmp:
            with open(tmp, "wb") as fh:
                write_npz(fh, result.points)
    mapping = getattr(result, "mapping", None)
    if mapping is not None:
        _save_npz(run_dir / "tracks.npz", {**mapping["map"], "keyframes": np.asarray(
            mapping["summary"]["keyframes"], dtype=np.int64)})
    K = np.asarray(result.K, dtype=np.float64)
    counts = result.status_counts()
    meta = {
        "trianflow_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "input": {
            "path": str(seq.source),
            "name": seq.name,
            "kind": seq.kind,
            "frames": len(seq),
            "size": [int(seq.size[0]), int(seq.size[1])],
            "stereo": bool(result.config.stereo),
            "baseline": seq.baseline,
            **_file_names(seq),
        },
        "intrinsics": {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "K": K.tolist()},
        "config": asdict(result.config),
        "timings": result.timings,
        "status_counts": counts,
        "unsolved_frames": [f.index for f in result.frames if f.status in ("pnp", "const_vel")],
    }
    if mapping is not None:
        meta["refine"] = mapping["summary"]
    meta["loops"] = getattr(result, "loops", None)
    if extra:
        meta.update(extra)
    write_json(run_dir / "run.json", meta)
    return run_dir


def _save_npz(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def _file_names(seq) -> dict:
    files = getattr(seq, "files", None)
    if not files:
        return {}
    files = [Path(f) for f in files]
    return {"files": [f.name for f in files], "image_dir": str(files[0].parent)}


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def load_run(run_dir) -> RunData:
    """Read a run directory written by :func:`save_run` (clear InputError when it is not one)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory (create one with `trianflow vo SEQUENCE --out {run_dir}`)")
    for name in ("run.json", "poses.txt"):
        if not (run_dir / name).is_file():
            raise InputError(f"{run_dir}: missing {name}; is this a `trianflow vo` output directory?")
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{run_dir / 'run.json'}: not valid JSON ({exc})") from None
    _, poses = read_trajectory(run_dir / "poses.txt", fmt="kitti")
    ts = None
    if (run_dir / "poses_tum.txt").is_file():
        ts, _ = read_trajectory(run_dir / "poses_tum.txt", fmt="tum")
    if ts is None:
        ts = np.arange(len(poses), dtype=np.float64)
    frames: List[dict] = []
    if (run_dir / "frames.csv").is_file():
        with open(run_dir / "frames.csv", newline="") as fh:
            frames = list(csv.DictReader(fh))
    points = _load_npz(run_dir / "points.npz")
    tracks = _load_npz(run_dir / "tracks.npz")
    try:
        K = np.asarray(meta["intrinsics"]["K"], dtype=np.float64).reshape(3, 3)
        size = tuple(int(v) for v in meta["input"]["size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{run_dir / 'run.json'}: missing or bad intrinsics/input size ({exc}); "
                         "is this a `trianflow vo` output directory?") from None
    return RunData(path=run_dir, poses=poses, timestamps=ts, K=K, size=size, frames=frames, meta=meta, points=points,
                   tracks=tracks)


def _load_npz(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read ({exc}); re-run `trianflow vo` to rewrite it") from None
