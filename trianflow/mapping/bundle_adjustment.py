"""One bundle adjustment with pycolmap (Ceres): the wrapper the keyframe mapper calls.

- :func:`bundle_adjust`: refine given poses, points and observations, some poses held constant,
  intrinsics fixed (default) or refined, robust loss (:class:`BAOptions` / :class:`BAResult`);
- conversions between our ``(4,4)`` matrices and ``pycolmap.Rigid3d``.

Poses: the public API speaks camera-to-world ``(4,4)`` (like :mod:`trianflow.vo`) except
where named ``w2c``; pycolmap speaks ``cam_from_world``. Pixels: ours have centres at integers,
COLMAP's at +0.5; the conversion is done here and nowhere else. Multi-view triangulation and
reprojection errors are in :mod:`trianflow.mapping.triangulation`, the sliding-window mapper
in :mod:`trianflow.mapping.local_mapper`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from trianflow.mapping.triangulation import reprojection_errors

__all__ = [
    "BAOptions",
    "BAResult",
    "bundle_adjust",
    "rigid3d_from_matrix",
    "matrix_from_rigid3d",
    "COLMAP_PIXEL_OFFSET",
]

COLMAP_PIXEL_OFFSET = 0.5  # COLMAP pixel (centre of the top-left pixel = 0.5) = ours + 0.5


def rigid3d_from_matrix(T: np.ndarray):
    """``pycolmap.Rigid3d`` from a ``(4,4)`` or ``(3,4)`` rigid transform (rotation re-orthonormalised)."""
    import pycolmap

    T = np.asarray(T, dtype=np.float64)
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    return pycolmap.Rigid3d(np.ascontiguousarray(np.c_[R, T[:3, 3]]))


def matrix_from_rigid3d(rigid) -> np.ndarray:
    """``(4,4)`` float64 matrix of a ``pycolmap.Rigid3d``."""
    T = np.eye(4)
    T[:3, :] = rigid.matrix()
    return T


def _camera_params(K: np.ndarray) -> list:
    return [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]) + COLMAP_PIXEL_OFFSET,
            float(K[1, 2]) + COLMAP_PIXEL_OFFSET]


def _K_from_params(p) -> np.ndarray:
    return np.array([[p[0], 0, p[2] - COLMAP_PIXEL_OFFSET], [0, p[1], p[3] - COLMAP_PIXEL_OFFSET], [0, 0, 1.0]])


@dataclass
class BAOptions:
    """Options of :func:`bundle_adjust`.

    loss: ``"cauchy"``, ``"huber"``, ``"soft_l1"`` or ``"trivial"`` (squared error), with
    ``loss_scale_px``. ``refine_intrinsics`` refines fx, fy, cx, cy (PINHOLE) instead of holding
    them. ``max_iterations`` / ``function_tolerance`` bound the Ceres solve; ``num_threads``
    (``-1`` = all cores).
    """

    loss: str = "cauchy"
    loss_scale_px: float = 1.0
    max_iterations: int = 6
    function_tolerance: float = 1e-6
    gradient_tolerance: float = 1e-8
    parameter_tolerance: float = 1e-8
    refine_intrinsics: bool = False
    num_threads: int = 1


@dataclass
class BAResult:
    """Output of :func:`bundle_adjust`.

    poses_w2c: frame -> refined ``(4,4)`` world-to-camera; points: ``(P,3)`` refined;
    K: ``(3,3)`` (refined when asked); errors: ``(O,)`` final reprojection errors (px);
    initial_cost / final_cost: Ceres costs; iterations; seconds; usable: Ceres' verdict.
    """

    poses_w2c: Dict[int, np.ndarray]
    points: np.ndarray
    K: np.ndarray
    errors: np.ndarray
    initial_cost: float
    final_cost: float
    iterations: int
    seconds: float
    usable: bool


def bundle_adjust(K: np.ndarray, image_size, poses_w2c: Dict[int, np.ndarray], points: np.ndarray,
                  obs_point: np.ndarray, obs_frame: np.ndarray, obs_xy: np.ndarray,
                  constant_frames: Sequence[int] = (), options: Optional[BAOptions] = None) -> BAResult:
    """Refine poses and points by minimising the (robust) reprojection error with pycolmap.

    Args:
        K: ``(3,3)`` pinhole intrinsics (pixel centres at integers; shifted by +0.5 for COLMAP).
        image_size: ``(H, W)``.
        poses_w2c: frame -> ``(4,4)`` world-to-camera initial pose, for every observed frame.
        points: ``(P,3)`` initial world points.
        obs_point: ``(O,)`` index into ``points``; obs_frame: ``(O,)``; obs_xy: ``(O,2)`` pixels.
            Points with fewer than two observations are left out (returned unchanged).
        constant_frames: frames whose pose is held fixed (fix at least two for a monocular
            problem: they set the gauge and the scale).
        options: :class:`BAOptions`.
    Returns:
        :class:`BAResult` (inputs are not modified).
    """
    import pycolmap

    opt = options or BAOptions()
    t0 = time.perf_counter()
    obs_point = np.asarray(obs_point, dtype=np.int64)
    obs_frame = np.asarray(obs_frame, dtype=np.int64)
    obs_xy = np.asarray(obs_xy, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    H, W = int(image_size[0]), int(image_size[1])
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera(model="PINHOLE", width=W, height=H, params=_camera_params(K), camera_id=1)
    rec.add_camera_with_trivial_rig(cam)
    frames = sorted(int(f) for f in poses_w2c)
    image_id = {f: i + 1 for i, f in enumerate(frames)}
    # point2D index of every observation inside its image
    order = np.lexsort((obs_point, obs_frame))
    p2d_idx = np.empty(len(obs_point), np.int64)
    for f in frames:
        rows = order[obs_frame[order] == f]
        p2d_idx[rows] = np.arange(len(rows))
        img = pycolmap.Image(name=f"{f:06d}", keypoints=obs_xy[rows] + COLMAP_PIXEL_OFFSET, camera_id=1,
                             image_id=image_id[f])
        rec.add_image_with_trivial_frame(img, rigid3d_from_matrix(poses_w2c[f]))
    by_point = np.argsort(obs_point, kind="stable")
    starts = np.searchsorted(obs_point[by_point], np.arange(len(points) + 1))
    pid = np.zeros(len(points), np.int64)
    TE = pycolmap.TrackElement
    # per observation, sorted by point: (image id, point2D index) as Python ints, built once (not per point)
    frame_to_id = np.zeros(max(frames + [int(obs_frame.max()) if len(obs_frame) else 0]) + 1, np.int64)
    frame_to_id[frames] = np.arange(1, len(frames) + 1)
    ids_sorted = frame_to_id[obs_frame[by_point]]
    counts = np.diff(starts)
    if (ids_sorted[np.repeat(counts >= 2, counts)] == 0).any():
        raise KeyError("bundle_adjust: a point is observed in a frame without an initial pose")
    elements = [TE(a, b) for a, b in zip(ids_sorted.tolist(), p2d_idx[by_point].tolist())]
    bounds = starts.tolist()
    for j in np.flatnonzero(counts >= 2).tolist():  # one observation constrains nothing (pycolmap refuses it)
        pid[j] = rec.add_point3D(points[j], pycolmap.Track(elements[bounds[j]:bounds[j + 1]]))
    ba_opts = pycolmap.BundleAdjustmentOptions()
    ba_opts.refine_focal_length = bool(opt.refine_intrinsics)
    ba_opts.refine_principal_point = bool(opt.refine_intrinsics)
    ba_opts.refine_extra_params = False
    ba_opts.print_summary = False
    loss = {"cauchy": "CAUCHY", "huber": "HUBER", "soft_l1": "SOFT_L1", "trivial": "TRIVIAL"}[opt.loss]
    ba_opts.ceres.loss_function_type = getattr(pycolmap.LossFunctionType, loss)
    ba_opts.ceres.loss_function_scale = float(opt.loss_scale_px)
    so = ba_opts.ceres.solver_options
    so.max_num_iterations = int(opt.max_iterations)
    so.function_tolerance = float(opt.function_tolerance)
    so.gradient_tolerance = float(opt.gradient_tolerance)
    so.parameter_tolerance = float(opt.parameter_tolerance)
    so.num_threads = int(opt.num_threads)
    config = pycolmap.BundleAdjustmentConfig()
    for f in frames:
        config.add_image(image_id[f])
    for f in constant_frames:
        if int(f) in image_id:
            config.set_constant_rig_from_world_pose(image_id[int(f)])  # trivial rig: rig = camera
    if not opt.refine_intrinsics:
        config.set_constant_cam_intrinsics(1)
    adjuster = pycolmap.create_default_bundle_adjuster(ba_opts, config, rec)
    summary = adjuster.solve()
    cs = summary.ceres_summary
    out_poses = {f: matrix_from_rigid3d(rec.image(image_id[f]).cam_from_world()) for f in frames}
    out_points = points.copy()
    for j in np.flatnonzero(pid > 0).tolist():
        out_points[j] = rec.point3D(int(pid[j])).xyz
    K_out = _K_from_params(rec.camera(1).params) if opt.refine_intrinsics else np.asarray(K, dtype=np.float64).copy()
    errors = reprojection_errors(K_out, out_poses, out_points, obs_point, obs_frame, obs_xy)
    return BAResult(poses_w2c=out_poses, points=out_points, K=K_out, errors=errors,
                    initial_cost=float(cs.initial_cost), final_cost=float(cs.final_cost),
                    iterations=int(cs.num_successful_steps + cs.num_unsuccessful_steps),
                    seconds=time.perf_counter() - t0, usable=bool(summary.is_solution_usable()))
