"""Live 3D recordings with the Rerun SDK (optional extra: ``pip install trianflow[viz]``).

Everything that talks to Rerun lives here; ``rerun`` is imported inside the functions only, so
the core install never needs it. Entities of a VO recording (timeline ``frame``: one time step
per input frame; timeline ``time``: the frame's timestamp in seconds):

- ``world`` (static): right-down-forward camera axes (``RDF``).
- ``world/camera``: the camera-to-world pose (``Transform3D``) and its frustum (``Pinhole``,
  re-logged every 10 frames and when the intrinsics change); ``world/camera/image``: the frame (JPEG);
  ``world/camera/image/inliers``: the essential-matrix inliers in this frame and
  ``world/camera/image/flow``: their motion from the reference frame (2D line segments).
- ``world/trajectory``: the estimated camera centres so far (line strip); at the end of a live run
  the final trajectory (after bundle adjustment and ground scale) replaces it.
- ``world/gt``: the ground-truth trajectory so far, aligned to the estimate as the evaluation
  aligns them (Umeyama on the camera centres: Sim3 for monocular, SE3 for metric stereo runs).
- ``world/points``: the points triangulated in this pair (colour of the frame); ``world/map``:
  the points so far (refreshed at keyframes when it grew by a quarter or 50 frames later, at
  most ``max_map_points``; the final map at the end); ``world/keyframes``:
  the keyframe camera centres.
- ``status/*`` (``matches``, ``inliers``, ``triangulated``, ``shared``, ``scale``, ``code``: the
  status as its position in ``trianflow.vo.STATUSES``) and ``timings/frame_ms`` as time
  series; ``status/log``: the per-frame status as a text log (warning level for ``pnp`` /
  ``const_vel`` / ``unreadable``).
- ``depth``: the DepthNet output (``DepthImage``) when the VO runs with a depth network.

The same recording is built live from the VO loop (:class:`VORecorder` as the ``observer`` of
:func:`trianflow.vo.run_vo`) or afterwards from a run directory (:func:`record_run_dir`).
:func:`read_recording` reads an ``.rrd`` back with Rerun's own chunk reader (tests, checks).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from trianflow.errors import InputError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install trianflow[viz]"
_WARN_STATUSES = ("pnp", "const_vel", "unreadable")
# the per-frame status as a number for its time series (``status/code``), in the order of
# trianflow.vo.STATUSES
_STATUS_CODES = ("first", "ok", "ok_const_scale", "static", "rotation", "pnp", "const_vel", "unreadable")


def require_rerun():
    """Import and return the ``rerun`` module; :class:`InputError` naming the extra when missing."""
    try:
        import rerun as rr  # noqa: F401
    except ImportError:
        raise InputError(f"the 3D viewer needs the Rerun SDK, which is not installed: {INSTALL_HINT}") from None
    return rr


def rerun_available() -> bool:
    """Whether the Rerun SDK can be imported."""
    try:
        require_rerun()
    except InputError:
        return False
    return True


def has_display() -> bool:
    """Whether a graphical display is available (``DISPLAY`` or ``WAYLAND_DISPLAY`` set)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def resolve_mode(mode: str) -> str:
    """``"auto"`` -> ``"spawn"`` with a display, else ``"save"``; ``"spawn"`` without a display
    is an :class:`InputError`; ``"save"`` stays."""
    if mode not in ("auto", "spawn", "save"):
        raise InputError(f"--viz {mode!r}: use auto, spawn or save")
    if mode == "auto":
        return "spawn" if has_display() else "save"
    if mode == "spawn" and not has_display():
        raise InputError("--viz spawn needs a display (DISPLAY / WAYLAND_DISPLAY unset): use --viz save and open "
                         "the file later with `rerun FILE.rrd`")
    return mode


def open_stream(app_id: str, *, save_path: Optional[Path] = None, spawn: bool = False):
    """A new :class:`rerun.RecordingStream` (never the global one) that writes ``save_path`` or
    streams to a spawned viewer. Returns the stream."""
    rr = require_rerun()
    rec = rr.RecordingStream(app_id)
    if spawn:
        exe = shutil.which("rerun") or str(Path(sys.executable).with_name("rerun"))
        rec.spawn(executable_path=exe if Path(exe).exists() else None)
    elif save_path is not None:
        rec.save(str(save_path))
    else:
        raise ValueError("open_stream: give save_path or spawn=True")
    return rec


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True):
    """Least-squares ``(s, R (3,3), t (3,))`` with ``dst ~ s R src + t`` for ``(N,3)`` numpy points:
    :func:`trianflow.geometry.pose.umeyama` (as evo aligns trajectories) with guards for the
    viewer - degenerate inputs give the identity."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if len(src) < 2:
        return 1.0, np.eye(3), (dst.mean(0) - src.mean(0)) if len(src) else np.zeros(3)
    import torch

    from trianflow.geometry.pose import umeyama as umeyama_t

    ms, md = src.mean(0), dst.mean(0)
    if float(((src - ms) ** 2).sum() / len(src)) < 1e-12:
        return 1.0, np.eye(3), md - ms
    s, R, _ = umeyama_t(torch.from_numpy(src), torch.from_numpy(dst), with_scale=with_scale)
    s, R = float(s), R.numpy()
    if not np.isfinite(s) or s <= 0:
        s = 1.0
    return s, R, md - s * R @ ms


def gt_in_estimate_frame(est_c: np.ndarray, gt_c: np.ndarray, align: str = "sim3") -> np.ndarray:
    """Ground-truth camera centres ``(N,3)`` moved into the estimate's frame: the evaluation
    aligns the estimate to GT (``gt ~ s R est + t``); the viewer shows GT with the inverse.
    ``align="none"`` returns GT as given."""
    gt_c = np.asarray(gt_c, np.float64)
    if align == "none" or len(est_c) < 3:
        return gt_c
    s, R, t = umeyama(est_c, gt_c, with_scale=(align == "sim3"))
    return ((gt_c - t) @ R) / s


def _jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    import cv2

    img = image
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _close_stream(rec, tmp, path, keep: bool) -> None:
    """Flush and disconnect a recording stream; its temporary file ``tmp`` becomes ``path``
    (atomically) when ``keep``, else it is removed."""
    try:
        rec.flush()
    finally:
        rec.disconnect()
    if tmp is not None and tmp.exists():
        if keep:
            os.replace(tmp, path)
        else:
            tmp.unlink()


class VORecorder:
    """Writes a VO run into a Rerun recording, frame by frame.

    Use it as the ``observer`` of :func:`trianflow.vo.run_vo` (``recorder(i, image, pose,
    info, vo)``), or call :meth:`log_frame` with plain arrays (what :func:`record_run_dir` does).
    Call :meth:`finish` at the end (final trajectory and map, file closed and renamed into place).

    Args:
        K: ``(3,3)`` intrinsics; size: ``(H, W)``.
        save_path: the ``.rrd`` to write (written to ``<name>.tmp`` and renamed by :meth:`finish`);
            or ``spawn=True`` to stream to a viewer instead.
        timestamps: ``(N,)`` seconds of the frames (timeline ``time``), optional.
        gt_poses: ``(N,4,4)`` camera-to-world ground truth, optional (shown aligned).
        align: how GT is aligned: ``"sim3"`` (monocular), ``"se3"`` (metric) or ``"none"``.
        images: log the frames (JPEG); ``jpeg_quality`` their quality.
        max_map_points: cap of the accumulated map shown (random subsample).
        max_shown: cap of the inliers and pair points shown per frame (random subsample).
    """

    def __init__(self, K, size, *, save_path=None, spawn: bool = False, app_id: str = "trianflow_vo",
                 timestamps: Optional[Sequence[float]] = None, gt_poses: Optional[np.ndarray] = None,
                 align: str = "sim3", images: bool = True, jpeg_quality: int = 80, max_map_points: int = 20000,
                 max_shown: int = 1500, seed: int = 0):
        self.rr = require_rerun()
        self.K = np.asarray(K, np.float64)
        self.size = (int(size[0]), int(size[1]))
        self.path = Path(save_path) if save_path is not None else None
        self._tmp = self.path.with_name(self.path.name + ".tmp") if self.path is not None else None
        self.rec = open_stream(app_id, save_path=self._tmp, spawn=spawn)
        self.timestamps = None if timestamps is None else np.asarray(timestamps, np.float64)
        self.gt = None if gt_poses is None else np.asarray(gt_poses, np.float64)
        self.align = align
        self.images = images
        self.jpeg_quality = int(jpeg_quality)
        self.max_map_points = int(max_map_points)
        self.max_shown = int(max_shown)
        self.rng = np.random.default_rng(seed)
        self.centres: List[np.ndarray] = []
        self.keyframes: List[np.ndarray] = []
        self._map_xyz: List[np.ndarray] = []
        self._map_rgb: List[np.ndarray] = []
        self._map_dirty = False
        self._map_shown = 0
        self._map_frame = 0
        self._n_points = 0
        self._last_frame = -1
        self._depth = None
        self._closed = False
        self._log_static()

    # -- set-up -------------------------------------------------------------------------------
    def _log_static(self) -> None:
        rr = self.rr
        self.rec.log("world", rr.ViewCoordinates.RDF, static=True)

    def _log_pinhole(self, K) -> None:
        rr = self.rr
        self.rec.log("world/camera", rr.Pinhole(image_from_camera=np.asarray(K, np.float32),
                                                resolution=[self.size[1], self.size[0]],
                                                camera_xyz=rr.ViewCoordinates.RDF,
                                                image_plane_distance=self._plane_distance()))

    def _plane_distance(self) -> float:
        if len(self.centres) >= 2:
            steps = np.linalg.norm(np.diff(np.stack(self.centres[-20:]), axis=0), axis=1)
            steps = steps[steps > 0]
            if len(steps):
                return float(2.0 * np.median(steps))
        return 1.0

    def wrap_depth(self, depth_fn: Optional[Callable]) -> Optional[Callable]:
        """``depth_fn`` that also keeps its last output for the recording (``depth`` entity)."""
        if depth_fn is None:
            return None

        def fn(img):
            d = depth_fn(img)
            self._depth = d
            return d

        return fn

    # -- per frame ----------------------------------------------------------------------------
    def __call__(self, index: int, image: Optional[np.ndarray], pose: np.ndarray, info, vo=None) -> None:
        """Observer of :func:`~trianflow.vo.run_vo`: log frame ``index`` from the VO state."""
        inliers = getattr(vo, "last_inliers", None) if info.status in ("ok", "ok_const_scale") else None
        points = None
        if vo is not None and info.status in ("ok", "ok_const_scale") and getattr(vo, "points", None):
            if len(vo.points) > self._n_points:  # this pair added its triangulated points
                self._n_points = len(vo.points)
                _, xyz, _, rgb, _ = vo.points.last
                points = (xyz, rgb)
        mapper = getattr(vo, "mapper", None)
        keyframe = bool(mapper is not None and mapper.is_keyframe(index))
        K = None
        if mapper is not None and keyframe and not np.allclose(mapper.K, self.K):
            K = mapper.K
        self.log_frame(index, image, pose, info.status, stats=_stats(info), reason=info.reason,
                       inliers=inliers, points=points, keyframe=keyframe, K=K,
                       refresh_map=keyframe or (mapper is None and index % 10 == 0))

    def log_frame(self, index: int, image, pose: np.ndarray, status: str, *, stats: Optional[Dict[str, float]] = None,
                  reason: str = "", inliers=None, points=None, keyframe: bool = False, K=None,
                  refresh_map: bool = False, depth: Optional[np.ndarray] = None) -> None:
        """Log one frame.

        Args:
            index: frame index (timeline ``frame``).
            image: ``(H,W,3)`` uint8 RGB, a path to an image file (logged as is), or None.
            pose: ``(4,4)`` camera-to-world.
            status: the frame's VO status; ``reason``: why (text log).
            stats: scalars for the time series (``matches``, ``inliers``, ``triangulated``,
                ``shared``, ``scale``, ``frame_ms``); NaN values are skipped.
            inliers: ``(x1 (M,2) in the reference frame, x2 (M,2) in this frame)`` or None.
            points: ``(xyz (P,3) world, rgb (P,3) uint8)`` triangulated in this pair, or None.
            keyframe: whether this frame is a keyframe; K: new intrinsics (refined) or None.
            refresh_map: re-log the accumulated map (``world/map``).
            depth: ``(H,W)`` depth map to show (default: the wrapped depth function's last output).
        """
        rr, rec = self.rr, self.rec
        rec.set_time("frame", sequence=int(index))
        if self.timestamps is not None and index < len(self.timestamps):
            rec.set_time("time", duration=float(self.timestamps[index]))
        pose = np.asarray(pose, np.float64)
        self.centres.append(pose[:3, 3].copy())
        self._last_frame = int(index)
        rec.log("world/camera", rr.Transform3D(translation=pose[:3, 3].astype(np.float32),
                                               mat3x3=pose[:3, :3].astype(np.float32)))
        if K is not None:
            self.K = np.asarray(K, np.float64)
        if K is not None or len(self.centres) % 10 == 1:  # the frustum's size follows the scene scale
            self._log_pinhole(self.K)
        if image is not None and self.images:
            if isinstance(image, (str, Path)):
                rec.log("world/camera/image", rr.EncodedImage(path=str(image)))
            else:
                rec.log("world/camera/image", rr.EncodedImage(contents=_jpeg(image, self.jpeg_quality),
                                                              media_type="image/jpeg"))
        if inliers is not None and len(inliers[0]):
            x1, x2 = np.asarray(inliers[0], np.float32), np.asarray(inliers[1], np.float32)
            if len(x1) > self.max_shown:
                keep = self.rng.choice(len(x1), self.max_shown, replace=False)
                x1, x2 = x1[keep], x2[keep]
            rec.log("world/camera/image/inliers", rr.Points2D(x2, colors=[[40, 220, 60]], radii=1.5))
            rec.log("world/camera/image/flow", rr.LineStrips2D(np.stack([x1, x2], 1), colors=[[255, 200, 0]],
                                                               radii=0.5))
        else:
            rec.log("world/camera/image/inliers", rr.Clear(recursive=False))
            rec.log("world/camera/image/flow", rr.Clear(recursive=False))
        self._log_trajectory(index)
        if points is not None and len(points[0]):
            xyz = np.asarray(points[0], np.float32)
            rgb = np.asarray(points[1], np.uint8)
            if len(xyz) > self.max_shown:
                keep = self.rng.choice(len(xyz), self.max_shown, replace=False)
                xyz, rgb = xyz[keep], rgb[keep]
            rec.log("world/points", rr.Points3D(xyz, colors=rgb, radii=rr.Radius.ui_points(1.5)))
            self._map_xyz.append(xyz)
            self._map_rgb.append(rgb)
            self._map_dirty = True
        if keyframe:
            self.keyframes.append(pose[:3, 3].copy())
            rec.log("world/keyframes", rr.Points3D(np.stack(self.keyframes).astype(np.float32),
                                                   colors=[[255, 60, 200]], radii=rr.Radius.ui_points(4.0)))
        n_map = sum(len(x) for x in self._map_xyz)
        # the map is re-logged (at keyframes, or every 10 frames without them) when it grew by a
        # quarter since it was last shown, or 50 frames later: the file stays linear in the length
        if refresh_map and self._map_dirty and (n_map >= 1.25 * self._map_shown or index - self._map_frame >= 50):
            self._log_map()
            self._map_shown, self._map_frame = n_map, index
        for k, v in (stats or {}).items():
            if v is None or not np.isfinite(v):
                continue
            rec.log(f"timings/{k}" if k.endswith("_ms") else f"status/{k}", rr.Scalars(float(v)))
        if status in _STATUS_CODES:
            rec.log("status/code", rr.Scalars(float(_STATUS_CODES.index(status))))
        text = f"frame {index}: {status}" + (" (keyframe)" if keyframe else "") + (f" - {reason}" if reason else "")
        rec.log("status/log", rr.TextLog(text, level="WARN" if status in _WARN_STATUSES else "INFO"))
        depth = self._depth if depth is None else depth
        if depth is not None:
            d = np.asarray(depth, np.float32)
            rec.log("depth", rr.DepthImage(np.squeeze(d), colormap="turbo"))
            self._depth = None

    def _log_trajectory(self, index: int) -> None:
        rr = self.rr
        c = np.stack(self.centres)
        n = len(c)
        # the strip is re-logged at every frame up to 1000 frames, then every n/1000 frames
        # (the file grows with the square of the length otherwise)
        if n > 1000 and n % (n // 1000 + 1):
            return
        self.rec.log("world/trajectory", rr.LineStrips3D([c.astype(np.float32)], colors=[[30, 144, 255]]))
        if self.gt is not None and len(self.gt) >= n:
            g = gt_in_estimate_frame(c, self.gt[:n, :3, 3], self.align)
            self.rec.log("world/gt", rr.LineStrips3D([g.astype(np.float32)], colors=[[160, 160, 160]]))

    def _log_map(self) -> None:
        xyz = np.concatenate(self._map_xyz)
        rgb = np.concatenate(self._map_rgb)
        if len(xyz) > self.max_map_points:
            keep = self.rng.choice(len(xyz), self.max_map_points, replace=False)
            xyz, rgb = xyz[keep], rgb[keep]
            self._map_xyz, self._map_rgb = [xyz], [rgb]
        self.rec.log("world/map", self.rr.Points3D(xyz, colors=rgb, radii=self.rr.Radius.ui_points(1.0)))
        self._map_dirty = False

    # -- end ----------------------------------------------------------------------------------
    def finish(self, poses: Optional[np.ndarray] = None, map_xyz: Optional[np.ndarray] = None,
               map_rgb: Optional[np.ndarray] = None, keyframes: Optional[Sequence[int]] = None,
               loops: Optional[Sequence[tuple]] = None) -> Optional[Path]:
        """Log the final trajectory ``poses (N,4,4)`` (after bundle adjustment / ground scale / loop
        closure), the final map, keyframes and loop edges (``loops``: ``(query, candidate)`` frame pairs,
        drawn as orange segments between the two cameras) at the last frame, close the stream and move
        the ``.rrd`` into place. Returns the file written (None when streaming to a viewer)."""
        if self._closed:
            return self.path
        rr, rec = self.rr, self.rec
        if poses is not None and len(poses):
            poses = np.asarray(poses, np.float64)
            rec.set_time("frame", sequence=max(self._last_frame, len(poses) - 1))
            c = poses[:, :3, 3]
            rec.log("world/trajectory", rr.LineStrips3D([c.astype(np.float32)], colors=[[30, 144, 255]]))
            if self.gt is not None and len(self.gt) >= len(c):
                g = gt_in_estimate_frame(c, self.gt[: len(c), :3, 3], self.align)
                rec.log("world/gt", rr.LineStrips3D([g.astype(np.float32)], colors=[[160, 160, 160]]))
            rec.log("world/camera", rr.Transform3D(translation=c[-1].astype(np.float32),
                                                   mat3x3=poses[-1, :3, :3].astype(np.float32)))
            if keyframes is not None and len(keyframes):
                kf = np.asarray([k for k in keyframes if 0 <= k < len(poses)], np.int64)
                rec.log("world/keyframes", rr.Points3D(c[kf].astype(np.float32), colors=[[255, 60, 200]],
                                                       radii=rr.Radius.ui_points(4.0)))
            pairs = [(int(a), int(b)) for a, b in (loops or ()) if 0 <= int(a) < len(c) and 0 <= int(b) < len(c)]
            if pairs:
                segs = [np.stack([c[a], c[b]]).astype(np.float32) for a, b in pairs]
                rec.log("world/loops", rr.LineStrips3D(segs, colors=[[255, 140, 0]]))
            if map_xyz is not None and len(map_xyz):
                xyz = np.asarray(map_xyz, np.float32)
                rgb = None if map_rgb is None else np.asarray(map_rgb, np.uint8)
                if len(xyz) > self.max_map_points:
                    keep = self.rng.choice(len(xyz), self.max_map_points, replace=False)
                    xyz, rgb = xyz[keep], (None if rgb is None else rgb[keep])
                rec.log("world/map", rr.Points3D(xyz, colors=rgb, radii=rr.Radius.ui_points(1.0)))
        self.close()
        return self.path

    def close(self, keep: bool = True) -> None:
        """Flush and close the stream; ``keep=False`` removes the partial file (an error)."""
        if not self._closed:
            self._closed = True
            _close_stream(self.rec, self._tmp, self.path, keep)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(keep=exc_type is None)
        return False


def _stats(info) -> Dict[str, float]:
    return {"matches": info.matches, "inliers": info.inliers, "triangulated": info.triangulated,
            "shared": info.shared, "scale": info.scale, "frame_ms": 1000.0 * info.seconds}


def _num(v, default=float("nan")) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def record_run_dir(run, *, save_path=None, spawn: bool = False, gt_poses: Optional[np.ndarray] = None,
                   images: bool = True) -> Optional[Path]:
    """Build the recording of a finished run directory (a :class:`~trianflow.run_dir.RunData`):
    the final poses frame by frame, ``frames.csv`` as time series and status log, the pair points
    of ``points.npz`` (their inlier correspondences on the images), the keyframes and the map of
    ``tracks.npz``, and the images named in ``run.json`` when their folder still exists.
    Returns the file written (None when streaming to a viewer)."""
    meta = run.meta
    align = (meta.get("evaluation") or {}).get("align") or ("se3" if meta.get("input", {}).get("stereo") else "sim3")
    rec = VORecorder(run.K, run.size, save_path=save_path, spawn=spawn, app_id="trianflow_view",
                     timestamps=run.timestamps, gt_poses=gt_poses, align=align, images=images)
    try:
        files = _image_files(run) if images else None
        pts = run.points
        by_frame: Dict[int, np.ndarray] = {}
        if pts is not None and len(pts.get("frame", [])):
            order = np.argsort(pts["frame"], kind="stable")
            f_sorted = pts["frame"][order]
            starts = np.flatnonzero(np.r_[True, f_sorted[1:] != f_sorted[:-1]])
            for s, e in zip(starts, np.r_[starts[1:], len(order)]):
                by_frame[int(f_sorted[s])] = order[s:e]
        kf = set()
        if run.tracks is not None and "keyframes" in run.tracks:
            kf = {int(k) for k in run.tracks["keyframes"]}
        elif meta.get("refine"):
            kf = {int(k) for k in meta["refine"].get("keyframes", [])}
        rows = {int(_num(r.get("index"), -1)): r for r in run.frames}
        for i in range(len(run.poses)):
            r = rows.get(i, {})
            ref = int(_num(r.get("ref"), -1))
            idx = by_frame.get(ref) if ref >= 0 else None
            inliers = points = None
            if idx is not None and "xy2" in pts:
                inliers = (pts["xy"][idx], pts["xy2"][idx])
                points = (pts["xyz"][idx], pts["rgb"][idx] if "rgb" in pts else np.full((len(idx), 3), 200, np.uint8))
            stats = {k: _num(r.get(k)) for k in ("matches", "inliers", "triangulated", "shared", "scale")}
            stats["frame_ms"] = 1000.0 * _num(r.get("seconds"))
            rec.log_frame(i, files[i] if files else None, run.poses[i], r.get("status", ""), stats=stats,
                          reason=r.get("reason", ""), inliers=inliers, points=points, keyframe=i in kf,
                          refresh_map=False)
        map_xyz = map_rgb = None
        if run.tracks is not None and len(run.tracks.get("xyz", [])):
            map_xyz, map_rgb = run.tracks["xyz"], run.tracks.get("rgb")
        elif pts is not None and len(pts.get("xyz", [])):
            map_xyz, map_rgb = pts["xyz"], pts.get("rgb")
        from trianflow.run_dir import loop_pairs

        return rec.finish(run.poses, map_xyz, map_rgb, sorted(kf), loops=loop_pairs(meta.get("loops")))
    except BaseException:
        rec.close(keep=False)
        raise


def _image_files(run) -> Optional[List[Path]]:
    """The frames' image files named in ``run.json`` (``input.image_dir`` + ``input.files``), or
    None when the run has none or the folder is gone."""
    inp = run.meta.get("input", {})
    d, files = inp.get("image_dir"), inp.get("files")
    if not d or not files or len(files) < len(run.poses):
        return None
    paths = [Path(d) / f for f in files[: len(run.poses)]]
    if not paths[0].is_file():
        log.warning("%s: the run's images are gone; the recording has no images", paths[0])
        return None
    return paths


def read_recording(path, timeline: str = "frame") -> Dict[str, List[int]]:
    """Read an ``.rrd`` back with Rerun's chunk reader: ``{entity path: sorted values of the
    sequence ``timeline`` (``"frame"`` for VO, ``"step"`` for training) at which it was logged}``
    (``[]`` for static-only entities)."""
    rr = require_rerun()
    from rerun.chunk import RrdReader

    out: Dict[str, set] = {}
    for chunk in RrdReader(str(path)).stream().to_chunks():
        ent = chunk.entity_path
        s = out.setdefault(ent, set())
        if timeline in chunk.timeline_names:
            col = chunk.to_record_batch().column(timeline)
            s.update(int(v) for v in col.to_pylist() if v is not None)
    del rr
    return {k: sorted(v) for k, v in out.items()}


class TrainRecorder:
    """A tensorboard-``SummaryWriter``-like sink (``add_scalar``, ``add_image``, ``flush``,
    ``close``) that writes the training logs into a Rerun recording on the timeline ``step``:
    losses and ``train/*`` as time series under their tensorboard tags, the GT metrics of the
    batches (``gt_epe``, ``gt_abs_rel``, ... terms) also under ``metrics/``, and the flow / depth
    images as images. The trainer tees its tensorboard writer into it (``trianflow train --viz``).

    Args:
        save_path: the ``.rrd`` to write (``.tmp`` until :meth:`close`), or ``spawn=True``.
    """

    def __init__(self, save_path=None, spawn: bool = False, app_id: str = "trianflow_train"):
        self.rr = require_rerun()
        self.path = Path(save_path) if save_path is not None else None
        self._tmp = self.path.with_name(self.path.name + ".tmp") if self.path is not None else None
        self.rec = open_stream(app_id, save_path=self._tmp, spawn=spawn)
        self._closed = False

    def add_scalar(self, tag: str, value, step: int) -> None:
        v = float(value)
        if not np.isfinite(v):
            return
        self.rec.set_time("step", sequence=int(step))
        self.rec.log(tag, self.rr.Scalars(v))
        name = tag.rsplit("/", 1)[-1]
        if name.startswith("gt_"):
            self.rec.log(f"metrics/{name[3:]}", self.rr.Scalars(v))

    def add_image(self, tag: str, image, step: int) -> None:
        """``image``: ``(3,H,W)`` float in [0, 1] (tensor or array), as tensorboard takes it."""
        a = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
        if a.ndim == 3 and a.shape[0] in (1, 3):
            a = np.moveaxis(a, 0, -1)
        a = np.clip(np.nan_to_num(a.astype(np.float32)), 0, 1)
        self.rec.set_time("step", sequence=int(step))
        self.rec.log(tag, self.rr.EncodedImage(contents=_jpeg((a * 255 + 0.5).astype(np.uint8).squeeze(), 90),
                                               media_type="image/jpeg"))

    def flush(self) -> None:
        self.rec.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _close_stream(self.rec, self._tmp, self.path, keep=True)
