"""The :class:`FrameSequence` interface, the reader registry and :func:`open_sequence`.

Readers register themselves (:func:`register_reader`) when their module is imported; the package
``trianflow.data`` imports the built-in readers (KITTI odometry, TUM RGB-D, image folder, video),
so this module never imports a reader and the readers import only this module: no import circle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from trianflow.errors import InputError


@dataclass
class FrameSequence:
    """An ordered sequence of frames from one pinhole camera.

    Subclasses implement :meth:`_read` (and :meth:`_read_right` for stereo). Frames are returned
    as ``(H,W,3)`` uint8 RGB arrays; grayscale sources are repeated to 3 channels.

    Attributes:
        name: human-readable name (folder or file name).
        source: the path the sequence was opened from.
        K: ``(3,3)`` float64 intrinsics of the left/only camera, pixel centres at integers.
        timestamps: ``(N,)`` float64 seconds.
        size: ``(H, W)`` of every frame.
        baseline: stereo baseline in metres (right camera at +x), ``None`` if monocular.
        gt_poses: ``(N,4,4)`` camera-to-world ground truth as given by the dataset (not
            renormalised: KITTI and synthetic start at identity, TUM does not) or ``None``.
        kind: reader name ("kitti_odometry", "tum", "image_folder", "video", "synthetic").
    """

    name: str
    source: str
    K: np.ndarray
    timestamps: np.ndarray
    size: tuple
    baseline: Optional[float] = None
    gt_poses: Optional[np.ndarray] = None
    kind: str = "unknown"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def has_stereo(self) -> bool:
        return self.baseline is not None

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` as ``(H,W,3)`` uint8 RGB. Raises InputError naming an unreadable file."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        img = self._read(i)
        return _check_frame(img, self.size, f"{self.name} frame {i}")

    def read_right(self, i: int) -> np.ndarray:
        """Right stereo frame ``i`` as ``(H,W,3)`` uint8 RGB."""
        if not self.has_stereo:
            raise InputError(f"{self.source}: no right camera in this sequence (stereo unavailable)")
        img = self._read_right(i)
        return _check_frame(img, self.size, f"{self.name} right frame {i}")

    def frames(self):
        """Iterate over ``(index, timestamp, image)``."""
        for i in range(len(self)):
            yield i, float(self.timestamps[i]), self.read(i)

    def _read(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read_right(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_frame(img: np.ndarray, size, what: str) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if tuple(img.shape[:2]) != tuple(size):
        raise InputError(
            f"{what} has size {img.shape[1]}x{img.shape[0]} but the sequence is {size[1]}x{size[0]}: "
            "all frames of a sequence must have the same size"
        )
    return np.ascontiguousarray(img)


def parse_intrinsics(text: str) -> np.ndarray:
    """Parse ``"fx,fy,cx,cy"`` (commas or spaces) into a ``(3,3)`` float64 K."""
    try:
        vals = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        vals = []
    if len(vals) != 4 or not all(np.isfinite(vals)) or vals[0] <= 0 or vals[1] <= 0:
        raise InputError(f"cannot parse intrinsics {text!r}: give --intrinsics fx,fy,cx,cy with fx, fy > 0")
    fx, fy, cx, cy = vals
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)


@dataclass(frozen=True)
class SequenceReader:
    """A registered reader of frame sequences.

    Attributes:
        kind: reader name (``FrameSequence.kind`` of what it opens).
        detect: ``detect(path: Path) -> bool``, True when the reader recognises ``path``.
        open: ``open(path: Path, K=None, stereo=False, max_frames=None, fps=None) -> FrameSequence``
            (``K`` is a ``(3,3)`` array or None; a reader ignores options it has no use for).
        priority: readers are tried from the highest priority down (ties: registration order).
    """

    kind: str
    detect: Callable[[Path], bool]
    open: Callable[..., FrameSequence]
    priority: int = 0


_READERS: Dict[str, SequenceReader] = {}


def register_reader(kind: str, detect: Callable[[Path], bool], open: Callable[..., FrameSequence],
                    priority: int = 0) -> SequenceReader:
    """Register (or replace) the reader ``kind`` for :func:`open_sequence`; returns it."""
    reader = SequenceReader(kind, detect, open, int(priority))
    _READERS[kind] = reader
    return reader


def registered_readers() -> List[SequenceReader]:
    """The registered readers in the order :func:`open_sequence` tries them."""
    return sorted(_READERS.values(), key=lambda r: -r.priority)


def open_sequence(
    path: os.PathLike | str,
    intrinsics: Optional[str | Sequence[float] | np.ndarray] = None,
    stereo: bool = False,
    max_frames: Optional[int] = None,
    fps: Optional[float] = None,
) -> FrameSequence:
    """Open a sequence of frames with the first registered reader that recognises ``path``.

    Built-in readers, in the order they are tried:

    - a video file: decoded with OpenCV (``intrinsics`` required; ``fps`` overrides the file's);
    - a folder with ``calib.txt`` and ``image_2/`` or ``image_0/``: KITTI odometry (stereo from
      ``image_3/``/``image_1/`` when ``stereo``);
    - a folder with ``rgb.txt``: TUM RGB-D (freiburg1/2/3 default intrinsics from the folder name,
      or ``intrinsics``);
    - any other folder: plain image folder (``intrinsics`` required unless a ``calib.txt``
      / ``intrinsics.txt`` with ``fx fy cx cy`` lies beside the images).

    ``intrinsics`` may be a ``"fx,fy,cx,cy"`` string, 4 numbers, or a 3x3 matrix.
    Raises :class:`InputError` for a missing/empty path, unreadable calib, fewer than 2 frames.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder (give a KITTI/TUM sequence folder, an image folder or a video)")
    K = _as_K(intrinsics) if intrinsics is not None else None
    reader = next((r for r in registered_readers() if r.detect(p)), None)
    if reader is None:
        kinds = ", ".join(r.kind for r in registered_readers()) or "none registered"
        raise InputError(f"{p}: no sequence reader recognises this path (readers: {kinds})")
    seq = reader.open(p, K=K, stereo=stereo, max_frames=max_frames, fps=fps)
    if stereo and not seq.has_stereo:
        raise InputError(f"{p}: --stereo asked but no right images/baseline found "
                         "(KITTI odometry needs image_1/ or image_3/ and P1/P3 in calib.txt)")
    if len(seq) < 2:
        raise InputError(f"{p}: found {len(seq)} frame(s); visual odometry needs at least 2")
    return seq


def _as_K(intrinsics) -> np.ndarray:
    if isinstance(intrinsics, str):
        return parse_intrinsics(intrinsics)
    arr = np.asarray(intrinsics, dtype=np.float64)
    if arr.shape == (3, 3):
        return arr
    if arr.shape == (4,):
        return parse_intrinsics(",".join(str(v) for v in arr))
    raise InputError(f"intrinsics must be fx,fy,cx,cy or a 3x3 matrix, got shape {arr.shape}")
