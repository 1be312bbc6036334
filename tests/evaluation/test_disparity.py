"""Tests for trianflow.evaluation.disparity (stereo disparity errors, non-occlusion mask)."""

import numpy as np
import pytest

from trianflow.errors import InputError
from trianflow.evaluation.depth_metrics import EmptyMaskError
from trianflow.evaluation.disparity import disparity_errors, nonoccluded_mask


def test_nonoccluded_mask_on_a_foreground_block():
    d = np.full((3, 20), 2.0)
    d[:, 10:15] = 6.0  # a closer block: it lands on right columns 4..8
    d[1, 3] = np.inf  # unknown GT pixel
    m = nonoccluded_mask(d)
    row = m[0]
    # out of view (x - 2 < -0.5): x = 0, 1; occluded by the block: background x = 6..9 (x - 2 in 4..7)
    expect = np.ones(20, bool)
    expect[[0, 1, 6, 7, 8, 9]] = False
    assert row.tolist() == expect.tolist()
    assert not m[1, 3] and m[1, 4]
    v = np.ones_like(d, dtype=bool)
    v[2, 12] = False  # invalid pixels neither count nor occlude
    assert not nonoccluded_mask(d, v)[2, 12]


def test_disparity_errors_exact_values_resize_and_empty_mask():
    gt = np.zeros((4, 8))
    gt[:2] = 10.0
    pred = np.full((4, 8), 11.0)
    pred[0, :4] = 13.0
    e = disparity_errors(pred, gt)
    assert e["n_pixels"] == 16
    assert e["median"] == pytest.approx(1.0) and e["mean"] == pytest.approx((4 * 3 + 12 * 1) / 16)
    assert e["bad2"] == pytest.approx(4 / 16)
    # a prediction at half the width: values are doubled when resized to the GT
    half = np.full((2, 4), 5.0)
    assert disparity_errors(half, gt)["median"] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(EmptyMaskError):
        disparity_errors(pred, gt, mask=np.zeros_like(gt, dtype=bool))
    with pytest.raises(EmptyMaskError):
        disparity_errors(pred, np.zeros_like(gt))
    pred[1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        disparity_errors(pred, gt)
