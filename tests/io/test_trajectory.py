"""Tests for trianflow.io.trajectory: KITTI/TUM reading and writing, evo conversion, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from trianflow.errors import InputError
from trianflow.io.trajectory import (
    from_evo,
    matrices_to_quaternions,
    quaternions_to_matrices,
    read_trajectory,
    to_evo,
    write_kitti,
    write_trajectory,
    write_tum,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "trajectories"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared trajectories not found at {DATA}")


def random_poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    P = np.zeros((n, 4, 4))
    P[:, 3, 3] = 1
    for i in range(n):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        if np.linalg.det(q) < 0:
            q[:, 0] *= -1
        P[i, :3, :3] = q
        P[i, :3, 3] = rng.normal(scale=50.0, size=3)
    return P


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_kitti_roundtrip_is_exact(tmp_path):
    P = random_poses(20)
    f = tmp_path / "est.txt"
    write_kitti(f, P)
    assert len(f.read_text().strip().splitlines()) == 20
    assert len(f.read_text().splitlines()[0].split()) == 12
    ts, Q = read_trajectory(f)
    assert ts is None
    assert Q.shape == (20, 4, 4) and Q.dtype == np.float64
    np.testing.assert_array_equal(Q, P)  # repr precision round-trips exactly
    assert leftovers(tmp_path) == []


def test_tum_roundtrip(tmp_path):
    P = random_poses(15, seed=1)
    ts = 1305031102.160407 + 0.0333 * np.arange(15)
    f = tmp_path / "est.tum"
    write_tum(f, ts, P)
    rows = [ln for ln in f.read_text().splitlines() if not ln.startswith("#")]
    assert len(rows) == 15 and all(len(r.split()) == 8 for r in rows)
    ts2, Q = read_trajectory(f)
    np.testing.assert_array_equal(ts2, ts)  # timestamps keep full precision
    np.testing.assert_array_equal(Q[:, :3, 3], P[:, :3, 3])
    np.testing.assert_allclose(Q[:, :3, :3], P[:, :3, :3], atol=1e-14)
    # quaternions are written with qw >= 0
    assert all(float(r.split()[7]) >= 0 for r in rows)


def test_tum_quaternion_convention(tmp_path):
    # qx qy qz qw for a rotation of +90 deg about z: Rz = [[0,-1,0],[1,0,0],[0,0,1]]
    s = math.sqrt(0.5)
    f = tmp_path / "q.txt"
    f.write_text(f"# t tx ty tz qx qy qz qw\n10.5 1 2 3 0 0 {s!r} {s!r}\n11.5 0 0 0 0 0 0 2\n")
    ts, P = read_trajectory(f)
    np.testing.assert_array_equal(ts, [10.5, 11.5])
    np.testing.assert_allclose(P[0, :3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_array_equal(P[0, :3, 3], [1, 2, 3])
    np.testing.assert_allclose(P[1, :3, :3], np.eye(3), atol=1e-15)  # non-unit quaternion is normalised
    np.testing.assert_array_equal(P[:, 3], [[0, 0, 0, 1], [0, 0, 0, 1]])


def test_quaternion_matrix_roundtrip():
    P = random_poses(50, seed=2)
    q = matrices_to_quaternions(P[:, :3, :3])
    assert np.all(q[:, 3] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quaternions_to_matrices(q), P[:, :3, :3], atol=1e-12)
    with pytest.raises(InputError, match="zero"):
        quaternions_to_matrices(np.zeros((1, 4)))


def test_comments_blank_lines_commas_and_formats(tmp_path):
    f = tmp_path / "k.txt"
    f.write_text("# KITTI poses\n\n1,0,0,5,0,1,0,6,0,0,1,7\n  \n1 0 0 8 0 1 0 9 0 0 1 10\n")
    ts, P = read_trajectory(f)
    assert ts is None and P.shape == (2, 4, 4)
    np.testing.assert_array_equal(P[:, :3, 3], [[5, 6, 7], [8, 9, 10]])
    # explicit format that does not match: clear error naming file and line
    with pytest.raises(InputError, match=r"k\.txt line 3: 12 numbers, expected 8 for TUM"):
        read_trajectory(f, fmt="tum")
    with pytest.raises(InputError, match="unknown trajectory format"):
        read_trajectory(f, fmt="euroc")


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n", r"line 3: 11 numbers, expected 12"),
        ("1 2 3\n", r"line 1: 3 numbers; expected 12 \(KITTI"),
        ("0 0 0 0 0 0 0 1\n0.1 0 0 x 0 0 0 1\n", r"line 2: not a number"),
        ("0 0 0 0 0 0 0 1\n0.1 0 0 nan 0 0 0 1\n", r"line 2: NaN or infinite"),
        ("# only a comment\n\n", r"has no poses"),
        ("0 0 0 0 0 0 0 1\n0.1 0 0 0 0 0 0 0\n", r"quaternion 1 is zero"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, content, pattern):
    f = tmp_path / "bad_traj.txt"
    f.write_text(content)
    with pytest.raises(InputError, match=pattern) as info:
        read_trajectory(f)
    assert "bad_traj.txt" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_trajectory(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="is a directory"):
        read_trajectory(tmp_path)


def test_write_errors_leave_no_file(tmp_path):
    P = random_poses(3)
    P[1, 0, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_kitti(tmp_path / "x.txt", P)
    with pytest.raises(InputError, match="2 timestamps for 3 poses"):
        write_tum(tmp_path / "y.txt", [0.0, 1.0], random_poses(3))
    with pytest.raises(InputError, match="shape"):
        write_kitti(tmp_path / "z.txt", np.zeros((3, 3, 3)))
    assert list(tmp_path.iterdir()) == []


def test_write_trajectory_auto(tmp_path):
    P = random_poses(4, seed=3)
    write_trajectory(tmp_path / "a.txt", P)
    write_trajectory(tmp_path / "b.txt", P, timestamps=np.arange(4) * 0.1)
    assert read_trajectory(tmp_path / "a.txt")[0] is None
    np.testing.assert_allclose(read_trajectory(tmp_path / "b.txt")[0], np.arange(4) * 0.1)
    # (N,3,4) input is accepted as well
    write_kitti(tmp_path / "c.txt", P[:, :3, :])
    np.testing.assert_array_equal(read_trajectory(tmp_path / "c.txt")[1], P)
    with pytest.raises(InputError, match="needs timestamps"):
        write_trajectory(tmp_path / "d.txt", P, fmt="tum")


def test_evo_conversion_roundtrip():
    from evo.core.trajectory import PosePath3D, PoseTrajectory3D

    P = random_poses(6, seed=4)
    path = to_evo(P, name="p")
    assert isinstance(path, PosePath3D) and not isinstance(path, PoseTrajectory3D)
    ts, Q = from_evo(path)
    assert ts is None
    np.testing.assert_array_equal(Q, P)
    traj = to_evo(P, np.arange(6) * 0.5)
    assert isinstance(traj, PoseTrajectory3D)
    ts, Q = from_evo(traj)
    np.testing.assert_array_equal(ts, np.arange(6) * 0.5)
    np.testing.assert_array_equal(Q, P)
    np.testing.assert_array_equal(traj.positions_xyz, P[:, :3, 3])
    with pytest.raises(InputError):
        to_evo(P, np.arange(5))


@needs_data
@pytest.mark.parametrize("name", ["freiburg1_xyz-rgbdslam.txt", "fr2_desk_ORB.txt", "KITTI_00_ORB.txt"])
def test_reading_matches_evo_file_interface(name):
    from evo.tools import file_interface

    ts, P = read_trajectory(DATA / name)
    if name.startswith("KITTI"):
        ref = file_interface.read_kitti_poses_file(str(DATA / name))
        assert ts is None
        np.testing.assert_array_equal(P, np.stack(ref.poses_se3))
    else:
        ref = file_interface.read_tum_trajectory_file(str(DATA / name))
        np.testing.assert_array_equal(ts, ref.timestamps)
        np.testing.assert_allclose(P, np.stack(ref.poses_se3), rtol=0, atol=1e-15)
