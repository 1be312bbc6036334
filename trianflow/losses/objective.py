"""Combining named loss terms with weights from the config, and the loss result type.

Every composite loss in :mod:`trianflow.losses` returns a :class:`LossResult`:
``total`` (0-dim tensor to back-propagate), ``terms`` (name -> 0-dim tensor, unweighted batch
means, still attached to the graph) and ``per_sample`` (name -> ``(B,)`` tensor, including
``"total"``). Unpack it as ``total, terms, per_sample = result`` or use the attributes.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import torch

from trianflow.errors import InputError


class LossResult(NamedTuple):
    """Output of a composite loss: ``(total, terms, per_sample)``.

    Attributes:
        total: 0-dim tensor, the weighted total averaged over the batch.
        terms: name -> 0-dim tensor, unweighted terms (batch means), attached to the graph.
        per_sample: name -> ``(B,)`` tensor, the same terms per sample plus ``"total"``.
    """

    total: torch.Tensor
    terms: dict
    per_sample: dict


def valid_mean(per_sample: torch.Tensor, sample_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of a ``(B,)`` tensor over the valid samples only.

    Invalid samples are selected away with ``torch.where`` (a NaN there does not leak). With no
    valid sample the result is a 0 that is still attached to the graph (its gradient is 0).

    Args:
        per_sample: ``(B,)`` values.
        sample_valid: ``(B,)`` bool (or 0/1) mask, None = all valid.
    Returns:
        0-dim tensor.
    """
    if sample_valid is None:
        return per_sample.mean()
    sv = sample_valid.to(torch.bool).to(per_sample.device)
    vals = torch.where(sv, per_sample, torch.zeros_like(per_sample))
    return vals.sum() / sv.sum().clamp(min=1).to(per_sample.dtype)


def weighted_sum(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float], strict: bool = True):
    """Weighted sum of named loss terms: ``total = sum_k weights[k] * terms[k]``.

    Only terms that have a weight enter the total; weights of 0 are allowed (the term is still
    reported). A weight whose name is not a term is a configuration mistake and raises (with
    ``strict=False`` such weights are skipped, for a config that also weights terms of other
    stages). Term names match the config's ``w_<term>`` fields: ``flow``, ``flow_smooth``
    (:func:`~trianflow.losses.flow.flow_loss`), ``tri``, ``pf``, ``pd``, ``smooth``
    (:func:`~trianflow.losses.triangulation.trianflow_depth_objective`), ``stereo_ap``,
    ``stereo_smooth``, ``stereo_lr`` (:func:`~trianflow.losses.stereo.monodepth_loss`), ``icp``
    (:func:`~trianflow.losses.stereo.m3depth_consistency_loss`), ``ssi``, ``ssi_grad``
    (:class:`~trianflow.losses.scale_shift.ScaleShiftInvariantLoss`).

    Args:
        terms: name -> 0-dim tensor (or ``(B,)`` tensor, averaged first).
        weights: name -> float (e.g. ``{k[2:]: v for k, v in loss_cfg.items() if k.startswith("w_")}``).
        strict: raise on a weight without a term (default) or skip it.
    Returns:
        ``(total, named)``: 0-dim tensor and a dict name -> float with every unweighted term
        plus ``"total"``, for logging.
    Raises:
        InputError: unknown weight name, or a non-finite weight.
    """
    unknown = sorted(set(weights) - set(terms))
    if not strict:
        weights = {k: v for k, v in weights.items() if k in terms}
    elif unknown:
        raise InputError(
            f"loss weights name unknown term(s) {unknown}; known terms: {sorted(terms)} "
            "(fix loss.weights in the config)"
        )
    total = None
    for name, w in weights.items():
        w = float(w)
        if not math.isfinite(w):
            raise InputError(f"loss weight {name!r} is {w}; use a finite number (fix loss.weights in the config)")
        t = terms[name]
        t = t.mean() if t.dim() > 0 else t
        total = w * t if total is None else total + w * t
    if total is None:
        ref = next(iter(terms.values()), None)
        total = torch.zeros((), device=ref.device if ref is not None else None)
    named = {k: float(v.detach().float().mean()) for k, v in terms.items()}
    named["total"] = float(total.detach())
    return total, named
