"""Tests for trianflow.viz.images (torch images for tensorboard)."""

import pytest
import torch

from trianflow.viz.images import colorize, draw_points, flow_to_rgb, to_display


def test_flow_to_rgb_colours():
    flow = torch.zeros(1, 2, 1, 4)
    flow[0, 0, 0, 0] = 2.0  # +x
    flow[0, 0, 0, 1] = -2.0  # -x
    flow[0, 0, 0, 2] = 1.0  # +x, half magnitude
    rgb = flow_to_rgb(flow)
    assert rgb.shape == (1, 3, 1, 4)
    torch.testing.assert_close(rgb[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # red
    torch.testing.assert_close(rgb[0, :, 0, 1], torch.tensor([0.0, 1.0, 1.0]))  # cyan
    torch.testing.assert_close(rgb[0, :, 0, 2], torch.tensor([1.0, 0.5, 0.5]))  # half-saturated red
    torch.testing.assert_close(rgb[0, :, 0, 3], torch.tensor([1.0, 1.0, 1.0]))  # zero flow: white


def test_colorize_and_draw_points_and_to_display():
    x = torch.tensor([[[[1.0, 3.0], [float("nan"), 2.0]]]])
    g = colorize(x)
    assert g.shape == (1, 3, 2, 2)
    torch.testing.assert_close(g[0, 0], torch.tensor([[0.0, 1.0], [0.0, 0.5]]))
    img = torch.zeros(3, 5, 6)
    pts = torch.tensor([[2.2, 1.0], [10.0, 1.0], [0.0, 4.0]])
    out = draw_points(img, pts, color=(1.0, 0.0, 0.0), valid=torch.tensor([True, True, False]), radius=0)
    assert out[0].sum() == 1.0 and out[0, 1, 2] == 1.0 and img.sum() == 0  # one dot, input untouched
    assert to_display(torch.rand(2, 2, 4, 4)).shape == (3, 4, 4)
    assert to_display(torch.rand(4, 4)).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="C in 1, 2, 3"):
        to_display(torch.rand(1, 5, 4, 4))
