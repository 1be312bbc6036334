"""Tests for trianflow.evaluation.kitti_odometry (the KITTI devkit drift metric)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from trianflow.evaluation.kitti_odometry import (
    KITTI_LENGTHS,
    kitti_odometry_error,
    segment_errors,
    trajectory_distances,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "trajectories"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared trajectories not found at {DATA}")


def straight_line(n: int, step: float = 1.0) -> np.ndarray:
    """n poses driving along +z (camera forward), identity rotation, ``step`` metres apart."""
    P = np.tile(np.eye(4), (n, 1, 1))
    P[:, 2, 3] = step * np.arange(n)
    return P


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def expected_segments(n: int):
    """For a 1 m/frame straight line of n frames: (first, length) pairs the devkit evaluates.

    The last frame of a segment is the first i with dist[i] = i > first + L, i.e. first + L + 1,
    which must exist (<= n - 1).
    """
    return [(f, L) for f in range(0, n, 10) for L in KITTI_LENGTHS if f + L + 1 <= n - 1]


def test_trajectory_distances():
    P = straight_line(4, step=2.5)
    P[3, 0, 3] = 4.0  # last step: dz=2.5, dx=4
    np.testing.assert_allclose(trajectory_distances(P), [0, 2.5, 5.0, 5.0 + math.hypot(2.5, 4.0)])


def test_identical_trajectories_have_zero_error():
    P = straight_line(1001)
    res = kitti_odometry_error(P, P.copy())
    assert res.t_err == 0.0 and res.r_err == 0.0
    assert res.n_segments == len(expected_segments(1001))
    assert res.note is None


def test_constant_scale_error_exact():
    # est translations are s * gt: per segment E = (I, (1-s)(L+1) z), t_err = |1-s| (L+1) / L
    n, s = 1001, 1.05
    gt = straight_line(n)
    est = gt.copy()
    est[:, :3, 3] *= s
    segs = expected_segments(n)
    expected_t = 100.0 * np.mean([abs(1 - s) * (L + 1) / L for _, L in segs])
    res = kitti_odometry_error(gt, est)
    assert res.n_segments == len(segs)
    assert res.t_err == pytest.approx(expected_t, rel=1e-12)
    assert res.r_err == pytest.approx(0.0, abs=1e-12)
    # per-length breakdown: for L = 100 there are floor((999 - 100) / 10) + 1 = 90 segments
    t100, r100, n100 = res.per_length[100.0]
    assert n100 == 90
    assert t100 == pytest.approx(100.0 * abs(1 - s) * 101 / 100, rel=1e-12)
    assert 800.0 in res.per_length and res.per_length[800.0][2] == (999 - 800) // 10 + 1


def test_constant_yaw_drift_exact():
    # each frame the estimate turns by delta about y: over last-first = L+1 frames the error
    # rotation angle is (L+1) * delta, r_err = (L+1) delta / L rad/m
    n, delta = 1001, 1e-3
    gt = straight_line(n)
    est = np.tile(np.eye(4), (n, 1, 1))
    step = np.eye(4)
    step[:3, :3] = rot_y(delta)
    step[2, 3] = 1.0
    for i in range(1, n):
        est[i] = est[i - 1] @ step
    segs = expected_segments(n)
    expected_r = 100.0 * 180.0 / math.pi * np.mean([(L + 1) * delta / L for _, L in segs])
    res = kitti_odometry_error(gt, est)
    assert res.r_err == pytest.approx(expected_r, rel=1e-9)
    assert res.t_err > 0


def devkit_loops(gt, est, lengths=KITTI_LENGTHS, step_size=10):
    """Literal transcription of the devkit's calcSequenceErrors (loops), for cross-checking."""
    dist = [0.0]
    for i in range(1, len(gt)):
        dist.append(dist[-1] + float(np.linalg.norm(gt[i, :3, 3] - gt[i - 1, :3, 3])))
    errs = []
    for first in range(0, len(gt), step_size):
        for L in lengths:
            last = -1
            for i in range(first, len(dist)):
                if dist[i] > dist[first] + L:
                    last = i
                    break
            if last == -1:
                continue
            d_gt = np.linalg.inv(gt[first]) @ gt[last]
            d_est = np.linalg.inv(est[first]) @ est[last]
            E = np.linalg.inv(d_est) @ d_gt
            a, b, c = E[0, 0], E[1, 1], E[2, 2]
            r = math.acos(max(min(0.5 * (a + b + c - 1.0), 1.0), -1.0))
            t = math.sqrt(E[0, 3] ** 2 + E[1, 3] ** 2 + E[2, 3] ** 2)
            errs.append((r / L, t / L))
    return np.mean([e[1] for e in errs]) * 100, np.mean([e[0] for e in errs]) * 100 * 180 / math.pi, len(errs)


def test_matches_devkit_loops_on_random_walk():
    rng = np.random.default_rng(0)
    n = 500
    gt = np.tile(np.eye(4), (n, 1, 1))
    est = np.tile(np.eye(4), (n, 1, 1))
    for i in range(1, n):
        for P, noise in ((gt, 0.0), (est, 1.0)):
            step = np.eye(4)
            step[:3, :3] = rot_y(0.01 * math.sin(i / 30) + noise * rng.normal(scale=2e-3))
            step[:3, 3] = [0.05, 0.0, 1.6] + noise * rng.normal(scale=0.02, size=3)
            P[i] = P[i - 1] @ step
    t_ref, r_ref, n_ref = devkit_loops(gt, est)
    res = kitti_odometry_error(gt, est)
    assert res.n_segments == n_ref > 100
    assert res.t_err == pytest.approx(t_ref, rel=1e-12)
    assert res.r_err == pytest.approx(r_ref, rel=1e-12)
    seg = segment_errors(gt, est)
    assert seg.shape == (n_ref, 5)
    assert np.all(seg[:, 1] > seg[:, 0])  # last frame after first frame


def test_short_ground_truth_returns_none_with_note():
    gt = straight_line(90)  # 89 m < 100 m
    res = kitti_odometry_error(gt, gt)
    assert res.t_err is None and res.r_err is None and res.n_segments == 0
    assert "shorter than the shortest segment" in res.note and "89.0 m" in res.note
    d = res.to_dict()
    assert d["kitti_t_err"] is None and d["kitti_note"] == res.note


def test_bad_shapes():
    with pytest.raises(ValueError, match="same length"):
        segment_errors(straight_line(10), straight_line(11))
    with pytest.raises(ValueError, match="shape"):
        segment_errors(np.zeros((10, 3)), np.zeros((10, 3)))


@needs_data
def test_kitti_00_orb_slam2():
    """ORB-SLAM2 (stereo) on KITTI 00: the ORB-SLAM2 paper reports 0.70 % and 0.25 deg/100 m."""
    from trianflow.io.trajectory import read_trajectory

    _, gt = read_trajectory(DATA / "KITTI_00_gt.txt")
    _, est = read_trajectory(DATA / "KITTI_00_ORB.txt")
    raw = kitti_odometry_error(gt, est)
    assert raw.t_err == pytest.approx(0.70, abs=0.02)
    assert raw.r_err == pytest.approx(0.25, abs=0.02)
    assert raw.n_segments > 3000
    assert sorted(raw.per_length) == list(KITTI_LENGTHS)
