"""Tests for trianflow.viz.colormaps (numpy colour maps of depth and error images)."""

import cv2
import numpy as np
import pytest

from trianflow.errors import InputError
from trianflow.io.depth import write_rgb_png
from trianflow.viz.colormaps import colorize_error, colorize_inverse_depth, colorize_map


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
