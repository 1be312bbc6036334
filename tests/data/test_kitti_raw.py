"""Tests of the KITTI raw training dataset on a generated KITTI-raw-like folder."""

import cv2
import numpy as np
import pytest
import torch

from trianflow.data.kitti_raw import KittiRawDataset, read_split, scan_kitti_raw
from trianflow.data.synthetic import synthetic_sequence
from trianflow.errors import InputError

DATE = "2011_09_26"
D1 = f"{DATE}/{DATE}_drive_0001_sync"
D2 = f"{DATE}/{DATE}_drive_0002_sync"
FX, CX, CY, TX2, TX3 = 60.0, 47.5, 15.5, 2.7, -29.7  # baseline (2.7 + 29.7) / 60 = 0.54


def _calib():
    def P(tx):
        return " ".join(f"{v:.6e}" for v in [FX, 0, CX, tx, 0, FX, CY, 0, 0, 0, 1, 0])

    return "\n".join([
        "calib_time: 09-Jan-2012 13:57:47",
        "corner_dist: 9.950000e-02",
        "S_02: 1.392000e+03 5.120000e+02",
        "K_02: 9.597910e+02 0.000000e+00 6.960217e+02 0.000000e+00 9.569251e+02 2.241806e+02 0 0 1",
        "D_02: -3.691481e-01 1.968681e-01 1.353473e-03 5.677587e-04 -6.770705e-02",
        "R_rect_02: 1 0 0 0 1 0 0 0 1",
        f"P_rect_00: {P(0.0)}",
        f"P_rect_02: {P(TX2)}",
        f"P_rect_03: {P(TX3)}",
    ]) + "\n"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti_raw")
    seq = synthetic_sequence(n_frames=4, size=(32, 96), seed=9, baseline=0.54)
    (root / DATE).mkdir()
    (root / DATE / "calib_cam_to_cam.txt").write_text(_calib())
    # drive 1: 5 frames, the camera stops between frames 2 and 3 (frame 3 repeats frame 2)
    order = [0, 1, 2, 2, 3]
    for cam, read in (("image_02", seq.read), ("image_03", seq.read_right)):
        d = root / D1 / cam / "data"
        d.mkdir(parents=True)
        for k, i in enumerate(order):
            cv2.imwrite(str(d / f"{k:010d}.png"), read(i)[..., ::-1])
    # drive 2: 4 frames of another size, no right camera
    d = root / D2 / "image_02" / "data"
    d.mkdir(parents=True)
    for k in range(4):
        cv2.imwrite(str(d / f"{k:010d}.png"), cv2.resize(seq.read(k), (100, 30))[..., ::-1])
    return root


def test_scan_and_all_frames(root):
    drives = scan_kitti_raw(root)
    assert sorted(drives) == [D1, D2]
    assert drives[D1].baseline == pytest.approx((TX2 - TX3) / FX)
    np.testing.assert_allclose(drives[D1].K("02"), [[FX, 0, CX], [0, FX, CY], [0, 0, 1]])
    ds = KittiRawDataset(root, frames=2, size=(16, 48))
    assert len(ds) == 4 + 3
    s = ds[0]
    assert s["frame_id"] == f"{D1}/0"
    assert s["image"].shape == (3, 16, 48) and s["image_next_aug"].shape == (3, 16, 48)
    assert float(s["K"][0, 2]) == pytest.approx((CX + 0.5) * 0.5 - 0.5)
    assert ds[6]["image"].shape == (3, 16, 48)  # the other drive, resized from 100x30
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=7)))
    assert batch["image"].shape == (7, 3, 16, 48)
    tri = KittiRawDataset(root, frames=3, stride=1, size=None)
    assert len(tri) == 3 + 2 and tri[0]["frame_id"] == f"{D1}/1"
    assert tri[0]["image_prev"].shape == (3, 32, 96)


def test_stereo_static_filter_and_split(root, tmp_path):
    st = KittiRawDataset(root, frames=2, stereo=True, size=None)
    assert len(st) == 4  # drive 2 has no right camera
    s = st[1]
    assert float(s["baseline"]) == pytest.approx(0.54)
    right = cv2.imread(str(root / D1 / "image_03" / "data" / "0000000001.png"))[..., ::-1]
    torch.testing.assert_close(s["image_right"], torch.from_numpy(right.copy()).permute(2, 0, 1).float() / 255)
    assert "image_next_right" in s
    for method, thr in (("mad", 2.0), ("flow", 0.3)):
        f = KittiRawDataset(root, frames=2, stereo=True, size=None, static_threshold=thr, static_method=method)
        assert [it[1] for it in f.items] == [0, 1, 3], method  # pair (2, 3) is static
    split = tmp_path / "train_files.txt"
    split.write_text(f"{D1} 1 l\n{D1} 1 r\n{D1} 4 l\n# comment\n{D2} 2\n")
    assert read_split(split)[1] == (D1, 1, "r")
    mono = KittiRawDataset(root, split=split, frames=2, size=None)
    assert [(n, i, c) for n, i, c in mono.items] == [(D1, 1, "02"), (D1, 1, "03"), (D2, 2, "02")]
    r = mono[1]
    right = cv2.imread(str(root / D1 / "image_03" / "data" / "0000000001.png"))[..., ::-1]
    torch.testing.assert_close(r["image"], torch.from_numpy(right.copy()).permute(2, 0, 1).float() / 255)
    stereo = KittiRawDataset(root, split=split, frames=2, stereo=True, size=None)
    assert len(stereo) == 1  # l/r collapse, frame 4 has no next frame, drive 2 has no right camera


def test_errors(root, tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        KittiRawDataset(tmp_path / "nothing")
    (tmp_path / "empty" / DATE).mkdir(parents=True)
    with pytest.raises(InputError, match="no KITTI raw drives"):
        KittiRawDataset(tmp_path / "empty")
    d = tmp_path / "nocalib" / D1 / "image_02" / "data"
    d.mkdir(parents=True)
    cv2.imwrite(str(d / "0000000000.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="calib_cam_to_cam.txt"):
        KittiRawDataset(tmp_path / "nocalib")
    bad = tmp_path / "split.txt"
    bad.write_text(f"{D1} one l\n")
    with pytest.raises(InputError, match=r"split.txt:1"):
        KittiRawDataset(root, split=bad)
    bad.write_text(f"{DATE}/{DATE}_drive_0099_sync 1 l\n")
    with pytest.raises(InputError, match="drive_0099"):
        KittiRawDataset(root, split=bad)
    bad.write_text(f"{D1} 4 l\n")
    with pytest.raises(InputError, match="no training samples"):
        KittiRawDataset(root, split=bad, frames=2)
