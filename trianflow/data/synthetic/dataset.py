"""The synthetic training dataset: :class:`SyntheticDataset` (pairs or triplets of a rendered synthetic
sequence with exact depth, pose and flow; stereo with a baseline). Sample keys as in :mod:`trianflow.data`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from trianflow.data.synthetic.sequence import SyntheticSequence, synthetic_sequence
from trianflow.data.transforms import add_aug_copies, to_image_tensor
from trianflow.errors import InputError


class SyntheticDataset(torch.utils.data.Dataset):
    """Training/test samples from a rendered synthetic sequence, with exact ground truth.

    Sample ``i`` pairs frame ``i`` (``image``) with frame ``i + stride`` (``image_next``); with
    ``frames=3`` the centre frame is ``i + stride`` and ``image_prev`` is added. Keys (shapes for
    one sample): ``image``, ``image_next`` (``image_prev``) ``(3,H,W)`` float32 in [0,1] with
    ``*_aug`` copies (colour-jittered when ``transform`` jitters, else identical), ``K (3,3)``,
    ``pose_gt (4,4)`` T_1to2 from ``image`` to ``image_next``, ``depth_gt (1,H,W)`` metres,
    ``flow_gt (2,H,W)`` exact flow ``image -> image_next``, ``flow_valid (1,H,W)`` float (1 where
    the pixel stays in view and is not occluded), ``frame_id``; with a baseline also
    ``image_right``, ``image_next_right`` (``image_prev_right``), ``baseline ()`` and
    ``disp_gt (1,H,W) = fx * baseline / depth``.

    Rendering is cached in memory (about ``N * H * W * 4`` bytes per cached image kind).

    Args:
        n_frames, size, kind, seed, baseline, step: passed to :func:`synthetic_sequence`.
        frames: 2 (pairs) or 3 (triplets).
        stride: frame gap between neighbours.
        transform: callable on the sample dict (see :mod:`trianflow.data.transforms`); missing
            ``*_aug`` copies are added after it.
        sequence: use this :class:`SyntheticSequence` instead of creating one.
        prerender: render every frame when the dataset is built (else on first access).
    """

    def __init__(self, n_frames: int = 12, size: Tuple[int, int] = (64, 192), kind: str = "forward_turn",
                 seed: int = 0, baseline: Optional[float] = None, frames: int = 2, stride: int = 1,
                 transform=None, step: float = 1.0, sequence: Optional[SyntheticSequence] = None,
                 prerender: bool = True):
        if frames not in (2, 3):
            raise InputError(f"frames must be 2 or 3, got {frames}")
        self.seq = sequence if sequence is not None else synthetic_sequence(
            n_frames, size=size, kind=kind, seed=seed, baseline=baseline, step=step)
        if prerender:  # render once in the main process; DataLoader workers then share the cache
            self.seq.render_all()
        self.frames, self.stride, self.transform = frames, int(stride), transform
        self.n = len(self.seq) - (frames - 1) * self.stride
        if self.n < 1:
            raise InputError(f"synthetic dataset: {len(self.seq)} frames are too few for {frames} frames "
                             f"with stride {stride}")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < self.n:
            raise IndexError(idx)
        s = self.stride
        i = idx + (s if self.frames == 3 else 0)
        j = i + s
        seq = self.seq
        sample = {
            "image": to_image_tensor(seq.read(i)),
            "image_next": to_image_tensor(seq.read(j)),
            "K": torch.as_tensor(seq.K, dtype=torch.float32),
            "pose_gt": torch.as_tensor(seq.relative_pose(i, j), dtype=torch.float32),
            "depth_gt": torch.from_numpy(seq.depth(i).copy())[None],
            "frame_id": f"{seq.name}/{i}",
        }
        flow, valid = seq.flow(i, j)
        sample["flow_gt"] = torch.from_numpy(flow.copy())
        sample["flow_valid"] = torch.from_numpy(valid.astype(np.float32))[None]
        if self.frames == 3:
            sample["image_prev"] = to_image_tensor(seq.read(i - s))
        if seq.has_stereo:
            sample["image_right"] = to_image_tensor(seq.read_right(i))
            sample["image_next_right"] = to_image_tensor(seq.read_right(j))
            if self.frames == 3:
                sample["image_prev_right"] = to_image_tensor(seq.read_right(i - s))
            sample["baseline"] = torch.tensor(seq.baseline, dtype=torch.float32)
            d = sample["depth_gt"]
            sample["disp_gt"] = torch.where(d > 0, float(seq.K[0, 0] * seq.baseline) / d.clamp(min=1e-6),
                                            torch.zeros_like(d))
        if self.transform is not None:
            sample = self.transform(sample)
        return add_aug_copies(sample)
