"""Training: one generic trainer driven by pluggable tasks.

* :mod:`trianflow.training.trainer` — :class:`Trainer`, the :class:`Task` protocol,
  :class:`StepContext`, :class:`StepOutput`, image helpers for tensorboard.
* :mod:`trianflow.training.checkpoint` — atomic, rotating, safely loaded checkpoints.
* :mod:`trianflow.training.distributed` — device resolution and torchrun/DDP helpers.
* :mod:`trianflow.training.registry` — ``register_task`` / ``get_task``; tasks live in
  ``trianflow.training.tasks`` (and the built-in ``toy`` task in ``trianflow.training.toy``).
"""

from trianflow.training.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
from trianflow.training.distributed import resolve_device
from trianflow.training.registry import available_tasks, get_task, register_task
from trianflow.training.trainer import StepContext, StepOutput, Task, Trainer, TrainingDiverged

__all__ = [
    "Trainer",
    "Task",
    "StepContext",
    "StepOutput",
    "TrainingDiverged",
    "register_task",
    "get_task",
    "available_tasks",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointManager",
    "resolve_device",
]
