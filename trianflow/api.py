"""The stable Python surface of trianflow (re-exported at the top level: ``trianflow.run_vo``, ...).

Every function here checks its inputs the way the CLI does and raises
:class:`~trianflow.errors.InputError` (one clear sentence naming the bad input) for a user
mistake, never a traceback from deep inside. Nothing here prints.

Example (see README ``## Use from Python``)::

    import trianflow as tf

    seq = tf.open_sequence("../shared/data/kitti_odom_straight")
    result = tf.run_vo(seq, tf.VOConfig(refine="none"))
    metrics = tf.evaluate_trajectory(result, seq.gt_poses)
    metrics.ape_rmse  # metres, Sim3-aligned
"""

from __future__ import annotations

import math
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from trianflow.errors import InputError

PathLike = Union[str, os.PathLike]

__all__ = ["open_sequence", "run_vo", "evaluate_trajectory", "estimate_two_view", "load_flow_model",
           "load_depth_model", "intrinsics_from_fov", "check_fov", "save_run", "load_run"]

_CHOICES = {
    "ransac_backend": ("opencv", "pycolmap", "torch"),
    "dis_preset": ("auto", "ultrafast", "fast", "balanced", "medium"),
    "refine": ("none", "ba"),
    "flow": ("dis", "network"),
    "ground_scale": ("auto", "off"),
    "loop": ("auto", "off"),
}


def check_fov(fov_deg: float) -> float:
    """``fov_deg`` as a float strictly between 10 and 170 degrees (:class:`InputError` otherwise)."""
    try:
        f = float(fov_deg)
    except (TypeError, ValueError):
        raise InputError(f"--fov {fov_deg!r}: give the horizontal field of view in degrees, e.g. 90") from None
    if not (10.0 < f < 170.0):
        raise InputError(f"--fov {fov_deg}: the horizontal field of view must lie between 10 and 170 degrees "
                         "(exclusive); e.g. 60-90 for a phone, 90-130 for a dash-cam")
    return f


def intrinsics_from_fov(fov_deg: float, size: Sequence[int]) -> np.ndarray:
    """Pinhole ``K (3,3)`` float64 of a camera with horizontal field of view ``fov_deg`` and frames
    of ``size = (H, W)``: ``fx = fy = (W/2) / tan(fov/2)``, ``cx = (W-1)/2``, ``cy = (H-1)/2``
    (pixel centres at integer coordinates). Raises :class:`InputError` outside (10, 170) degrees."""
    f = check_fov(fov_deg)
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise InputError(f"image size {tuple(size)}: give (H, W) > 0")
    fx = (w / 2.0) / math.tan(math.radians(f) / 2.0)
    return np.array([[fx, 0.0, (w - 1) / 2.0], [0.0, fx, (h - 1) / 2.0], [0.0, 0.0, 1.0]])


def open_sequence(path: PathLike, intrinsics: Union[str, Sequence[float], np.ndarray, None] = None, *,
                  fov: Optional[float] = None, stereo: bool = False, max_frames: Optional[int] = None,
                  fps: Optional[float] = None):
    """Open frames for VO: a KITTI odometry / TUM RGB-D / plain image folder or a video file.

    Args:
        path: the sequence folder or video file.
        intrinsics: ``"fx,fy,cx,cy"``, 4 numbers or a ``(3,3)`` K; overrides calibration files.
            Needed for image folders without a calib file and for videos, unless ``fov`` is given.
        fov: horizontal field of view in degrees instead of ``intrinsics`` (see
            :func:`intrinsics_from_fov`).
        stereo: use the right camera (KITTI) for metric scale.
        max_frames: use only the first ``max_frames`` frames (at least 2).
        fps: frame rate for the timestamps of image folders and videos.

    Returns:
        a :class:`trianflow.data.FrameSequence` (``K``, ``size`` (H, W), ``timestamps``,
        ``gt_poses`` (N,4,4) or None, ``read(i)`` -> ``(H,W,3)`` uint8 RGB).

    Raises:
        InputError: missing path, no frames, unreadable calibration, missing intrinsics,
            ``fov`` together with ``intrinsics`` or outside (10, 170) degrees, ...
    """
    from trianflow.data import open_sequence as _open

    if max_frames is not None and int(max_frames) < 2:
        raise InputError(f"max_frames={max_frames}: visual odometry needs at least 2 frames")
    if fov is None:
        return _open(path, intrinsics=intrinsics, stereo=stereo, max_frames=max_frames, fps=fps)
    check_fov(fov)
    if intrinsics is not None:
        raise InputError("--fov and --intrinsics both give the camera intrinsics: give only one")
    # open once with a placeholder K to learn the frame size, then with the K of the field of view
    # (readers that undistort build their maps from K at opening time)
    probe = _open(path, intrinsics=np.eye(3), stereo=stereo, max_frames=2, fps=fps)
    K = intrinsics_from_fov(fov, probe.size)
    return _open(path, intrinsics=K, stereo=stereo, max_frames=max_frames, fps=fps)


def _config(config: Any, overrides: dict):
    from trianflow.vo import VOConfig

    if config is None:
        cfg = VOConfig()
    elif isinstance(config, VOConfig):
        cfg = config
    elif isinstance(config, dict):
        overrides = {**config, **overrides}
        cfg = VOConfig()
    else:
        raise InputError(f"config must be a VOConfig or a dict, not {type(config).__name__}")
    names = {f.name for f in fields(VOConfig)}
    bad = sorted(set(overrides) - names)
    if bad:
        import difflib

        hint = difflib.get_close_matches(bad[0], sorted(names), n=1)
        raise InputError(f"unknown VO option {bad[0]!r}" + (f"; did you mean {hint[0]!r}?" if hint else
                                                           f"; valid options: {', '.join(sorted(names))}"))
    cfg = replace(cfg, **overrides) if overrides else cfg
    for k, allowed in _CHOICES.items():
        if getattr(cfg, k) not in allowed:
            raise InputError(f"VOConfig.{k}={getattr(cfg, k)!r}: use one of {', '.join(allowed)}")
    if cfg.num_samples < 8:
        raise InputError(f"VOConfig.num_samples={cfg.num_samples}: need at least 8 correspondences per pair")
    if cfg.ba_window < 1:
        raise InputError(f"VOConfig.ba_window={cfg.ba_window}: give at least 1 keyframe")
    if str(cfg.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"device {cfg.device!r} requested but torch.cuda.is_available() is False")
    return cfg


def run_vo(sequence, config=None, *, flow: Union[PathLike, Callable, None] = None,
           depth: Union[PathLike, Callable, None] = None, progress: Optional[Callable] = None,
           observer: Optional[Callable] = None, **options):
    """Visual odometry over a sequence.

    Args:
        sequence: a :class:`~trianflow.data.FrameSequence` (from :func:`open_sequence`) or a path
            (opened with :func:`open_sequence` and no options).
        config: a :class:`~trianflow.vo.VOConfig`, a dict of its fields, or None (the
            defaults: keyframes + bundle adjustment). ``**options`` override single fields,
            e.g. ``run_vo(seq, refine="none")``.
        flow: a FlowNet checkpoint path or a callable ``(img1, img2) -> (fwd, bwd)`` flows
            ``(H,W,2)``; default OpenCV DIS.
        depth: a DepthNet checkpoint path or a callable ``img -> (H,W)`` depth; each pair's scale
            then comes from the predicted depth.
        progress: ``(FrameInfo) -> None`` after every frame.
        observer: ``(index, image, pose_c2w (4,4), FrameInfo, VisualOdometry) -> None`` after
            every frame (e.g. a :class:`trianflow.viz.rerun_log.VORecorder`).

    Returns:
        :class:`~trianflow.vo.VOResult`: ``poses (N,4,4)`` camera-to-world (first =
        identity), ``frames`` (per-frame status), ``K``, ``timings``, ``points``, ``mapping``.

    Raises:
        InputError: unknown or invalid options, unreadable sequence, too few frames, ...
    """
    from trianflow.vo import run_vo as _run_vo

    cfg = _config(config, options)
    seq = open_sequence(sequence) if isinstance(sequence, (str, os.PathLike)) else sequence
    if not all(hasattr(seq, a) for a in ("K", "size", "timestamps", "read")):
        raise InputError(f"sequence must be a path or a FrameSequence (open_sequence), not {type(seq).__name__}")
    if cfg.stereo and not getattr(seq, "has_stereo", False):
        raise InputError("stereo=True but the sequence has no right camera: open it with open_sequence(..., stereo=True)")
    flow_fn = load_flow_model(flow, device=cfg.device) if isinstance(flow, (str, os.PathLike)) else flow
    if flow_fn is not None:
        cfg = replace(cfg, flow="network")
    depth_fn = load_depth_model(depth, device=cfg.device) if isinstance(depth, (str, os.PathLike)) else depth
    return _run_vo(seq, cfg, flow_fn=flow_fn, depth_fn=depth_fn, progress=progress, observer=observer)


def evaluate_trajectory(estimate, ground_truth, align: str = "sim3", **kwargs):
    """APE / RPE (evo) and the KITTI drift of an estimate against ground truth.

    Args:
        estimate: a :class:`~trianflow.vo.VOResult`, an ``(N,4,4)`` camera-to-world array, a
            KITTI/TUM file or a run directory.
        ground_truth: ``(M,4,4)`` array (the first N poses are used for an array estimate), a
            KITTI/TUM file, or a :class:`~trianflow.data.FrameSequence` with ``gt_poses``.
        align: ``"sim3"`` (monocular), ``"se3"`` (metric) or ``"none"``.
        **kwargs: see :func:`trianflow.evaluation.trajectory.evaluate_trajectory` (``rpe_delta``, ...).

    Returns:
        :class:`~trianflow.evaluation.trajectory.TrajectoryMetrics` (``ape_rmse``, ``rpe_rot_rmse``,
        ``kitti_t_err``, ..., ``to_dict()``).

    Raises:
        InputError: unreadable files, no ground truth, too few poses, unknown options.
    """
    from trianflow.evaluation.trajectory import evaluate_trajectory as _evaluate

    est = estimate
    if hasattr(est, "poses") and hasattr(est, "frames"):  # VOResult
        est = est.poses
    elif isinstance(est, (str, os.PathLike)) and Path(est).is_dir():
        est = Path(est) / "poses.txt"
    gt = ground_truth
    if hasattr(gt, "gt_poses") and hasattr(gt, "read"):  # FrameSequence
        if gt.gt_poses is None:
            raise InputError(f"{gt.source}: the sequence has no ground-truth poses")
        gt = gt.gt_poses
    if gt is None:
        raise InputError("no ground truth given")
    if isinstance(est, np.ndarray) and isinstance(gt, np.ndarray):
        if est.ndim != 3 or est.shape[1:] != (4, 4) or gt.ndim != 3 or gt.shape[1:] != (4, 4):
            raise InputError(f"poses must be (N,4,4) arrays, got {est.shape} and {gt.shape}")
        if len(gt) < len(est):
            raise InputError(f"the estimate has {len(est)} poses but the ground truth only {len(gt)}")
        gt = gt[: len(est)]
    try:
        return _evaluate(est, gt, align=align, **kwargs)
    except TypeError as exc:
        raise InputError(f"evaluate_trajectory: {exc}") from None


def _image(x, what: str) -> np.ndarray:
    if isinstance(x, (str, os.PathLike)):
        from trianflow.data.image_folder import read_image

        p = Path(x)
        if not p.is_file():
            raise InputError(f"{p}: no such image file")
        x = read_image(p)  # RGB, or (H,W) grey (repeated below)
    a = np.asarray(x)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InputError(f"{what}: give an (H,W,3) uint8 RGB image or an image path, got {a.dtype} {a.shape}")
    return a


def estimate_two_view(image1, image2, K=None, *, fov: Optional[float] = None, **kwargs):
    """Relative pose of two images: ``X2 = R X1 + t`` (t unit length), inliers, triangulated points.

    Args:
        image1, image2: ``(H,W,3)`` uint8 RGB arrays or image paths (same size).
        K: ``(3,3)`` intrinsics, ``"fx,fy,cx,cy"`` or 4 numbers; or ``fov`` (degrees) instead.
        **kwargs: see :func:`trianflow.two_view.estimate_two_view` (``backend``, ``num_samples``, ...).

    Returns:
        :class:`trianflow.two_view.TwoViewEstimate` (``R``, ``t``, ``inliers``, ``points``, ``status``).
    """
    from trianflow.data.sequence import _as_K
    from trianflow.two_view import estimate_two_view as _two_view

    a, b = _image(image1, "image1"), _image(image2, "image2")
    if a.shape != b.shape:
        raise InputError(f"the images differ in size: {a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}")
    if min(a.shape[:2]) < 16:
        raise InputError(f"images of {a.shape[1]}x{a.shape[0]} px are too small; use at least 16x16 px")
    if (K is None) == (fov is None):
        raise InputError("give the intrinsics K or the horizontal field of view fov (one of them)")
    Km = intrinsics_from_fov(fov, a.shape[:2]) if fov is not None else _as_K(K)
    return _two_view(a, b, Km, **kwargs)


def load_flow_model(checkpoint: PathLike, device: str = "cpu", size: Optional[Sequence[int]] = None) -> Callable:
    """A FlowNet from a training checkpoint as a callable ``(img1, img2) -> (fwd, bwd)`` on
    ``(H,W,3)`` uint8 frames giving ``(H,W,2)`` float32 flows (usable as ``run_vo(flow=...)``).
    Raises :class:`InputError` for a missing or incompatible checkpoint."""
    from trianflow.inference import load_flow_fn

    _check_file(checkpoint, "flow checkpoint")
    return load_flow_fn(checkpoint, device=device, size=size)


def load_depth_model(checkpoint: PathLike, device: str = "cpu", size: Optional[Sequence[int]] = None) -> Callable:
    """A DepthNet from a training checkpoint as a callable ``img (H,W,3) uint8 -> (H,W)`` float32
    depth (up to scale for monocular networks; usable as ``run_vo(depth=...)``).
    Raises :class:`InputError` for a missing or incompatible checkpoint."""
    from trianflow.inference import load_depth_fn

    _check_file(checkpoint, "depth checkpoint")
    return load_depth_fn(checkpoint, device=device, size=size)


def _check_file(path, what: str) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{what}: give a file path, not {type(path).__name__}")
    if not Path(path).is_file():
        raise InputError(f"{path}: no such {what}")


def save_run(run_dir: PathLike, result, sequence, extra: Optional[dict] = None) -> Path:
    """Write a :class:`~trianflow.vo.VOResult` as a run directory (what ``trianflow vo`` writes)."""
    from trianflow.run_dir import save_run as _save

    return _save(run_dir, result, sequence, extra=extra)


def load_run(run_dir: PathLike):
    """Read a run directory back (:class:`~trianflow.run_dir.RunData`); InputError if it is not one."""
    from trianflow.run_dir import load_run as _load

    return _load(run_dir)
