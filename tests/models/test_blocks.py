import math

import pytest
import torch
import torch.nn as nn

from trianflow.errors import InputError
from trianflow.models.blocks import (
    BasicBlock,
    Conv3x3,
    ConvELU,
    ResNet18Encoder,
    conv_lrelu,
    load_torchvision_resnet18,
    upsample2x,
)


def test_resnet18_param_count_matches_torchvision_without_fc():
    enc = ResNet18Encoder()
    # torchvision resnet18: 11,689,512 parameters, of which fc has 512*1000 + 1000 = 513,000
    assert sum(p.numel() for p in enc.parameters()) == 11_689_512 - 513_000


def test_resnet18_state_dict_uses_torchvision_names():
    sd = ResNet18Encoder().state_dict()
    # torchvision's resnet18 state dict has 122 entries, 2 of them fc.*
    assert len(sd) == 120
    for key in ["conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
                "layer4.1.bn2.bias", "layer3.1.conv2.weight"]:
        assert key in sd, key
    assert "mean" not in sd and "std" not in sd  # normalisation buffers are not persistent
    assert tuple(sd["layer4.0.downsample.0.weight"].shape) == (512, 256, 1, 1)


@pytest.mark.parametrize("h,w", [(64, 96), (70, 101)])
def test_resnet18_feature_shapes(h, w):
    enc = ResNet18Encoder().eval()
    with torch.no_grad():
        feats = enc(torch.rand(2, 3, h, w))
    assert len(feats) == 5
    for f, c, s in zip(feats, ResNet18Encoder.num_channels, ResNet18Encoder.strides):
        assert tuple(f.shape) == (2, c, math.ceil(h / s), math.ceil(w / s))


def test_resnet18_kaiming_init():
    torch.manual_seed(0)
    enc = ResNet18Encoder()
    w = enc.layer4[0].conv1.weight  # fan_out = 512 * 3 * 3
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / (512 * 9)), rel=0.02)
    assert torch.all(enc.layer3[1].bn2.weight == 1) and torch.all(enc.layer3[1].bn2.bias == 0)


def test_resnet18_normalises_input_inside():
    enc = ResNet18Encoder().eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    # the ImageNet-mean image becomes exactly 0 inside; conv1 has no bias and bn1 (eval, fresh) is
    # the identity with zero bias, so the stride-2 features vanish; an offset image does not
    with torch.no_grad():
        f0 = enc(mean.expand(1, 3, 32, 32).clone())[0]
        g0 = enc(mean.expand(1, 3, 32, 32) + 0.1)[0]
    assert f0.abs().max().item() < 1e-6
    assert g0.abs().max().item() > 1e-2
    with pytest.raises(InputError):
        enc(torch.rand(1, 4, 32, 32))


def _fake_torchvision_file(tmp_path, enc):
    sd = dict(enc.state_dict())
    sd["fc.weight"] = torch.randn(1000, 512)
    sd["fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    return path


def test_load_torchvision_resnet18_roundtrip(tmp_path):
    torch.manual_seed(0)
    src = ResNet18Encoder()
    for m in src.modules():  # make BN statistics non-trivial
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = _fake_torchvision_file(tmp_path, src)
    dst = load_torchvision_resnet18(path)
    x = torch.rand(1, 3, 64, 64)
    src.eval(), dst.eval()
    with torch.no_grad():
        for a, b in zip(src(x), dst(x)):
            assert torch.equal(a, b)


def test_load_torchvision_resnet18_tiles_conv1_for_stacked_inputs(tmp_path):
    torch.manual_seed(1)
    src = ResNet18Encoder().eval()
    path = _fake_torchvision_file(tmp_path, src)
    enc6 = load_torchvision_resnet18(path, in_channels=6).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = src(x)[-1]
        b = enc6(torch.cat([x, x], 1))[-1]
    assert torch.allclose(a, b, atol=1e-5)


def test_load_torchvision_resnet18_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_torchvision_resnet18(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    with pytest.raises(InputError, match="missing"):
        load_torchvision_resnet18(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="cannot read"):
        load_torchvision_resnet18(junk)


def test_conv3x3_reflection_keeps_constant_image_constant():
    torch.manual_seed(0)
    x = torch.full((1, 2, 5, 7), 0.7)
    refl, zero = Conv3x3(2, 3), Conv3x3(2, 3, reflect=False)
    zero.conv.load_state_dict(refl.conv.state_dict())
    y = refl(x)
    assert y.shape == (1, 3, 5, 7)
    assert torch.allclose(y, y[:, :, 2:3, 3:4].expand_as(y), atol=1e-6)
    assert not torch.allclose(zero(x)[:, :, 0, 0], y[:, :, 0, 0])  # zero padding changes the borders


def test_conv_lrelu_and_elu_activations():
    blk = conv_lrelu(1, 1, kernel_size=1)
    with torch.no_grad():
        blk[0].weight.fill_(1.0)
        blk[0].bias.zero_()
    x = torch.tensor([-2.0, 3.0]).view(1, 1, 1, 2)
    assert torch.allclose(blk(x), torch.tensor([-0.2, 3.0]).view(1, 1, 1, 2))
    elu = ConvELU(1, 1)
    with torch.no_grad():
        elu.conv.conv.weight.zero_()
        elu.conv.conv.weight[0, 0, 1, 1] = 1.0
        elu.conv.conv.bias.zero_()
    x = torch.full((1, 1, 3, 3), -1.0)
    assert torch.allclose(elu(x), torch.full_like(x, math.exp(-1) - 1))


def test_conv_lrelu_stride_and_dilation_shapes():
    assert conv_lrelu(3, 8, stride=2)(torch.rand(1, 3, 9, 11)).shape == (1, 8, 5, 6)
    assert conv_lrelu(3, 8, dilation=4)(torch.rand(1, 3, 9, 11)).shape == (1, 8, 9, 11)


def test_basic_block_shapes_and_shortcut():
    blk = BasicBlock(16, 32, stride=2)
    assert blk.downsample is not None
    assert blk(torch.rand(2, 16, 9, 12)).shape == (2, 32, 5, 6)
    ident = BasicBlock(8, 8).eval()
    assert ident.downsample is None
    with torch.no_grad():  # zero residual branch -> relu(x)
        ident.bn2.weight.zero_()
        x = torch.randn(1, 8, 6, 6)
        assert torch.allclose(ident(x), torch.relu(x))


def test_upsample2x():
    x = torch.full((1, 2, 3, 5), 0.25)
    y = upsample2x(x)
    assert y.shape == (1, 2, 6, 10) and torch.allclose(y, torch.full_like(y, 0.25))
    assert upsample2x(x, size=(7, 9)).shape == (1, 2, 7, 9)
