"""KITTI raw training data: pairs/triplets of consecutive frames, optionally with the stereo image.

Layout (as downloaded)::

    <root>/<date>/calib_cam_to_cam.txt                       P_rect_02, P_rect_03 (3x4)
    <root>/<date>/<date>_drive_<id>_sync/image_02/data/0000000000.png   left colour camera
    <root>/<date>/<date>_drive_<id>_sync/image_03/data/...               right colour camera
    <root>/<date>/<date>_drive_<id>_sync/image_00/data/..., image_01/   left/right grey cameras
                                                                          (P_rect_00, P_rect_01)

``camera`` picks the pair: ``color`` (02/03), ``gray`` (00/01) or ``auto`` (colour when the drive
has ``image_02``, else grey). Drives of different dates have different calibrations: each sample
carries its own ``K``, scaled with the resize.

(``.jpg`` images, as some tools convert them, work too.) Split files use the monodepth2 format,
one sample per line: ``<date>/<drive folder> <frame index> [l|r]``. Without a split file every
frame of every drive that has its neighbours is used. In monocular mode ``r`` selects camera 03
as the reference camera; with ``stereo=True`` the left camera is always the reference (the random
flip of :mod:`trianflow.data.transforms` provides the mirrored case), so ``l``/``r`` duplicates
collapse into one sample.

Static frames can be dropped with ``static_threshold`` (see
:mod:`trianflow.data.sequences_dataset`: mean absolute grey difference or median DIS flow of the
pair ``(i, i + stride)`` below the threshold).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from trianflow.data.image_folder import check_png_sizes, list_images, read_image
from trianflow.data.kitti_odometry import parse_calib
from trianflow.data.sequences_dataset import in_frame_range, make_sample, motion_scores
from trianflow.data.transforms import Compose, Resize
from trianflow.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class KittiRawDrive:
    """One ``<date>_drive_<id>_sync`` folder: frame files per camera and the rectified calibration."""

    name: str  # "<date>/<drive folder>"
    folder: Path
    frames: Dict[str, Dict[int, Path]]  # camera "00".."03" -> {frame number: file}
    P: Dict[str, np.ndarray]  # camera -> (3,4) rectified projection matrix
    left: str = "02"  # reference camera of the chosen pair ("02" colour or "00" grey)

    @property
    def right(self) -> str:
        """The right camera of the chosen pair ("03" or "01")."""
        return {"02": "03", "00": "01"}[self.left]

    def K(self, cam: str) -> np.ndarray:
        """``(3,3)`` intrinsics of camera ``cam`` ("00".."03")."""
        return np.ascontiguousarray(self.P[cam][:, :3])

    @property
    def baseline(self) -> float:
        """Stereo baseline in metres between the left and right camera of the pair (> 0)."""
        return float((self.P[self.left][0, 3] - self.P[self.right][0, 3]) / self.P[self.left][0, 0])


RAW_CAMERAS = {"color": ("02", "03"), "gray": ("00", "01")}


def _load_calib(date_dir: Path) -> Dict[str, np.ndarray]:
    path = date_dir / "calib_cam_to_cam.txt"
    if not path.is_file():
        raise InputError(f"{date_dir}: no calib_cam_to_cam.txt (needed for the KITTI raw intrinsics)")
    calib = parse_calib(path)
    return {f"0{k}": calib[f"P{k}"] for k in range(4) if f"P{k}" in calib}


def _frame_files(folder: Path) -> Dict[int, Path]:
    if not folder.is_dir():
        return {}
    out = {}
    for f in list_images(folder):
        try:
            out[int(f.stem)] = f
        except ValueError:
            continue
    return out


def scan_kitti_raw(root: Union[str, Path], drives: Optional[List[str]] = None,
                   camera: str = "auto") -> Dict[str, KittiRawDrive]:
    """Find the drives under a KITTI raw root.

    Args:
        root: folder with ``<date>/<date>_drive_<id>_sync/image_02/data`` (or ``image_00``).
        drives: restrict to these ``"<date>/<drive folder>"`` names.
        camera: ``auto`` (colour pair 02/03 when ``image_02`` exists, else grey 00/01), ``color``, ``gray``.
    Returns:
        ``{name: KittiRawDrive}``.
    Raises:
        InputError: missing root, no drives with images, missing calibration of the left camera.
    """
    if camera not in ("auto", *RAW_CAMERAS):
        raise InputError(f"camera={camera!r}: use auto, color or gray")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder (give the KITTI raw root with <date>/<date>_drive_*_sync/)")
    if drives is None:
        cands = sorted(d for d in root.glob("*/*_sync") if d.is_dir())
    else:
        cands = [root / n for n in drives]
    out: Dict[str, KittiRawDrive] = {}
    calibs: Dict[Path, Dict[str, np.ndarray]] = {}
    for d in cands:
        name = f"{d.parent.name}/{d.name}"
        kind = camera
        if kind == "auto":
            kind = "color" if _frame_files(d / "image_02" / "data") else "gray"
        lcam, rcam = RAW_CAMERAS[kind]
        left = _frame_files(d / f"image_{lcam}" / "data")
        if not left:
            if drives is not None:
                raise InputError(f"{d / f'image_{lcam}' / 'data'}: no images (drive {name} from the split file)")
            continue
        if d.parent not in calibs:
            calibs[d.parent] = _load_calib(d.parent)
        if lcam not in calibs[d.parent]:
            raise InputError(f"{d.parent / 'calib_cam_to_cam.txt'}: no P_rect_{lcam} line (needed for image_{lcam}/)")
        files = [left[i] for i in sorted(left)]
        first = read_image(files[0])
        check_png_sizes(files, first.shape[:2])
        out[name] = KittiRawDrive(name=name, folder=d, P=calibs[d.parent], left=lcam,
                                  frames={lcam: left, rcam: _frame_files(d / f"image_{rcam}" / "data")})
    if not out:
        raise InputError(f"{root}: no KITTI raw drives with images found (expected "
                         "<date>/<date>_drive_<id>_sync/image_02/data/*.png or image_00/data/*.png)")
    return out


def read_split(path: Union[str, Path]) -> List[Tuple[str, int, str]]:
    """Parse a monodepth2-style split file into ``[(drive name, frame index, side 'l'|'r')]``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: split file not found")
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 2:
            raise InputError(f"{path}:{lineno}: expected '<date>/<drive> <frame> [l|r]', got {line.strip()!r}")
        try:
            idx = int(parts[1])
        except ValueError:
            raise InputError(f"{path}:{lineno}: frame index {parts[1]!r} is not an integer") from None
        side = parts[2].lower() if len(parts) > 2 else "l"
        if side not in ("l", "r"):
            raise InputError(f"{path}:{lineno}: side must be 'l' or 'r', got {parts[2]!r}")
        out.append((parts[0].strip("/"), idx, side))
    return out


class KittiRawDataset(torch.utils.data.Dataset):
    """Pairs/triplets of consecutive KITTI raw frames (see the module docstring).

    Sample keys: ``image`` (frame i), ``image_next`` (i + stride), ``image_prev`` (i - stride,
    frames = 3), ``*_aug`` copies, ``K`` (3,3) after resizing, ``frame_id``
    ``"<date>/<drive>/<i>"``; with ``stereo``: ``image_right``, ``baseline`` and
    ``image_next_right``/``image_prev_right``.

    Args:
        root: the KITTI raw root.
        split: monodepth2-style split file (None: all frames of all drives).
        frames: 1, 2 or 3; stride: frame gap.
        size: ``(H,W)`` output size (drives differ slightly in size, so keep a fixed size).
        stereo: add the right images and baseline (needs image_03 and P_rect_03).
        transform: augmentation applied after resizing.
        static_threshold, static_method: drop pairs whose motion is below the threshold.
        frame_range: ``(start, end)``: only samples whose frames lie in ``[start, end)`` of each drive.
        camera: ``auto``, ``color`` (image_02/03) or ``gray`` (image_00/01).
    """

    def __init__(self, root, split: Optional[Union[str, Path]] = None, frames: int = 2, stride: int = 1,
                 size: Optional[Tuple[int, int]] = (256, 832), stereo: bool = False, transform=None,
                 static_threshold: Optional[float] = None, static_method: str = "flow",
                 frame_range: Optional[Tuple[int, int]] = None, camera: str = "auto"):
        if frames not in (1, 2, 3):
            raise InputError(f"frames must be 1, 2 or 3, got {frames}")
        if stride < 1:
            raise InputError(f"stride must be >= 1, got {stride}")
        self.frames, self.stride, self.stereo = frames, int(stride), stereo
        entries = read_split(split) if split is not None else None
        names = sorted({e[0] for e in entries}) if entries is not None else None
        self.drives = scan_kitti_raw(root, names, camera=camera)
        if entries is None:
            entries = [(n, i, "l") for n, d in self.drives.items() for i in sorted(d.frames[d.left])]
        need = {1: (0,), 2: (0, 1), 3: (-1, 0, 1)}[frames]
        items, seen, dropped = [], set(), 0
        for name, i, side in entries:
            d = self.drives[name]
            cam = d.left if (stereo or side == "l") else d.right
            cams = (d.left, d.right) if stereo else (cam,)
            if stereo and d.right not in d.P and d.frames.get(d.right):
                raise InputError(f"{d.folder.parent / 'calib_cam_to_cam.txt'}: stereo needs P_rect_{d.right}")
            if cam not in d.P:
                raise InputError(f"{d.folder.parent / 'calib_cam_to_cam.txt'}: no P_rect_{cam}")
            if not in_frame_range(i, frames, self.stride, frame_range):
                continue
            ok = all(i + o * self.stride in d.frames[c] for c in cams for o in need)
            if not ok:
                dropped += 1
                continue
            key = (name, i, cam)
            if key in seen:
                continue
            seen.add(key)
            items.append(key)
        if dropped:
            log.info("KITTI raw: %d split entries skipped (neighbour frame or right image missing)", dropped)
        if static_threshold is not None and frames >= 2:
            keep = np.ones(len(items), bool)
            groups: Dict[Tuple[str, str], List[int]] = {}
            for k, (name, i, cam) in enumerate(items):
                groups.setdefault((name, cam), []).append(k)
            for (name, cam), ks in groups.items():
                fr = self.drives[name].frames[cam]
                scores = motion_scores(lambda idx, fr=fr: read_image(fr[idx]),
                                       [(items[k][1], items[k][1] + self.stride) for k in ks], static_method)
                keep[ks] = scores >= static_threshold
            log.info("KITTI raw: static-frame filter dropped %d of %d samples", len(items) - sum(keep), len(items))
            items = [it for it, k in zip(items, keep) if k]
        if not items and stereo and not any(d.frames.get(d.right) for d in self.drives.values()):
            raise InputError(f"{root}: stereo training needs the right camera (image_03/data or image_01/data) "
                             "but no drive has it: these are monocular drives")
        if not items:
            raise InputError(f"{root}: no training samples (check the split file, frames={frames}, stride={stride})")
        self.items = items
        steps = [Resize(size)] if size is not None else []
        if transform is not None:
            steps.append(transform)
        self.transform = Compose(steps) if steps else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict:
        if not 0 <= k < len(self.items):
            raise IndexError(k)
        name, i, cam = self.items[k]
        d, s = self.drives[name], self.stride
        fr = d.frames[cam]
        images = {"image": read_image(fr[i])}
        if self.frames >= 2:
            images["image_next"] = read_image(fr[i + s])
        if self.frames == 3:
            images["image_prev"] = read_image(fr[i - s])
        baseline = None
        if self.stereo:
            rf = d.frames[d.right]
            images["image_right"] = read_image(rf[i])
            if self.frames >= 2:
                images["image_next_right"] = read_image(rf[i + s])
            if self.frames == 3:
                images["image_prev_right"] = read_image(rf[i - s])
            baseline = d.baseline
            if not baseline > 0:
                raise InputError(f"{d.folder.parent / 'calib_cam_to_cam.txt'}: non-positive stereo baseline")
        shapes = {v.shape[:2] for v in images.values()}
        if len(shapes) > 1:
            raise InputError(f"{d.folder}: frames around {i} have different sizes {sorted(shapes)}")
        return make_sample(images, d.K(cam), f"{name}/{i}", baseline=baseline, transform=self.transform)
