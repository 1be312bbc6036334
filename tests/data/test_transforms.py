"""Tests of the sample-dict transforms: geometry stays consistent with K, poses and flow."""

import numpy as np
import pytest
import torch

from trianflow.data.synthetic import SyntheticDataset, render_views, synthetic_sequence
from trianflow.data.transforms import (
    ColorJitter,
    Compose,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    add_aug_copies,
    can_hflip,
    default_eval_transform,
    default_train_transform,
    hflip_sample,
    jitter_image,
    resize_sample,
)
from trianflow.geometry.camera import backproject_depth, project, scale_intrinsics
from trianflow.geometry.flow import flow_warp


@pytest.fixture(scope="module")
def stereo_seq():
    return synthetic_sequence(n_frames=3, size=(48, 144), seed=4, baseline=0.5)


def _sample(seq, i=0, j=1):
    ds = SyntheticDataset(sequence=seq)
    return ds[i]


def _clone(s):
    return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}


def _flow_from_geometry(depth, K, T):
    """Flow (2,H,W) of a rigid scene from depth (1,H,W), K (3,3), T_1to2 (4,4)."""
    h, w = depth.shape[-2:]
    X = backproject_depth(depth[None], K[None]).flatten(2).transpose(1, 2)
    X2 = X @ T[:3, :3].T + T[:3, 3]
    uv, _ = project(X2, K[None])
    grid = torch.stack(torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32),
                                      indexing="xy"))
    return uv[0].T.reshape(2, h, w) - grid


def _photo_err(s):
    warped, inb = flow_warp(s["image_next"][None], s["flow_gt"][None])
    v = (s["flow_valid"] > 0) & (inb[0] > 0)
    return (warped[0] - s["image"]).abs().mean(0, keepdim=True)[v].median()


def test_resize_scales_K_like_rendering_at_lower_resolution():
    seq = synthetic_sequence(n_frames=2, size=(64, 192), seed=0)
    s = _sample(seq)
    r = resize_sample(_clone(s), (32, 96))
    torch.testing.assert_close(r["K"], scale_intrinsics(s["K"], 0.5, 0.5))
    assert float(r["K"][0, 2]) == pytest.approx((float(s["K"][0, 2]) + 0.5) * 0.5 - 0.5)
    assert r["image"].shape == (3, 32, 96) and r["depth_gt"].shape == (1, 32, 96)
    # rendering directly with the rescaled K gives (almost) the resized image
    img, depth = render_views(seq.gt_poses[0], r["K"].double().numpy(), (32, 96), scene=seq.scene, supersample=4)
    direct = torch.from_numpy(img[0]).permute(2, 0, 1).float() / 255
    err = (direct - r["image"]).abs().mean()
    assert err < 0.03
    # the naive cx' = cx * s would be a quarter-pixel off and match clearly worse
    K_naive = r["K"].double().numpy().copy()
    K_naive[:2, 2] = s["K"][:2, 2].double().numpy() * 0.5
    img_n, _ = render_views(seq.gt_poses[0], K_naive, (32, 96), scene=seq.scene, supersample=4)
    naive = torch.from_numpy(img_n[0]).permute(2, 0, 1).float() / 255
    assert (naive - r["image"]).abs().mean() > 1.4 * err
    rel = ((torch.from_numpy(depth[0]) - r["depth_gt"][0]).abs() / r["depth_gt"][0])
    assert rel.median() < 0.02
    # flow rescaled with the image: still explains the resized next image
    assert r["flow_gt"].shape == (2, 32, 96)
    assert _photo_err(r) < 0.05
    geo = _flow_from_geometry(r["depth_gt"], r["K"], r["pose_gt"])
    assert (geo - r["flow_gt"]).norm(dim=0).median() < 0.3


def test_hflip_mono_keeps_geometry():
    seq = synthetic_sequence(n_frames=2, size=(40, 120), seed=5)
    s = _sample(seq)
    s.pop("image_right", None)
    f = hflip_sample(_clone(s))
    torch.testing.assert_close(f["image"], torch.flip(s["image"], dims=[-1]))
    assert float(f["K"][0, 2]) == pytest.approx(119 - float(s["K"][0, 2]))
    # the mirrored pose, K and depth reproduce the mirrored flow exactly
    geo = _flow_from_geometry(f["depth_gt"], f["K"], f["pose_gt"])
    torch.testing.assert_close(geo, f["flow_gt"], atol=2e-3, rtol=1e-4)
    assert _photo_err(f) < 0.02
    # a wrong convention (pose not mirrored) would not
    bad = _flow_from_geometry(f["depth_gt"], f["K"], s["pose_gt"])
    assert (bad - f["flow_gt"]).norm(dim=0).median() > 0.5
    twice = hflip_sample(hflip_sample(_clone(s)))
    for k in ("image", "K", "pose_gt", "flow_gt", "depth_gt"):
        torch.testing.assert_close(twice[k], s[k])


def test_hflip_stereo_swaps_and_converts_pose(stereo_seq):
    seq = stereo_seq
    s = _sample(seq)
    torch.testing.assert_close(s["image_next_right"], torch.from_numpy(seq.read_right(1)).permute(2, 0, 1).float() / 255)
    f = hflip_sample(_clone(s))
    torch.testing.assert_close(f["image"], torch.flip(s["image_right"], dims=[-1]))
    torch.testing.assert_close(f["image_right"], torch.flip(s["image"], dims=[-1]))
    torch.testing.assert_close(f["image_next"], torch.flip(s["image_next_right"], dims=[-1]))
    torch.testing.assert_close(f["image_aug"], f["image"])
    assert float(f["baseline"]) == pytest.approx(0.5)
    for k in ("depth_gt", "disp_gt", "flow_gt", "flow_valid"):
        assert f[k].shape == s[k].shape and not f[k].any()  # unknown now, but still collatable
    batch = torch.utils.data.default_collate([f, _sample(seq)])
    assert batch["depth_gt"].shape == (2, 1, 48, 144)
    # new left view = mirrored right camera: its depth is the mirrored right depth
    depth_new = torch.flip(torch.from_numpy(seq.depth_right(0).copy())[None], dims=[-1])
    # stereo: warping the new right image by the new left disparity reproduces the new left image
    disp = f["K"][0, 0] * 0.5 / depth_new
    flow = torch.cat([-disp, torch.zeros_like(disp)])
    warped, inb = flow_warp(f["image_right"][None], flow[None])
    assert (warped[0] - f["image"]).abs().mean(0)[inb[0, 0] > 0].median() < 0.02
    # temporal: the converted pose + new depth explain the new next image
    f["flow_gt"] = _flow_from_geometry(depth_new, f["K"], f["pose_gt"])
    warped, inb = flow_warp(f["image_next"][None], f["flow_gt"][None])
    err = (warped[0] - f["image"]).abs().mean(0)[inb[0, 0] > 0]
    assert err.median() < 0.03
    # exact: the new pose is the mirrored relative pose of the right camera
    off = np.eye(4)
    off[0, 3] = 0.5
    r0, r1 = seq.gt_poses[0] @ off, seq.gt_poses[1] @ off
    S = np.diag([-1.0, 1, 1, 1])
    np.testing.assert_allclose(f["pose_gt"].numpy(), S @ np.linalg.inv(r1) @ r0 @ S, atol=1e-5)
    # a stereo sample whose next frame has no right image cannot be flipped: left unchanged
    s2 = _sample(seq)
    del s2["image_next_right"], s2["image_next_right_aug"]
    assert not can_hflip(s2)
    same = hflip_sample(_clone(s2))
    torch.testing.assert_close(same["image"], s2["image"])


def test_color_jitter():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 8, 10, generator=g)
    s = {"image": img.clone(), "image_next": img.clone(), "K": torch.eye(3)}
    out = ColorJitter(generator=torch.Generator().manual_seed(1))(s)
    torch.testing.assert_close(out["image"], img)  # base untouched
    assert (out["image_aug"] - img).abs().mean() > 1e-3
    torch.testing.assert_close(out["image_aug"], out["image_next_aug"])  # same parameters
    assert 0 <= out["image_aug"].min() and out["image_aug"].max() <= 1
    torch.testing.assert_close(jitter_image(img), img.clamp(0, 1))
    torch.testing.assert_close(jitter_image(img * 0.5, brightness=1.5), (img * 0.75).clamp(0, 1))
    gray = img[:1].repeat(3, 1, 1)
    torch.testing.assert_close(jitter_image(gray, saturation=1.7, hue=0.2), gray, atol=1e-5, rtol=0)
    hue = jitter_image(img * 0.8 + 0.1, hue=0.1)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    torch.testing.assert_close((hue * luma).sum(0), ((img * 0.8 + 0.1) * luma).sum(0), atol=2e-2, rtol=0)
    assert jitter_image(img, gamma=2.0).mean() < img.mean()


def test_scale_crop_and_default_pipeline():
    seq = synthetic_sequence(n_frames=2, size=(48, 144), seed=6)
    s = _sample(seq)
    out = RandomScaleCrop(max_scale=1.3, p=1.0, generator=torch.Generator().manual_seed(3))(_clone(s))
    assert out["image"].shape == (3, 48, 144)
    assert float(out["K"][0, 0]) > float(s["K"][0, 0])  # zoomed in
    geo = _flow_from_geometry(out["depth_gt"], out["K"], out["pose_gt"])
    assert (geo - out["flow_gt"]).norm(dim=0).median() < 0.3
    assert _photo_err(out) < 0.05
    t = default_train_transform(size=(24, 72))
    torch.manual_seed(0)
    res = add_aug_copies(t(_clone(s)))
    assert res["image"].shape == (3, 24, 72) and res["image_aug"].shape == (3, 24, 72)
    assert isinstance(t, Compose) and any(isinstance(x, RandomHorizontalFlip) for x in t.transforms)
    flips = [bool(torch.equal(RandomHorizontalFlip(p=0.5)(_clone(s))["image"], s["image"])) for _ in range(40)]
    assert 5 < sum(flips) < 35  # about half of them are flipped
    ev = add_aug_copies(default_eval_transform((24, 72))(_clone(s)))
    assert ev["image"].shape == (3, 24, 72)
    torch.testing.assert_close(ev["image_aug"], ev["image"])
    torch.testing.assert_close(ev["K"], scale_intrinsics(s["K"], 0.5, 0.5))
    same = Resize((48, 144))(_clone(s))
    torch.testing.assert_close(same["image"], s["image"])  # no-op at the same size
