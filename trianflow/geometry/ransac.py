"""Robust relative-pose estimation behind one interface with interchangeable backends.

Backends (all return :class:`TwoViewResult`):

- ``"opencv"``: ``cv2.findEssentialMat`` with USAC MAGSAC++ on normalised coordinates, per sample.
- ``"pycolmap"``: ``pycolmap.estimate_essential_matrix`` (LO-RANSAC), per sample.
- ``"torch"``: batched RANSAC on the input's device (GPU during training): weighted 8-point
  hypotheses from random minimal sets, Sampson scoring of every hypothesis against every point,
  then iteratively re-weighted 8-point refinement on the inliers. fp64 inside.

The pose is then chosen among the four decompositions of E by cheirality
(:func:`trianflow.geometry.epipolar.pose_from_essential`), so all backends share that step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional

import cv2
import numpy as np
import torch

from trianflow.geometry.epipolar import (
    cheirality_mask,
    eight_point,
    essential_from_pose,
    refine_relative_pose,
    fundamental_from_essential,
    normalize_points,
    pose_from_essential,
    sampson_distance,
)

log = logging.getLogger(__name__)
BACKENDS = ("opencv", "pycolmap", "torch")


@dataclass
class TwoViewResult:
    """Relative pose of image 2 w.r.t. image 1, batched.

    Attributes:
        E: ``(B,3,3)`` essential matrix (unit Frobenius norm), ``x2n^T E x1n = 0``.
        F: ``(B,3,3)`` fundamental matrix, ``x2^T F x1 = 0``.
        R: ``(B,3,3)`` rotation and t: ``(B,3)`` unit translation with ``X2 = R X1 + t``.
        inliers: ``(B,N)`` bool, RANSAC inliers that also pass cheirality.
        num_inliers: ``(B,)`` int.
        valid: ``(B,)`` bool, False where estimation failed (then R = I, t = 0).
        reason: per sample ``"ok"`` or why it failed.
    """

    E: torch.Tensor
    F: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    inliers: torch.Tensor
    num_inliers: torch.Tensor
    valid: torch.Tensor
    reason: List[str] = field(default_factory=list)


def estimate_relative_pose(
    x1: torch.Tensor,
    x2: torch.Tensor,
    K1: torch.Tensor,
    K2: Optional[torch.Tensor] = None,
    valid: Optional[torch.Tensor] = None,
    backend: str = "opencv",
    threshold: float = 1.0,
    confidence: float = 0.999,
    max_iters: int = 1000,
    min_inliers: int = 15,
    seed: int = 0,
    num_hypotheses: int = 256,
    refine_iters: int = 10,
    lo_rounds: int = 3,
    refine_max_points: int = 1000,
    ransac_max_points: int = 2000,
) -> TwoViewResult:
    """Estimate E, F and the cheirality-checked [R|t] from pixel correspondences.

    Args:
        x1, x2: ``(B,N,2)`` pixel correspondences (pixel centres at integers).
        K1, K2: ``(B,3,3)`` intrinsics (K2 defaults to K1).
        valid: ``(B,N)`` bool mask of usable correspondences.
        backend: ``"opencv"``, ``"pycolmap"`` or ``"torch"``.
        threshold: inlier threshold in pixels (Sampson distance).
        confidence, max_iters: RANSAC parameters (``num_hypotheses`` for the torch backend).
        min_inliers: fewer inliers than this marks the sample invalid.
        ransac_max_points: the opencv/pycolmap backends draw hypotheses from at most this many
            random valid points (inliers are then counted over all of them).
        refine_max_points: at most this many random inliers enter the refinement.
        refine_iters: Levenberg-Marquardt iterations on the inliers' Sampson error after RANSAC
            (0 keeps the backend's own estimate).
    Returns:
        :class:`TwoViewResult` on the device/dtype of ``x1``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown RANSAC backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    K2 = K1 if K2 is None else K2
    b, n, _ = x1.shape
    if valid is None:
        valid = torch.ones(b, n, dtype=torch.bool, device=x1.device)
    x1d, x2d = x1.double(), x2.double()
    K1d, K2d = K1.double(), K2.double()
    x1n, x2n = normalize_points(x1d, K1d), normalize_points(x2d, K2d)
    # threshold in normalised units (mean focal of the two cameras)
    f = 0.25 * (K1d[:, 0, 0] + K1d[:, 1, 1] + K2d[:, 0, 0] + K2d[:, 1, 1])
    if backend == "torch":
        E, inl, ok, reasons = _torch_ransac(x1n, x2n, valid, threshold / f, num_hypotheses, min_inliers, seed)
    else:
        E = torch.zeros(b, 3, 3, dtype=torch.float64)
        inl = torch.zeros(b, n, dtype=torch.bool)
        ok = torch.zeros(b, dtype=torch.bool)
        reasons = []
        for i in range(b):
            m = valid[i].cpu().numpy()
            if m.sum() < max(8, min_inliers):
                reasons.append(f"too few correspondences ({int(m.sum())})")
                continue
            fn = _opencv_essential if backend == "opencv" else _pycolmap_essential
            idx = np.flatnonzero(m)
            if len(idx) > ransac_max_points:  # hypotheses from a random subset, inliers over all points
                idx = np.sort(np.random.default_rng(seed).choice(idx, ransac_max_points, replace=False))
            Ei, _, why = fn(x1n[i].cpu().numpy()[idx], x2n[i].cpu().numpy()[idx], float(threshold / f[i]),
                            confidence, max_iters, seed, x1d[i].cpu().numpy()[idx], x2d[i].cpu().numpy()[idx],
                            K1d[i].cpu().numpy(), K2d[i].cpu().numpy())
            if Ei is None:
                reasons.append(why)
                continue
            d = sampson_distance(torch.from_numpy(Ei)[None], x1n[i:i + 1].cpu(), x2n[i:i + 1].cpu())[0].numpy()
            full = m & (d < float(threshold / f[i]))
            E[i] = torch.from_numpy(Ei)
            inl[i] = torch.from_numpy(full)
            ok[i] = True
            reasons.append("ok")
        E, inl, ok = E.to(x1.device), inl.to(x1.device), ok.to(x1.device)
    # a fixed random subset of at most `refine_max_points` points picks the cheirality hypothesis and
    # enters the refinement (cost ~ N; accuracy saturates long before N = 6000)
    sub = torch.arange(n, device=x1.device)
    if n > refine_max_points:
        g = torch.Generator(device="cpu").manual_seed(seed + 1)
        sub = torch.randperm(n, generator=g)[:refine_max_points].to(x1.device)
    s1, s2 = x1n[:, sub], x2n[:, sub]
    R, t, front_s, _ = pose_from_essential(E, s1, s2, inl[:, sub])
    if refine_iters > 0:
        # local optimisation: alternate inlier selection (2x threshold) and robust LM on Sampson error
        thr_n = (threshold / f).unsqueeze(-1)
        cur = inl[:, sub] & front_s
        for _ in range(lo_rounds):
            R, t = refine_relative_pose(R, t, s1, s2, weights=cur.double(), iters=refine_iters, robust_scale=thr_n)
            cur = (sampson_distance(essential_from_pose(R, t), s1, s2) < 2 * thr_n) & valid[:, sub] & ok.unsqueeze(-1)
        E = essential_from_pose(R, t)
        inl = (sampson_distance(E, x1n, x2n) < thr_n) & valid & ok.unsqueeze(-1)
    front = cheirality_mask(R, t, x1n, x2n)
    inl = inl & front
    num = inl.sum(-1)
    few = ok & (num < min_inliers)
    for i in torch.nonzero(few).flatten().tolist():
        reasons[i] = f"too few inliers after cheirality ({int(num[i])} < {min_inliers})"
    ok = ok & ~few
    eye = torch.eye(3, dtype=R.dtype, device=R.device).expand_as(R)
    R = torch.where(ok[:, None, None], R, eye)
    t = torch.where(ok[:, None], t, torch.zeros_like(t))
    E = E / E.flatten(1).norm(dim=1).clamp(min=1e-300)[:, None, None]
    F = fundamental_from_essential(E, K1d, K2d)
    F = F / F.flatten(1).norm(dim=1).clamp(min=1e-300)[:, None, None]
    dt = x1.dtype
    return TwoViewResult(E=E.to(dt), F=F.to(dt), R=R.to(dt), t=t.to(dt), inliers=inl, num_inliers=num,
                         valid=ok, reason=reasons)


def _local_optimisation(Eh, cost, x1n, x2n, valid, thr_1, k: int, gen, max_points: int = 1000, iters: int = 8):
    """Refine the ``k`` lowest-cost hypotheses ``Eh (B,H,3,3)`` of each sample and return the best
    refined E ``(B,3,3)`` by MSAC cost over all valid points."""
    b, n, _ = x1n.shape
    dev = x1n.device
    top = torch.topk(cost, k, dim=1, largest=False).indices  # (B,k)
    Ek = torch.gather(Eh, 1, top[..., None, None].expand(b, k, 3, 3)).reshape(b * k, 3, 3)
    sub = torch.arange(n, device=dev)
    if n > max_points:  # a fixed random subset keeps the cost independent of N
        sub = torch.randperm(n, generator=gen)[:max_points].to(dev)
    s1 = x1n[:, sub].repeat_interleave(k, 0)
    s2 = x2n[:, sub].repeat_interleave(k, 0)
    vs = valid[:, sub].repeat_interleave(k, 0)
    thr_k = thr_1.repeat_interleave(k, 0)
    inl = (sampson_distance(Ek, s1, s2, squared=True) < thr_k**2) & vs
    R, t, _, _ = pose_from_essential(Ek, s1, s2, inl)
    R, t = refine_relative_pose(R, t, s1, s2, weights=vs.double(), iters=iters, robust_scale=thr_k)
    Er = essential_from_pose(R, t).reshape(b, k, 3, 3)
    d = sampson_distance(Er, x1n.unsqueeze(1), x2n.unsqueeze(1), squared=True)
    c = torch.where(valid.unsqueeze(1), d.clamp(max=thr_1.unsqueeze(-1) ** 2), torch.zeros_like(d)).sum(-1)
    best = c.argmin(1)
    return Er[torch.arange(b, device=dev), best]


def _best_of_stack(Es: np.ndarray, x1n: np.ndarray, x2n: np.ndarray, thr: float):
    """OpenCV may stack several 3x3 solutions: keep the one with most Sampson inliers."""
    Es = Es.reshape(-1, 3, 3)
    if len(Es) == 1:
        return Es[0]
    Et = torch.from_numpy(Es)
    a = torch.from_numpy(x1n).unsqueeze(0).expand(len(Es), -1, -1)
    b = torch.from_numpy(x2n).unsqueeze(0).expand(len(Es), -1, -1)
    d = sampson_distance(Et, a, b)
    return Es[int((d < thr).sum(-1).argmax())]


def _opencv_essential(x1n, x2n, thr, confidence, max_iters, seed, *_):
    cv2.setRNGSeed(seed)
    Es, mask = cv2.findEssentialMat(
        np.ascontiguousarray(x1n), np.ascontiguousarray(x2n), np.eye(3), method=cv2.USAC_MAGSAC,
        prob=confidence, threshold=thr, maxIters=max_iters,
    )
    if Es is None or Es.size < 9 or not np.isfinite(Es).all():
        return None, None, "opencv findEssentialMat found no solution"
    E = _best_of_stack(Es, x1n, x2n, thr)
    d = sampson_distance(torch.from_numpy(E)[None], torch.from_numpy(x1n)[None], torch.from_numpy(x2n)[None])[0]
    return E, (d.numpy() < thr), "ok"


def _pycolmap_essential(x1n, x2n, thr, confidence, max_iters, seed, x1, x2, K1, K2):
    import pycolmap

    def cam(K):
        return pycolmap.Camera(model="PINHOLE", width=int(2 * K[0, 2] + 1), height=int(2 * K[1, 2] + 1),
                               params=[K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])

    opts = pycolmap.RANSACOptions()
    opts.max_error = thr * 0.5 * (K1[0, 0] + K1[1, 1])
    opts.confidence = confidence
    opts.max_num_trials = max(max_iters, opts.min_num_trials)
    opts.random_seed = seed
    # COLMAP puts pixel centres at +0.5
    r = pycolmap.estimate_essential_matrix(x1 + 0.5, x2 + 0.5, cam(K1), cam(K2), opts)
    if r is None:
        return None, None, "pycolmap estimate_essential_matrix found no solution"
    return np.asarray(r["E"], dtype=np.float64), np.asarray(r["inlier_mask"], dtype=bool), "ok"


def _torch_ransac(x1n, x2n, valid, thr, num_hypotheses, min_inliers, seed, lo_top: int = 16):
    """Batched RANSAC for E on the device of the inputs (all fp64). Returns E, inliers, ok, reasons.

    8-point hypotheses from random minimal sets are scored by MSAC; the ``lo_top`` best of each
    sample are then decomposed (cheirality) and refined by Sampson Levenberg-Marquardt on their
    inliers (local optimisation) and the best refined one is kept. 8-point minimal solutions on
    noisy, forward-moving, narrow-field data are rarely in the right basin themselves; refined, one
    of the best few nearly always is.
    """
    b, n, _ = x1n.shape
    dev = x1n.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    nvalid = valid.sum(-1)
    ok = nvalid >= max(8, min_inliers)
    h = num_hypotheses
    # minimal sets drawn among the valid points: valid indices first (random order), then pick
    order = torch.argsort(torch.rand(b, n, generator=gen).to(dev) + (~valid).double() * 2, dim=1)
    pick = (torch.rand(b, h, 8, generator=gen).to(dev) * nvalid.clamp(min=1).view(b, 1, 1)).long()
    idx = torch.gather(order.unsqueeze(1).expand(b, h, n), 2, pick)  # (B,H,8)
    bi = torch.arange(b, device=dev).view(b, 1, 1)
    s1 = x1n[bi, idx].reshape(b * h, 8, 2)
    s2 = x2n[bi, idx].reshape(b * h, 8, 2)
    Eh = eight_point(s1, s2, essential=True).reshape(b, h, 3, 3)
    thr_b = thr.reshape(b, 1, 1) if torch.is_tensor(thr) else torch.full((b, 1, 1), float(thr), device=dev,
                                                                           dtype=torch.float64)
    d = sampson_distance(Eh, x1n.unsqueeze(1), x2n.unsqueeze(1), squared=True)  # (B,H,N)
    # MSAC score: truncated squared error over valid points
    cost = torch.where(valid.unsqueeze(1), d.clamp(max=thr_b**2), torch.zeros_like(d)).sum(-1)
    thr_1 = thr_b.reshape(b, 1)
    E = _local_optimisation(Eh, cost, x1n, x2n, valid, thr_1, min(max(lo_top, 1), h), gen)
    r = sampson_distance(E, x1n, x2n, squared=True)
    inl = (r < thr_1**2) & valid
    reasons = ["ok" if bool(o) else f"too few correspondences ({int(c)})" for o, c in zip(ok.tolist(), nvalid.tolist())]
    return E, inl & ok.unsqueeze(-1), ok, reasons
