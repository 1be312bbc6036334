"""``trianflow vo SEQUENCE --out RUN_DIR``: visual odometry on an image sequence or a video."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trianflow.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "vo",
        help="visual odometry on an image sequence or video",
        description="Run visual odometry on a KITTI odometry folder (image_2/ or image_0/ + calib.txt), "
        "a TUM RGB-D folder (rgb.txt), a plain image folder (--intrinsics) or a video file (--intrinsics). "
        "Writes RUN_DIR/poses.txt (KITTI), poses_tum.txt, frames.csv, run.json and points.npz.",
    )
    p.add_argument("sequence", metavar="SEQUENCE", help="sequence folder or video file")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder")
    p.add_argument("--intrinsics", metavar="fx,fy,cx,cy", help="camera intrinsics (overrides calib files)")
    p.add_argument("--stereo", action="store_true", help="metric scale from the right camera (KITTI image_1/image_3)")
    p.add_argument("--max-frames", type=int, metavar="N", help="use only the first N frames")
    p.add_argument("--fps", type=float, help="frame rate for timestamps of image folders and videos")
    p.add_argument("--backend", choices=("opencv", "pycolmap", "torch"), default="opencv",
                   help="robust essential-matrix backend (default: opencv USAC MAGSAC++)")
    p.add_argument("--dis-preset", choices=("auto", "ultrafast", "fast", "balanced", "medium"), default="auto",
                   help="OpenCV DIS optical-flow preset when no --flow network is given (default: auto = fast "
                   "for frames >= 960 px wide, else medium; balanced is denser and slower)")
    p.add_argument("--flow", metavar="CKPT", help="FlowNet checkpoint: network flow instead of DIS")
    p.add_argument("--depth", metavar="CKPT", help="DepthNet checkpoint: per-pair scale from predicted depth")
    p.add_argument("--device", default="cpu", help="torch device for networks/geometry (cpu, cuda, cuda:1)")
    p.add_argument("--refine", choices=("none", "ba"), default="ba",
                   help="ba (default): keyframes + sliding-window bundle adjustment with pycolmap, scale kept "
                   "through the map (also writes tracks.npz, the adjusted map); none: the faster pair-by-pair VO")
    p.add_argument("--camera-height", metavar="H",
                   help="metres of the camera above a roughly planar ground (e.g. 1.65 for KITTI): metric "
                   "monocular scale from the ground plane under the camera (not with --stereo)")
    p.add_argument("--no-ground-scale", action="store_true",
                   help="with --refine ba and no --camera-height: do not hold the camera height above a visible "
                   "ground constant (the scale then comes from the map alone)")
    p.add_argument("--ground-flow", action="store_true",
                   help="also find the road plane under keyframes whose map points show none, from the dense flow "
                   "or, where no plane explains it (a fast road with little texture), by aligning the road's grey "
                   "levels (a rear camera, a road with few tracked points; measured: KITTI 03 reversed t_err 4.6 -> "
                   "1.35 %%, forwards 0.53 -> 0.80 %%; see docs/RESULTS.md)")
    p.add_argument("--no-loop", action="store_true",
                   help="no loop closure (default with --refine ba: keyframes that revisit an earlier place are "
                   "recognised, verified and the trajectory is corrected by a Sim(3) pose graph)")
    p.add_argument("--strict", action="store_true",
                   help="stop with an error at an unreadable frame (default: skip it, bridged like a black frame)")
    p.add_argument("--refine-intrinsics", action="store_true",
                   help="with --refine ba: also refine fx, fy, cx, cy (default: fixed)")
    p.add_argument("--ba-window", type=int, default=8, metavar="N",
                   help="with --refine ba: keyframes adjusted per window (default 8; 20 older ones are held fixed)")
    p.add_argument("--samples", type=int, default=6000, help="correspondences per pair (default 6000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="threads the run may use (default: the cores this process may run on): the size of OpenCV's "
                   "thread pool and, with N >= 2, a worker that reads and decodes the next frame and computes its "
                   "flow while this one is processed (--threads 1: one thread, no worker); the choice is in "
                   "run.json (\"threads\")")
    p.add_argument("--gt", metavar="GT", help="ground-truth trajectory: evaluate after the run (default: the "
                   "sequence's own poses when it has them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fov", type=float, metavar="DEG",
                   help="horizontal field of view in degrees when the intrinsics are unknown (a phone or dash-cam "
                   "video): pinhole K with fx = fy = (W/2)/tan(fov/2) and the principal point at the centre; "
                   "add --refine-intrinsics to refine it in the bundle adjustment (not with --intrinsics)")
    p.add_argument("--viz", nargs="?", const="auto", choices=("auto", "spawn", "save"), metavar="auto|spawn|save",
                   help="stream the run to the Rerun 3D viewer (pip install trianflow[viz]): with a display it "
                   "spawns the viewer, without one (or with --viz save) it writes RUN_DIR/recording.rrd "
                   "(open it with `rerun RUN_DIR/recording.rrd`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from trianflow.data import open_sequence
    from trianflow.vo import VOConfig, run_vo
    from trianflow.run_dir import loop_pairs, save_run

    viz_mode = None
    if getattr(args, "viz", None):  # before anything else: a missing extra stops the run before any frame
        from trianflow.viz.rerun_log import require_rerun, resolve_mode

        require_rerun()
        viz_mode = resolve_mode(args.viz)
    fov = getattr(args, "fov", None)
    if fov is not None:
        from trianflow.api import check_fov

        check_fov(fov)
        if args.intrinsics:
            raise InputError("--fov and --intrinsics both give the camera intrinsics: give only one")
    if args.max_frames is not None and args.max_frames < 2:
        raise InputError(f"--max-frames {args.max_frames}: visual odometry needs at least 2 frames")
    if args.samples < 8:
        raise InputError(f"--samples {args.samples}: need at least 8 correspondences per pair")
    if args.refine == "none" and (args.refine_intrinsics or args.ba_window != 8):
        raise InputError("--refine-intrinsics / --ba-window need --refine ba")
    if args.threads < 0:
        raise InputError(f"--threads {args.threads}: give a positive number of threads (or leave it out: all cores)")
    if args.ba_window < 1:
        raise InputError(f"--ba-window {args.ba_window}: give at least 1 keyframe")
    camera_height = _camera_height(args.camera_height, args.stereo)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder; give a folder path")
    if fov is not None:
        from trianflow.api import open_sequence as open_with_fov

        seq = open_with_fov(args.sequence, fov=fov, stereo=args.stereo, max_frames=args.max_frames, fps=args.fps)
    else:
        seq = open_sequence(args.sequence, intrinsics=args.intrinsics, stereo=args.stereo,
                            max_frames=args.max_frames, fps=args.fps)
    cfg = VOConfig(ransac_backend=args.backend, dis_preset=args.dis_preset, stereo=args.stereo,
                   refine=args.refine, ba_window=args.ba_window, ba_refine_intrinsics=args.refine_intrinsics,
                   num_samples=args.samples, seed=args.seed, device=_device(args.device),
                   camera_height=camera_height, ground_scale="off" if args.no_ground_scale else "auto",
                   skip_unreadable=not args.strict, threads=args.threads,
                   loop="off" if args.no_loop else "auto", ground_flow=args.ground_flow)
    flow_fn = depth_fn = None
    if args.flow or args.depth:
        from trianflow.inference import load_depth_fn, load_flow_fn

        if args.flow:
            flow_fn = load_flow_fn(args.flow, device=cfg.device)
            cfg.flow = "network"
        if args.depth:
            depth_fn = load_depth_fn(args.depth, device=cfg.device)
    bar = tqdm(total=len(seq), unit="frame", desc=f"vo {seq.name}", disable=args.no_progress, file=sys.stderr)

    def progress(info):
        bar.update(1)
        if info.status not in ("first",):
            bar.set_postfix(status=info.status, inl=info.inliers, refresh=False)

    recorder = None
    if viz_mode is not None:
        from trianflow.viz.rerun_log import VORecorder

        out.mkdir(parents=True, exist_ok=True)
        recorder = VORecorder(seq.K, seq.size, save_path=out / "recording.rrd" if viz_mode == "save" else None,
                              spawn=viz_mode == "spawn", timestamps=seq.timestamps, gt_poses=seq.gt_poses,
                              align="se3" if args.stereo else "sim3")
        depth_fn = recorder.wrap_depth(depth_fn)
    with _StopOnSignal() as stop:
        try:
            result = run_vo(seq, cfg, flow_fn=flow_fn, depth_fn=depth_fn, progress=progress, should_stop=stop,
                            observer=recorder)
        except BaseException:
            if recorder is not None:
                recorder.close(keep=False)
            raise
        finally:
            bar.close()
    if recorder is not None:
        kfs = map_xyz = map_rgb = None
        if result.mapping is not None:
            kfs = result.mapping["summary"]["keyframes"]
            if len(result.mapping["map"]["xyz"]):
                map_xyz, map_rgb = result.mapping["map"]["xyz"], result.mapping["map"]["rgb"]
        if map_xyz is None and result.points is not None:
            map_xyz, map_rgb = result.points["xyz"], result.points["rgb"]
        recorder.finish(result.poses, map_xyz, map_rgb, kfs, loops=loop_pairs(result.loops))
    extra = {"interrupted": result.interrupted, "warnings": result.warnings, "threads": result.timings["threads"]}
    if fov is not None:
        extra["fov_deg"] = fov  # the intrinsics came from --fov (run.json "intrinsics" holds that K)
    if result.ground is not None:
        extra["ground"] = result.ground
    gt = args.gt
    metrics = None
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if result.interrupted:
        print(f"interrupted by {result.interrupted} after {len(result.poses)} of {len(seq)} frames: "
              "writing the frames done so far", file=sys.stderr)
    if gt or seq.gt_poses is not None:
        try:
            metrics = _evaluate(result, seq, gt, args.stereo)
        except InputError as exc:  # e.g. an all-static run cannot be aligned: keep the trajectory
            if gt:
                raise
            print(f"warning: no evaluation against the sequence's ground truth: {exc}", file=sys.stderr)
        if metrics is not None:
            extra["evaluation"] = metrics
    save_run(out, result, seq, extra=extra)
    counts = result.status_counts()
    t = result.timings
    print(f"{seq.name}: {len(result.poses)} frames, {t['fps']:.1f} frames/s "
          f"(flow {t['flow_ms']:.0f} ms, selection {t['select_ms']:.0f} ms, geometry {t['geometry_ms']:.0f} ms per pair)")
    print("status: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if metrics is not None:
        print(f"ATE RMSE ({metrics['align']}-aligned): {metrics['ape_rmse']:.4f} m over {metrics['path_length']:.1f} m "
              f"({100 * metrics['ape_rmse'] / max(metrics['path_length'], 1e-9):.2f} % of the path)")
    if result.mapping is not None:
        s = result.mapping["summary"]
        final = s.get("final") or {}
        print(f"bundle adjustment: {len(s['keyframes'])} keyframes, {s['windows_adjusted']} of {s['windows']} windows "
              f"adjusted ({1000 * s['ba_seconds'] / max(len(seq) - 1, 1):.0f} ms per frame)"
              + (f", final adjustment of all keyframes {final.get('seconds', 0):.1f} s"
                 if final.get("adjusted") else ""))
    written = "poses.txt, poses_tum.txt, frames.csv, run.json, points.npz"
    if result.mapping is not None:
        written += ", tracks.npz"
    if result.ground is not None:
        g = result.ground
        if not g["planes_found"]:
            what = "the scale is the one chained through the map"
        elif g["mode"] == "metric":
            what = f"metric from --camera-height {g['camera_height']:g} m"
        else:
            what = "drift held by a constant height above the ground"
        print(f"ground plane: found at {g['planes_found']} of {g['evaluated']} evaluated frames ({what})")
    if result.loops is not None:
        print(_loop_line(result.loops))
    print(f"wrote {out}/{written}")
    if recorder is not None:
        print("viewer: streamed to the Rerun viewer" if viz_mode == "spawn" else
              f"viewer: wrote {out}/recording.rrd (open it with `rerun {out}/recording.rrd`)")
    if result.interrupted:
        return 128 + _SIGNALS.get(result.interrupted, 2)
    return 0


_SIGNALS = {"SIGINT": 2, "SIGTERM": 15}


class _StopOnSignal:
    """Context manager: SIGINT / SIGTERM set a flag the VO loop polls (``__call__`` returns the
    signal name), so an interrupted run still writes every output for the frames done so far.
    A second signal while the outputs are written is let through (default handler)."""

    def __init__(self):
        self.reason = None
        self._old = {}

    def __enter__(self):
        import signal

        try:  # pycolmap installs glog's failure handler for SIGTERM when it is imported: import it first
            import pycolmap  # noqa: F401
        except ImportError:  # pragma: no cover - a dependency, but the plain VO does not need it
            pass
        for name in _SIGNALS:
            sig = getattr(signal, name)
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, no stopping
                pass
        return self

    def _handle(self, signum, frame):
        import signal

        self.reason = signal.Signals(signum).name
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))  # a second one ends the process

    def __call__(self):
        return self.reason

    def __exit__(self, *exc):
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _camera_height(text, stereo: bool):
    """``--camera-height`` as a float > 0 (one-line InputError otherwise)."""
    if text is None:
        return None
    try:
        h = float(text)
    except ValueError:
        raise InputError(f"--camera-height {text!r}: give the camera's height above the ground in metres, "
                         "e.g. 1.65") from None
    if not (h > 0 and h < float("inf")):
        raise InputError(f"--camera-height {text}: must be a positive number of metres, e.g. 1.65")
    if stereo:
        raise InputError("--camera-height and --stereo both set the metric scale: give only one")
    return h


def _device(name: str) -> str:
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name} requested but torch.cuda.is_available() is False: use --device cpu "
                         "or install a CUDA build of torch")
    return name


def _evaluate(result, seq, gt_path, stereo: bool):
    """APE against GT (given file or the sequence's own); returns the metrics dict or None."""
    from trianflow.evaluation.trajectory import evaluate_trajectory

    gt = gt_path if gt_path else seq.gt_poses
    est = result.poses
    if not gt_path:
        gt = seq.gt_poses[: len(est)]
    m = evaluate_trajectory(est, gt, align="se3" if stereo else "sim3")
    d = m.to_dict()
    return {k: d[k] for k in ("ape_rmse", "ape_mean", "rpe_trans_rmse", "rpe_rot_rmse", "kitti_t_err",
                              "kitti_r_err", "align", "scale", "path_length") if k in d}


def _loop_line(loops: dict) -> str:
    """One line on the loop closure of a run (``VOResult.loops``)."""
    from trianflow.run_dir import loop_pairs

    head = (f"loop closure: {loops['accepted']} loop(s) accepted ({loops['verified']} verified of "
            f"{loops['proposals']} proposals over {loops['keyframes']} keyframes, {loops['seconds']:.1f} s)")
    if not loops["accepted"]:
        return head
    pairs = loop_pairs(loops)
    span = f"frames {min(q for q, _ in pairs)}-{max(q for q, _ in pairs)} <-> {min(c for _, c in pairs)}-" \
           f"{max(c for _, c in pairs)}"
    return f"{head}: {span}, largest correction {loops['max_correction']:.3g} (trajectory units)"

