"""Tests for trianflow.losses.stereo_objective (the ``stereo`` task's objective) and the batch check it
runs first (:func:`trianflow.data.stereo_pairs.check_stereo_batch`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trianflow.config import load_config
from trianflow.data.stereo_pairs import check_stereo_batch
from trianflow.errors import InputError
from trianflow.losses.stereo_objective import disparity_target, stereo_objective


def _texture(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, h // 4 + 1, w // 4 + 1, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def shifted_pair(b=2, h=32, w=64, d=4, baseline=0.5, fx=50.0):
    """Rectified pair with a constant disparity ``d`` px: ``left(x) = right(x - d)``."""
    tex = _texture(b, h, w + d)
    left, right = tex[..., :w].contiguous(), tex[..., d:d + w].contiguous()
    K = torch.tensor([[fx, 0, (w - 1) / 2], [0, fx, (h - 1) / 2], [0, 0, 1.0]]).expand(b, 3, 3).clone()
    return {"image": left, "image_right": right, "K": K, "baseline": torch.full((b,), float(baseline)),
            "frame_id": [f"pair/{i}" for i in range(b)]}


def constant_disps(b, h, w, frac, scales=4):
    return [torch.full((b, 1, (h + 2**s - 1) // 2**s, (w + 2**s - 1) // 2**s), float(frac)) for s in range(scales)]


def cfg_with(*overrides):
    return load_config(None, list(overrides))


def test_check_stereo_batch_accepts_a_good_batch():
    check_stereo_batch(shifted_pair())
    check_stereo_batch({**shifted_pair(), "image_next": torch.rand(2, 3, 32, 64)}, need_next=True)


@pytest.mark.parametrize("mutate, words", [
    (lambda b: b.pop("image_right"), ["no 'image_right'", "stereo dataset"]),
    (lambda b: b.update(image_right=torch.rand(2, 3, 32, 60)), ["right images are", "one size"]),
    (lambda b: b.update(baseline=torch.tensor([0.5, 0.0])), ["baseline must be > 0", "pair/1"]),
    (lambda b: b.update(baseline=torch.tensor([-0.5, 0.5])), ["baseline must be > 0", "-0.5", "pair/0"]),
    (lambda b: b.update(baseline=torch.tensor([float("nan"), 0.5])), ["baseline must be > 0"]),
    (lambda b: b.pop("baseline"), ["no stereo 'baseline'"]),
    (lambda b: b.pop("K"), ["intrinsics 'K'"]),
])
def test_check_stereo_batch_rejects_bad_input(mutate, words):
    batch = shifted_pair()
    mutate(batch)
    with pytest.raises(InputError) as exc:
        check_stereo_batch(batch)
    for w in words:
        assert w in str(exc.value)


def test_check_stereo_batch_needs_next_frame_for_stereo_mono():
    with pytest.raises(InputError, match="image_next"):
        check_stereo_batch(shifted_pair(), need_next=True)


def test_disparity_target_preference_and_inversion():
    depth = torch.tensor([[[[2.0, 0.0], [4.0, float("inf")]]]])
    t, m, key = disparity_target({"depth_gt": depth})
    assert key == "depth_gt"
    assert m.tolist() == [[[[True, False], [True, False]]]]
    assert torch.allclose(t[m], torch.tensor([0.5, 0.25]))
    t, m, key = disparity_target({"depth_gt": depth, "disp_gt": torch.ones(1, 1, 2, 2), "disp_teacher": 2 * torch.ones(1, 1, 2, 2)})
    assert key == "disp_teacher" and float(t.mean()) == 2.0
    assert disparity_target({"image": torch.rand(1, 3, 2, 2)}) is None


def test_stereo_objective_prefers_the_true_disparity():
    b, h, w, d = 2, 32, 64, 4
    batch = shifted_pair(b, h, w, d)
    lc = cfg_with().loss
    good = constant_disps(b, h, w, d / w)
    total_good, named_good, extras = stereo_objective(good, good, batch, lc)
    for wrong in (0.3 * d / w, 2.5 * d / w):
        bad = constant_disps(b, h, w, wrong)
        _, named_bad, _ = stereo_objective(bad, bad, batch, lc)
        assert named_good["stereo_ap"] < 0.6 * named_bad["stereo_ap"]
    assert torch.allclose(extras["disp_px"], torch.full_like(extras["disp_px"], float(d)))
    assert torch.allclose(extras["depth"], torch.full_like(extras["depth"], 50.0 * 0.5 / d))
    expect = (named_good["stereo_ap"] + lc.w_stereo_smooth * named_good["stereo_smooth"]
              + lc.w_stereo_lr * named_good["stereo_lr"])
    assert float(total_good) == pytest.approx(expect, rel=1e-5)


def test_stereo_objective_icp_and_ssi_terms_with_gradients():
    b, h, w, d = 2, 32, 64, 4
    batch = shifted_pair(b, h, w, d)
    # relative GT at twice the resolution (the prediction is resized to it): a ramp in x; sample 1 has none
    xs = torch.arange(2 * w, dtype=torch.float32)
    gt = (2.0 * d + 4.0 * xs / (2 * w)).view(1, 1, 1, -1).repeat(b, 1, 2 * h, 1)
    gt[1] = 0.0
    batch["disp_gt"] = gt
    lc = cfg_with("loss.w_icp=1e-3", "loss.w_ssi=1.0", "loss.w_ssi_grad=0.5").loss
    # the prediction is half the GT (another scale) at half its width, in width fractions
    xl = 2 * torch.arange(w, dtype=torch.float32) + 0.5  # GT column at the centre of each low-res pixel
    pred_px = 0.5 * (2.0 * d + 4.0 * xl / (2 * w)) / 2.0
    frac = (pred_px / w).view(1, 1, 1, -1).repeat(b, 1, h, 1).requires_grad_(True)
    dl = [frac] + [F.interpolate(frac, scale_factor=0.5**s, mode="bilinear", align_corners=False) for s in (1, 2, 3)]
    total, named, _ = stereo_objective(dl, [x * 1.0 for x in dl], batch, lc)
    assert {"icp", "ssi", "ssi_grad"} <= set(named) and all(np.isfinite(list(named.values())))
    assert named["ssi"] < 0.02  # the prediction is an exact scaled copy of the GT (up to resampling)
    total.backward()
    assert torch.isfinite(frac.grad).all() and frac.grad.abs().sum() > 0
    # a prediction unrelated to the GT costs much more
    noise = torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(1)) * 0.1 + 0.01
    nl = [noise] + [F.interpolate(noise, scale_factor=0.5**s, mode="bilinear", align_corners=False) for s in (1, 2, 3)]
    _, named_bad, _ = stereo_objective(nl, nl, batch, lc)
    assert named_bad["ssi"] > 10 * named["ssi"]
    # every GT empty: the SSI term is 0 and the loss stays finite
    batch["disp_gt"] = torch.zeros_like(gt)
    total0, named0, _ = stereo_objective(dl, dl, batch, lc)
    assert named0["ssi"] == 0.0 and torch.isfinite(total0)
    # w_ssi without any target is a configuration error
    batch.pop("disp_gt")
    with pytest.raises(InputError, match="w_ssi"):
        stereo_objective(dl, dl, batch, lc)
    with pytest.raises(InputError, match="w_stereo_lr"):
        stereo_objective(dl, dl, shifted_pair(b, h, w, d), cfg_with("loss.w_stereo_lr=-1").loss)
