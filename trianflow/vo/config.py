"""Settings and results of the VO: :class:`VOConfig`, the per-frame :class:`FrameInfo` (a row of
``frames.csv``), :class:`VOResult` and the DIS preset the VO picks for a frame size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

import numpy as np

__all__ = ["STATUSES", "VOConfig", "FrameInfo", "VOResult", "resolve_dis_preset", "config_dict", "validate_config"]

STATUSES = ("first", "ok", "ok_const_scale", "static", "rotation", "pnp", "const_vel", "unreadable")


@dataclass
class VOConfig:
    """Settings of the VO loop (defaults are the documented ones)."""

    flow: str = "dis"  # "dis" or "network"
    dis_preset: str = "auto"  # auto: "balanced" ("fast" with refine="ba") for images >= 960 px wide, else "medium"
    num_samples: int = 6000
    top_ratio: float = 0.2
    score_stride: int = 0  # score / select on every n-th pixel, flows read at full resolution; 0 = auto: 4 for
    # refine="none" on frames >= 960 px wide (the fast mode), else 2
    ransac_backend: str = "opencv"
    ransac_threshold: float = 1.0  # px, Sampson
    ransac_confidence: float = 0.999
    ransac_max_iters: int = 1000
    refine_iters: int = 10
    lo_rounds: int = 2
    min_inliers: int = 50
    static_flow_px: float = 0.5
    min_parallax_px: float = 1.0
    min_parallax_rel: float = 0.03  # ... and at least this fraction of the median flow
    min_tri_angle_deg: float = 0.1
    max_reproj_px: float = 2.0
    scale_method: str = "ransac"
    min_shared: int = 20
    pnp_min_inliers: int = 15
    stereo: bool = False
    seed: int = 0
    device: str = "cpu"
    torch_threads: int = 1  # small-tensor geometry is fastest single-threaded; 0 keeps torch's default
    threads: int = 0  # thread budget (--threads; 0: the usable cores): OpenCV's pool size; with >= 2 a worker
    # reads the next frame and computes its DIS flow and scores ahead (see trianflow.vo.pipeline)
    min_image_std: float = 2.0  # frames with less grey-level spread are skipped (const_vel, bridged)
    refine: str = "ba"  # "ba": keyframes + sliding-window bundle adjustment (trianflow.mapping); "none": pair by pair
    ba_window: int = 8  # keyframes adjusted per window (refine="ba"); 20 older ones are held fixed
    ba_refine_intrinsics: bool = False  # refine fx, fy, cx, cy in the adjustment (refine="ba")
    max_ref_hold: int = 10  # static/rotation frames matched against a held reference (0: consecutive pairs)
    hold_max_flow: float = 0.08  # ... while the next frame's median flow to it stays below this fraction of the width
    camera_height: Optional[float] = None  # metres above the ground: metric monocular scale (see geometry.ground)
    ground_scale: str = "auto"  # "auto": refine="ba" monocular runs hold the height above a visible ground constant
    ground_window: int = 41  # frames in the running median of the ground heights
    ground_flow: bool = False  # also fit the road plane to the dense flow under keyframes whose map has none
    # (--ground-flow: a rear camera; kitti_03_first400 reversed t_err 4.6 -> 1.35 %, forwards 0.53 -> 0.79 %)
    skip_unreadable: bool = True  # an unreadable frame is bridged (status "unreadable"); False: InputError
    loop: str = "auto"  # loop closure (trianflow.loop): "auto" = on with refine="ba", "off" (--no-loop)
    loop_min_gap: int = 100  # a loop pairs keyframes at least this many frames apart (the recent past is skipped)


@dataclass
class FrameInfo:
    """Per-frame record written to ``frames.csv``."""

    index: int
    timestamp: float
    status: str
    ref: int = -1  # the frame this one was matched against (the previous one, or a held reference)
    matches: int = 0
    inliers: int = 0
    triangulated: int = 0
    shared: int = 0
    scale: float = float("nan")
    rot_deg: float = 0.0
    trans: float = 0.0
    seconds: float = 0.0
    reason: str = ""
    ground_height: float = float("nan")  # camera height above the ground plane fitted here (map units, before scaling)
    scale_source: str = ""  # "ground" (a plane at this frame's keyframe set its scale) or "chained"
    loop: int = -1  # the older keyframe this keyframe closed a loop with (-1: none)


@dataclass
class VOResult:
    """Output of :func:`run_vo`: camera-to-world poses (first = identity) and per-frame info."""

    poses: np.ndarray  # (N,4,4) camera-to-world
    timestamps: np.ndarray
    frames: List[FrameInfo]
    K: np.ndarray
    config: VOConfig
    timings: dict = field(default_factory=dict)
    points: Optional[dict] = None  # frame (M,), xyz (M,3) world, xy (M,2) pixel in that frame, rgb (M,3)
    mapping: Optional[dict] = None  # refine="ba": {"summary": dict, "map": LocalMapper.map_points()}
    ground: Optional[dict] = None  # ground-plane scale: mode, camera_height, keyframes evaluated, planes found
    interrupted: Optional[str] = None  # why the run stopped early (e.g. "SIGTERM"); frames holds those done
    warnings: List[str] = field(default_factory=list)  # user-facing warnings (unreadable frames, no ground, ...)
    loops: Optional[dict] = None  # loop closure: proposals, verified, accepted, the loops (frame pairs, inliers,
    # correction), seconds; None when it was off

    def status_counts(self) -> dict:
        out: dict = {}
        for f in self.frames:
            out[f.status] = out.get(f.status, 0) + 1
        return out


def resolve_dis_preset(preset: str, size, refine: str = "none") -> str:
    """``"auto"`` -> ``"fast"`` for frames at least 960 px wide, ``"medium"`` below (DIS "fast" and
    "balanced" estimate at 1/4 resolution, which is accurate enough on KITTI-sized frames but not on small
    ones; see :mod:`trianflow.flow_backends` for the measurements). With ``refine="ba"`` (the default) the
    bundle adjustment removes the drift the denser "balanced" patches would: on the KITTI snippet "fast" is
    quicker (6.7 vs 5.0 frames/s) and as accurate (ATE 0.021 vs 0.023 m). ``refine="none"`` is the fast
    mode since the bundle adjustment became the default: "fast" with selection on every 4th pixel takes
    KITTI 03 from 13.4 to 22 frames/s (t_err 9.2 -> 11.9 %; pass ``"balanced"`` for the former)."""
    if preset != "auto":
        return preset
    if size[1] >= 960:
        return "fast"
    return "medium"


def config_dict(cfg: VOConfig) -> dict:
    return asdict(cfg)


def validate_config(cfg: VOConfig) -> None:
    """Raise :class:`~trianflow.errors.InputError` for settings the VO cannot run with."""
    from trianflow.errors import InputError

    if cfg.refine not in ("none", "ba"):
        raise InputError(f"VOConfig.refine={cfg.refine!r}: use 'none' or 'ba'")
    if cfg.loop not in ("auto", "off"):
        raise InputError(f"VOConfig.loop={cfg.loop!r}: use 'auto' or 'off'")
    if cfg.ground_scale not in ("auto", "off"):
        raise InputError(f"VOConfig.ground_scale={cfg.ground_scale!r}: use 'auto' or 'off'")
    h = cfg.camera_height
    if h is not None and not (np.isfinite(h) and h > 0):
        raise InputError(f"camera height {h!r}: give the height of the camera above the ground in metres (> 0)")
    if h is not None and cfg.stereo:
        raise InputError("--camera-height and --stereo both set the metric scale: give only one")
