"""CUDA checks for the networks (skipped without a GPU)."""

import pytest
import torch

from trianflow.models import DepthNet, FlowNet

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def test_flownet_cuda_matches_cpu_and_autocast():
    torch.manual_seed(0)
    net = FlowNet().eval()
    x1, x2 = torch.rand(2, 3, 100, 150), torch.rand(2, 3, 100, 150)
    with torch.no_grad():
        ref_f, ref_b = net.forward_bidirectional(x1, x2)
        gpu = net.cuda().to(memory_format=torch.channels_last)
        g1 = x1.cuda().contiguous(memory_format=torch.channels_last)
        g2 = x2.cuda().contiguous(memory_format=torch.channels_last)
        got_f, got_b = gpu.forward_bidirectional(g1, g2)
        for a, b in zip(got_f + got_b, ref_f + ref_b):
            torch.testing.assert_close(a.cpu(), b, atol=1e-3, rtol=1e-3)
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast("cuda", dtype=dtype):
                amp_f, _ = gpu.forward_bidirectional(g1, g2)
            for a, b in zip(amp_f, ref_f):
                assert a.dtype == torch.float32 and torch.isfinite(a).all()
                assert (a.cpu() - b).abs().max() <= 0.05 * b.abs().max() + 1e-3


def test_flownet_cuda_backward_under_autocast():
    torch.manual_seed(1)
    net = FlowNet().cuda()
    x1, x2 = torch.rand(1, 3, 64, 128, device="cuda"), torch.rand(1, 3, 64, 128, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fwd, bwd = net.forward_bidirectional(x1, x2)
    sum(o.abs().mean() for o in fwd + bwd).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("stereo", [False, True])
def test_depthnet_cuda_matches_cpu_and_autocast(stereo):
    torch.manual_seed(2)
    net = DepthNet(stereo=stereo).eval()
    x = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        ref = net(x)
        gpu = net.cuda().to(memory_format=torch.channels_last)
        gx = x.cuda().contiguous(memory_format=torch.channels_last)
        got = gpu(gx)
        for k in ref:
            for a, b in zip(got[k], ref[k]):
                torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-3)
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast("cuda", dtype=dtype):
                amp = gpu(gx)
            for k in ref:
                for a, b in zip(amp[k], ref[k]):
                    assert a.dtype == torch.float32 and torch.isfinite(a).all()
                    assert (a.cpu() - b).abs().max() < 0.02
