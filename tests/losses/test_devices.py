"""Device / dtype agnosticism of trianflow.losses: float32 on CPU, and CUDA vs CPU when available."""

import pytest
import torch

import trianflow.losses as L
from trianflow.geometry.warp import warp_by_depth_pose


def _inputs(device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h, w = 2, 12, 16
    img1 = torch.rand(b, 3, h, w, generator=g).to(device, dtype)
    img2 = torch.rand(b, 3, h, w, generator=g).to(device, dtype)
    flow = (torch.randn(b, 2, h, w, generator=g) * 0.5).to(device, dtype)
    depth = (torch.rand(b, 1, h, w, generator=g) + 2).to(device, dtype)
    disp = (torch.rand(b, 1, h, w, generator=g) * 0.05).to(device, dtype)
    K = torch.tensor([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]]).expand(b, 3, 3).to(device, dtype)
    T = torch.eye(4).expand(b, 4, 4).clone()
    T[:, 0, 3] = 0.1
    uv = (torch.rand(b, 30, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])).to(device, dtype)
    dtri = (torch.rand(b, 30, generator=g) + 2).to(device, dtype)
    return dict(img1=img1, img2=img2, flow=flow, depth=depth, disp=disp, K=K, T=T.to(device, dtype), uv=uv, dtri=dtri)


def _all_losses(x):
    out = {}
    out["photo"] = L.masked_mean(L.photometric_error(x["img1"], x["img2"]))
    out["smooth"] = L.edge_aware_smoothness(x["disp"], x["img1"])
    out["flow"] = L.flow_loss(x["img1"], x["img2"], [x["flow"]], [-x["flow"]]).total
    out["tri"] = L.trianflow_depth_objective(
        x["img1"], x["img2"], x["depth"], x["flow"], x["K"], x["T"], x["uv"], x["dtri"],
        torch.ones_like(x["dtri"], dtype=torch.bool)).total
    out["mono"] = L.monodepth_loss(x["img1"], x["img2"], [x["disp"]], [x["disp"]]).total
    out["ssi"] = L.ScaleShiftInvariantLoss()(x["disp"], x["depth"]).total
    warped, _ = warp_by_depth_pose(x["img2"], x["depth"], x["T"], x["K"])
    out["warp"] = warped.mean()
    return out


def test_float32_runs_finite():
    x = _inputs("cpu", torch.float32)
    for k, v in _all_losses(x).items():
        assert v.dtype == torch.float32 and torch.isfinite(v).all(), k
    y = _inputs("cpu", torch.float64)
    a, b = _all_losses(x), _all_losses(y)
    for k in a:
        assert torch.allclose(a[k].double(), b[k], rtol=1e-3, atol=1e-4), k


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    cpu = _all_losses(_inputs("cpu", torch.float32))
    gpu = _all_losses(_inputs("cuda", torch.float32))
    for k in cpu:
        assert gpu[k].device.type == "cuda", k
        assert torch.allclose(gpu[k].cpu(), cpu[k], rtol=1e-3, atol=1e-4), k
    src = torch.rand(2, 200, 3, device="cuda")
    T, rmse = L.icp_point_to_point(src, src + 0.01, torch.eye(4, device="cuda").expand(2, 4, 4))
    assert T.device.type == "cuda" and rmse.max() < 1e-4
