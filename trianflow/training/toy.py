"""``toy``: a tiny built-in training task (two linear "networks" on synthetic vectors).

It exists to exercise the trainer, the checkpoints and the CLI end to end in a second: same
protocol and stage logic as the real TrianFlow task, none of the cost. Two models mimic the
TrianFlow split: ``flow`` (``Linear(dim, dim)``, regresses ``y = A x + b``) and ``depth``
(``Linear(dim, 1)``, regresses ``z = w . y`` from the flow output). Stages: ``flow`` trains
``flow`` only, ``depth`` trains ``depth`` on the frozen flow output, ``joint`` trains both.
Its dataset is :class:`trianflow.data.toy.ToyDataset` (re-exported here).

Options are read from ``cfg.model.flow`` (a free-form dict): ``dim`` (8), ``samples`` (64),
``noise`` (0.01: per-sample input jitter, the "augmentation", only with ``data.augment``),
``dropout`` (0.1: random loss mask drawn from the global torch RNG inside ``step``), ``nan_steps``
([]: steps whose loss is made NaN, to test skipping), ``nan_rank`` (-1: all ranks, else only
that rank), ``sleep_s`` (0: pause per step, to test signals).
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from trianflow.config import TrainConfig
from trianflow.data.toy import ToyDataset
from trianflow.training.protocol import StepContext, StepOutput, Task
from trianflow.training.registry import register_task

__all__ = ["ToyFlow", "ToyDepth", "ToyDataset", "ToyTask"]  # ToyDataset: from trianflow.data.toy


class ToyFlow(nn.Module):
    """``(B,dim) -> (B,dim)`` linear map."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.fc = nn.Linear(dim, dim)

    def arch_config(self) -> dict:
        """Architecture description stored in checkpoints."""
        return {"kind": "toy_flow", "dim": self.dim}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B,dim)`` -> ``(B,dim)``."""
        return self.fc(x)


class ToyDepth(nn.Module):
    """``(B,dim) -> (B,1)`` linear map."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.fc = nn.Linear(dim, 1)

    def arch_config(self) -> dict:
        """Architecture description stored in checkpoints."""
        return {"kind": "toy_depth", "dim": self.dim}

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``y (B,dim)`` -> ``(B,1)``."""
        return self.fc(y)


@register_task("toy")
class ToyTask(Task):
    """The toy task (see the module docstring)."""

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        opts = dict(cfg.model.flow)
        self.dim = int(opts.get("dim", 8))
        self.samples = int(opts.get("samples", 64))
        self.noise = float(opts.get("noise", 0.01))
        self.dropout = float(opts.get("dropout", 0.1))
        self.nan_steps = {int(s) for s in opts.get("nan_steps", [])}
        self.nan_rank = int(opts.get("nan_rank", -1))
        self.sleep_s = float(opts.get("sleep_s", 0.0))
        self._models = {"flow": ToyFlow(self.dim), "depth": ToyDepth(self.dim)}
        self.stage = cfg.train.stage

    def models(self) -> dict[str, nn.Module]:
        """``{"flow": ToyFlow, "depth": ToyDepth}``."""
        return self._models

    def set_stage(self, stage: str) -> None:
        """flow: train flow; depth: train depth (flow frozen); joint: both."""
        self.stage = stage
        self._models["flow"].requires_grad_(stage in ("flow", "joint"))
        self._models["depth"].requires_grad_(stage in ("depth", "joint"))

    def build_dataset(self, split: str) -> Dataset:
        """The synthetic regression set (``samples`` items; ``noise`` only with ``data.augment``)."""
        return ToyDataset(self.samples, self.dim, self.noise if self.cfg.data.augment else 0.0)

    def step(self, batch: dict, ctx: StepContext) -> StepOutput:
        """MSE losses of the trained stage(s), with a random element mask (global RNG)."""
        if self.sleep_s > 0:
            time.sleep(self.sleep_s)
        x, y, z = batch["x"], batch["y"], batch["z"]
        with ctx.autocast():
            pred_y = ctx.models["flow"](x)
        pred_y = pred_y.float()
        terms: dict = {}
        loss = x.new_zeros(())
        if self.stage in ("flow", "joint"):
            keep = (torch.rand(pred_y.shape, device=x.device) >= self.dropout).float()
            l_flow = ((pred_y - y) ** 2 * keep).sum() / keep.sum().clamp_min(1.0)
            loss = loss + l_flow
            terms["flow"] = l_flow.detach()
        if self.stage in ("depth", "joint"):
            with ctx.autocast():
                pred_z = ctx.models["depth"](pred_y.detach() if self.stage == "depth" else pred_y)
            l_depth = ((pred_z.float() - z) ** 2).mean()
            loss = loss + l_depth
            terms["depth"] = l_depth.detach()
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if ctx.step in self.nan_steps and self.nan_rank in (-1, rank):
            loss = loss * float("nan")
        images = None
        if ctx.want_images:
            b = pred_y.shape[0]
            side = int((self.dim // 2) ** 0.5) or 1
            field = pred_y[:, : 2 * side * side].detach().reshape(b, 2, side, side)
            images = {"flow": field, "error": (pred_y - y).detach().abs().reshape(b, 1, 1, self.dim)}
        return StepOutput(loss=loss, terms=terms, images=images, num_images=x.shape[0])
