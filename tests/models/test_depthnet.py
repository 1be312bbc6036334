import math

import pytest
import torch

from trianflow.errors import InputError
from trianflow.models.depthnet import DepthNet, disp_fraction_to_pixels, disp_to_depth


@pytest.fixture(scope="module")
def mono():
    torch.manual_seed(0)
    return DepthNet().eval()


@pytest.mark.parametrize("h,w", [(100, 150), (64, 128)])
def test_mono_shapes_and_range(mono, h, w):
    with torch.no_grad():
        out = mono(torch.rand(2, 3, h, w))
    assert set(out) == {"disp"} and len(out["disp"]) == 4
    for s, d in enumerate(out["disp"]):
        assert d.shape == (2, 1, math.ceil(h / 2 ** s), math.ceil(w / 2 ** s))
        assert d.dtype == torch.float32
        assert d.min() > 0 and d.max() < 1


def test_stereo_shapes_and_range():
    torch.manual_seed(1)
    net = DepthNet(stereo=True, disp_scale=0.3).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 96))
    assert set(out) == {"disp_left", "disp_right"}
    for key in out:
        assert len(out[key]) == 4
        for s, d in enumerate(out[key]):
            assert d.shape == (1, 1, 64 // 2 ** s, 96 // 2 ** s)
            assert d.min() > 0 and d.max() < 0.3
    assert not torch.allclose(out["disp_left"][0], out["disp_right"][0])  # two different channels
    # disp_scale multiplies the same sigmoid output
    other = DepthNet(stereo=True, disp_scale=0.5).eval()
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        out2 = other(torch.rand(1, 3, 64, 96).fill_(0.5))
        out1 = net(torch.rand(1, 3, 64, 96).fill_(0.5))
    torch.testing.assert_close(out2["disp_left"][1], out1["disp_left"][1] * (0.5 / 0.3))


def test_num_scales():
    net = DepthNet(num_scales=2).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64))
    assert [tuple(d.shape[-2:]) for d in out["disp"]] == [(64, 64), (32, 32)]
    with pytest.raises(InputError):
        DepthNet(num_scales=5)
    with pytest.raises(InputError):
        DepthNet(min_depth=10, max_depth=1)


def test_disp_to_depth_bounds_and_formula():
    disp = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    scaled, depth = disp_to_depth(disp, 0.1, 100.0)
    torch.testing.assert_close(depth[0, 0, 0, 0], torch.tensor(100.0))
    torch.testing.assert_close(depth[0, 0, 0, 2], torch.tensor(0.1))
    torch.testing.assert_close(scaled[0, 0, 0, 1], torch.tensor(0.01 + 0.5 * (10.0 - 0.01)))
    torch.testing.assert_close(depth * scaled, torch.ones_like(depth))
    assert torch.all(depth[..., :-1] > depth[..., 1:])  # larger disparity, closer
    with pytest.raises(InputError):
        disp_to_depth(disp, 0.0, 10.0)


def test_depth_of_network_output_in_range(mono):
    with torch.no_grad():
        d = mono(torch.rand(1, 3, 64, 64))["disp"][0]
    depth = mono.depth(d)
    assert depth.min() >= 0.1 and depth.max() <= 100.0


def test_disp_fraction_to_pixels():
    d = torch.full((1, 1, 2, 3), 0.1)
    assert torch.allclose(disp_fraction_to_pixels(d, 832), torch.full_like(d, 83.2))


@pytest.mark.parametrize("stereo", [False, True])
def test_gradient_reaches_every_parameter(stereo):
    torch.manual_seed(2)
    net = DepthNet(stereo=stereo)
    out = net(torch.rand(2, 3, 64, 64))
    loss = sum(d.mean() for v in out.values() for d in v)
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []


def test_channels_last_matches_contiguous(mono):
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    cl = DepthNet().eval()
    cl.load_state_dict(mono.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = mono(x)["disp"]
        got = cl(x.contiguous(memory_format=torch.channels_last))["disp"]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_autocast_bf16_cpu_close_to_fp32(mono):
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = mono(x)["disp"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = mono(x)["disp"]
    for a, b in zip(got, ref):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert (a - b).abs().max() < 0.02


def test_bad_input(mono):
    with pytest.raises(InputError):
        mono(torch.rand(1, 1, 64, 64))
