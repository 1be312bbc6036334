"""Trajectory evaluation against ground truth: APE, RPE (via evo) and the KITTI drift metric.

:func:`evaluate_trajectory` reproduces what ``evo_ape`` / ``evo_rpe`` compute on the same files
with the same options, using ``evo.core`` only:

* **association**: when both trajectories carry timestamps (TUM files) poses are matched with
  ``evo.core.sync.associate_trajectories(gt, est, max_diff=...)`` (nearest timestamp, the same
  call and argument order as the evo CLI); otherwise (KITTI files, arrays without timestamps)
  poses are matched by index. If GT has more poses than the estimate, the first ``len(est)``
  GT poses are used and a note is recorded; an estimate longer than GT is an error.
* **alignment** of the estimate onto GT with Umeyama (``PosePath3D.align``): ``"sim3"``
  (rotation, translation and scale, evo ``-as``), ``"se3"`` (evo ``-a``) or ``"none"``.
* **APE**: translation part, metres (``evo_ape``'s default pose relation).
* **RPE**: translation part (m) and rotation angle (deg) between pose pairs ``delta`` frames
  (or metres/degrees/radians, ``rpe_unit``) apart, consecutive pairs by default
  (``rpe_all_pairs=True`` is evo's ``--all_pairs``). For ``delta = 1`` frame both coincide.
  Pairs and relative error poses come from ``evo.core.metrics.RPE``; the rotation angles of
  those error poses are taken in one batched scipy call (the same log map evo applies pose by
  pose), which agrees with ``evo_rpe -r angle_deg`` to ~1e-15 and is ~5x faster.
* **KITTI drift** (``kitti_t_err`` %, ``kitti_r_err`` deg/100 m): the official devkit metric
  (:mod:`trianflow.evaluation.kitti_odometry`) computed on the **aligned** estimate, so that
  with Sim3 the unknown monocular scale is corrected. ``None`` (with a note) if the GT path is
  shorter than 100 m.

Equivalent evo commands for the defaults (note evo takes GT first)::

    evo_ape kitti GT EST -as          # APE rmse/mean/...    (tum instead of kitti for TUM files)
    evo_rpe kitti GT EST -as          # RPE translation
    evo_rpe kitti GT EST -as -r angle_deg
"""

from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from trianflow.errors import InputError
from trianflow.evaluation.kitti_odometry import KITTI_LENGTHS, kitti_odometry_error
from trianflow.io.trajectory import from_evo, read_trajectory, to_evo

logger = logging.getLogger(__name__)

ALIGN_MODES = ("sim3", "se3", "none")
RPE_UNITS = ("frames", "m", "deg", "rad")

__all__ = ["ALIGN_MODES", "RPE_UNITS", "TrajectoryMetrics", "evaluate_trajectory", "load_trajectory_input"]

TrajectoryInput = Union[str, os.PathLike, np.ndarray, tuple, Any]


@dataclass
class TrajectoryMetrics:
    """Result of :func:`evaluate_trajectory`.

    Scalars (all float64 Python floats; lengths in the GT's unit, usually metres):
        ape_rmse, ape_mean, ape_median, ape_std, ape_min, ape_max: APE translation statistics.
        rpe_trans_*: RPE translation statistics (same unit as positions).
        rpe_rot_*: RPE rotation-angle statistics in degrees.
        kitti_t_err: KITTI drift in percent, or ``None`` when GT is shorter than 100 m.
        kitti_r_err: KITTI drift in degrees per 100 m, or ``None``.
        kitti_n_segments: number of KITTI segments averaged; kitti_note: why ``None``.
        align: ``"sim3" | "se3" | "none"``; scale: Sim3 scale (1.0 for se3/none).
        n_poses: matched poses evaluated; n_est / n_gt: poses in the inputs.
        path_length: GT path length over the matched poses.
        association: ``"timestamps"`` or ``"index"``.
        rpe_delta, rpe_unit, rpe_all_pairs, max_diff: the options used.
        notes: human-readable remarks (truncation, association statistics).
    Arrays (not in :meth:`to_dict` unless asked):
        ape_errors ``(n_poses,)``, rpe_trans_errors ``(M,)``, rpe_rot_errors ``(M,)`` (deg),
        gt_xyz ``(n_poses,3)``, est_xyz ``(n_poses,3)`` (aligned estimate), timestamps
        ``(n_poses,)`` or ``None`` (GT timestamps of matched poses), alignment ``(4,4)`` Sim3
        matrix applied to the estimate (identity for ``"none"``), gt_poses / est_poses
        ``(n_poses,4,4)`` (estimate aligned).
    """

    ape_rmse: float
    ape_mean: float
    ape_median: float
    ape_std: float
    ape_min: float
    ape_max: float
    rpe_trans_rmse: float
    rpe_trans_mean: float
    rpe_trans_median: float
    rpe_trans_max: float
    rpe_rot_rmse: float
    rpe_rot_mean: float
    rpe_rot_median: float
    rpe_rot_max: float
    kitti_t_err: Optional[float]
    kitti_r_err: Optional[float]
    kitti_n_segments: int
    kitti_note: Optional[str]
    align: str
    scale: float
    n_poses: int
    n_est: int
    n_gt: int
    path_length: float
    association: str
    rpe_delta: float
    rpe_unit: str
    rpe_all_pairs: bool
    max_diff: float
    est_name: Optional[str] = None
    gt_name: Optional[str] = None
    notes: list = field(default_factory=list)
    ape_errors: np.ndarray = field(default=None, repr=False)
    rpe_trans_errors: np.ndarray = field(default=None, repr=False)
    rpe_rot_errors: np.ndarray = field(default=None, repr=False)
    gt_xyz: np.ndarray = field(default=None, repr=False)
    est_xyz: np.ndarray = field(default=None, repr=False)
    timestamps: Optional[np.ndarray] = field(default=None, repr=False)
    alignment: np.ndarray = field(default=None, repr=False)
    gt_poses: np.ndarray = field(default=None, repr=False)
    est_poses: np.ndarray = field(default=None, repr=False)

    _ARRAYS = (
        "ape_errors",
        "rpe_trans_errors",
        "rpe_rot_errors",
        "gt_xyz",
        "est_xyz",
        "timestamps",
        "alignment",
        "gt_poses",
        "est_poses",
    )

    def to_dict(self, include_arrays: bool = False) -> dict:
        """Plain JSON-serialisable dict of the scalars (and, if asked, the arrays as lists)."""
        out = {}
        for name in self.__dataclass_fields__:
            if name in self._ARRAYS and not include_arrays:
                continue
            v = getattr(self, name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, (np.floating, np.integer, np.bool_)):
                v = v.item()
            elif isinstance(v, list):
                v = list(v)
            out[name] = v
        return out


def _name_of(x) -> Optional[str]:
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    return getattr(x, "name", None)


def load_trajectory_input(x: TrajectoryInput, fmt: str = "auto", what: str = "trajectory"):
    """Turn a path, ``(N,4,4)`` array, ``(timestamps, poses)`` tuple or evo trajectory into evo.

    Returns an evo ``PoseTrajectory3D`` (with timestamps) or ``PosePath3D`` (without), named
    after the file when given a path. Raises :class:`InputError` for unusable input.
    """
    from evo.core.trajectory import PosePath3D

    if isinstance(x, PosePath3D):
        return copy.deepcopy(x)
    if isinstance(x, (str, os.PathLike)):
        ts, poses = read_trajectory(x, fmt)
        return to_evo(poses, ts, name=str(x))
    if isinstance(x, tuple) and len(x) == 2:
        ts, poses = x
        return to_evo(poses, ts, name=what)
    arr = np.asarray(x, dtype=np.float64)
    return to_evo(arr, None, name=what)


def _stats(err: np.ndarray) -> dict:
    """Same statistics as ``evo.core.metrics.PE.get_statistic`` on an error vector."""
    e = np.asarray(err, dtype=np.float64)
    return {
        "rmse": math.sqrt(np.mean(np.power(e, 2))),
        "mean": float(np.mean(e)),
        "median": float(np.median(e)),
        "std": float(np.std(e)),
        "min": float(np.min(e)),
        "max": float(np.max(e)),
    }


def _rotation_angles_deg(R: np.ndarray, est_name: str, gt_name: str) -> np.ndarray:
    """Angles in degrees of rotations ``R (M,3,3)``, the batched form of evo's
    ``abs(lie.so3_log_angle(R_i, degrees=True))`` (same SO(3) validity check, same scipy log map).
    """
    from scipy.spatial.transform import Rotation

    det_ok = np.isclose(np.linalg.det(R), 1.0, atol=1e-6)
    orth_ok = np.isclose(np.swapaxes(R, 1, 2) @ R, np.eye(3), atol=1e-6).all(axis=(1, 2))
    bad = np.flatnonzero(~(det_ok & orth_ok))
    if len(bad):
        raise InputError(
            f"relative rotations between {est_name} and {gt_name} are not valid rotation matrices "
            f"(first at pair {int(bad[0])}); re-orthonormalise the rotations in the pose files"
        )
    return np.abs(np.rad2deg(np.linalg.norm(Rotation.from_matrix(R).as_rotvec(), axis=1)))


def _associate(traj_gt, traj_est, max_diff: float, names: tuple[str, str], notes: list):
    """Match poses by timestamps (both have them) or by index; returns (gt, est, how)."""
    from evo.core import sync
    from evo.core.trajectory import PoseTrajectory3D

    est_name, gt_name = names
    if isinstance(traj_gt, PoseTrajectory3D) and isinstance(traj_est, PoseTrajectory3D):
        try:
            gt_s, est_s = sync.associate_trajectories(traj_gt, traj_est, max_diff=max_diff)
        except sync.SyncException:
            t_e, t_g = traj_est.timestamps, traj_gt.timestamps
            raise InputError(
                f"no overlapping timestamps between {est_name} ({t_e.min():.6f}..{t_e.max():.6f} s) and "
                f"{gt_name} ({t_g.min():.6f}..{t_g.max():.6f} s) within max_diff={max_diff:g} s; check that "
                f"both files are from the same sequence, or increase --max-diff"
            ) from None
        n_possible = min(traj_gt.num_poses, traj_est.num_poses)
        notes.append(
            f"associated {gt_s.num_poses} of {n_possible} possible poses by timestamp (max_diff {max_diff:g} s)"
        )
        return gt_s, est_s, "timestamps"

    n_est, n_gt = traj_est.num_poses, traj_gt.num_poses
    if isinstance(traj_gt, PoseTrajectory3D) != isinstance(traj_est, PoseTrajectory3D):
        notes.append("only one trajectory has timestamps: poses matched by index")
    if n_est > n_gt:
        raise InputError(
            f"{est_name} has {n_est} poses but {gt_name} only {n_gt}; poses are matched by index "
            f"(no timestamps), so the estimate must not be longer than the ground truth - check the files "
            f"or use TUM files with timestamps"
        )
    gt_c = copy.deepcopy(traj_gt)
    est_c = copy.deepcopy(traj_est)
    if n_gt > n_est:
        gt_c.reduce_to_ids(np.arange(n_est))
        notes.append(f"ground truth has {n_gt} poses, estimate {n_est}: evaluated on the first {n_est} GT poses")
    return gt_c, est_c, "index"


def evaluate_trajectory(
    est: TrajectoryInput,
    gt: TrajectoryInput,
    align: str = "sim3",
    rpe_delta: float = 1,
    rpe_unit: str = "frames",
    max_diff: float = 0.01,
    rpe_all_pairs: bool = False,
    rpe_delta_tol: float = 0.1,
    fmt: str = "auto",
    kitti_lengths: Optional[Sequence[float]] = None,
) -> TrajectoryMetrics:
    """Evaluate an estimated trajectory against ground truth (APE, RPE, KITTI drift).

    Args:
        est: estimate: a KITTI/TUM file path, an ``(N,4,4)`` pose array, a ``(timestamps (N,),
            poses (N,4,4))`` tuple or an evo trajectory.
        gt: ground truth, same kinds as ``est``.
        align: ``"sim3"`` (default; right for monocular), ``"se3"`` or ``"none"``.
        rpe_delta: RPE pair distance (integer for frames).
        rpe_unit: ``"frames"``, ``"m"``, ``"deg"`` or ``"rad"`` (evo's ``--delta_unit`` f/m/d/r).
        max_diff: maximum timestamp difference in seconds for association (TUM inputs).
        rpe_all_pairs: use all pairs ``delta`` apart instead of consecutive ones (evo
            ``--all_pairs``); identical for ``delta = 1`` frame.
        rpe_delta_tol: relative tolerance for metre/angle deltas (evo ``--delta_tol``).
        fmt: file format for path inputs: ``"auto"``, ``"kitti"`` or ``"tum"``.
        kitti_lengths: segment lengths in metres of the KITTI drift (default: the devkit's 100,
            200, .., 800 m; shorter ones for paths that hold no 100 m segment).

    Returns:
        :class:`TrajectoryMetrics` (the APE/RPE numbers equal evo's for the same options).

    Raises:
        InputError: bad files, no overlapping timestamps, estimate longer than GT (index
            matching), fewer than 3 matched poses for alignment, degenerate alignment, a
            ``rpe_delta`` that yields no pairs, or an unknown option value.
    """
    from evo.core import filters, geometry, lie_algebra, metrics
    from evo.core.units import Unit

    if align not in ALIGN_MODES:
        raise InputError(f"unknown alignment {align!r}; use one of {', '.join(ALIGN_MODES)}")
    if rpe_unit not in RPE_UNITS:
        raise InputError(f"unknown RPE delta unit {rpe_unit!r}; use one of {', '.join(RPE_UNITS)}")
    if not (rpe_delta > 0):
        raise InputError(f"RPE delta must be positive, got {rpe_delta}")
    if rpe_unit == "frames" and float(rpe_delta) != int(rpe_delta):
        raise InputError(f"RPE delta in frames must be an integer, got {rpe_delta}")
    if not (max_diff >= 0):
        raise InputError(f"max_diff must be >= 0 seconds, got {max_diff}")
    if kitti_lengths is not None:
        kitti_lengths = tuple(float(x) for x in kitti_lengths)
        if not kitti_lengths or not all(np.isfinite(x) and x > 0 for x in kitti_lengths):
            raise InputError(f"KITTI segment lengths must be positive metres, got {list(kitti_lengths)}")

    est_name = _name_of(est) or "estimate"
    gt_name = _name_of(gt) or "ground truth"
    traj_est = load_trajectory_input(est, fmt, "estimate")
    traj_gt = load_trajectory_input(gt, fmt, "ground truth")
    n_est, n_gt = traj_est.num_poses, traj_gt.num_poses
    notes: list[str] = []

    traj_gt, traj_est, association = _associate(traj_gt, traj_est, max_diff, (est_name, gt_name), notes)
    n = traj_gt.num_poses
    min_poses = 3 if align != "none" else 2
    if n < min_poses:
        raise InputError(
            f"only {n} matched poses between {est_name} and {gt_name}; need at least {min_poses} "
            f"(check that both files cover the same sequence, or increase --max-diff)"
        )

    # --- alignment (in place on the estimate, exactly as evo's ape()/rpe()) ---
    scale = 1.0
    alignment = np.eye(4)
    if align != "none":
        try:
            r_a, t_a, s = traj_est.align(traj_gt, correct_scale=(align == "sim3"))
        except geometry.GeometryException as exc:
            raise InputError(
                f"cannot {align}-align {est_name} to {gt_name} ({exc}); the positions are degenerate "
                f"(e.g. all on one line or all equal) - use --align none"
            ) from None
        scale = float(s)
        alignment = lie_algebra.sim3(r_a, t_a, s)
        if not np.isfinite(scale) or scale <= 0:
            raise InputError(f"Sim3 alignment of {est_name} gave scale {scale}; the estimate is degenerate")

    # --- APE (translation part) ---
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((traj_gt, traj_est))
    ape_stats = _stats(ape.error)

    # --- RPE (translation part and rotation angle in degrees) ---
    unit = {"frames": Unit.frames, "m": Unit.meters, "deg": Unit.degrees, "rad": Unit.radians}[rpe_unit]
    delta = int(rpe_delta) if rpe_unit == "frames" else float(rpe_delta)
    rpe = metrics.RPE(metrics.PoseRelation.translation_part, delta, unit, rpe_delta_tol, rpe_all_pairs, False)
    try:
        rpe.process_data((traj_gt, traj_est))
    except filters.FilterException as exc:
        raise InputError(
            f"RPE with delta {rpe_delta:g} {rpe_unit} found no pose pairs in {est_name} ({exc}); use a smaller --delta"
        ) from None
    rpe_err = {"trans": np.asarray(rpe.error, dtype=np.float64)}
    # rotation angle of the same relative error poses E_i, as evo's PoseRelation.rotation_angle_deg
    rpe_err["rot"] = _rotation_angles_deg(np.stack(rpe.E)[:, :3, :3], est_name, gt_name)
    rt, rr = _stats(rpe_err["trans"]), _stats(rpe_err["rot"])

    # --- KITTI drift on the aligned estimate ---
    _, gt_poses = from_evo(traj_gt)
    _, est_poses = from_evo(traj_est)
    kitti = kitti_odometry_error(gt_poses, est_poses, lengths=KITTI_LENGTHS if kitti_lengths is None else kitti_lengths)

    timestamps = getattr(traj_gt, "timestamps", None)
    result = TrajectoryMetrics(
        ape_rmse=ape_stats["rmse"],
        ape_mean=ape_stats["mean"],
        ape_median=ape_stats["median"],
        ape_std=ape_stats["std"],
        ape_min=ape_stats["min"],
        ape_max=ape_stats["max"],
        rpe_trans_rmse=rt["rmse"],
        rpe_trans_mean=rt["mean"],
        rpe_trans_median=rt["median"],
        rpe_trans_max=rt["max"],
        rpe_rot_rmse=rr["rmse"],
        rpe_rot_mean=rr["mean"],
        rpe_rot_median=rr["median"],
        rpe_rot_max=rr["max"],
        kitti_t_err=kitti.t_err,
        kitti_r_err=kitti.r_err,
        kitti_n_segments=kitti.n_segments,
        kitti_note=kitti.note,
        align=align,
        scale=scale,
        n_poses=n,
        n_est=n_est,
        n_gt=n_gt,
        path_length=float(traj_gt.path_length),
        association=association,
        rpe_delta=float(rpe_delta),
        rpe_unit=rpe_unit,
        rpe_all_pairs=bool(rpe_all_pairs),
        max_diff=float(max_diff),
        est_name=est_name,
        gt_name=gt_name,
        notes=notes,
        ape_errors=np.asarray(ape.error, dtype=np.float64),
        rpe_trans_errors=rpe_err["trans"],
        rpe_rot_errors=rpe_err["rot"],
        gt_xyz=np.asarray(traj_gt.positions_xyz, dtype=np.float64).copy(),
        est_xyz=np.asarray(traj_est.positions_xyz, dtype=np.float64).copy(),
        timestamps=None if timestamps is None else np.asarray(timestamps, dtype=np.float64).copy(),
        alignment=np.asarray(alignment, dtype=np.float64),
        gt_poses=gt_poses,
        est_poses=est_poses,
    )
    logger.info(
        "APE rmse %.6g, RPE trans rmse %.6g, rot rmse %.6g deg, KITTI t_err %s %%, r_err %s deg/100m (%s, scale %.6g)",
        result.ape_rmse,
        result.rpe_trans_rmse,
        result.rpe_rot_rmse,
        result.kitti_t_err,
        result.kitti_r_err,
        align,
        scale,
    )
    return result
