"""Trajectory files: KITTI and TUM formats, and conversion to/from evo trajectories.

Formats (one pose per line, ``#`` starts a comment line, blank lines are skipped, numbers are
separated by spaces, tabs or commas):

* **KITTI** (12 numbers per line): the first three rows of the 4x4 camera-to-world pose
  ``T_w_cam``, row-major: ``r11 r12 r13 tx r21 r22 r23 ty r31 r32 r33 tz``. No timestamps.
* **TUM** (8 numbers per line): ``timestamp tx ty tz qx qy qz qw`` (quaternion scalar last,
  Hamilton convention, as in the TUM RGB-D benchmark and evo's TUM files).

Poses are returned as ``(N,4,4)`` float64 arrays in the column-vector convention
(``X_world = R X_cam + t``). TUM quaternions are turned into rotation matrices with the same
arithmetic as evo (``evo.core.transformations.quaternion_matrix``, which normalises the
quaternion), so metrics computed from our arrays match ``evo_ape`` / ``evo_rpe`` to ~1e-15.

Writers are atomic (a failed write never leaves a partial file) and print every number with
``repr`` precision (shortest string that round-trips to the same float64).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from trianflow.errors import InputError
from trianflow.io.atomic import atomic_path

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

FORMATS = ("auto", "kitti", "tum")
_NUMBERS_PER_LINE = {"kitti": 12, "tum": 8}

__all__ = [
    "FORMATS",
    "read_trajectory",
    "write_kitti",
    "write_tum",
    "write_trajectory",
    "to_evo",
    "from_evo",
    "quaternions_to_matrices",
    "matrices_to_quaternions",
]


# ----------------------------------------------------------------------------------------------
# quaternions (TUM: qx qy qz qw)


def quaternions_to_matrices(quat_xyzw: np.ndarray) -> np.ndarray:
    """Quaternions ``(N,4)`` as ``qx qy qz qw`` (normalised here) -> rotation matrices ``(N,3,3)``.

    A vectorised copy of the arithmetic of ``evo.core.transformations.quaternion_matrix`` (the
    function evo uses for TUM files), so the rotations agree with evo's within a few ulp (evo's
    own ``numpy.dot`` is not bit-reproducible across memory layouts). Raises :class:`InputError`
    on a zero quaternion.
    """
    q = np.asarray(quat_xyzw, dtype=np.float64).reshape(-1, 4)[:, [3, 0, 1, 2]]  # w x y z
    n = (q[:, None, :] @ q[:, :, None])[:, 0, 0]
    bad = np.flatnonzero(~(n > 1e-12))
    if len(bad):
        raise InputError(
            f"quaternion {int(bad[0])} is zero; TUM lines must be 't tx ty tz qx qy qz qw' with a unit quaternion"
        )
    q = q * np.sqrt(2.0 / n)[:, None]
    o = q[:, :, None] * q[:, None, :]
    R = np.empty((len(q), 3, 3))
    R[:, 0, 0] = 1.0 - o[:, 2, 2] - o[:, 3, 3]
    R[:, 0, 1] = o[:, 1, 2] - o[:, 3, 0]
    R[:, 0, 2] = o[:, 1, 3] + o[:, 2, 0]
    R[:, 1, 0] = o[:, 1, 2] + o[:, 3, 0]
    R[:, 1, 1] = 1.0 - o[:, 1, 1] - o[:, 3, 3]
    R[:, 1, 2] = o[:, 2, 3] - o[:, 1, 0]
    R[:, 2, 0] = o[:, 1, 3] - o[:, 2, 0]
    R[:, 2, 1] = o[:, 2, 3] + o[:, 1, 0]
    R[:, 2, 2] = 1.0 - o[:, 1, 1] - o[:, 2, 2]
    return R


def matrices_to_quaternions(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(N,3,3)`` -> quaternions ``(N,4)`` as ``qx qy qz qw`` with ``qw >= 0``."""
    from evo.core import transformations as tr

    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    out = np.empty((len(R), 4))
    T = np.eye(4)
    for i, r in enumerate(R):
        T[:3, :3] = r
        w, x, y, z = tr.quaternion_from_matrix(T)
        q = np.array([x, y, z, w])
        out[i] = -q if w < 0 else q
    return out


# ----------------------------------------------------------------------------------------------
# reading


def _parse_rows(path: Path, fmt: str) -> tuple[str, np.ndarray]:
    """Parse ``path`` into an ``(N,K)`` float64 matrix; return the detected format and the matrix."""
    if not path.exists():
        raise InputError(f"trajectory file {path} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"trajectory file {path} is a directory; pass a KITTI or TUM pose file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read trajectory file {path} ({exc}); pass a KITTI or TUM text file") from None

    if "," in text:
        text = text.replace(",", " ")
    flat: list[str] = []
    expected = _NUMBERS_PER_LINE.get(fmt)
    n_rows = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if expected is None:  # auto-detect from the first data line
            if len(fields) == 12:
                fmt, expected = "kitti", 12
            elif len(fields) == 8:
                fmt, expected = "tum", 8
            else:
                raise InputError(
                    f"{path} line {lineno}: {len(fields)} numbers; expected 12 (KITTI: 3x4 pose, row-major) "
                    f"or 8 (TUM: t tx ty tz qx qy qz qw)"
                )
        if len(fields) != expected:
            raise InputError(
                f"{path} line {lineno}: {len(fields)} numbers, expected {expected} for {fmt.upper()} format; "
                f"fix the line or pass the right --format"
            )
        flat.extend(fields)
        n_rows += 1
    if n_rows == 0:
        raise InputError(
            f"trajectory file {path} has no poses; expected KITTI (12 numbers/line) or TUM (8 numbers/line)"
        )
    try:
        mat = np.array(flat, dtype=np.float64).reshape(n_rows, expected)
    except ValueError:
        mat = None
    if mat is None or not np.all(np.isfinite(mat)):
        _locate_bad_value(path, text)
    return fmt, mat


def _locate_bad_value(path: Path, text: str) -> None:
    """Raise an InputError naming the first line with a non-numeric or non-finite value."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            vals = [float(f) for f in fields]
        except ValueError:
            raise InputError(
                f"{path} line {lineno}: not a number in {line.strip()[:60]!r}; fix or remove the line"
            ) from None
        if not all(np.isfinite(vals)):
            raise InputError(f"{path} line {lineno}: NaN or infinite value; fix or remove the line")
    raise InputError(f"{path}: cannot parse the numbers; expected KITTI (12 numbers/line) or TUM (8 numbers/line)")


def read_trajectory(path: PathLike, fmt: str = "auto") -> tuple[Optional[np.ndarray], np.ndarray]:
    """Read a KITTI or TUM trajectory file.

    Args:
        path: text file, one pose per line (see the module docstring).
        fmt: ``"auto"`` (12 numbers per line -> KITTI, 8 -> TUM), ``"kitti"`` or ``"tum"``.

    Returns:
        ``(timestamps, poses)``: timestamps ``(N,)`` float64 seconds for TUM files, ``None`` for
        KITTI files; poses ``(N,4,4)`` float64 camera-to-world transforms.

    Raises:
        InputError: missing/unreadable file, wrong number of values on a line (the message names
            the file and the line), non-numeric or non-finite values, zero quaternion, empty file.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown trajectory format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = Path(path)
    fmt, mat = _parse_rows(path, fmt)
    n = len(mat)
    poses = np.zeros((n, 4, 4))
    poses[:, 3, 3] = 1.0
    if fmt == "kitti":
        poses[:, :3, :] = mat.reshape(n, 3, 4)
        timestamps = None
    else:
        timestamps = mat[:, 0].copy()
        poses[:, :3, 3] = mat[:, 1:4]
        try:
            poses[:, :3, :3] = quaternions_to_matrices(mat[:, 4:8])
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    logger.debug("read %d poses (%s) from %s", n, fmt, path)
    return timestamps, poses


# ----------------------------------------------------------------------------------------------
# writing


def _check_poses(poses) -> np.ndarray:
    P = np.asarray(poses, dtype=np.float64)
    if P.ndim == 2 and P.shape in ((3, 4), (4, 4)):
        P = P[None]
    if P.ndim != 3 or P.shape[1:] not in ((3, 4), (4, 4)):
        raise InputError(f"poses must have shape (N,4,4) or (N,3,4), got {tuple(P.shape)}")
    if not np.all(np.isfinite(P)):
        raise InputError("poses contain NaN or infinite values; cannot write the trajectory")
    return P


def _fmt_row(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def write_kitti(path: PathLike, poses) -> None:
    """Write poses ``(N,4,4)`` or ``(N,3,4)`` as a KITTI pose file (12 numbers per line), atomically."""
    P = _check_poses(poses)
    lines = [_fmt_row(p[:3, :4].reshape(-1)) for p in P]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_tum(path: PathLike, timestamps, poses) -> None:
    """Write ``timestamps (N,)`` and poses ``(N,4,4)`` as a TUM file (``t tx ty tz qx qy qz qw``), atomically.

    The quaternion is written with ``qw >= 0``. A non-orthonormal rotation is written as the
    quaternion of its nearest rotation (evo's ``quaternion_from_matrix``).
    """
    P = _check_poses(poses)
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if len(ts) != len(P):
        raise InputError(f"write_tum: {len(ts)} timestamps for {len(P)} poses; pass one timestamp per pose")
    if not np.all(np.isfinite(ts)):
        raise InputError("write_tum: timestamps contain NaN or infinite values")
    q = matrices_to_quaternions(P[:, :3, :3])
    lines = [_fmt_row([t, *p[:3, 3], *qq]) for t, p, qq in zip(ts, P, q)]
    with atomic_path(path) as tmp:
        tmp.write_text("# timestamp tx ty tz qx qy qz qw\n" + "\n".join(lines) + "\n")


def write_trajectory(path: PathLike, poses, timestamps=None, fmt: str = "auto") -> None:
    """Write a trajectory; ``fmt="auto"`` writes TUM when ``timestamps`` are given, else KITTI."""
    if fmt not in FORMATS:
        raise InputError(f"unknown trajectory format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = "kitti" if timestamps is None else "tum"
    if fmt == "kitti":
        write_kitti(path, poses)
    else:
        if timestamps is None:
            raise InputError("TUM format needs timestamps; pass timestamps or use the KITTI format")
        write_tum(path, timestamps, poses)


# ----------------------------------------------------------------------------------------------
# evo conversion


def to_evo(poses, timestamps: Optional[Sequence[float]] = None, name: Optional[str] = None):
    """Poses ``(N,4,4)`` (+ optional ``timestamps (N,)``) -> evo ``PoseTrajectory3D`` / ``PosePath3D``.

    Returns a ``PoseTrajectory3D`` when timestamps are given, else a ``PosePath3D``. The pose
    matrices are copied.
    """
    from evo.core.trajectory import PosePath3D, PoseTrajectory3D

    P = _check_poses(poses)
    if P.shape[1] == 3:
        P = np.concatenate([P, np.broadcast_to(np.array([[[0.0, 0.0, 0.0, 1.0]]]), (len(P), 1, 4))], axis=1)
    if len(P) == 0:
        raise InputError("cannot build an evo trajectory from zero poses")
    mats = [np.array(p) for p in P]
    if timestamps is None:
        return PosePath3D(poses_se3=mats, name=name)
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if len(ts) != len(P):
        raise InputError(f"{len(ts)} timestamps for {len(P)} poses; pass one timestamp per pose")
    return PoseTrajectory3D(poses_se3=mats, timestamps=ts, name=name)


def from_evo(traj) -> tuple[Optional[np.ndarray], np.ndarray]:
    """evo ``PosePath3D`` / ``PoseTrajectory3D`` -> ``(timestamps (N,) or None, poses (N,4,4))``."""
    poses = np.stack([np.asarray(p, dtype=np.float64) for p in traj.poses_se3])
    ts = getattr(traj, "timestamps", None)
    return (None if ts is None else np.asarray(ts, dtype=np.float64).copy()), poses
