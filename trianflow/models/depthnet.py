"""Depth network: ResNet18 encoder + multi-scale disparity decoder (mono and stereo modes).

Decoder (Monodepth-style, written here): starting from the stride-32 encoder map, five steps
``i = 4 .. 0`` each do a reflection-padded 3x3 conv + ELU, bilinear x2 upsampling (to the size of the
skip map, so odd input sizes work), concatenation with the encoder map at stride ``2^i`` (none for
``i = 0``) and another 3x3 conv + ELU; channels 256, 128, 64, 32, 16. A disparity head (3x3 conv +
sigmoid) reads steps 0..3, i.e. scales full, 1/2, 1/4, 1/8. The output at scale ``s`` has size
``(ceil(H/2^s), ceil(W/2^s))`` (the encoder's own sizes), element 0 is exactly ``(H, W)``.

One class with a mode flag (the decoder is shared; only the head width changes):

* **mono** (``stereo=False``): one channel per scale, ``{"disp": [4 x (B,1,H_s,W_s)]}`` with values
  in (0, 1); convert with :func:`disp_to_depth` (``min_depth``/``max_depth`` are stored on the model).
* **stereo** (``stereo=True``): two channels per scale predicted from the *left* image,
  ``{"disp_left": [...], "disp_right": [...]}``, each ``(B,1,H_s,W_s)`` = ``disp_scale * sigmoid``, the
  disparity as a fraction of the image width (in (0, disp_scale)); convert with
  :func:`disp_fraction_to_pixels`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trianflow.errors import InputError
from trianflow.models.blocks import Conv3x3, ConvELU, ResNet18Encoder

__all__ = ["DepthNet", "disp_to_depth", "disp_fraction_to_pixels"]


def disp_to_depth(disp: torch.Tensor, min_depth: float = 0.1, max_depth: float = 100.0):
    """Sigmoid disparity -> (scaled disparity, depth), as in Monodepth2.

    ``scaled = 1/max_depth + (1/min_depth - 1/max_depth) * disp``, ``depth = 1/scaled``, so depth lies
    in ``[min_depth, max_depth]`` for ``disp`` in [0, 1].

    Args:
        disp: ``(B,1,H,W)`` (any shape) network output in [0, 1].
        min_depth, max_depth: depth range, ``0 < min_depth < max_depth``.
    Returns:
        ``(scaled_disp, depth)``, same shape as ``disp``.
    """
    if not (0 < min_depth < max_depth):
        raise InputError(f"disp_to_depth: need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled


def disp_fraction_to_pixels(disp: torch.Tensor, width: int) -> torch.Tensor:
    """Disparity as a fraction of the image width -> disparity in pixels of a ``width``-wide image.

    Args:
        disp: ``(B,1,H,W)`` (any shape) fraction of the width (stereo DepthNet output).
        width: image width in pixels at which the disparity is wanted (usually ``W`` of ``disp``).
    Returns:
        ``disp * width``, same shape.
    """
    return disp * float(width)


class DepthNet(nn.Module):
    """ResNet18 encoder + multi-scale disparity decoder.

    Args:
        num_scales: number of output scales (1..4), full resolution first.
        min_depth, max_depth: depth range used by :meth:`depth` / :func:`disp_to_depth` (mono mode).
        stereo: predict left and right disparities (as a fraction of the width) instead of one
            sigmoid disparity.
        disp_scale: maximum disparity fraction in stereo mode (output = disp_scale * sigmoid).
        in_channels: encoder input channels (3 for an RGB image).

    ``forward(img (B,3,H,W) in [0,1])`` -> dict (see the module docstring); the list element ``s``
    is ``(B,1,ceil(H/2^s),ceil(W/2^s))``, always fp32 (also under autocast).
    """

    decoder_channels = (16, 32, 64, 128, 256)

    def __init__(self, num_scales: int = 4, min_depth: float = 0.1, max_depth: float = 100.0,
                 stereo: bool = False, disp_scale: float = 0.3, in_channels: int = 3):
        super().__init__()
        if not 1 <= int(num_scales) <= 4:
            raise InputError(f"DepthNet: num_scales must be 1..4, got {num_scales}")
        if not (0 < float(min_depth) < float(max_depth)):
            raise InputError(f"DepthNet: need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        if not float(disp_scale) > 0:
            raise InputError(f"DepthNet: disp_scale must be > 0, got {disp_scale}")
        self.num_scales = int(num_scales)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.stereo = bool(stereo)
        self.disp_scale = float(disp_scale)
        self.in_channels = int(in_channels)

        self.encoder = ResNet18Encoder(self.in_channels)
        enc = ResNet18Encoder.num_channels
        dec = self.decoder_channels
        self.upconv0 = nn.ModuleList()
        self.upconv1 = nn.ModuleList()
        for i in range(4, -1, -1):
            cin = enc[-1] if i == 4 else dec[i + 1]
            self.upconv0.append(ConvELU(cin, dec[i]))
            skip = enc[i - 1] if i > 0 else 0
            self.upconv1.append(ConvELU(dec[i] + skip, dec[i]))
        out_ch = 2 if self.stereo else 1
        self.heads = nn.ModuleList(Conv3x3(dec[s], out_ch) for s in range(self.num_scales))

    def arch_config(self) -> dict:
        """JSON-able description ``{"class": "DepthNet", "args": {...}}`` (constructor args)."""
        return {
            "class": "DepthNet",
            "args": {
                "num_scales": self.num_scales,
                "min_depth": self.min_depth,
                "max_depth": self.max_depth,
                "stereo": self.stereo,
                "disp_scale": self.disp_scale,
                "in_channels": self.in_channels,
            },
        }

    def forward(self, img: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Disparities at ``num_scales`` scales (full resolution first).

        Args:
            img: ``(B,in_channels,H,W)`` in [0,1].
        Returns:
            mono: ``{"disp": [(B,1,H_s,W_s)] }`` sigmoid in (0,1);
            stereo: ``{"disp_left": [...], "disp_right": [...]}`` fraction of width in (0, disp_scale);
            ``H_s = ceil(H/2^s)``, ``W_s = ceil(W/2^s)``.
        """
        if img.dim() != 4 or img.shape[1] != self.in_channels:
            raise InputError(f"DepthNet: expected (B,{self.in_channels},H,W) images, got {tuple(img.shape)}")
        feats = self.encoder(img)
        x = feats[-1]
        outs: dict[int, torch.Tensor] = {}
        for step, i in enumerate(range(4, -1, -1)):
            x = self.upconv0[step](x)
            size = feats[i - 1].shape[-2:] if i > 0 else img.shape[-2:]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            if i > 0:
                x = torch.cat([x, feats[i - 1]], 1)
            x = self.upconv1[step](x)
            if i < self.num_scales:
                outs[i] = torch.sigmoid(self.heads[i](x).float())  # fp32 even under autocast
        disps = [outs[s] for s in range(self.num_scales)]
        if not self.stereo:
            return {"disp": disps}
        return {
            "disp_left": [self.disp_scale * d[:, 0:1] for d in disps],
            "disp_right": [self.disp_scale * d[:, 1:2] for d in disps],
        }

    def depth(self, disp: torch.Tensor) -> torch.Tensor:
        """Mono sigmoid disparity ``(B,1,H,W)`` -> depth ``(B,1,H,W)`` in [min_depth, max_depth]."""
        return disp_to_depth(disp, self.min_depth, self.max_depth)[1]
