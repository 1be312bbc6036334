"""Tests of the TUM RGB-D reader on generated folders."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from trianflow.data import open_sequence
from trianflow.data.tum import (
    TUM_DISTORTION,
    TUM_INTRINSICS,
    associate,
    freiburg_camera,
    is_tum,
    open_tum,
    quat_to_matrix,
    read_tum_trajectory,
)
from trianflow.errors import InputError

H, W = 480, 640


def make_tum(folder: Path, n=4, gt_offsets=None, images=None):
    (folder / "rgb").mkdir(parents=True, exist_ok=True)
    ts = 1305031102.175304 + 0.0333 * np.arange(n)
    lines = ["# color images", "# file: 'rgbd_dataset_freiburg1_xyz.bag'", "# timestamp filename"]
    rng = np.random.default_rng(0)
    for i, t in enumerate(ts):
        img = images[i] if images is not None else np.full((H, W, 3), 20 * i, np.uint8)
        cv2.imwrite(str(folder / "rgb" / f"{t:.6f}.png"), img)
        lines.append(f"{t:.6f} rgb/{t:.6f}.png")
    (folder / "rgb.txt").write_text("\n".join(lines) + "\n")
    rots = Rotation.from_rotvec(rng.normal(scale=0.2, size=(n, 3)))
    pos = rng.normal(size=(n, 3))
    if gt_offsets is not None:
        gl = ["# ground truth trajectory", "# timestamp tx ty tz qx qy qz qw"]
        # a denser GT stream with the matching rows at the given offsets
        for i, t in enumerate(ts):
            q = rots[i].as_quat()  # x y z w
            gl.append(f"{t + gt_offsets[i]:.4f} " + " ".join(f"{v:.6f}" for v in pos[i]) + " "
                      + " ".join(f"{v:.6f}" for v in q))
            gl.append(f"{t + 0.5:.4f} 9 9 9 0 0 0 1")  # far in time: never associated
        (folder / "groundtruth.txt").write_text("\n".join(gl) + "\n")
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = rots.as_matrix()
    T[:, :3, 3] = pos
    return ts, T


def test_freiburg_names():
    assert freiburg_camera("rgbd_dataset_freiburg1_xyz") == 1
    assert freiburg_camera("rgbd_dataset_freiburg3_long_office") == 3
    assert freiburg_camera("fr2_desk") == 2
    assert freiburg_camera("my_sequence") is None
    assert freiburg_camera("ffr12") is None


def test_quaternions_and_association():
    q = Rotation.random(5, random_state=1)
    np.testing.assert_allclose(quat_to_matrix(q.as_quat()), q.as_matrix(), atol=1e-12)
    idx = associate(np.array([0.0, 1.0, 2.0, 3.5]), np.array([2.01, 0.015, 1.03, 0.5]), max_dt=0.02)
    np.testing.assert_array_equal(idx, [1, -1, 0, -1])


def test_fr1_undistorts_and_associates(tmp_path):
    folder = tmp_path / "rgbd_dataset_freiburg1_xyz"
    # a white dot near the corner of the raw (distorted) image
    raw = np.zeros((H, W, 3), np.uint8)
    pd = np.array([80.0, 70.0])
    cv2.circle(raw, (80, 70), 3, (255, 255, 255), -1)
    ts, T = make_tum(folder, n=3, gt_offsets=[0.004, -0.01, 0.0], images=[raw, raw, raw])
    assert is_tum(folder)
    seq = open_sequence(folder)
    assert seq.kind == "tum" and len(seq) == 3 and seq.size == (H, W)
    fx, fy, cx, cy = TUM_INTRINSICS[1]
    np.testing.assert_allclose(seq.K, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    np.testing.assert_allclose(seq.timestamps, ts)
    assert seq.meta["undistorted"]
    out = seq.read(0)[..., 0].astype(float)
    ys, xs = np.nonzero(out > 64)
    centroid = np.array([np.average(xs, weights=out[ys, xs]), np.average(ys, weights=out[ys, xs])])
    K = seq.K
    pu = cv2.undistortPoints(pd.reshape(1, 1, 2), K, np.array(TUM_DISTORTION[1]), P=K).reshape(2)
    assert np.linalg.norm(pu - pd) > 3  # the distortion moves it noticeably here
    assert np.linalg.norm(centroid - pu) < 0.5
    np.testing.assert_allclose(seq.gt_poses, T, atol=1e-5)
    assert seq.meta["gt_valid"].all()


def test_partial_ground_truth_and_fr3(tmp_path):
    folder = tmp_path / "rgbd_dataset_freiburg3_walking"
    ts, T = make_tum(folder, n=3, gt_offsets=[0.0, 0.05, 0.0])
    seq = open_tum(folder)
    assert seq.gt_poses is None  # not every frame associates
    np.testing.assert_array_equal(seq.meta["gt_valid"], [True, False, True])
    np.testing.assert_allclose(seq.meta["gt_poses"][[0, 2]], T[[0, 2]], atol=1e-5)
    assert np.isnan(seq.meta["gt_poses"][1]).all()
    assert not seq.meta["undistorted"]
    raw = cv2.imread(str(folder / "rgb" / f"{ts[1]:.6f}.png"))[..., ::-1]
    np.testing.assert_array_equal(seq.read(1), raw)  # fr3: no undistortion
    assert seq.K[0, 0] == TUM_INTRINSICS[3][0]
    gt_t, gt_T = read_tum_trajectory(folder / "groundtruth.txt")
    assert len(gt_t) == 6 and gt_T.shape == (6, 4, 4)


def test_errors(tmp_path):
    folder = tmp_path / "my_rgbd"
    make_tum(folder, n=2)
    with pytest.raises(InputError, match="--intrinsics"):
        open_sequence(folder)
    seq = open_sequence(folder, intrinsics="500,500,320,240", max_frames=2)
    assert len(seq) == 2 and seq.K[0, 0] == 500 and not seq.meta["undistorted"]
    (folder / "rgb.txt").write_text("# comment\n1.0\n")
    with pytest.raises(InputError, match=r"rgb.txt:2"):
        open_sequence(folder, intrinsics="500,500,320,240")
    (folder / "rgb.txt").write_text("1.0 rgb/missing.png\n2.0 rgb/missing2.png\n")
    with pytest.raises(InputError, match="missing.png"):
        open_sequence(folder, intrinsics="500,500,320,240")
    (folder / "rgb.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="lists no frames"):
        open_sequence(folder, intrinsics="500,500,320,240")
    f2 = tmp_path / "rgbd_dataset_freiburg2_desk"
    make_tum(f2, n=2)
    (f2 / "groundtruth.txt").write_text("1.0 2 3\n")
    with pytest.raises(InputError, match=r"groundtruth.txt:1"):
        open_tum(f2)
