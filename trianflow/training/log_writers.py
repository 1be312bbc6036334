"""What a training run records besides checkpoints: scalars, images, progress, ``log.jsonl``.

:class:`RunLog` is the trainer's one sink. Per ``train.log_every`` steps it writes the window's
mean loss and terms, the learning rate, the gradient norm, the throughput, the peak memory and
the number of skipped steps to tensorboard (``OUT_DIR/tb``, plus an optional extra
SummaryWriter-like sink such as a Rerun ``TrainRecorder``), to the tqdm bar's postfix, to the
``logging`` record and as one JSON line to ``OUT_DIR/log.jsonl`` (for runs without a terminal).
Images returned by a task (see :class:`trianflow.training.protocol.StepOutput`) go to
tensorboard through :func:`trianflow.viz.images.to_display`. Only the main process writes.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path
from typing import Any

import torch

from trianflow.viz.images import to_display

log = logging.getLogger(__name__)

__all__ = ["RunLog", "LogWindow", "TeeWriter", "open_tensorboard", "peak_memory_mb"]


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA's max allocated on ``device``, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class TeeWriter:
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


def open_tensorboard(out_dir: Path, step: int):
    """A SummaryWriter on ``out_dir/tb`` (events after ``step`` purged on resume), or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        log.warning("tensorboard is not installed (%s): no event files will be written; "
                    "pip install tensorboard", exc)
        return None
    return SummaryWriter(str(out_dir / "tb"), purge_step=step if step > 0 else None)


class LogWindow:
    """Sums over the steps since the last log line (skipped steps count images only)."""

    def __init__(self):
        self.t = time.perf_counter()
        self.images = 0
        self.n = 0
        self.loss = 0.0
        self.grad_norm = 0.0
        self.terms: dict[str, float] = {}

    def add(self, out, ok: bool, grad_norm: float) -> None:
        """Count one step's ``StepOutput`` (``ok``: its update was applied)."""
        self.images += out.num_images
        if ok:
            self.n += 1
            self.loss += float(out.loss.detach())
            self.grad_norm += grad_norm
            for k, v in out.terms.items():
                self.terms[k] = self.terms.get(k, 0.0) + float(v)

    def entry(self, lr: float, world_size: int, peak_mem_mb: float, skipped_steps: int) -> dict:
        """The window's means: ``loss``, ``terms``, ``lr``, ``grad_norm``, ``images_per_s`` (all
        processes), ``peak_mem_mb``, ``skipped_steps``; NaN loss/grad_norm when every step was skipped."""
        dt = max(time.perf_counter() - self.t, 1e-9)
        n = max(self.n, 1)
        return {
            "loss": self.loss / n if self.n else float("nan"),
            "terms": {k: v / n for k, v in self.terms.items()},
            "lr": lr,
            "grad_norm": self.grad_norm / n if self.n else float("nan"),
            "images_per_s": self.images * world_size / dt,
            "peak_mem_mb": peak_mem_mb,
            "skipped_steps": skipped_steps,
        }


class RunLog:
    """The trainer's record of one :meth:`Trainer.run` (see the module docstring).

    Args:
        out_dir: the run folder (``tb/``, ``log.jsonl``).
        step: the step the run starts from (tensorboard purges later events of a resumed run).
        total: ``train.steps`` (the progress bar's length).
        desc: the progress bar's label.
        is_main: this is the main process (the others write nothing).
        progress: show a tqdm bar.
        device: the training device (peak memory).
        world_size: number of processes (throughput of all of them).
        extra_writer: another SummaryWriter-like sink (``add_scalar``, ``add_image``, ``flush``,
            ``close``) fed like tensorboard, or None.
    """

    def __init__(self, out_dir: Path, step: int, total: int, desc: str, is_main: bool, progress: bool,
                 device: torch.device, world_size: int = 1, extra_writer: Any = None):
        self.out_dir = Path(out_dir)
        self.is_main = is_main
        self.device = device
        self.world_size = world_size
        self.writer = None
        self.bar = None
        if is_main:
            tb = open_tensorboard(self.out_dir, step)
            self.writer = tb if extra_writer is None else TeeWriter([w for w in (tb, extra_writer) if w is not None])
        if progress and is_main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=step, desc=desc, dynamic_ncols=True, disable=None)

    def images(self, images: dict | None, step: int) -> None:
        """Show ``name -> (B,C,H,W)/(C,H,W)`` tensors (first sample) under ``images/<name>``."""
        if not images or self.writer is None:
            return
        for name, t in images.items():
            try:
                self.writer.add_image(f"images/{name}", to_display(t), step)
            except ValueError as exc:
                log.warning("image '%s' not logged: %s", name, exc)

    def write(self, step: int, window: LogWindow, lr: float, skipped_steps: int,
              amp_scale: float | None = None) -> dict:
        """Record the means of ``window`` at ``step`` (see :meth:`LogWindow.entry`); returns them."""
        entry = window.entry(lr, self.world_size, peak_memory_mb(self.device), skipped_steps)
        if self.writer is not None:
            w = self.writer
            w.add_scalar("loss/total", entry["loss"], step)
            for k, v in entry["terms"].items():
                w.add_scalar(f"loss/{k}", v, step)
            for k in ("lr", "grad_norm", "images_per_s", "peak_mem_mb", "skipped_steps"):
                w.add_scalar(f"train/{k}", entry[k], step)
            if amp_scale is not None:
                w.add_scalar("train/amp_scale", amp_scale, step)
            w.flush()
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{entry['loss']:.4g}", ips=f"{entry['images_per_s']:.1f}")
        log.info("step %d loss %.5g lr %.3g %.1f img/s peak %.0f MB skipped %d", step, entry["loss"],
                 entry["lr"], entry["images_per_s"], entry["peak_mem_mb"], entry["skipped_steps"])
        if self.is_main:  # a plain-text record for runs without a terminal (nohup, batch jobs)
            line = json.dumps({"step": step, "time": round(time.time(), 1), **entry}, default=float)
            with open(self.out_dir / "log.jsonl", "a") as fh:
                fh.write(line + "\n")
        return entry

    def advance(self) -> None:
        """One step done (the progress bar)."""
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        """Close the bar and the writers."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
