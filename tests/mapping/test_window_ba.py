"""The mapper's steps on their own: one window adjustment (:mod:`trianflow.mapping.window_ba`), the per-frame
poses (:mod:`trianflow.mapping.frame_poses`) and what the map gives out (:mod:`trianflow.mapping.map_export`)."""

import copy

import numpy as np
import pytest

from trianflow.mapping.bundle_adjustment import BAOptions
from trianflow.mapping.frame_poses import interpolate_frame_poses
from trianflow.mapping.keyframes import MapKeyframe
from trianflow.mapping.local_mapper import MapperConfig
from trianflow.mapping.map_export import export_map, keyframe_camera_points, mapper_summary
from trianflow.mapping.window_ba import adjust_window, drop_weak_keyframes, window_observations

K = np.array([[500.0, 0, 319.5], [0, 500.0, 179.5], [0, 0, 1]])
SIZE = (360, 640)


def _yaw(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _window(n_kf=5, n_points=300, seed=0):
    """Keyframes 1 m apart looking at points 8-30 m ahead: exact c2w poses ``(n,4,4)``, points ``(P,3)``
    and the keyframes with their exact observations (track id = point index)."""
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (n_kf, 1, 1))
    for i in range(n_kf):
        c2w[i, :3, :3] = _yaw(np.radians(0.4 * i))
        c2w[i, :3, 3] = [0.05 * i, 0.0, 1.0 * i]
    X = np.c_[rng.uniform(-10, 10, n_points), rng.uniform(-3, 2, n_points), rng.uniform(8, 30, n_points)]
    kfs = []
    for i in range(n_kf):
        w2c = np.linalg.inv(c2w[i])
        Xc = X @ w2c[:3, :3].T + w2c[:3, 3]
        x = Xc @ K.T
        x = x[:, :2] / x[:, 2:]
        ok = (x[:, 0] >= 0) & (x[:, 0] <= SIZE[1] - 1) & (x[:, 1] >= 0) & (x[:, 1] <= SIZE[0] - 1)
        rel = np.eye(4) if i == 0 else np.linalg.inv(c2w[i - 1]) @ c2w[i]
        kfs.append(MapKeyframe(i, np.flatnonzero(ok).astype(np.int64), x[ok], rel))
    return c2w, X, kfs


def test_adjust_window_corrects_the_free_poses_and_finds_the_outlier():
    c2w, X, kfs = _window()
    kfs[3].obs_xy[0] += [25.0, -15.0]  # one gross outlier, in keyframe 3
    outlier_track = int(kfs[3].obs_ids[0])
    poses = {i: T.copy() for i, T in enumerate(c2w)}
    for i in (2, 3, 4):  # the free keyframes start off their truth
        poses[i][:3, 3] += [0.05, -0.03, 0.04]
    rng = np.random.default_rng(1)
    xyz = X + rng.normal(scale=0.02, size=X.shape)
    bad = {k.frame: np.zeros(len(k.obs_ids), bool) for k in kfs}
    before = copy.deepcopy((poses, xyz, bad))
    upd = adjust_window(K, SIZE, 4, kfs[2:], kfs[:2], poses, xyz, bad, MapperConfig(), None,
                        BAOptions(max_iterations=50))
    # nothing of the map is modified: the caller applies the update
    for a, b in zip(before, (poses, xyz, bad)):
        for key in (a if isinstance(a, dict) else [None]):
            np.testing.assert_array_equal(a if key is None else a[key], b if key is None else b[key])
    st = upd.stat
    assert st["adjusted"] and st["free"] == [2, 3, 4] and st["fixed"] == [0, 1] and st["keyframe"] == 4
    ids, counts = np.unique(np.concatenate([k.obs_ids for k in kfs]), return_counts=True)
    in_free = np.isin(ids, np.concatenate([k.obs_ids for k in kfs[2:]]))
    assert st["points"] == int(((counts >= 2) & in_free).sum())  # seen twice, once by a free keyframe
    assert upd.seconds > 0 and upd.K is None
    assert sorted(upd.poses_c2w) == [2, 3, 4]
    for f, T in upd.poses_c2w.items():
        assert np.abs(T[:3, 3] - c2w[f][:3, 3]).max() < 5e-3
    assert st["outliers"] >= 1 and set(upd.bad_obs) == {3}
    rejected = kfs[3].obs_ids[upd.bad_obs[3]]
    assert outlier_track in rejected
    assert len(upd.point_ids) + len(upd.dropped_ids) == st["points"]
    assert np.abs(upd.points - X[upd.point_ids]).max() < 0.05


def test_adjust_window_skips():
    c2w, X, kfs = _window(n_kf=3)
    poses = {i: T for i, T in enumerate(c2w)}
    bad = {k.frame: np.zeros(len(k.obs_ids), bool) for k in kfs}
    xyz = X.copy()
    cfg = MapperConfig()
    # two keyframes: both become the fixed gauge, nothing is left to adjust
    upd = adjust_window(K, SIZE, 1, kfs[:2], [], poses, xyz, bad, cfg, None, BAOptions())
    assert upd.stat["skipped"] == "window too small" and upd.stat["fixed"] == [0, 1] and not upd.poses_c2w
    upd = adjust_window(K, SIZE, 2, kfs[2:], kfs[:2], poses, np.full_like(xyz, np.nan), bad,
                        MapperConfig(min_tri_angle_deg=30.0), None, BAOptions())
    assert upd.stat["skipped"] == "too few points" and upd.stat["points"] == 0
    upd = adjust_window(K, SIZE, 2, kfs[2:], kfs[:2], poses, xyz, bad, MapperConfig(min_keyframe_observations=10**6),
                        None, BAOptions())
    assert upd.stat["skipped"] == "keyframes see too few points" and upd.stat["weak_keyframes"] == [0, 1, 2]


def test_window_observations_leave_out_rejected_ones_and_weak_keyframes():
    _, _, kfs = _window(n_kf=3)
    bad = {k.frame: np.zeros(len(k.obs_ids), bool) for k in kfs}
    bad[1][:5] = True
    obs = window_observations(kfs, bad)
    assert len(obs) == sum(len(k.obs_ids) for k in kfs) - 5
    assert not np.isin(kfs[1].obs_ids[:5], obs.track[obs.frame == 1]).any()
    o_pt = np.array([0, 0, 1, 1, 2, 2, 3])
    o_fr = np.array([0, 1, 0, 1, 1, 2, 2])
    o_xy = np.zeros((7, 2))
    free, fixed, p, f, _, weak = drop_weak_keyframes(kfs[2:], kfs[:2], o_pt, o_fr, o_xy, 4, 3)
    assert weak == {0, 2} and [k.frame for k in free] == [] and [k.frame for k in fixed] == [1]
    free, fixed, p, f, _, weak = drop_weak_keyframes(kfs[1:], kfs[:1], o_pt, o_fr, o_xy, 4, 1)
    assert weak == set() and p is o_pt


def test_export_map_and_keyframe_points():
    kfs = [MapKeyframe(0, np.array([0, 1, 2]), np.array([[1.0, 2], [3, 4], [5, 6]]), np.eye(4)),
           MapKeyframe(4, np.array([1, 3]), np.array([[7.0, 8], [9, 10]]), np.eye(4))]
    xyz = np.array([[0.0, 0, 5], [np.nan] * 3, [1, 1, 10], [2, 0, 4]])
    rgb = np.arange(12, dtype=np.uint8).reshape(4, 3)
    bad = {0: np.array([False, False, True]), 4: np.array([False, False])}
    m = export_map(kfs, bad, xyz, rgb)
    np.testing.assert_array_equal(m["track_id"], [0, 2, 3])
    np.testing.assert_array_equal(m["rgb"], rgb[[0, 2, 3]])
    np.testing.assert_array_equal(m["obs_point"], [0, 2])  # track 2 rejected in kf 0, track 1 has no point
    np.testing.assert_array_equal(m["obs_frame"], [0, 4])
    np.testing.assert_array_equal(m["obs_xy"], [[1.0, 2], [9, 10]])
    pose = np.eye(4)
    pose[:3, 3] = [0.0, 0, 1]  # camera 1 m forward
    xy, Xc = keyframe_camera_points(kfs[0], bad[0], xyz, pose)
    np.testing.assert_array_equal(xy, [[1.0, 2]])
    np.testing.assert_allclose(Xc, [[0.0, 0, 4]])


def test_mapper_summary_counts_the_adjusted_windows():
    kfs = [MapKeyframe(f, np.zeros(0, np.int64), np.zeros((0, 2)), np.eye(4)) for f in (0, 3)]
    stats = [{"keyframe": 0, "adjusted": False, "skipped": "window too small"},
             {"keyframe": 3, "adjusted": True, "iterations": 4, "points": 100, "mean_error_px": 0.5}]
    s = mapper_summary(kfs, {0: "first", 3: "parallax"}, stats, 0.25, None, K, 2 * K)
    assert s["keyframes"] == [0, 3] and s["keyframe_reasons"] == {"0": "first", "3": "parallax"}
    assert (s["windows"], s["windows_adjusted"], s["mean_points"], s["mean_error_px"]) == (2, 1, 100.0, 0.5)
    assert s["skipped"] == {"0": "window too small"} and s["final"] is None
    assert s["K_final"][0][0] == pytest.approx(1000.0)
    assert mapper_summary([], {}, [], 0.0, {"adjusted": False, "free": [1]}, K, K)["final"] == {"adjusted": False}


def test_interpolate_frame_poses_keeps_unseen_frames():
    vo = np.tile(np.eye(4), (4, 1, 1))
    vo[:, 2, 3] = np.arange(4)
    kfs = [MapKeyframe(0, np.zeros(0, np.int64), np.zeros((0, 2)), np.eye(4))]
    adjusted = np.eye(4)
    adjusted[0, 3] = 0.5
    out = interpolate_frame_poses(vo, kfs, {0: adjusted}, {0: (0, np.eye(4)), 1: (0, vo[1])})
    np.testing.assert_array_equal(out[0], adjusted)
    np.testing.assert_allclose(out[1], adjusted @ vo[1])  # after the last keyframe: the VO's motion from it
    np.testing.assert_array_equal(out[2:], vo[2:])  # never seen by the mapper


def test_a_window_that_turns_the_keyframes_is_solved_again_with_rotation_anchors():
    """A solution that changes a keyframe-to-keyframe rotation by more than the allowance (0.5 deg + 10 % of
    that rotation) is solved again with points at infinity that hold the rotations as they were; without
    anchors it stands."""
    from trianflow.mapping.window_ba import rotation_anchors, rotation_change_excess

    c2w, X, kfs = _window()
    poses = {i: T.copy() for i, T in enumerate(c2w)}
    for i in (2, 3, 4):  # the free keyframes start 1 deg off in yaw: the plain solution turns them back
        poses[i][:3, :3] = poses[i][:3, :3] @ _yaw(np.radians(1.0))
    bad = {k.frame: np.zeros(len(k.obs_ids), bool) for k in kfs}
    plain = adjust_window(K, SIZE, 4, kfs[2:], kfs[:2], poses, X.copy(), bad, MapperConfig(rotation_anchors=0), None,
                          BAOptions(max_iterations=50))
    assert plain.stat["adjusted"] and "rotation_anchored" not in plain.stat
    w2c = {f: np.linalg.inv(T) for f, T in plain.poses_c2w.items()}
    # keyframe 1 -> 2 turned back by 1 deg where 0.5 + 0.1 x 1.4 deg was allowed
    assert rotation_change_excess(poses, w2c, [0, 1, 2, 3, 4], 0.5, 0.1) == pytest.approx(1.0 - 0.64, abs=0.05)
    assert rotation_change_excess(poses, w2c, [0, 1, 2, 3, 4], 2.0, 0.0) < 0
    anchored = adjust_window(K, SIZE, 4, kfs[2:], kfs[:2], poses, X.copy(), bad, MapperConfig(), None,
                             BAOptions(max_iterations=50))
    assert anchored.stat["rotation_anchored"]["excess_deg"] > 0 and anchored.stat["adjusted"]
    assert len(anchored.point_ids) + len(anchored.dropped_ids) == anchored.stat["points"]  # anchors are no map points
    w2c_a = {f: np.linalg.inv(T) for f, T in anchored.poses_c2w.items()}
    assert rotation_change_excess(poses, w2c_a, [0, 1, 2, 3, 4], 0.0, 0.0) < \
        rotation_change_excess(poses, w2c, [0, 1, 2, 3, 4], 0.0, 0.0)  # held back (a soft prior: exact data win)
    # the anchors: far away, seen exactly where the poses project them
    w2c0 = {f: np.linalg.inv(T) for f, T in poses.items()}
    A, a_pt, a_fr, a_xy = rotation_anchors(K, SIZE, w2c0, [0, 1, 2, 3, 4], 30)
    assert len(A) == 30 and np.linalg.norm(A - c2w[4][:3, 3], axis=1).min() > 1e4
    for p, f, xy in zip(a_pt, a_fr, a_xy):
        q = K @ (w2c0[f][:3, :3] @ A[p] + w2c0[f][:3, 3])
        assert np.allclose(q[:2] / q[2], xy)
    assert len(a_pt) == 30 * 5  # all in view of every keyframe of this gentle window
