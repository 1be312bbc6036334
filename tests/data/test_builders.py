"""Tests for trianflow.data.builders: ``data.dataset`` names -> training datasets."""

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from trianflow.config import load_config
from trianflow.data.builders import build_stereo_dataset, build_training_dataset, build_trianflow_dataset
from trianflow.data.stereo_pairs import MiddleburyDataset
from trianflow.data.synthetic import synthetic_sequence
from trianflow.errors import InputError

KITTI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kitti_odom_straight"


def tf_cfg(*extra):
    """A config of the trianflow task's data: 64x64 images of 2 synthetic pairs unless overridden."""
    return load_config(None, ["data.size=[64,64]", "data.sequences=[forward_turn:0:3]", *extra])


def cfg_with(*overrides):
    return load_config(None, list(overrides))


def test_build_training_dataset(tmp_path):
    cfg = SimpleNamespace(dataset="synthetic", size=[32, 96], frames=2, stride=1, stereo=True, max_samples=3,
                          augment=True, flip=True, color_jitter=True)
    ds = build_training_dataset(cfg)
    assert len(ds) == 3
    s = ds[0]
    assert s["image"].shape == (3, 32, 96) and "image_right" in s and "image_aug" in s
    val = build_training_dataset(SimpleNamespace(dataset="synthetic", size=[32, 96], max_samples=2), split="val")
    torch.testing.assert_close(val[0]["image_aug"], val[0]["image"])  # no augmentation
    st = synthetic_sequence(n_frames=3, size=(32, 96), seed=8)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), st.read(i)[..., ::-1])
    (tmp_path / "intrinsics.txt").write_text("48 48 47.5 15.5\n")
    seqds = build_training_dataset(SimpleNamespace(dataset="sequence", root=str(tmp_path), size=[16, 48]))
    assert len(seqds) == 2 and seqds[0]["image"].shape == (3, 16, 48)
    with pytest.raises(InputError, match="unknown dataset"):
        build_training_dataset(SimpleNamespace(dataset="imagenet", root="x"))
    with pytest.raises(InputError, match="data.root is empty"):
        build_training_dataset(SimpleNamespace(dataset="kitti_raw", root=""))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        build_training_dataset(SimpleNamespace(dataset="sequence", root=str(tmp_path / "empty"), intrinsics="1,1,0,0"))
    with pytest.raises(InputError, match="no KITTI odometry sequences"):
        build_training_dataset(SimpleNamespace(dataset="kitti_odometry", root=str(tmp_path / "empty")))


def test_synthetic_dataset_specs(tmp_path):
    cfg = tf_cfg("data.sequences=[straight:1:3:0.5,forward_turn:0:4]", "data.max_samples=4")
    ds = build_trianflow_dataset(cfg)
    assert len(ds) == 4  # 2 + 3 pairs, truncated to 4
    s = ds[0]
    assert s["image"].shape == (3, 64, 64) and {"image_next", "K", "flow_gt", "depth_gt"} <= set(s)
    assert abs(float(s["pose_gt"][2, 3]) + 0.5) < 1e-5  # 'straight' at 0.5 m/frame: X2 = X1 - (0,0,0.5)
    for bad in ("nope:1", "straight:x", "straight:1:3:-1", "straight:1:2:3:4"):
        with pytest.raises(InputError, match="synthetic sequences are"):
            build_trianflow_dataset(tf_cfg(f"data.sequences=[{bad}]"))
    with pytest.raises(InputError, match="frame pairs"):
        build_trianflow_dataset(tf_cfg("data.frames=1"))
    with pytest.raises(InputError, match="not supported by the trianflow task"):
        build_trianflow_dataset(tf_cfg("data.dataset=stereo_pairs"))


def test_folder_datasets(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError):
        build_trianflow_dataset(tf_cfg("data.dataset=image_folder", f"data.root={empty}",
                                        "data.sequences=[]"))
    with pytest.raises(InputError, match="needs data.root"):
        build_trianflow_dataset(tf_cfg("data.dataset=kitti_odometry"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:04d}.png"), rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))
    (folder / "intrinsics.txt").write_text("50 50 40 24\n")
    ds = build_trianflow_dataset(tf_cfg("data.dataset=sequence", f"data.root={folder}",
                                         "data.augment=false", "data.sequences=[]"))
    assert len(ds) == 3
    s = ds[1]
    assert s["image"].shape == (3, 64, 64)
    assert abs(float(s["K"][0, 0]) - 50 * 64 / 80) < 1e-4  # intrinsics follow the resize


@pytest.mark.skipif(not KITTI.is_dir(), reason=f"shared KITTI snippet not found at {KITTI}")
@pytest.mark.skipif(not KITTI.is_dir(), reason=f"shared KITTI snippet not found at {KITTI}")
def test_kitti_odometry_dataset():
    ds = build_trianflow_dataset(tf_cfg("data.dataset=kitti_odometry", f"data.root={KITTI}",
                                         "data.sequences=[]", "data.max_samples=5"))
    assert len(ds) == 5
    s = ds[0]
    assert s["image"].shape == (3, 64, 64) and "pose_gt" in s


def test_stereo_folder_bad_input(tmp_path):
    left, right = tmp_path / "left", tmp_path / "right"
    left.mkdir()
    right.mkdir()
    img = (np.random.default_rng(0).random((40, 80, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(left / "a.png"), img)
    (tmp_path / "calib.txt").write_text("50.0 0.5\n")
    cfg = cfg_with("train.task=stereo", "data.dataset=stereo_folder", f"data.root={tmp_path}", "data.size=[32,64]")
    with pytest.raises(InputError, match="right image"):  # missing right image
        build_stereo_dataset(cfg)
    cv2.imwrite(str(right / "a.png"), img[:, :70])
    ds = build_stereo_dataset(cfg)
    with pytest.raises(InputError, match="one size"):  # left and right of different sizes
        ds[0]
    for bad in ("50.0 0.0", "50.0 -0.2"):  # zero / negative baseline
        (tmp_path / "calib.txt").write_text(bad + "\n")
        with pytest.raises(InputError, match="baseline"):
            build_stereo_dataset(cfg)



def test_middlebury_dataset_scale_and_flip_swaps_left_right():
    pytest.importorskip("skimage")
    try:
        ds = build_stereo_dataset(cfg_with("data.dataset=middlebury", "data.size=[100,148]", "data.max_samples=12",
                                           "data.color_jitter=false"))
    except InputError as exc:  # scikit-image without its data files
        pytest.skip(str(exc))
    assert isinstance(ds, MiddleburyDataset) and len(ds) == 12
    ref = ds.sample
    assert ref["image"].shape == (3, 100, 148) and ref["disp_gt"].max() > 5
    torch.manual_seed(0)
    flipped = plain = 0
    for i in range(12):
        s = ds[i]
        if torch.equal(s["image"], ref["image_right"].flip(-1)):
            flipped += 1
            assert torch.equal(s["image_right"], ref["image"].flip(-1))
            assert float(s["disp_gt"].abs().sum()) == 0.0  # GT of the other camera: unknown now
            assert float(s["baseline"]) > 0
        else:
            assert torch.equal(s["image"], ref["image"])
            plain += 1
    assert flipped > 0 and plain > 0
    assert ds.eval_mask.shape == (100, 148) and 0.5 < ds.eval_mask.mean() < 1.0


def test_kitti_odometry_stereo_dataset_has_neighbours():
    if not (KITTI / "image_1").is_dir():
        pytest.skip(f"{KITTI} not available")
    cfg = cfg_with("data.dataset=kitti_odometry", f"data.root={KITTI}", "data.size=[64,192]")
    s = build_stereo_dataset(cfg, frames=2)[0]
    assert {"image", "image_right", "image_next", "image_next_right", "baseline"} <= set(s)
    assert float(s["baseline"]) == pytest.approx(0.537, abs=0.01)
    assert s["image_right"].shape == s["image"].shape == (3, 64, 192)
