"""Depth and disparity files, stereo calibration for disparity -> depth, RGB PNG output.

File formats (all arrays are ``(H,W)``; 0 marks an unknown pixel in every PNG format):

- **KITTI depth PNG**: 16-bit single-channel PNG, ``depth_m = value / 256``, 0 = invalid (KITTI depth
  completion / prediction benchmark). The largest storable depth is 65535/256 ~ 256 m.
- **KITTI disparity PNG**: 16-bit single-channel PNG, ``disp_px = value / 256``, 0 = invalid (KITTI
  stereo 2012/2015 ``disp_noc*``/``disp_occ*``).
- **.npy**: a float array in metres (depth) or pixels (disparity); non-finite or <= 0 = invalid.
  ``(1,H,W)`` / ``(1,1,H,W)`` arrays are squeezed. A ``(N,H,W)`` array is a *stack* of N frames
  (see :func:`read_depth_stack`).

Stereo calibration (:func:`read_stereo_calib`) accepts these text files:

1. KITTI ``calib_cam_to_cam.txt`` (raw data, stereo 2015 ``calib_cam_to_cam/<id>.txt``) with
   ``P_rect_02``/``P_rect_03`` (colour pair, preferred) or ``P_rect_00``/``P_rect_01`` (grey pair);
2. KITTI ``P0:`` ... ``P3:`` files (stereo 2012 ``calib/<id>.txt``, odometry ``calib.txt``), using
   ``P2``/``P3`` when present, else ``P0``/``P1``;
3. Middlebury 2014 ``calib.txt`` (``cam0=[fx 0 cx; 0 fy cy; 0 0 1]``, ``doffs=``, ``baseline=`` in mm);
4. a plain text with 2 or 3 numbers: ``focal_px baseline_m [doffs_px]``.

Depth from disparity: ``depth = focal * baseline / (disp + doffs)`` (``doffs`` is 0 for KITTI).

All writers are atomic (temporary file + rename, :mod:`trianflow.io.atomic`). Colour maps of depth
and error images are drawn by :mod:`trianflow.viz.colormaps`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from trianflow.errors import InputError
from trianflow.io.atomic import atomic_path

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

KITTI_PNG_SCALE = 256.0
KITTI_PNG_MAX = 65535.0 / KITTI_PNG_SCALE

__all__ = [
    "StereoCalib",
    "read_kitti_depth_png",
    "read_kitti_disp_png",
    "write_kitti_depth_png",
    "write_kitti_disp_png",
    "read_npy_map",
    "write_depth_npy",
    "read_depth_stack",
    "read_stereo_calib",
    "parse_stereo_calib",
    "disparity_to_depth",
    "depth_to_disparity",
    "write_rgb_png",
]


# ----------------------------------------------------------------------------- PNG / npy


def _read_uint16_png(path: PathLike, what: str) -> np.ndarray:
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected a 16-bit {what} PNG)")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: cannot read this image (expected a 16-bit {what} PNG)")
    if img.dtype != np.uint16 or img.ndim != 2:
        raise InputError(
            f"{path}: is a {img.dtype} image with {1 if img.ndim == 2 else img.shape[2]} channel(s); a {what} PNG "
            "must be 16-bit single-channel (value/256, 0 = invalid)"
        )
    return img


def read_kitti_depth_png(path: PathLike) -> np.ndarray:
    """Read a KITTI depth PNG: ``(H,W)`` float32 metres, 0 where invalid.

    Raises :class:`InputError` if the file is missing or is not a 16-bit single-channel PNG.
    """
    return _read_uint16_png(path, "KITTI depth").astype(np.float32) / KITTI_PNG_SCALE


def read_kitti_disp_png(path: PathLike) -> np.ndarray:
    """Read a KITTI stereo disparity PNG: ``(H,W)`` float32 pixels, 0 where invalid."""
    return _read_uint16_png(path, "KITTI disparity").astype(np.float32) / KITTI_PNG_SCALE


def _to_uint16(values: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 3 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 2:
        raise InputError(f"{name}: expected a (H,W) map, got shape {v.shape}")
    v = np.where(np.isfinite(v) & (v > 0), v, 0.0)
    n_clip = int((v > KITTI_PNG_MAX).sum())
    if n_clip:
        log.warning("%s: %d values above %.2f clipped (16-bit PNG range)", name, n_clip, KITTI_PNG_MAX)
    q = np.round(np.clip(v, 0.0, KITTI_PNG_MAX) * KITTI_PNG_SCALE).astype(np.uint16)
    # a tiny positive value must stay valid rather than round to the "invalid" 0
    q[(v > 0) & (q == 0)] = 1
    return q


def _write_png(path: PathLike, img: np.ndarray) -> None:
    import cv2

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: output file must end in .png")
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise OSError(f"could not write {path}")


def write_kitti_depth_png(path: PathLike, depth: np.ndarray) -> None:
    """Write ``(H,W)`` depth in metres as a KITTI 16-bit PNG (``round(d*256)``), atomically.

    Non-finite and non-positive values become 0 (invalid); values above ~256 m are clipped (with a
    warning); a positive value below 1/512 m is stored as 1/256 m so it stays valid.
    """
    _write_png(path, _to_uint16(depth, str(path)))


def write_kitti_disp_png(path: PathLike, disp: np.ndarray) -> None:
    """Write ``(H,W)`` disparity in pixels as a KITTI 16-bit PNG (``round(d*256)``), atomically."""
    _write_png(path, _to_uint16(disp, str(path)))


def _squeeze_map(arr: np.ndarray, name: str) -> np.ndarray:
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"{name}: expected a (H,W) array (or (1,H,W)), got shape {arr.shape}")
    return arr


def read_npy_map(path: PathLike) -> np.ndarray:
    """Read a ``.npy`` depth (metres) or disparity (pixels) map: ``(H,W)`` float32 as stored.

    ``(1,H,W)`` and ``(1,1,H,W)`` arrays are squeezed; anything else that is not 2-D raises
    :class:`InputError` (use :func:`read_depth_stack` for ``(N,H,W)`` stacks).
    """
    arr = _load_array(path)
    return _squeeze_map(arr, str(path)).astype(np.float32)


def _load_array(path: PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if len(keys) != 1:
                    raise InputError(f"{path}: .npz must hold exactly one array, found {keys}")
                arr = z[keys[0]]
        else:
            arr = np.load(path, allow_pickle=False)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a user file problem
        raise InputError(f"{path}: cannot load as a numeric numpy array ({exc})") from exc
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{path}: holds {arr.dtype} data, expected a numeric array")
    return arr


def read_depth_stack(path: PathLike) -> np.ndarray:
    """Read a ``.npy``/``.npz`` holding ``(N,H,W)`` maps (one per frame): float32 ``(N,H,W)``.

    A 2-D array is returned as a stack of one. Frames of a stack are paired with another stack by
    index.
    """
    arr = _load_array(path)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{path}: expected (N,H,W) maps, got shape {arr.shape}")
    return arr.astype(np.float32)


def write_depth_npy(path: PathLike, depth: np.ndarray) -> None:
    """Write a ``(H,W)`` float map as ``.npy`` (float32), atomically."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise InputError(f"{path}: output file must end in .npy")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(depth, dtype=np.float32))


# ----------------------------------------------------------------------------- stereo calibration


@dataclass(frozen=True)
class StereoCalib:
    """Rectified stereo calibration for converting disparity to depth.

    Attributes:
        focal: focal length in pixels (``fx`` of the left rectified camera).
        baseline: distance between the camera centres in metres (> 0).
        doffs: x-offset of the principal points, ``cx_right - cx_left`` in pixels (Middlebury's
            ``doffs``), so that ``depth = focal * baseline / (disp + doffs)``; 0 for KITTI.
        K: ``(3,3)`` intrinsics of the left camera, or ``None`` if the file only gave the focal.
        source: where it was read from.
    """

    focal: float
    baseline: float
    doffs: float = 0.0
    K: Optional[np.ndarray] = None
    source: str = ""

    def __post_init__(self):
        if not (np.isfinite(self.focal) and self.focal > 0):
            raise InputError(f"{self.source or 'stereo calibration'}: focal length must be > 0, got {self.focal}")
        if not (np.isfinite(self.baseline) and self.baseline > 0):
            raise InputError(
                f"{self.source or 'stereo calibration'}: baseline must be > 0 metres, got {self.baseline} "
                "(check the sign convention and units of the calibration)"
            )
        if not np.isfinite(self.doffs):
            raise InputError(f"{self.source or 'stereo calibration'}: doffs must be finite")

    def scaled(self, sx: float, sy: Optional[float] = None) -> "StereoCalib":
        """The calibration after resizing the images by ``sx`` (width) and ``sy`` (height)."""
        sy = sx if sy is None else sy
        K = None
        if self.K is not None:
            K = self.K.astype(np.float64).copy()
            K[0, 0] *= sx
            K[0, 1] *= sx
            K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
            K[1, 1] *= sy
            K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return StereoCalib(self.focal * sx, self.baseline, self.doffs * sx, K, self.source)


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_stereo_calib(text: str, source: str = "calibration", cameras: Optional[tuple] = None) -> StereoCalib:
    """Parse stereo calibration text (formats listed in the module docstring) into :class:`StereoCalib`.

    Args:
        text: the file content.
        source: name used in error messages.
        cameras: for KITTI files, the ``(left, right)`` projection-matrix keys to use, e.g.
            ``("P0", "P1")`` for the grey pair; by default the colour pair is preferred.
    Raises :class:`InputError` naming ``source`` when no known format matches or the baseline is
    not positive.
    """
    stripped = text.strip()
    if not stripped:
        raise InputError(f"{source}: empty calibration file")
    # 4. plain numbers
    tokens = stripped.replace(",", " ").split()
    try:
        nums = [float(t) for t in tokens]
    except ValueError:
        nums = None
    if nums is not None:
        if len(nums) not in (2, 3):
            raise InputError(f"{source}: a plain calibration needs 'focal_px baseline_m [doffs_px]', got {len(nums)} numbers")
        return StereoCalib(nums[0], nums[1], nums[2] if len(nums) == 3 else 0.0, None, source)

    # 3. Middlebury: cam0=[...] doffs= baseline= (mm)
    if re.search(r"^\s*cam0\s*=", text, flags=re.M):
        kv = dict(re.findall(r"^\s*(\w+)\s*=\s*(.+?)\s*$", text, flags=re.M))
        try:
            vals = [float(v) for v in re.findall(_NUM, kv["cam0"])]
            K = np.array(vals, dtype=np.float64).reshape(3, 3)
            baseline_mm = float(kv["baseline"])
            doffs = float(kv.get("doffs", 0.0))
        except (KeyError, ValueError) as exc:
            raise InputError(f"{source}: Middlebury calib needs cam0=[...] and baseline= (mm) ({exc})") from exc
        return StereoCalib(float(K[0, 0]), baseline_mm / 1000.0, doffs, K, source)

    # 1./2. KITTI "key: numbers"
    mats = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, rest = line.partition(":")
        try:
            vals = [float(v) for v in rest.split()]
        except ValueError:
            continue
        if len(vals) == 12:
            mats[key.strip()] = np.array(vals, dtype=np.float64).reshape(3, 4)
    order = (("P_rect_02", "P_rect_03"), ("P2", "P3"), ("P_rect_00", "P_rect_01"), ("P0", "P1"))
    if cameras is not None:
        if not (cameras[0] in mats and cameras[1] in mats):
            raise InputError(f"{source}: needs 3x4 matrices {cameras[0]} and {cameras[1]}")
        order = (tuple(cameras),)
    for left, right in order:
        if left in mats and right in mats:
            PL, PR = mats[left], mats[right]
            f = float(PL[0, 0])
            if f <= 0:
                raise InputError(f"{source}: {left} has a non-positive focal length {f}")
            baseline = (PL[0, 3] - PR[0, 3]) / f
            return StereoCalib(f, float(baseline), 0.0, np.ascontiguousarray(PL[:, :3]), source)
    raise InputError(
        f"{source}: no stereo calibration found; give a KITTI calib with P_rect_02/P_rect_03 or P2/P3, "
        "a Middlebury calib.txt, or a text file 'focal_px baseline_m'"
    )


def read_stereo_calib(path: PathLike, cameras: Optional[tuple] = None) -> StereoCalib:
    """Read a stereo calibration file (see :func:`parse_stereo_calib`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: calibration file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read calibration ({exc})") from exc
    return parse_stereo_calib(text, str(path), cameras)


def disparity_to_depth(disp: np.ndarray, focal: float, baseline: float, doffs: float = 0.0) -> np.ndarray:
    """Depth in metres from disparity in pixels: ``focal * baseline / (disp + doffs)``.

    Args:
        disp: ``(...)`` disparity in pixels (numpy or torch); pixels with ``disp <= 0`` or not finite
            are invalid.
    Returns:
        depth of the same shape (float32 numpy, or a tensor for tensor input), 0 where invalid.
    """
    if baseline <= 0 or focal <= 0:
        raise InputError(f"disparity_to_depth: focal ({focal}) and baseline ({baseline}) must be > 0")
    try:
        import torch

        if isinstance(disp, torch.Tensor):
            denom = disp + doffs
            valid = torch.isfinite(disp) & (disp > 0) & (denom > 0)
            out = focal * baseline / torch.where(valid, denom, torch.ones_like(denom))
            return torch.where(valid, out, torch.zeros_like(out))
    except ImportError:  # pragma: no cover
        pass
    d = np.asarray(disp, dtype=np.float64)
    denom = d + doffs
    valid = np.isfinite(d) & (d > 0) & (denom > 0)
    out = np.zeros_like(d)
    out[valid] = focal * baseline / denom[valid]
    return out.astype(np.float32)


def depth_to_disparity(depth: np.ndarray, focal: float, baseline: float, doffs: float = 0.0) -> np.ndarray:
    """Disparity in pixels from depth in metres (``focal*baseline/depth - doffs``), 0 where depth <= 0."""
    if baseline <= 0 or focal <= 0:
        raise InputError(f"depth_to_disparity: focal ({focal}) and baseline ({baseline}) must be > 0")
    z = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(z) & (z > 0)
    out = np.zeros_like(z)
    out[valid] = focal * baseline / z[valid] - doffs
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- RGB images


def write_rgb_png(path: PathLike, rgb: np.ndarray) -> None:
    """Write an ``(H,W,3)`` uint8 RGB image as PNG, atomically."""
    img = np.asarray(rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"{path}: expected an (H,W,3) uint8 RGB image, got {img.dtype} {img.shape}")
    _write_png(path, np.ascontiguousarray(img[..., ::-1]))
