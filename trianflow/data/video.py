"""Video files as frame sequences, decoded with OpenCV.

The capture stays open and frames are decoded forward; reading backwards seeks (and, should
the seek land elsewhere, re-opens the file and decodes forward from the start). The last few
decoded frames are cached, so the VO loop's ``read(i), read(i+1)`` pattern decodes each frame
once. The frame count reported by the container is verified (a seek to the last frame must
succeed and nothing may follow it); when it is wrong or missing the frames are counted by
decoding. Timestamps are ``index / fps`` with the caller's fps or the file's.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from trianflow.data.sequence import FrameSequence, register_reader
from trianflow.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_VIDEO_FPS = 30.0
_CACHE_FRAMES = 4


def _open_capture(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{path}: cannot open this video (unsupported container/codec or not a video file)")
    return cap


def count_frames(path: Union[str, Path], limit: Optional[int] = None) -> int:
    """Number of frames of a video, verified by decoding.

    Trusts the container's count only if seeking to its last frame succeeds and no frame
    follows; otherwise counts by grabbing every frame (up to ``limit`` when given).
    """
    path = Path(path)
    cap = _open_capture(path)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if n > 0 and (limit is None or n <= limit):
            if cap.set(cv2.CAP_PROP_POS_FRAMES, n - 1) and cap.grab() and not cap.grab():
                return n
            log.debug("%s: container says %d frames; counting by decoding", path, n)
            cap.release()
            cap = _open_capture(path)
        elif n > 0 and limit is not None and n > limit:
            if cap.set(cv2.CAP_PROP_POS_FRAMES, limit - 1) and cap.grab():
                return limit
            cap.release()
            cap = _open_capture(path)
        count = 0
        while (limit is None or count < limit) and cap.grab():
            count += 1
        return count
    finally:
        cap.release()


@dataclass
class VideoSequence(FrameSequence):
    """Frames of a video file, decoded sequentially with a small cache (see module docstring)."""

    path: Optional[Path] = None
    _cap: Optional[cv2.VideoCapture] = field(default=None, repr=False)
    _next: int = 0  # index of the frame the capture decodes next
    _cache: "OrderedDict[int, np.ndarray]" = field(default_factory=OrderedDict, repr=False)

    def _decode_next(self) -> np.ndarray:
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise InputError(f"{self.path}: cannot decode frame {self._next} (the video is truncated or corrupt)")
        self._next += 1
        if frame.ndim == 2:
            return frame
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def _restart(self, i: int) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = _open_capture(self.path)
        self._next = 0
        if i > 0 and self._cap.set(cv2.CAP_PROP_POS_FRAMES, i):
            pos = int(round(self._cap.get(cv2.CAP_PROP_POS_FRAMES)))
            if pos == i:
                self._next = i
                return
            self._cap.release()  # inexact seek: decode forward from the start instead
            self._cap = _open_capture(self.path)

    def _read(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        if self._cap is None or i < self._next:
            self._restart(i)
        while self._next < i:
            if not self._cap.grab():
                raise InputError(f"{self.path}: cannot decode frame {self._next} (the video is truncated or corrupt)")
            self._next += 1
        img = self._decode_next()
        self._cache[i] = img
        if len(self._cache) > _CACHE_FRAMES:
            self._cache.popitem(last=False)
        return img

    def close(self) -> None:
        """Release the capture (it is re-opened on the next read)."""
        if self._cap is not None:
            self._cap.release()
        self._cap, self._next = None, 0
        self._cache.clear()

    def __getstate__(self):  # a cv2.VideoCapture cannot be pickled (DataLoader workers)
        state = self.__dict__.copy()
        state["_cap"], state["_next"], state["_cache"] = None, 0, OrderedDict()
        return state

    def __del__(self):
        try:
            if self._cap is not None:
                self._cap.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def open_video(path: Union[str, Path], K: Optional[np.ndarray] = None, fps: Optional[float] = None,
               max_frames: Optional[int] = None) -> VideoSequence:
    """Open a video file as a :class:`FrameSequence` (kind ``"video"``).

    Args:
        path: video file (anything OpenCV's FFmpeg backend reads).
        K: ``(3,3)`` intrinsics (required: a video carries no calibration).
        fps: frame rate for the timestamps (default: the file's; 30 if it has none).
        max_frames: use only the first frames.
    Raises:
        InputError: unreadable video, missing K, undecodable first frame.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such video file")
    cap = _open_capture(p)
    file_fps = cap.get(cv2.CAP_PROP_FPS)
    ok, frame = cap.read()
    cap.release()
    if not ok or frame is None:
        raise InputError(f"{p}: cannot decode the first frame of this video")
    if K is None:
        raise InputError(f"{p}: a video has no calibration: pass --intrinsics fx,fy,cx,cy")
    if fps is None:
        if file_fps and math.isfinite(file_fps) and 0 < file_fps < 1000:
            fps = float(file_fps)
        else:
            log.warning("%s: the file has no valid frame rate; using %g fps for timestamps (pass --fps)", p,
                        DEFAULT_VIDEO_FPS)
            fps = DEFAULT_VIDEO_FPS
    fps = float(fps)
    if not fps > 0:
        raise InputError(f"fps must be > 0, got {fps}")
    limit = None if max_frames is None else max(int(max_frames), 0)
    n = count_frames(p, limit) if limit != 0 else 0
    return VideoSequence(
        name=p.stem, source=str(p), K=np.asarray(K, dtype=np.float64),
        timestamps=np.arange(n, dtype=np.float64) / fps, size=tuple(frame.shape[:2]), kind="video",
        meta={"fps": fps, "file_fps": file_fps}, path=p,
    )


register_reader("video", lambda p: p.is_file(),
                lambda p, K=None, max_frames=None, fps=None, **_: open_video(p, K=K, fps=fps, max_frames=max_frames),
                priority=30)
