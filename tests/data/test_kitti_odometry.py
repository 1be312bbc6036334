"""Tests of the KITTI odometry reader and training dataset (real snippet + generated folders)."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from trianflow.data import open_sequence
from trianflow.data.kitti_odometry import (
    KittiOdometryDataset,
    find_kitti_sequences,
    is_kitti_odometry,
    open_kitti_odometry,
    parse_calib,
    read_kitti_poses,
)
from trianflow.errors import InputError

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "kitti_odom_straight"
real_only = pytest.mark.skipif(not REAL.is_dir(), reason=f"real KITTI snippet not found at {REAL}")

FX, CX, CY = 100.0, 31.5, 11.5


def _P(tx=0.0):
    return np.array([[FX, 0, CX, tx], [0, FX, CY, 0], [0, 0, 1, 0]])


def _calib_text(keys=("P0", "P1", "P2", "P3"), baseline=0.5, extra=""):
    lines = []
    for k in keys:
        tx = -FX * baseline if k[-1] in "13" else 0.0
        lines.append(f"{k}: " + " ".join(f"{v:.6e}" for v in _P(tx).reshape(-1)))
    return "\n".join(lines) + "\n" + extra


def make_kitti(folder: Path, n=4, size=(24, 64), colour=True, stereo=True, calib=None, poses=True, times=True):
    """Write a small KITTI odometry folder with random images; returns the poses written."""
    rng = np.random.default_rng(0)
    left, right = ("image_2", "image_3") if colour else ("image_0", "image_1")
    dirs = [left] + ([right] if stereo else [])
    for d in dirs:
        (folder / d).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = size + ((3,) if colour else ())
            cv2.imwrite(str(folder / d / f"{i:06d}.png"), rng.integers(0, 255, shape, dtype=np.uint8))
    (folder / "calib.txt").write_text(calib if calib is not None else _calib_text())
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 2, 3] = np.arange(n) * 0.8
    T[:, 0, 3] = 5.0  # not starting at the origin: must be kept as given
    if poses:
        (folder / "poses.txt").write_text("".join(" ".join(f"{v:.6e}" for v in t[:3].reshape(-1)) + "\n" for t in T))
    if times:
        (folder / "times.txt").write_text("".join(f"{0.05 * i:.6e}\n" for i in range(n)))
    return T


@real_only
def test_real_snippet():
    seq = open_sequence(REAL, stereo=True)
    assert seq.kind == "kitti_odometry" and len(seq) == 51
    assert seq.size == (370, 1226)
    assert seq.K[0, 0] == pytest.approx(707.0912) and seq.K[1, 2] == pytest.approx(183.1104)
    assert seq.baseline == pytest.approx(379.8145 / 707.0912, rel=1e-6)
    assert 0.53 < seq.baseline < 0.54
    img = seq.read(10)
    assert img.shape == (370, 1226, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], img[..., 1])  # grey repeated to 3 channels
    raw = cv2.imread(str(REAL / "image_0" / "000010.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(img[..., 0], raw)
    assert seq.read_right(10).shape == (370, 1226, 3)
    assert seq.gt_poses.shape == (51, 4, 4)
    np.testing.assert_allclose(seq.gt_poses[0], np.eye(4), atol=1e-9)
    assert 55 < np.linalg.norm(seq.gt_poses[-1, :3, 3]) < 65  # ~60 m
    np.testing.assert_allclose(seq.timestamps[:3], [0, 0.1, 0.2])
    mono = open_sequence(REAL, max_frames=5)
    assert len(mono) == 5 and mono.baseline is None and mono.gt_poses.shape == (5, 4, 4)


def test_generated_colour_stereo(tmp_path):
    T = make_kitti(tmp_path / "s", n=5)
    assert is_kitti_odometry(tmp_path / "s")
    seq = open_kitti_odometry(tmp_path / "s", stereo=True)
    assert seq.meta["camera"] == "image_2"
    assert seq.size == (24, 64) and len(seq) == 5
    assert seq.baseline == pytest.approx(0.5)
    np.testing.assert_allclose(seq.gt_poses, T, atol=1e-5)  # not renormalised to identity
    np.testing.assert_allclose(seq.timestamps, 0.05 * np.arange(5))
    bgr = cv2.imread(str(tmp_path / "s" / "image_2" / "000003.png"))
    np.testing.assert_array_equal(seq.read(3), bgr[..., ::-1])
    K = np.array([[50.0, 0, 10], [0, 50, 5], [0, 0, 1]])
    seq2 = open_kitti_odometry(tmp_path / "s", K=K, max_frames=3)
    np.testing.assert_array_equal(seq2.K, K)
    assert len(seq2) == 3 and seq2.gt_poses.shape == (3, 4, 4)


def test_generated_gray_official_layout_and_variants(tmp_path):
    root = tmp_path / "dataset"
    seqdir = root / "sequences" / "07"
    T = make_kitti(seqdir, n=4, colour=False, poses=False, times=False,
                   calib=_calib_text(keys=("P_rect_00", "P_rect_01")) + "calib_time: 09-Jan-2012 13:57:47\n"
                   + "Tr: " + " ".join(["1", "0", "0", "0", "0", "1", "0", "0", "0", "0", "1", "0"]) + "\n")
    (root / "poses").mkdir()
    (root / "poses" / "07.txt").write_text("".join(" ".join(f"{v:.6e}" for v in t[:3].reshape(-1)) + "\n" for t in T))
    seq = open_sequence(seqdir, stereo=True)
    assert seq.meta["camera"] == "image_0" and seq.baseline == pytest.approx(0.5)
    np.testing.assert_allclose(seq.gt_poses, T, atol=1e-5)
    np.testing.assert_allclose(seq.timestamps, [0, 0.1, 0.2, 0.3])
    calib = parse_calib(seqdir / "calib.txt")
    assert set(calib) >= {"P0", "P1", "Tr"} and calib["Tr"].shape == (4, 4)
    assert find_kitti_sequences(root) == [seqdir]
    assert find_kitti_sequences(root, [7]) == [seqdir]
    with pytest.raises(InputError, match="sequence 08 not found"):
        find_kitti_sequences(root, ["08"])


def test_errors(tmp_path):
    # unparseable calib: names file and line
    make_kitti(tmp_path / "a", calib="P0: 1 2 3\n")
    with pytest.raises(InputError, match=r"calib.txt:1: P0 has 3 numbers"):
        open_kitti_odometry(tmp_path / "a")
    make_kitti(tmp_path / "b", calib=_calib_text() + "P3: a b c\n")
    with pytest.raises(InputError, match=r"calib.txt:5"):
        open_kitti_odometry(tmp_path / "b")
    # missing P2 for image_2 without --intrinsics
    make_kitti(tmp_path / "c", calib=_calib_text(keys=("P0", "P1")))
    with pytest.raises(InputError, match="no P2"):
        open_kitti_odometry(tmp_path / "c")
    # negative baseline
    make_kitti(tmp_path / "d", calib=_calib_text(baseline=-0.5))
    with pytest.raises(InputError, match="baseline"):
        open_kitti_odometry(tmp_path / "d", stereo=True)
    # fewer poses than images
    make_kitti(tmp_path / "e", n=4)
    lines = (tmp_path / "e" / "poses.txt").read_text().splitlines()
    (tmp_path / "e" / "poses.txt").write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(InputError, match="2 poses for 4 images"):
        open_kitti_odometry(tmp_path / "e")
    (tmp_path / "e" / "poses.txt").write_text("1 2 3\n")
    with pytest.raises(InputError, match=r"poses.txt:1"):
        read_kitti_poses(tmp_path / "e" / "poses.txt")
    # missing right image
    make_kitti(tmp_path / "f", n=3)
    (tmp_path / "f" / "image_3" / "000001.png").unlink()
    with pytest.raises(InputError, match="missing right image 000001.png"):
        open_kitti_odometry(tmp_path / "f", stereo=True)
    # empty image folder / single frame
    (tmp_path / "g" / "image_0").mkdir(parents=True)
    (tmp_path / "g" / "calib.txt").write_text(_calib_text())
    with pytest.raises(InputError, match="no images"):
        open_sequence(tmp_path / "g")
    make_kitti(tmp_path / "h", n=1)
    with pytest.raises(InputError, match="at least 2"):
        open_sequence(tmp_path / "h")
    # an unreadable image and an image of another size, named in the message
    make_kitti(tmp_path / "i", n=3)
    (tmp_path / "i" / "image_2" / "000001.png").write_bytes(b"not a png")
    seq = open_kitti_odometry(tmp_path / "i")
    with pytest.raises(InputError, match="000001.png: cannot read"):
        seq.read(1)
    cv2.imwrite(str(tmp_path / "i" / "image_3" / "000002.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InputError, match="image_3/000002.png: image is 10x10"):
        open_kitti_odometry(tmp_path / "i", stereo=True)


def test_training_dataset(tmp_path):
    root = tmp_path / "sequences"
    T0 = make_kitti(root / "00", n=5)
    make_kitti(root / "01", n=4, poses=False)
    ds = KittiOdometryDataset(tmp_path, frames=3, size=(12, 32), stereo=True)
    assert len(ds) == 3 + 2
    s = ds[0]
    for k in ("image", "image_next", "image_prev", "image_right", "image_next_right", "image_aug"):
        assert s[k].shape == (3, 12, 32)
    assert float(s["baseline"]) == pytest.approx(0.5)
    # K rescaled with pixel-centre semantics: cx' = (cx + 0.5) * s - 0.5
    assert float(s["K"][0, 2]) == pytest.approx((CX + 0.5) * 0.5 - 0.5)
    assert float(s["K"][0, 0]) == pytest.approx(FX * 0.5)
    assert s["frame_id"] == "00/1"
    assert "pose_gt" not in s and "pose_gt" not in ds[4]  # sequence 01 has no ground truth
    loader = torch.utils.data.DataLoader(ds, batch_size=5)
    batch = next(iter(loader))  # samples of both sequences collate
    assert batch["image"].shape == (5, 3, 12, 32)
    gt = KittiOdometryDataset(tmp_path, sequences=["00"], frames=3, size=None)
    expected = np.linalg.inv(T0[2]) @ T0[1]  # centre frame 1 -> next frame 2
    np.testing.assert_allclose(gt[0]["pose_gt"].numpy(), expected, atol=1e-5)
    with pytest.raises(InputError, match="no KITTI odometry sequences"):
        KittiOdometryDataset(tmp_path / "sequences" / "00" / "image_2")
