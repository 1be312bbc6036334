"""``ToyDataset``: fixed synthetic vectors with exact linear targets, for the ``toy`` training task.

The dataset of :mod:`trianflow.training.toy` (two linear "networks" that exercise the trainer, the
checkpoints and the CLI in a second). It is not an image dataset: its sample dicts hold
``x (dim,)``, ``y (dim,)``, ``z (1,)`` and ``frame_id`` instead of the image keys documented in
:mod:`trianflow.data`.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

__all__ = ["ToyDataset"]

_DATA_SEED = 1234  # the data are the same in every run and process; only the jitter follows the RNG


class ToyDataset(Dataset):
    """``samples`` fixed inputs ``x (dim,)`` with exact targets ``y = A x + b`` and ``z = w . y``.

    With ``noise > 0`` each ``__getitem__`` adds ``noise * randn(dim)`` to ``x`` using the global
    torch RNG (like image augmentation); targets stay exact for the clean input.

    Args:
        samples: number of items.
        dim: length of ``x`` and ``y``.
        noise: standard deviation of the per-item input jitter (0: none).

    Items: ``{"x": (dim,), "y": (dim,), "z": (1,), "frame_id": "toy/<i>"}``, float32.
    """

    def __init__(self, samples: int, dim: int, noise: float = 0.0):
        g = torch.Generator().manual_seed(_DATA_SEED)
        self.x = torch.randn(samples, dim, generator=g)
        self.A = torch.randn(dim, dim, generator=g) / dim**0.5
        self.b = torch.randn(dim, generator=g)
        self.w = torch.randn(dim, generator=g) / dim**0.5
        self.y = self.x @ self.A.T + self.b
        self.z = self.y @ self.w[:, None]
        self.noise = noise

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict:
        x = self.x[i]
        if self.noise > 0:
            x = x + self.noise * torch.randn_like(x)
        return {"x": x, "y": self.y[i], "z": self.z[i], "frame_id": f"toy/{i}"}
