import math

import numpy as np
import pytest
import torch
from torch import nn

from trianflow.errors import InputError
from trianflow.geometry.flow import flow_warp
from trianflow.models import bidirectional_flow
from trianflow.models.flownet import FlowNet, cost_volume, upsample_flow


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return FlowNet().eval()


def _naive_cost_volume(f1, f2, d):
    f1, f2 = f1.numpy(), f2.numpy()
    b, c, h, w = f1.shape
    k = 2 * d + 1
    out = np.zeros((b, k * k, h, w))
    for v in range(-d, d + 1):
        for u in range(-d, d + 1):
            ch = (v + d) * k + (u + d)
            for y in range(h):
                for x in range(w):
                    if 0 <= y + v < h and 0 <= x + u < w:
                        out[:, ch, y, x] = (f1[:, :, y, x] * f2[:, :, y + v, x + u]).sum(1) / c
    return torch.from_numpy(out)


@pytest.mark.parametrize("method", ["loop", "unfold"])
def test_cost_volume_matches_naive_loop(method):
    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    f2 = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    for d in (1, 4):
        got = cost_volume(f1, f2, d, method=method)
        assert got.shape == (2, (2 * d + 1) ** 2, 6, 7)
        torch.testing.assert_close(got, _naive_cost_volume(f1, f2, d), rtol=0, atol=1e-12)


def test_cost_volume_peaks_at_true_shift():
    g = torch.Generator().manual_seed(1)
    f1 = torch.randn(1, 64, 20, 24, generator=g)
    u0, v0 = 3, -2  # f2(x + u0, y + v0) = f1(x, y)
    f2 = torch.roll(f1, shifts=(v0, u0), dims=(2, 3))
    cv = cost_volume(f1, f2, 4)
    k0 = (v0 + 4) * 9 + (u0 + 4)
    inner = cv[:, :, 4:-4, 4:-4]
    assert torch.all(inner.argmax(1) == k0)
    torch.testing.assert_close(inner[:, k0], (f1 ** 2).mean(1)[:, 4:-4, 4:-4])


def test_cost_volume_bad_input():
    with pytest.raises(InputError):
        cost_volume(torch.rand(1, 2, 3, 4), torch.rand(1, 2, 3, 5))
    with pytest.raises(InputError):
        cost_volume(torch.rand(1, 2, 3, 4), torch.rand(1, 2, 3, 4), method="magic")


def test_warp_then_correlate_peaks_at_zero():
    g = torch.Generator().manual_seed(2)
    f1 = torch.randn(1, 64, 24, 32, generator=g)
    u0, v0 = -2, 3
    f2 = torch.roll(f1, shifts=(v0, u0), dims=(2, 3))
    flow = torch.tensor([float(u0), float(v0)]).view(1, 2, 1, 1).expand(1, 2, 24, 32)
    warped, _ = flow_warp(f2, flow)
    cv = cost_volume(f1, warped, 4)
    inner = cv[:, :, 4:-4, 4:-4]
    assert torch.all(inner.argmax(1) == 40)  # zero displacement is the centre channel
    torch.testing.assert_close(inner[:, 40], (f1 ** 2).mean(1)[:, 4:-4, 4:-4], atol=1e-5, rtol=1e-5)


def test_upsample_flow_rescales_values():
    flow = torch.stack([torch.full((4, 8), 1.0), torch.full((4, 8), -2.0)]).unsqueeze(0)
    up = upsample_flow(flow, (16, 16))
    assert up.shape == (1, 2, 16, 16)
    assert torch.allclose(up[:, 0], torch.full((1, 16, 16), 2.0))
    assert torch.allclose(up[:, 1], torch.full((1, 16, 16), -8.0))


def test_parameter_count_in_trianflow_range(net):
    n = sum(p.numel() for p in net.parameters())
    assert 7.5e6 < n < 10e6
    assert sum(p.numel() for p in FlowNet(context=False).parameters()) < n


@pytest.mark.parametrize("h,w", [(100, 150), (64, 64)])
def test_output_shapes_any_size(net, h, w):
    with torch.no_grad():
        out = net(torch.rand(1, 3, h, w), torch.rand(1, 3, h, w))
    assert len(out) == len(net.output_strides) == 5
    for o, s in zip(out, net.output_strides):
        assert o.shape == (1, 2, math.ceil(h / s), math.ceil(w / s))
        assert o.dtype == torch.float32 and torch.isfinite(o).all()


def test_full_resolution_is_upsampled_quarter(net):
    x1, x2 = torch.rand(1, 3, 64, 128), torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        out = net(x1, x2)
    torch.testing.assert_close(out[0], upsample_flow(out[1], (64, 128)))
    assert out[0].abs().max() > 0


def test_odd_size_equals_padded_then_cropped(net):
    g = torch.Generator().manual_seed(7)
    x1, x2 = torch.rand(1, 3, 50, 70, generator=g), torch.rand(1, 3, 50, 70, generator=g)
    pad = lambda x: torch.nn.functional.pad(x, (0, 64 - 70 % 64, 0, 64 - 50), mode="replicate")  # noqa: E731
    with torch.no_grad():
        got = net(x1, x2)
        ref = net(pad(x1), pad(x2))  # 64x128, no internal padding
    for o, r, s in zip(got, ref, net.output_strides):
        h, w = math.ceil(50 / s), math.ceil(70 / s)
        torch.testing.assert_close(o, r[..., :h, :w], atol=1e-5, rtol=1e-5)


def test_bidirectional_equals_two_single_calls(net):
    g = torch.Generator().manual_seed(3)
    x1, x2 = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        fwd, bwd = net.forward_bidirectional(x1, x2)
        f_single = net(x1, x2)
        b_single = net(x2, x1)
    for a, b in zip(fwd, f_single):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for a, b in zip(bwd, b_single):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_channels_last_matches_contiguous(net):
    g = torch.Generator().manual_seed(4)
    x1, x2 = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    cl = FlowNet().eval()
    cl.load_state_dict(net.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = net(x1, x2)
        got = cl(x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_autocast_bf16_cpu_close_to_fp32(net):
    g = torch.Generator().manual_seed(5)
    x1, x2 = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        ref = net(x1, x2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = net(x1, x2)
    for a, b in zip(got, ref):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert (a - b).abs().max() <= 0.05 * b.abs().max() + 1e-3


@pytest.mark.parametrize("context", [True, False])
def test_gradient_reaches_every_parameter(context):
    torch.manual_seed(6)
    net = FlowNet(context=context)
    x1, x2 = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    fwd, bwd = net.forward_bidirectional(x1, x2)
    loss = sum((o ** 2).mean() for o in fwd + bwd)
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []
    assert (net.context_net is not None) == context


def test_bad_inputs(net):
    with pytest.raises(InputError):
        net(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 65))
    with pytest.raises(InputError):
        net(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64))
    with pytest.raises(InputError):
        FlowNet(pyramid_channels=(16, 32, 64))


class DistributedDataParallel(nn.Module):  # named like torch's wrapper: exercises the DDP code path
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, a, b):
        return self.module(a, b)


def test_bidirectional_flow_through_a_ddp_style_wrapper():
    torch.manual_seed(0)
    net = FlowNet(pyramid_channels=(8, 8, 16, 16, 24, 24)).eval()
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        f1, b1 = bidirectional_flow(net, a, b)
        f2, b2 = bidirectional_flow(DistributedDataParallel(net), a, b)
    for x, y in zip(f1 + b1, f2 + b2):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
