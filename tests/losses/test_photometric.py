"""Tests for trianflow.losses.photometric."""

from pathlib import Path

import numpy as np
import pytest
import torch

from trianflow.errors import InputError
from trianflow.losses.photometric import masked_mean, photometric_error, ssim

DT = torch.float64
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kitti_odom_straight"


def test_ssim_identical_is_one_and_noise_lowers_it():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 9, dtype=DT)
    assert torch.allclose(ssim(x, x), torch.ones_like(x), atol=1e-12)
    s = ssim(x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1))
    assert s.shape == x.shape and s.mean() < 0.9


def test_ssim_hand_example_constant_images():
    # constant images a, b: variances vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.3, 0.5, 0.01**2
    x = torch.full((1, 1, 4, 4), a, dtype=DT)
    y = torch.full((1, 1, 4, 4), b, dtype=DT)
    assert torch.allclose(ssim(x, y), torch.full_like(x, (2 * a * b + c1) / (a * a + b * b + c1)), atol=1e-12)


def test_ssim_matches_skimage_in_the_interior():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    img = rng.random((20, 24))
    if (DATA / "image_0" / "000000.png").exists():
        import cv2

        full = cv2.imread(str(DATA / "image_0" / "000000.png"), cv2.IMREAD_GRAYSCALE).astype(np.float64) / 255
        img = full[150:190, 600:648]
    other = np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1)
    _, ref = skm.structural_similarity(img, other, win_size=3, data_range=1.0, use_sample_covariance=False,
                                       gaussian_weights=False, full=True)
    ours = ssim(torch.from_numpy(img)[None, None], torch.from_numpy(other)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ours[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-8)


def test_photometric_error_values():
    torch.manual_seed(1)
    x = torch.rand(1, 3, 6, 6, dtype=DT)
    assert photometric_error(x, x).abs().max() < 1e-12
    # alpha = 0 is plain channel-mean L1
    y = x + 0.1
    assert torch.allclose(photometric_error(x, y, alpha=0.0), torch.full((1, 1, 6, 6), 0.1, dtype=DT))
    # a brightness offset leaves the structure term of SSIM at 1: only the luminance term drops
    pe = photometric_error(x, y, alpha=0.85)
    assert pe.shape == (1, 1, 6, 6)
    assert (pe > 0.015).all() and (pe < 0.03).all()


def test_masked_mean_respects_mask_and_empty_mask():
    err = torch.zeros(2, 1, 2, 2, dtype=DT)
    err[0, 0, 0, 0] = 4.0
    err[0, 0, 1, 1] = float("nan")  # masked out: must not leak
    err[1] = 2.0
    mask = torch.zeros(2, 1, 2, 2, dtype=DT)
    mask[0, 0, 0, :] = 1
    out = masked_mean(err, mask)
    assert torch.allclose(out, torch.tensor([2.0, 0.0], dtype=DT))
    assert torch.isfinite(masked_mean(err, mask, per_sample=False))
    assert torch.allclose(masked_mean(err[1:], None), torch.tensor([2.0], dtype=DT))
    with pytest.raises(InputError):
        masked_mean(err, torch.ones(2, 1, 3, 3))


def test_masked_mean_empty_mask_has_zero_finite_gradient():
    e = torch.rand(1, 1, 3, 3, dtype=DT, requires_grad=True)
    out = masked_mean(e, torch.zeros(1, 1, 3, 3))
    out.sum().backward()
    assert out.item() == 0 and torch.isfinite(e.grad).all() and e.grad.abs().sum() == 0


def test_gradcheck_ssim_and_photometric():
    torch.manual_seed(2)
    x = torch.rand(1, 2, 3, 4, dtype=DT, requires_grad=True)
    y = torch.rand(1, 2, 3, 4, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(ssim, (x, y))
    assert torch.autograd.gradcheck(lambda a, b: photometric_error(a, b), (x, y))
    m = (torch.rand(1, 1, 3, 4) > 0.3).to(DT)
    assert torch.autograd.gradcheck(lambda a, b: masked_mean(photometric_error(a, b), m), (x, y))


def test_ssim_bad_input():
    with pytest.raises(InputError):
        ssim(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
