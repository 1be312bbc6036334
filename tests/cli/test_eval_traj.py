"""Tests for ``trianflow eval-traj`` (through trianflow.cli.main) and trianflow.viz.plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from trianflow.cli import main
from trianflow.errors import InputError
from trianflow.evaluation.trajectory import evaluate_trajectory
from trianflow.io.trajectory import write_kitti, write_tum

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "trajectories"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared trajectories not found at {DATA}")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def drive(n: int = 1200, seed: int = 0) -> np.ndarray:
    """A KITTI-like camera path (x-z plane, y down), 1 m per frame, with turns: ~n metres."""
    P = np.tile(np.eye(4), (n, 1, 1))
    rng = np.random.default_rng(seed)
    for i in range(1, n):
        a = 0.03 * math.sin(i / 60.0)
        T = np.eye(4)
        T[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
        T[:3, 3] = [0.0, 0.01 * rng.normal(), 1.0]
        P[i] = P[i - 1] @ T
    return P


@pytest.fixture
def kitti_pair(tmp_path):
    gt = drive()
    est = gt.copy()
    rng = np.random.default_rng(1)
    est[:, :3, 3] = 0.5 * (est[:, :3, 3] + rng.normal(scale=0.2, size=(len(est), 3)))  # monocular scale 0.5
    write_kitti(tmp_path / "gt.txt", gt)
    write_kitti(tmp_path / "est.txt", est)
    return tmp_path / "est.txt", tmp_path / "gt.txt"


def run_cli(capsys, *argv):
    rc = main(["eval-traj", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clean_error(rc, out, err, *fragments):
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_json_output(capsys, kitti_pair):
    est, gt = kitti_pair
    rc, out, err = run_cli(capsys, est, gt, "--json")
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object
    d = json.loads(lines[0])
    for key in ("ape_rmse", "ape_mean", "ape_median", "ape_max", "rpe_trans_rmse", "rpe_rot_rmse", "kitti_t_err",
                "kitti_r_err", "align", "scale", "n_poses", "path_length"):
        assert key in d, key
    m = evaluate_trajectory(est, gt)
    assert d["align"] == "sim3"  # default for monocular
    assert d["scale"] == pytest.approx(2.0, rel=0.01) and d["scale"] == m.scale
    assert d["ape_rmse"] == m.ape_rmse and d["rpe_rot_rmse"] == m.rpe_rot_rmse
    assert d["kitti_t_err"] == m.kitti_t_err and d["kitti_t_err"] > 0
    assert d["n_poses"] == 1200 and d["path_length"] == pytest.approx(m.path_length)


def test_table_output_and_options(capsys, kitti_pair):
    est, gt = kitti_pair
    rc, out, _ = run_cli(capsys, est, gt, "--align", "se3", "--delta", "10", "--all-pairs")
    assert rc == 0
    m = evaluate_trajectory(est, gt, align="se3", rpe_delta=10, rpe_all_pairs=True)
    assert "APE (m)" in out and "RPE rot (deg)" in out and "KITTI t_err" in out
    assert f"{m.ape_rmse:.6g}" in out and f"{m.kitti_t_err:.4f} %" in out
    assert "alignment        se3" in out and "delta 10 frames, all pairs" in out
    rc, out, _ = run_cli(capsys, est, gt, "--align", "none", "--json", "--format", "kitti")
    d = json.loads(out)
    assert d["align"] == "none" and d["scale"] == 1.0 and d["ape_rmse"] > m.ape_rmse


def test_plot_written(capsys, kitti_pair, tmp_path):
    est, gt = kitti_pair
    out_png = tmp_path / "plots" / "traj.png"
    rc, out, _ = run_cli(capsys, est, gt, "--json", "--plot", out_png)
    assert rc == 0
    assert json.loads(out)["plot"] == str(out_png)
    data = out_png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert [p.name for p in out_png.parent.iterdir()] == ["traj.png"]  # no temp files left


@needs_data
def test_tum_pair_json_with_short_gt(capsys):
    rc, out, _ = run_cli(
        capsys, DATA / "freiburg1_xyz-rgbdslam.txt", DATA / "freiburg1_xyz-groundtruth.txt", "--json"
    )
    assert rc == 0
    d = json.loads(out)
    assert d["kitti_t_err"] is None and d["kitti_r_err"] is None and "shorter" in d["kitti_note"]
    assert d["association"] == "timestamps" and d["n_poses"] == 785
    assert d["ape_rmse"] == pytest.approx(0.0133894, rel=1e-5)  # evo_ape tum GT EST -as


def test_missing_file(capsys, kitti_pair, tmp_path):
    _, gt = kitti_pair
    plot = tmp_path / "never.png"
    rc, out, err = run_cli(capsys, tmp_path / "nothere.txt", gt, "--plot", plot)
    assert_clean_error(rc, out, err, "nothere.txt", "does not exist")
    assert not plot.exists()


def test_malformed_file(capsys, kitti_pair, tmp_path):
    _, gt = kitti_pair
    bad = tmp_path / "broken.txt"
    bad.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n")
    plot = tmp_path / "never.png"
    rc, out, err = run_cli(capsys, bad, gt, "--plot", plot)
    assert_clean_error(rc, out, err, "broken.txt", "line 2")
    assert not plot.exists()


def test_no_overlapping_timestamps(capsys, tmp_path):
    P = drive(50)
    write_tum(tmp_path / "est.tum", 10.0 + 0.1 * np.arange(50), P)
    write_tum(tmp_path / "gt.tum", 900.0 + 0.1 * np.arange(50), P)
    plot = tmp_path / "never.png"
    rc, out, err = run_cli(capsys, tmp_path / "est.tum", tmp_path / "gt.tum", "--plot", plot, "--json")
    assert_clean_error(rc, out, err, "est.tum", "gt.tum", "--max-diff", "same sequence")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["est.tum", "gt.tum"]


def test_estimate_longer_than_gt(capsys, tmp_path):
    write_kitti(tmp_path / "gt.txt", drive(40))
    write_kitti(tmp_path / "est.txt", drive(45))
    rc, out, err = run_cli(capsys, tmp_path / "est.txt", tmp_path / "gt.txt", "--plot", tmp_path / "p.png")
    assert_clean_error(rc, out, err, "est.txt", "45 poses", "gt.txt", "40")
    assert not (tmp_path / "p.png").exists()


def test_gt_longer_is_noted(capsys, tmp_path):
    write_kitti(tmp_path / "gt.txt", drive(60))
    write_kitti(tmp_path / "est.txt", drive(50))
    rc, out, _ = run_cli(capsys, tmp_path / "est.txt", tmp_path / "gt.txt")
    assert rc == 0 and "first 50 GT poses" in out


def test_bad_plot_extension(capsys, kitti_pair, tmp_path):
    est, gt = kitti_pair
    rc, out, err = run_cli(capsys, est, gt, "--plot", tmp_path / "plot.xyz")
    assert_clean_error(rc, out, err, "plot.xyz", ".png")
    assert not (tmp_path / "plot.xyz").exists()


def test_top_view_axes_and_report_helper(tmp_path):
    from trianflow.viz.plots import check_figure_path, plot_trajectory_report, top_view_axes

    gt = drive(300)
    assert top_view_axes(gt[:, :3, 3]) == (0, 2)  # KITTI camera frame: x-z plane
    xy = np.stack([np.linspace(0, 5, 10), np.linspace(0, 3, 10), np.zeros(10)], 1)
    assert top_view_axes(xy) == (0, 1)
    out = plot_trajectory_report(gt[:, :3, 3], gt[:, :3, 3] + 0.1, np.full(300, 0.17), tmp_path / "r.png", "t")
    assert out.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(InputError, match="same non-zero length"):
        plot_trajectory_report(gt[:, :3, 3], gt[:10, :3, 3], np.zeros(300), tmp_path / "x.png")
    with pytest.raises(InputError, match="unknown image extension"):
        check_figure_path(tmp_path / "noext")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png"]


def test_plot_parent_is_a_file(capsys, kitti_pair, tmp_path):
    est, gt = kitti_pair
    (tmp_path / "afile").write_text("x")
    rc, out, err = run_cli(capsys, est, gt, "--plot", tmp_path / "afile" / "p.png")
    assert_clean_error(rc, out, err, "afile", "not a folder")
