"""Training checkpoints: atomic writes, rotation, safe loading, architecture checks, RNG state.

A checkpoint is one ``torch.save`` file holding a dict::

    {
      "format": "trianflow-checkpoint", "format_version": 1, "trianflow_version": "0.1.0",
      "step": int,                  # optimiser steps done (skipped steps included)
      "epoch": int, "batch_in_epoch": int,   # data position, for exact resumption
      "models": {name: state_dict}, "arch": {name: dict | None},   # arch = model.arch_config()
      "optimizer": state_dict, "scheduler": state_dict | None, "scaler": state_dict | None,
      "rng": [per-rank dict from capture_rng_state()],
      "config": nested config dict, "task": str, "stage": str,
      "stats": {"skipped_steps": int, ...},
    }

Files are written to a temporary name and renamed (a run killed while saving leaves the
previous checkpoint intact). Loading uses ``torch.load(weights_only=True)``, so a checkpoint
cannot run code; corrupted, truncated or foreign files raise :class:`InputError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import torch
from torch import nn

from trianflow.errors import InputError
from trianflow.models import check_state_dict  # re-exported: one key/shape check for every loader
from trianflow.io.atomic import atomic_path

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

CHECKPOINT_FORMAT = "trianflow-checkpoint"
FORMAT_VERSION = 1
LAST_NAME = "last.pt"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "CheckpointManager",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "model_arch",
    "check_state_dict",
    "load_model_weights",
    "load_init_weights",
    "resolve_resume",
    "load_run_models",
    "load_optimisation_state",
]


def save_checkpoint(path: PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + ``os.replace``).

    ``format``/``format_version``/``trianflow_version`` are added when missing. Returns the path.
    """
    from trianflow import __version__

    path = Path(path)
    state = dict(state)
    state.setdefault("format", CHECKPOINT_FORMAT)
    state.setdefault("format_version", FORMAT_VERSION)
    state.setdefault("trianflow_version", __version__)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else text


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict:
    """Load and sanity-check a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: checkpoint file.
        map_location: passed to ``torch.load`` (default: tensors on CPU).

    Raises:
        InputError: the file is missing, a directory, corrupted/truncated, not a trianflow
        checkpoint, or written by a newer format version.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise InputError(f"checkpoint {path} is a directory; pass a file such as {path / LAST_NAME}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": irrelevant to the user
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = _one_line(exc)
        if re.search(r"weights.only|unsupported global", msg, re.IGNORECASE):
            raise InputError(
                f"checkpoint {path} is not a trianflow checkpoint: it holds Python objects that cannot be "
                "loaded safely (only tensors, numbers, strings, lists and dicts are allowed)"
            ) from None
        raise InputError(f"checkpoint {path} is corrupted or truncated ({msg}); use an earlier checkpoint") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise InputError(
            f"checkpoint {path} is corrupted or truncated ({type(exc).__name__}: {_one_line(exc)}); "
            "use an earlier checkpoint (step_*.pt beside it)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        what = f"keys {sorted(state)[:5]}" if isinstance(state, dict) else type(state).__name__
        raise InputError(
            f"{path} is not a trianflow training checkpoint (no format '{CHECKPOINT_FORMAT}'; found {what})"
        )
    version = state.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"checkpoint {path} has format version {version}, newer than this trianflow ({FORMAT_VERSION}); upgrade trianflow"
        )
    for key in ("models", "step"):
        if key not in state:
            raise InputError(f"checkpoint {path} is incomplete: missing '{key}'")
    return state


class CheckpointManager:
    """Writes ``step_NNNNNNN.pt`` files plus ``last.pt`` in ``directory``, keeping the newest ``keep``.

    ``last.pt`` is a hard link to the newest step file where the filesystem allows (no second
    write), else a copy; with ``keep=0`` only ``last.pt`` is written.
    """

    def __init__(self, directory: PathLike, keep: int = 3):
        self.directory = Path(directory)
        self.keep = int(keep)

    @property
    def last(self) -> Path:
        """Path of ``last.pt`` (may not exist yet)."""
        return self.directory / LAST_NAME

    def step_path(self, step: int) -> Path:
        """Path of the checkpoint for ``step``."""
        return self.directory / f"step_{step:07d}.pt"

    def step_files(self) -> list[Path]:
        """Existing step checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _STEP_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def save(self, state: dict, step: int) -> Path:
        """Write ``state`` for ``step``; update ``last.pt``; prune old step files. Returns ``last.pt``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.keep <= 0:
            return save_checkpoint(self.last, state)
        step_file = save_checkpoint(self.step_path(step), state)
        tmp = self.directory / f".{LAST_NAME}.{os.getpid()}.link"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.link(step_file, tmp)
            os.replace(tmp, self.last)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            with atomic_path(self.last) as t:
                shutil.copyfile(step_file, t)
        for old in self.step_files()[: -self.keep]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return self.last


# --------------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------------


def capture_rng_state() -> dict:
    """Python, NumPy (global), torch CPU and (if initialised) CUDA generator states.

    Everything is stored as tensors/tuples/ints so it loads with ``weights_only=True``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored when both sides have them."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        n_dev = min(len(cuda), torch.cuda.device_count())
        for i in range(n_dev):
            torch.cuda.set_rng_state(cuda[i].cpu(), i)


# --------------------------------------------------------------------------------------------
# model weights and architecture checks
# --------------------------------------------------------------------------------------------


def model_arch(model: nn.Module) -> dict | None:
    """``model.arch_config()`` if the model provides it (a plain dict describing its shape), else None."""
    fn = getattr(model, "arch_config", None)
    return dict(fn()) if callable(fn) else None


def _arch_diff(saved: Mapping, current: Mapping) -> str:
    keys = sorted(set(saved) | set(current), key=str)
    diffs = [f"{k}: {saved.get(k, '<absent>')!r} vs {current.get(k, '<absent>')!r}" for k in keys
             if saved.get(k, "<absent>") != current.get(k, "<absent>")]
    return "; ".join(diffs[:4]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 4 else "")


def load_model_weights(model: nn.Module, ckpt: Mapping, name: str, source: str) -> None:
    """Load the weights of model ``name`` from a loaded checkpoint dict into ``model``.

    Checks that the checkpoint has that model, that its saved ``arch`` equals
    ``model.arch_config()`` (when both exist), and that keys and shapes match.

    Raises:
        InputError: naming ``source``, the model and what differs.
    """
    models = ckpt.get("models", {})
    if name not in models:
        raise InputError(
            f"checkpoint {source} has no '{name}' network (it has: {', '.join(sorted(models)) or 'none'})"
        )
    saved_arch = (ckpt.get("arch") or {}).get(name)
    current_arch = model_arch(model)
    if saved_arch is not None and current_arch is not None and dict(saved_arch) != current_arch:
        raise InputError(
            f"checkpoint {source}: '{name}' network was saved with another architecture "
            f"({_arch_diff(saved_arch, current_arch)}); set model.{name}.* to match or use another checkpoint"
        )
    check_state_dict(model, models[name], f"checkpoint {source}: '{name}' network")
    model.load_state_dict(models[name], strict=True)


# --------------------------------------------------------------------------------------------
# what a run starts from: initial weights, resumption
# --------------------------------------------------------------------------------------------


def load_init_weights(models: Mapping[str, nn.Module], init: Mapping[str, str | None], task_name: str) -> None:
    """Initialise networks from checkpoints (``train.init_flow`` / ``train.init_depth``).

    Args:
        models: the task's networks by name.
        init: network name -> checkpoint path (None or "" leaves that network as it is).
        task_name: for messages.

    Raises:
        InputError: a path names a network the task does not have, or its checkpoint does not fit.
    """
    for name, path in init.items():
        if not path:
            continue
        if name not in models:
            raise InputError(
                f"train.init_{name}={path} but task '{task_name}' has no '{name}' network "
                f"(it has: {', '.join(models)})"
            )
        ckpt = load_checkpoint(path)
        load_model_weights(models[name], ckpt, name, str(path))
        log.info("initialised '%s' network from %s (step %s)", name, path, ckpt.get("step"))


def resolve_resume(resume: PathLike | str | bool | None, last: Path) -> Path | None:
    """The checkpoint to resume from: None/False -> None; ``"auto"`` -> ``last`` if it exists; else the path."""
    if resume is None or resume is False:
        return None
    if str(resume) == "auto":
        if not last.exists():
            log.info("no checkpoint at %s: starting a new run", last)
            return None
        return last
    return Path(resume)


def load_run_models(models: Mapping[str, nn.Module], ckpt: Mapping, source: str, task_name: str) -> None:
    """Load every network of a resumed run; the checkpoint may hold no network the task lacks.

    Raises:
        InputError: naming ``source`` and the networks or weights that do not fit.
    """
    extra = sorted(set(ckpt["models"]) - set(models))
    if extra:
        raise InputError(
            f"checkpoint {source} holds networks {extra} that task '{task_name}' does not have; "
            "it was written by another task"
        )
    for name, m in models.items():
        load_model_weights(m, ckpt, name, source)


def load_optimisation_state(ckpt: Mapping, source: str, stage: str, optimizer: torch.optim.Optimizer,
                            scheduler, scaler: torch.amp.GradScaler) -> None:
    """Restore optimiser, learning-rate schedule and GradScaler (when enabled) of a resumed run.

    Raises:
        InputError: the checkpoint was saved in another stage, or its optimiser state does not fit.
    """
    if ckpt.get("stage") not in (None, stage):
        raise InputError(
            f"checkpoint {source} was saved in stage '{ckpt.get('stage')}' but this run is stage "
            f"'{stage}'; to start a new stage from it use train.init_flow / train.init_depth"
        )
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise InputError(f"checkpoint {source}: optimiser state does not fit this run ({exc})") from None
    if ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler.is_enabled() and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
