"""Ground plane under the camera and the scale profile built from it (exact synthetic points)."""

import numpy as np
import pytest

from trianflow.geometry.ground import (GroundOptions, fit_ground_plane, ground_scale_profile,
                                       rescale_trajectory)

K = np.array([[700.0, 0, 620], [0, 700.0, 185], [0, 0, 1]])
SIZE = (370, 1240)


def _project(X):
    p = X @ K.T
    return p[:, :2] / p[:, 2:]


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _street(rng, height=1.65, n_road=400, noise=0.01, pitch_deg=0.0):
    """Road points (camera ``height`` above), raised kerbs at the sides, car boxes and a wall,
    in camera coordinates of a camera pitched down by ``pitch_deg``."""
    road = np.c_[rng.uniform(-3.5, 3.5, n_road), np.full(n_road, height), rng.uniform(4, 25, n_road)]
    road[:, 1] += rng.normal(0, noise, n_road)
    kerb = np.c_[rng.choice([-4.2, 4.2], 80) + rng.uniform(-0.2, 0.2, 80), np.full(80, height - 0.15),
                 rng.uniform(4, 25, 80)]
    car = np.c_[rng.uniform(-1.0, 1.0, 150), rng.uniform(height - 1.4, height - 0.3, 150), rng.uniform(12, 16, 150)]
    wall = np.c_[np.full(100, -6.0), rng.uniform(-3, height, 100), rng.uniform(5, 30, 100)]
    X = np.concatenate([road, kerb, car, wall])
    X = X @ _rot_x(np.radians(-pitch_deg)).T  # pitched down: the world's up axis tilts in the camera
    xy = _project(X)
    inside = (X[:, 2] > 0.5) & (xy[:, 0] >= 0) & (xy[:, 0] < SIZE[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < SIZE[0])
    return X[inside], xy[inside]


@pytest.mark.parametrize("units", [1.0, 0.37, 12.0])
def test_fit_finds_the_road_not_the_cars_or_kerbs_in_any_units(units):
    rng = np.random.default_rng(0)
    X, xy = _street(rng)
    g = fit_ground_plane(X * units, xy, K, SIZE)
    assert g.found, g.reason
    assert g.height == pytest.approx(1.65 * units, rel=0.01)
    assert g.tilt_deg < 1.0 and g.normal[1] < 0
    assert g.inliers > 100


def test_fit_handles_a_pitched_camera():
    rng = np.random.default_rng(1)
    X, xy = _street(rng, pitch_deg=5.0)
    g = fit_ground_plane(X, xy, K, SIZE)
    assert g.found, g.reason
    assert g.height == pytest.approx(1.65, rel=0.01)
    assert g.tilt_deg == pytest.approx(5.0, abs=0.5)


def test_no_ground_gives_a_reason_not_a_plane():
    rng = np.random.default_rng(2)
    # only walls and a ceiling above the camera (indoor view up / no road)
    wall = np.c_[rng.choice([-3.0, 3.0], 300), rng.uniform(-2, 1.0, 300), rng.uniform(2, 20, 300)]
    g = fit_ground_plane(wall, _project(wall), K, SIZE)
    assert not g.found and g.reason and np.isnan(g.height)
    g = fit_ground_plane(np.zeros((0, 3)), np.zeros((0, 2)), K, SIZE)
    assert not g.found and "points" in g.reason
    # a steep slope is not ground
    X, xy = _street(rng, pitch_deg=25.0)
    assert not fit_ground_plane(X, xy, K, SIZE, GroundOptions(max_tilt_deg=8)).found


def test_scale_profile_undoes_a_drift_and_bridges_gaps():
    true_h = 1.65
    drift = np.linspace(1.0, 1.5, 30)  # the map's scale grows by 50 % along the run
    heights = true_h * drift
    found = np.ones(30, bool)
    found[10:14] = False  # no plane there: keep the neighbours' (chained) scale
    heights[~found] = np.nan
    heights[20] *= 3  # one bad fit
    f = ground_scale_profile(heights, found, camera_height=true_h, window=5)
    assert np.allclose(f[found] * drift[found], 1.0, atol=0.03)
    assert np.all(np.diff(f[9:15]) <= 1e-12)  # interpolated between the neighbours, monotone here
    rel = ground_scale_profile(heights, found, camera_height=None, window=5)
    assert np.allclose(rel / f, (rel / f)[0])  # same shape, other unit
    assert np.allclose(ground_scale_profile(np.full(5, np.nan), np.zeros(5, bool), 1.65), 1.0)


def test_rescale_trajectory_scales_steps_keeps_rotations():
    poses = np.tile(np.eye(4), (4, 1, 1))
    poses[:, :3, 3] = [[0, 0, 0], [0, 0, 1], [0, 0, 2], [1, 0, 2]]
    poses[3, :3, :3] = _rot_x(0.3)
    out = rescale_trajectory(poses, np.array([9.0, 2.0, 2.0, 0.5]))
    assert np.allclose(out[:, :3, 3], [[0, 0, 0], [0, 0, 2], [0, 0, 4], [0.5, 0, 4]])
    assert np.allclose(out[:, :3, :3], poses[:, :3, :3])


def _plane_flow(K, size, R, t, n, d, noise=0.0, seed=0):
    """The exact flow of a ground plane n.X + d = 0 (frame 1) under X2 = R X1 + t, ``(H,W,2)``; NaN above
    the horizon."""
    H, W = size
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    p = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T
    depth_den = p @ n  # n.(s p) + d = 0 -> s = -d / (n.p)
    s = np.where(depth_den < -1e-9, -d / np.minimum(depth_den, -1e-9), np.nan)
    X = p * s[..., None]
    X2 = X @ R.T + t
    q = X2 @ K.T
    x2 = q[..., :2] / q[..., 2:3]
    flow = x2 - np.stack([xs, ys], -1)
    if noise:
        flow = flow + np.random.default_rng(seed).normal(0, noise, flow.shape)
    return flow.astype(np.float32)


@pytest.mark.parametrize("units", [1.0, 0.02])
def test_fit_ground_from_flow_recovers_the_height_over_the_step(units):
    from scipy.spatial.transform import Rotation

    from trianflow.geometry.ground import fit_ground_from_flow

    K = np.array([[700.0, 0, 600], [0, 700, 180], [0, 0, 1]])
    size = (370, 1220)
    n = np.array([0.0, -1.0, 0.03])
    n /= np.linalg.norm(n)  # up, slightly pitched
    R = Rotation.from_euler("y", 2.0, degrees=True).as_matrix()  # turning while driving
    t = np.array([0.05, 0.0, -1.0])  # X2 = R X1 + t: forward by 1 (t points back in the new camera)
    flow = _plane_flow(K, size, R, t, n, 1.65, noise=0.2)
    g = fit_ground_from_flow(flow, R, t * units, K)
    assert g.found, g.reason
    assert g.height == pytest.approx(1.65 * units, rel=0.01)
    assert np.allclose(g.normal, n, atol=0.02)
    assert g.inliers > 0.8 * g.candidates


def test_fit_ground_from_flow_refuses_what_is_not_one_plane():
    from trianflow.geometry.ground import fit_ground_from_flow

    K = np.array([[700.0, 0, 600], [0, 700, 180], [0, 0, 1]])
    size = (370, 1220)
    R, t = np.eye(3), np.array([0.0, 0.0, -1.0])
    rng = np.random.default_rng(1)
    random_flow = rng.normal(0, 5, (size[0], size[1], 2)).astype(np.float32)
    g = fit_ground_from_flow(random_flow, R, t, K)
    assert not g.found and "plane" in g.reason
    flow = _plane_flow(K, size, R, t, np.array([0.0, -1.0, 0.0]), 1.65)
    g = fit_ground_from_flow(flow, R, np.zeros(3), K)
    assert not g.found and "translation" in g.reason
    empty = np.full((size[0], size[1], 2), np.nan, np.float32)
    assert not fit_ground_from_flow(empty, R, t, K).found


def _road_images(K, size, R, t, n, d, contrast=40.0, seed=0):
    """Two grey frames of a textured plane ``n . X + d = 0`` (frame 1's camera), frame 2 moved by
    ``X2 = R X1 + t``; the texture is a function of the point on the plane (frame 1 coordinates)."""
    import cv2

    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.normal(0, 1, (2400, 2400)).astype(np.float32), (0, 0), 2.0)
    tex = 128 + contrast * tex / tex.std()
    H, W = size
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    p = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T

    def render(nc, dc, to_frame1):
        den = p @ nc
        s = np.where(den < -1e-9, -dc / np.minimum(den, -1e-9), np.nan)
        X1 = to_frame1(p * s[..., None])
        u = (X1[..., 0] * 40 + 1200).astype(np.float32)  # 40 texture pixels per unit on the plane
        v = (X1[..., 2] * 40 + 100).astype(np.float32)
        img = cv2.remap(tex, np.nan_to_num(u, nan=-1), np.nan_to_num(v, nan=-1), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=128)
        return np.clip(img + rng.normal(0, 1.0, img.shape), 0, 255).astype(np.uint8)

    n2 = R @ n
    img1 = render(n, d, lambda X: X)
    img2 = render(n2, d - n2 @ t, lambda X: (X - t) @ R)
    return img1, img2


@pytest.mark.parametrize("units,contrast", [(1.0, 40.0), (0.05, 40.0), (1.0, 4.0)])
def test_fit_ground_photometric_recovers_the_height_over_the_step(units, contrast):
    """Direct alignment of the road's grey levels: the height over the step on a textured road and on a
    nearly untextured one (grey-level contrast 4 over a sensor noise of 1)."""
    from scipy.spatial.transform import Rotation

    from trianflow.geometry.ground import fit_ground_photometric

    K = np.array([[700.0, 0, 600], [0, 700, 180], [0, 0, 1]])
    size = (370, 1220)
    n = np.array([0.0, -1.0, 0.02])
    n /= np.linalg.norm(n)
    R = Rotation.from_euler("y", 2.0, degrees=True).as_matrix()
    t = np.array([0.03, 0.0, -1.0])
    img1, img2 = _road_images(K, size, R, t, n, 1.65, contrast)
    g = fit_ground_photometric(img1, img2, R, t * units, K)
    assert g.found, g.reason
    assert g.height == pytest.approx(1.65 * units, rel=0.02)
    assert np.allclose(g.normal, n, atol=0.02)


def test_fit_ground_photometric_refuses_a_road_that_is_not_there():
    from trianflow.geometry.ground import fit_ground_photometric

    K = np.array([[700.0, 0, 600], [0, 700, 180], [0, 0, 1]])
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 256, (370, 1220)).astype(np.uint8) for _ in range(2))  # unrelated frames
    g = fit_ground_photometric(a, b, np.eye(3), np.array([0.0, 0.0, -1.0]), K)
    assert not g.found and g.reason
    g = fit_ground_photometric(a, a, np.eye(3), np.zeros(3), K)
    assert not g.found and "translation" in g.reason
