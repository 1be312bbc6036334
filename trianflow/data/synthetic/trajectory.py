"""Camera paths and intrinsics of the synthetic scene: :func:`make_trajectory` (smooth paths of three kinds),
:func:`default_intrinsics` (KITTI-like pinhole), :func:`relative_pose` and the stereo rig's right-camera offset.

Poses are 4x4 camera-to-world matrices (column vectors); camera x right, y down, z forward.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from trianflow.errors import InputError

TRAJECTORY_KINDS = ("forward_turn", "straight", "rotation", "loop")


def _rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def make_trajectory(n_frames: int, kind: str = "forward_turn", step: float = 1.0, seed: int = 0) -> np.ndarray:
    """Camera-to-world poses of a smooth synthetic camera path.

    Kinds:

    - ``"forward_turn"``: forward ``step`` metres per frame along the heading, with gentle
      sinusoidal yaw turns (6-9 degrees amplitude, period 36-56 frames, so the path stays in the
      street) and small pitch/roll wiggles (1-2.5 degrees);
    - ``"straight"``: ``step`` metres per frame along +z, no rotation;
    - ``"rotation"``: pure rotation in place (yaw up to ~20 degrees, small pitch/roll), no
      translation (the degenerate case for two-view geometry);
    - ``"loop"``: around a block: a circle driven ``step`` metres per frame, 1.3 times round, so the
      last 30 % of the frames revisit the first (0.3 m further out on the second lap, same direction),
      with small pitch/roll wiggles (the case for loop closure).

    The seed picks amplitudes, periods and turning direction.

    Returns:
        ``(N,4,4)`` float64 camera-to-world matrices, ``T[0]`` = identity.
    """
    if kind not in TRAJECTORY_KINDS:
        raise InputError(f"unknown trajectory kind {kind!r}: use one of {', '.join(TRAJECTORY_KINDS)}")
    n = int(n_frames)
    if n < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=np.float64)
    poses = np.tile(np.eye(4), (n, 1, 1))
    if kind == "straight":
        poses[:, 2, 3] = i * step
        return poses
    if kind == "loop":
        return _loop(n, step, rng)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "forward_turn":
        a_yaw, p_yaw = math.radians(rng.uniform(6, 9)) * sign, rng.uniform(36, 56)
        a_pitch, p_pitch = math.radians(rng.uniform(1.0, 2.0)), rng.uniform(14, 24)
        a_roll, p_roll = math.radians(rng.uniform(1.0, 2.5)), rng.uniform(18, 30)
    else:  # rotation
        a_yaw, p_yaw = math.radians(rng.uniform(15, 20)) * sign, rng.uniform(30, 40)
        a_pitch, p_pitch = math.radians(rng.uniform(2.0, 4.0)), rng.uniform(16, 24)
        a_roll, p_roll = math.radians(rng.uniform(1.0, 2.0)), rng.uniform(20, 30)
    yaw = a_yaw * np.sin(2 * np.pi * i / p_yaw)
    pitch = a_pitch * np.sin(2 * np.pi * i / p_pitch)
    roll = a_roll * np.sin(2 * np.pi * i / p_roll)
    pos = np.zeros((n, 3))
    if kind == "forward_turn":
        for k in range(1, n):
            h = 0.5 * (yaw[k - 1] + yaw[k])  # heading between the two frames
            pos[k] = pos[k - 1] + step * np.array([math.sin(h), 0.0, math.cos(h)])
    for k in range(n):
        poses[k, :3, :3] = _rot_y(yaw[k]) @ _rot_x(pitch[k]) @ _rot_z(roll[k])
        poses[k, :3, 3] = pos[k]
    poses[0] = np.eye(4)
    return poses


def _loop(n: int, step: float, rng) -> np.ndarray:
    """The ``"loop"`` kind of :func:`make_trajectory`: ``(n,4,4)`` c2w, first = identity."""
    laps = 1.3
    radius = n * step / (2 * np.pi * laps)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    i = np.arange(n, dtype=np.float64)
    phi = 2 * np.pi * laps * i / max(n, 1)  # angle driven round the centre
    r = radius + 0.3 * phi / (2 * np.pi)
    # the circle's centre lies to the side (x) of the first camera; heading along +z at the start
    pos = np.stack([sign * (radius - r * np.cos(phi)), np.zeros(n), r * np.sin(phi)], axis=1)
    pitch = math.radians(rng.uniform(0.5, 1.0)) * np.sin(2 * np.pi * i / rng.uniform(14, 24))
    roll = math.radians(rng.uniform(0.5, 1.0)) * np.sin(2 * np.pi * i / rng.uniform(18, 30))
    poses = np.tile(np.eye(4), (n, 1, 1))
    for k in range(n):
        poses[k, :3, :3] = _rot_y(sign * phi[k]) @ _rot_x(pitch[k]) @ _rot_z(roll[k])
        poses[k, :3, 3] = pos[k]
    first = np.linalg.inv(poses[0])
    return first[None] @ poses


def default_intrinsics(size: Tuple[int, int] = (192, 640)) -> np.ndarray:
    """KITTI-like pinhole intrinsics for an image of ``size = (H, W)``.

    ``fx = fy = 0.6 W`` (about 80 degrees horizontal field of view, KITTI has ~82), principal
    point at the image centre ``((W-1)/2, (H-1)/2)``.

    Returns:
        ``(3,3)`` float64.
    """
    h, w = int(size[0]), int(size[1])
    f = 0.6 * w
    return np.array([[f, 0, (w - 1) / 2.0], [0, f, (h - 1) / 2.0], [0, 0, 1]], dtype=np.float64)


def right_camera_offset(baseline: float) -> np.ndarray:
    """Pose of the right camera in the left camera's frame (camera-to-camera, right at +x)."""
    T = np.eye(4)
    T[0, 3] = baseline
    return T


def relative_pose(pose1_c2w: np.ndarray, pose2_c2w: np.ndarray) -> np.ndarray:
    """``T_1to2 = inv(T_c2w_2) @ T_c2w_1``: maps camera-1 coordinates to camera-2 coordinates. ``(4,4)``."""
    return np.linalg.inv(pose2_c2w) @ pose1_c2w
