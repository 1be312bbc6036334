"""Training: one generic trainer driven by pluggable tasks.

* :mod:`trianflow.training.trainer` — :class:`Trainer`, the training loop alone.
* :mod:`trianflow.training.protocol` — the :class:`Task` protocol, :class:`StepContext`,
  :class:`StepOutput` (also importable from ``trainer``).
* :mod:`trianflow.training.sampling` — ``seed_everything`` and the seeded, resumable data order.
* :mod:`trianflow.training.log_writers` — tensorboard scalars and images, ``log.jsonl``, progress,
  peak memory (tensorboard images are drawn by :mod:`trianflow.viz`).
* :mod:`trianflow.training.checkpoint` — atomic, rotating, safely loaded checkpoints; initial
  weights and resumption.
* :mod:`trianflow.training.distributed` — device resolution and torchrun/DDP helpers.
* :mod:`trianflow.training.registry` — ``register_task`` / ``get_task``; tasks live in
  ``trianflow.training.tasks`` (``trianflow``), ``trianflow.training.stereo_task`` (``stereo``,
  ``stereo_mono``) and ``trianflow.training.toy`` (``toy``). A task only composes: losses come from
  :mod:`trianflow.losses`, metrics from :mod:`trianflow.evaluation`, datasets and their builders
  from :mod:`trianflow.data` (the toy task's too: ``trianflow.data.toy``), geometry from
  :mod:`trianflow.geometry`.
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
