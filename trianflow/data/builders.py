"""Builders of the training datasets from a config: one place that maps ``data.dataset`` names to
the dataset classes of :mod:`trianflow.data`.

* :func:`build_training_dataset` - from a data config section (``kitti_odometry``, ``kitti_raw``,
  ``synthetic``, ``sequence``), train or validation split;
* :func:`build_trianflow_dataset` - the frame pairs of the ``trianflow`` training task
  (``synthetic`` with ``data.sequences`` specs, ``kitti_odometry``, ``kitti_raw``, and
  ``sequence`` / ``image_folder`` / ``tum`` / ``video``);
* :func:`build_stereo_dataset` - the stereo samples of the ``stereo`` / ``stereo_mono`` tasks
  (names in :data:`~trianflow.data.stereo_pairs.STEREO_DATASETS`);
* :func:`parse_synthetic_spec` - a ``"<kind>[:<seed>[:<frames>[:<metres per frame>]]]"`` entry of
  ``data.sequences`` for the synthetic renderer.

Bad input (unknown name, missing root, empty dataset) is a clear :class:`~trianflow.errors.InputError`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from trianflow.data.kitti_odometry import KittiOdometryDataset
from trianflow.data.kitti_raw import KittiRawDataset
from trianflow.data.sequence import open_sequence
from trianflow.data.sequences_dataset import SequencePairsDataset, parse_frame_range
from trianflow.data.stereo_pairs import (MIDDLEBURY_WIDTH, STEREO_DATASETS, KittiStereoDataset, MiddleburyDataset,
                                         StereoFolderDataset, kitti_stereo_year)
from trianflow.data.synthetic import TRAJECTORY_KINDS, SyntheticDataset
from trianflow.data.transforms import TransformedDataset, default_train_transform
from trianflow.errors import InputError

if TYPE_CHECKING:
    from trianflow.config import TrainConfig

__all__ = [
    "TRAINING_DATASETS",
    "SEQUENCE_KINDS",
    "SYNTHETIC_BASELINE",
    "parse_synthetic_spec",
    "build_training_dataset",
    "build_trianflow_dataset",
    "build_stereo_dataset",
]


TRAINING_DATASETS = ("kitti_odometry", "kitti_raw", "synthetic", "sequence")


def build_training_dataset(cfg, split: str = "train") -> torch.utils.data.Dataset:
    """Build a training/validation dataset from a data config (e.g. ``trianflow.config.DataConfig``).

    Reads these attributes of ``cfg`` (missing ones take the defaults in brackets): ``dataset``
    (``kitti_odometry``, ``kitti_raw``, ``synthetic`` or ``sequence`` = any path
    :func:`~trianflow.data.open_sequence` reads: TUM, image folder, video), ``root``,
    ``split_file`` (KITTI raw) [""], ``sequences`` (KITTI odometry) [all], ``size`` [256, 832],
    ``frames`` [2], ``stride`` [1], ``stereo`` [False], ``static_filter`` [False],
    ``static_threshold`` [1.0], ``static_method`` ["mad"], ``augment`` [True], ``flip`` [True],
    ``color_jitter`` [True], ``scale_crop`` [1.0], ``max_samples`` [0 = all], ``intrinsics``
    (for ``sequence``) [None].

    ``split`` other than ``"train"`` disables augmentation; for ``synthetic`` it also changes the
    scene seed (train 0, others 1). Returns a map-style dataset of sample dicts.
    Raises InputError for an unknown dataset name or a path without images.
    """
    g = lambda name, default=None: getattr(cfg, name, default)  # noqa: E731
    name = str(g("dataset", "synthetic"))
    size = tuple(int(v) for v in g("size", (256, 832))) if g("size") else None
    frames, stride, stereo = int(g("frames", 2)), int(g("stride", 1)), bool(g("stereo", False))
    train = split == "train"
    transform = None
    if train and g("augment", True):
        transform = default_train_transform(size=None, flip=bool(g("flip", True)), jitter=bool(g("color_jitter", True)),
                                            scale_crop=float(g("scale_crop", 1.0)))
    static = float(g("static_threshold", 1.0)) if g("static_filter", False) else None
    method = str(g("static_method", "mad"))
    root = str(g("root", "") or "")
    rng = parse_frame_range(g("frame_range"))
    camera = str(g("camera", "auto") or "auto")
    if name != "synthetic" and not root:
        raise InputError(f"data.root is empty: give the folder of the {name} dataset")
    if name == "kitti_odometry":
        seqs = list(g("sequences", []) or []) or None
        ds = KittiOdometryDataset(root, sequences=seqs, frames=frames, stride=stride, size=size, stereo=stereo,
                                  transform=transform, static_threshold=static, static_method=method,
                                  frame_range=rng, camera=camera)
    elif name == "kitti_raw":
        ds = KittiRawDataset(root, split=g("split_file") or None, frames=frames, stride=stride, size=size,
                             stereo=stereo, transform=transform, static_threshold=static, static_method=method,
                             frame_range=rng, camera=camera)
    elif name == "synthetic":
        n = int(g("max_samples", 0) or 0)
        n_frames = max(n + (max(frames, 2) - 1) * stride, 40) if n else 40
        ds = SyntheticDataset(n_frames=n_frames, size=size or (192, 640), seed=0 if train else 1,
                              baseline=0.54 if stereo else None, frames=max(frames, 2), stride=stride,
                              transform=transform)
    elif name == "sequence":
        seq = open_sequence(root, intrinsics=g("intrinsics"), stereo=stereo)
        ds = SequencePairsDataset(seq, frames=frames, stride=stride, size=size, transform=transform, stereo=stereo,
                                  static_threshold=static, static_method=method, frame_range=rng)
    else:
        raise InputError(f"unknown dataset {name!r}: use one of {', '.join(TRAINING_DATASETS)}")
    if len(ds) == 0:
        raise InputError(f"{root or name}: the dataset has no samples")
    n = int(g("max_samples", 0) or 0)
    if 0 < n < len(ds):
        ds = torch.utils.data.Subset(ds, range(n))
    return ds


SEQUENCE_KINDS = ("sequence", "image_folder", "tum", "video")


def _train_transform(cfg: TrainConfig, size):
    d = cfg.data
    if not d.augment:
        return None
    return default_train_transform(size=size, flip=d.flip, jitter=d.color_jitter, scale_crop=d.scale_crop)


def parse_synthetic_spec(spec: str) -> tuple[str, int, int, float]:
    """``'<kind>[:<seed>[:<frames>[:<metres per frame>]]]'`` (a ``data.sequences`` entry of a synthetic
    config) -> ``(kind, seed, frames, step)``; defaults ``forward_turn``, 0, 40, 1.0.

    Raises:
        InputError: unknown kind, non-numeric fields, too many fields or a non-positive step.
    """
    parts = str(spec).split(":")
    kind = parts[0] or "forward_turn"
    usage = "synthetic sequences are '<kind>[:<seed>[:<frames>[:<metres per frame>]]]', e.g. 'forward_turn:3:40:0.5'"
    try:
        seed = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        n = int(parts[2]) if len(parts) > 2 and parts[2] else 40
        step = float(parts[3]) if len(parts) > 3 and parts[3] else 1.0
    except ValueError:
        raise InputError(f"data.sequences entry {spec!r}: {usage}") from None
    if kind not in TRAJECTORY_KINDS or len(parts) > 4 or not step > 0:
        raise InputError(f"data.sequences entry {spec!r}: {usage}, kind one of {', '.join(TRAJECTORY_KINDS)}")
    return kind, seed, n, step


def build_trianflow_dataset(cfg) -> Dataset:
    """The training dataset of image pairs of the ``trianflow`` task named by ``cfg.data``.

    ``cfg.data.dataset``: ``synthetic`` (rendered street scenes with exact ground truth;
    ``data.sequences`` entries ``"<kind>[:<seed>[:<frames>[:<metres per frame>]]]"``, default
    ``["forward_turn:0:40"]`` (1 m per frame), kinds from
    :data:`trianflow.data.synthetic.TRAJECTORY_KINDS`), ``kitti_odometry`` (``data.root``,
    ``data.sequences``), ``kitti_raw`` (``data.root``, ``data.split_file``), and ``sequence`` /
    ``image_folder`` / ``tum`` / ``video`` (any folder or video :func:`~trianflow.data.open_sequence`
    reads: ``data.root``, or ``data.root/<name>`` for each name of ``data.sequences``).

    Samples hold at least ``image``, ``image_next`` (+ ``*_aug``) and ``K``; images are
    ``cfg.data.size``. ``data.max_samples > 0`` keeps the first samples only.

    Raises:
        InputError: unknown ``data.dataset``, ``data.frames=1``, a missing/empty path, or no samples.
    """
    d = cfg.data
    if d.frames < 2:
        raise InputError(f"data.frames={d.frames}: the trianflow task trains on frame pairs; set data.frames=2")
    size = (int(d.size[0]), int(d.size[1]))
    static = float(d.static_threshold) if d.static_filter else None
    rng = parse_frame_range(d.frame_range)
    name = d.dataset
    if name == "synthetic":
        specs = list(d.sequences) or ["forward_turn:0:40"]
        parts = []
        for spec in specs:
            kind, seed, n, step = parse_synthetic_spec(spec)
            parts.append(SyntheticDataset(n_frames=n, size=size, kind=kind, seed=seed, frames=d.frames,
                                          stride=d.stride, step=step, transform=_train_transform(cfg, None)))
        ds: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    elif name == "kitti_odometry":
        if not d.root:
            raise InputError("data.dataset=kitti_odometry needs data.root (a KITTI odometry sequence folder or root)")
        ds = KittiOdometryDataset(d.root, sequences=list(d.sequences) or None, frames=d.frames, stride=d.stride,
                                  size=size, transform=_train_transform(cfg, None), static_threshold=static,
                                  static_method=d.static_method, frame_range=rng, camera=d.camera)
    elif name == "kitti_raw":
        if not d.root:
            raise InputError("data.dataset=kitti_raw needs data.root (the KITTI raw root with <date>/ folders)")
        ds = KittiRawDataset(d.root, split=d.split_file or None, frames=d.frames, stride=d.stride, size=size,
                             transform=_train_transform(cfg, None), static_threshold=static,
                             static_method=d.static_method, frame_range=rng, camera=d.camera)
    elif name in SEQUENCE_KINDS:
        if not d.root:
            raise InputError(f"data.dataset={name} needs data.root (a sequence folder or video)")
        paths = [Path(d.root) / s for s in d.sequences] if d.sequences else [Path(d.root)]
        parts = []
        for p in paths:
            seq = open_sequence(p)
            parts.append(SequencePairsDataset(seq, frames=d.frames, stride=d.stride, size=size,
                                              transform=_train_transform(cfg, None), static_threshold=static,
                                              static_method=d.static_method, frame_range=rng))
        ds = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    else:
        raise InputError(f"data.dataset={name!r} is not supported by the trianflow task; use synthetic, "
                         f"kitti_odometry, kitti_raw or one of {', '.join(SEQUENCE_KINDS)}")
    if len(ds) == 0:
        raise InputError(f"data.dataset={name} (data.root={d.root or '<unset>'}) has no training pairs")
    if d.max_samples > 0 and len(ds) > d.max_samples:
        ds = Subset(ds, range(d.max_samples))
    return ds


#: baseline of the synthetic stereo rig (metres, KITTI-like)
SYNTHETIC_BASELINE = 0.54


def _synthetic_stereo(cfg: TrainConfig, split: str, frames: int, transform) -> Dataset:
    d = cfg.data
    size = (int(d.size[0]), int(d.size[1]))
    parts = []
    for spec in list(d.sequences) or ["forward_turn:0:40"]:
        kind, seed, n, step = parse_synthetic_spec(spec)
        if split != "train":
            seed += 1000
        parts.append(SyntheticDataset(n_frames=n, size=size, kind=kind, seed=seed, baseline=SYNTHETIC_BASELINE,
                                      frames=max(2, int(frames)), stride=d.stride, step=step, transform=transform))
    ds: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if d.max_samples > 0 and len(ds) > d.max_samples:  # type: ignore[arg-type]
        ds = Subset(ds, range(d.max_samples))
    return ds


def build_stereo_dataset(cfg: TrainConfig, split: str = "train", frames: int = 1) -> Dataset:
    """Training dataset of stereo samples for ``cfg.data`` (the ``stereo`` / ``stereo_mono`` tasks).

    * ``kitti_raw``, ``kitti_odometry``, ``sequence``:
      :func:`build_training_dataset` with ``stereo=True`` and
      ``frames``;
    * ``synthetic`` (alias ``synthetic_stereo``): rendered stereo sequences
      (:class:`~trianflow.data.synthetic.SyntheticDataset`, baseline :data:`SYNTHETIC_BASELINE`,
      at least 2 frames per sample) named by ``data.sequences`` entries
      ``"<kind>[:<seed>[:<frames>[:<metres per frame>]]]"`` as in the trianflow task (default
      ``forward_turn:0:40``, 1 m per frame; other splits add 1000 to the seed);
    * ``kitti_stereo``: :class:`~trianflow.data.stereo_pairs.KittiStereoDataset` (``training``
      split, year detected from the layout, resized to ``data.size``);
    * ``stereo_folder``: :class:`~trianflow.data.stereo_pairs.StereoFolderDataset` of
      ``data.root`` with its ``calib.txt`` (focal length and baseline), resized to ``data.size``;
    * ``middlebury``: :class:`MiddleburyDataset` at ``scale = data.size[1] / 741`` (the width of
      ``data.size`` picks the scale, the height follows the aspect ratio), ``data.max_samples``
      items (64 when 0).

    Augmentation (``split="train"`` and ``data.augment``): ``data.scale_crop``, ``data.flip`` (a
    flip swaps left and right) and ``data.color_jitter``. ``data.max_samples > 0`` truncates.

    Args:
        cfg: the training config. split: ``"train"`` (augmented) or another name (not augmented).
        frames: 1 (stereo pairs) or 2/3 (pairs with temporal neighbours, for ``stereo_mono``).
    Raises:
        InputError: unknown dataset name, missing folder/calibration, empty dataset, or a dataset
        without temporal neighbours when ``frames > 1``.
    """
    d = cfg.data
    name = d.dataset
    if name == "stereo_pairs":
        name = "stereo_folder"
    size = tuple(int(v) for v in d.size)
    train = split == "train"
    transform = None
    if train and d.augment:
        transform = default_train_transform(size=None, flip=d.flip, jitter=d.color_jitter, scale_crop=d.scale_crop)
    if name not in STEREO_DATASETS:
        raise InputError(f"unknown stereo dataset {d.dataset!r}: set data.dataset to one of {', '.join(STEREO_DATASETS)}")
    if name in ("synthetic", "synthetic_stereo"):
        return _synthetic_stereo(cfg, split, frames, transform)
    if name in ("kitti_raw", "kitti_odometry", "sequence"):
        dc = dataclasses.replace(d, stereo=True, frames=int(frames))
        return build_training_dataset(dc, split)
    if frames > 1:
        raise InputError(f"data.dataset={name} has no temporal neighbours; the stereo_mono task needs stereo video: "
                         "kitti_raw, kitti_odometry, synthetic or sequence")
    if name == "middlebury":
        scale = min(1.0, size[1] / MIDDLEBURY_WIDTH)
        ds: Dataset = MiddleburyDataset(scale=scale, length=d.max_samples if d.max_samples > 0 else 64,
                                        transform=transform)
        return ds
    if not d.root:
        raise InputError(f"data.root is empty: give the folder of the {name} dataset")
    if name == "kitti_stereo":
        base: Dataset = KittiStereoDataset(d.root, split="training", year=kitti_stereo_year(d.root), size=size)
    elif name == "stereo_folder":
        base = StereoFolderDataset(d.root, size=size)
    else:  # pragma: no cover - every name of STEREO_DATASETS is handled above
        raise AssertionError(name)
    n = len(base)  # type: ignore[arg-type]
    if d.max_samples > 0:
        n = min(n, d.max_samples)
    return TransformedDataset(base, transform, length=n)
