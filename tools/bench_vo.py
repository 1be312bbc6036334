#!/usr/bin/env python
"""Benchmark VO: speed and accuracy of trianflow against pycolmap's incremental mapper.

Prints ONE JSON line. Modes (``--modes``, comma separated):

- ``default``: ``trianflow vo`` as it runs with no option (keyframes + sliding-window bundle
  adjustment, scale held through the map and by the ground under the camera where it is seen):
  frames/s end to end incl. image reading, per-stage milliseconds, Sim3-aligned ATE RMSE and its
  percentage of the GT path length, and the KITTI drift ``kitti_t_err`` (%) / ``kitti_r_err``
  (deg/100 m) over the segments that fit the path (100 m, 200 m, ...; ``null`` below 100 m);
- ``plain``: ``--refine none``, the pair-by-pair VO;
- ``ba``: the bundle adjustment without the ground scale (``--no-ground-scale``);
- ``height``: the default with ``--camera-height`` (``--camera-height H``, default 1.65 as on
  KITTI): metric, so also the SE(3)-aligned ATE and the path-length ratio without scale alignment;
- ``network``: network flow (``--flow CKPT``, optional ``--depth CKPT``), on ``--device``;
- ``pycolmap``: pycolmap SIFT + sequential matching + incremental mapping with the known
  intrinsics; ATE and KITTI drift over the frames it registered (reported), seconds. It runs on
  the first ``--pycolmap-frames`` frames (default: all); ``frames`` in its entry says how many.

Usage: python tools/bench_vo.py [SEQUENCE] [--max-frames N] [--modes plain,pycolmap]
SEQUENCE defaults to ../shared/data/kitti_odom_straight (relative to the repository root); the word
``synthetic`` renders the built-in synthetic scene (40 frames at 192x640, exact ground truth). With ground truth
the output also holds the per-pair rotation error (deg/frame) and translation-direction error (deg).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEQ = ROOT.parent / "shared" / "data" / "kitti_odom_straight"


def ate(est, gt, align="sim3"):
    from trianflow.evaluation.trajectory import evaluate_trajectory

    m = evaluate_trajectory(est, gt, align=align).to_dict()
    return {"ate_rmse": m["ape_rmse"], "ate_pct_of_path": 100 * m["ape_rmse"] / max(m["path_length"], 1e-9),
            "kitti_t_err": m["kitti_t_err"], "kitti_r_err": m["kitti_r_err"],
            "kitti_segments": m["kitti_n_segments"],
            "rpe_trans_rmse": m["rpe_trans_rmse"], "rpe_rot_rmse": m["rpe_rot_rmse"], "path_length": m["path_length"],
            "scale": m["scale"]}


def _length(poses):
    return float(np.linalg.norm(np.diff(np.asarray(poses)[:, :3, 3], axis=0), axis=1).sum())


def bench_trianflow(seq, mode, args):
    import torch

    from trianflow.odometry import VOConfig, run_vo

    cfg = VOConfig(dis_preset=args.dis_preset, ransac_backend=args.backend, device=args.device)
    flow_fn = depth_fn = None
    if mode == "plain":
        cfg.refine = "none"
    if mode == "ba":
        cfg.refine = "ba"
        cfg.ground_scale = "off"
    if mode == "height":
        cfg.camera_height = args.camera_height
    if mode == "network":
        if not args.flow:
            return {"skipped": "network mode needs --flow CKPT"}
        from trianflow.inference import load_depth_fn, load_flow_fn

        flow_fn = load_flow_fn(args.flow, device=args.device)
        depth_fn = load_depth_fn(args.depth, device=args.device) if args.depth else None
        cfg.flow = "network"
    # warm-up on the first two frames (lazy initialisation of OpenCV / torch kernels)
    run_vo(_Head(seq, 3), cfg, flow_fn=flow_fn, depth_fn=depth_fn, keep_points=False)
    t0 = time.perf_counter()
    res = run_vo(seq, cfg, flow_fn=flow_fn, depth_fn=depth_fn, keep_points=False)
    total = time.perf_counter() - t0
    out = {
        "seconds": total,
        "fps": len(seq) / total,
        "flow_ms": res.timings["flow_ms"],
        "select_ms": res.timings["select_ms"],
        "geometry_ms": res.timings["geometry_ms"],
        "status": res.status_counts(),
        "device": args.device if mode == "network" else "cpu",
    }
    if mode == "network" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    if seq.gt_poses is not None:
        from trianflow.evaluation.relative import relative_pose_errors

        out.update(ate(res.poses, seq.gt_poses[: len(res.poses)]))
        if mode == "height":
            se3 = ate(res.poses, seq.gt_poses[: len(res.poses)], align="se3")
            out["se3_ate_rmse"], out["se3_ate_pct_of_path"] = se3["ate_rmse"], se3["ate_pct_of_path"]
            out["length_ratio_unaligned"] = _length(res.poses) / max(_length(seq.gt_poses[: len(res.poses)]), 1e-9)
            out["ground"] = res.ground
        rel = relative_pose_errors(res.poses, seq.gt_poses[: len(res.poses)])
        out.update({k: rel[k] for k in ("rot_err_deg_mean", "rot_err_deg_max", "trans_dir_err_deg_median",
                                        "trans_dir_err_deg_max") if k in rel})
    return out


class _Head:
    """The first n frames of a sequence (same interface as FrameSequence for run_vo)."""

    def __init__(self, seq, n):
        self.seq, self.n = seq, min(n, len(seq))
        self.K, self.size, self.baseline, self.has_stereo = seq.K, seq.size, seq.baseline, seq.has_stereo
        self.timestamps = seq.timestamps[: self.n]
        self.gt_poses = None

    def __len__(self):
        return self.n

    def read(self, i):
        return self.seq.read(i)

    def read_right(self, i):
        return self.seq.read_right(i)


def pycolmap_poses(seq, frames, self_calibrate=False):
    """pycolmap SIFT + sequential matching + incremental mapping with the known intrinsics on the
    frames ``frames`` (indices into ``seq``). Returns ``(poses, seconds, params)``: ``{frame: (4,4) c2w}``
    of the registered frames of the largest model (empty if it did not initialise), the mapping time and
    the camera parameters it ended with (COLMAP's, pixel centres at +0.5). ``self_calibrate``: a RADIAL
    camera (f, cx, cy, k1, k2) started at the known intrinsics and refined by its bundle adjustments."""
    import cv2
    import pycolmap

    frames = [int(i) for i in frames]
    tmp = Path(tempfile.mkdtemp(prefix="bench_colmap_"))
    try:
        img_dir = tmp / "images"
        img_dir.mkdir()
        names = {}
        for i in frames:
            name = f"{i:06d}.png"
            cv2.imwrite(str(img_dir / name), cv2.cvtColor(seq.read(i), cv2.COLOR_RGB2BGR))
            names[name] = i
        K = seq.K
        t0 = time.perf_counter()
        db = tmp / "database.db"
        reader = pycolmap.ImageReaderOptions()
        # COLMAP puts pixel centres at +0.5
        if self_calibrate:
            reader.camera_model = "RADIAL"
            reader.camera_params = f"{0.5 * (K[0, 0] + K[1, 1])},{K[0, 2] + 0.5},{K[1, 2] + 0.5},0,0"
        else:
            reader.camera_model = "PINHOLE"
            reader.camera_params = f"{K[0, 0]},{K[1, 1]},{K[0, 2] + 0.5},{K[1, 2] + 0.5}"
        pycolmap.extract_features(db, img_dir, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                  device=pycolmap.Device.cpu)
        pycolmap.match_sequential(db, device=pycolmap.Device.cpu)
        opts = pycolmap.IncrementalPipelineOptions()
        opts.ba_refine_focal_length = bool(self_calibrate)
        opts.ba_refine_principal_point = bool(self_calibrate)
        opts.ba_refine_extra_params = bool(self_calibrate)
        # forward motion (driving): the defaults reject every initial pair (max forward motion 0.95,
        # min triangulation angle 16 deg); relax them as COLMAP users do for video
        opts.mapper.init_max_forward_motion = 1.0
        opts.mapper.init_min_tri_angle = 4.0
        opts.random_seed = 0
        recs = pycolmap.incremental_mapping(db, img_dir, tmp / "sparse", options=opts)
        seconds = time.perf_counter() - t0
        poses, params = {}, None
        if recs:
            rec = max(recs.values(), key=lambda r: r.num_reg_images())
            params = [float(v) for v in next(iter(rec.cameras.values())).params]
            for img in rec.images.values():
                if not img.has_pose:
                    continue
                T = np.eye(4)
                T[:3, :] = img.cam_from_world().matrix()
                poses[names[img.name]] = np.linalg.inv(T)
        return poses, seconds, params
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_pycolmap(seq, args):
    n = min(args.pycolmap_frames or len(seq), len(seq))
    poses, seconds, _ = pycolmap_poses(seq, range(n))
    if not poses:
        return {"seconds": seconds, "registered": 0, "note": "pycolmap failed to initialise"}
    idx = sorted(poses)
    out = {"seconds": seconds, "registered": len(idx), "frames": n}
    if seq.gt_poses is not None and len(idx) >= 3:
        est = np.stack([poses[i] for i in idx])
        out.update(ate(est, np.asarray(seq.gt_poses)[idx]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sequence", nargs="?", default=str(DEFAULT_SEQ))
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--intrinsics")
    ap.add_argument("--modes", default="default,plain,pycolmap")
    ap.add_argument("--camera-height", type=float, default=1.65, help="metres, for the 'height' mode")
    ap.add_argument("--pycolmap-frames", type=int, help="run pycolmap on this prefix only (it is slow)")
    ap.add_argument("--dis-preset", default="auto")
    ap.add_argument("--backend", default="opencv")
    ap.add_argument("--flow")
    ap.add_argument("--depth")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    from trianflow.data import open_sequence

    if args.sequence == "synthetic":
        from trianflow.data.synthetic import synthetic_sequence

        seq = synthetic_sequence(n_frames=args.max_frames or 40)
        seq.render_all()
    else:
        seq = open_sequence(args.sequence, intrinsics=args.intrinsics, max_frames=args.max_frames)
    result = {
        "sequence": str(args.sequence),
        "frames": len(seq),
        "size": list(seq.size),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if mode == "pycolmap":
            result["pycolmap"] = bench_pycolmap(seq, args)
        elif mode in ("default", "plain", "ba", "height", "network"):
            result[mode] = bench_trianflow(seq, mode, args)
        else:
            ap.error(f"unknown mode {mode!r}")
    pc = result.get("pycolmap", {})
    if pc.get("seconds") and pc.get("frames"):
        per_frame = pc["seconds"] / pc["frames"]  # per-frame: pycolmap may have run on a prefix
        for mode in ("default", "plain"):
            if "seconds" in result.get(mode, {}):
                result[f"speedup_vs_pycolmap_{mode}"] = per_frame / (result[mode]["seconds"] / len(seq))
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
