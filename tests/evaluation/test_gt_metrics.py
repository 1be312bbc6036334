"""Tests for trianflow.evaluation.gt_metrics (batched metrics of training batches)."""

import math

import torch

from trianflow.evaluation.gt_metrics import flow_epe, median_scaled_abs_rel, metric_abs_rel


def test_flow_epe_and_median_scaled_abs_rel():
    gt = torch.zeros(2, 2, 4, 5)
    gt[:, 0] = 3.0
    pred = gt.clone()
    pred[1, 1] = 4.0  # sample 1 off by (0, 4)
    valid = torch.ones(2, 1, 4, 5)
    valid[1, :, :2] = 0
    assert flow_epe(pred, gt, valid).tolist() == [0.0, 4.0]
    d = torch.linspace(2, 30, 20).view(1, 1, 4, 5).repeat(2, 1, 1, 1)
    p = d * 7.0  # any global scale: 0 after median scaling
    p[1] = p[1] * torch.tensor([1.0, 1.1]).repeat_interleave(10).view(4, 5)  # 10 % too far on half the pixels
    ar = median_scaled_abs_rel(p, d)
    assert abs(float(ar[0])) < 1e-6
    # the median is taken over the 20 pixels: the first scaled half stays exact (median ratio lies on it)
    s = float(torch.median(d[1].flatten()) / torch.median(p[1].flatten()))
    expected = float(((p[1].flatten() * s).clamp(1e-3, 80) - d[1].flatten()).abs().div(d[1].flatten()).mean())
    assert abs(float(ar[1]) - expected) < 1e-6 and expected > 0.01
    assert math.isnan(float(median_scaled_abs_rel(p, torch.zeros_like(d))[0]))


def test_metric_abs_rel_is_not_median_scaled():
    g = torch.full((2, 1, 3, 4), 10.0)
    g[1] = 0.0  # no GT: left out of the batch mean
    assert abs(float(metric_abs_rel(g * 1.2, g, max_depth=80.0)) - 0.2) < 1e-6
    assert float(metric_abs_rel(g, torch.zeros_like(g), max_depth=80.0)) == 0.0
