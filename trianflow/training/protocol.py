"""The task protocol: what a training task gives the :class:`~trianflow.training.trainer.Trainer`.

A task supplies the networks, the dataset and the loss of one step; the trainer does the rest
(device, optimiser, AMP, DDP, data order, logging, checkpoints). A task is built as
``factory(cfg)`` by the registry (``trianflow.training.registry``) and provides (subclassing
:class:`Task` gives defaults for the optional ones):

``models() -> dict[str, nn.Module]``
    Its networks, built once in ``__init__`` on CPU; the same objects on every call. The trainer
    moves them to the device, checkpoints them under these names (``"flow"``, ``"depth"``, ...)
    and stores ``model.arch_config()`` (a plain dict) when a model defines it. Any parameter
    the optimiser trains must belong to one of these models.
``set_stage(stage: str) -> None`` (optional)
    Freeze/unfreeze parameters for ``cfg.train.stage`` (``requires_grad``). Called once, after
    the models are on the device. Models with no trainable parameter left are put in
    ``eval()`` mode, the others in ``train()`` mode.
``trainable_parameters() -> list[Parameter] | list[dict]`` (optional)
    What Adam optimises (param groups allowed, e.g. ``{"params": ..., "lr": ...}``). Default:
    every parameter of ``models()`` with ``requires_grad``.
``build_dataset(split: str) -> torch.utils.data.Dataset``
    A map-style dataset (``len`` + ``__getitem__``) of sample dicts (see
    ``trianflow.data``) for ``split="train"``. An empty or missing dataset should raise
    :class:`InputError`. Randomness inside ``__getitem__`` (augmentation) may use the global
    ``torch``/``numpy``/``random`` generators: the trainer seeds them per sample from
    ``(train.seed, epoch, index)``, so data is identical across resumes and worker counts.
``collate(samples: list[dict]) -> dict`` (optional)
    Batch collation; default ``torch.utils.data.default_collate``.
``step(batch: dict, ctx: StepContext) -> StepOutput``
    One forward pass and loss. ``batch`` is the collated dict with tensors already on
    ``ctx.device``. Call the networks through ``ctx.models[name]`` (they may be DDP-wrapped) and
    put only network forwards inside ``with ctx.autocast():`` (geometry and losses stay fp32).
    Return the total loss (scalar tensor with a graph) and detached scalar terms for logging;
    when ``ctx.want_images`` is true also return ``images`` for tensorboard. Do not call
    ``backward`` or the optimiser.

Images in ``StepOutput.images`` are tensors ``(B,C,H,W)`` or ``(C,H,W)`` (first sample shown):
``C=3`` RGB in [0, 1]; ``C=2`` a flow field (colour-coded with
:func:`trianflow.viz.images.flow_to_rgb`); ``C=1`` a scalar map such as depth, disparity or an
occlusion mask (min-max normalised to grey). Use :func:`trianflow.viz.images.draw_points` to show
inlier correspondences on an image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Mapping

import torch
from torch import nn
from torch.utils.data import Dataset

from trianflow.config import TrainConfig
from trianflow.errors import InputError

__all__ = ["Task", "StepContext", "StepOutput", "task_models", "task_parameters", "checked_output", "batch_size_of"]


@dataclass
class StepOutput:
    """What :meth:`Task.step` returns.

    Attributes:
        loss: scalar tensor (shape ``()`` or ``(1,)``) to minimise, attached to the graph.
        terms: named scalars to log (floats or 0-d tensors, e.g. each weighted loss term).
        images: name -> ``(B,C,H,W)``/``(C,H,W)`` tensor to show in tensorboard, or None.
        num_images: images processed in this step (for throughput); default: batch size.
    """

    loss: torch.Tensor
    terms: dict[str, Any] = field(default_factory=dict)
    images: dict[str, torch.Tensor] | None = None
    num_images: int | None = None


@dataclass
class StepContext:
    """What the trainer hands to :meth:`Task.step`.

    Attributes:
        step: index of this step (0-based; equals the number of steps done before it).
        stage: ``cfg.train.stage``.
        device: where the batch and models live.
        models: the task's models on ``device``, DDP-wrapped when distributed and trainable;
            call these, not the originals, so gradients are synchronised.
        want_images: return ``StepOutput.images`` this step.
        autocast: ``with ctx.autocast():`` runs a block in the configured AMP dtype (no-op
            when ``train.amp=off``).
        amp_dtype: ``torch.bfloat16``/``torch.float16`` or None.
    """

    step: int
    stage: str
    device: torch.device
    models: dict[str, nn.Module]
    want_images: bool
    autocast: Callable[[], ContextManager]
    amp_dtype: torch.dtype | None = None


class Task:
    """Base class for training tasks (optional: any object with the same methods works).

    Subclasses set ``self.cfg`` in ``__init__(cfg)``, build their networks, and implement
    :meth:`models`, :meth:`build_dataset` and :meth:`step`. See the module docstring.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def models(self) -> dict[str, nn.Module]:
        """The task's networks by name (same objects on every call)."""
        raise NotImplementedError

    def set_stage(self, stage: str) -> None:
        """Freeze/unfreeze parameters for ``stage``; default: everything trainable."""
        for m in self.models().values():
            m.requires_grad_(True)

    def trainable_parameters(self) -> list:
        """Parameters (or param groups) for the optimiser; default: all with ``requires_grad``."""
        return [p for m in self.models().values() for p in m.parameters() if p.requires_grad]

    def build_dataset(self, split: str) -> Dataset:
        """Map-style dataset of sample dicts for ``split`` (``"train"``)."""
        raise NotImplementedError

    collate = None  # optional: callable(list[dict]) -> dict

    def step(self, batch: dict, ctx: StepContext) -> StepOutput:
        """Forward pass and loss for one batch; see :class:`StepContext` / :class:`StepOutput`."""
        raise NotImplementedError


def task_models(task) -> dict[str, nn.Module]:
    """``task.models()``, checked: a non-empty dict of ``nn.Module``.

    Raises:
        TypeError: the task broke the protocol.
    """
    models = task.models()
    if not isinstance(models, dict) or not models or not all(isinstance(m, nn.Module) for m in models.values()):
        raise TypeError("task.models() must return a non-empty dict of nn.Module")
    return models


def task_parameters(task, models: dict[str, nn.Module], task_name: str, stage: str) -> tuple[list, list]:
    """What the optimiser trains: ``(params, flat)``, the task's parameters or param groups as
    given (``Task.trainable_parameters`` when the task has none) and the flat list of tensors.

    Raises:
        InputError: nothing is trainable in ``stage`` (a user's choice of stage).
        TypeError: a parameter does not belong to ``models`` (the task broke the protocol).
    """
    params = list(task.trainable_parameters() if hasattr(task, "trainable_parameters")
                  else Task.trainable_parameters(task))
    flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    if not flat:
        raise InputError(f"task '{task_name}' has no trainable parameters in stage '{stage}'; check train.stage")
    owned = {id(p) for m in models.values() for p in m.parameters()}
    if any(id(p) not in owned for p in flat):
        raise TypeError("task.trainable_parameters() returned a parameter that is not in task.models()")
    return params, flat


def checked_output(out, batch) -> StepOutput:
    """``task.step()``'s answer, checked, with ``num_images`` filled in (the batch size) when unset.

    Raises:
        TypeError: not a :class:`StepOutput`, or its loss is not a scalar tensor.
    """
    if not isinstance(out, StepOutput):
        raise TypeError(f"task.step() must return a StepOutput, got {type(out).__name__}")
    if not isinstance(out.loss, torch.Tensor) or out.loss.numel() != 1:
        raise TypeError("StepOutput.loss must be a scalar tensor")
    if out.num_images is None:
        out.num_images = batch_size_of(batch)
    return out


def batch_size_of(batch) -> int:
    """Leading size of the first tensor in a (nested) batch; 0 when there is none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        for v in batch.values():
            n = batch_size_of(v)
            if n:
                return n
    if isinstance(batch, (list, tuple)) and batch:
        return batch_size_of(batch[0]) if isinstance(batch[0], (torch.Tensor, Mapping)) else len(batch)
    return 0
