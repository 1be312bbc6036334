"""TUM RGB-D sequences (``rgbd_dataset_freiburgX_*`` folders) as frame sequences.

Layout: ``rgb.txt`` lists ``timestamp filename`` per line (``#`` comment lines), images under
``rgb/``; ``groundtruth.txt`` (optional) holds ``timestamp tx ty tz qx qy qz qw`` camera-to-world
poses of the colour camera's optical centre.

Intrinsics: the caller's, else the published calibration chosen by the folder name
(``freiburg1``/``freiburg2``/``freiburg3``, also ``fr1``..``fr3``). For freiburg1/2 with the
default intrinsics the images are undistorted with the published coefficients (k1 k2 p1 p2 k3)
once per frame through precomputed ``cv2.remap`` maps; the undistorted images keep the same K.
freiburg3 images are already undistorted. With caller intrinsics no undistortion is done (the
images are assumed to be rectified already).

Ground truth: each frame gets the pose with the nearest ground-truth timestamp within 0.02 s.
``meta["gt_poses"] (N,4,4)`` (NaN where there is none) and ``meta["gt_valid"] (N,)`` always
exist when the file does; ``gt_poses`` is set only when every frame has a pose.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np

from trianflow.data.image_folder import check_png_sizes, read_image, read_sized_image
from trianflow.data.sequence import FrameSequence, register_reader
from trianflow.errors import InputError

log = logging.getLogger(__name__)

# published TUM RGB-D calibration of the colour cameras: fx fy cx cy, and d0..d4 = k1 k2 p1 p2 k3
TUM_INTRINSICS = {
    1: (517.3, 516.5, 318.6, 255.3),
    2: (520.9, 521.0, 325.1, 249.7),
    3: (535.4, 539.2, 320.1, 247.6),
}
TUM_DISTORTION = {
    1: (0.2624, -0.9531, -0.0054, 0.0026, 1.1633),
    2: (0.2312, -0.7849, -0.0033, -0.0001, 0.9172),
}
MAX_GT_DT = 0.02  # seconds

_FR_RE = re.compile(r"(?:freiburg|(?<![a-z0-9])fr)([123])(?![0-9])")


def is_tum(path: Union[str, Path]) -> bool:
    """True for a folder with an ``rgb.txt``."""
    p = Path(path)
    return p.is_dir() and (p / "rgb.txt").is_file()


def freiburg_camera(name: str) -> Optional[int]:
    """1, 2 or 3 when ``name`` (a folder name) contains ``freiburg1..3`` / ``fr1..3``; else None."""
    m = _FR_RE.search(name.lower())
    return int(m.group(1)) if m else None


def _read_table(path: Path, min_cols: int, what: str) -> List[Tuple[int, List[str]]]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) < min_cols:
            raise InputError(f"{path}:{lineno}: expected {what}, got {s[:60]!r}")
        rows.append((lineno, parts))
    return rows


def read_rgb_list(path: Union[str, Path]) -> Tuple[np.ndarray, List[str]]:
    """Parse a TUM ``rgb.txt``: ``(timestamps (N,) float64, filenames)``; InputError naming the line."""
    path = Path(path)
    ts, names = [], []
    for lineno, parts in _read_table(path, 2, "'timestamp filename'"):
        try:
            ts.append(float(parts[0]))
        except ValueError:
            raise InputError(f"{path}:{lineno}: cannot parse timestamp {parts[0]!r}") from None
        names.append(parts[1])
    return np.array(ts, dtype=np.float64), names


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(...,4)`` as ``qx qy qz qw`` -> rotation matrices ``(...,3,3)``."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return R.reshape(q.shape[:-1] + (3, 3))


def read_tum_trajectory(path: Union[str, Path]) -> Tuple[np.ndarray, np.ndarray]:
    """Parse a TUM trajectory (``timestamp tx ty tz qx qy qz qw``).

    Returns:
        ``(timestamps (M,) float64, poses (M,4,4) float64 camera-to-world)``.
    """
    path = Path(path)
    rows = _read_table(path, 8, "'timestamp tx ty tz qx qy qz qw'")
    data = np.empty((len(rows), 8))
    for k, (lineno, parts) in enumerate(rows):
        try:
            data[k] = [float(v) for v in parts[:8]]
        except ValueError:
            raise InputError(f"{path}:{lineno}: cannot parse numbers in {' '.join(parts)[:60]!r}") from None
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: non-finite values in the trajectory")
    T = np.tile(np.eye(4), (len(rows), 1, 1))
    if len(rows):
        T[:, :3, :3] = quat_to_matrix(data[:, 4:8])
        T[:, :3, 3] = data[:, 1:4]
    return data[:, 0], T


def associate(t_query: np.ndarray, t_ref: np.ndarray, max_dt: float = MAX_GT_DT) -> np.ndarray:
    """Index of the nearest ``t_ref`` for each ``t_query`` (``-1`` when farther than ``max_dt``).

    Args:
        t_query: ``(N,)``; t_ref: ``(M,)`` (any order).
    Returns:
        ``(N,)`` int64 indices into ``t_ref``.
    """
    t_query = np.asarray(t_query, dtype=np.float64)
    t_ref = np.asarray(t_ref, dtype=np.float64)
    if len(t_ref) == 0:
        return np.full(len(t_query), -1, dtype=np.int64)
    order = np.argsort(t_ref)
    sref = t_ref[order]
    pos = np.clip(np.searchsorted(sref, t_query), 1, len(sref) - 1) if len(sref) > 1 else np.zeros(len(t_query), int)
    cand = np.stack([pos - 1, pos], axis=1) if len(sref) > 1 else pos[:, None]
    dt = np.abs(sref[cand] - t_query[:, None])
    best = cand[np.arange(len(t_query)), np.argmin(dt, axis=1)]
    ok = np.min(dt, axis=1) <= max_dt
    return np.where(ok, order[best], -1).astype(np.int64)


@dataclass
class TumSequence(FrameSequence):
    """A TUM RGB-D sequence; frames read lazily and undistorted with precomputed maps."""

    files: List[Path] = field(default_factory=list)
    undistort_maps: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def _read(self, i: int) -> np.ndarray:
        img = read_sized_image(self.files[i], self.size)
        if self.undistort_maps is not None:
            img = cv2.remap(img, self.undistort_maps[0], self.undistort_maps[1], cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT)
        return img


def open_tum(path: Union[str, Path], K: Optional[np.ndarray] = None, max_frames: Optional[int] = None) -> TumSequence:
    """Open a TUM RGB-D sequence folder (kind ``"tum"``).

    Args:
        path: folder with ``rgb.txt``.
        K: ``(3,3)`` intrinsics (default: from the freiburg camera named in the folder, with
            undistortion for freiburg1/2).
        max_frames: keep only the first frames.
    Raises:
        InputError: no/unparseable rgb.txt, no frames, missing image, unknown camera without K.
    """
    p = Path(path)
    rgb_txt = p / "rgb.txt"
    if not rgb_txt.is_file():
        raise InputError(f"{p}: no rgb.txt (not a TUM RGB-D sequence folder)")
    ts, names = read_rgb_list(rgb_txt)
    if max_frames is not None:
        ts, names = ts[: max(int(max_frames), 0)], names[: max(int(max_frames), 0)]
    if len(names) == 0:
        raise InputError(f"{rgb_txt}: lists no frames")
    files = [p / n for n in names]
    first = read_image(files[0])
    size = tuple(first.shape[:2])
    check_png_sizes(files, size)
    maps = None
    cam = freiburg_camera(p.resolve().name)
    if K is None:
        if cam is None:
            raise InputError(f"{p}: unknown TUM camera (folder name has no freiburg1/2/3): "
                             "pass --intrinsics fx,fy,cx,cy")
        fx, fy, cx, cy = TUM_INTRINSICS[cam]
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
        if cam in TUM_DISTORTION:
            maps = cv2.initUndistortRectifyMap(K, np.array(TUM_DISTORTION[cam]), None, K, (size[1], size[0]),
                                               cv2.CV_16SC2)
    K = np.asarray(K, dtype=np.float64)
    meta = {"camera": f"freiburg{cam}" if cam else None, "undistorted": maps is not None}
    gt_poses = None
    gt_file = p / "groundtruth.txt"
    if gt_file.is_file():
        gt_t, gt_T = read_tum_trajectory(gt_file)
        idx = associate(ts, gt_t, MAX_GT_DT)
        valid = idx >= 0
        all_T = np.full((len(ts), 4, 4), np.nan)
        all_T[valid] = gt_T[idx[valid]]
        meta.update(gt_poses=all_T, gt_valid=valid, gt_timestamps=np.where(valid, gt_t[idx], np.nan))
        if valid.all():
            gt_poses = all_T
        else:
            log.info("%s: %d of %d frames have a ground-truth pose within %.2f s", p, int(valid.sum()), len(ts),
                     MAX_GT_DT)
    return TumSequence(name=p.resolve().name, source=str(p), K=K, timestamps=ts, size=size, gt_poses=gt_poses,
                       kind="tum", meta=meta, files=files, undistort_maps=maps)


register_reader("tum", is_tum, lambda p, K=None, max_frames=None, **_: open_tum(p, K=K, max_frames=max_frames),
                priority=10)
