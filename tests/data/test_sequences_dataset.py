"""Tests of the generic pairs/triplets dataset and static-frame filtering."""

import cv2
import numpy as np
import pytest
import torch

from trianflow.data import open_sequence
from trianflow.data.sequences_dataset import SequencePairsDataset, frame_indices, frame_motion, motion_scores
from trianflow.data.synthetic import synthetic_sequence
from trianflow.data.transforms import ColorJitter
from trianflow.errors import InputError


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(n_frames=5, size=(32, 96), seed=7)


def test_frame_indices():
    assert frame_indices(5, 1, 1) == [0, 1, 2, 3, 4]
    assert frame_indices(5, 2, 1) == [0, 1, 2, 3]
    assert frame_indices(5, 3, 2) == [2]
    assert frame_indices(3, 3, 2) == []
    with pytest.raises(InputError):
        frame_indices(5, 4, 1)
    with pytest.raises(InputError):
        frame_indices(5, 2, 0)


def test_pairs_triplets_and_gt(seq):
    ds = SequencePairsDataset(seq, frames=3, stride=1, size=(16, 48))
    assert len(ds) == 3
    s = ds[1]  # centre frame 2
    assert s["frame_id"] == f"{seq.name}/2"
    assert s["image"].shape == (3, 16, 48) and s["image_prev_aug"].shape == (3, 16, 48)
    np.testing.assert_allclose(s["pose_gt"].numpy(), seq.relative_pose(2, 3), atol=1e-6)
    assert float(s["K"][0, 0]) == pytest.approx(seq.K[0, 0] / 2)
    full = SequencePairsDataset(seq, frames=2, stride=2)[0]
    expected = torch.from_numpy(seq.read(2)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(full["image_next"], expected)
    assert "image_right" not in full and "baseline" not in full
    jit = SequencePairsDataset(seq, frames=2, transform=ColorJitter(generator=torch.Generator().manual_seed(0)))[0]
    assert (jit["image_aug"] - jit["image"]).abs().mean() > 1e-3
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 16, 48) and batch["pose_gt"].shape == (3, 4, 4)
    single = SequencePairsDataset(seq, frames=1)
    assert len(single) == 5 and "image_next" not in single[4] and "pose_gt" not in single[4]
    with pytest.raises(InputError, match="no right camera"):
        SequencePairsDataset(seq, stereo=True)
    with pytest.raises(InputError, match="frame index 4"):
        SequencePairsDataset(seq, frames=2, indices=[1, 4])


def test_stereo_and_other_readers(tmp_path):
    st = synthetic_sequence(n_frames=3, size=(32, 96), seed=8, baseline=0.3)
    s = SequencePairsDataset(st, frames=2, stereo=True)[1]
    assert float(s["baseline"]) == pytest.approx(0.3)
    torch.testing.assert_close(s["image_next_right"], torch.from_numpy(st.read_right(2)).permute(2, 0, 1).float() / 255)
    # an image folder without ground truth
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), st.read(i)[..., ::-1])
    folder = open_sequence(tmp_path, intrinsics="48,48,47.5,15.5")
    s = SequencePairsDataset(folder, frames=2)[0]
    assert "pose_gt" not in s
    torch.testing.assert_close(s["image"], torch.from_numpy(st.read(0)).permute(2, 0, 1).float() / 255)


def test_static_frame_filtering(seq, tmp_path):
    a, b = seq.read(0), seq.read(1)
    assert frame_motion(a, a, "mad") == 0.0
    assert frame_motion(a, b, "mad") > 10
    # flow: a known horizontal shift, measured at reduced resolution and reported at full resolution
    big = cv2.resize(synthetic_sequence(n_frames=1, size=(96, 320), seed=1).read(0), (640, 192))
    shifted = np.roll(big, 8, axis=1)
    m = frame_motion(big, shifted, "flow")
    assert m == pytest.approx(8.0, abs=1.0)
    assert frame_motion(big, big, "flow") < 0.2
    with pytest.raises(InputError):
        frame_motion(a, b, "ssim")
    # a folder where frame 2 repeats frame 1 (the camera stopped)
    frames = [seq.read(0), seq.read(1), seq.read(1), seq.read(2)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), f[..., ::-1])
    folder = open_sequence(tmp_path, intrinsics="48,48,47.5,15.5")
    scores = motion_scores(folder.read, [(0, 1), (1, 2), (2, 3)], "mad")
    assert scores[1] == 0 and scores[0] > 5 and scores[2] > 5
    for method, thr in (("mad", 2.0), ("flow", 0.5)):
        ds = SequencePairsDataset(folder, frames=2, static_threshold=thr, static_method=method)
        assert ds.indices == [0, 2], method
