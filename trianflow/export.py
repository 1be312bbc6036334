"""Export a VO run directory to the formats other tools read.

- **COLMAP** (:func:`to_colmap` / :func:`write_colmap`): a ``pycolmap.Reconstruction`` with one
  PINHOLE camera (the run's intrinsics; COLMAP puts pixel centres at +0.5, so ``cx, cy`` and
  every 2D point are shifted by +0.5), one image per frame named like the input files, posed
  with ``cam_from_world`` = inverse of the run's camera-to-world pose, and the triangulated
  points with their observations as tracks. Written by pycolmap (``cameras``, ``images``,
  ``points3D``, plus ``rigs``/``frames`` of COLMAP >= 3.12), binary by default or text, and
  readable by ``pycolmap.Reconstruction(path)`` and the COLMAP GUI (*File > Import model*,
  with the image folder from ``run.json`` ``input.image_dir`` as image path).
- **PLY** (:func:`write_ply`): the coloured point cloud, binary little-endian,
  ``x y z`` float64 and ``red green blue`` uint8 per vertex (MeshLab, CloudCompare, Open3D).
- **TUM / KITTI**: the trajectory (:mod:`trianflow.io.trajectory`).

Points: with ``--refine ba`` the adjusted map of ``tracks.npz`` (points observed in several
keyframes); otherwise the per-pair points of ``points.npz`` (each observed in its two frames).
``points="map"`` / ``"pairs"`` force one source.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from trianflow.errors import InputError
from trianflow.io.atomic import atomic_path
from trianflow.mapping.bundle_adjustment import COLMAP_PIXEL_OFFSET, matrix_from_rigid3d, rigid3d_from_matrix
from trianflow.run_dir import RunData, load_run

log = logging.getLogger(__name__)

FORMATS = ("colmap", "ply", "tum", "kitti")
POINT_SOURCES = ("auto", "map", "pairs")

__all__ = ["FORMATS", "POINT_SOURCES", "run_points", "to_colmap", "write_colmap", "read_colmap_poses",
           "write_ply", "read_ply", "export_run"]

PathLike = Union[str, os.PathLike]


def _as_run(run) -> RunData:
    return run if isinstance(run, RunData) else load_run(run)


def run_points(run, points: str = "auto") -> dict:
    """The run's points with observations, whatever file they come from.

    Args:
        run: a :class:`~trianflow.run_dir.RunData` or a run directory.
        points: ``"auto"`` (the adjusted map if the run has one, else the per-pair points),
            ``"map"`` or ``"pairs"``.
    Returns:
        dict ``xyz (P,3)`` float64, ``rgb (P,3)`` uint8, ``obs_point (O,)``, ``obs_frame (O,)``,
        ``obs_xy (O,2)`` (pixels, centres at integers), ``source`` (``"map"``/``"pairs"``/``"none"``).
    """
    run = _as_run(run)
    if points not in POINT_SOURCES:
        raise InputError(f"unknown point source {points!r}; use one of {', '.join(POINT_SOURCES)}")
    if points in ("auto", "map") and run.tracks is not None:
        t = run.tracks
        return {"xyz": np.asarray(t["xyz"], np.float64), "rgb": np.asarray(t["rgb"], np.uint8),
                "obs_point": np.asarray(t["obs_point"], np.int64), "obs_frame": np.asarray(t["obs_frame"], np.int64),
                "obs_xy": np.asarray(t["obs_xy"], np.float64), "source": "map"}
    if points == "map":
        raise InputError(f"{run.path}: no tracks.npz (adjusted map); run `trianflow vo --refine ba` or use "
                         "--points pairs")
    p = run.points
    if p is None or len(p.get("xyz", ())) == 0:
        return {"xyz": np.zeros((0, 3)), "rgb": np.zeros((0, 3), np.uint8), "obs_point": np.zeros(0, np.int64),
                "obs_frame": np.zeros(0, np.int64), "obs_xy": np.zeros((0, 2)), "source": "none"}
    n = len(p["xyz"])
    frame = np.asarray(p["frame"], np.int64)
    rows = np.arange(n)
    obs_point, obs_frame, obs_xy = [rows], [frame], [np.asarray(p["xy"], np.float64)]
    if "xy2" in p:  # the pair's second frame
        nxt = frame + 1
        ok = nxt < len(run.poses)
        obs_point.append(rows[ok])
        obs_frame.append(nxt[ok])
        obs_xy.append(np.asarray(p["xy2"], np.float64)[ok])
    return {"xyz": np.asarray(p["xyz"], np.float64), "rgb": np.asarray(p["rgb"], np.uint8),
            "obs_point": np.concatenate(obs_point), "obs_frame": np.concatenate(obs_frame),
            "obs_xy": np.concatenate(obs_xy), "source": "pairs"}


def to_colmap(run, points: str = "auto"):
    """Build a ``pycolmap.Reconstruction`` from a run (see the module docstring).

    Returns ``(reconstruction, info)`` with ``info``: ``image_ids (N,)`` per frame,
    ``point_ids (P,)`` per point (0 for points without observations), ``source``.
    """
    import pycolmap

    run = _as_run(run)
    pts = run_points(run, points)
    H, W = int(run.size[0]), int(run.size[1])
    K = run.K
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera(model="PINHOLE", width=W, height=H, camera_id=1,
                          params=[K[0, 0], K[1, 1], K[0, 2] + COLMAP_PIXEL_OFFSET, K[1, 2] + COLMAP_PIXEL_OFFSET])
    rec.add_camera_with_trivial_rig(cam)
    names = run.frame_names
    n = len(run.poses)
    obs_point, obs_frame, obs_xy = pts["obs_point"], pts["obs_frame"], pts["obs_xy"]
    good = (obs_frame >= 0) & (obs_frame < n) & (obs_point >= 0) & (obs_point < len(pts["xyz"]))
    obs_point, obs_frame, obs_xy = obs_point[good], obs_frame[good], obs_xy[good]
    order = np.lexsort((obs_point, obs_frame))
    p2d = np.empty(len(obs_point), np.int64)
    counts = np.bincount(obs_frame, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)])
    image_ids = np.arange(1, n + 1)
    for i in range(n):
        rows = order[starts[i]:starts[i + 1]]
        p2d[rows] = np.arange(len(rows))
        img = pycolmap.Image(name=names[i], keypoints=obs_xy[rows] + COLMAP_PIXEL_OFFSET, camera_id=1,
                             image_id=int(image_ids[i]))
        rec.add_image_with_trivial_frame(img, rigid3d_from_matrix(np.linalg.inv(run.poses[i])))
    by_point = np.argsort(obs_point, kind="stable")
    pstart = np.searchsorted(obs_point[by_point], np.arange(len(pts["xyz"]) + 1))
    point_ids = np.zeros(len(pts["xyz"]), np.int64)
    TE = pycolmap.TrackElement
    img_of = obs_frame + 1
    for j in range(len(pts["xyz"])):
        rows = by_point[pstart[j]:pstart[j + 1]]
        if len(rows) == 0:
            continue
        track = pycolmap.Track([TE(int(img_of[r]), int(p2d[r])) for r in rows])
        point_ids[j] = rec.add_point3D(pts["xyz"][j], track, pts["rgb"][j])
    rec.update_point_3d_errors()
    return rec, {"image_ids": image_ids, "point_ids": point_ids, "source": pts["source"]}


def write_colmap(run, out_dir: PathLike, text: bool = False, points: str = "auto") -> dict:
    """Write the run as a COLMAP model into the folder ``out_dir`` (binary, or text with ``text``).

    The files are written into a temporary sibling folder first and moved in place, so a
    failure leaves no half-written model. Returns a summary dict (images, points, observations,
    source, path).
    """
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder; a COLMAP model is a folder")
    rec, info = to_colmap(run, points)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if text:
            rec.write_text(str(tmp))
        else:
            rec.write_binary(str(tmp))
        out_dir.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"path": str(out_dir), "images": rec.num_images(), "points": rec.num_points3D(),
            "observations": int(rec.compute_num_observations()), "source": info["source"]}


def read_colmap_poses(model_dir: PathLike) -> Tuple[list, np.ndarray]:
    """Read a COLMAP model's image names and camera-to-world poses ``(N,4,4)``, ordered by image id."""
    import pycolmap

    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError
        raise InputError(f"{model_dir}: not a readable COLMAP model ({exc})") from None
    ids = sorted(rec.images)
    names = [rec.images[i].name for i in ids]
    poses = np.stack([np.linalg.inv(matrix_from_rigid3d(rec.images[i].cam_from_world())) for i in ids]) if ids \
        else np.zeros((0, 4, 4))
    return names, poses


def write_ply(path: PathLike, xyz: np.ndarray, rgb: Optional[np.ndarray] = None) -> Path:
    """Write ``xyz (P,3)`` and colours ``rgb (P,3)`` uint8 (grey if ``None``) as a binary PLY.

    Vertex properties: ``double x, y, z`` and ``uchar red, green, blue``. Written atomically.
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    rgb = np.full((len(xyz), 3), 200, np.uint8) if rgb is None else np.asarray(rgb).reshape(-1, 3)
    if len(rgb) != len(xyz):
        raise InputError(f"write_ply: {len(xyz)} points but {len(rgb)} colours")
    dtype = np.dtype([("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v = np.empty(len(xyz), dtype=dtype)
    v["x"], v["y"], v["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    v["red"], v["green"], v["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by trianflow export\n"
              f"element vertex {len(xyz)}\nproperty double x\nproperty double y\nproperty double z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(v.tobytes())
    return path


def read_ply(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read a PLY written by :func:`write_ply`: ``(xyz (P,3) float64, rgb (P,3) uint8)``."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise InputError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    n = next(int(ln.split()[2]) for ln in header if ln.startswith("element vertex"))
    if "format binary_little_endian 1.0" not in header:
        raise InputError(f"{path}: only binary little-endian PLY files written by trianflow are supported")
    dtype = np.dtype([("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v = np.frombuffer(data[end + len(b"end_header\n"):], dtype=dtype, count=n)
    return np.stack([v["x"], v["y"], v["z"]], 1), np.stack([v["red"], v["green"], v["blue"]], 1)


def export_run(run_dir, fmt: str, out: PathLike, text: bool = False, points: str = "auto") -> dict:
    """Export the run directory ``run_dir`` as ``fmt`` (one of :data:`FORMATS`) to ``out``.

    ``colmap``: ``out`` is a folder; ``ply``, ``tum``, ``kitti``: ``out`` is a file. Returns a
    summary dict for the CLI (what was written, how many poses/points).
    """
    from trianflow.io.trajectory import write_kitti, write_tum

    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    run = _as_run(run_dir)
    out = Path(out)
    if fmt != "colmap" and out.is_dir():
        raise InputError(f"--out {out}: is a folder; give a file name for --format {fmt}")
    if fmt == "colmap":
        return {"format": fmt, **write_colmap(run, out, text=text, points=points)}
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "ply":
        pts = run_points(run, points)
        write_ply(out, pts["xyz"], pts["rgb"])
        return {"format": fmt, "path": str(out), "points": int(len(pts["xyz"])), "source": pts["source"]}
    if fmt == "tum":
        write_tum(out, run.timestamps, run.poses)
    else:
        write_kitti(out, run.poses)
    return {"format": fmt, "path": str(out), "poses": int(len(run.poses))}
