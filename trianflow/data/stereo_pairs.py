"""Rectified stereo pairs with (optional) ground-truth disparity: KITTI stereo 2012/2015, a generic
stereo folder, and the Middlebury 2014 "motorcycle" pair shipped with scikit-image.

Every dataset returns *sample dicts* (see :mod:`trianflow.data`):

- ``image``, ``image_right``: ``(3,H,W)`` float32 RGB in [0, 1];
- ``K``: ``(3,3)`` float32 intrinsics of the left image; ``baseline``: ``()`` float32 metres (> 0);
- ``disp_gt``: ``(1,H,W)`` float32 disparity in pixels of the left image, 0 where unknown;
- ``depth_gt``: ``(1,H,W)`` float32 metres, ``focal*baseline/(disp+doffs)``, 0 where unknown;
- ``frame_id``: ``"<dataset>/<name>"``.

``disp_gt``/``depth_gt`` are present only when ground truth exists. With ``size=(H,W)`` the images
are resized bilinearly, ``K`` is rescaled (pixel centres at integer coordinates) and the sparse GT
disparity is resized with nearest-neighbour sampling *and its values multiplied by the width
ratio* (disparity is measured in pixels). For evaluation, prefer the native resolution.

:class:`MiddleburyDataset` repeats the (augmented) Middlebury pair for overfitting runs;
:func:`check_stereo_batch` checks that a collated batch is a usable rectified stereo batch.

Bad input raises :class:`trianflow.InputError`: a missing right image, left and right images of
different sizes, a zero or negative baseline, a missing calibration, an empty dataset.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from trianflow.data.transforms import add_aug_copies
from trianflow.errors import InputError
from trianflow.evaluation.disparity import nonoccluded_mask
from trianflow.io.depth import (StereoCalib, disparity_to_depth, read_kitti_disp_png, read_npy_map,
                                read_stereo_calib)

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff")

# Middlebury 2014 "motorcycle" at the resolution shipped by scikit-image (1/4 of the original),
# from the docstring of skimage.data.stereo_motorcycle.
MOTORCYCLE_FOCAL = 994.978
MOTORCYCLE_CX = 311.193
MOTORCYCLE_CY = 254.877
MOTORCYCLE_DOFFS = 31.086
MOTORCYCLE_BASELINE_M = 0.193001

__all__ = [
    "STEREO_DATASETS",
    "check_stereo_batch",
    "MiddleburyDataset",
    "read_rgb",
    "stereo_sample",
    "KittiStereoDataset",
    "kitti_stereo_year",
    "StereoFolderDataset",
    "middlebury_motorcycle",
    "downscale_disparity",
]


def read_rgb(path: PathLike) -> np.ndarray:
    """Read an image file as ``(H,W,3)`` uint8 RGB (grayscale repeated). InputError if unreadable."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: cannot read this image")
    return np.ascontiguousarray(img[..., ::-1])


def _resize_nearest_disp(disp: np.ndarray, size) -> np.ndarray:
    import cv2

    H, W = size
    out = cv2.resize(disp.astype(np.float32), (W, H), interpolation=cv2.INTER_NEAREST)
    return out * (W / disp.shape[1])


def stereo_sample(left: np.ndarray, right: np.ndarray, K: np.ndarray, baseline: float,
                  disp: Optional[np.ndarray] = None, frame_id: str = "", doffs: float = 0.0,
                  size: Optional[Sequence[int]] = None, names: Sequence[str] = ("left", "right")) -> dict:
    """Build a sample dict from a rectified pair.

    Args:
        left, right: ``(H,W,3)`` uint8 RGB (or ``(H,W)`` grey, repeated to 3 channels).
        K: ``(3,3)`` left intrinsics. baseline: metres, > 0.
        disp: optional ``(H,W)`` disparity in pixels of the left image; <= 0 or non-finite = unknown.
        doffs: principal-point offset for depth (``depth = f*B/(disp+doffs)``), 0 for KITTI.
        size: optional output ``(H,W)`` (see the module docstring for how GT is resized).
        names: how to call the two images in error messages (e.g. their paths).
    Returns:
        dict with ``image``, ``image_right``, ``K``, ``baseline``, ``frame_id`` and, with ``disp``,
        ``disp_gt`` and ``depth_gt`` (shapes in the module docstring).
    """
    import cv2

    if not (np.isfinite(baseline) and baseline > 0):
        raise InputError(f"{frame_id or 'stereo pair'}: baseline must be > 0 metres, got {baseline}")
    imgs = []
    for im in (left, right):
        im = np.asarray(im)
        if im.ndim == 2:
            im = np.repeat(im[:, :, None], 3, axis=2)
        if im.ndim != 3 or im.shape[2] != 3:
            raise InputError(f"{frame_id}: expected (H,W,3) RGB images, got shape {im.shape}")
        imgs.append(im)
    left, right = imgs
    if left.shape != right.shape:
        raise InputError(f"{names[0]} is {left.shape[1]}x{left.shape[0]} but {names[1]} is "
                         f"{right.shape[1]}x{right.shape[0]}: a rectified stereo pair must have one size")
    h, w = left.shape[:2]
    K = np.asarray(K, dtype=np.float64).copy()
    if disp is not None:
        disp = np.asarray(disp, dtype=np.float32)
        if disp.shape != (h, w):
            raise InputError(f"{frame_id}: GT disparity is {disp.shape[1]}x{disp.shape[0]} but the images are "
                             f"{w}x{h}")
        disp = np.where(np.isfinite(disp) & (disp > 0), disp, 0.0).astype(np.float32)
    if size is not None and tuple(size) != (h, w):
        H, W = int(size[0]), int(size[1])
        sx, sy = W / w, H / h
        left = cv2.resize(left, (W, H), interpolation=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR)
        right = cv2.resize(right, (W, H), interpolation=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR)
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1] *= sy
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        doffs = doffs * sx
        if disp is not None:
            disp = _resize_nearest_disp(disp, (H, W))

    def to_t(im):
        return torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float() / 255.0

    out = {
        "image": to_t(left),
        "image_right": to_t(right),
        "K": torch.from_numpy(K).float(),
        "baseline": torch.tensor(float(baseline), dtype=torch.float32),
        "frame_id": frame_id,
    }
    if disp is not None:
        depth = disparity_to_depth(disp, float(K[0, 0]), float(baseline), doffs)
        out["disp_gt"] = torch.from_numpy(disp)[None].float()
        out["depth_gt"] = torch.from_numpy(depth)[None].float()
    return out


def _images_in(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _find_map(folder: Path, stem: str) -> Optional[Path]:
    for suf in (".png", ".npy"):
        p = folder / f"{stem}{suf}"
        if p.is_file():
            return p
    return None


def _read_disp(path: Path) -> np.ndarray:
    return read_npy_map(path) if path.suffix.lower() == ".npy" else read_kitti_disp_png(path)


def kitti_stereo_year(root) -> int:
    """2015 or 2012 from the layout of a KITTI stereo folder (``image_2/``, or ``colored_0/`` / ``image_0/``)."""
    r = Path(root)
    for base in (r / "training", r / "testing", r):
        if (base / "image_2").is_dir():
            return 2015
        if (base / "colored_0").is_dir() or (base / "image_0").is_dir():
            return 2012
    raise InputError(f"{root}: not a KITTI stereo 2012/2015 folder (no training/image_2/ or training/colored_0/)")


class KittiStereoDataset(Dataset):
    """KITTI stereo 2015 / 2012 (scene-flow / stereo benchmark layout).

    ``root`` is the folder that holds ``training/`` and ``testing/`` (or the split folder itself):

    - 2015: ``image_2/000000_10.png`` (left), ``image_3/`` (right), GT ``disp_occ_0/`` (all pixels,
      default) or ``disp_noc_0/`` (non-occluded), calibration ``calib_cam_to_cam/000000.txt``
      (``P_rect_02``/``P_rect_03``).
    - 2012: ``colored_0/`` / ``colored_1/`` (colour, default) or ``image_0/`` / ``image_1/`` (grey,
      ``color=False``), GT ``disp_occ/`` or ``disp_noc/``, calibration ``calib/000000.txt``
      (``P2``/``P3`` for colour, ``P0``/``P1`` for grey). KITTI defines the 2012 GT for the grey
      left camera; the colour pair (~6 cm beside it, the common choice for training) sees almost
      the same disparities.

    Without a calibration folder, one ``calib.txt`` beside the image folders (same keys) serves
    every pair. Only the ``*_10`` frames (the ones with GT) are listed. GT is loaded when its folder exists
    (the testing split has none). Samples: see the module docstring.

    Args:
        root: dataset root. split: ``"training"`` or ``"testing"``. year: 2015 or 2012.
        occ: use the ``occ`` GT (all pixels) instead of ``noc`` (non-occluded only).
        color: 2012 only: colour (``colored_*``) or grey (``image_*``) images.
        size: optional output ``(H,W)``; KITTI images differ by a few pixels between drives, so a
            fixed size is needed to batch them.
    """

    def __init__(self, root: PathLike, split: str = "training", year: int = 2015, occ: bool = True,
                 color: bool = True, size: Optional[Sequence[int]] = None):
        root = Path(root)
        if year not in (2012, 2015):
            raise InputError(f"KITTI stereo year must be 2012 or 2015, got {year}")
        if split not in ("training", "testing"):
            raise InputError(f"KITTI stereo split must be training or testing, got {split!r}")
        base = root / split if (root / split).is_dir() else root
        if not base.is_dir():
            raise InputError(f"{root}: KITTI stereo folder not found")
        if year == 2015:
            left_dir, right_dir = base / "image_2", base / "image_3"
            gt_dir = base / ("disp_occ_0" if occ else "disp_noc_0")
            calib_dir, self._cameras = base / "calib_cam_to_cam", ("P_rect_02", "P_rect_03")
        else:
            left_dir, right_dir = (base / "colored_0", base / "colored_1") if color else (base / "image_0", base / "image_1")
            gt_dir = base / ("disp_occ" if occ else "disp_noc")
            calib_dir, self._cameras = base / "calib", (("P2", "P3") if color else ("P0", "P1"))
        if not left_dir.is_dir():
            raise InputError(f"{base}: no {left_dir.name}/ folder (not a KITTI stereo {year} {split} layout)")
        if not right_dir.is_dir():
            raise InputError(f"{base}: no {right_dir.name}/ folder with the right images")
        single_calib = None  # one calib.txt beside the image folders serves every pair
        if not calib_dir.is_dir():
            if not (base / "calib.txt").is_file():
                raise InputError(f"{base}: no {calib_dir.name}/ calibration folder (nor one calib.txt for all pairs)")
            single_calib = base / "calib.txt"
        self.year, self.split, self.size = year, split, size
        self.has_gt = gt_dir.is_dir()
        self.items = []
        for lp in _images_in(left_dir):
            if not lp.stem.endswith("_10"):
                continue
            fid = lp.stem[:-3]
            rp = right_dir / lp.name
            if not rp.is_file():
                raise InputError(f"{lp}: right image {rp} is missing")
            cp = single_calib or calib_dir / f"{fid}.txt"
            if not cp.is_file():
                raise InputError(f"{lp}: calibration {cp} is missing")
            gp = None
            if self.has_gt:
                gp = gt_dir / lp.name
                if not gp.is_file():
                    raise InputError(f"{lp}: ground-truth disparity {gp} is missing")
            self.items.append((lp.stem, lp, rp, cp, gp))
        if not self.items:
            raise InputError(f"{left_dir}: no *_10.png images")
        if not self.has_gt:
            log.info("%s: no %s/ folder, samples have no GT disparity", base, gt_dir.name)

    def __len__(self) -> int:
        return len(self.items)

    def calib(self, i: int) -> StereoCalib:
        """The :class:`StereoCalib` of sample ``i`` at native resolution."""
        return read_stereo_calib(self.items[i][3], cameras=self._cameras)

    def __getitem__(self, i: int) -> dict:
        name, lp, rp, cp, gp = self.items[i]
        cal = self.calib(i)
        disp = _read_disp(gp) if gp is not None else None
        return stereo_sample(read_rgb(lp), read_rgb(rp), cal.K, cal.baseline, disp,
                             frame_id=f"kitti{self.year}/{name}", doffs=cal.doffs, size=self.size,
                             names=(str(lp), str(rp)))


class StereoFolderDataset(Dataset):
    """A generic folder of rectified stereo pairs.

    Layouts (the first that matches):

    1. ``left/`` and ``right/`` with the same file names; optional GT ``disp/<stem>.png`` (KITTI
       16-bit, pixels*256) or ``disp/<stem>.npy`` (pixels);
    2. ``<name>_left.<ext>`` and ``<name>_right.<ext>`` in ``root``; optional GT
       ``<name>_disp.png`` / ``<name>_disp.npy``.

    Args:
        root: the folder.
        focal: focal length in pixels; baseline: metres (> 0). When both are ``None`` they are read
            from ``root/calib.txt`` (any format of :func:`trianflow.io.depth.read_stereo_calib`).
        K: optional ``(3,3)`` intrinsics; by default ``fx = fy = focal`` and the principal point at
            the image centre ``((W-1)/2, (H-1)/2)``.
        doffs: principal-point offset for depth from disparity (0 for most rigs).
        size: optional output ``(H,W)``.
    """

    def __init__(self, root: PathLike, focal: Optional[float] = None, baseline: Optional[float] = None,
                 K: Optional[np.ndarray] = None, doffs: float = 0.0, size: Optional[Sequence[int]] = None):
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: stereo folder not found")
        if focal is None and baseline is None:
            cal_path = root / "calib.txt"
            if not cal_path.is_file():
                raise InputError(f"{root}: give focal and baseline, or put a calib.txt ('focal_px baseline_m') there")
            cal = read_stereo_calib(cal_path)
            focal, baseline, doffs = cal.focal, cal.baseline, cal.doffs
            K = cal.K if K is None else K
        if focal is None or baseline is None:
            raise InputError(f"{root}: give both focal (px) and baseline (m)")
        if not (np.isfinite(baseline) and baseline > 0):
            raise InputError(f"{root}: baseline must be > 0 metres, got {baseline}")
        if not (np.isfinite(focal) and focal > 0):
            raise InputError(f"{root}: focal length must be > 0 pixels, got {focal}")
        self.root, self.focal, self.baseline, self.doffs, self.size = root, float(focal), float(baseline), float(doffs), size
        self.K = None if K is None else np.asarray(K, dtype=np.float64)
        self.items = []
        if (root / "left").is_dir():
            right_dir, disp_dir = root / "right", root / "disp"
            if not right_dir.is_dir():
                raise InputError(f"{root}: has left/ but no right/ folder")
            for lp in _images_in(root / "left"):
                rp = right_dir / lp.name
                if not rp.is_file():
                    raise InputError(f"{lp}: right image {rp} is missing")
                gp = _find_map(disp_dir, lp.stem) if disp_dir.is_dir() else None
                self.items.append((lp.stem, lp, rp, gp))
        else:
            for lp in _images_in(root):
                if not lp.stem.endswith("_left"):
                    continue
                name = lp.stem[: -len("_left")]
                rp = next((root / f"{name}_right{s}" for s in (lp.suffix,) + IMAGE_SUFFIXES
                           if (root / f"{name}_right{s}").is_file()), None)
                if rp is None:
                    raise InputError(f"{lp}: right image {name}_right{lp.suffix} is missing")
                self.items.append((name, lp, rp, _find_map(root, f"{name}_disp")))
        if not self.items:
            raise InputError(f"{root}: no stereo pairs (expected left/ + right/ folders or *_left/*_right images)")
        n_gt = sum(it[3] is not None for it in self.items)
        if 0 < n_gt < len(self.items):
            log.warning("%s: only %d of %d pairs have GT disparity", root, n_gt, len(self.items))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        name, lp, rp, gp = self.items[i]
        left, right = read_rgb(lp), read_rgb(rp)
        h, w = left.shape[:2]
        K = self.K if self.K is not None else np.array(
            [[self.focal, 0, (w - 1) / 2], [0, self.focal, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)
        disp = _read_disp(gp) if gp is not None else None
        return stereo_sample(left, right, K, self.baseline, disp, frame_id=f"{self.root.name}/{name}",
                             doffs=self.doffs, size=self.size, names=(str(lp), str(rp)))


def downscale_disparity(disp: np.ndarray, scale: float, valid: Optional[np.ndarray] = None):
    """Downscale a dense disparity map by ``scale`` in (0, 1], keeping invalid pixels out.

    Area averaging over valid pixels only; an output pixel is valid when all of its (area-weighted)
    source pixels are valid. The values are multiplied by ``scale`` (disparity is in pixels).

    Args:
        disp: ``(H,W)`` disparity in pixels; non-finite or <= 0 = invalid (unless ``valid`` is given).
    Returns:
        ``(disp_small, valid_small)``: ``(h,w)`` float32 with 0 where invalid, and ``(h,w)`` bool,
        with ``h = round(H*scale)``, ``w = round(W*scale)``.
    """
    import cv2

    if not (0 < scale <= 1):
        raise InputError(f"disparity downscale factor must be in (0, 1], got {scale}")
    d = np.asarray(disp, dtype=np.float64)
    v = np.isfinite(d) & (d > 0) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(d))
    H, W = d.shape
    if scale == 1:
        return np.where(v, d, 0.0).astype(np.float32), v
    h, w = max(1, int(round(H * scale))), max(1, int(round(W * scale)))
    num = cv2.resize(np.where(v, d, 0.0), (w, h), interpolation=cv2.INTER_AREA)
    den = cv2.resize(v.astype(np.float64), (w, h), interpolation=cv2.INTER_AREA)
    vs = den > 1 - 1e-6
    out = np.zeros((h, w), dtype=np.float64)
    out[vs] = num[vs] / den[vs] * (w / W)
    return out.astype(np.float32), vs


def middlebury_motorcycle(scale: float = 0.25) -> dict:
    """The Middlebury 2014 "motorcycle" stereo pair from :func:`skimage.data.stereo_motorcycle`.

    scikit-image ships this pair (500x741, a 1/4 downsampling of the original) inside the package,
    so no download is needed. ``scale`` is relative to that shipped size.

    Returns:
        dict with ``left``, ``right`` ``(h,w,3)`` uint8 RGB; ``disp`` ``(h,w)`` float32 pixels (0 where
        unknown: the shipped map marks them inf/NaN); ``valid`` ``(h,w)`` bool; ``depth`` ``(h,w)``
        float32 metres (``f*B/(disp+doffs)``, 0 where unknown); ``K`` ``(3,3)`` float64;
        ``focal``; ``baseline`` (0.193001 m); ``doffs`` (principal-point offset in pixels).
        ``left[y, x]`` matches ``right[y, x - disp[y, x]]``.
    Raises:
        InputError if scikit-image or its data files are not available, or ``scale`` not in (0, 1].
    """
    import cv2

    if not (0 < scale <= 1):
        raise InputError(f"middlebury_motorcycle: scale must be in (0, 1], got {scale}")
    try:
        import skimage.data
    except ImportError as exc:
        raise InputError("middlebury_motorcycle needs scikit-image (pip install scikit-image)") from exc
    try:
        left, right, disp = skimage.data.stereo_motorcycle()
    except Exception as exc:  # noqa: BLE001 - missing data file / no network for the fetcher
        raise InputError(f"scikit-image's stereo_motorcycle data is not available ({type(exc).__name__}: {exc}); "
                         "install a scikit-image wheel that ships skimage/data/motorcycle_*.png/npz") from exc
    H, W = disp.shape
    d_small, valid = downscale_disparity(disp, scale)
    h, w = d_small.shape
    interp = cv2.INTER_AREA
    if (h, w) != (H, W):
        left = cv2.resize(left, (w, h), interpolation=interp)
        right = cv2.resize(right, (w, h), interpolation=interp)
    sx, sy = w / W, h / H
    K = np.array([[MOTORCYCLE_FOCAL * sx, 0, (MOTORCYCLE_CX + 0.5) * sx - 0.5],
                  [0, MOTORCYCLE_FOCAL * sy, (MOTORCYCLE_CY + 0.5) * sy - 0.5],
                  [0, 0, 1]], dtype=np.float64)
    doffs = MOTORCYCLE_DOFFS * sx
    depth = disparity_to_depth(d_small, K[0, 0], MOTORCYCLE_BASELINE_M, doffs)
    return {"left": np.ascontiguousarray(left), "right": np.ascontiguousarray(right), "disp": d_small,
            "valid": valid, "depth": depth, "K": K, "focal": float(K[0, 0]),
            "baseline": MOTORCYCLE_BASELINE_M, "doffs": float(doffs)}


#: dataset names accepted by the stereo tasks (``data.dataset``)
STEREO_DATASETS = ("kitti_raw", "kitti_odometry", "synthetic", "synthetic_stereo", "sequence", "kitti_stereo",
                   "stereo_folder", "middlebury")


def _frame_ids(batch: dict, mask: Optional[torch.Tensor] = None) -> str:
    ids = batch.get("frame_id")
    if not isinstance(ids, (list, tuple)) or not ids:
        return "this batch"
    if mask is not None:
        ids = [i for i, m in zip(ids, mask.tolist()) if m]
    shown = ", ".join(str(i) for i in ids[:3])
    return shown + (f" (+{len(ids) - 3} more)" if len(ids) > 3 else "")


def check_stereo_batch(batch: dict, what: str = "stereo task", need_next: bool = False) -> None:
    """Raise :class:`InputError` unless ``batch`` is a usable rectified stereo batch.

    Checks: ``image`` and ``image_right`` present with the same ``(B,3,H,W)`` shape; ``K``
    ``(B,3,3)`` present; ``baseline`` ``(B,)`` (or scalar) present, finite and > 0 metres;
    with ``need_next`` also ``image_next`` of the same shape.

    Args:
        batch: collated sample dict (see :mod:`trianflow.data`).
        what: how to name the caller in the message.
        need_next: require the temporal neighbour ``image_next`` (``stereo_mono``).
    Raises:
        InputError naming the missing/inconsistent key, the frames and the fix.
    """
    if "image" not in batch:
        raise InputError(f"{what}: the batch has no 'image' (left image)")
    left = batch["image"]
    if "image_right" not in batch:
        raise InputError(
            f"{what}: the batch has no 'image_right' (right image of {_frame_ids(batch)}); use a stereo dataset "
            f"(data.dataset: {', '.join(STEREO_DATASETS)}) whose frames have right images"
        )
    right = batch["image_right"]
    if left.dim() != 4 or left.shape[1] != 3:
        raise InputError(f"{what}: 'image' must be (B,3,H,W), got {tuple(left.shape)}")
    if tuple(right.shape) != tuple(left.shape):
        raise InputError(
            f"{what}: left images are {tuple(left.shape)} but right images are {tuple(right.shape)} "
            f"({_frame_ids(batch)}); a rectified stereo pair must have one size"
        )
    if need_next:
        if "image_next" not in batch:
            raise InputError(f"{what}: the batch has no 'image_next' (temporal neighbour); set data.frames to 2 or 3")
        if tuple(batch["image_next"].shape) != tuple(left.shape):
            raise InputError(f"{what}: 'image_next' is {tuple(batch['image_next'].shape)} but 'image' is "
                             f"{tuple(left.shape)}")
    K = batch.get("K")
    if K is None or tuple(K.shape) != (left.shape[0], 3, 3):
        raise InputError(f"{what}: the batch needs intrinsics 'K' of shape (B,3,3), got "
                         f"{None if K is None else tuple(K.shape)}")
    if "baseline" not in batch:
        raise InputError(f"{what}: the batch has no stereo 'baseline' ({_frame_ids(batch)}); the dataset must give "
                         "the baseline in metres (calibration of the right camera)")
    bl = torch.as_tensor(batch["baseline"]).reshape(-1)
    if bl.numel() not in (1, left.shape[0]):
        raise InputError(f"{what}: 'baseline' has {bl.numel()} values for a batch of {left.shape[0]}")
    bad = ~(torch.isfinite(bl) & (bl > 0))
    if bool(bad.any()):
        vals = ", ".join(f"{float(v):g}" for v in bl[bad][:3])
        raise InputError(f"{what}: stereo baseline must be > 0 metres (right camera at +x), got {vals} for "
                         f"{_frame_ids(batch, bad if bl.numel() > 1 else None)}; fix the calibration")


#: width of the scikit-image Middlebury motorcycle pair (1/4 of the original Middlebury 2014 size)
MIDDLEBURY_WIDTH = 741


class MiddleburyDataset(Dataset):
    """The Middlebury 2014 "motorcycle" pair of scikit-image, repeated ``length`` times.

    ``scale`` is relative to the shipped pair (741x500, itself 1/4 of the original Middlebury
    size); the GT is area-downscaled over valid pixels only
    (:func:`trianflow.data.stereo_pairs.middlebury_motorcycle`). Samples (see
    :mod:`trianflow.data.stereo_pairs`): ``image``, ``image_right``, ``K``, ``baseline``,
    ``disp_gt``/``depth_gt`` (0 where unknown), ``frame_id``. Attributes: ``raw`` (the dict of
    :func:`~trianflow.data.stereo_pairs.middlebury_motorcycle`), ``sample`` (the un-augmented
    sample) and ``eval_mask`` (``(H,W)`` bool, known and non-occluded GT pixels of
    :func:`nonoccluded_mask`, for evaluation).

    Args:
        scale: in (0, 1]. length: number of items. transform: augmentation (or None).
    Raises:
        InputError when scikit-image or its data is missing.
    """

    def __init__(self, scale: float = 1.0, length: int = 64, transform=None):
        if length < 1:
            raise InputError(f"MiddleburyDataset: length must be >= 1, got {length}")
        m = middlebury_motorcycle(scale)
        self.raw = m
        self.sample = stereo_sample(m["left"], m["right"], m["K"], m["baseline"], m["disp"],
                                    frame_id="middlebury/motorcycle", doffs=m["doffs"])
        self.eval_mask = nonoccluded_mask(m["disp"], m["valid"])
        self.length, self.transform = int(length), transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        s = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in self.sample.items()}
        if self.transform is not None:
            s = self.transform(s)
        return add_aug_copies(s)
