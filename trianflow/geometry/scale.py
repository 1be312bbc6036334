"""Scale alignment between two sets of depths: ``dst ~ s * src`` (median, least squares, RANSAC)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

METHODS = ("median", "lsq", "ransac")


def align_scale(
    src: torch.Tensor,
    dst: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    method: str = "median",
    min_points: int = 10,
    inlier_rel: float = 0.1,
    iters: int = 100,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample scale ``s`` such that ``dst ~ s * src``.

    Args:
        src, dst: ``(B,N)`` positive depths (e.g. triangulated and predicted depth at the same pixels).
        valid: ``(B,N)`` bool mask; non-finite or non-positive entries are always ignored.
        method: ``"median"`` (median of ratios), ``"lsq"`` (least squares ``sum(src*dst)/sum(src^2)``)
            or ``"ransac"`` (one-point hypotheses from the ratios, inliers within ``inlier_rel``
            relative residual, least-squares refit on the inliers).
        min_points: fewer usable points marks the sample invalid (scale 1).
    Returns:
        ``(scale (B,), valid (B,) bool, inliers (B,N) bool)``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown scale method {method!r}; choose one of {', '.join(METHODS)}")
    ok = torch.isfinite(src) & torch.isfinite(dst) & (src > 0) & (dst > 0)
    if valid is not None:
        ok = ok & valid
    count = ok.sum(-1)
    src0 = torch.where(ok, src, torch.ones_like(src))
    dst0 = torch.where(ok, dst, torch.ones_like(dst))
    ratio = dst0 / src0
    if method == "median":
        r = torch.where(ok, ratio, torch.full_like(ratio, float("nan")))
        s = torch.nanmedian(r, dim=-1).values
        inl = ok & ((ratio / s.unsqueeze(-1) - 1).abs() < inlier_rel)
    elif method == "lsq":
        s = (src0 * dst0 * ok).sum(-1) / (src0 * src0 * ok).sum(-1).clamp(min=1e-30)
        inl = ok
    else:
        b, n = src.shape
        gen_dev = generator.device if generator is not None else src.device
        pick = (torch.rand(b, iters, device=gen_dev, generator=generator).to(src.device) * n).long()
        # choose among valid points by drawing from a valid-first permutation
        order = torch.argsort((~ok).to(src.dtype) + torch.rand(b, n, device=gen_dev, generator=generator).to(src.device), 1)
        pick = torch.gather(order, 1, (pick % count.clamp(min=1).unsqueeze(-1)))
        hyp = torch.gather(ratio, 1, pick)  # (B,I)
        res = (ratio.unsqueeze(1) / hyp.unsqueeze(-1) - 1).abs()  # (B,I,N)
        votes = ((res < inlier_rel) & ok.unsqueeze(1)).sum(-1)
        best = hyp.gather(1, votes.argmax(-1, keepdim=True)).squeeze(-1)
        inl = ok & ((ratio / best.unsqueeze(-1) - 1).abs() < inlier_rel)
        s = (src0 * dst0 * inl).sum(-1) / (src0 * src0 * inl).sum(-1).clamp(min=1e-30)
        s = torch.where(inl.sum(-1) > 0, s, best)
    good = (count >= min_points) & torch.isfinite(s) & (s > 0)
    s = torch.where(good, s, torch.ones_like(s))
    return s, good, inl & good.unsqueeze(-1)
