"""Networks: PWC-style :class:`FlowNet` and ResNet18 :class:`DepthNet`, plus architecture helpers.

Every model has ``arch_config()`` -> ``{"class": <name>, "args": {<constructor args>}}`` (JSON-able).
Training stores it in checkpoints; :func:`model_from_arch` rebuilds the model and
:func:`check_state_dict` verifies that a state dict belongs to that architecture before loading.

Config dicts for :func:`build_flownet` / :func:`build_depthnet` hold constructor arguments
(unknown keys are an :class:`~trianflow.errors.InputError`); ``build_depthnet`` also accepts
``pretrained_encoder: <path to a torchvision resnet18 .pth>``.

:func:`unwrap_model` strips a ``DistributedDataParallel`` wrapper; :func:`bidirectional_flow` runs a
FlowNet (or its DDP wrapper) in both directions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from trianflow.errors import InputError
from trianflow.models.blocks import ResNet18Encoder, load_torchvision_resnet18
from trianflow.models.depthnet import DepthNet, disp_fraction_to_pixels, disp_to_depth
from trianflow.models.flownet import FlowNet, cost_volume, upsample_flow

__all__ = [
    "FlowNet",
    "DepthNet",
    "ResNet18Encoder",
    "load_torchvision_resnet18",
    "cost_volume",
    "upsample_flow",
    "disp_to_depth",
    "disp_fraction_to_pixels",
    "build_flownet",
    "build_depthnet",
    "model_from_arch",
    "check_state_dict",
    "unwrap_model",
    "bidirectional_flow",
    "MODEL_CLASSES",
]

MODEL_CLASSES: dict[str, type[nn.Module]] = {"FlowNet": FlowNet, "DepthNet": DepthNet}

_FLOW_KEYS = ("pyramid_channels", "max_displacement", "context")
_DEPTH_KEYS = ("num_scales", "min_depth", "max_depth", "stereo", "disp_scale", "in_channels")


def _args(cfg: Mapping | None, allowed: tuple[str, ...], what: str, extra: tuple[str, ...] = ()) -> dict:
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        raise InputError(f"{what} config must be a mapping, got {type(cfg).__name__}")
    cfg = dict(cfg)
    unknown = sorted(set(cfg) - set(allowed) - set(extra))
    if unknown:
        raise InputError(f"{what} config: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(allowed + extra)})")
    return cfg


def build_flownet(cfg: Mapping | None = None) -> FlowNet:
    """Build a :class:`FlowNet` from a config mapping of constructor args (None: defaults)."""
    return FlowNet(**_args(cfg, _FLOW_KEYS, "flownet"))


def build_depthnet(cfg: Mapping | None = None) -> DepthNet:
    """Build a :class:`DepthNet` from a config mapping of constructor args (None: defaults).

    ``pretrained_encoder`` (optional, path or None) loads a local torchvision ResNet18 state dict
    into the encoder with :func:`load_torchvision_resnet18`.
    """
    args = _args(cfg, _DEPTH_KEYS, "depthnet", extra=("pretrained_encoder",))
    pretrained = args.pop("pretrained_encoder", None)
    model = DepthNet(**args)
    if pretrained:
        load_torchvision_resnet18(pretrained, model.encoder)
    return model


def model_from_arch(arch: Mapping) -> nn.Module:
    """Rebuild a model from its ``arch_config()`` dict ``{"class": name, "args": {...}}``."""
    if not isinstance(arch, Mapping) or "class" not in arch:
        raise InputError(f"model architecture must be a dict with 'class' and 'args', got {arch!r:.120}")
    name = arch["class"]
    cls = MODEL_CLASSES.get(name)
    if cls is None:
        raise InputError(f"unknown model class {name!r} in architecture (known: {', '.join(MODEL_CLASSES)})")
    args = arch.get("args") or {}
    allowed = _FLOW_KEYS if cls is FlowNet else _DEPTH_KEYS
    return cls(**_args(args, allowed, name))


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`InputError` unless ``state_dict`` fits ``model`` exactly (keys and shapes).

    Args:
        model: the model the weights are meant for.
        state_dict: name -> tensor mapping (e.g. ``torch.load(path)["model"]``).
        source: what to call the weights in the message (e.g. the checkpoint path).
    Raises:
        InputError: one line summarising missing / unexpected keys and shape mismatches, with a
            hint when the keys carry a DDP ``module.`` prefix.
    """
    if not isinstance(state_dict, Mapping):
        raise InputError(f"{source}: expected a state dict (name -> tensor), got {type(state_dict).__name__}")
    own = model.state_dict()
    theirs = {k: v for k, v in state_dict.items()}
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    bad = sorted(
        k for k in set(own) & set(theirs)
        if not torch.is_tensor(theirs[k]) or tuple(theirs[k].shape) != tuple(own[k].shape)
    )
    if not (missing or unexpected or bad):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[0]})")
    if bad:
        k = bad[0]
        got = tuple(theirs[k].shape) if torch.is_tensor(theirs[k]) else type(theirs[k]).__name__
        parts.append(f"{len(bad)} shape mismatch(es) (e.g. {k}: {got} vs {tuple(own[k].shape)})")
    hint = "; it was saved for a different architecture"
    if unexpected and all(k.startswith("module.") for k in unexpected):
        hint = "; keys carry a DDP 'module.' prefix: strip it before loading"
    raise InputError(f"{source} does not match {type(model).__name__}: " + ", ".join(parts) + hint)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper, or ``model`` itself."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def bidirectional_flow(model: nn.Module, img1: torch.Tensor, img2: torch.Tensor):
    """Forward and backward flow pyramids of a FlowNet (or its DDP wrapper).

    A plain :class:`~trianflow.models.FlowNet` runs :meth:`~trianflow.models.FlowNet.forward_bidirectional`
    (one feature pass for both directions). A DDP wrapper only forwards ``forward``, so the pairs
    ``(1,2)`` and ``(2,1)`` are stacked along the batch and run through it in one call.

    Args:
        model: FlowNet or ``DistributedDataParallel(FlowNet)``.
        img1, img2: ``(B,3,H,W)`` in [0,1].
    Returns:
        ``(fwd, bwd)``: lists of 5 flows ``(B,2,H_s,W_s)`` (strides 1, 4, 8, 16, 32), fp32.
    """
    if unwrap_model(model) is model:
        return model.forward_bidirectional(img1, img2)
    b = img1.shape[0]
    outs = model(torch.cat([img1, img2], 0), torch.cat([img2, img1], 0))
    return [o[:b] for o in outs], [o[b:] for o in outs]
