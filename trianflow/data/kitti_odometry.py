"""KITTI odometry sequences: the VO reader and a training dataset of frame pairs/triplets.

Layout of a sequence folder (the official benchmark's ``<root>/sequences/NN/``)::

    calib.txt      P0: .. P3: (3x4 projection matrices, 12 numbers each; Tr: optional)
    image_2/       left colour images 000000.png ...   (preferred)
    image_3/       right colour images                  (stereo with P3)
    image_0/       left grey images                     (used when image_2/ is absent)
    image_1/       right grey images                    (stereo with P1)
    times.txt      one timestamp (s) per frame          (optional: else index * 0.1 s)
    poses.txt      ground truth, 12 numbers per line    (optional; or <root>/poses/NN.txt)

``calib.txt`` may also use the KITTI-raw names ``P_rect_00 .. P_rect_03`` (mapped to P0..P3).
The stereo baseline is ``(P_left[0,3] - P_right[0,3]) / fx`` (metres, right camera at +x).
Ground-truth poses are camera-to-world ``T_w_cam`` as given in the file (not renormalised).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from trianflow.data.image_folder import check_png_sizes, list_images, read_image, read_sized_image
from trianflow.data.sequence import FrameSequence, register_reader
from trianflow.errors import InputError

log = logging.getLogger(__name__)

KITTI_FPS = 10.0
_PROJ_KEY = re.compile(r"^(P[0-3]|P_rect_0[0-3])$")
_RIGID_KEY = re.compile(r"^(Tr|Tr_velo_to_cam|Tr_imu_to_velo|Tr_velo_cam)$")


def parse_calib(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    """Parse a KITTI calibration file into ``{key: array}``.

    Lines are ``KEY: numbers`` (the colon is optional). Projection matrices ``P0..P3`` and
    ``P_rect_00..P_rect_03`` (stored as ``P0..P3``) must have 12 numbers and are returned as
    ``(3,4)``; ``Tr`` (also ``Tr_velo_to_cam``) as ``(4,4)``; other numeric keys as flat arrays;
    non-numeric values of other keys (e.g. ``calib_time``) are ignored.

    Raises:
        InputError: naming the file and line when a line cannot be parsed.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read calibration file ({exc.strerror})") from None
    out: Dict[str, np.ndarray] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:?\s*(.*)$", line)
        if not m:
            raise InputError(f"{path}:{lineno}: cannot parse calibration line {line[:60]!r} "
                             "(expected 'P0: <12 numbers>')")
        key, rest = m.group(1), m.group(2)
        try:
            vals = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            vals = None
        is_proj, is_rigid = bool(_PROJ_KEY.match(key)), bool(_RIGID_KEY.match(key))
        if vals is None or not np.all(np.isfinite(vals)):
            if is_proj or is_rigid:
                raise InputError(f"{path}:{lineno}: cannot parse the numbers of {key} (expected 12 numbers)")
            continue
        if is_proj or is_rigid:
            if vals.size != 12:
                raise InputError(f"{path}:{lineno}: {key} has {vals.size} numbers, expected 12 (a 3x4 matrix)")
            if is_proj:
                name = "P" + key[-1] if key.startswith("P_rect") else key
                P = vals.reshape(3, 4)
                if P[0, 0] <= 0 or P[1, 1] <= 0:
                    raise InputError(f"{path}:{lineno}: {key} has a non-positive focal length")
                out[name] = P
            else:
                T = np.eye(4)
                T[:3, :4] = vals.reshape(3, 4)
                out["Tr" if key in ("Tr", "Tr_velo_cam") else key] = T
        else:
            out[key] = vals
    return out


def read_kitti_poses(path: Union[str, Path]) -> np.ndarray:
    """Read a KITTI pose file (12 numbers per line, row-major 3x4) into ``(N,4,4)`` float64.

    Raises:
        InputError: naming the file and line of a malformed line.
    """
    path = Path(path)
    poses = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read pose file ({exc.strerror})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            vals = np.array([float(v) for v in line.split()], dtype=np.float64)
        except ValueError:
            raise InputError(f"{path}:{lineno}: cannot parse pose line (expected 12 numbers)") from None
        if vals.size != 12 or not np.all(np.isfinite(vals)):
            raise InputError(f"{path}:{lineno}: pose line has {vals.size} numbers, expected 12 finite numbers")
        T = np.eye(4)
        T[:3, :4] = vals.reshape(3, 4)
        poses.append(T)
    return np.array(poses, dtype=np.float64).reshape(-1, 4, 4)


def read_times(path: Union[str, Path]) -> np.ndarray:
    """Read a ``times.txt`` (one number per line) into ``(N,)`` float64; InputError naming the line."""
    path = Path(path)
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            out.append(float(s.split()[0]))
        except ValueError:
            raise InputError(f"{path}:{lineno}: cannot parse timestamp {s[:40]!r}") from None
    return np.array(out, dtype=np.float64)


def is_kitti_odometry(path: Union[str, Path]) -> bool:
    """True for a folder with ``calib.txt`` and ``image_2/`` or ``image_0/``."""
    p = Path(path)
    return p.is_dir() and (p / "calib.txt").is_file() and ((p / "image_2").is_dir() or (p / "image_0").is_dir())


def find_ground_truth(folder: Union[str, Path]) -> Optional[Path]:
    """``poses.txt`` in the folder, or ``<root>/poses/NN.txt`` for ``<root>/sequences/NN``; else None."""
    folder = Path(folder)
    if (folder / "poses.txt").is_file():
        return folder / "poses.txt"
    f = folder.resolve()
    if f.parent.name == "sequences":
        cand = f.parent.parent / "poses" / f"{f.name}.txt"
        if cand.is_file():
            return cand
    return None


@dataclass
class KittiOdometrySequence(FrameSequence):
    """A KITTI odometry sequence; frames are read lazily from ``files`` (``right_files`` for stereo)."""

    files: List[Path] = field(default_factory=list)
    right_files: Optional[List[Path]] = None

    def _read(self, i: int) -> np.ndarray:
        return read_sized_image(self.files[i], self.size)

    def _read_right(self, i: int) -> np.ndarray:
        return read_sized_image(self.right_files[i], self.size)


KITTI_CAMERAS = ("auto", "color", "gray")


def open_kitti_odometry(path: Union[str, Path], stereo: bool = False, max_frames: Optional[int] = None,
                        K: Optional[np.ndarray] = None, camera: str = "auto") -> KittiOdometrySequence:
    """Open a KITTI odometry sequence folder.

    Args:
        path: the sequence folder (``calib.txt`` + ``image_2/`` or ``image_0/``).
        stereo: also open the right camera (``image_3/`` + P3, else ``image_1/`` + P1) and set
            ``baseline``; without it the sequence is monocular.
        max_frames: keep only the first ``max_frames`` frames.
        K: ``(3,3)`` intrinsics overriding ``calib.txt`` (the baseline still comes from it).
        camera: ``auto`` (colour ``image_2`` when present, else grey ``image_0``), ``color`` or
            ``gray`` (InputError when that camera's folder is missing).
    Returns:
        a :class:`KittiOdometrySequence` (kind ``"kitti_odometry"``) with ``timestamps (N,)`` and,
        when a pose file exists, ``gt_poses (N,4,4)`` camera-to-world.
    Raises:
        InputError: missing/unparseable calib, missing images, mismatched stereo/pose/time files.
    """
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: not a folder (give a KITTI odometry sequence folder)")
    calib_path = p / "calib.txt"
    if not calib_path.is_file():
        raise InputError(f"{p}: no calib.txt (a KITTI odometry sequence folder needs it)")
    calib = parse_calib(calib_path)
    if camera not in KITTI_CAMERAS:
        raise InputError(f"camera={camera!r}: use one of {', '.join(KITTI_CAMERAS)}")
    pairs = [("image_2", "image_3", "P2", "P3"), ("image_0", "image_1", "P0", "P1")]
    if camera != "auto":
        pairs = pairs[:1] if camera == "color" else pairs[1:]
        if not (p / pairs[0][0]).is_dir():
            raise InputError(f"{p}: no {pairs[0][0]}/ folder for camera={camera}")
    chosen = None
    if stereo:  # prefer a pair that has both cameras on disk
        for pr in pairs:
            if (p / pr[0]).is_dir() and (p / pr[1]).is_dir():
                chosen = pr
                break
    if chosen is None:
        for pr in pairs:
            if (p / pr[0]).is_dir():
                chosen = pr
                break
    if chosen is None:
        raise InputError(f"{p}: no image_2/ or image_0/ folder")  # pragma: no cover - is_dir checked above
    left_dir, right_dir, left_key, right_key = chosen
    files = list_images(p / left_dir)
    if not files:
        raise InputError(f"{p / left_dir}: no images found")
    if max_frames is not None:
        files = files[: max(int(max_frames), 0)]
    P_left = calib.get(left_key)
    if K is None:
        if P_left is None:
            raise InputError(f"{calib_path}: no {left_key} line for {left_dir}/ (add '{left_key}: <12 numbers>' "
                             "or pass --intrinsics)")
        K = np.ascontiguousarray(P_left[:, :3])
    K = np.asarray(K, dtype=np.float64)

    baseline, right_files = None, None
    if stereo and (p / right_dir).is_dir():
        P_right = calib.get(right_key)
        if P_left is None or P_right is None:
            raise InputError(f"{calib_path}: stereo needs {left_key} and {right_key} lines")
        baseline = float((P_left[0, 3] - P_right[0, 3]) / P_left[0, 0])
        if not baseline > 0:
            raise InputError(f"{calib_path}: baseline from {left_key}/{right_key} is {baseline:.4f} m; "
                             f"the right camera must be at +x ({right_key}[0,3] < {left_key}[0,3])")
        right_all = {f.name: f for f in list_images(p / right_dir)}
        missing = [f.name for f in files if f.name not in right_all]
        if missing:
            raise InputError(f"{p / right_dir}: missing right image {missing[0]} "
                             f"({len(missing)} of {len(files)} left images have no right image)")
        right_files = [right_all[f.name] for f in files]

    n = len(files)
    if (p / "times.txt").is_file():
        ts = read_times(p / "times.txt")
        if len(ts) < n:
            raise InputError(f"{p / 'times.txt'}: {len(ts)} timestamps for {n} images (one line per image)")
        ts = ts[:n]
    else:
        ts = np.arange(n, dtype=np.float64) / KITTI_FPS

    gt = None
    gt_path = find_ground_truth(p)
    if gt_path is not None:
        gt = read_kitti_poses(gt_path)
        if len(gt) < n:
            raise InputError(f"{gt_path}: {len(gt)} poses for {n} images (one pose line per image)")
        gt = gt[:n]

    first = read_image(files[0]) if files else None
    size = tuple(first.shape[:2]) if first is not None else (0, 0)
    check_png_sizes(files + (right_files or []), size)
    return KittiOdometrySequence(
        name=p.resolve().name, source=str(p), K=K, timestamps=ts, size=size, baseline=baseline,
        gt_poses=gt, kind="kitti_odometry",
        meta={"calib": {k: v for k, v in calib.items()}, "camera": left_dir, "gt_file": str(gt_path) if gt_path else None},
        files=files, right_files=right_files,
    )


register_reader("kitti_odometry", is_kitti_odometry,
                lambda p, K=None, stereo=False, max_frames=None, **_: open_kitti_odometry(p, stereo=stereo,
                                                                                      max_frames=max_frames, K=K),
                priority=20)


def find_kitti_sequences(root: Union[str, Path], sequences: Optional[Sequence] = None) -> List[Path]:
    """Sequence folders under ``root``.

    ``root`` may itself be a sequence folder, the official ``<root>`` with ``sequences/NN``, or a
    folder whose subfolders are sequences. ``sequences`` (names or ints, e.g. ``["00", 9]``)
    selects among them. Raises InputError when nothing (or a named sequence) is not found.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such folder (give a KITTI odometry root or sequence folder)")
    if is_kitti_odometry(root):
        return [root]
    base = root / "sequences" if (root / "sequences").is_dir() else root
    found = {d.name: d for d in sorted(base.iterdir()) if is_kitti_odometry(d)} if base.is_dir() else {}
    if sequences is not None:
        out = []
        for s in sequences:
            name = f"{s:02d}" if isinstance(s, int) else str(s)
            if name not in found:
                raise InputError(f"{base}: sequence {name} not found (have: {', '.join(found) or 'none'})")
            out.append(found[name])
        return out
    if not found:
        raise InputError(f"{root}: no KITTI odometry sequences found (folders with calib.txt and image_2/ or image_0/)")
    return list(found.values())


class KittiOdometryDataset(torch.utils.data.ConcatDataset):
    """Training samples (pairs or triplets) from one or more KITTI odometry sequences.

    A concatenation of :class:`~trianflow.data.sequences_dataset.SequencePairsDataset`, one per
    sequence; see there for the sample keys (``image``, ``image_next`` (``image_prev``), ``*_aug``,
    ``K``, ``pose_gt`` when every used sequence has ground truth (so any batch collates),
    ``image_right``/``baseline`` with ``stereo``).

    Args:
        root: sequence folder, ``<root>`` with ``sequences/NN``, or a folder of sequences.
        sequences: names/ints to use (default: all found).
        frames: 1, 2 or 3; stride: frame gap; size: ``(H,W)`` output size (None keeps it).
        stereo: add right images and baseline; transform: sample-dict transform after resizing
            (e.g. :func:`trianflow.data.transforms.default_train_transform` with ``size=None``).
        static_threshold, static_method: drop near-static pairs (see
            :func:`trianflow.data.sequences_dataset.frame_motion`).
        max_frames: use only the first frames of each sequence.
        frame_range: ``(start, end)``: only samples whose frames lie in ``[start, end)`` of each sequence.
        camera: ``auto``, ``color`` or ``gray`` (see :func:`open_kitti_odometry`).

    Sequences may differ in calibration and size: each sample carries its own ``K``, scaled with
    the resize to ``size`` (give a ``size`` when they differ, so that batches collate).
    """

    def __init__(self, root, sequences: Optional[Sequence] = None, frames: int = 2, stride: int = 1,
                 size: Optional[Tuple[int, int]] = (256, 832), stereo: bool = False, transform=None,
                 static_threshold: Optional[float] = None, static_method: str = "mad",
                 max_frames: Optional[int] = None, frame_range: Optional[Tuple[int, int]] = None,
                 camera: str = "auto"):
        from trianflow.data.sequences_dataset import SequencePairsDataset

        folders = find_kitti_sequences(root, sequences)
        seqs = []
        for f in folders:
            seq = open_kitti_odometry(f, stereo=stereo, max_frames=max_frames, camera=camera)
            if stereo and not seq.has_stereo:
                raise InputError(f"{f}: stereo training needs a right camera ({seq.meta['camera']}/ has no "
                                 f"{'image_3' if seq.meta['camera'] == 'image_2' else 'image_1'}/ folder): "
                                 "this is a monocular sequence")
            seqs.append(seq)
        # pose_gt only when every sequence has it, so that any batch collates
        with_gt = all(s.gt_poses is not None for s in seqs)
        if not with_gt and any(s.gt_poses is not None for s in seqs):
            log.info("some sequences have no ground truth: samples carry no pose_gt")
        parts = []
        for seq in seqs:
            ds = SequencePairsDataset(seq, frames=frames, stride=stride, size=size, stereo=stereo,
                                      transform=transform, static_threshold=static_threshold,
                                      static_method=static_method, with_gt=with_gt, frame_range=frame_range)
            if len(ds):
                parts.append(ds)
        if not parts:
            rng = f", frame_range={list(frame_range)}" if frame_range is not None else ""
            raise InputError(f"{root}: no training samples (sequences too short for frames={frames}, "
                             f"stride={stride}{rng})")
        if size is None and len({s.size for s in seqs}) > 1:
            raise InputError(f"{root}: the sequences have different image sizes "
                             f"({', '.join(sorted({f'{s.size[1]}x{s.size[0]}' for s in seqs}))}): give data.size")
        self.sequences = [p.seq for p in parts]
        super().__init__(parts)
