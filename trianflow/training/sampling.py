"""Seeding and the resumable, seeded data order of the trainer.

The data a run sees depends only on ``train.seed``: the sample order comes from a
``DistributedSampler`` (seeded, reshuffled per epoch), and every item is produced with the global
``random``/``numpy``/``torch`` generators seeded from ``(seed, epoch, index)``, so augmentation
drawn from them is the same across resumes, worker counts and process counts. A resumed run
skips the batches of the current epoch it had already consumed.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from trianflow.config import TrainConfig
from trianflow.errors import InputError

__all__ = [
    "seed_everything",
    "sample_seed",
    "SeededDataset",
    "ResumableBatchSampler",
    "worker_init",
    "build_loader",
    "ResumableLoader",
]


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def sample_seed(base: int, epoch: int, index: int) -> int:
    """The seed of item ``index`` in ``epoch`` of a run seeded with ``base`` (a uint32 as int)."""
    return int(np.random.SeedSequence([base % 2**32, epoch, index]).generate_state(1)[0])


class SeededDataset(Dataset):
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
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            seed_everything(seed)
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class ResumableBatchSampler(Sampler):
    """Batches of ``(index, seed)`` for one epoch of a DistributedSampler, skipping the first
    ``skip`` batches (the ones consumed before a resume). Incomplete last batches are dropped.

    Set ``epoch`` and ``skip`` before each ``iter()`` of the loader.
    """

    def __init__(self, sampler: DistributedSampler, batch_size: int, seed: int):
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    @property
    def batches_per_epoch(self) -> int:
        """Full batches in one epoch of this process's share of the dataset."""
        return len(self.sampler) // self.batch_size

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.skip, 0)

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        indices = list(iter(self.sampler))
        for b in range(self.skip, self.batches_per_epoch):
            chunk = indices[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(int(i), sample_seed(self.seed, self.epoch, int(i))) for i in chunk]


def worker_init(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: NumPy's global generator follows the worker's torch seed."""
    np.random.seed(torch.initial_seed() % 2**32)


def build_loader(dataset: Dataset, cfg: TrainConfig, rank: int, world_size: int, device: torch.device,
                 collate=None) -> tuple[DataLoader, ResumableBatchSampler]:
    """The trainer's DataLoader over ``dataset`` and its batch sampler (set its ``epoch``/``skip``).

    Args:
        dataset: map-style dataset of sample dicts.
        cfg: the run's config (``data.batch_size``, ``data.num_workers``, ``data.pin_memory``,
            ``train.seed``, ``data.dataset``/``data.root`` for messages).
        rank, world_size: this process and the number of processes (1 without torchrun).
        device: the training device (pinned memory only for CUDA).
        collate: ``callable(list[dict]) -> dict``; default ``default_collate``.

    Raises:
        TypeError: ``dataset`` has no ``__len__``.
        InputError: the dataset is empty or smaller than one batch per process.
    """
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError("task.build_dataset() must return a map-style dataset with __len__") from None
    where = f" (data.dataset={cfg.data.dataset}, data.root={cfg.data.root or '<unset>'})"
    if n == 0:
        raise InputError(f"the training dataset is empty{where}: check data.root and data.sequences")
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=cfg.train.seed, drop_last=False)
    batch_sampler = ResumableBatchSampler(sampler, cfg.data.batch_size, cfg.train.seed)
    if batch_sampler.batches_per_epoch == 0:
        raise InputError(
            f"the training dataset has {n} samples, fewer than data.batch_size={cfg.data.batch_size}"
            f" x {world_size} process(es){where}; lower data.batch_size"
        )
    workers = cfg.data.num_workers
    loader = DataLoader(
        SeededDataset(dataset),
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=collate or default_collate,
        pin_memory=cfg.data.pin_memory and device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=worker_init if workers > 0 else None,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # keeps the global RNG untouched
    )
    return loader, batch_sampler


class ResumableLoader:
    """The training batches in the run's data order, with the position a checkpoint stores.

    ``epoch`` and ``batch_in_epoch`` say where the next batch comes from; set them (from a
    checkpoint) before the first :meth:`next_batch` and call :meth:`advance` once per consumed
    batch. Epochs follow one another without end; a new epoch reshuffles.

    Args: as :func:`build_loader`.
    """

    def __init__(self, dataset: Dataset, cfg: TrainConfig, rank: int, world_size: int, device: torch.device,
                 collate=None):
        self.loader, self.batch_sampler = build_loader(dataset, cfg, rank, world_size, device, collate)
        self.epoch = 0
        self.batch_in_epoch = 0
        self._it = None

    def restart(self) -> None:
        """Forget the open iterator: the next batch is read afresh from ``(epoch, batch_in_epoch)``."""
        self._it = None

    def next_batch(self):
        """The collated batch at the current position (does not advance it)."""
        while True:
            if self._it is None:
                self.batch_sampler.epoch = self.epoch
                self.batch_sampler.skip = self.batch_in_epoch
                self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None

    def advance(self) -> None:
        """One batch consumed: move the position on (to the next epoch after its last full batch)."""
        self.batch_in_epoch += 1
        if self.batch_in_epoch >= self.batch_sampler.batches_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
