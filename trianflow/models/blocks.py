"""Building blocks for the networks: small conv blocks and a ResNet18 encoder written here.

No torchvision dependency and no downloads. :class:`ResNet18Encoder` keeps torchvision's parameter
names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``, ``downsample.0/1``) so a ResNet18 state dict
saved from torchvision (a local file, e.g. ``resnet18-f37072fd.pth``) loads with
:func:`load_torchvision_resnet18`; its ``fc.*`` entries are ignored.

Images are ``(B,3,H,W)`` float in [0,1] (see DESIGN.md); the encoder normalises them itself.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from trianflow.errors import InputError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_lrelu(in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
               slope: float = 0.1) -> nn.Sequential:
    """Zero-padded conv (``same`` size for stride 1) + LeakyReLU.

    ``(B,in_ch,H,W)`` -> ``(B,out_ch,ceil(H/stride),ceil(W/stride))``.
    """
    pad = ((kernel_size - 1) * dilation) // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=pad, dilation=dilation, bias=True),
        nn.LeakyReLU(slope, inplace=True),
    )


class Conv3x3(nn.Module):
    """Reflection-padded 3x3 conv (stride 1): ``(B,in_ch,H,W)`` -> ``(B,out_ch,H,W)``."""

    def __init__(self, in_ch: int, out_ch: int, reflect: bool = True):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1) if reflect else nn.ZeroPad2d(1)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvELU(nn.Module):
    """Reflection-padded 3x3 conv + ELU (the Monodepth decoder block): ``(B,in,H,W)`` -> ``(B,out,H,W)``."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = Conv3x3(in_ch, out_ch)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def conv3x3_bn(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 3x3 conv with padding 1, as used inside ResNet blocks."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs with BN + identity/projection shortcut).

    ``(B,in_ch,H,W)`` -> ``(B,out_ch,ceil(H/stride),ceil(W/stride))``. Parameter names match
    torchvision (``conv1, bn1, conv2, bn2, downsample.0, downsample.1``).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3_bn(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3_bn(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Encoder(nn.Module):
    """ResNet18 feature encoder (torchvision topology without avgpool/fc).

    7x7 stride-2 conv + BN + ReLU, 3x3 stride-2 max-pool, four stages of two :class:`BasicBlock`
    with 64/128/256/512 channels. The input is normalised inside with ImageNet mean/std (tiled
    for ``in_channels`` a multiple of 3, else mean 0.45 / std 0.225), so feed images in [0,1].

    Args:
        in_channels: input channels (3 for one RGB image, 6 for two stacked images, ...).

    ``forward(x (B,in_channels,H,W))`` returns a list of 5 feature maps at strides 2,4,8,16,32
    with 64, 64, 128, 256, 512 channels; the map at stride ``s`` is ``(B,C,ceil(H/s),ceil(W/s))``.
    Parameter count (in_channels=3): 11,176,512 (torchvision's 11,689,512 minus the 513,000 of fc).
    """

    num_channels = (64, 64, 128, 256, 512)
    strides = (2, 4, 8, 16, 32)

    def __init__(self, in_channels: int = 3):
        super().__init__()
        if in_channels < 1:
            raise InputError(f"ResNet18Encoder: in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        if in_channels % 3 == 0:
            k = in_channels // 3
            mean, std = list(IMAGENET_MEAN) * k, list(IMAGENET_STD) * k
        else:
            mean, std = [0.45] * in_channels, [0.225] * in_channels
        # non-persistent: the state dict keeps torchvision's key set
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f"ResNet18Encoder: expected input (B,{self.in_channels},H,W), got {tuple(x.shape)}"
            )
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]


def load_torchvision_resnet18(path: str | os.PathLike, encoder: ResNet18Encoder | None = None,
                              in_channels: int = 3) -> ResNet18Encoder:
    """Load a torchvision-format ResNet18 state dict from a local file into an encoder.

    Args:
        path: ``.pth`` file holding a torchvision ``resnet18`` state dict (``fc.*`` is ignored;
            a dict with a ``"state_dict"`` entry or ``"module."``-prefixed keys is accepted).
        encoder: the encoder to fill in place; a new ``ResNet18Encoder(in_channels)`` if None.
        in_channels: used only when ``encoder`` is None.
    Returns:
        The encoder with the weights loaded. For an encoder with ``3k`` input channels the
        3-channel ``conv1`` kernel is tiled k times and divided by k (Monodepth2's pose-net trick).
    Raises:
        InputError: the file is missing/unreadable or is not a ResNet18 state dict.
    """
    path = os.fspath(path)
    if encoder is None:
        encoder = ResNet18Encoder(in_channels)
    if not os.path.isfile(path):
        raise InputError(f"ResNet18 weights file not found: {path} (give a local torchvision resnet18 .pth)")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means a bad file
        raise InputError(f"cannot read ResNet18 weights {path}: {exc}") from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise InputError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items() if torch.is_tensor(v)}
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    w = sd.get("conv1.weight")
    cin = encoder.in_channels
    if w is not None and w.dim() == 4 and w.shape[1] == 3 and cin != 3 and cin % 3 == 0:
        sd["conv1.weight"] = w.repeat(1, cin // 3, 1, 1) / (cin // 3)
    from trianflow.models import check_state_dict  # the package imports this module: import late

    check_state_dict(encoder, sd, f"{path} (torchvision resnet18 weights)")
    encoder.load_state_dict(sd, strict=True)
    log.info("loaded ResNet18 weights from %s", path)
    return encoder


def upsample2x(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Bilinear upsampling ``(B,C,H,W)`` -> ``(B,C,2H,2W)`` (or to ``size`` when given)."""
    if size is None:
        size = (x.shape[-2] * 2, x.shape[-1] * 2)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
