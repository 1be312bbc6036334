"""One generic training loop for every trianflow recipe, driven by a *task* object.

The trainer owns everything that is not specific to a method: device placement, the Adam
optimiser and learning-rate schedule, mixed precision (autocast + GradScaler), gradient
clipping, skipping steps whose loss or gradients are not finite, DistributedDataParallel under
``torchrun``, a resumable data order, tensorboard scalars and images, tqdm progress, periodic
atomic checkpoints, SIGTERM/SIGINT handling and exact resumption. A *task* (see :class:`Task`)
supplies the networks, the dataset and the loss of one step.

Task protocol
-------------
A task is built as ``factory(cfg)`` by the registry (``trianflow.training.registry``) and
provides (subclassing :class:`Task` gives defaults for the optional ones):

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

import contextlib
import dataclasses
import gc
import json
import logging
import math
import resource
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from trianflow.config import TrainConfig, config_to_dict, save_config
from trianflow.errors import InputError
from trianflow.io.atomic import write_json
from trianflow.training import distributed as D
from trianflow.training.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    model_arch,
    restore_rng_state,
)
from trianflow.viz.images import to_display

log = logging.getLogger(__name__)

__all__ = [
    "Task",
    "StepContext",
    "StepOutput",
    "Trainer",
    "TrainingDiverged",
    "seed_everything",
]


# --------------------------------------------------------------------------------------------
# task protocol
# --------------------------------------------------------------------------------------------


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


class TrainingDiverged(InputError):
    """Too many consecutive steps had a non-finite loss or gradient."""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _sample_seed(base: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([base % 2**32, epoch, index]).generate_state(1)[0])


class _SeededDataset(Dataset):
    """Wraps a dataset so item ``(index, seed)`` is produced with all global RNGs seeded by ``seed``.

    In the main process (``num_workers=0``) the RNG states are saved and restored around the
    call, so data loading never disturbs the training loop's random stream.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item):
        index, seed = item
        if torch.utils.data.get_worker_info() is not None:
            seed_everything(seed)
            return self.dataset[index]
        import random

        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            seed_everything(seed)
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class _ResumableBatchSampler(Sampler):
    """Batches of ``(index, seed)`` for one epoch of a DistributedSampler, skipping the first
    ``skip`` batches (the ones consumed before a resume). Incomplete last batches are dropped."""

    def __init__(self, sampler: DistributedSampler, batch_size: int, seed: int):
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.sampler) // self.batch_size

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.skip, 0)

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        indices = list(iter(self.sampler))
        for b in range(self.skip, self.batches_per_epoch):
            chunk = indices[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(int(i), _sample_seed(self.seed, self.epoch, int(i))) for i in chunk]


def _worker_init(_worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)


def _move(obj, device: torch.device, channels_last: bool, non_blocking: bool):
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=non_blocking)
        if channels_last and obj.dim() == 4 and obj.is_floating_point():
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, Mapping):
        return {k: _move(v, device, channels_last, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(v, device, channels_last, non_blocking) for v in obj)
    return obj


def _batch_size_of(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        for v in batch.values():
            n = _batch_size_of(v)
            if n:
                return n
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size_of(batch[0]) if isinstance(batch[0], (torch.Tensor, Mapping)) else len(batch)
    return 0


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --------------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------------


def _lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    o, total = cfg.optim, cfg.train.steps

    def fn(step: int) -> float:
        scale = 1.0
        if o.schedule == "step":
            scale = o.gamma ** sum(1 for m in o.milestones if step >= m)
        elif o.schedule == "cosine":
            t = min(step / max(total, 1), 1.0)
            scale = o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if o.warmup_steps > 0 and step < o.warmup_steps:
            scale *= (step + 1) / o.warmup_steps
        return scale

    return fn


class _TeeWriter:
    """Forwards the SummaryWriter calls the trainer makes to several writers."""

    def __init__(self, writers):
        self.writers = list(writers)

    def add_scalar(self, *args, **kwargs):
        for w in self.writers:
            w.add_scalar(*args, **kwargs)

    def add_image(self, *args, **kwargs):
        for w in self.writers:
            w.add_image(*args, **kwargs)

    def flush(self):
        for w in self.writers:
            w.flush()

    def close(self):
        for w in self.writers:
            w.close()


class Trainer:
    """Train ``task`` with ``cfg`` (see the module docstring for the task protocol).

    Args:
        cfg: the full :class:`TrainConfig`.
        task: the task object (its models are already built).
        out_dir: run folder (default ``cfg.train.out_dir``): ``config.yaml``, ``last.pt``,
            ``step_*.pt``, ``tb/`` (tensorboard), ``summary.json``, ``log.jsonl`` (one JSON line
            per ``log_every`` steps); ``{stage}`` in it becomes ``train.stage``.
        resume: None, a checkpoint path, or ``"auto"`` (= ``out_dir/last.pt`` if it exists).
            Restores models, optimiser, schedule, GradScaler, step, data position and RNG
            states, so the resumed run continues exactly as if never stopped.
        progress: show a tqdm bar on rank 0 (the CLI turns it on; library default off).
        task_name: recorded in checkpoints (default ``cfg.train.task``).

    Raises:
        InputError: bad device, unreadable/mismatching checkpoints, empty dataset, a stage
        without trainable parameters, unsupported AMP mode.
    """

    def __init__(self, cfg: TrainConfig, task, out_dir: str | Path | None = None,
                 resume: str | Path | None = None, progress: bool = False, task_name: str | None = None):
        if out_dir is not None and str(out_dir) != cfg.train.out_dir:  # keep the saved config truthful
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=str(out_dir)))
        if "{stage}" in cfg.train.out_dir:  # one recipe file for all stages: runs/kitti_cpu_{stage}
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(
                cfg.train, out_dir=cfg.train.out_dir.replace("{stage}", str(cfg.train.stage))))
        self.cfg = cfg
        self.task = task
        self.task_name = task_name or cfg.train.task
        self.out_dir = Path(cfg.train.out_dir)
        self.progress = progress
        self.info = D.detect()
        self.device = D.resolve_device(cfg.train.device, self.info.local_rank)
        D.init_distributed(self.device, self.info)
        self.ckpts = CheckpointManager(self.out_dir, keep=cfg.train.keep_ckpts)
        self._setup_amp()
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.skipped_total = 0
        self.consecutive_skips = 0
        self._stop_requested = False
        self._signal_count = 0
        self.viz_writer = None  # extra SummaryWriter-like sink, e.g. a Rerun TrainRecorder (trianflow train --viz)

        # models
        models = task.models()
        if not isinstance(models, dict) or not models or not all(isinstance(m, nn.Module) for m in models.values()):
            raise TypeError("task.models() must return a non-empty dict of nn.Module")
        self.models: dict[str, nn.Module] = models
        for m in models.values():
            m.to(self.device)
            if cfg.train.channels_last:
                m.to(memory_format=torch.channels_last)
        if hasattr(task, "set_stage"):
            task.set_stage(cfg.train.stage)
        self._load_init_weights()

        ckpt = self._resolve_resume(resume)
        if ckpt is not None:
            self._load_models_from(ckpt)

        params = list(task.trainable_parameters() if hasattr(task, "trainable_parameters")
                      else Task.trainable_parameters(task))
        flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
        if not flat:
            raise InputError(
                f"task '{self.task_name}' has no trainable parameters in stage '{cfg.train.stage}'; check train.stage"
            )
        owned = {id(p) for m in models.values() for p in m.parameters()}
        if any(id(p) not in owned for p in flat):
            raise TypeError("task.trainable_parameters() returned a parameter that is not in task.models()")
        self._params = flat
        for m in models.values():
            m.train(any(p.requires_grad for p in m.parameters()))
        self.wrapped = {k: D.wrap_ddp(m, self.device, cfg.train.find_unused_parameters) for k, m in models.items()}

        o = cfg.optim
        self.optimizer = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self._pending_rng = None
        if ckpt is not None:
            self._load_training_state(ckpt)
        else:
            seed_everything(cfg.train.seed + 1_000_003 * self.info.rank)

        self._build_data()

    # ---------------------------------------------------------------- setup
    def _setup_amp(self) -> None:
        amp = self.cfg.train.amp
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        if amp == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise InputError(f"train.amp=bf16 requested but {torch.cuda.get_device_name(self.device)} has no "
                             "bfloat16 support; use train.amp=fp16 or train.amp=off")
        if amp == "fp16" and self.device.type == "cpu":
            log.warning("train.amp=fp16 on CPU is slow and rarely useful; consider train.amp=bf16")

    def autocast(self) -> ContextManager:
        """Autocast context for network forwards in the configured AMP dtype (no-op when off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _load_init_weights(self) -> None:
        t = self.cfg.train
        for name, path in (("flow", t.init_flow), ("depth", t.init_depth)):
            if not path:
                continue
            if name not in self.models:
                raise InputError(
                    f"train.init_{name}={path} but task '{self.task_name}' has no '{name}' network "
                    f"(it has: {', '.join(self.models)})"
                )
            ckpt = load_checkpoint(path)
            load_model_weights(self.models[name], ckpt, name, str(path))
            log.info("initialised '%s' network from %s (step %s)", name, path, ckpt.get("step"))

    def _resolve_resume(self, resume) -> dict | None:
        if resume is None or resume is False:
            return None
        if str(resume) == "auto":
            path = self.ckpts.last
            if not path.exists():
                log.info("no checkpoint at %s: starting a new run", path)
                return None
        else:
            path = Path(resume)
        ckpt = load_checkpoint(path)
        self.resume_path = path
        return ckpt

    def _load_models_from(self, ckpt: dict) -> None:
        src = str(self.resume_path)
        extra = sorted(set(ckpt["models"]) - set(self.models))
        if extra:
            raise InputError(
                f"checkpoint {src} holds networks {extra} that task '{self.task_name}' does not have; "
                "it was written by another task"
            )
        for name, m in self.models.items():
            load_model_weights(m, ckpt, name, src)

    def _load_training_state(self, ckpt: dict) -> None:
        src = str(self.resume_path)
        if ckpt.get("stage") not in (None, self.cfg.train.stage):
            raise InputError(
                f"checkpoint {src} was saved in stage '{ckpt.get('stage')}' but this run is stage "
                f"'{self.cfg.train.stage}'; to start a new stage from it use train.init_flow / train.init_depth"
            )
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise InputError(f"checkpoint {src}: optimiser state does not fit this run ({exc})") from None
        if ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler.is_enabled() and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.epoch = int(ckpt.get("epoch", 0))
        self.batch_in_epoch = int(ckpt.get("batch_in_epoch", 0))
        stats = ckpt.get("stats", {})
        self.skipped_total = int(stats.get("skipped_steps", 0))
        self.consecutive_skips = int(stats.get("consecutive_skips", 0))
        rng = ckpt.get("rng") or []
        if len(rng) == self.info.world_size:
            self._pending_rng = rng[self.info.rank]
        else:
            log.warning("checkpoint %s has RNG states for %d process(es), this run has %d: reseeding",
                        src, len(rng), self.info.world_size)
            seed_everything(self.cfg.train.seed + 1_000_003 * self.info.rank + self.step)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", src, self.step, self.epoch, self.batch_in_epoch)

    def _build_data(self) -> None:
        cfg = self.cfg
        dataset = self.task.build_dataset("train")
        try:
            n = len(dataset)
        except TypeError:
            raise TypeError("task.build_dataset() must return a map-style dataset with __len__") from None
        where = f" (data.dataset={cfg.data.dataset}, data.root={cfg.data.root or '<unset>'})"
        if n == 0:
            raise InputError(f"the training dataset is empty{where}: check data.root and data.sequences")
        self.dataset = dataset
        sampler = DistributedSampler(dataset, num_replicas=self.info.world_size, rank=self.info.rank,
                                     shuffle=True, seed=cfg.train.seed, drop_last=False)
        self.batch_sampler = _ResumableBatchSampler(sampler, cfg.data.batch_size, cfg.train.seed)
        if self.batch_sampler.batches_per_epoch == 0:
            raise InputError(
                f"the training dataset has {n} samples, fewer than data.batch_size={cfg.data.batch_size}"
                f" x {self.info.world_size} process(es){where}; lower data.batch_size"
            )
        workers = cfg.data.num_workers
        self.loader = DataLoader(
            _SeededDataset(dataset),
            batch_sampler=self.batch_sampler,
            num_workers=workers,
            collate_fn=getattr(self.task, "collate", None) or default_collate,
            pin_memory=cfg.data.pin_memory and self.device.type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=_worker_init if workers > 0 else None,
            generator=torch.Generator().manual_seed(cfg.train.seed),  # keeps the global RNG untouched
        )

    # ---------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        """Everything a checkpoint holds (see ``trianflow.training.checkpoint``), this rank's RNG only."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "arch": {k: model_arch(m) for k, m in self.models.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": [capture_rng_state()],
            "config": config_to_dict(self.cfg),
            "task": self.task_name,
            "stage": self.cfg.train.stage,
            "stats": {"skipped_steps": self.skipped_total, "consecutive_skips": self.consecutive_skips},
        }

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint for the current step (collective: call on every rank). Rank 0 writes."""
        rng = D.all_gather_objects(capture_rng_state())
        path = None
        if self.info.is_main:
            state = self.state_dict()
            state["rng"] = rng
            path = self.ckpts.save(state, self.step)
            log.info("checkpoint step %d -> %s", self.step, path)
        self._last_saved_step = self.step
        return path

    # ---------------------------------------------------------------- signals
    def _on_signal(self, signum, _frame) -> None:
        self._signal_count += 1
        if self._signal_count > 1:
            raise KeyboardInterrupt
        self._stop_requested = True
        log.warning("received %s: finishing this step, saving a checkpoint, then stopping",
                    signal.Signals(signum).name)

    @contextlib.contextmanager
    def _signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in old:
            signal.signal(s, self._on_signal)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def request_stop(self) -> None:
        """Ask the loop to stop after the current step (a checkpoint is written)."""
        self._stop_requested = True

    def close(self) -> None:
        """Release the DDP wrappers (each holds the process group and its gloo/NCCL threads).

        Call before :func:`trianflow.training.distributed.cleanup`: a wrapper that outlives
        ``destroy_process_group`` tears the group down during interpreter exit, which can abort
        the process ("terminate called without an active exception"). The trainer stays usable
        for inspection (``models`` are untouched); call :meth:`run` again only in one process.
        """
        self.wrapped = {k: D.unwrap(m) for k, m in self.wrapped.items()}
        gc.collect()

    # ---------------------------------------------------------------- tensorboard
    def _open_writer(self):
        if not self.info.is_main:
            return None
        tb = self._open_tensorboard()
        if self.viz_writer is None:
            return tb
        return _TeeWriter([w for w in (tb, self.viz_writer) if w is not None])

    def _open_tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            log.warning("tensorboard is not installed (%s): no event files will be written; "
                        "pip install tensorboard", exc)
            return None
        return SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step if self.step > 0 else None)

    # ---------------------------------------------------------------- one step
    def _train_step(self, batch) -> tuple[StepOutput, bool, float]:
        cfg = self.cfg
        batch = _move(batch, self.device, cfg.train.channels_last, non_blocking=cfg.data.pin_memory)
        every = cfg.train.image_every
        want_images = self.info.is_main and every > 0 and (self.step + 1) % every == 0
        ctx = StepContext(step=self.step, stage=cfg.train.stage, device=self.device, models=self.wrapped,
                          want_images=want_images, autocast=self.autocast, amp_dtype=self.amp_dtype)
        self.optimizer.zero_grad(set_to_none=True)
        out = self.task.step(batch, ctx)
        if not isinstance(out, StepOutput):
            raise TypeError(f"task.step() must return a StepOutput, got {type(out).__name__}")
        loss = out.loss
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("StepOutput.loss must be a scalar tensor")
        if out.num_images is None:
            out.num_images = _batch_size_of(batch)
        loss_bad = not bool(torch.isfinite(loss.detach()).item())
        flags = torch.tensor([float(loss_bad), float(self._stop_requested)], device=self.device)
        if self.info.distributed:
            flags = D.all_reduce_max(flags)
        if flags[1].item() > 0:
            self._stop_requested = True
        if flags[0].item() > 0:  # some rank has a non-finite loss: every rank skips together
            self.optimizer.zero_grad(set_to_none=True)
            self._scheduler_step()
            return out, False, float("nan")
        if not loss.requires_grad:
            raise RuntimeError("StepOutput.loss has no gradient: no trainable parameter contributed to it")
        self.scaler.scale(loss.reshape(())).backward()
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self._params, max_norm))
        ok = math.isfinite(grad_norm)
        if ok or self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # GradScaler skips the update itself on inf/nan
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._scheduler_step()
        return out, ok, grad_norm

    def _scheduler_step(self) -> None:
        with warnings.catch_warnings():  # skipped first steps make torch warn about the call order
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*optimizer.step", category=UserWarning)
            self.scheduler.step()

    # ---------------------------------------------------------------- loop
    def run(self) -> dict:
        """Train until ``cfg.train.steps`` (or a stop signal); returns a summary dict.

        Summary keys: ``step``, ``steps_run``, ``skipped_steps``, ``interrupted``, ``loss`` (mean
        of the last log window), ``terms``, ``images_per_s``, ``elapsed_s``, ``peak_mem_mb``,
        ``device``, ``world_size``, ``checkpoint``, ``out_dir``.
        """
        cfg = self.cfg
        total = cfg.train.steps
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "config.yaml")
        if self._pending_rng is not None:
            restore_rng_state(self._pending_rng)
            self._pending_rng = None
        writer = self._open_writer()
        bar = None
        if self.progress and self.info.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc=f"train {self.task_name}/{cfg.train.stage}",
                       dynamic_ncols=True, disable=None)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start_step = self.step
        self._last_saved_step = self.step if start_step > 0 else -1
        t_start = time.perf_counter()
        win = {"t": t_start, "images": 0, "n": 0, "loss": 0.0, "terms": {}, "grad_norm": 0.0}
        last_log: dict = {}
        interrupted = False
        try:
            with self._signal_handlers():
                while self.step < total and not self._stop_requested:
                    self.batch_sampler.epoch = self.epoch
                    self.batch_sampler.skip = self.batch_in_epoch
                    it = iter(self.loader)
                    while self.step < total and not self._stop_requested:
                        try:
                            batch = next(it)
                        except StopIteration:
                            break
                        out, ok, grad_norm = self._train_step(batch)
                        self.step += 1
                        self.batch_in_epoch += 1
                        if self.batch_in_epoch >= self.batch_sampler.batches_per_epoch:
                            self.epoch += 1
                            self.batch_in_epoch = 0
                        win["images"] += out.num_images
                        if ok:
                            self.consecutive_skips = 0
                            win["n"] += 1
                            win["loss"] += float(out.loss.detach())
                            win["grad_norm"] += grad_norm
                            for k, v in out.terms.items():
                                win["terms"][k] = win["terms"].get(k, 0.0) + float(v)
                        else:
                            self._record_skip(out, self.step - 1)
                        if out.images and writer is not None:
                            self._write_images(writer, out.images)
                        if self.step % cfg.train.log_every == 0 or self.step == total:
                            last_log = self._log(writer, bar, win)
                            win = {"t": time.perf_counter(), "images": 0, "n": 0, "loss": 0.0, "terms": {},
                                   "grad_norm": 0.0}
                        if bar is not None:
                            bar.update(1)
                        if cfg.train.ckpt_every > 0 and self.step % cfg.train.ckpt_every == 0:
                            self.save_checkpoint()
                interrupted = self._stop_requested and self.step < total
                if self._last_saved_step != self.step:
                    self.save_checkpoint()
                D.barrier()
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        elapsed = time.perf_counter() - t_start
        steps_run = self.step - start_step
        bs = cfg.data.batch_size * self.info.world_size
        summary = {
            "step": self.step,
            "steps_run": steps_run,
            "skipped_steps": self.skipped_total,
            "interrupted": interrupted,
            "loss": last_log.get("loss"),
            "terms": last_log.get("terms", {}),
            "images_per_s": (steps_run * bs / elapsed) if elapsed > 0 else None,
            "elapsed_s": elapsed,
            "peak_mem_mb": _peak_memory_mb(self.device),
            "device": str(self.device),
            "world_size": self.info.world_size,
            "checkpoint": str(self.ckpts.last),
            "out_dir": str(self.out_dir),
        }
        if self.info.is_main:
            write_json(self.out_dir / "summary.json", summary)
        return summary

    def _record_skip(self, out: StepOutput, index: int) -> None:
        self.skipped_total += 1
        self.consecutive_skips += 1
        terms = ", ".join(f"{k}={float(v):.4g}" for k, v in list(out.terms.items())[:8])
        log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row, %d in total)%s",
                    index, self.consecutive_skips, self.skipped_total, f"; terms: {terms}" if terms else "")
        if self.consecutive_skips >= self.cfg.train.max_consecutive_skips:
            raise TrainingDiverged(
                f"training diverged: {self.consecutive_skips} consecutive steps (up to step {index}) had a "
                f"non-finite loss or gradient; lower optim.lr, set optim.grad_clip, or use train.amp=off, "
                f"and resume from {self.ckpts.last}"
            )

    def _log(self, writer, bar, win) -> dict:
        now = time.perf_counter()
        dt = max(now - win["t"], 1e-9)
        n = max(win["n"], 1)
        entry = {
            "loss": win["loss"] / n if win["n"] else float("nan"),
            "terms": {k: v / n for k, v in win["terms"].items()},
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": win["grad_norm"] / n if win["n"] else float("nan"),
            "images_per_s": win["images"] * self.info.world_size / dt,
            "peak_mem_mb": _peak_memory_mb(self.device),
            "skipped_steps": self.skipped_total,
        }
        if writer is not None:
            s = self.step
            writer.add_scalar("loss/total", entry["loss"], s)
            for k, v in entry["terms"].items():
                writer.add_scalar(f"loss/{k}", v, s)
            for k in ("lr", "grad_norm", "images_per_s", "peak_mem_mb", "skipped_steps"):
                writer.add_scalar(f"train/{k}", entry[k], s)
            if self.scaler.is_enabled():
                writer.add_scalar("train/amp_scale", self.scaler.get_scale(), s)
            writer.flush()
        if bar is not None:
            bar.set_postfix(loss=f"{entry['loss']:.4g}", ips=f"{entry['images_per_s']:.1f}")
        log.info("step %d loss %.5g lr %.3g %.1f img/s peak %.0f MB skipped %d", self.step, entry["loss"],
                 entry["lr"], entry["images_per_s"], entry["peak_mem_mb"], self.skipped_total)
        if self.info.is_main:  # a plain-text record for runs without a terminal (nohup, batch jobs)
            line = json.dumps({"step": self.step, "time": round(time.time(), 1), **entry}, default=float)
            with open(self.out_dir / "log.jsonl", "a") as fh:
                fh.write(line + "\n")
        return entry

    def _write_images(self, writer, images: dict) -> None:
        for name, t in images.items():
            try:
                writer.add_image(f"images/{name}", to_display(t), self.step)
            except ValueError as exc:
                log.warning("image '%s' not logged: %s", name, exc)

    # ---------------------------------------------------------------- convenience
    @classmethod
    def from_config(cls, cfg: TrainConfig, out_dir: str | Path | None = None, resume=None,
                    progress: bool = False) -> "Trainer":
        """Seed, build the registered task ``cfg.train.task`` and return a trainer for it."""
        from trianflow.training.registry import get_task

        factory = get_task(cfg.train.task)
        seed_everything(cfg.train.seed)
        task = factory(cfg)
        return cls(cfg, task, out_dir=out_dir, resume=resume, progress=progress)

