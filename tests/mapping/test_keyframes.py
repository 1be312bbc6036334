"""Keyframe selection: de-rotated parallax on exact synthetic geometry, decision rules."""

import numpy as np

from trianflow.mapping.keyframes import KeyframePolicy, KeyframeSelector, derotated_parallax

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _project(X, R, t):
    Xc = X @ R.T + t
    x = Xc @ K.T
    return x[:, :2] / x[:, 2:]


def _scene(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(-5, 5, n), rng.uniform(-3, 3, n), rng.uniform(8, 30, n)]


def test_pure_rotation_has_no_parallax_and_translation_has():
    X = _scene()
    x0 = _project(X, np.eye(3), np.zeros(3))
    R = _rot_y(np.radians(4.0))
    x_rot = _project(X, R, np.zeros(3))
    assert np.abs(x_rot - x0).max() > 10  # the image moved a lot ...
    assert derotated_parallax(x0, x_rot, K, R).max() < 1e-9  # ... without any parallax
    t = np.array([0.5, 0.0, 0.0])  # sideways: parallax = f * |t| / z
    x_tr = _project(X, R, t)
    par = derotated_parallax(x0, x_tr, K, R)
    Xc = X @ R.T
    assert np.allclose(par, 500 * 0.5 / Xc[:, 2], rtol=1e-9)


def _poses(R, c):
    T = np.eye(4)
    T[:3, :3] = R.T  # camera-to-world
    T[:3, 3] = c
    return T


def test_selector_measures_parallax_and_track_survival():
    X = _scene()
    sel = KeyframeSelector(K)
    ids = np.arange(len(X))
    T0 = np.eye(4)
    sel.mark(0, ids, _project(X, np.eye(3), np.zeros(3)), T0)
    R = _rot_y(np.radians(3.0))
    c = np.array([0.4, 0.0, 0.0])
    T1 = _poses(R, c)
    x1 = _project(X, R, -R @ c)
    alive = ids[::2]
    par, ratio = sel.measure(alive, x1[::2], T1)
    Xc = (X - c) @ R.T
    assert ratio == 0.5
    assert np.isclose(par, np.median((500 * 0.4 / Xc[:, 2])[::2]), rtol=0.05)
    par_rot, _ = sel.measure(ids, _project(X, R, np.zeros(3)), _poses(R, np.zeros(3)))
    assert par_rot < 1e-6


def test_decision_rules():
    p = KeyframePolicy(min_parallax_px=10, min_inlier_ratio=0.6, min_track_ratio=0.5, max_interval=5,
                       min_parallax_any_px=2)
    sel = KeyframeSelector(K, p)
    assert sel.decide(0, "first", 0, 0, 1) == (True, "first")
    sel.mark(0, np.arange(5), np.zeros((5, 2)), np.eye(4))
    assert sel.decide(1, "ok", 12, 0.9, 0.99) == (True, "parallax")
    assert sel.decide(1, "static", 12, 0.9, 0.99) == (False, "status")
    assert sel.decide(1, "rotation", 30, 0.1, 0.99) == (False, "status")
    assert sel.decide(1, "const_vel", 30, 0.1, 0.99) == (False, "status")
    assert sel.decide(1, "ok", 5, 0.9, 0.4) == (True, "inliers")
    assert sel.decide(1, "ok", 1, 0.9, 0.4) == (False, "")  # inlier drop without parallax
    assert sel.decide(1, "ok", 1, 0.2, 0.99) == (True, "tracks")  # tracks lost: re-seed
    assert sel.decide(2, "ok", 5, 0.9, 0.99) == (False, "")
    assert sel.decide(5, "ok", 5, 0.9, 0.99) == (True, "interval")
    assert sel.decide(5, "pnp", 5, 0.9, 0.99) == (True, "interval")
