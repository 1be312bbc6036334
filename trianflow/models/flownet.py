"""PWC-style optical-flow network (feature pyramid, warping, cost volume, context refinement).

Architecture (:class:`FlowNet`, ~8.7 M parameters with the defaults, like TrianFlow's PWC):

* **Feature pyramid**: 6 levels at strides 2, 4, .., 64, each two 3x3 convs (the first with
  stride 2) + LeakyReLU(0.1), channels ``pyramid_channels`` (16, 32, 64, 96, 128, 196). Both
  images go through it in one batched call.
* **Coarse-to-fine estimation** at strides 64, 32, 16, 8, 4: the flow of the coarser level is
  upsampled bilinearly (x2 in size and value), image 2's features are warped with it
  (:func:`trianflow.geometry.flow.flow_warp`, fp32), a cost volume with max displacement 4
  (81 channels, :func:`cost_volume`, fp32) is built, and a DenseNet-style estimator (128, 128, 96,
  64, 32 channels) predicts a *residual* flow from ``[cost volume, features of image 1,
  upsampled flow, upsampled estimator features (4x4 deconv, 2 ch)]``; the coarsest level sees
  only its cost volume.
* **Context network** at stride 4: dilated 3x3 convs (dilation 1, 2, 4, 8, 16, 1) on the last
  estimator features + flow, adding a residual to the stride-4 flow.
* **Full resolution**: the stride-4 flow is upsampled bilinearly x4 (values x4), as PWC does.

Flows are always returned in fp32 (residuals predicted under autocast are accumulated in fp32),
in *pixels of their own resolution*, flow = coords in image 2 - coords in image 1, channel 0 = x.
Inputs of any size are padded (replicate, bottom/right) to a multiple of 64 and the outputs are
cropped back; the output at stride ``s`` has size ``(ceil(H/s), ceil(W/s))``.

Cost-volume implementation: a Python loop over the 81 shifts of a zero-padded ``f2``
(``(f1 * f2_shifted).mean(1)``) is the default. On 2 (shared, noisy) CPU cores it was 1.1-10x faster
than ``F.unfold`` and than a strided-view/einsum variant at the levels of a 256x832 input (fwd and
fwd+bwd; whole bidirectional forward ~4.3 s vs ~5.5-7 s) and needs no ``(B,C*81,H,W)`` temporary.
``method="unfold"`` (set ``FlowNet.corr_method``) is kept as an alternative: one kernel instead of
162 small ones, which may win on a GPU at small resolutions (not measured: no GPU was available).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from trianflow.errors import InputError
from trianflow.geometry.flow import flow_warp
from trianflow.models.blocks import conv_lrelu

__all__ = ["FlowNet", "cost_volume", "upsample_flow"]


def cost_volume(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int = 4, method: str = "loop") -> torch.Tensor:
    """Correlation cost volume between two feature maps (no activation applied).

    ``out[b, k, y, x] = mean_c f1[b,c,y,x] * f2[b,c,y+v,x+u]`` with ``f2`` zero outside the map and
    displacement ``(u, v) = (k % D - d, k // D - d)``, ``D = 2d+1``, ``d = max_displacement``.

    Args:
        f1, f2: ``(B,C,H,W)`` features (same shape and dtype).
        max_displacement: ``d``; the volume has ``D*D`` channels (81 for d=4).
        method: ``"loop"`` (loop over shifts, default) or ``"unfold"`` (``F.unfold`` patches).
    Returns:
        ``(B,D*D,H,W)`` in the dtype of the inputs.
    """
    if f1.shape != f2.shape or f1.dim() != 4:
        raise InputError(
            f"cost_volume: need two (B,C,H,W) maps of equal shape, got {tuple(f1.shape)} and {tuple(f2.shape)}"
        )
    d = int(max_displacement)
    if d < 0:
        raise InputError(f"cost_volume: max_displacement must be >= 0, got {max_displacement}")
    b, c, h, w = f1.shape
    k = 2 * d + 1
    if method == "loop":
        f2p = F.pad(f2, (d, d, d, d))
        out = [
            (f1 * f2p[:, :, dy:dy + h, dx:dx + w]).mean(1, keepdim=True)
            for dy in range(k)
            for dx in range(k)
        ]
        return torch.cat(out, 1)
    if method == "unfold":
        patches = F.unfold(f2, k, padding=d).view(b, c, k * k, h, w)
        return (patches * f1.unsqueeze(2)).mean(1)
    raise InputError(f"cost_volume: unknown method {method!r} (use 'loop' or 'unfold')")


def upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a flow field and rescale its values to the new resolution.

    Args:
        flow: ``(B,2,h,w)`` flow in pixels of the ``h x w`` grid.
        size: target ``(H, W)``.
    Returns:
        ``(B,2,H,W)`` flow in pixels of the target grid (x scaled by ``W/w``, y by ``H/h``).
    """
    h, w = flow.shape[-2:]
    H, W = size
    up = F.interpolate(flow, size=(H, W), mode="bilinear", align_corners=False)
    scale = torch.tensor([W / w, H / h], dtype=up.dtype, device=up.device).view(1, 2, 1, 1)
    return up * scale


class _DenseEstimator(nn.Module):
    """DenseNet-style flow estimator: ``(B,N,h,w)`` -> (flow ``(B,2,h,w)``, features ``(B,N+448,h,w)``)."""

    widths = (128, 128, 96, 64, 32)

    def __init__(self, in_ch: int):
        super().__init__()
        layers = []
        ch = in_ch
        for wd in self.widths:
            layers.append(conv_lrelu(ch, wd))
            ch += wd
        self.convs = nn.ModuleList(layers)
        self.out_channels = ch
        self.predict = nn.Conv2d(ch, 2, 3, padding=1)

    def forward(self, x: torch.Tensor):
        for conv in self.convs:
            x = torch.cat([conv(x), x], 1)
        return self.predict(x), x


class _ContextNet(nn.Module):
    """Dilated-conv refinement: ``(B,N,h,w)`` -> residual flow ``(B,2,h,w)``."""

    def __init__(self, in_ch: int):
        super().__init__()
        spec = [(128, 1), (128, 2), (128, 4), (96, 8), (64, 16), (32, 1)]
        layers, ch = [], in_ch
        for wd, dil in spec:
            layers.append(conv_lrelu(ch, wd, dilation=dil))
            ch = wd
        self.body = nn.Sequential(*layers)
        self.predict = nn.Conv2d(ch, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(self.body(x))


class FlowNet(nn.Module):
    """PWC-style flow network (see the module docstring for the architecture).

    Args:
        pyramid_channels: channels of the 6 pyramid levels (strides 2 .. 64).
        max_displacement: cost-volume search radius ``d`` in pixels of each level (81 channels for 4).
        context: add the dilated context network at stride 4.

    Attributes:
        output_strides: ``(1, 4, 8, 16, 32)``: stride of each element of the output list.
        corr_method: ``"loop"`` or ``"unfold"`` (see :func:`cost_volume`); not part of the
            architecture, may be changed at any time.

    ``forward(img1, img2)``: ``(B,3,H,W)`` images in [0,1] (mapped to [-1,1] inside) -> list of
    5 flows 1 -> 2, ``out[i]`` of shape ``(B,2,ceil(H/s),ceil(W/s))`` with ``s = output_strides[i]``,
    in pixels of that resolution, fp32. ``out[0]`` is at the full input resolution.
    """

    num_levels = 6
    output_strides = (1, 4, 8, 16, 32)

    def __init__(self, pyramid_channels=(16, 32, 64, 96, 128, 196), max_displacement: int = 4, context: bool = True):
        super().__init__()
        pyramid_channels = tuple(int(c) for c in pyramid_channels)
        if len(pyramid_channels) != self.num_levels or min(pyramid_channels) < 1:
            raise InputError(f"FlowNet: pyramid_channels needs 6 positive ints, got {pyramid_channels}")
        if int(max_displacement) < 1:
            raise InputError(f"FlowNet: max_displacement must be >= 1, got {max_displacement}")
        self.pyramid_channels = pyramid_channels
        self.max_displacement = int(max_displacement)
        self.context = bool(context)
        self.corr_method = "loop"
        ncorr = (2 * self.max_displacement + 1) ** 2

        pyr, ch = [], 3
        for c in pyramid_channels:
            pyr.append(nn.Sequential(conv_lrelu(ch, c, stride=2), conv_lrelu(c, c)))
            ch = c
        self.pyramid = nn.ModuleList(pyr)

        # estimators for pyramid indices 5 (stride 64) down to 1 (stride 4); keys by stride
        self.estimators = nn.ModuleDict()
        self.upfeat = nn.ModuleDict()
        prev_out = None
        for li in range(self.num_levels - 1, 0, -1):
            stride = 2 ** (li + 1)
            in_ch = ncorr if prev_out is None else ncorr + pyramid_channels[li] + 2 + 2
            est = _DenseEstimator(in_ch)
            self.estimators[str(stride)] = est
            if li > 1:  # features are upsampled for the next finer level
                self.upfeat[str(stride)] = nn.ConvTranspose2d(est.out_channels, 2, 4, stride=2, padding=1)
            prev_out = est.out_channels
        self.context_net = _ContextNet(prev_out + 2) if self.context else None

    # ------------------------------------------------------------------ config
    def arch_config(self) -> dict:
        """JSON-able description ``{"class": "FlowNet", "args": {...}}`` (constructor args)."""
        return {
            "class": "FlowNet",
            "args": {
                "pyramid_channels": list(self.pyramid_channels),
                "max_displacement": self.max_displacement,
                "context": self.context,
            },
        }

    # ------------------------------------------------------------------ parts
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature pyramid of images ``(N,3,H,W)`` in [0,1], H and W multiples of 64.

        Returns 6 maps ``(N,C_i,H/2^(i+1),W/2^(i+1))``, finest first.
        """
        x = x * 2.0 - 1.0
        feats = []
        for level in self.pyramid:
            x = level(x)
            feats.append(x)
        return feats

    def _warp(self, feat: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=feat.device.type, enabled=False):
            warped, _ = flow_warp(feat.float(), flow.float())
        return warped

    def _corr(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=f1.device.type, enabled=False):
            cv = cost_volume(f1.float(), f2.float(), self.max_displacement, self.corr_method)
            return F.leaky_relu(cv, 0.1)

    def decode(self, feats1: list[torch.Tensor], feats2: list[torch.Tensor]) -> list[torch.Tensor]:
        """Coarse-to-fine flow from two feature pyramids (as returned by :meth:`features`).

        Returns the flows at strides 4, 8, 16, 32, 64 (finest first), ``(N,2,h_s,w_s)`` fp32 in
        pixels of their level.
        """
        flows = []
        flow = feat_up = None
        for li in range(self.num_levels - 1, 0, -1):
            stride = str(2 ** (li + 1))
            f1, f2 = feats1[li], feats2[li]
            if flow is None:
                x = self._corr(f1, f2)
            else:
                up = upsample_flow(flow, f1.shape[-2:])
                x = torch.cat([self._corr(f1, self._warp(f2, up)), f1, up, feat_up.to(f1.dtype)], 1)
            res, est_feat = self.estimators[stride](x)
            flow = res.float() if flow is None else up + res.float()
            if li > 1:
                feat_up = self.upfeat[stride](est_feat)
            elif self.context_net is not None:
                flow = flow + self.context_net(torch.cat([est_feat, flow.to(est_feat.dtype)], 1)).float()
            flows.append(flow)
        return flows[::-1]

    # ------------------------------------------------------------------ forward
    @staticmethod
    def _check(img1: torch.Tensor, img2: torch.Tensor) -> None:
        if img1.dim() != 4 or img1.shape[1] != 3 or img1.shape != img2.shape:
            raise InputError(
                f"FlowNet: need two (B,3,H,W) images of equal shape, got {tuple(img1.shape)} and {tuple(img2.shape)}"
            )

    def _run(self, img1: torch.Tensor, img2: torch.Tensor, both: bool) -> list[torch.Tensor]:
        self._check(img1, img2)
        b, _, h, w = img1.shape
        hp, wp = 64 * math.ceil(h / 64), 64 * math.ceil(w / 64)
        x = torch.cat([img1, img2], 0)
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
        feats = self.features(x)
        if both:  # pairs (1->2) for the first B, (2->1) for the second B
            feats1 = feats
            feats2 = [torch.cat([f[b:], f[:b]], 0) for f in feats]
        else:
            feats1 = [f[:b] for f in feats]
            feats2 = [f[b:] for f in feats]
        coarse = self.decode(feats1, feats2)  # strides 4..64
        full = upsample_flow(coarse[0], (hp, wp))
        outs = [full[..., :h, :w]]
        for s, fl in zip(self.output_strides[1:], coarse):
            outs.append(fl[..., : math.ceil(h / s), : math.ceil(w / s)])
        return outs

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> list[torch.Tensor]:
        """Flow from ``img1`` to ``img2``.

        Args:
            img1, img2: ``(B,3,H,W)`` in [0,1], any H, W.
        Returns:
            list of 5 tensors, ``out[i]``: ``(B,2,ceil(H/s),ceil(W/s))``, ``s = output_strides[i] =
            (1,4,8,16,32)[i]``, fp32, in pixels of that resolution.
        """
        return self._run(img1, img2, both=False)

    def forward_bidirectional(self, img1: torch.Tensor, img2: torch.Tensor):
        """Forward (1 -> 2) and backward (2 -> 1) flows in one batched pass.

        The feature pyramid runs once on ``cat([img1, img2])`` and the decoder once on the
        ``2B`` pairs ``cat([img1,img2]) -> cat([img2,img1])``.

        Args:
            img1, img2: ``(B,3,H,W)`` in [0,1].
        Returns:
            ``(fwd, bwd)``: two lists shaped as in :meth:`forward`.
        """
        outs = self._run(img1, img2, both=True)
        b = img1.shape[0]
        return [o[:b] for o in outs], [o[b:] for o in outs]
