"""Visual odometry: frames -> flow -> correspondences -> pose -> triangulation -> scale -> trajectory.

Every consecutive pair goes through the same path as TrianFlow's pose estimation, one module per
step (like DF-VO's tracker):

=========================  ========================================================================
:mod:`~trianflow.vo.tracker`    the frame loop and its state (:class:`VisualOdometry`)
:mod:`~trianflow.vo.two_view`   flow pair -> correspondences (score = visible / (0.1 + fb distance),
                                top 20 %, 6000 at random) -> essential matrix (``opencv`` /
                                ``pycolmap`` / ``torch`` RANSAC, cheirality-checked [R|t] refined on
                                the Sampson error) -> the static and rotation-only tests -> midpoint
                                triangulation of the inliers (unit baseline)
:mod:`~trianflow.vo.reference`  holding the reference through static / rotation frames, then
                                placing the held frames along the solved translation
:mod:`~trianflow.vo.scale`      scale sources behind one interface: stereo (metric), DepthNet
                                (TrianFlow's robust alignment), chained (monocular: the last pair's
                                points tracked into the new pair by the flow and re-triangulated)
:mod:`~trianflow.vo.fallback`   bridging blank / unreadable frames, PnP, constant velocity
:mod:`~trianflow.vo.ground`     the ground plane's scale of the whole trajectory
:mod:`~trianflow.vo.run`        :func:`run_vo` over a sequence
=========================  ========================================================================

Degenerate pairs fall back, and the per-frame ``status`` says which path was taken:

- ``ok``: essential matrix + triangulation, scale chained (or metric);
- ``ok_const_scale``: pose from E but too few shared points: translation length from the previous pair;
- ``static``: median flow below ``static_flow_px``: identity motion;
- ``rotation``: parallax after de-rotation below ``min_parallax_px`` (or ``min_parallax_rel`` of the
  median flow, whichever is larger): rotation-only (t = 0);
- ``pnp``: E failed (too few inliers): PnP-RANSAC on the previous triangulated points;
- ``const_vel``: everything failed: constant-velocity guess (previous relative motion). A
  frame without texture (black, blown out, lens cap: grey-level standard deviation below
  ``min_image_std``) gets this status without being matched; the next textured frame is
  matched against the last good one, so such gaps are bridged instead of breaking the chain.

Slow motion: a ``static`` or ``rotation`` frame does not replace the reference frame. The next
frame is matched against the same reference (``ref`` in ``frames.csv``), so parallax accumulates
until the translation can be solved, instead of being lost pair by pair (a handheld camera at
30 Hz, a car creeping forward). The reference is held for at most ``max_ref_hold`` frames and
while the next frame's median flow to it (extrapolated) stays below ``hold_max_flow`` of the image
width: a camera turning in place moves on before the displacement becomes too large for the flow.

``refine="ba"`` (the default) adds keyframes and a sliding-window bundle adjustment with pycolmap
(:class:`trianflow.mapping.LocalMapper`): at every keyframe the VO continues from the adjusted
pose and chains its scale from the adjusted points; :attr:`VOResult.mapping` holds the map
(points with their keyframe observations) and the adjustment summary. With ``refine="none"``
nothing of the mapping runs and the loop is the plain pair-by-pair VO (the fast mode).

Ground-plane scale (:mod:`trianflow.geometry.ground`): after the loop, monocular runs hold the
camera's height above a ground plane seen below it constant - relative by default with the
bundle adjustment (removes the remaining scale drift), metric with ``camera_height`` (also
pair by pair). Frames without a plane keep the chained scale (``FrameInfo.scale_source``).

Long runs: an unreadable frame is bridged (status ``unreadable``) unless
``skip_unreadable=False``; ``run_vo(should_stop=...)`` ends the loop early and still returns a
complete result for the frames done (the CLI wires SIGINT / SIGTERM to it).
"""

from trianflow.vo.config import STATUSES, FrameInfo, VOConfig, VOResult, config_dict, resolve_dis_preset
from trianflow.vo.run import run_vo
from trianflow.vo.tracker import VisualOdometry

__all__ = ["STATUSES", "FrameInfo", "VOConfig", "VOResult", "VisualOdometry", "run_vo", "resolve_dis_preset",
           "config_dict"]
