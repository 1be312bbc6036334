"""Synthetic frame sequences: :class:`SyntheticSequence` (rendered lazily, cached, exact depth / pose / flow),
:func:`synthetic_sequence` (trajectory + scene + sequence in one call) and :func:`write_kitti_layout` (any
sequence as a KITTI odometry folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from trianflow.data.sequence import FrameSequence
from trianflow.data.synthetic.render import flow_from_depth, render_views
from trianflow.data.synthetic.scene import SyntheticScene, build_scene
from trianflow.data.synthetic.trajectory import default_intrinsics, make_trajectory, relative_pose, right_camera_offset
from trianflow.errors import InputError


@dataclass
class SyntheticSequence(FrameSequence):
    """A rendered synthetic sequence (kind ``"synthetic"``). Frames are rendered on first access
    and cached. ``gt_poses`` holds the exact camera-to-world poses of the left camera.

    Extra methods: :meth:`depth`, :meth:`depth_right`, :meth:`flow`, :meth:`relative_pose`.
    """

    scene: Optional[SyntheticScene] = None
    supersample: int = 2
    _cache: Dict = field(default_factory=dict, repr=False)

    def _render(self, key, pose):
        if key not in self._cache:
            img, depth = render_views(pose, self.K, self.size, supersample=self.supersample, scene=self.scene)
            self._cache[key] = (img[0], depth[0])
        return self._cache[key]

    def _right_pose(self, i: int) -> np.ndarray:
        return self.gt_poses[i] @ right_camera_offset(self.baseline)

    def _read(self, i: int) -> np.ndarray:
        return self._render(("L", i), self.gt_poses[i])[0]

    def _read_right(self, i: int) -> np.ndarray:
        return self._render(("R", i), self._right_pose(i))[0]

    def depth(self, i: int) -> np.ndarray:
        """Z-depth of frame ``i`` (left camera), ``(H,W)`` float32 metres."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._render(("L", i), self.gt_poses[i])[1]

    def depth_right(self, i: int) -> np.ndarray:
        """Z-depth of the right frame ``i``, ``(H,W)`` float32 metres."""
        if not self.has_stereo:
            raise InputError("this synthetic sequence has no right camera (pass baseline=...)")
        return self._render(("R", i), self._right_pose(i))[1]

    def relative_pose(self, i: int, j: int) -> np.ndarray:
        """``T_itoj (4,4)`` mapping camera-i coordinates to camera-j coordinates."""
        return relative_pose(self.gt_poses[i], self.gt_poses[j])

    def flow(self, i: int, j: int):
        """Exact flow from frame ``i`` to frame ``j`` and its validity, see :func:`flow_from_depth`.

        Returns:
            ``(flow (2,H,W) float32, valid (H,W) bool)``.
        """
        key = ("F", i, j)
        if key not in self._cache:
            self._cache[key] = flow_from_depth(self.scene, self.depth(i), self.K, self.gt_poses[i], self.gt_poses[j])
        return self._cache[key]

    def render_all(self, workers: Optional[int] = None) -> None:
        """Render (in parallel threads) and cache every frame not rendered yet, right views too."""
        todo = [("L", i, self.gt_poses[i]) for i in range(len(self)) if ("L", i) not in self._cache]
        if self.has_stereo:
            todo += [("R", i, self._right_pose(i)) for i in range(len(self)) if ("R", i) not in self._cache]
        if not todo:
            return
        imgs, depths = render_views(np.stack([t[2] for t in todo]), self.K, self.size,
                                    supersample=self.supersample, scene=self.scene, workers=workers)
        for (side, i, _), img, d in zip(todo, imgs, depths):
            self._cache[(side, i)] = (img, d)

    def clear_cache(self) -> None:
        """Drop cached renderings."""
        self._cache.clear()


def synthetic_sequence(n_frames: int = 40, size: Tuple[int, int] = (192, 640), kind: str = "forward_turn",
                       seed: int = 0, baseline: Optional[float] = None, step: float = 1.0,
                       K: Optional[np.ndarray] = None, supersample: int = 2, fps: float = 10.0) -> SyntheticSequence:
    """A synthetic sequence with exact ground truth (rendered lazily, cached in memory).

    Args:
        n_frames: number of frames N.
        size: ``(H, W)``.
        kind: trajectory kind, see :func:`make_trajectory`.
        seed: seeds the trajectory, the boxes and the textures.
        baseline: stereo baseline in metres (right camera at +x); None = monocular.
        step: metres per frame for the moving trajectory kinds.
        K: ``(3,3)`` intrinsics (default :func:`default_intrinsics`).
        fps: timestamps are ``index / fps``.
    Returns:
        a :class:`SyntheticSequence` with ``gt_poses (N,4,4)`` camera-to-world.
    """
    size = (int(size[0]), int(size[1]))
    poses = make_trajectory(n_frames, kind=kind, step=step, seed=seed)
    K = default_intrinsics(size) if K is None else np.asarray(K, dtype=np.float64)
    if baseline is not None and not baseline > 0:
        raise InputError(f"baseline must be > 0 metres, got {baseline}")
    centres = poses[:, :3, 3]
    if baseline is not None:
        centres = np.concatenate([centres, (poses @ right_camera_offset(baseline))[:, :3, 3]])
    scene = build_scene(centres, seed)
    return SyntheticSequence(
        name=f"synthetic_{kind}_s{seed}", source=f"synthetic:{kind}:{seed}", K=K,
        timestamps=np.arange(len(poses), dtype=np.float64) / fps, size=size,
        baseline=None if baseline is None else float(baseline), gt_poses=poses, kind="synthetic",
        meta={"trajectory": kind, "seed": seed, "step": step}, scene=scene, supersample=supersample,
    )


def write_kitti_layout(seq: FrameSequence, folder, gray: bool = False) -> Path:
    """Write a sequence as a KITTI odometry folder that :func:`~trianflow.data.open_sequence` reads.

    Writes ``image_2/`` (colour; ``image_3/`` for the right camera when the sequence is stereo) or,
    with ``gray=True``, ``image_0/`` (``image_1/``), as ``%06d.png``; ``calib.txt`` with
    ``P0..P3`` (left cameras ``K [I|0]``, right cameras ``K [I|(-baseline,0,0)]``);
    ``times.txt``; and ``poses.txt`` (KITTI 3x4 camera-to-world rows) when ground truth exists.

    Returns:
        the folder path.
    """
    from trianflow.io.atomic import atomic_path, write_text

    folder = Path(folder)
    left, right = ("image_0", "image_1") if gray else ("image_2", "image_3")
    (folder / left).mkdir(parents=True, exist_ok=True)
    if seq.has_stereo:
        (folder / right).mkdir(parents=True, exist_ok=True)
    for i in range(len(seq)):
        for sub, img in [(left, seq.read(i))] + ([(right, seq.read_right(i))] if seq.has_stereo else []):
            out = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if gray else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            with atomic_path(folder / sub / f"{i:06d}.png") as tmp:
                if not cv2.imwrite(str(tmp), out):
                    raise InputError(f"{folder / sub}: cannot write images there")
    K = np.asarray(seq.K, dtype=np.float64)
    P_left = np.hstack([K, np.zeros((3, 1))])
    P_right = P_left.copy()
    if seq.has_stereo:
        P_right[0, 3] = -K[0, 0] * seq.baseline
    lines = []
    for name, P in (("P0", P_left), ("P1", P_right), ("P2", P_left), ("P3", P_right)):
        lines.append(f"{name}: " + " ".join(f"{v:.12e}" for v in P.reshape(-1)))
    write_text(folder / "calib.txt", "\n".join(lines) + "\n")
    write_text(folder / "times.txt", "".join(f"{t:.6e}\n" for t in seq.timestamps))
    if seq.gt_poses is not None:
        write_text(folder / "poses.txt",
                   "".join(" ".join(f"{v:.9e}" for v in T[:3, :4].reshape(-1)) + "\n" for T in seq.gt_poses))
    return folder
