"""The ground plane as a scale source of the whole trajectory.

Monocular runs hold the camera's height above a ground plane seen below it constant
(:mod:`trianflow.geometry.ground`): relative by default with the bundle adjustment (removes the
remaining scale drift), metric with ``camera_height`` (also pair by pair). The planes are gathered
during the loop (:class:`GroundCollector`) and applied after it (:func:`apply_ground_scale`);
frames without a plane keep the chained scale (``FrameInfo.scale_source``).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np

from trianflow.io.point_store import SpilledPoints
from trianflow.vo.config import VOConfig

log = logging.getLogger(__name__)

__all__ = ["GroundCollector", "apply_ground_scale", "move_points", "move_run_points"]


class GroundCollector:
    """Which planes the ground scale of a run uses.

    Enabled for monocular runs without a DepthNet that have a ``camera_height`` or use the
    default relative ground with the bundle adjustment. The planes of the pairs' triangulated
    points (:meth:`observe_pair`) are fitted only for the metric scale; the planes of the dense
    flow under the keyframes (:meth:`observe_flow`) only with ``config.ground_flow``.
    """

    def __init__(self, config: VOConfig, K: np.ndarray, image_size, depth_fn: Optional[Callable] = None):
        h = config.camera_height
        self.K, self.size = K, tuple(image_size)
        self.enabled = (h is not None or (config.ground_scale == "auto" and config.refine == "ba")) \
            and not config.stereo and depth_fn is None
        # the pairs' planes serve the metric scale only (see fits)
        self.per_pair = self.enabled and h is not None
        # frame -> (GroundPlane, the pair's translation length, ref frame), both lengths in the chain units
        # of that moment (their ratio is free of the scale drift)
        self.pair_fits: dict = {}
        # keyframe -> (GroundPlane of the dense flow to the next frame, the pair's translation length, next frame)
        self.flow_fits: dict = {}
        self.use_flow = bool(config.ground_flow)
        self.flow_used = 0  # keyframes whose plane came from the dense flow (see fits)
        self.photometric = 0  # ... of the flow planes found, those of the direct alignment (DIS had none)
        self.overlap: list = []  # keyframes with both planes: (map height, flow height, step, frame, keyframe)
        self._flow = None

    def observe_flow(self, keyframe: int, index: int, image_kf: np.ndarray, image: np.ndarray,
                     rel: np.ndarray) -> None:
        """The road plane under keyframe ``keyframe`` from the dense flow to frame ``index``
        (:func:`~trianflow.geometry.ground.fit_ground_from_flow`; DIS ``medium`` on the image's road rows),
        ``rel (4,4)``: the motion keyframe -> frame in the chain units of that moment. Used where the map
        finds no plane under the keyframe (a rear camera, a road with few tracked points). Where no plane
        explains the DIS flow (a fast road with little texture), the plane is aligned on the grey levels
        instead (:func:`~trianflow.geometry.ground.fit_ground_photometric`)."""
        if not (self.enabled and self.use_flow):
            return
        from trianflow.flow_backends import DISFlow, to_gray
        from trianflow.geometry.ground import FlowGroundOptions, fit_ground_from_flow, fit_ground_photometric

        step = float(np.linalg.norm(rel[:3, 3]))
        if step <= 1e-12:
            return
        if self._flow is None:
            self._flow = DISFlow("medium")
        opt = FlowGroundOptions()
        H, W = image.shape[:2]
        cy = self.K[1, 2]
        y0 = int(max(0, np.floor(cy + opt.min_row * max(H - 1 - cy, 1.0)) - 8))
        flow = np.full((H, W, 2), np.nan, np.float32)
        flow[y0:] = self._flow.forward(image_kf[y0:], image[y0:])
        g = fit_ground_from_flow(flow, rel[:3, :3], rel[:3, 3], self.K, opt)
        if not g.found:  # a fast, weakly textured road: no one plane explains DIS there; align the grey levels
            g = fit_ground_photometric(to_gray(image_kf), to_gray(image), rel[:3, :3], rel[:3, 3], self.K)
            self.photometric += int(g.found)
        self.flow_fits[keyframe] = (g, step, index)

    def observe_pair(self, index: int, ref_index: int, X1: np.ndarray, xy1: np.ndarray, step: float) -> None:
        """Fit the plane of one pair's triangulated points ``X1 (M,3)`` (reference camera) seen at
        ``xy1 (M,2)``; ``step``: the pair's translation length (metric mode only)."""
        if not self.per_pair:
            return
        from trianflow.geometry.ground import fit_ground_plane

        g = fit_ground_plane(X1, xy1, self.K, self.size)
        self.pair_fits[index] = (g, step, ref_index)

    def fits(self, mapper) -> Optional[list]:
        """``[(frame, GroundPlane, pair translation length or None, reference frame)]`` the ground
        scale uses for this run, or ``None`` when it does not apply (metric scale from stereo or a
        DepthNet, ``ground_scale="off"`` without a camera height, pair-by-pair VO without a camera
        height).

        With the bundle adjustment the planes come from the adjusted map points each keyframe sees
        (Lucas-Kanade-refined tracks: measured 1.8 % from the true height on KITTI 03, where the
        pair-by-pair DIS points of the near road give 6 %); where the map has too few road points
        (fewer than 3 keyframes with a plane, e.g. small frames), and without the adjustment, the
        planes come from every pair's triangulated points (translation length given: the height is
        then converted to the final trajectory's units) - but only for a metric scale
        (``camera_height``): in the relative mode the pairs' planes are noisier than the drift they
        would remove (KITTI snippet with its untextured road: heights 1.5-2.3 map units from frame to
        frame, ATE 0.15 m with them against 0.022 m with the bundle adjustment's own scale), so the
        run keeps the chained scale there.

        With ``ground_flow`` a keyframe whose map shows no plane takes the plane of the dense flow to the next
        frame (:meth:`observe_flow`) where one was found; those heights read a few per cent high (DIS on the
        near road) and are scaled by their median ratio to the map's planes where both were found
        (``overlap``, applied in :func:`apply_ground_scale`)."""
        if not self.enabled:
            return None
        pairs = [(f, g, step, ref) for f, (g, step, ref) in sorted(self.pair_fits.items())]
        if mapper is not None:
            kfs = []
            self.overlap = []
            self.flow_used = 0
            kg = mapper.keyframe_ground()
            for f, g in kg:
                fl = self.flow_fits.get(f)
                if not g.found and fl is not None and fl[0].found:  # the road's flow where the map has no plane
                    kfs.append((fl[2], fl[0], fl[1], f))
                    self.flow_used += 1
                else:
                    kfs.append((f, g, None, f))
                    if g.found and fl is not None and fl[0].found and fl[0].method == "flow":  # calibrates DIS
                        self.overlap.append((g.height, fl[0].height, fl[1], fl[2], f))
            # enough planes of the map's own, or (ground_flow) of the road where the map had none: the photometric
            # ones, and the DIS flow's where 3 or more overlaps with the map's calibrate their bias
            usable = sum(g.found for _, g in kg) + sum(
                1 for _, g, st, _ in kfs if st is not None and (g.method == "photometric" or len(self.overlap) >= 3))
            if usable >= 3 or not self.per_pair:
                return kfs
        self.overlap = []  # the pairs' planes: no flow planes among them
        self.flow_used = 0
        return pairs


def apply_ground_scale(poses, fits, frames, cfg: VOConfig, points, mapping, warnings, overlap=()):
    """Scale the trajectory (and the points) so the camera keeps a constant height above the
    ground (metric with ``cfg.camera_height``, else the median height is kept).

    Keyframe planes (bundle adjustment) give heights in the final map's units directly. A plane
    fitted to a pair's triangulated points gives its height divided by the pair's translation
    length (both in the chain units of that moment); times the step length of the final
    trajectory that is the height in the final trajectory's units. The per-frame heights are smoothed
    (:func:`~trianflow.geometry.ground.ground_scale_profile`) and applied to the steps; frames
    without a plane keep the chained scale of their neighbours. Records ``ground_height`` and
    ``scale_source`` per frame. ``overlap``: ``[(map height, flow height, step, frame, keyframe)]`` of the
    keyframes where both the map and the dense flow found a plane (:attr:`GroundCollector.overlap`); with 3 or
    more, the DIS flow planes among ``fits`` are scaled by the median ratio (DIS underestimates the near road's
    flow: its heights read high); the photometric planes are taken as they are. Returns ``(poses, summary dict)``."""
    from trianflow.geometry.ground import ground_scale_profile, rescale_trajectory

    n = len(poses)
    fits = [t for t in fits if t[0] < n]
    kf = np.array([t[0] for t in fits], dtype=np.int64)
    heights = np.full(len(fits), np.nan)
    found = np.zeros(len(fits), bool)

    def converted(h, step, f, ref):  # a pair's height (units of its step) in the final trajectory's units
        final_step = float(np.linalg.norm(poses[f, :3, 3] - poses[ref, :3, 3]))
        return h / step * final_step if step > 1e-12 and final_step > 1e-12 else float("nan")

    # the flow's planes read a little high or low against the map's: scaled by their median ratio where both
    # were found under one keyframe
    ratios = [hm / converted(hf, st, f, ref) for hm, hf, st, f, ref in overlap]
    ratios = [r for r in ratios if np.isfinite(r) and r > 0]
    flow_gain = float(np.median(ratios)) if len(ratios) >= 3 else 1.0
    for j, (f, g, step, ref) in enumerate(fits):
        if not g.found:
            continue
        if step is None:  # fitted in the final map's units already
            heights[j] = g.height
        else:
            heights[j] = converted(g.height, step, f, ref)
            if not np.isfinite(heights[j]):
                continue
            if g.method != "photometric":  # a DIS flow plane (an entry with a step beside the map's planes)
                heights[j] *= flow_gain
        found[j] = True
        frames[f].ground_height = float(g.height)
    summary = {"mode": "metric" if cfg.camera_height is not None else "relative",
               "camera_height": cfg.camera_height, "evaluated": int(len(fits)), "planes_found": int(found.sum())}
    src = np.full(n, "chained", dtype=object)
    if len(kf):
        src[kf[found]] = "ground"
    for f, s in zip(frames, src):
        f.scale_source = str(s)
    if not found.any():
        what = "the trajectory keeps the chained scale" + ("" if cfg.camera_height is None else
                                                             " (not metric: --camera-height had no effect)")
        msg = f"no ground plane found in {len(fits)} evaluated frames: {what}"
        if cfg.camera_height is not None:
            log.warning(msg)
            warnings.append(msg)
        else:
            log.info(msg)
        return poses, summary
    # the smoothing window spans about ground_window frames, whichever frames were evaluated
    window = max(3, int(round(cfg.ground_window * len(fits) / max(n, 1))))
    factors_k = ground_scale_profile(heights, found, cfg.camera_height, window=window)
    factors = np.interp(np.arange(n), kf, factors_k)
    new = rescale_trajectory(poses, factors)
    summary["median_height"] = float(np.nanmedian(heights))
    summary["factor_min"], summary["factor_max"] = float(factors.min()), float(factors.max())
    move_run_points(points, mapping, poses, new, factors)
    return new, summary


def move_points(X: np.ndarray, ref: np.ndarray, old: np.ndarray, new: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """World points ``X (M,3)`` seen from frames ``ref (M,)``: kept at the same place relative to
    that camera, with distances scaled by its factor (``old``/``new`` ``(N,4,4)`` poses; where a
    camera turned, its points turn with it)."""
    X = np.asarray(X, dtype=np.float64)
    c_old, c_new = old[ref, :3, 3], new[ref, :3, 3]
    d = X - c_old
    turn = np.einsum("nij,nkj->nik", new[:, :3, :3], old[:, :3, :3])  # R_new R_old^T per frame
    if not np.allclose(turn, np.eye(3), atol=1e-12):
        d = np.einsum("nij,nj->ni", turn[ref], d)
    return c_new + factors[ref, None] * d


def move_run_points(points, mapping, old: np.ndarray, new: np.ndarray, factors: np.ndarray) -> None:
    """Move a run's points in place from the poses ``old`` to ``new`` ``(N,4,4)`` (see :func:`move_points`):
    the pairs' points (a dict, or :class:`~trianflow.io.point_store.SpilledPoints` moved chunk by chunk) by
    the frame that triangulated them, the map's points by the first keyframe that observes them."""
    n = len(new)
    if isinstance(points, SpilledPoints):  # a long run's points on disk: moved chunk by chunk
        points.move_xyz(lambda fr, xyz: move_points(xyz, np.clip(fr.astype(np.int64), 0, n - 1), old, new, factors))
    elif points is not None and len(points["xyz"]):
        r = np.clip(points["frame"].astype(np.int64), 0, n - 1)
        points["xyz"] = move_points(points["xyz"], r, old, new, factors).astype(points["xyz"].dtype)
    if mapping is not None and len(mapping["map"]["xyz"]):
        m = mapping["map"]
        first = np.full(len(m["xyz"]), n - 1, np.int64)
        np.minimum.at(first, m["obs_point"], m["obs_frame"])
        m["xyz"] = move_points(m["xyz"], np.clip(first, 0, n - 1), old, new, factors)


