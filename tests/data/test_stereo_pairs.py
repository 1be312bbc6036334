"""Tests for trianflow.data.stereo_pairs on generated KITTI/folder layouts and the Middlebury pair."""

import cv2
import numpy as np
import pytest
import torch

from trianflow.data.stereo_pairs import (KittiStereoDataset, StereoFolderDataset, downscale_disparity,
                                         kitti_stereo_year, middlebury_motorcycle, stereo_sample)
from trianflow.errors import InputError
from trianflow.io.depth import write_kitti_disp_png

H, W = 12, 20
F, CX, CY, B = 100.0, 9.5, 5.5, 0.5


def _p_row(fx, cx, cy, tx):
    return [fx, 0, cx, tx, 0, fx, cy, 0, 0, 0, 1, 0]


def _fmt(key, vals, sep=": "):
    return key + sep + " ".join(f"{v:.6e}" for v in vals)


def _pair(seed, d=3):
    """A random left image and the right image shifted so that left[y,x] = right[y,x-d]."""
    rng = np.random.default_rng(seed)
    left = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)
    right = np.zeros_like(left)
    right[:, : W - d] = left[:, d:]
    disp = np.full((H, W), float(d), np.float32)
    disp[:, :2] = 0  # unknown
    return left, right, disp


def _imwrite_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def _make_kitti2015(root, n=2, gt="disp_occ_0"):
    tr = root / "training"
    for i in range(n):
        left, right, disp = _pair(i, d=3 + i)
        _imwrite_rgb(tr / "image_2" / f"{i:06d}_10.png", left)
        _imwrite_rgb(tr / "image_2" / f"{i:06d}_11.png", left)  # second frame: not a stereo GT frame
        _imwrite_rgb(tr / "image_3" / f"{i:06d}_10.png", right)
        write_kitti_disp_png(tr / gt / f"{i:06d}_10.png", disp)
        (tr / "calib_cam_to_cam").mkdir(parents=True, exist_ok=True)
        (tr / "calib_cam_to_cam" / f"{i:06d}.txt").write_text(
            _fmt("P_rect_02", _p_row(F, CX, CY, 0.1 * F)) + "\n" + _fmt("P_rect_03", _p_row(F, CX, CY, 0.1 * F - B * F)) + "\n")
    return root


def test_kitti2015_samples(tmp_path):
    ds = KittiStereoDataset(_make_kitti2015(tmp_path))
    assert len(ds) == 2
    s = ds[1]
    assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
    assert s["image_right"].shape == (3, H, W) and float(s["image"].max()) <= 1.0
    assert s["K"].shape == (3, 3) and float(s["K"][0, 0]) == pytest.approx(F) and float(s["K"][0, 2]) == pytest.approx(CX)
    assert float(s["baseline"]) == pytest.approx(B)
    assert s["disp_gt"].shape == (1, H, W) and float(s["disp_gt"][0, 5, 10]) == 4.0
    assert float(s["depth_gt"][0, 5, 10]) == pytest.approx(F * B / 4.0)
    assert float(s["disp_gt"][0, 5, 0]) == 0 and float(s["depth_gt"][0, 5, 0]) == 0
    assert s["frame_id"] == "kitti2015/000001_10"
    # the GT disparity really matches the images: left[y,x] == right[y,x-d]
    left, right = s["image"], s["image_right"]
    assert torch.allclose(left[:, :, 4:], right[:, :, :-4])
    # noc GT folder missing -> no GT (e.g. testing split style): samples without disp_gt
    ds_noc = KittiStereoDataset(tmp_path, occ=False)
    assert not ds_noc.has_gt and "disp_gt" not in ds_noc[0]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, H, W) and batch["baseline"].shape == (2,)


def test_kitti2015_resize_scales_disparity_and_K(tmp_path):
    ds = KittiStereoDataset(_make_kitti2015(tmp_path), size=(6, 10))
    s = ds[0]
    assert s["image"].shape == (3, 6, 10)
    assert float(s["K"][0, 0]) == pytest.approx(F / 2) and float(s["K"][0, 2]) == pytest.approx((CX + 0.5) / 2 - 0.5)
    assert float(s["disp_gt"][0, 3, 5]) == pytest.approx(1.5)  # 3 px at full width -> 1.5 px at half width
    assert float(s["depth_gt"][0, 3, 5]) == pytest.approx(F * B / 3.0)  # depth unchanged


def test_kitti_bad_input(tmp_path):
    root = _make_kitti2015(tmp_path / "k")
    (root / "training" / "image_3" / "000001_10.png").unlink()
    with pytest.raises(InputError, match="right image"):
        KittiStereoDataset(root)
    root = _make_kitti2015(tmp_path / "k2")
    _imwrite_rgb(root / "training" / "image_3" / "000000_10.png", np.zeros((H, W + 2, 3), np.uint8))
    with pytest.raises(InputError, match="one size"):
        KittiStereoDataset(root)[0]
    root = _make_kitti2015(tmp_path / "k3")
    (root / "training" / "calib_cam_to_cam" / "000000.txt").write_text(
        _fmt("P_rect_02", _p_row(F, CX, CY, 0)) + "\n" + _fmt("P_rect_03", _p_row(F, CX, CY, 0)) + "\n")
    with pytest.raises(InputError, match="baseline must be > 0"):
        KittiStereoDataset(root)[0]
    with pytest.raises(InputError, match="not found"):
        KittiStereoDataset(tmp_path / "missing")
    with pytest.raises(InputError, match="colored_0"):
        KittiStereoDataset(root, year=2012)  # a 2015 layout is not a 2012 one
    with pytest.raises(InputError, match="year"):
        KittiStereoDataset(root, year=2013)


def test_kitti2012_colour_and_grey(tmp_path):
    tr = tmp_path / "training"
    left, right, disp = _pair(0, d=5)
    for a, b in (("colored_0", "colored_1"), ("image_0", "image_1")):
        _imwrite_rgb(tr / a / "000000_10.png", left)
        _imwrite_rgb(tr / b / "000000_10.png", right)
    write_kitti_disp_png(tr / "disp_noc" / "000000_10.png", disp)
    (tr / "calib").mkdir()
    (tr / "calib" / "000000.txt").write_text("\n".join([
        _fmt("P0", _p_row(F, CX, CY, 0)), _fmt("P1", _p_row(F, CX, CY, -0.54 * F)),
        _fmt("P2", _p_row(F, CX, CY, 0.06 * F)), _fmt("P3", _p_row(F, CX, CY, 0.06 * F - 0.53 * F))]) + "\n")
    colour = KittiStereoDataset(tmp_path, year=2012, occ=False)
    grey = KittiStereoDataset(tmp_path / "training", year=2012, occ=False, color=False)
    assert float(colour[0]["baseline"]) == pytest.approx(0.53) and float(grey[0]["baseline"]) == pytest.approx(0.54)
    assert float(colour[0]["disp_gt"][0, 3, 8]) == 5.0
    with pytest.raises(InputError, match="disp_occ"):
        # occ GT folder absent is fine (no GT); a missing GT *file* in an existing folder is an error
        (tr / "disp_occ").mkdir()
        KittiStereoDataset(tmp_path, year=2012)


def test_stereo_folder_layouts(tmp_path):
    left, right, disp = _pair(3, d=2)
    a = tmp_path / "a"
    _imwrite_rgb(a / "left" / "f1.png", left)
    _imwrite_rgb(a / "right" / "f1.png", right)
    (a / "disp").mkdir()
    np.save(a / "disp" / "f1.npy", disp)
    ds = StereoFolderDataset(a, focal=F, baseline=0.25)
    s = ds[0]
    assert float(s["K"][0, 2]) == pytest.approx((W - 1) / 2) and float(s["K"][1, 2]) == pytest.approx((H - 1) / 2)
    assert float(s["depth_gt"][0, 4, 10]) == pytest.approx(F * 0.25 / 2)
    b = tmp_path / "b"
    _imwrite_rgb(b / "x_left.png", left)
    _imwrite_rgb(b / "x_right.png", right)
    (b / "calib.txt").write_text("80 0.3\n")
    s = StereoFolderDataset(b)[0]
    assert "disp_gt" not in s and float(s["baseline"]) == pytest.approx(0.3) and float(s["K"][0, 0]) == 80
    for kw, msg in [(dict(focal=F, baseline=0.0), "baseline"), (dict(focal=F, baseline=-1.0), "baseline"),
                    (dict(focal=-1.0, baseline=0.2), "focal"), (dict(focal=F), "both")]:
        with pytest.raises(InputError, match=msg):
            StereoFolderDataset(a, **kw)
    (b / "y_left.png").write_bytes((b / "x_left.png").read_bytes())
    with pytest.raises(InputError, match="y_right"):
        StereoFolderDataset(b)
    with pytest.raises(InputError, match="no stereo pairs"):
        (tmp_path / "c").mkdir()
        StereoFolderDataset(tmp_path / "c", focal=F, baseline=0.1)


def test_stereo_sample_checks():
    left, right, disp = _pair(0)
    with pytest.raises(InputError, match="one size"):
        stereo_sample(left, right[:, :-1], np.eye(3), 0.5)
    with pytest.raises(InputError, match="baseline"):
        stereo_sample(left, right, np.eye(3), 0.0)
    with pytest.raises(InputError, match="GT disparity"):
        stereo_sample(left, right, np.eye(3), 0.5, disp[:, :-1])
    s = stereo_sample(left[..., 0], right[..., 0], np.eye(3), 0.5)  # grey -> 3 channels
    assert s["image"].shape == (3, H, W) and torch.equal(s["image"][0], s["image"][2])


def test_downscale_disparity_scales_values_and_keeps_invalid_out():
    d = np.full((8, 8), 6.0)
    d[0, 0] = np.inf
    d[7, 7] = np.nan
    small, valid = downscale_disparity(d, 0.5)
    assert small.shape == (4, 4) and np.allclose(small[valid], 3.0)
    assert not valid[0, 0] and not valid[3, 3] and valid.sum() == 14 and small[0, 0] == 0
    with pytest.raises(InputError):
        downscale_disparity(d, 1.5)


def _middlebury_or_skip(scale):
    try:
        return middlebury_motorcycle(scale)
    except InputError as exc:
        pytest.skip(f"scikit-image stereo_motorcycle data unavailable: {exc}")


def test_middlebury_motorcycle_gt_aligns_the_pair():
    m = _middlebury_or_skip(0.25)
    h, w = m["disp"].shape
    assert (h, w) == (125, 185) and m["left"].shape == (h, w, 3) and m["left"].dtype == np.uint8
    assert m["baseline"] == pytest.approx(0.193001) and m["K"][0, 0] == pytest.approx(994.978 * 185 / 741)
    assert 0.5 < m["valid"].mean() < 1.0 and np.all(m["disp"][~m["valid"]] == 0)
    L, R = m["left"].astype(np.float32).mean(2), m["right"].astype(np.float32).mean(2)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)

    def residual(disp):
        mapx = xs - disp
        warped = cv2.remap(R, mapx, ys, cv2.INTER_LINEAR)
        v = m["valid"] & (mapx > 0) & (mapx < w - 1)
        return float(np.abs(warped - L)[v].mean())

    good = residual(m["disp"])
    # the GT disparity explains the pair far better than no disparity or unscaled (4x) disparity
    assert good < 0.4 * residual(np.zeros_like(m["disp"]))
    assert good < 0.4 * residual(m["disp"] * 4)
    # depth (f B / (d + doffs)) is invariant to the downscaling: compare with full resolution
    full = _middlebury_or_skip(1.0)
    ok = m["valid"] & full["valid"][1::4, 1::4][:h, :w]
    rel = np.abs(m["depth"][ok] - full["depth"][1::4, 1::4][:h, :w][ok]) / full["depth"][1::4, 1::4][:h, :w][ok]
    assert np.median(rel) < 0.02
    assert 1.0 < np.median(m["depth"][m["valid"]]) < 5.0  # a motorcycle a few metres away
    s = stereo_sample(m["left"], m["right"], m["K"], m["baseline"], m["disp"], "middlebury/motorcycle",
                      doffs=m["doffs"])
    assert torch.allclose(s["depth_gt"][0], torch.from_numpy(m["depth"]))


def test_kitti2012_one_calib_file_for_all_pairs(tmp_path):
    left, right, disp = _pair(0, d=5)
    for i in range(2):
        _imwrite_rgb(tmp_path / "colored_0" / f"00000{i}_10.png", left)
        _imwrite_rgb(tmp_path / "colored_1" / f"00000{i}_10.png", right)
        write_kitti_disp_png(tmp_path / "disp_occ" / f"00000{i}_10.png", disp)
    with pytest.raises(InputError, match="nor one calib.txt"):
        KittiStereoDataset(tmp_path, year=2012)
    (tmp_path / "calib.txt").write_text("\n".join([
        _fmt("P2", _p_row(F, CX, CY, 0.0)), _fmt("P3", _p_row(F, CX, CY, -0.5 * F))]) + "\n")
    ds = KittiStereoDataset(tmp_path, year=2012)
    assert kitti_stereo_year(tmp_path) == 2012 and len(ds) == 2
    assert float(ds[1]["baseline"]) == pytest.approx(0.5) and float(ds[1]["disp_gt"][0, 3, 8]) == 5.0
