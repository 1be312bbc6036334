"""Correspondence scoring and sampling from dense forward/backward flow (TrianFlow selection).

score(p) = visible(p) / (0.1 + fb(p)), where ``visible`` is the occlusion mask obtained by forward
splatting the backward flow and ``fb`` the forward-backward distance. The best-scoring
``top_ratio`` of pixels are kept and ``num_samples`` of them drawn at random.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from trianflow.geometry.camera import pixel_grid
from trianflow.geometry.flow import fb_consistency, occlusion_mask


@dataclass
class Correspondences:
    """Sampled correspondences, batched.

    Attributes:
        x1: ``(B,N,2)`` pixel coordinates in image 1.
        x2: ``(B,N,2)`` pixel coordinates in image 2 (x1 + flow).
        score: ``(B,N)`` selection score.
        valid: ``(B,N)`` bool; False for padding when fewer than N pixels qualify.
    """

    x1: torch.Tensor
    x2: torch.Tensor
    score: torch.Tensor
    valid: torch.Tensor

    def __getitem__(self, b: int) -> "Correspondences":
        s = slice(b, b + 1)
        return Correspondences(self.x1[s], self.x2[s], self.score[s], self.valid[s])


def correspondence_scores(flow_fwd: torch.Tensor, flow_bwd: torch.Tensor,
                          occ_threshold: float = 0.5, eps: float = 0.1) -> torch.Tensor:
    """TrianFlow score map ``visible / (eps + fb_distance)``, 0 where the match leaves image 2.

    Args:
        flow_fwd: ``(B,2,H,W)`` flow 1 -> 2.  flow_bwd: ``(B,2,H,W)`` flow 2 -> 1.
    Returns:
        ``(B,1,H,W)`` non-negative scores (at most ``1/eps``).
    """
    b, _, h, w = flow_fwd.shape
    visible = occlusion_mask(flow_bwd, threshold=occ_threshold)
    fb = fb_consistency(flow_fwd, flow_bwd)
    grid = pixel_grid(h, w, device=flow_fwd.device, dtype=flow_fwd.dtype).unsqueeze(0) + flow_fwd
    inside = ((grid[:, 0] >= 0) & (grid[:, 0] <= w - 1) & (grid[:, 1] >= 0) & (grid[:, 1] <= h - 1)).unsqueeze(1)
    return visible * inside.to(flow_fwd.dtype) / (eps + fb)


def sample_correspondences(
    flow_fwd: torch.Tensor,
    flow_bwd: Optional[torch.Tensor] = None,
    num_samples: int = 6000,
    top_ratio: float = 0.2,
    score: Optional[torch.Tensor] = None,
    border: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Correspondences:
    """Keep the top ``top_ratio`` pixels by score, then draw ``num_samples`` of them at random.

    Args:
        flow_fwd: ``(B,2,H,W)`` flow 1 -> 2.
        flow_bwd: ``(B,2,H,W)`` flow 2 -> 1 (needed unless ``score`` is given).
        num_samples: N correspondences per sample.
        top_ratio: fraction of all pixels kept before random sampling.
        score: optional precomputed ``(B,1,H,W)`` score map (from :func:`correspondence_scores`).
        border: pixels this close to the image border are ignored.
        generator: torch RNG for reproducible sampling.
    Returns:
        :class:`Correspondences` with ``(B,N,...)`` tensors; ``valid`` is False for padding
        entries when fewer than N pixels have a positive score in the top set.
    """
    if score is None:
        if flow_bwd is None:
            raise ValueError("sample_correspondences needs flow_bwd or a precomputed score")
        score = correspondence_scores(flow_fwd, flow_bwd)
    b, _, h, w = flow_fwd.shape
    s = score.reshape(b, -1).clone()
    if border > 0:
        m = torch.zeros(h, w, dtype=torch.bool, device=s.device)
        m[border:h - border, border:w - border] = True
        s = s.masked_fill(~m.reshape(1, -1), 0)
    k = max(1, min(h * w, int(round(top_ratio * h * w))))
    n = num_samples
    gen_device = generator.device if generator is not None else s.device
    if k <= 4 * n or h * w <= 200_000:
        # exact top-k, then a random subset of it
        top_s, top_i = torch.topk(s, k, dim=1, sorted=False)
    else:
        # large images: the score of the k-th best pixel from a random subset of 100k pixels
        # (quantile estimate), then every pixel above it -- much faster than an exact top-k
        sub = torch.randint(0, h * w, (b, 100_000), device=gen_device, generator=generator).to(s.device)
        thr = torch.quantile(torch.gather(s, 1, sub), 1.0 - top_ratio, dim=1, keepdim=True)
        above = s >= thr
        kk = int(above.sum(1).max())
        top_s, top_i = torch.topk(torch.where(above, s, torch.zeros_like(s)), max(kk, 1), dim=1, sorted=False) \
            if b > 1 else (s[above].unsqueeze(0), torch.nonzero(above[0]).T)
        k = top_s.shape[1]
    # random subset of the top set: rank random keys, positive-score entries first
    keys = torch.rand(b, k, device=gen_device, generator=generator).to(s.device)
    keys = keys + (top_s <= 0).to(keys.dtype) * 2.0  # push zero-score entries to the end
    m = min(n, k)
    order = torch.topk(keys, m, dim=1, largest=False).indices
    idx = torch.gather(top_i, 1, order)
    sc = torch.gather(top_s, 1, order)
    valid = sc > 0
    if m < n:
        pad = n - m
        idx = torch.cat([idx, idx[:, :1].expand(b, pad)], 1)
        sc = torch.cat([sc, torch.zeros(b, pad, dtype=sc.dtype, device=sc.device)], 1)
        valid = torch.cat([valid, torch.zeros(b, pad, dtype=torch.bool, device=sc.device)], 1)
    ys = torch.div(idx, w, rounding_mode="floor")
    xs = idx - ys * w
    x1 = torch.stack([xs, ys], -1).to(flow_fwd.dtype)
    fl = flow_fwd.reshape(b, 2, -1)
    x2 = x1 + torch.stack([torch.gather(fl[:, 0], 1, idx), torch.gather(fl[:, 1], 1, idx)], -1)
    return Correspondences(x1=x1, x2=x2, score=sc, valid=valid)
