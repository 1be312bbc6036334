"""MiDaS scale-and-shift-invariant loss (Ranftl et al., TPAMI 2022) with gradient matching.

Works in disparity (inverse depth) space: pass disparities for ``pred`` and ``target``. Two
alignments are offered, both invariant to any positive scale and any shift of ``pred``:

* ``alignment="lstsq"``: ``s, t = argmin sum m (s p + t - d)^2`` in closed form per image
  (:func:`compute_scale_shift`); the loss compares ``s p + t`` with ``d`` (MiDaS "ssimae" /
  "ssimse"). Invariant to any non-zero scale, even negative.
* ``alignment="median"`` (default): both maps are normalised by their median and mean absolute
  deviation, ``x_hat = (x - median(x)) / mean(|x - median(x)|)``; the loss compares the
  normalised maps (MiDaS "ssitrim").

The data term is ``1/(2M) sum_{kept} |residual|`` over the ``M`` valid pixels; ``trimmed`` is the
fraction of largest residuals dropped (0.2 in MiDaS; 0 = plain MAE). The regulariser is MiDaS'
multi-scale gradient matching ``1/M sum_k sum (|d_x R^k| + |d_y R^k|)`` on the residual
``R = aligned_pred - aligned_target`` subsampled by ``2^k``. Per-image reduction; samples with
fewer than 2 valid pixels (or a constant prediction) count as invalid and contribute 0.

Use it to supervise with relative ground truth, or to distil a teacher: pass the teacher's
disparity as ``target``.
"""

from __future__ import annotations

import torch

from trianflow.errors import InputError
from trianflow.losses.objective import LossResult, valid_mean


def _flat(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        if x.shape[1] != 1:
            raise InputError(f"scale_shift: expected (B,1,H,W) maps, got {tuple(x.shape)}")
        return x[:, 0]
    if x.dim() == 3:
        return x
    raise InputError(f"scale_shift: expected (B,1,H,W) or (B,H,W) maps, got {tuple(x.shape)}")


def _prep(pred, target, mask):
    p, d = _flat(pred), _flat(target)
    if p.shape != d.shape:
        raise InputError(f"scale_shift: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    m = torch.ones_like(p, dtype=torch.bool) if mask is None else _flat(mask).to(torch.bool)
    if m.shape != p.shape:
        raise InputError(f"scale_shift: mask {tuple(mask.shape)} does not match prediction {tuple(pred.shape)}")
    m = m & torch.isfinite(p) & torch.isfinite(d)
    p = torch.where(m, p, torch.zeros_like(p))
    d = torch.where(m, d, torch.zeros_like(d))
    return p, d, m


def compute_scale_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                        eps: float = 1e-12):
    """Closed-form least-squares scale and shift per image: ``argmin_{s,t} sum m (s p + t - d)^2``.

    Solves the 2x2 normal equations. A degenerate sample (fewer than 2 valid pixels or a
    constant prediction) gets ``s = 0`` and ``t`` = mean of the valid target (0 without any).

    Args:
        pred, target: ``(B,1,H,W)`` or ``(B,H,W)``; mask: same shape, bool (None = all valid).
    Returns:
        ``(s, t)``, each ``(B,)`` (differentiable).
    """
    p, d, m = _prep(pred, target, mask)
    mf = m.to(p.dtype)
    a00 = (mf * p * p).sum((1, 2))
    a01 = (mf * p).sum((1, 2))
    a11 = mf.sum((1, 2))
    b0 = (mf * p * d).sum((1, 2))
    b1 = (mf * d).sum((1, 2))
    det = a00 * a11 - a01 * a01
    # relative conditioning test: det = n^2 var(p)
    ok = (a11 >= 2) & (det > eps * (a00 * a11).clamp(min=eps))
    det_s = torch.where(ok, det, torch.ones_like(det))
    s = torch.where(ok, (a11 * b0 - a01 * b1) / det_s, torch.zeros_like(det))
    t_fallback = b1 / a11.clamp(min=1)
    t = torch.where(ok, (-a01 * b0 + a00 * b1) / det_s, t_fallback)
    return s, t


def _masked_median(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    xn = torch.where(m, x, torch.full_like(x, float("nan"))).flatten(1)
    med = torch.nanmedian(xn, dim=1).values
    return torch.where(m.flatten(1).any(1), med, torch.zeros_like(med))


def normalize_median_mad(x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8):
    """MiDaS normalisation ``(x - median) / mean(|x - median|)`` over the valid pixels.

    Args:
        x: ``(B,1,H,W)`` or ``(B,H,W)``; mask: same shape bool (None = all).
    Returns:
        ``(x_hat (B,H,W), ok (B,))``: normalised map (0 outside the mask) and whether the sample
        had at least 2 valid pixels and a non-zero spread.
    """
    xf = _flat(x)
    m = torch.ones_like(xf, dtype=torch.bool) if mask is None else _flat(mask).to(torch.bool)
    m = m & torch.isfinite(xf)
    xf = torch.where(m, xf, torch.zeros_like(xf))
    med = _masked_median(xf, m).view(-1, 1, 1)
    n = m.sum((1, 2))
    dev = torch.where(m, (xf - med).abs(), torch.zeros_like(xf))
    scale = dev.sum((1, 2)) / n.clamp(min=1).to(xf.dtype)
    ok = (n >= 2) & (scale > eps)
    scale_s = torch.where(ok, scale, torch.ones_like(scale)).view(-1, 1, 1)
    xh = torch.where(m, (xf - med) / scale_s, torch.zeros_like(xf))
    return xh, ok


def _trimmed_sum(res: torch.Tensor, m: torch.Tensor, trimmed: float) -> torch.Tensor:
    """Sum of the smallest ``(1 - trimmed)`` fraction of ``|res|`` over valid pixels, per sample."""
    r = res.abs().flatten(1)
    mf = m.flatten(1)
    if trimmed <= 0:
        return torch.where(mf, r, torch.zeros_like(r)).sum(1)
    n = mf.sum(1)
    keep = torch.floor((1.0 - trimmed) * n.to(torch.float64)).to(torch.long)  # (B,)
    r_inf = torch.where(mf, r, torch.full_like(r, float("inf")))
    r_sorted, _ = torch.sort(r_inf, dim=1)
    rank = torch.arange(r.shape[1], device=r.device).unsqueeze(0)
    sel = rank < keep.unsqueeze(1)
    return torch.where(sel, r_sorted, torch.zeros_like(r_sorted)).sum(1)


def _align(pred, target, mask, alignment):
    p, d, m = _prep(pred, target, mask)
    if alignment == "lstsq":
        s, t = compute_scale_shift(p, d, m)
        n = m.sum((1, 2))
        mf = m.to(p.dtype)
        var = (mf * p * p).sum((1, 2)) * n - (mf * p).sum((1, 2)) ** 2
        ok = (n >= 2) & (s != 0) & (var > 0)
        pa = torch.where(m, s.view(-1, 1, 1) * p + t.view(-1, 1, 1), torch.zeros_like(p))
        return pa, d, m, ok
    if alignment == "median":
        pa, ok_p = normalize_median_mad(p, m)
        da, ok_d = normalize_median_mad(d, m)
        return pa, da, m, ok_p & ok_d
    raise InputError(f"scale_shift: alignment must be 'median' or 'lstsq', got {alignment!r}")


def ssi_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, trimmed: float = 0.2,
             alignment: str = "median"):
    """Scale-and-shift-invariant data term ``1/(2M) sum_{kept} |aligned_pred - aligned_target|``.

    Args:
        pred, target: ``(B,1,H,W)`` or ``(B,H,W)`` disparities; mask: same shape bool (None = all).
        trimmed: fraction of the largest residuals dropped (0.2 = MiDaS "ssitrim"; 0 = plain MAE).
        alignment: ``"median"`` (median / mean-abs-deviation normalisation of both maps) or
            ``"lstsq"`` (least-squares scale and shift of the prediction onto the target).
    Returns:
        ``(loss, per_sample)``: 0-dim mean over valid samples and ``(B,)`` (0 for invalid samples).
    """
    if not 0 <= trimmed < 1:
        raise InputError(f"ssi_loss: trimmed must be in [0, 1), got {trimmed}")
    pa, da, m, ok = _align(pred, target, mask, alignment)
    n = m.sum((1, 2)).clamp(min=1).to(pa.dtype)
    per = _trimmed_sum(pa - da, m, trimmed) / (2 * n)
    per = torch.where(ok, per, torch.zeros_like(per))
    return valid_mean(per, ok), per


def gradient_matching_loss(pred_aligned: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                           scales: int = 4):
    """MiDaS multi-scale gradient matching on the residual ``R = pred_aligned - target``.

    At scale k both maps are subsampled with stride ``2^k``; a gradient counts where both of
    its pixels are valid. Per sample: ``sum_k sum(|d_x R^k| + |d_y R^k|) / M`` with ``M`` the
    valid pixels at full resolution.

    Args:
        pred_aligned: ``(B,1,H,W)`` or ``(B,H,W)`` prediction already aligned to ``target``.
        target: same shape; mask: same shape bool (None = all).
        scales: number of scales.
    Returns:
        ``(loss, per_sample)``: mean over samples with a valid pixel and ``(B,)``.
    """
    p, d, m = _prep(pred_aligned, target, mask)
    r = torch.where(m, p - d, torch.zeros_like(p))
    n = m.sum((1, 2))
    total = torch.zeros_like(p[:, 0, 0])
    for k in range(scales):
        step = 2**k
        rk, mk = r[:, ::step, ::step], m[:, ::step, ::step]
        if rk.shape[-1] >= 2:
            gx = (rk[:, :, 1:] - rk[:, :, :-1]).abs()
            mx = mk[:, :, 1:] & mk[:, :, :-1]
            total = total + torch.where(mx, gx, torch.zeros_like(gx)).sum((1, 2))
        if rk.shape[-2] >= 2:
            gy = (rk[:, 1:, :] - rk[:, :-1, :]).abs()
            my = mk[:, 1:, :] & mk[:, :-1, :]
            total = total + torch.where(my, gy, torch.zeros_like(gy)).sum((1, 2))
    per = total / n.clamp(min=1).to(p.dtype)
    ok = n > 0
    return valid_mean(per, ok), per


class ScaleShiftInvariantLoss(torch.nn.Module):
    """MiDaS loss ``L_ssi + alpha * L_reg`` (data term plus multi-scale gradient matching).

    Args:
        alpha: weight of the gradient matching term (0.5 in MiDaS; 0 disables it).
        scales: gradient matching scales (4 in MiDaS).
        trimmed: trimmed fraction of the data term (0.2; 0 = plain MAE).
        alignment: ``"median"`` or ``"lstsq"`` (see the module docstring).

    ``forward(pred, target, mask=None)`` takes ``(B,1,H,W)`` disparities and returns a
    :class:`~trianflow.losses.objective.LossResult` with terms ``ssi`` and ``ssi_grad`` (names of
    the config weights ``w_ssi`` / ``w_ssi_grad``).
    """

    def __init__(self, alpha: float = 0.5, scales: int = 4, trimmed: float = 0.2, alignment: str = "median"):
        super().__init__()
        if alignment not in ("median", "lstsq"):
            raise InputError(f"ScaleShiftInvariantLoss: alignment must be 'median' or 'lstsq', got {alignment!r}")
        self.alpha, self.scales, self.trimmed, self.alignment = float(alpha), int(scales), float(trimmed), alignment

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> LossResult:
        pa, da, m, ok = _align(pred, target, mask, self.alignment)
        n = m.sum((1, 2)).clamp(min=1).to(pa.dtype)
        ssi = _trimmed_sum(pa - da, m, self.trimmed) / (2 * n)
        ssi = torch.where(ok, ssi, torch.zeros_like(ssi))
        if self.alpha > 0:
            _, grad = gradient_matching_loss(pa, da, m, self.scales)
            grad = torch.where(ok, grad, torch.zeros_like(grad))
        else:
            grad = torch.zeros_like(ssi)
        total_ps = ssi + self.alpha * grad
        return LossResult(
            total=valid_mean(total_ps, ok),
            terms={"ssi": valid_mean(ssi, ok), "ssi_grad": valid_mean(grad, ok)},
            per_sample={"ssi": ssi, "ssi_grad": grad, "valid": ok, "total": total_ps},
        )
