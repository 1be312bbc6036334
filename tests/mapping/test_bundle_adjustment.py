"""Triangulation and pycolmap bundle adjustment on synthetic scenes with exact ground truth;
the sliding-window mapper's pose interpolation; --refine ba end to end on a synthetic sequence."""

import numpy as np
import pytest

from trianflow.mapping.bundle_adjustment import BAOptions, bundle_adjust, matrix_from_rigid3d, rigid3d_from_matrix
from trianflow.mapping.local_mapper import LocalMapper, _Keyframe
from trianflow.mapping.triangulation import reprojection_errors, triangulate_tracks

K = np.array([[600.0, 0, 319.5], [0, 600.0, 179.5], [0, 0, 1]])
SIZE = (360, 640)


def _rot(axis, a):
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _scene(n_frames=6, n_points=400, seed=0):
    """Forward-moving camera (1 m/frame, slight yaw) and points in front: c2w poses, points,
    and every point's projection in every frame where it is inside the image."""
    rng = np.random.default_rng(seed)
    c2w = []
    for i in range(n_frames):
        T = np.eye(4)
        T[:3, :3] = _rot(1, np.radians(0.5 * i))
        T[:3, 3] = [0.1 * i, 0.0, 1.0 * i]
        c2w.append(T)
    c2w = np.stack(c2w)
    X = np.c_[rng.uniform(-12, 12, n_points), rng.uniform(-4, 3, n_points), rng.uniform(10, 40, n_points)]
    obs_p, obs_f, obs_xy = [], [], []
    for i in range(n_frames):
        w2c = np.linalg.inv(c2w[i])
        Xc = X @ w2c[:3, :3].T + w2c[:3, 3]
        x = Xc @ K.T
        x = x[:, :2] / x[:, 2:]
        ok = (Xc[:, 2] > 0) & (x[:, 0] >= 0) & (x[:, 0] <= SIZE[1] - 1) & (x[:, 1] >= 0) & (x[:, 1] <= SIZE[0] - 1)
        obs_p.append(np.flatnonzero(ok))
        obs_f.append(np.full(ok.sum(), i))
        obs_xy.append(x[ok])
    return c2w, X, np.concatenate(obs_p), np.concatenate(obs_f), np.concatenate(obs_xy)


def _w2c(c2w):
    return {i: np.linalg.inv(T) for i, T in enumerate(c2w)}


def test_rigid3d_round_trip():
    T = np.eye(4)
    T[:3, :3] = _rot(0, 0.3) @ _rot(2, -1.1)
    T[:3, 3] = [1.0, -2.0, 3.5]
    assert np.abs(matrix_from_rigid3d(rigid3d_from_matrix(T)) - T).max() < 1e-12


def test_triangulate_tracks_exact_and_rejections():
    c2w, X, op, of, oxy = _scene()
    xyz, valid = triangulate_tracks(K, _w2c(c2w), op, of, oxy, len(X), min_angle_deg=0.1, max_reproj_px=1.0)
    seen = np.bincount(op, minlength=len(X)) >= 2
    assert valid[seen].mean() > 0.95 and not valid[~seen].any()
    assert np.abs(xyz[valid] - X[valid]).max() < 1e-6
    # a gross outlier observation makes its point invalid; a too-small ray angle too
    oxy_bad = oxy.copy()
    oxy_bad[0] += 25.0
    _, v2 = triangulate_tracks(K, _w2c(c2w), op, of, oxy_bad, len(X), 0.1, 1.0)
    assert not v2[op[0]] and v2[valid].sum() >= valid.sum() - 1
    _, v3 = triangulate_tracks(K, _w2c(c2w), op, of, oxy, len(X), min_angle_deg=60.0, max_reproj_px=1.0)
    assert not v3.any()


def test_reprojection_errors_zero_on_exact_data_and_inf_behind():
    c2w, X, op, of, oxy = _scene()
    err = reprojection_errors(K, _w2c(c2w), X, op, of, oxy)
    assert err.max() < 1e-9
    Xb = X.copy()
    Xb[op[0]] = [0.0, 0.0, -5.0]  # behind camera 0
    assert np.isinf(reprojection_errors(K, _w2c(c2w), Xb, op[:1], of[:1], oxy[:1])).all()


def _perturb(c2w, X, seed=1, rot_deg=0.5, trans=0.1, pt=0.3):
    rng = np.random.default_rng(seed)
    w2c0 = _w2c(c2w)
    init = {}
    for i, T in w2c0.items():
        if i < 2:
            init[i] = T.copy()
            continue
        D = np.eye(4)
        D[:3, :3] = _rot(0, np.radians(rng.normal(0, rot_deg))) @ _rot(1, np.radians(rng.normal(0, rot_deg)))
        D[:3, 3] = rng.normal(0, trans, 3)
        init[i] = D @ T
    return init, X + rng.normal(0, pt, X.shape)


def test_bundle_adjust_recovers_exact_poses_and_points():
    c2w, X, op, of, oxy = _scene()
    init, X0 = _perturb(c2w, X)
    res = bundle_adjust(K, SIZE, init, X0, op, of, oxy, constant_frames=[0, 1],
                        options=BAOptions(max_iterations=100, loss="trivial"))
    assert res.usable and res.final_cost < 1e-8 * max(res.initial_cost, 1.0)
    for i, T in _w2c(c2w).items():
        assert np.abs(res.poses_w2c[i] - T).max() < 1e-6, i
    assert np.abs(res.poses_w2c[0] - init[0]).max() == 0  # held constant
    seen = np.bincount(op, minlength=len(X)) >= 2
    assert np.abs(res.points[seen] - X[seen]).max() < 1e-4
    assert np.array_equal(res.points[~seen], X0[~seen])  # a single observation: left as given
    assert res.errors[seen[op]].max() < 1e-5


def test_bundle_adjust_robust_loss_ignores_outliers_and_refines_intrinsics():
    c2w, X, op, of, oxy = _scene(seed=3)
    rng = np.random.default_rng(5)
    noisy = oxy.copy()
    bad = rng.random(len(noisy)) < 0.03
    noisy[bad] += rng.uniform(8, 20, (bad.sum(), 2)) * rng.choice([-1, 1], (bad.sum(), 2))
    init, X0 = _perturb(c2w, X, seed=2)
    res = bundle_adjust(K, SIZE, init, X0, op, of, noisy, [0, 1], BAOptions(max_iterations=100, loss="cauchy"))
    l2 = bundle_adjust(K, SIZE, init, X0, op, of, noisy, [0, 1], BAOptions(max_iterations=100, loss="trivial"))
    err_robust = max(np.abs(res.poses_w2c[i][:3, 3] - T[:3, 3]).max() for i, T in _w2c(c2w).items())
    err_l2 = max(np.abs(l2.poses_w2c[i][:3, 3] - T[:3, 3]).max() for i, T in _w2c(c2w).items())
    assert err_robust < 5e-3 and err_robust < 0.5 * err_l2, (err_robust, err_l2)
    assert np.median(res.errors[bad]) > 5 and np.median(res.errors[~bad]) < 0.1
    # intrinsics: start 2 % off in focal length, 3 px off in the principal point
    K_off = K.copy()
    K_off[0, 0] *= 1.02
    K_off[1, 1] *= 1.02
    K_off[0, 2] += 3
    res2 = bundle_adjust(K_off, SIZE, _w2c(c2w), X, op, of, oxy, [0, 1],
                         BAOptions(max_iterations=200, loss="trivial", refine_intrinsics=True,
                                   function_tolerance=1e-12))
    assert abs(res2.K[0, 0] / K[0, 0] - 1) < 2e-3 and abs(res2.K[0, 2] - K[0, 2]) < 0.5
    held = bundle_adjust(K_off, SIZE, _w2c(c2w), X, op, of, oxy, [0, 1], BAOptions(max_iterations=5))
    assert np.array_equal(held.K, K_off)


def test_final_poses_interpolate_between_keyframes():
    """Keyframes 0 and 3 adjusted to the truth, VO between them at half the scale with a
    rotation offset: frames 1, 2 land on the uniform motion."""
    truth = []
    for i in range(5):
        T = np.eye(4)
        T[:3, :3] = _rot(1, np.radians(2.0 * i))
        T[:3, 3] = [0.0, 0.0, 1.0 * i]
        truth.append(T)
    truth = np.stack(truth)
    vo = truth.copy()
    vo[:, :3, 3] *= 0.5  # VO at half scale
    m = LocalMapper(K, SIZE)
    m.keyframes = [_Keyframe(0, np.zeros(0, np.int64), np.zeros((0, 2)), np.eye(4)),
                   _Keyframe(3, np.zeros(0, np.int64), np.zeros((0, 2)), np.linalg.inv(vo[0]) @ vo[3])]
    m.kf_poses = {0: truth[0], 3: truth[3]}
    m.frame_ref = {0: (0, np.eye(4)), 3: (3, np.eye(4))}
    for i in (1, 2):
        m.frame_ref[i] = (0, np.linalg.inv(vo[0]) @ vo[i])
    m.frame_ref[4] = (3, np.linalg.inv(vo[3]) @ vo[4])
    out = m.final_poses(vo)
    assert np.abs(out[:4] - truth[:4]).max() < 1e-12
    assert np.allclose(out[4], truth[3] @ np.linalg.inv(vo[3]) @ vo[4])  # after the last keyframe: VO motion


@pytest.fixture(scope="module")
def synthetic():
    from trianflow.data.synthetic import synthetic_sequence

    return synthetic_sequence(n_frames=14, size=(160, 512), kind="forward_turn", seed=3)


def test_refine_ba_on_synthetic_sequence_lowers_the_error(synthetic):
    from trianflow.evaluation.trajectory import evaluate_trajectory
    from trianflow.vo import VOConfig, run_vo

    plain = run_vo(synthetic, VOConfig(refine="none"), keep_points=False)
    ba = run_vo(synthetic, VOConfig(refine="ba"), keep_points=False)
    assert plain.mapping is None and ba.mapping is not None
    e_plain = evaluate_trajectory(plain.poses, synthetic.gt_poses, align="sim3").ape_rmse
    e_ba = evaluate_trajectory(ba.poses, synthetic.gt_poses, align="sim3").ape_rmse
    assert e_ba < 0.7 * e_plain, (e_ba, e_plain)
    s = ba.mapping["summary"]
    assert s["keyframes"][0] == 0 and s["windows_adjusted"] >= 2 and s["final"] is None
    assert np.allclose(ba.poses[0], np.eye(4), atol=1e-12)  # gauge: frame 0 stays the origin
    # the saved map is consistent with the saved poses: every point seen twice, small residuals
    mp = ba.mapping["map"]
    assert (np.bincount(mp["obs_point"]) >= 2).all()
    w2c = {int(f): np.linalg.inv(ba.poses[f]) for f in np.unique(mp["obs_frame"])}
    err = reprojection_errors(ba.K, w2c, mp["xyz"], mp["obs_point"], mp["obs_frame"], mp["obs_xy"])
    assert np.median(err) < 0.5


def test_bundle_adjust_refuses_observations_in_a_frame_without_a_pose():
    c2w, X, op, of, oxy = _scene()
    init, X0 = _perturb(c2w, X)
    missing = max(init)
    partial = {f: T for f, T in init.items() if f != missing}
    with pytest.raises(KeyError, match="without an initial pose"):
        bundle_adjust(K, SIZE, partial, X0, op, of, oxy, constant_frames=[0, 1])
