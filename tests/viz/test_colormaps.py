"""Tests for trianflow.viz.colormaps (numpy colour maps of depth and error images)."""

import cv2
import numpy as np
import pytest

from trianflow.errors import InputError
from trianflow.io.depth import write_rgb_png
from trianflow.viz.colormaps import colorize_error, colorize_inverse_depth, colorize_map, flow_to_color


def test_colorize_maps_range_and_mask(tmp_path):
    import matplotlib

    vals = np.linspace(0, 1, 12).reshape(3, 4)
    mask = np.ones((3, 4), bool)
    mask[0, 0] = False
    rgb = colorize_map(vals, mask, cmap="viridis", vmin=0.0, vmax=1.0)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert np.all(rgb[0, 0] == 0)
    end = (np.array(matplotlib.colormaps["viridis"](1.0)[:3]) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(rgb[2, 3], end)
    err = colorize_error(np.array([[0.0, 0.6]]), vmax=0.3)  # 0 -> blue end of jet, >= vmax -> red end
    assert err[0, 0, 2] > 100 and err[0, 0, 0] < 50 and err[0, 1, 0] > 100 and err[0, 1, 2] < 50
    inv = colorize_inverse_depth(np.array([[1.0, 100.0, 0.0]]))
    assert inv[0, 0].sum() > inv[0, 1].sum() and np.all(inv[0, 2] == 0)  # near is brighter (magma)
    write_rgb_png(tmp_path / "c.png", rgb)
    assert np.array_equal(cv2.imread(str(tmp_path / "c.png"))[..., ::-1], rgb)
    with pytest.raises(InputError, match="colour map"):
        colorize_map(vals, cmap="no-such-map")


def test_flow_to_color_wheel():
    f = np.zeros((1, 6, 2), np.float32)
    f[0, 1] = (1, 0)    # +x
    f[0, 2] = (-1, 0)   # -x
    f[0, 3] = (0, 1)    # +y (down)
    f[0, 4] = (3, 0)    # beyond max_flow: darkened
    f[0, 5] = (np.nan, 0)
    c = flow_to_color(f, max_flow=1.0).astype(int)
    assert c.dtype == np.int64 and c.shape == (1, 6, 3)
    assert tuple(c[0, 0]) == (255, 255, 255)  # zero flow is white
    r, g, b = c[0, 1]
    assert r == 255 and g < 10 and b < 60  # +x is red
    r, g, b = c[0, 2]
    assert b == 255 and r < 10  # -x cyan-blue
    r, g, b = c[0, 3]
    assert r == 255 and 100 < g < 255 and b == 0  # +y orange-yellow
    assert tuple(c[0, 4]) == tuple((np.floor(0.75 * c[0, 1])).astype(int))  # same hue, darkened x0.75
    assert tuple(c[0, 5]) == (0, 0, 0)
    # default normalisation: the largest magnitude is fully saturated
    auto = flow_to_color(f[:, :5] * 2)
    assert tuple(auto[0, 4]) == tuple(flow_to_color(np.array([[[1.0, 0.0]]]), 1.0)[0, 0])
