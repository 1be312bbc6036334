import json

import pytest
import torch

from trianflow.errors import InputError
from trianflow.models import (
    DepthNet,
    FlowNet,
    ResNet18Encoder,
    build_depthnet,
    build_flownet,
    check_state_dict,
    model_from_arch,
)


def test_build_flownet_from_config():
    net = build_flownet({"context": False, "max_displacement": 3})
    assert isinstance(net, FlowNet) and net.context_net is None
    assert net.estimators["64"].convs[0][0].in_channels == 49  # (2*3+1)^2 cost-volume channels
    assert build_flownet(None).arch_config()["args"] == {
        "pyramid_channels": [16, 32, 64, 96, 128, 196], "max_displacement": 4, "context": True}
    with pytest.raises(InputError, match="unknown key"):
        build_flownet({"contxt": False})


def test_build_depthnet_from_config(tmp_path):
    net = build_depthnet({"stereo": True, "disp_scale": 0.25, "max_depth": 80.0})
    assert isinstance(net, DepthNet) and net.stereo and net.disp_scale == 0.25 and net.max_depth == 80.0
    with pytest.raises(InputError, match="unknown key"):
        build_depthnet({"stero": True})
    # pretrained encoder from a local torchvision-format file
    torch.manual_seed(0)
    src = ResNet18Encoder()
    sd = dict(src.state_dict(), **{"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(sd, tmp_path / "r18.pth")
    net = build_depthnet({"pretrained_encoder": str(tmp_path / "r18.pth")})
    assert torch.equal(net.encoder.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    assert "pretrained_encoder" not in net.arch_config()["args"]
    del sd["layer4.1.bn2.weight"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(InputError, match=r"bad\.pth \(torchvision resnet18 weights\) does not match .*1 missing key"):
        build_depthnet({"pretrained_encoder": str(tmp_path / "bad.pth")})


@pytest.mark.parametrize("make", [
    lambda: FlowNet(pyramid_channels=(8, 16, 24, 32, 40, 48), context=False),
    lambda: DepthNet(num_scales=3, stereo=True, disp_scale=0.2, min_depth=0.5, max_depth=50.0),
])
def test_arch_round_trip(make):
    torch.manual_seed(1)
    model = make().eval()
    arch = json.loads(json.dumps(model.arch_config()))
    clone = model_from_arch(arch).eval()
    assert type(clone) is type(model) and clone.arch_config() == model.arch_config()
    check_state_dict(clone, model.state_dict())
    clone.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        if isinstance(model, FlowNet):
            a, b = model(x, x.flip(-1)), clone(x, x.flip(-1))
        else:
            a, b = model(x)["disp_left"], clone(x)["disp_left"]
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_check_state_dict_reports_other_architecture():
    flow_sd = FlowNet(pyramid_channels=(8, 16, 24, 32, 40, 48)).state_dict()
    with pytest.raises(InputError, match=r"ckpt\.pth does not match DepthNet: .*missing.*unexpected"):
        check_state_dict(DepthNet(), flow_sd, source="ckpt.pth")
    with pytest.raises(InputError, match="shape mismatch") as exc:
        check_state_dict(FlowNet(), flow_sd)
    assert "\n" not in str(exc.value)
    mono = DepthNet()
    with pytest.raises(InputError, match=r"8 shape mismatch\(es\) \(e.g. heads.0.conv.bias: \(2,\) vs \(1,\)\)"):
        check_state_dict(mono, DepthNet(stereo=True).state_dict())
    ddp = {"module." + k: v for k, v in mono.state_dict().items()}
    with pytest.raises(InputError, match="module\\."):
        check_state_dict(mono, ddp)
    with pytest.raises(InputError):
        check_state_dict(mono, [1, 2, 3])


def test_model_from_arch_bad():
    with pytest.raises(InputError, match="unknown model class"):
        model_from_arch({"class": "PoseNet", "args": {}})
    with pytest.raises(InputError):
        model_from_arch({"args": {}})
    with pytest.raises(InputError, match="unknown key"):
        model_from_arch({"class": "DepthNet", "args": {"layers": 50}})
