"""Tests for trianflow.io.depth: KITTI depth/disparity PNGs, .npy maps, stereo calibration, colour maps."""

import cv2
import numpy as np
import pytest
import torch

from trianflow.errors import InputError
from trianflow.io.depth import (StereoCalib, depth_to_disparity,
                                disparity_to_depth, parse_stereo_calib, read_depth_stack, read_kitti_depth_png,
                                read_kitti_disp_png, read_npy_map, read_stereo_calib, write_depth_npy,
                                write_kitti_depth_png, write_kitti_disp_png)

# calib_cam_to_cam.txt lines of KITTI raw 2011_09_26 (P_rect_02 / P_rect_03, as published)
KITTI_CAM_TO_CAM = """calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
P_rect_00: 7.215377e+02 0.000000e+00 6.095593e+02 0.000000e+00 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
P_rect_01: 7.215377e+02 0.000000e+00 6.095593e+02 -3.875744e+02 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
S_rect_02: 1.242000e+03 3.750000e+02
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
"""


def test_kitti_depth_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 90.0, size=(7, 11)).astype(np.float32)
    depth[0, :3] = 0.0  # invalid
    depth[1, 0] = np.nan  # invalid
    depth[1, 1] = 1e-4  # tiny but valid: must not become 0
    depth[1, 2] = 300.0  # above the 16-bit range: clipped
    path = tmp_path / "d.png"
    write_kitti_depth_png(path, depth)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (7, 11)
    assert raw[3, 4] == int(np.round(depth[3, 4] * 256))
    back = read_kitti_depth_png(path)
    ok = np.isfinite(depth) & (depth > 1e-3) & (depth < 255)
    assert np.max(np.abs(back[ok] - depth[ok])) <= 0.5 / 256 + 1e-6
    assert np.all(back[0, :3] == 0) and back[1, 0] == 0
    assert back[1, 1] == pytest.approx(1 / 256)
    assert back[1, 2] == pytest.approx(65535 / 256)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_kitti_disp_png_round_trip_and_bad_files(tmp_path):
    disp = np.array([[0.0, 1.5, 10.25], [100.0, 0.0, 3.0]], np.float32)
    write_kitti_disp_png(tmp_path / "disp.png", disp)
    assert np.array_equal(read_kitti_disp_png(tmp_path / "disp.png"), disp)
    cv2.imwrite(str(tmp_path / "rgb8.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="16-bit"):
        read_kitti_depth_png(tmp_path / "rgb8.png")
    with pytest.raises(InputError, match="no such file"):
        read_kitti_disp_png(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read"):
        read_kitti_depth_png(tmp_path / "junk.png")
    with pytest.raises(InputError, match=".png"):
        write_kitti_depth_png(tmp_path / "x.jpg", disp)


def test_npy_maps_and_stacks(tmp_path):
    d = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4)
    np.save(tmp_path / "a.npy", d)
    m = read_npy_map(tmp_path / "a.npy")
    assert m.shape == (3, 4) and m.dtype == np.float32 and m[2, 3] == 11
    write_depth_npy(tmp_path / "b.npy", m * 2)
    assert np.array_equal(np.load(tmp_path / "b.npy"), m * 2)
    np.save(tmp_path / "s.npy", np.ones((5, 3, 4)))
    with pytest.raises(InputError, match=r"\(H,W\)"):
        read_npy_map(tmp_path / "s.npy")
    assert read_depth_stack(tmp_path / "s.npy").shape == (5, 3, 4)
    np.savez(tmp_path / "z.npz", data=np.ones((2, 3, 4)))
    assert read_depth_stack(tmp_path / "z.npz").shape == (2, 3, 4)
    np.save(tmp_path / "o.npy", np.array(["a", "b"]))
    with pytest.raises(InputError, match="numeric"):
        read_npy_map(tmp_path / "o.npy")


def test_kitti_calib_baseline_from_projection_matrices(tmp_path):
    (tmp_path / "calib_cam_to_cam.txt").write_text(KITTI_CAM_TO_CAM)
    cal = read_stereo_calib(tmp_path / "calib_cam_to_cam.txt")
    assert cal.focal == pytest.approx(721.5377)
    # (P2[0,3] - P3[0,3]) / f = (44.85728 + 339.5242) / 721.5377
    assert cal.baseline == pytest.approx((44.85728 + 339.5242) / 721.5377)
    assert cal.K[0, 2] == pytest.approx(609.5593) and cal.K[1, 2] == pytest.approx(172.854)
    grey = parse_stereo_calib(KITTI_CAM_TO_CAM, cameras=("P_rect_00", "P_rect_01"))
    assert grey.baseline == pytest.approx(387.5744 / 721.5377)
    p_style = "\n".join(f"P{i}: " + " ".join(str(v) for v in vals) for i, vals in enumerate(
        [[700, 0, 600, 0, 0, 700, 180, 0, 0, 0, 1, 0], [700, 0, 600, -378, 0, 700, 180, 0, 0, 0, 1, 0],
         [700, 0, 600, 42, 0, 700, 180, 0, 0, 0, 1, 0], [700, 0, 600, -336, 0, 700, 180, 0, 0, 0, 1, 0]]))
    assert parse_stereo_calib(p_style).baseline == pytest.approx((42 + 336) / 700)
    assert parse_stereo_calib(p_style, cameras=("P0", "P1")).baseline == pytest.approx(378 / 700)


def test_plain_and_middlebury_calib_and_bad_baselines(tmp_path):
    cal = parse_stereo_calib("721.5 0.54")
    assert (cal.focal, cal.baseline, cal.doffs, cal.K) == (721.5, 0.54, 0.0, None)
    mb = parse_stereo_calib("cam0=[3997.684 0 1176.728; 0 3997.684 1011.728; 0 0 1]\n"
                            "cam1=[3997.684 0 1307.839; 0 3997.684 1011.728; 0 0 1]\n"
                            "doffs=131.111\nbaseline=193.001\nwidth=2964\n")
    assert mb.focal == pytest.approx(3997.684) and mb.baseline == pytest.approx(0.193001)
    assert mb.doffs == pytest.approx(131.111)
    for text, msg in [("721.5 0", "baseline"), ("721.5 -0.54", "baseline"), ("0 0.5", "focal"),
                      ("1 2 3 4", "numbers"), ("hello: world", "no stereo calibration"), ("", "empty")]:
        with pytest.raises(InputError, match=msg):
            parse_stereo_calib(text)
    swapped = KITTI_CAM_TO_CAM.replace("P_rect_02", "TMP").replace("P_rect_03", "P_rect_02").replace("TMP", "P_rect_03")
    with pytest.raises(InputError, match="baseline must be > 0"):
        parse_stereo_calib(swapped)
    with pytest.raises(InputError, match="not found"):
        read_stereo_calib(tmp_path / "nope.txt")
    half = StereoCalib(700.0, 0.5, 10.0, np.array([[700.0, 0, 599.5], [0, 700, 179.5], [0, 0, 1]])).scaled(0.5)
    assert half.focal == 350 and half.doffs == 5 and half.K[0, 2] == pytest.approx(299.5)


def test_disparity_depth_conversion():
    disp = np.array([[0.0, 10.0, -2.0, np.inf], [50.0, 721.5377 * 0.54, 1.0, np.nan]])
    depth = disparity_to_depth(disp, 721.5377, 0.54)
    assert depth[0, 1] == pytest.approx(721.5377 * 0.54 / 10) and depth[1, 1] == pytest.approx(1.0)
    assert depth[0, 0] == 0 and depth[0, 2] == 0 and depth[0, 3] == 0 and depth[1, 3] == 0
    # Middlebury doffs: depth = f B / (d + doffs)
    assert disparity_to_depth(np.array([20.0]), 100.0, 0.2, 5.0)[0] == pytest.approx(100 * 0.2 / 25)
    t = disparity_to_depth(torch.tensor([[10.0, 0.0]]), 100.0, 0.5)
    assert isinstance(t, torch.Tensor) and t[0, 0] == pytest.approx(5.0) and t[0, 1] == 0
    back = depth_to_disparity(depth, 721.5377, 0.54)
    assert back[0, 1] == pytest.approx(10.0) and back[0, 0] == 0
    with pytest.raises(InputError):
        disparity_to_depth(disp, 721.5, 0.0)


