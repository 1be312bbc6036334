"""Tests for `trianflow eval-depth` on generated prediction / ground-truth folders."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from trianflow.cli import main
from trianflow.io.depth import write_kitti_depth_png, write_kitti_disp_png

KEYS = {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "n_images"}
F, B = 720.0, 0.54


def _gt(seed, h=10, w=24):
    rng = np.random.default_rng(seed)
    gt = np.round(rng.uniform(3.0, 70.0, size=(h, w)) * 256) / 256  # exact in a KITTI PNG
    gt[rng.random((h, w)) < 0.4] = 0.0
    return gt


def _make(tmp_path, n=3, pred_fn=lambda g, i: np.where(g > 0, g, 10.0)):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    pred_dir.mkdir(parents=True, exist_ok=True)
    gts = []
    for i in range(n):
        g = _gt(i)
        gts.append(g)
        write_kitti_depth_png(gt_dir / f"{i:06d}_10.png", g)
        np.save(pred_dir / f"{i:06d}_10.npy", pred_fn(g, i).astype(np.float32))
    return pred_dir, gt_dir, gts


def _json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def test_json_keys_and_perfect_prediction(tmp_path, capsys):
    pred, gt, _ = _make(tmp_path)
    d = _json(capsys, ["eval-depth", str(pred), str(gt), "--json"])
    assert KEYS <= set(d) and d["n_images"] == 3 and d["n_skipped"] == 0
    assert d["abs_rel"] == pytest.approx(0.0, abs=1e-6) and d["a1"] == 1.0
    assert "median_scaling_ratio" not in d


def test_median_scaling_invariance_on_files(tmp_path, capsys):
    rng = np.random.default_rng(5)
    noise = rng.uniform(0.85, 1.15, size=(10, 24))
    pred, gt, _ = _make(tmp_path / "a", pred_fn=lambda g, i: np.where(g > 0, g, 10.0) * noise)
    pred5, _, _ = _make(tmp_path / "b", pred_fn=lambda g, i: np.where(g > 0, g, 10.0) * noise * 5.0)
    d1 = _json(capsys, ["eval-depth", str(pred), str(gt), "--median-scaling", "--json"])
    d5 = _json(capsys, ["eval-depth", str(pred5), str(gt), "--median-scaling", "--json"])
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"):
        assert d5[k] == pytest.approx(d1[k], rel=1e-5)
    assert d5["median_scaling_ratio"] == pytest.approx(d1["median_scaling_ratio"] / 5, rel=1e-5)
    assert d1["abs_rel"] > 0.01 and d1["ratio_std"] >= 0


def test_known_error_and_max_depth(tmp_path, capsys):
    # prediction 10 % too far everywhere: abs_rel = 0.1, a1 = 1, and rmse = 0.1 * rms(gt)
    pred, gt, gts = _make(tmp_path, pred_fn=lambda g, i: np.where(g > 0, g * 1.1, 1.0))
    d = _json(capsys, ["eval-depth", str(pred), str(gt), "--json", "--max-depth", "1000"])
    assert d["abs_rel"] == pytest.approx(0.1, rel=1e-5) and d["a1"] == 1.0
    expect_rmse = np.mean([0.1 * np.sqrt(np.mean(g[g > 0] ** 2)) for g in gts])
    assert d["rmse"] == pytest.approx(expect_rmse, rel=1e-5)
    # with a 20 m cap only GT < 20 m counts and predictions are clamped to 20 m
    d20 = _json(capsys, ["eval-depth", str(pred), str(gt), "--json", "--max-depth", "20"])
    exp = []
    for g in gts:
        v = g[(g > 1e-3) & (g < 20)]
        exp.append(np.mean(np.abs(np.minimum(v * 1.1, 20) - v) / v))
    assert d20["abs_rel"] == pytest.approx(np.mean(exp), rel=1e-5)


def test_disparity_gt_with_calib_and_vis(tmp_path, capsys):
    pred_dir, disp_dir = tmp_path / "pred", tmp_path / "disp_occ_0"  # "disp" in the name: read as disparity
    pred_dir.mkdir()
    rng = np.random.default_rng(2)
    disp = np.round(rng.uniform(5.0, 100.0, size=(10, 24)) * 256) / 256
    disp[rng.random(disp.shape) < 0.3] = 0
    write_kitti_disp_png(disp_dir / "000000_10.png", disp)
    (tmp_path / "calib.txt").write_text(f"{F} {B}\n")
    calib = ["--calib", str(tmp_path / "calib.txt")]
    depth = np.where(disp > 0, F * B / np.maximum(disp, 1e-6), 5.0)
    np.save(pred_dir / "000000_10.npy", depth)
    d = _json(capsys, ["eval-depth", str(pred_dir), str(disp_dir), *calib, "--json", "--vis", str(tmp_path / "vis")])
    assert d["n_images"] == 1 and d["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    vis = cv2.imread(str(tmp_path / "vis" / "000000_10.png"))[..., ::-1]
    assert vis.shape == (20, 24, 3)
    gt_px = vis[10:][(disp > 0) & (F * B / np.maximum(disp, 1e-6) < 80)]
    assert np.all(gt_px[:, 2] > 100) and np.all(gt_px[:, 0] < 50)  # zero error: blue end of the error map
    # the same GT read as depth (wrong kind) is far off: the kind matters
    d_wrong = _json(capsys, ["eval-depth", str(pred_dir), str(disp_dir), "--gt-kind", "depth", "--json"])
    assert d_wrong["abs_rel"] > 0.5


def test_half_width_disparity_prediction_is_rescaled(tmp_path, capsys):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    disp = np.full((10, 24), 36.0)
    disp[:, :3] = 0
    write_kitti_disp_png(gt_dir / "000000_10.png", disp)
    (tmp_path / "calib.txt").write_text(f"{F} {B}\n")
    # prediction at half resolution: 18 px there is 36 px at full width -> exact depth after the resize rule
    np.save(pred_dir / "000000_10.npy", np.full((5, 12), 18.0, np.float32))
    d = _json(capsys, ["eval-depth", str(pred_dir), str(gt_dir), "--gt-kind", "disp", "--pred-kind", "disp",
                       "--calib", str(tmp_path / "calib.txt"), "--json"])
    assert d["n_images"] == 1 and d["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_kitti_calib_folder_per_frame(tmp_path, capsys):
    disp_dir, pred_dir, calib_dir = tmp_path / "gt", tmp_path / "pred", tmp_path / "calib_cam_to_cam"
    pred_dir.mkdir()
    calib_dir.mkdir()
    disp = np.full((6, 8), 36.0)
    for i, f in enumerate((720.0, 700.0)):
        write_kitti_disp_png(disp_dir / f"{i:06d}_10.png", disp)
        np.save(pred_dir / f"{i:06d}_10.npy", np.full((6, 8), f * B / 36.0))
        p2 = [f, 0, 4, 0.06 * f, 0, f, 3, 0, 0, 0, 1, 0]
        p3 = [f, 0, 4, 0.06 * f - B * f, 0, f, 3, 0, 0, 0, 1, 0]
        (calib_dir / f"{i:06d}.txt").write_text("P_rect_02: " + " ".join(map(str, p2)) + "\nP_rect_03: "
                                                + " ".join(map(str, p3)) + "\n")
    d = _json(capsys, ["eval-depth", str(pred_dir), str(disp_dir), "--gt-kind", "disp", "--calib", str(calib_dir),
                       "--json"])
    assert d["n_images"] == 2 and d["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_table_output(tmp_path, capsys):
    pred, gt, _ = _make(tmp_path)
    assert main(["eval-depth", str(pred), str(gt), "--median-scaling", "--crop", "garg"]) == 0
    out = capsys.readouterr().out
    assert "abs_rel" in out and "d<1.25" in out and "median scaling ratio" in out and "crop garg" in out


def _err(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_bad_input_exit_codes(tmp_path, capsys):
    pred, gt, _ = _make(tmp_path)
    assert "not found" in _err(capsys, ["eval-depth", str(tmp_path / "nope"), str(gt)])
    other = tmp_path / "other"
    other.mkdir()
    np.save(other / "zzz.npy", np.ones((2, 2)))
    assert "no file stem" in _err(capsys, ["eval-depth", str(other), str(gt)])
    dd = tmp_path / "disp_noc_0"
    write_kitti_disp_png(dd / "000000_10.png", np.full((10, 24), 10.0))
    assert "--calib" in _err(capsys, ["eval-depth", str(pred), str(dd)])
    (tmp_path / "bad_calib.txt").write_text("720 0\n")
    assert "baseline" in _err(capsys, ["eval-depth", str(pred), str(dd), "--calib", str(tmp_path / "bad_calib.txt")])
    empty = tmp_path / "empty_gt"
    write_kitti_depth_png(empty / "000000_10.png", np.zeros((10, 24)))
    assert "no ground-truth pixel" in _err(capsys, ["eval-depth", str(pred), str(empty)])
    assert "min-depth" in _err(capsys, ["eval-depth", str(pred), str(gt), "--max-depth", "-1"])
    np.save(pred / "000000_10.npy", np.full((10, 24), np.nan, np.float32))
    assert "NaN" in _err(capsys, ["eval-depth", str(pred), str(gt)])
    with pytest.raises(SystemExit) as exc:
        main(["eval-depth", str(pred), str(gt), "--crop", "kitti"])
    assert exc.value.code == 2


def test_subprocess_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "trianflow", "eval-depth", str(tmp_path / "a"), str(tmp_path / "b")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
