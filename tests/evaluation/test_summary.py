"""Tests for trianflow.evaluation.summary (the table of the end-to-end pipelines)."""

import json

import numpy as np
import torch

from trianflow.evaluation.summary import (evaluate_depth_predictions, results_markdown, sample_rgb, vo_errors,
                                          write_results)


def _straight(n, step=2.0):
    """A gently curving drive, ``step`` m per frame forward (a straight line cannot be Sim3-aligned)."""
    poses = np.tile(np.eye(4), (n, 1, 1))
    t = np.arange(n)
    poses[:, 2, 3] = step * t
    poses[:, 0, 3] = 0.05 * step * t**2 / max(n, 1)
    return poses


def test_vo_errors_long_and_short_paths():
    gt = _straight(80)  # 158 m: the 100 m KITTI segments fit
    row = vo_errors("s", gt * 1.0, gt)
    assert row["frames"] == 80 and 158.0 < row["path_m"] < 160.0 and row["ate"] < 1e-9
    assert row["t_err"] < 1e-6 and row["r_err"] < 1e-6 and row["note"] is None
    est = _straight(10, 0.5)  # monocular scale: Sim3 alignment removes it
    short = vo_errors("short", est, _straight(10))
    assert short["frames"] == 10 and short["ate"] < 1e-9 and short["t_err"] is None and "shorter" in short["note"]


def test_depth_predictions_and_table(tmp_path):
    gt = np.full((20, 30), 10.0)
    gt[:5] = 0.0  # unknown
    perfect = evaluate_depth_predictions([(gt * 3.0 + 1.0 * (gt == 0), torch.from_numpy(gt)[None])], crop="none")
    assert perfect["abs_rel"] < 1e-12 and perfect["a1"] == 1.0 and perfect["n_images"] == 1
    metric = evaluate_depth_predictions([(np.full((10, 15), 12.5), gt)], crop="none", median_scaling=False)
    assert abs(metric["abs_rel"] - 0.25) < 1e-9  # bilinear resize of a constant keeps it
    rows = [vo_errors("a", _straight(80), _straight(80)), vo_errors("b", _straight(10), _straight(10))]
    md = results_markdown(rows, metric, title="T")
    assert md.startswith("# T") and "| mean | 90 |" in md and "| b | 10 | 18.0 | n/a | n/a |" in md
    assert "metric" in md and "0.250" in md
    md_path, js_path = write_results(tmp_path / "out", rows, metric, meta={"k": 1})
    assert md_path.read_text().startswith("# Results")
    assert json.loads(js_path.read_text())["meta"] == {"k": 1}


def test_sample_rgb():
    img = torch.zeros(3, 2, 4)
    img[0] = 1.0
    rgb = sample_rgb({"image": img})
    assert rgb.shape == (2, 4, 3) and rgb.dtype == np.uint8 and rgb[0, 0].tolist() == [255, 0, 0]
    assert sample_rgb({"image": rgb}) is rgb
