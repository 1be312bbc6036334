"""One generic training loop for every trianflow recipe, driven by a *task* object.

The trainer owns everything that is not specific to a method: device placement, the Adam
optimiser and learning-rate schedule, mixed precision (autocast + GradScaler), gradient
clipping, skipping steps whose loss or gradients are not finite, DistributedDataParallel under
``torchrun``, a resumable data order, tensorboard scalars and images, tqdm progress, periodic
atomic checkpoints, SIGTERM/SIGINT handling and exact resumption. A *task* (see :class:`Task`)
supplies the networks, the dataset and the loss of one step.

The rooms beside it: :mod:`trianflow.training.protocol` (the task protocol: :class:`Task`,
:class:`StepContext`, :class:`StepOutput`, re-exported here), :mod:`trianflow.training.sampling`
(seeding and the resumable data order; :func:`seed_everything` is re-exported here),
:mod:`trianflow.training.log_writers` (tensorboard, ``log.jsonl``, progress, images) and
:mod:`trianflow.training.checkpoint` (files, resumption).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import math
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, ContextManager, Mapping

import torch
from torch import nn

from trianflow.config import TrainConfig, config_to_dict, save_config
from trianflow.errors import InputError
from trianflow.io.atomic import write_json
from trianflow.training import distributed as D
from trianflow.training.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    load_init_weights,
    load_optimisation_state,
    load_run_models,
    model_arch,
    resolve_resume,
    restore_rng_state,
)
from trianflow.training.log_writers import LogWindow, RunLog, peak_memory_mb
from trianflow.training.protocol import (
    StepContext,
    StepOutput,
    Task,
    checked_output,
    task_models,
    task_parameters,
)
from trianflow.training.sampling import ResumableLoader, seed_everything

log = logging.getLogger(__name__)

__all__ = [
    "Task",
    "StepContext",
    "StepOutput",
    "Trainer",
    "TrainingDiverged",
    "seed_everything",
]


class TrainingDiverged(InputError):
    """Too many consecutive steps had a non-finite loss or gradient."""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


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


def _run_config(cfg: TrainConfig, out_dir: str | Path | None) -> TrainConfig:
    """``cfg`` with ``train.out_dir`` = ``out_dir`` (when given) and ``{stage}`` in it replaced."""
    if out_dir is not None and str(out_dir) != cfg.train.out_dir:  # keep the saved config truthful
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=str(out_dir)))
    if "{stage}" in cfg.train.out_dir:  # one recipe file for all stages: runs/kitti_cpu_{stage}
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, out_dir=cfg.train.out_dir.replace("{stage}", str(cfg.train.stage))))
    return cfg


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` (``off``/``bf16``/``fp16``) on ``device``."""
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError(f"train.amp=bf16 requested but {torch.cuda.get_device_name(device)} has no "
                         "bfloat16 support; use train.amp=fp16 or train.amp=off")
    if amp == "fp16" and device.type == "cpu":
        log.warning("train.amp=fp16 on CPU is slow and rarely useful; consider train.amp=bf16")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _set_backend_flags(deterministic: bool, device: torch.device) -> None:
    """``train.deterministic``: torch's deterministic algorithms (warn where none exists), no cuDNN autotuning."""
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def _signals_to(handler: Callable):
    """SIGTERM and SIGINT call ``handler`` inside the block (main thread only); the old handlers come back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Trainer:
    """Train ``task`` with ``cfg`` (the task protocol: :mod:`trianflow.training.protocol`).

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
        self.cfg = cfg = _run_config(cfg, out_dir)
        self.task = task
        self.task_name = task_name or cfg.train.task
        self.out_dir = Path(cfg.train.out_dir)
        self.progress = progress
        self.info = D.detect()
        self.device = D.resolve_device(cfg.train.device, self.info.local_rank)
        D.init_distributed(self.device, self.info)
        self.ckpts = CheckpointManager(self.out_dir, keep=cfg.train.keep_ckpts)
        self.amp_dtype = _amp_dtype(cfg.train.amp, self.device)
        _set_backend_flags(cfg.train.deterministic, self.device)

        self.step = 0
        self.skipped_total = 0
        self.consecutive_skips = 0
        self._stop_requested = False
        self._signal_count = 0
        self.viz_writer = None  # extra SummaryWriter-like sink, e.g. a Rerun TrainRecorder (trianflow train --viz)

        # models
        self.models: dict[str, nn.Module] = task_models(task)
        for m in self.models.values():
            m.to(self.device, memory_format=torch.channels_last if cfg.train.channels_last else torch.preserve_format)
        if hasattr(task, "set_stage"):
            task.set_stage(cfg.train.stage)
        load_init_weights(self.models, {"flow": cfg.train.init_flow, "depth": cfg.train.init_depth}, self.task_name)
        self.resume_path = resolve_resume(resume, self.ckpts.last)
        ckpt = load_checkpoint(self.resume_path) if self.resume_path is not None else None
        if ckpt is not None:
            load_run_models(self.models, ckpt, str(self.resume_path), self.task_name)
        params, self._params = task_parameters(task, self.models, self.task_name, cfg.train.stage)
        for m in self.models.values():
            m.train(any(p.requires_grad for p in m.parameters()))
        self.wrapped = {k: D.wrap_ddp(m, self.device, cfg.train.find_unused_parameters)
                        for k, m in self.models.items()}

        o = cfg.optim
        self.optimizer = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self._pending_rng = None
        if ckpt is not None:
            self._load_training_state(ckpt)
        else:
            seed_everything(cfg.train.seed + 1_000_003 * self.info.rank)

        self.dataset = task.build_dataset("train")
        self.data = ResumableLoader(self.dataset, cfg, self.info.rank, self.info.world_size, self.device,
                                    getattr(task, "collate", None))
        if ckpt is not None:
            self.data.epoch = int(ckpt.get("epoch", 0))
            self.data.batch_in_epoch = int(ckpt.get("batch_in_epoch", 0))

    # ---------------------------------------------------------------- setup
    def autocast(self) -> ContextManager:
        """Autocast context for network forwards in the configured AMP dtype (no-op when off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _load_training_state(self, ckpt: dict) -> None:
        src = str(self.resume_path)
        load_optimisation_state(ckpt, src, self.cfg.train.stage, self.optimizer, self.scheduler, self.scaler)
        self.step = int(ckpt["step"])
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
        log.info("resumed from %s at step %d (epoch %s, batch %s)", src, self.step, ckpt.get("epoch", 0),
                 ckpt.get("batch_in_epoch", 0))

    # ---------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        """Everything a checkpoint holds (see ``trianflow.training.checkpoint``), this rank's RNG only."""
        return {
            "step": self.step,
            "epoch": self.data.epoch,
            "batch_in_epoch": self.data.batch_in_epoch,
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

    # ---------------------------------------------------------------- one step
    def _train_step(self, batch) -> tuple[StepOutput, bool, float]:
        cfg = self.cfg
        batch = _move(batch, self.device, cfg.train.channels_last, non_blocking=cfg.data.pin_memory)
        every = cfg.train.image_every
        want_images = self.info.is_main and every > 0 and (self.step + 1) % every == 0
        ctx = StepContext(step=self.step, stage=cfg.train.stage, device=self.device, models=self.wrapped,
                          want_images=want_images, autocast=self.autocast, amp_dtype=self.amp_dtype)
        self.optimizer.zero_grad(set_to_none=True)
        out = checked_output(self.task.step(batch, ctx), batch)
        loss = out.loss
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
        record = RunLog(self.out_dir, self.step, total, f"train {self.task_name}/{cfg.train.stage}",
                        self.info.is_main, self.progress, self.device, self.info.world_size, self.viz_writer)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start_step = self.step
        self._last_saved_step = self.step if start_step > 0 else -1
        t_start = time.perf_counter()
        win = LogWindow()
        last_log: dict = {}
        interrupted = False
        try:
            with _signals_to(self._on_signal):
                self.data.restart()
                while self.step < total and not self._stop_requested:
                    out, ok, grad_norm = self._train_step(self.data.next_batch())
                    self.step += 1
                    self.data.advance()
                    win.add(out, ok, grad_norm)
                    if ok:
                        self.consecutive_skips = 0
                    else:
                        self._record_skip(out, self.step - 1)
                    record.images(out.images, self.step)
                    if self.step % cfg.train.log_every == 0 or self.step == total:
                        amp_scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
                        last_log = record.write(self.step, win, self.optimizer.param_groups[0]["lr"],
                                                self.skipped_total, amp_scale)
                        win = LogWindow()
                    record.advance()
                    if cfg.train.ckpt_every > 0 and self.step % cfg.train.ckpt_every == 0:
                        self.save_checkpoint()
                interrupted = self._stop_requested and self.step < total
                if self._last_saved_step != self.step:
                    self.save_checkpoint()
                D.barrier()
        finally:
            record.close()
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
            "peak_mem_mb": peak_memory_mb(self.device),
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

