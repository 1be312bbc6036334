"""A generic training dataset of frame pairs/triplets over any :class:`FrameSequence`, and
static-frame filtering shared by the training datasets.

Static-frame filtering
----------------------
Self-supervised depth/pose training breaks when the camera does not move (the photometric loss
is then minimised by any depth). :func:`frame_motion` measures how much a frame pair moves:

- ``"mad"``: mean absolute difference of the two grey images (0..255 grey levels), computed on
  images downscaled to at most 320 pixels wide. Cheap; a static camera gives about sensor noise
  (~1-3), a car driving at city speed gives > 10. Moving objects in front of a static camera
  also raise it, which the flow method avoids.
- ``"flow"``: median magnitude of OpenCV DIS optical flow, in pixels *of the full-resolution
  image* (computed at <= 320 px width and rescaled). A static camera gives < 0.5 px.

A pair is dropped when its motion is below ``static_threshold`` (suggested: 2.0 for "mad",
1.0 for "flow"). Scores are computed once when the dataset is built (each image is decoded once
at reduced resolution), so filtering a large dataset takes a while; ``None`` disables it.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from trianflow.data.sequence import FrameSequence
from trianflow.data.transforms import Compose, Resize, add_aug_copies, to_image_tensor
from trianflow.errors import InputError

log = logging.getLogger(__name__)

STATIC_METHODS = ("mad", "flow")
_MOTION_WIDTH = 320


def _small_gray(img: np.ndarray) -> Tuple[np.ndarray, float]:
    g = img if img.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    s = min(1.0, _MOTION_WIDTH / g.shape[1])
    if s < 1.0:
        g = cv2.resize(g, (max(int(round(g.shape[1] * s)), 8), max(int(round(g.shape[0] * s)), 8)),
                       interpolation=cv2.INTER_AREA)
    return g, s


def frame_motion(img1: np.ndarray, img2: np.ndarray, method: str = "mad") -> float:
    """How much two frames differ, for static-frame filtering (see the module docstring).

    Args:
        img1, img2: ``(H,W,3)`` or ``(H,W)`` uint8 images of the same size.
        method: ``"mad"`` (mean absolute grey difference, 0..255) or ``"flow"`` (median DIS
            flow magnitude in full-resolution pixels).
    Returns:
        the motion score (float, >= 0).
    """
    if method not in STATIC_METHODS:
        raise InputError(f"unknown static-frame method {method!r}: use one of {', '.join(STATIC_METHODS)}")
    a, s = _small_gray(img1)
    b, _ = _small_gray(img2)
    if method == "mad":
        return float(np.mean(cv2.absdiff(a, b)))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    flow = dis.calc(a, b, None)
    return float(np.median(np.linalg.norm(flow, axis=2)) / s)


def motion_scores(read: Callable[[int], np.ndarray], pairs: Sequence[Tuple[int, int]], method: str = "mad") -> np.ndarray:
    """:func:`frame_motion` for each ``(i, j)`` in ``pairs``, decoding each frame once (small LRU).

    Args:
        read: ``index -> (H,W,3) uint8`` image reader.
        pairs: frame index pairs.
    Returns:
        ``(len(pairs),)`` float64 scores.
    """
    cache: Dict[int, np.ndarray] = {}
    out = np.empty(len(pairs), dtype=np.float64)
    for k, (i, j) in enumerate(pairs):
        imgs = []
        for idx in (i, j):
            if idx not in cache:
                if len(cache) > 4:
                    cache.pop(next(iter(cache)))
                cache[idx] = read(idx)
            imgs.append(cache[idx])
        out[k] = frame_motion(imgs[0], imgs[1], method)
    return out


def frame_indices(n: int, frames: int, stride: int) -> List[int]:
    """Reference-frame indices for ``frames``-tuples with ``stride`` in a sequence of ``n`` frames.

    frames=1: every frame; 2: ``i`` with ``i + stride < n``; 3: centre ``i`` with both
    ``i - stride >= 0`` and ``i + stride < n``.
    """
    if frames not in (1, 2, 3):
        raise InputError(f"frames must be 1, 2 or 3, got {frames}")
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    if frames == 1:
        return list(range(n))
    lo = stride if frames == 3 else 0
    return list(range(lo, n - stride))


def parse_frame_range(value, what: str = "data.frame_range") -> Optional[Tuple[int, int]]:
    """``[start, end]`` (a config list) -> ``(start, end)``; empty or None -> None (all frames).

    Raises:
        InputError: not two integers, a negative start or ``end <= start``.
    """
    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        return None
    try:
        vals = [int(v) for v in value]
        if any(float(v) != int(v) for v in value):
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(f"{what}={value!r}: give two frame indices [start, end]") from None
    if len(vals) != 2 or vals[0] < 0 or vals[1] <= vals[0]:
        raise InputError(f"{what}={value!r}: give [start, end] with 0 <= start < end (end is exclusive)")
    return vals[0], vals[1]


def in_frame_range(i: int, frames: int, stride: int, frame_range: Optional[Tuple[int, int]]) -> bool:
    """True when every frame of the sample with reference ``i`` (``i``, ``i + stride`` for
    ``frames >= 2``, ``i - stride`` for ``frames = 3``) lies in ``start <= . < end``."""
    if frame_range is None:
        return True
    lo = i - stride if frames == 3 else i
    hi = i + stride if frames >= 2 else i
    return frame_range[0] <= lo and hi < frame_range[1]


def make_sample(images: Dict[str, np.ndarray], K: np.ndarray, frame_id: str, baseline: Optional[float] = None,
                pose_gt: Optional[np.ndarray] = None, transform: Optional[Callable] = None) -> dict:
    """Build a sample dict from uint8 images and apply ``transform`` (then add ``*_aug`` copies).

    Args:
        images: ``{key: (H,W,3) or (H,W) uint8}`` with keys like ``image``, ``image_next``.
        K: ``(3,3)``; baseline: metres; pose_gt: ``(4,4)`` T_1to2.
    Returns:
        the sample dict (see :mod:`trianflow.data`).
    """
    sample = {k: to_image_tensor(v) for k, v in images.items()}
    sample["K"] = torch.as_tensor(np.asarray(K, dtype=np.float32))
    if baseline is not None:
        sample["baseline"] = torch.tensor(float(baseline), dtype=torch.float32)
    if pose_gt is not None:
        sample["pose_gt"] = torch.as_tensor(np.asarray(pose_gt, dtype=np.float32))
    sample["frame_id"] = frame_id
    if transform is not None:
        sample = transform(sample)
    return add_aug_copies(sample)


class SequencePairsDataset(torch.utils.data.Dataset):
    """Pairs (or triplets, or single frames) of frames from a :class:`FrameSequence`.

    Works for any reader (KITTI odometry, TUM, image folder, video, synthetic). Sample ``k`` has
    reference frame ``i = indices[k]``:

    - ``image`` (3,H,W) frame i, ``image_next`` frame ``i + stride`` (frames >= 2),
      ``image_prev`` frame ``i - stride`` (frames = 3), and ``*_aug`` copies;
    - ``K`` (3,3) (after resizing), ``frame_id`` ``"<name>/<i>"``;
    - ``pose_gt`` (4,4) T_1to2 ``image -> image_next`` when the sequence has ``gt_poses``;
    - with ``stereo``: ``image_right``, ``baseline`` and the right images of the neighbours
      (``image_next_right``/``image_prev_right``, needed for a consistent random flip).

    Args:
        seq: the sequence.
        frames: 1, 2 or 3. stride: frame gap.
        size: ``(H,W)`` to resize to (None keeps the sequence size).
        transform: sample transform applied after resizing (augmentation).
        stereo: include right images (InputError when the sequence has none).
        with_gt: include ``pose_gt`` when available.
        static_threshold, static_method: drop pairs with :func:`frame_motion` below the
            threshold (``None``: keep all).
        indices: explicit reference indices (overrides the automatic list; still filtered).
        frame_range: ``(start, end)``: keep the samples whose frames all lie in ``[start, end)``.
    """

    def __init__(self, seq: FrameSequence, frames: int = 2, stride: int = 1,
                 size: Optional[Tuple[int, int]] = None, transform: Optional[Callable] = None,
                 stereo: bool = False, with_gt: bool = True, static_threshold: Optional[float] = None,
                 static_method: str = "mad", indices: Optional[Sequence[int]] = None,
                 frame_range: Optional[Tuple[int, int]] = None):
        if stereo and not seq.has_stereo:
            raise InputError(f"{seq.source}: stereo samples asked but the sequence has no right camera")
        self.seq, self.frames, self.stride, self.stereo, self.with_gt = seq, frames, int(stride), stereo, with_gt
        valid = frame_indices(len(seq), frames, self.stride)
        if indices is not None:
            ok = set(valid)
            bad = [i for i in indices if i not in ok]
            if bad:
                raise InputError(f"{seq.name}: frame index {bad[0]} has no neighbours at stride {stride} "
                                 f"(sequence has {len(seq)} frames)")
            valid = list(indices)
        self.frame_range = frame_range
        if frame_range is not None:
            valid = [i for i in valid if in_frame_range(i, frames, self.stride, frame_range)]
        if static_threshold is not None and frames >= 2 and valid:
            scores = motion_scores(seq.read, [(i, i + self.stride) for i in valid], static_method)
            keep = scores >= static_threshold
            log.info("%s: static-frame filter (%s < %g) dropped %d of %d samples", seq.name, static_method,
                     static_threshold, int((~keep).sum()), len(valid))
            valid = [i for i, k in zip(valid, keep) if k]
        self.indices = valid
        steps = [Resize(size)] if size is not None else []
        if transform is not None:
            steps.append(transform)
        self.transform = Compose(steps) if steps else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        if not 0 <= k < len(self.indices):
            raise IndexError(k)
        i, s, seq = self.indices[k], self.stride, self.seq
        images = {"image": seq.read(i)}
        if self.frames >= 2:
            images["image_next"] = seq.read(i + s)
        if self.frames == 3:
            images["image_prev"] = seq.read(i - s)
        if self.stereo:
            images["image_right"] = seq.read_right(i)
            if self.frames >= 2:
                images["image_next_right"] = seq.read_right(i + s)
            if self.frames == 3:
                images["image_prev_right"] = seq.read_right(i - s)
        pose = None
        if self.with_gt and self.frames >= 2 and seq.gt_poses is not None:
            pose = np.linalg.inv(seq.gt_poses[i + s]) @ seq.gt_poses[i]
        return make_sample(images, seq.K, f"{seq.name}/{i}", baseline=seq.baseline if self.stereo else None,
                           pose_gt=pose, transform=self.transform)


