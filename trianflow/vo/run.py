"""Running the VO over a whole sequence: :func:`run_vo` reads the frames, steps
:class:`~trianflow.vo.tracker.VisualOdometry` through them, and finishes the run (the mapper's
final poses, the ground scale, timings, the collected points) into a :class:`~trianflow.vo.VOResult`."""

from __future__ import annotations

import logging
import time
from typing import Callable, List, Optional

import numpy as np

from trianflow.errors import InputError
from trianflow.vo.config import VOConfig, VOResult
from trianflow.vo.ground import apply_ground_scale
from trianflow.vo.pipeline import FramePipeline, PrefetchedFlow, applied_threads, thread_plan
from trianflow.vo.tracker import VisualOdometry

log = logging.getLogger(__name__)

__all__ = ["run_vo"]


def run_vo(seq, config: Optional[VOConfig] = None, flow_fn=None, depth_fn=None, progress: Optional[Callable] = None,
           keep_points: bool = True, should_stop: Optional[Callable[[], Optional[str]]] = None,
           observer: Optional[Callable] = None):
    """Run VO over a :class:`~trianflow.data.FrameSequence`.

    Args:
        seq: the frames (and K, timestamps, optional stereo).
        config: :class:`VOConfig`.
        progress: optional callable ``(FrameInfo) -> None`` called after each frame (the CLI
            drives a tqdm bar with it).
        keep_points: collect the triangulated points of every pair in world coordinates
            (``VOResult.points``: dict of arrays ``frame``, ``xyz``, ``xy``, ``rgb``).
        should_stop: optional callable checked before every frame; when it returns a reason
            (e.g. ``"SIGTERM"``) the loop stops and the result covers the frames done so far,
            finished as a complete run would be (bundle adjustment, ground scale), with
            ``VOResult.interrupted`` set to that reason.
        observer: optional callable ``(index, image (H,W,3) uint8 or None, pose_c2w (4,4), FrameInfo,
            VisualOdometry) -> None`` called after ``progress`` for every frame (a live viewer reads
            ``vo.last_inliers``, ``vo.new_points``, ``vo.mapper`` from it; it must not modify them).
    Returns:
        :class:`VOResult`.

    A frame that cannot be read (corrupt or truncated file) is bridged like a black frame,
    with status ``unreadable`` and a warning naming the file, unless ``config.skip_unreadable``
    is False (then the :class:`~trianflow.errors.InputError` propagates).
    """
    cfg = config or VOConfig()
    vo = VisualOdometry(seq.K, seq.size, cfg, flow_fn=flow_fn, baseline=seq.baseline if cfg.stereo else None,
                        depth_fn=depth_fn, keep_points=keep_points)
    poses, frames = [], []
    warnings: List[str] = []
    interrupted = None
    if len(seq) == 0:
        raise InputError("the sequence has no frames; visual odometry needs at least 2")
    plan = thread_plan(cfg.threads, cfg.torch_threads)
    prefetched = ahead = None
    if plan.pipeline and flow_fn is None:  # the default DIS: the next pair's flow is computed ahead on the worker
        from trianflow.flow_backends import DISFlow

        prefetched = vo.flow_fn = PrefetchedFlow(vo.flow_fn)
        ahead = DISFlow(prefetched.flow_fn.preset)
    pipe = FramePipeline(seq, cfg, warnings, enabled=plan.pipeline, ahead_flow=ahead, prefetched=prefetched,
                         prepare=vo.two_view.prepare, offer=vo.two_view.offer)
    places = None
    if cfg.loop == "auto" and vo.mapper is not None:
        from trianflow.loop import PlaceConfig, PlaceDatabase

        # keyframes are described (ORB) on a thread of their own beside the VO when there are cores for it
        places = PlaceDatabase(PlaceConfig(min_gap_frames=cfg.loop_min_gap), background=plan.pipeline)
    t_start = time.perf_counter()
    with applied_threads(plan):
        for i, img, right in pipe:
            if should_stop is not None:
                interrupted = should_stop()
                if interrupted:
                    log.warning("stopped (%s) after %d of %d frames: writing what was done", interrupted, i, len(seq))
                    break
            pose, info = vo.step(i, float(seq.timestamps[i]), img, right)
            poses.append(pose)
            for j, revised in vo.pop_corrections().items():
                poses[j] = revised
            frames.append(info)
            if places is not None and img is not None and vo.mapper.is_keyframe(i):
                places.add_later(i, img)
            if progress is not None:
                progress(info)
            if observer is not None:
                observer(i, img, pose, info, vo)
    n = len(poses)
    if n == 0:
        raise InputError(f"stopped ({interrupted}) before the first frame: nothing to write")
    total = time.perf_counter() - t_start
    n_pairs = max(n - 1, 1)
    # the loop's geometry time less the selection done in it (the pipeline's worker scores pairs ahead)
    geom = vo.stage_seconds["geometry"] - (vo.stage_seconds["select"] - vo.two_view.seconds_ahead)
    flow_s = prefetched.seconds if prefetched is not None else vo.stage_seconds["flow"]
    timings = {
        "flow_ms": 1000 * flow_s / n_pairs,  # computing the flows, on the worker or in the loop
        "select_ms": 1000 * vo.stage_seconds["select"] / n_pairs,
        "geometry_ms": 1000 * geom / n_pairs,
        "total_s": total,
        "read_s": pipe.read_s,  # reading and decoding, on the worker or in the loop
        "wait_s": pipe.wait_s,  # the loop waiting for the next frame (and its flow)
        "frames": n,
        "fps": n / total if total > 0 else float("nan"),
        "mean_frame_s": float(np.mean([f.seconds for f in frames[1:]])) if len(frames) > 1 else 0.0,
        "threads": plan.as_dict(),
    }
    if prefetched is not None:
        timings["flow_ahead"] = {"used": prefetched.hits, "computed_in_loop": prefetched.misses}
    points = vo.points.finish() if keep_points else None  # a dict, or SpilledPoints on long runs
    poses = _orthonormalize(np.stack(poses))  # exact rotations (the geometry runs partly in fp32)
    K = np.asarray(seq.K)
    mapping = None
    t_fin = time.perf_counter()
    if vo.mapper is not None:
        vo.mapper.finish()
        poses = _orthonormalize(vo.mapper.final_poses(poses))
        mapping = {"summary": vo.mapper.summary(), "map": vo.mapper.map_points()}
        K = vo.mapper.K.copy()
        timings["ba_ms"] = 1000 * vo.mapper.ba_seconds / n_pairs
    ground = None
    fits = vo.ground.fits(vo.mapper)
    if fits is not None:
        poses, ground = apply_ground_scale(poses, fits, frames, cfg, points, mapping, warnings, vo.ground.overlap)
        if cfg.ground_flow:
            ground["flow_planes"] = vo.ground.flow_used  # keyframes whose plane came from the dense flow
            ground["photometric_planes"] = vo.ground.photometric  # flow planes found by the direct alignment
    loops = None
    if places is not None:
        places.close()
        poses, loops = _close_loops(poses, places, K, frames, points, mapping, cfg)
        timings["loop_s"] = loops["seconds"]
    total += time.perf_counter() - t_fin
    timings["total_s"] = total
    timings["fps"] = n / total if total > 0 else float("nan")
    return VOResult(poses=poses, timestamps=np.asarray(seq.timestamps[:n], dtype=np.float64), frames=frames,
                    K=K, config=cfg, timings=timings, points=points, mapping=mapping, ground=ground,
                    interrupted=interrupted, warnings=warnings, loops=loops)


def _close_loops(poses, places, K, frames, points, mapping, cfg):
    """Loop closure on the finished trajectory (:func:`trianflow.loop.close_loops`): the corrected poses,
    the points moved with them, ``FrameInfo.loop`` set at the loops' keyframes; returns ``(poses, summary)``."""
    from trianflow.loop import LoopConfig, close_loops
    from trianflow.vo.ground import move_run_points

    # stereo: SE(3) loops, the metric scale of every frame is held. --camera-height keeps Sim(3) loops: its
    # ground-held scale still errs locally (KITTI 00: SE(3) ATE 0.36 % with SE(3) loops, 0.24 % with Sim(3))
    res = close_loops(poses, places, K, LoopConfig(places=places.cfg, fix_scale=cfg.stereo))
    if res.loops:
        move_run_points(points, mapping, poses, res.poses, res.scale)
        for e in res.loops:
            frames[e.query].loop = e.candidate
    return res.poses, res.summary


def _orthonormalize(poses: np.ndarray) -> np.ndarray:
    """Project the rotation block of every pose ``(N,4,4)`` onto SO(3) (nearest rotation)."""
    U, _, Vt = np.linalg.svd(poses[:, :3, :3])
    d = np.sign(np.linalg.det(U @ Vt))
    out = poses.copy()
    out[:, :3, :3] = U @ (Vt * np.stack([np.ones_like(d), np.ones_like(d), d], 1)[:, :, None])
    return out
