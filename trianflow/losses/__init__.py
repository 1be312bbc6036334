"""trianflow.losses: pure loss functions (TrianFlow, Monodepth, M3Depth, MiDaS).

Every function is batched, differentiable where it makes sense, device- and dtype-agnostic,
and reports per-sample values so that one failed sample never zeroes the whole batch.
Composite losses return :class:`LossResult` ``(total, terms, per_sample)``; combine named terms
with weights from the config through :func:`weighted_sum`.

The objectives of the training tasks are composed here too: :func:`trianflow.losses.flow.flow_loss_terms`
(TrianFlow flow stage, with the forward-backward term :func:`~trianflow.losses.flow.flow_consistency_loss`),
:func:`trianflow.losses.triangulation.trianflow_depth_objective` and
:func:`trianflow.losses.stereo_objective.stereo_objective` (import that module directly: it checks
batches with :mod:`trianflow.data`).
"""

from trianflow.losses.flow import flow_loss, flow_valid_mask
from trianflow.losses.objective import LossResult, valid_mean, weighted_sum
from trianflow.losses.photometric import masked_mean, photometric_error, ssim
from trianflow.losses.scale_shift import (
    ScaleShiftInvariantLoss,
    compute_scale_shift,
    gradient_matching_loss,
    normalize_median_mad,
    ssi_loss,
)
from trianflow.losses.smoothness import edge_aware_smoothness, flow_smoothness_2nd
from trianflow.losses.stereo import (
    DEFAULT_STEREO_WEIGHTS,
    disp_to_depth_stereo,
    flip_postprocess,
    icp_point_to_point,
    m3depth_consistency_loss,
    monodepth_loss,
    sample_points,
)
from trianflow.losses.triangulation import (
    DEFAULT_DEPTH_WEIGHTS,
    align_scale,
    depth_photometric_loss,
    epipolar_distance_map,
    epipolar_mask,
    flow_reprojection_loss,
    sample_depth_at,
    triangulation_depth_loss,
    trianflow_depth_objective,
)

__all__ = [
    "DEFAULT_DEPTH_WEIGHTS",
    "DEFAULT_STEREO_WEIGHTS",
    "LossResult",
    "ScaleShiftInvariantLoss",
    "align_scale",
    "compute_scale_shift",
    "depth_photometric_loss",
    "disp_to_depth_stereo",
    "edge_aware_smoothness",
    "epipolar_distance_map",
    "epipolar_mask",
    "flip_postprocess",
    "flow_loss",
    "flow_reprojection_loss",
    "flow_smoothness_2nd",
    "flow_valid_mask",
    "gradient_matching_loss",
    "icp_point_to_point",
    "m3depth_consistency_loss",
    "masked_mean",
    "monodepth_loss",
    "normalize_median_mad",
    "photometric_error",
    "sample_depth_at",
    "sample_points",
    "ssi_loss",
    "ssim",
    "triangulation_depth_loss",
    "trianflow_depth_objective",
    "valid_mean",
    "weighted_sum",
]
