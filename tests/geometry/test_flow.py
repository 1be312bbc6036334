import torch

from trianflow.geometry.flow import fb_consistency, flow_warp, occlusion_mask


def test_flow_warp_translation_exact():
    img = torch.arange(60, dtype=torch.float64).reshape(1, 1, 6, 10)
    flow = torch.zeros(1, 2, 6, 10, dtype=torch.float64)
    flow[:, 0] = 2.0  # image 2 pixel (x+2, y) shows what image 1 shows at (x, y)
    warped, valid = flow_warp(img, flow)
    assert torch.allclose(warped[..., :8], img[..., 2:])
    assert valid[..., :8].all() and not valid[..., 8:].any()


def test_fb_consistency_zero_for_consistent_flows_and_large_when_broken():
    f = torch.zeros(1, 2, 8, 12)
    f[:, 0] = 1.5
    d = fb_consistency(f, -f)
    assert d[..., :10].abs().max() < 1e-5
    assert (d[..., 11:] >= 1e3 - 1).all()  # leaves image 2
    d2 = fb_consistency(f, -f + torch.tensor([0.0, 3.0]).view(1, 2, 1, 1))
    assert torch.allclose(d2[..., :10], torch.full_like(d2[..., :10], 3.0))


def test_occlusion_mask_marks_disoccluded_region():
    # image 2 = image 1 shifted right by 3 px: the 3 rightmost columns of image 1 leave the view
    h, w = 5, 12
    bwd = torch.zeros(1, 2, h, w)
    bwd[:, 0] = -3.0
    m = occlusion_mask(bwd)
    assert m[..., : w - 3].eq(1).all() and m[..., w - 3:].eq(0).all()
    # an occluding foreground: two source regions collapse onto the same target
    bwd2 = torch.zeros(1, 2, h, w)
    bwd2[..., 6:] = 0
    bwd2[:, 0, :, 3:6] = 3.0  # pixels 3..5 of image 2 come from 6..8 of image 1 (3..5 of image 1 hidden)
    m2 = occlusion_mask(bwd2)
    assert m2[..., 3:6].eq(0).all() and m2[..., :3].eq(1).all() and m2[..., 6:].eq(1).all()
    soft = occlusion_mask(bwd2, threshold=0)
    assert soft.max() <= 1 and soft.min() >= 0
