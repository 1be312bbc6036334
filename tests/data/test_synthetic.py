"""Tests of the synthetic ray-cast renderer: trajectories, depth/pose/colour consistency, flow."""

import cv2
import numpy as np
import pytest
import torch

from trianflow.data import open_sequence
from trianflow.data.synthetic import (
    SyntheticDataset,
    build_scene,
    default_intrinsics,
    flow_from_depth,
    make_trajectory,
    render_views,
    synthetic_sequence,
    write_kitti_layout,
)
from trianflow.errors import InputError
from trianflow.geometry.camera import backproject_depth, project
from trianflow.geometry.flow import flow_warp


def _rot_angle_deg(R):
    return np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(n_frames=6, size=(48, 160), kind="forward_turn", seed=3)


def test_trajectory_kinds():
    for kind in ("forward_turn", "straight", "rotation"):
        T = make_trajectory(30, kind=kind, seed=1)
        assert T.shape == (30, 4, 4)
        np.testing.assert_allclose(T[0], np.eye(4), atol=1e-12)
        R = T[:, :3, :3]
        np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-10)
        np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-10)
    ft = make_trajectory(60, "forward_turn", step=1.0, seed=0)
    steps = np.linalg.norm(np.diff(ft[:, :3, 3], axis=0), axis=1)
    np.testing.assert_allclose(steps, 1.0, atol=1e-9)
    rel = [_rot_angle_deg(ft[i, :3, :3].T @ ft[i + 1, :3, :3]) for i in range(59)]
    assert 0.2 < max(rel) < 3.0  # gentle turns
    assert max(_rot_angle_deg(T[:3, :3]) for T in ft) > 4.0  # but it does turn
    assert np.abs(ft[:, 0, 3]).max() < 4.0  # stays in the street
    np.testing.assert_allclose(ft[:, 1, 3], 0.0, atol=1e-12)  # no vertical motion
    st = make_trajectory(5, "straight", step=2.0)
    np.testing.assert_allclose(st[:, 2, 3], [0, 2, 4, 6, 8])
    np.testing.assert_allclose(st[:, :3, :3], np.broadcast_to(np.eye(3), (5, 3, 3)))
    rot = make_trajectory(20, "rotation", seed=2)
    np.testing.assert_allclose(rot[:, :3, 3], 0.0)
    assert max(_rot_angle_deg(T[:3, :3]) for T in rot) > 5.0
    # seeds
    np.testing.assert_array_equal(make_trajectory(10, seed=5), make_trajectory(10, seed=5))
    assert not np.allclose(make_trajectory(10, seed=5), make_trajectory(10, seed=6))
    with pytest.raises(InputError):
        make_trajectory(10, kind="spiral")
    # round a block, 1.3 laps: the last 30 % of the frames pass the first ones again, same heading
    lp = make_trajectory(100, "loop", step=1.0, seed=0)
    np.testing.assert_allclose(lp[0], np.eye(4), atol=1e-12)
    steps = np.linalg.norm(np.diff(lp[:, :3, 3], axis=0), axis=1)
    assert np.all(np.abs(steps - 1.0) < 0.05)
    lap = int(round(100 / 1.3))
    assert np.linalg.norm(lp[lap, :3, 3] - lp[0, :3, 3]) < 0.5  # 0.3 m further out on the second lap
    assert _rot_angle_deg(lp[0, :3, :3].T @ lp[lap, :3, :3]) < 5.0
    fwd = np.sum(np.diff(lp[:, :3, 3], axis=0) * lp[:-1, :3, 2], axis=1) / steps
    assert fwd.min() > 0.99  # the camera looks where it drives


def test_default_intrinsics():
    K = default_intrinsics((192, 640))
    assert K[0, 0] == K[1, 1] == pytest.approx(384.0)
    assert (K[0, 2], K[1, 2]) == (319.5, 95.5)
    hfov = 2 * np.degrees(np.arctan(320 / K[0, 0]))
    assert 70 < hfov < 90


def test_ground_depth_is_exact():
    """With the identity pose the bottom-centre pixels see the ground 1.5 m below the camera."""
    K = default_intrinsics((40, 120))
    img, depth = render_views(np.eye(4), K, (40, 120), seed=0, supersample=1)
    assert img.shape == (1, 40, 120, 3) and img.dtype == np.uint8
    assert depth.shape == (1, 40, 120) and depth.dtype == np.float32
    v = np.arange(30, 40)
    expected = 1.5 * K[1, 1] / (v - K[1, 2])
    np.testing.assert_allclose(depth[0, 30:40, 60], expected, rtol=1e-5)
    assert np.all(depth > 0) and np.all(np.isfinite(depth))


def test_texture_is_rich_and_deterministic():
    K = default_intrinsics((48, 160))
    poses = make_trajectory(2, seed=0)
    a, da = render_views(poses, K, (48, 160), seed=0)
    b, db = render_views(poses, K, (48, 160), seed=0)
    c, _ = render_views(poses, K, (48, 160), seed=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(da, db)
    e, de = render_views(poses, K, (48, 160), seed=0, workers=2)  # threads: same result
    np.testing.assert_array_equal(a, e)
    np.testing.assert_array_equal(da, de)
    s = synthetic_sequence(n_frames=2, size=(48, 160), seed=0)
    s.render_all()
    np.testing.assert_array_equal(s.read(1), a[1])
    np.testing.assert_array_equal(s.depth(0), da[0])
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 20
    gray = cv2.cvtColor(a[0], cv2.COLOR_RGB2GRAY).astype(float)
    assert gray.std() > 35  # strong contrast
    lap = np.abs(cv2.Laplacian(gray, cv2.CV_64F))
    assert np.median(lap) > 5  # detail at the pixel scale, not flat regions
    # the scene has boxes (depth discontinuities) somewhere along the street
    scene = build_scene(poses[:, :3, 3], seed=0)
    assert len(scene.boxes_lo) >= 3


def test_reprojection_depth_and_colour_agree(seq):
    """Lift pixels of frame i with depth, move by the GT pose, project into frame j: the depth
    and colour found there agree with the transformed point (for the visible ones)."""
    i, j = 1, 2
    K = seq.K
    d1, d2 = seq.depth(i), seq.depth(j)
    img1, img2 = seq.read(i).astype(np.float32), seq.read(j).astype(np.float32)
    flow, valid = seq.flow(i, j)
    h, w = d1.shape
    ys, xs = np.mgrid[0:h, 0:w]
    x2, y2 = xs + flow[0], ys + flow[1]
    T = seq.relative_pose(i, j)
    P1 = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3) @ np.linalg.inv(K).T * d1.reshape(-1, 1)
    z2 = (P1 @ T[:3, :3].T + T[:3, 3])[:, 2].reshape(h, w)
    m = valid & (x2 > 1) & (x2 < w - 2) & (y2 > 1) & (y2 < h - 2)
    assert m.mean() > 0.5
    d2s = cv2.remap(d2, x2.astype(np.float32), y2.astype(np.float32), cv2.INTER_NEAREST)
    rel = np.abs(d2s - z2) / z2
    assert np.median(rel[m]) < 0.01
    assert (rel[m] < 0.05).mean() > 0.9
    c2 = cv2.remap(img2, x2.astype(np.float32), y2.astype(np.float32), cv2.INTER_LINEAR)
    diff = np.abs(c2 - img1).mean(-1)
    assert np.median(diff[m]) < 4.0  # grey levels
    # a wrong correspondence (shifted by 3 px) would differ a lot
    c2_wrong = cv2.remap(img2, (x2 + 3).astype(np.float32), y2.astype(np.float32), cv2.INTER_LINEAR)
    assert np.median(np.abs(c2_wrong - img1).mean(-1)[m]) > 4 * np.median(diff[m])


def test_flow_valid_marks_occlusions(seq):
    """In-view pixels marked invalid are hidden behind nearer geometry in the second view."""
    i, j = 0, 3  # a larger motion makes occlusions
    flow, valid = seq.flow(i, j)
    d1, d2 = seq.depth(i), seq.depth(j)
    h, w = d1.shape
    ys, xs = np.mgrid[0:h, 0:w]
    x2, y2 = xs + flow[0], ys + flow[1]
    T = seq.relative_pose(i, j)
    P1 = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3) @ np.linalg.inv(seq.K).T * d1.reshape(-1, 1)
    z2 = (P1 @ T[:3, :3].T + T[:3, 3])[:, 2].reshape(h, w)
    inside = (x2 >= 0) & (x2 <= w - 1) & (y2 >= 0) & (y2 <= h - 1) & (z2 > 0)
    assert not valid[~inside].any()
    occluded = inside & ~valid
    assert occluded.sum() > 10
    d2s = cv2.remap(d2, x2.astype(np.float32), y2.astype(np.float32), cv2.INTER_NEAREST)
    assert (d2s[occluded] < 0.95 * z2[occluded]).mean() > 0.8


def test_dis_flow_matches_ground_truth():
    """OpenCV DIS flow on the rendered frames agrees with the exact flow (texture is trackable)."""
    s = synthetic_sequence(n_frames=2, size=(96, 320), seed=0)
    a = cv2.cvtColor(s.read(0), cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(s.read(1), cv2.COLOR_RGB2GRAY)
    f = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None).transpose(2, 0, 1)
    fg, v = s.flow(0, 1)
    epe = np.linalg.norm(f - fg, axis=0)[v]
    assert np.median(np.linalg.norm(fg, axis=0)[v]) > 2.0  # a real motion
    assert np.median(epe) < 0.6
    assert (epe < 2.0).mean() > 0.8


def test_stereo_disparity_warp():
    s = synthetic_sequence(n_frames=2, size=(48, 160), seed=1, baseline=0.5)
    assert s.has_stereo and s.baseline == 0.5
    left, right = s.read(0).astype(np.float32), s.read_right(0).astype(np.float32)
    depth = s.depth(0)
    disp = s.K[0, 0] * 0.5 / depth
    h, w = depth.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = cv2.remap(right, xs - disp.astype(np.float32), ys, cv2.INTER_LINEAR)
    m = (xs - disp) > 1
    diff = np.abs(warped - left).mean(-1)
    assert np.median(diff[m]) < 4.0
    flow, valid = flow_from_depth(s.scene, depth, s.K, s.gt_poses[0], s.gt_poses[0] @ np.diag([1.0, 1, 1, 1]))
    np.testing.assert_allclose(flow, 0.0, atol=1e-3)  # same camera -> zero flow, all visible
    assert valid.all()
    # right-camera depth is rendered from the right pose: same depth for a fronto-parallel far wall
    assert s.depth_right(0).shape == (h, w)


def test_sequence_interface_and_kitti_layout(tmp_path):
    s = synthetic_sequence(n_frames=4, size=(32, 96), seed=2, baseline=0.4)
    assert len(s) == 4 and s.kind == "synthetic" and s.size == (32, 96)
    assert s.gt_poses.shape == (4, 4, 4)
    np.testing.assert_allclose(s.timestamps, [0, 0.1, 0.2, 0.3])
    folder = write_kitti_layout(s, tmp_path / "seq")
    back = open_sequence(folder, stereo=True)
    assert back.kind == "kitti_odometry" and len(back) == 4
    np.testing.assert_allclose(back.K, s.K, rtol=1e-9)
    assert back.baseline == pytest.approx(0.4, rel=1e-9)
    np.testing.assert_allclose(back.gt_poses, s.gt_poses, atol=1e-8)
    np.testing.assert_allclose(back.timestamps, s.timestamps, atol=1e-6)
    np.testing.assert_array_equal(back.read(2), s.read(2))
    np.testing.assert_array_equal(back.read_right(3), s.read_right(3))
    gray = write_kitti_layout(s, tmp_path / "gray", gray=True)
    assert (gray / "image_0").is_dir() and (gray / "image_1").is_dir()
    g = open_sequence(gray)
    assert g.read(0).shape == (32, 96, 3)
    np.testing.assert_array_equal(g.read(0)[..., 0], g.read(0)[..., 2])


def test_dataset_samples_and_flow_consistency():
    ds = SyntheticDataset(n_frames=4, size=(32, 96), seed=0, baseline=0.5, frames=3)
    assert len(ds) == 2
    s = ds[0]
    for k in ("image", "image_next", "image_prev", "image_aug", "image_next_aug", "image_right"):
        assert s[k].shape == (3, 32, 96) and s[k].dtype == torch.float32
        assert 0 <= s[k].min() and s[k].max() <= 1
    assert s["K"].shape == (3, 3) and s["pose_gt"].shape == (4, 4)
    assert s["depth_gt"].shape == (1, 32, 96) and s["disp_gt"].shape == (1, 32, 96)
    assert s["flow_gt"].shape == (2, 32, 96) and s["flow_valid"].shape == (1, 32, 96)
    assert float(s["baseline"]) == pytest.approx(0.5)
    torch.testing.assert_close(s["disp_gt"], s["K"][0, 0] * 0.5 / s["depth_gt"])
    # flow_gt equals the flow computed independently from depth_gt and pose_gt with torch geometry
    pts = backproject_depth(s["depth_gt"][None], s["K"][None])  # (1,3,H,W)
    X = pts.flatten(2).transpose(1, 2)
    X2 = X @ s["pose_gt"][:3, :3].T + s["pose_gt"][:3, 3]
    uv, _ = project(X2, s["K"][None])
    flow = (uv.transpose(1, 2).reshape(1, 2, 32, 96) - torch.stack(torch.meshgrid(
        torch.arange(96.0), torch.arange(32.0), indexing="xy"))[None])
    torch.testing.assert_close(flow[0], s["flow_gt"], atol=2e-3, rtol=1e-4)
    # and it explains image -> image_next photometrically where valid
    warped, inb = flow_warp(s["image_next"][None], s["flow_gt"][None])
    v = (s["flow_valid"] > 0) & (inb[0] > 0)
    err = (warped[0] - s["image"]).abs().mean(0, keepdim=True)
    assert err[v].median() < 0.02
    assert ds[1]["frame_id"].endswith("/2")
    with pytest.raises(IndexError):
        ds[2]


def test_package_reexports_its_modules_public_names():
    import trianflow.data.synthetic as synthetic
    from trianflow.data.synthetic import dataset, render, scene, sequence, trajectory

    for name in synthetic.__all__:
        obj = getattr(synthetic, name)
        homes = [m for m in (trajectory, scene, render, sequence, dataset) if getattr(m, name, None) is obj]
        assert homes, name
    assert synthetic.SyntheticDataset is dataset.SyntheticDataset
    assert synthetic.render_views is render.render_views and synthetic.build_scene is scene.build_scene
