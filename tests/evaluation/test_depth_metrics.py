"""Tests for trianflow.evaluation.depth_metrics."""

import math

import numpy as np
import pytest
import torch

from trianflow.errors import InputError
from trianflow.evaluation.depth_metrics import (DEPTH_METRIC_KEYS, EmptyMaskError, compute_depth_metrics,
                                                crop_mask, depth_error_image, eigen_crop_mask,
                                                evaluate_depth_folder, evaluate_depth_pair, garg_crop_mask,
                                                match_depth_files, resize_prediction)
from trianflow.io.depth import write_depth_npy, write_kitti_depth_png


def test_metrics_equal_hand_computed_values():
    # gt = 1, 2, 4, 8 and pred = 2, 2, 5, 4; the fifth pixel is masked out (wild values).
    gt = np.array([[1.0, 2.0, 4.0], [8.0, 3.0, 1.0]])
    pred = np.array([[2.0, 2.0, 5.0], [4.0, 100.0, 1.0]])
    mask = np.array([[True, True, True], [True, False, False]])
    m = compute_depth_metrics(pred, gt, mask)
    # |p-g|/g = 1, 0, 1/4, 1/2
    assert m["abs_rel"] == pytest.approx((1 + 0 + 0.25 + 0.5) / 4)
    # (p-g)^2/g = 1, 0, 1/4, 16/8
    assert m["sq_rel"] == pytest.approx((1 + 0 + 0.25 + 2) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1 + 16) / 4))
    ln2, ln125 = math.log(2.0), math.log(1.25)
    assert m["rmse_log"] == pytest.approx(math.sqrt((ln2**2 + 0 + ln125**2 + ln2**2) / 4))
    # max(p/g, g/p) = 2, 1, 1.25, 2: only 1 is < 1.25 (strict), 1 and 1.25 are < 1.5625, 2 > 1.953
    assert m["a1"] == pytest.approx(0.25)
    assert m["a2"] == pytest.approx(0.5)
    assert m["a3"] == pytest.approx(0.5)
    assert set(m) == set(DEPTH_METRIC_KEYS)


def test_metrics_accept_torch_and_perfect_prediction():
    gt = torch.rand(4, 5) * 10 + 1
    m = compute_depth_metrics(gt.clone(), gt)
    assert m["abs_rel"] == 0 and m["rmse"] == 0 and m["a1"] == 1.0


def test_metrics_reject_empty_and_nonpositive():
    gt = np.ones((2, 2))
    with pytest.raises(EmptyMaskError):
        compute_depth_metrics(gt, gt, np.zeros((2, 2), bool))
    with pytest.raises(InputError, match="> 0"):
        compute_depth_metrics(np.zeros((2, 2)), gt)
    with pytest.raises(InputError, match="shape"):
        compute_depth_metrics(np.ones((2, 3)), gt)


def test_crop_masks_match_hand_computed_bounds():
    h, w = 375, 1242
    g = garg_crop_mask(h, w)
    # 0.40810811*375 = 153.04, 0.99189189*375 = 371.96, 0.03594771*1242 = 44.65, 0.96405229*1242 = 1197.35
    rows, cols = np.where(g.any(1))[0], np.where(g.any(0))[0]
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153, 371, 44, 1197)
    assert g.sum() == (371 - 153) * (1197 - 44)
    e = eigen_crop_mask(h, w)
    # 0.3324324*375 = 124.66, 0.91351351*375 = 342.57
    rows, cols = np.where(e.any(1))[0], np.where(e.any(0))[0]
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (124, 342, 44, 1197)
    assert crop_mask("none", 3, 4).all() and crop_mask(None, 3, 4).shape == (3, 4)
    with pytest.raises(InputError, match="unknown crop"):
        crop_mask("kitti", 3, 4)


def _scene(h=12, w=16, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(2.0, 60.0, size=(h, w))
    gt[rng.random((h, w)) < 0.3] = 0.0  # sparse GT
    return gt


def test_median_scaling_invariance_and_ratio():
    gt = _scene()
    rng = np.random.default_rng(1)
    pred = np.where(gt > 0, gt, 10.0) * rng.uniform(0.8, 1.25, size=gt.shape)
    m1, r1 = evaluate_depth_pair(pred, gt, median_scaling=True)
    m5, r5 = evaluate_depth_pair(pred * 5.0, gt, median_scaling=True)
    for k in DEPTH_METRIC_KEYS:
        assert m5[k] == pytest.approx(m1[k], rel=1e-9)
    assert r5 == pytest.approx(r1 / 5.0)
    # without median scaling the scaled prediction is much worse and no ratio is returned
    m5n, rn = evaluate_depth_pair(pred * 5.0, gt)
    assert rn is None and m5n["abs_rel"] > m1["abs_rel"] + 1.0  # (clamped at 80 m, else ~4)
    # a prediction that is exactly gt/3 on valid pixels: ratio 3, zero error
    m, r = evaluate_depth_pair(np.where(gt > 0, gt / 3.0, 1.0), gt, median_scaling=True)
    assert r == pytest.approx(3.0) and m["abs_rel"] == pytest.approx(0.0, abs=1e-12) and m["a1"] == 1.0


def test_depth_cap_min_and_clamp():
    gt = np.array([[5.0, 90.0, 0.0, 10.0]])
    pred = np.array([[5.0, 10.0, 3.0, 200.0]])
    m, _ = evaluate_depth_pair(pred, gt, max_depth=80.0)
    # evaluated: gt 5 (pred 5) and gt 10 (pred clamped 200 -> 80); gt 90 is above the cap
    assert m["n_pixels"] == 2
    assert m["abs_rel"] == pytest.approx((0 + 70 / 10) / 2)
    # +inf prediction is clamped to max_depth, <= 0 to min_depth
    m2, _ = evaluate_depth_pair(np.array([[np.inf, -1.0]]), np.array([[40.0, 2.0]]), max_depth=80.0)
    assert m2["abs_rel"] == pytest.approx(((80 - 40) / 40 + (2 - 1e-3) / 2) / 2)
    with pytest.raises(InputError, match="NaN"):
        evaluate_depth_pair(np.array([[np.nan, 1.0]]), np.array([[4.0, 2.0]]))
    with pytest.raises(InputError, match="min_depth"):
        evaluate_depth_pair(pred, gt, min_depth=5, max_depth=1)


def test_empty_mask_raises():
    with pytest.raises(EmptyMaskError):
        evaluate_depth_pair(np.ones((4, 4)), np.zeros((4, 4)))
    with pytest.raises(EmptyMaskError):
        evaluate_depth_pair(np.ones((4, 4)), np.full((4, 4), 100.0), max_depth=80)
    gt = np.zeros((40, 40))
    gt[:5] = 10.0  # only in the top rows: removed by the Garg crop
    with pytest.raises(EmptyMaskError):
        evaluate_depth_pair(np.ones((40, 40)), gt, crop="garg")


def test_resize_rule_bilinear_and_disparity_scaling():
    small = np.full((5, 10), 7.0, np.float32)
    assert np.allclose(resize_prediction(small, (10, 20)), 7.0)
    assert np.allclose(resize_prediction(small, (10, 20), kind="disp"), 14.0)
    ramp = np.tile(np.arange(4, dtype=np.float32), (2, 1))
    up = resize_prediction(ramp, (2, 8))
    assert up[0, 0] == 0 and up[0, -1] == 3 and np.all(np.diff(up[0]) >= 0)
    # a half-resolution prediction of a constant-scale scene evaluates like the full one
    gt = np.full((10, 20), 20.0)
    m, _ = evaluate_depth_pair(np.full((5, 10), 10.0), gt, median_scaling=True)
    assert m["abs_rel"] == pytest.approx(0.0) and m["n_pixels"] == 200


def test_depth_error_image_shape_and_colours():
    gt = _scene(10, 14)
    img = depth_error_image(np.where(gt > 0, gt, 5.0), gt)
    assert img.shape == (20, 14, 3) and img.dtype == np.uint8
    # perfect prediction: error 0 -> the first colour of jet (dark blue) at GT pixels of the bottom half
    bottom = img[10:]
    assert np.all(bottom[gt > 0][:, 2] > 100) and np.all(bottom[gt > 0][:, 0] < 50)


def _write_set(folder, gts, fmt):
    folder.mkdir(parents=True, exist_ok=True)
    for i, g in enumerate(gts):
        name = f"{i:06d}_10"
        if fmt == "png":
            write_kitti_depth_png(folder / f"{name}.png", g)
        else:
            write_depth_npy(folder / f"{name}.npy", g)


def test_folder_evaluation_ratio_spread_and_skips(tmp_path):
    gts = [_scene(seed=s) for s in range(3)]
    gts[0] = np.round(gts[0] * 256) / 256  # exactly representable in a KITTI PNG
    gts[1] = np.round(gts[1] * 256) / 256
    gts[2] = np.zeros_like(gts[2])  # empty GT: skipped
    _write_set(tmp_path / "gt", gts, "png")
    scales = [2.0, 4.0, 1.0]
    preds = [np.where(g > 0, g / s, 1.0) for g, s in zip(gts, scales)]
    _write_set(tmp_path / "pred", preds + [np.ones((3, 3))], "npy")  # one extra, unmatched prediction
    res = evaluate_depth_folder(tmp_path / "pred", tmp_path / "gt", median_scaling=True)
    assert res.n_images == 2 and res.n_skipped == 1 and res.skipped == ["000002_10"]
    assert res.unmatched_pred == ["000003_10"] and res.unmatched_gt == []
    assert res.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    # ratios 2 and 4: median 3, std(ratio/3) = std([2/3, 4/3]) = 1/3
    assert res.ratio_median == pytest.approx(3.0, rel=1e-6)
    assert res.ratio_std == pytest.approx(1 / 3, rel=1e-5)
    d = res.to_dict()
    assert d["n_images"] == 2 and d["median_scaling_ratio"] == pytest.approx(3.0, rel=1e-6)
    # all-empty GT is an error
    _write_set(tmp_path / "gt0", [np.zeros((4, 4))], "png")
    _write_set(tmp_path / "pred0", [np.ones((4, 4))], "npy")
    with pytest.raises(InputError, match="no ground-truth pixel"):
        evaluate_depth_folder(tmp_path / "pred0", tmp_path / "gt0")


def test_folder_metrics_are_averaged_per_image(tmp_path):
    # image A: abs_rel 0.5 on 1 pixel; image B: abs_rel 0 on 3 pixels -> mean over images 0.25
    gtA, gtB = np.array([[2.0, 0.0, 0.0, 0.0]]), np.array([[2.0, 4.0, 8.0, 0.0]])
    np.save(tmp_path / "a.npy", np.array([[3.0, 1, 1, 1]]))
    np.save(tmp_path / "b.npy", np.array([[2.0, 4.0, 8.0, 1]]))
    (tmp_path / "gt").mkdir()
    np.save(tmp_path / "gt" / "a.npy", gtA)
    np.save(tmp_path / "gt" / "b.npy", gtB)
    (tmp_path / "pred").mkdir()
    for n in "ab":
        (tmp_path / f"{n}.npy").rename(tmp_path / "pred" / f"{n}.npy")
    res = evaluate_depth_folder(tmp_path / "pred", tmp_path / "gt")
    assert res.metrics["abs_rel"] == pytest.approx(0.25)
    assert res.ratio_median is None and "median_scaling_ratio" not in res.to_dict()


def test_matching_stacks_and_errors(tmp_path):
    np.save(tmp_path / "p.npy", np.ones((3, 4, 5)))
    np.save(tmp_path / "g.npy", np.ones((3, 4, 5)) * 2)
    pairs, up, ug = match_depth_files(tmp_path / "p.npy", tmp_path / "g.npy")
    assert [p[0] for p in pairs] == ["000000", "000001", "000002"] and pairs[2][1].index == 2
    np.save(tmp_path / "g2.npy", np.ones((2, 4, 5)))
    with pytest.raises(InputError, match="stack lengths differ"):
        match_depth_files(tmp_path / "p.npy", tmp_path / "g2.npy")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "a" / "x.npy", np.ones((2, 2)))
    np.save(tmp_path / "b" / "y.npy", np.ones((2, 2)))
    with pytest.raises(InputError, match="no file stem"):
        match_depth_files(tmp_path / "a", tmp_path / "b")
    with pytest.raises(InputError, match="not found"):
        match_depth_files(tmp_path / "missing", tmp_path / "b")
    res = evaluate_depth_folder(tmp_path / "p.npy", tmp_path / "g.npy")
    assert res.n_images == 3 and res.metrics["abs_rel"] == pytest.approx(0.5)
