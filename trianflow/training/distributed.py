"""Device selection and multi-process training under ``torchrun``.

``torchrun --nproc_per_node N -m trianflow train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in each process; :func:`init_distributed` reads them and joins the process group
(NCCL on CUDA, gloo on CPU). Without them everything runs in one process and the collective
helpers below are no-ops.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trianflow.errors import InputError
from trianflow.models import unwrap_model

log = logging.getLogger(__name__)

__all__ = [
    "DistInfo",
    "detect",
    "resolve_device",
    "init_distributed",
    "cleanup",
    "is_initialized",
    "barrier",
    "all_reduce_max",
    "all_gather_objects",
    "wrap_ddp",
    "unwrap",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes checkpoints)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def detect() -> DistInfo:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (as set by torchrun); defaults: one process."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not (0 <= rank < world):
        raise InputError(f"invalid torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps`` into a ``torch.device``.

    ``auto`` picks CUDA when available, else CPU. ``auto`` and ``cuda`` use GPU ``local_rank``
    (one GPU per torchrun process); ``cuda:N`` is taken literally.

    Raises:
        InputError: unknown spec, CUDA requested but unavailable, or index out of range.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        else:
            return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError("--device mps requested but torch.backends.mps.is_available() is False: use --device cpu")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {spec} requested but torch.cuda.is_available() is False: "
                "install a CUDA build of torch, check the driver/CUDA_VISIBLE_DEVICES, or use --device cpu"
            )
        count = torch.cuda.device_count()
        if spec == "cuda":
            index = local_rank
        else:
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise InputError(f"--device {spec}: expected cuda:N with an integer N") from None
        if not 0 <= index < count:
            raise InputError(f"--device {spec} (GPU {index}) requested but only {count} CUDA device(s) are visible")
        return torch.device("cuda", index)
    raise InputError(f"unknown device '{spec}': use auto, cpu, cuda or cuda:N")


def is_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def init_distributed(device: torch.device, info: DistInfo | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group when running under torchrun (``WORLD_SIZE`` > 1).

    Uses NCCL for CUDA devices and gloo otherwise; sets the current CUDA device. Returns the
    :class:`DistInfo`. A group that already exists is reused.
    """
    info = info or detect()
    if not info.distributed or is_initialized():
        return info
    if not dist.is_available():
        raise InputError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise InputError(f"WORLD_SIZE={info.world_size} but {var} is not set: launch with torchrun")
    dist.init_process_group(
        backend=backend, rank=info.rank, world_size=info.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    log.info("joined process group: rank %d/%d, backend %s, device %s", info.rank, info.world_size, backend, device)
    return info


def cleanup(sync: bool = True) -> None:
    """Leave the process group if one exists.

    With ``sync`` all ranks meet at a barrier first, so no rank tears its connections down while
    another still talks to it; pass ``sync=False`` on an error path (a crashed rank would never
    arrive). Drop DDP wrappers before (``Trainer.close()``): they keep the group alive.
    """
    if is_initialized():
        try:
            if sync:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for all processes (no-op in a single process)."""
    if is_initialized():
        dist.barrier()


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over processes of a small tensor (returned; a copy in one process)."""
    values = values.clone()
    if is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def all_gather_objects(obj: Any) -> list:
    """Gather one picklable object from every process (``[obj]`` in a single process)."""
    if not is_initialized():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel when a process group exists and it has trainable
    parameters; otherwise return it unchanged."""
    if not is_initialized() or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    device_ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


unwrap = unwrap_model  # the module inside a DDP wrapper (or the model itself)
