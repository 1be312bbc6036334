"""Per-pair relative-pose errors: rotation (deg) and translation direction (deg)."""

from __future__ import annotations

import numpy as np
import torch

from trianflow.geometry.pose import rotation_error_deg, translation_angle_deg


def relative_motions(poses_c2w: np.ndarray) -> np.ndarray:
    """``(N,4,4)`` camera-to-world -> ``(N-1,4,4)`` ``T_k_to_k+1`` (maps X_k to X_k+1)."""
    P = np.asarray(poses_c2w, dtype=np.float64)
    return np.linalg.inv(P[1:]) @ P[:-1]


def relative_pose_errors(est_c2w: np.ndarray, gt_c2w: np.ndarray, min_translation: float = 1e-6) -> dict:
    """Rotation and translation-direction errors of consecutive relative motions.

    Pairs whose GT or estimated translation is below ``min_translation`` (static, rotation-only)
    are excluded from the direction statistics.

    Returns:
        dict with ``rot_err_deg`` and ``trans_dir_err_deg`` arrays and their mean/median/max.
    """
    re, rg = relative_motions(est_c2w), relative_motions(gt_c2w)
    n = min(len(re), len(rg))
    re, rg = torch.from_numpy(re[:n]), torch.from_numpy(rg[:n])
    rot = rotation_error_deg(re[:, :3, :3], rg[:, :3, :3]).numpy()
    moving = (re[:, :3, 3].norm(dim=1) > min_translation) & (rg[:, :3, 3].norm(dim=1) > min_translation)
    tdir = translation_angle_deg(re[moving][:, :3, 3], rg[moving][:, :3, 3]).numpy()
    out = {"rot_err_deg": rot, "trans_dir_err_deg": tdir}
    for k, v in list(out.items()):
        if len(v):
            out[f"{k}_mean"], out[f"{k}_median"], out[f"{k}_max"] = float(v.mean()), float(np.median(v)), float(v.max())
    return out
