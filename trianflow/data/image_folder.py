"""Plain image folders as frame sequences, plus the image-reading helpers the other readers share.

A folder of ``png/jpg/jpeg/bmp/tif/tiff`` files is read in *natural* order (``frame2`` before
``frame10``). Intrinsics come from the caller, else from ``intrinsics.txt`` or ``calib.txt`` in
the folder (``fx fy cx cy`` on one line, a 3x3 matrix as 3 lines or 9 numbers, or a KITTI-style
``P0: <12 numbers>`` line). Timestamps are ``index / fps`` (fps defaults to 10).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from trianflow.data.sequence import FrameSequence, register_reader
from trianflow.errors import InputError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_FPS = 10.0

_NUM_RE = re.compile(r"(\d+)")


def natural_key(name: str):
    """Sort key that orders embedded integers numerically: ``frame2 < frame10``."""
    parts = _NUM_RE.split(name)
    return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts]


def list_images(folder: Path | str) -> List[Path]:
    """Image files (by extension, case-insensitive) directly inside ``folder``, natural order.

    Raises InputError when the folder is missing or not a folder (an empty list is returned
    for a folder without images; callers decide whether that is an error).
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def read_image(path: Path | str) -> np.ndarray:
    """Read an image file as uint8: ``(H,W,3)`` RGB for colour files, ``(H,W)`` for grey ones.

    16-bit images are scaled to 8 bits, an alpha channel is dropped. Raises InputError naming
    the file when it is missing or cannot be decoded.
    """
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        if not path.exists():
            raise InputError(f"{path}: image file not found")
        raise InputError(f"{path}: cannot read this image (corrupt file or unsupported format)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        else:
            raise InputError(f"{path}: unsupported pixel type {img.dtype} (use 8- or 16-bit images)")
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def read_sized_image(path: Path | str, size) -> np.ndarray:
    """:func:`read_image` that also checks the size ``(H,W)``; raises InputError naming the file."""
    img = read_image(path)
    if tuple(img.shape[:2]) != tuple(size):
        raise InputError(
            f"{path}: image is {img.shape[1]}x{img.shape[0]} but the first image of the sequence is "
            f"{size[1]}x{size[0]}; all frames must have the same size"
        )
    return img


def png_size(path: Path | str) -> Optional[tuple]:
    """``(H, W)`` from a PNG file's header without decoding it; None for other/broken files."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def check_png_sizes(files: List[Path], size) -> None:
    """Raise InputError naming the first PNG in ``files`` whose header size differs from ``size = (H, W)``.

    Only PNG headers are read (cheap); other formats are checked when the frame is decoded.
    """
    for f in files:
        if f.suffix.lower() != ".png":
            continue
        s = png_size(f)
        if s is not None and tuple(s) != tuple(size):
            raise InputError(f"{f}: image is {s[1]}x{s[0]} but the first image of the sequence is "
                             f"{size[1]}x{size[0]}; all frames must have the same size")


def _numbers(line: str, path: Path, lineno: int) -> List[float]:
    try:
        vals = [float(v) for v in line.replace(",", " ").split()]
    except ValueError:
        raise InputError(f"{path}:{lineno}: cannot parse numbers in {line.strip()!r}") from None
    if not all(np.isfinite(vals)):
        raise InputError(f"{path}:{lineno}: non-finite number in {line.strip()!r}")
    return vals


def read_intrinsics_file(path: Path | str) -> np.ndarray:
    """Read intrinsics from a small text file and return a ``(3,3)`` float64 K.

    Accepted contents (``#`` comments and blank lines ignored):

    - one line ``fx fy cx cy`` (spaces or commas);
    - a 3x3 matrix as 3 lines of 3 numbers, or 9 numbers on one line;
    - KITTI style ``P0: <12 numbers>`` (the first ``P``/``K`` line is used).
    Raises InputError naming the file and line when it cannot be parsed.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read intrinsics file ({exc.strerror})") from None
    rows = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:?\s+(.*)$", line)
        if m:  # "P0: ..." / "K: ..." style
            key, rest = m.group(1), m.group(2)
            vals = _numbers(rest, path, lineno)
            if key.upper().startswith("P") and len(vals) == 12:
                return _check_K(np.array(vals, dtype=np.float64).reshape(3, 4)[:, :3], path)
            if len(vals) == 9:
                return _check_K(np.array(vals, dtype=np.float64).reshape(3, 3), path)
            if len(vals) == 4:
                return _K_from4(vals, path)
            continue  # other keyed lines (e.g. distortion) are ignored
        rows.append((lineno, _numbers(line, path, lineno)))
    if not rows:
        raise InputError(f"{path}: no intrinsics found (write 'fx fy cx cy' or a 3x3 matrix)")
    flat = [v for _, r in rows for v in r]
    if len(rows) == 1 and len(flat) == 4:
        return _K_from4(flat, path)
    if len(flat) == 9 and all(len(r) in (3, 9) for _, r in rows):
        return _check_K(np.array(flat, dtype=np.float64).reshape(3, 3), path)
    if len(flat) == 12 and len(rows) in (1, 3):
        return _check_K(np.array(flat, dtype=np.float64).reshape(3, 4)[:, :3], path)
    lineno = rows[0][0]
    raise InputError(f"{path}:{lineno}: expected 'fx fy cx cy' or a 3x3 matrix, got {len(flat)} numbers")


def _K_from4(vals, path) -> np.ndarray:
    fx, fy, cx, cy = vals
    return _check_K(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64), path)


def _check_K(K: np.ndarray, path) -> np.ndarray:
    if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1) > 1e-6 or np.any(K[2, :2] != 0):
        raise InputError(f"{path}: not a valid intrinsics matrix (need fx, fy > 0 and last row 0 0 1)")
    return np.ascontiguousarray(K, dtype=np.float64)


@dataclass
class ImageFolderSequence(FrameSequence):
    """Frames from a list of image files, read lazily."""

    files: List[Path] = field(default_factory=list)

    def _read(self, i: int) -> np.ndarray:
        return read_sized_image(self.files[i], self.size)


def open_image_folder(path: Path | str, K: Optional[np.ndarray] = None, max_frames: Optional[int] = None,
                      fps: Optional[float] = None) -> ImageFolderSequence:
    """Open a folder of images as a :class:`FrameSequence` (kind ``"image_folder"``).

    Args:
        path: folder with the images.
        K: ``(3,3)`` intrinsics; if None, read from ``intrinsics.txt`` or ``calib.txt`` there.
        max_frames: keep only the first ``max_frames`` frames.
        fps: frame rate for the timestamps ``index / fps`` (default 10).
    Raises:
        InputError: missing/empty folder, no images, no intrinsics, unreadable first image.
    """
    path = Path(path)
    files = list_images(path)
    if not files:
        raise InputError(f"{path}: no images found (expected {', '.join(e[1:] for e in IMAGE_EXTENSIONS)} files, "
                         "or a KITTI/TUM sequence folder)")
    if max_frames is not None:
        files = files[: max(int(max_frames), 0)]
    if K is None:
        for name in ("intrinsics.txt", "calib.txt"):
            if (path / name).is_file():
                K = read_intrinsics_file(path / name)
                break
        else:
            raise InputError(f"{path}: no intrinsics: pass --intrinsics fx,fy,cx,cy or put 'fx fy cx cy' "
                             "in intrinsics.txt in the folder")
    fps = DEFAULT_FPS if fps is None else float(fps)
    if not fps > 0:
        raise InputError(f"fps must be > 0, got {fps}")
    first = read_image(files[0]) if files else None
    size = tuple(first.shape[:2]) if first is not None else (0, 0)
    check_png_sizes(files, size)
    return ImageFolderSequence(
        name=path.resolve().name,
        source=str(path),
        K=np.asarray(K, dtype=np.float64),
        timestamps=np.arange(len(files), dtype=np.float64) / fps,
        size=size,
        kind="image_folder",
        files=files,
    )


register_reader("image_folder", lambda p: p.is_dir(),
                lambda p, K=None, max_frames=None, fps=None, **_: open_image_folder(p, K=K, max_frames=max_frames,
                                                                                     fps=fps),
                priority=0)
