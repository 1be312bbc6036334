import torch

from trianflow.geometry.scale import align_scale
from trianflow.geometry.triangulation import triangulate_midpoint

from .conftest import make_scene


def test_midpoint_exact_on_clean_data():
    s = make_scene(n=300)
    tri = triangulate_midpoint(s["x1"], s["x2"], s["K"], s["K"], s["T"], min_angle_deg=0.0)
    assert tri.valid.all()
    assert torch.allclose(tri.points, s["X"], atol=1e-8)
    assert tri.reproj_error.max() < 1e-8


def test_filters():
    s = make_scene(b=1, n=6)
    x1, x2 = s["x1"].clone(), s["x2"].clone()
    T = s["T"].clone()
    # point 0: behind the cameras (swap to a far-off correspondence that intersects behind)
    x2[0, 0] = x1[0, 0] - (x2[0, 0] - x1[0, 0]) * 3
    # point 1: 30 px off the epipolar geometry -> large reprojection error
    x2[0, 1, 1] += 30
    valid = torch.ones(1, 6, dtype=torch.bool)
    valid[0, 2] = False  # point 2 invalid on input
    tri = triangulate_midpoint(x1, x2, s["K"], s["K"], T, valid=valid, min_angle_deg=0.0, image_size=(480, 640))
    assert not tri.valid[0, 1] and not tri.valid[0, 2]
    # tiny baseline: ray angles below the threshold are rejected
    T_small = T.clone()
    T_small[:, :3, 3] *= 1e-4
    tri2 = triangulate_midpoint(s["x1"], s["x1"], s["K"], s["K"], T_small, min_angle_deg=0.5)
    assert not tri2.valid.any()
    # max depth filter
    tri3 = triangulate_midpoint(s["x1"], s["x2"], s["K"], s["K"], T, min_angle_deg=0.0, max_depth=1.0)
    assert not tri3.valid.any()


def test_scale_alignment_methods():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 400, generator=g, dtype=torch.float64) * 10 + 1
    dst = src * torch.tensor([[2.0], [0.5]], dtype=torch.float64)
    dst_noisy = dst * (1 + 0.01 * torch.randn(2, 400, generator=g, dtype=torch.float64))
    dst_noisy[:, :100] *= 3  # 25 % outliers
    for m in ("median", "ransac"):
        s, ok, inl = align_scale(src, dst_noisy, method=m, generator=torch.Generator().manual_seed(1))
        assert ok.all()
        assert torch.allclose(s, torch.tensor([2.0, 0.5], dtype=torch.float64), rtol=0.01 if m == "ransac" else 0.05)
    s, ok, _ = align_scale(src, dst, method="lsq")
    assert torch.allclose(s, torch.tensor([2.0, 0.5], dtype=torch.float64))
    s_r, _, inl = align_scale(src, dst_noisy, method="ransac")
    assert inl[:, :100].sum() == 0 and inl[:, 100:].float().mean() > 0.9


def test_scale_invalid_when_too_few_points():
    src = torch.ones(2, 20, dtype=torch.float64)
    valid = torch.zeros(2, 20, dtype=torch.bool)
    valid[0] = True
    s, ok, _ = align_scale(src, 3 * src, valid=valid)
    assert ok.tolist() == [True, False] and float(s[1]) == 1.0 and float(s[0]) == 3.0
