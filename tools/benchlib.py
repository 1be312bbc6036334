"""Helpers shared by the benchmark tools of ``tools/``; a plain module, not a tool (no ``main``).

No tool imports another tool: what two of them need lives here. A tool imports it after putting its own
folder on ``sys.path`` (``sys.path.insert(0, str(Path(__file__).resolve().parent))``, which also works when
a test loads the tool from its file). Importing this module is light: torch, OpenCV, pycolmap and the
trianflow modules are imported inside the functions that use them.

Sections:

- paths and output: :data:`ROOT`, :data:`DATA`, :data:`DEFAULT_SEQ`, :func:`print_json`;
- VO benchmarks: :func:`load_sequence` (a folder or the word ``synthetic``), :class:`HeadSequence`,
  :data:`VO_MODES` / :func:`vo_config` (the VO as ``trianflow vo`` runs it in each benchmark mode),
  :func:`run_timed_vo`, :func:`run_default_vo`, :func:`vo_speed`, the evaluation against ground truth
  (:func:`trajectory_metrics`, :func:`vo_accuracy`, :func:`ate_pct`, :func:`path_length`), replays of a KITTI
  folder (:data:`REPLAYS`, :func:`write_replay`) and pycolmap's incremental mapper as the peer
  (:func:`pycolmap_poses`, :func:`pycolmap_benchmark`);
- training benchmarks: :func:`synthetic_batch`, :func:`time_task`, :data:`STEREO_RECIPES` /
  :func:`bench_recipe`, and the options both training tools take (:func:`add_bench_args`,
  :func:`resolve_bench_args`).

Poses are ``(N,4,4)`` camera-to-world arrays (column vectors), as everywhere in trianflow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
"""The repository root."""
DATA = ROOT.parent / "shared" / "data"
"""The shared data folder beside the repository."""
DEFAULT_SEQ = DATA / "kitti_odom_straight"
"""The VO tools' default sequence: the 51-frame KITTI snippet."""


def split_vo_flags(argv) -> tuple:
    """``(the tool's own arguments, the VO options after "--")`` of a command line (``sys.argv[1:]`` for None)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def print_json(obj, indent: int | None = None) -> None:
    """Print ``obj`` as the tool's JSON output (one line unless ``indent`` is given)."""
    print(json.dumps(obj, indent=indent))


# ----------------------------------------------------------------------------------------------
# VO benchmarks: sequences


def load_sequence(spec: str, max_frames: int | None = None, intrinsics: str | None = None):
    """The sequence a VO benchmark runs on: a folder / video (see ``trianflow.data.open_sequence``), or the
    word ``synthetic``: the built-in synthetic scene (``max_frames`` frames, default 40, at 192x640, exact
    ground truth), rendered up front so rendering is not timed."""
    if spec == "synthetic":
        from trianflow.data.synthetic import synthetic_sequence

        seq = synthetic_sequence(n_frames=max_frames or 40)
        seq.render_all()
        return seq
    from trianflow.data import open_sequence

    return open_sequence(spec, intrinsics=intrinsics, max_frames=max_frames)


class HeadSequence:
    """The first ``n`` frames of a sequence, without ground truth (the interface ``run_vo`` reads)."""

    def __init__(self, seq, n: int):
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


REPLAYS = {
    "1x": lambda n: list(range(n)),
    "2x": lambda n: list(range(0, n, 2)),
    "3x": lambda n: list(range(0, n, 3)),
    "rev": lambda n: list(range(n - 1, -1, -1)),
    "rev_3x": lambda n: list(range(n - 1, -1, -3)),
    "hold_3": lambda n: sorted(list(range(n // 3)) * 3),
    "irregular": lambda n: irregular_strides(n),
}
"""Replays of an ``n``-frame sequence: name -> ``n`` -> frame indices (other speeds, reversed, a stalling
camera that shows every frame three times, uneven frame rates / dropped frames)."""

IRREGULAR_STRIDES = (1, 3, 2)
"""The strides of the ``irregular`` replay, repeated: frames 0, 1, 4, 6, 7, 10, 12, ..."""


def irregular_strides(n: int, strides=IRREGULAR_STRIDES) -> list:
    """Frame indices below ``n`` at the repeated ``strides`` from frame 0 (an uneven frame rate)."""
    idx, i, k = [], 0, 0
    while i < n:
        idx.append(i)
        i += strides[k % len(strides)]
        k += 1
    return idx


def write_replay(src: Path, idx: list, out: Path) -> Path:
    """A KITTI-odometry folder ``out`` with the frames ``idx`` of the folder ``src`` (the left camera, the
    right one where ``src`` has it, calib, GT relative to the first of them). Returns ``out``."""
    from trianflow.data.kitti_odometry import read_kitti_poses

    gt = read_kitti_poses(src / "poses.txt")
    cams = ("image_0", "image_1") if (src / "image_0").is_dir() else ("image_2", "image_3")
    for cam in cams:
        if not (src / cam).is_dir():
            continue
        (out / cam).mkdir(parents=True)
        for j, i in enumerate(idx):
            shutil.copy(src / cam / f"{i:06d}.png", out / cam / f"{j:06d}.png")
    shutil.copy(src / "calib.txt", out / "calib.txt")
    P = np.linalg.inv(gt[idx[0]]) @ gt[idx]
    (out / "poses.txt").write_text("".join(" ".join(repr(float(v)) for v in p[:3].ravel()) + "\n" for p in P))
    return out


def write_image_replay(seq, idx: list, out: Path) -> Path:
    """A plain image folder ``out`` (``000000.png``, ...) with the frames ``idx`` of any sequence ``seq``
    (no ground truth; run it with ``--intrinsics`` from :func:`intrinsics_arg`). Returns ``out``."""
    import cv2

    out.mkdir(parents=True)
    for j, i in enumerate(idx):
        cv2.imwrite(str(out / f"{j:06d}.png"), cv2.cvtColor(seq.read(i), cv2.COLOR_RGB2BGR))
    return out


def intrinsics_arg(K) -> str:
    """``fx,fy,cx,cy`` of ``K (3,3)`` for ``trianflow vo --intrinsics``."""
    return ",".join(repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))


# ----------------------------------------------------------------------------------------------
# VO benchmarks: running trianflow


VO_MODES = ("default", "plain", "ba", "height", "network")
"""The benchmark modes of trianflow's VO: ``default`` (``trianflow vo`` with no option), ``plain``
(``--refine none``), ``ba`` (``--no-ground-scale``), ``height`` (``--camera-height``), ``network``
(network flow)."""


def vo_config(mode: str, dis_preset: str = "auto", backend: str = "opencv", device: str = "cpu",
              camera_height: float = 1.65):
    """The ``VOConfig`` of a benchmark mode (:data:`VO_MODES`; ``network`` sets ``flow="network"``, the
    caller loads the networks)."""
    from trianflow.vo import VOConfig

    if mode not in VO_MODES:
        raise ValueError(f"unknown VO mode {mode!r}: use one of {', '.join(VO_MODES)}")
    cfg = VOConfig(dis_preset=dis_preset, ransac_backend=backend, device=device)
    if mode == "plain":
        cfg.refine = "none"
    if mode == "ba":
        cfg.refine = "ba"
        cfg.ground_scale = "off"
    if mode == "height":
        cfg.camera_height = camera_height
    if mode == "network":
        cfg.flow = "network"
    return cfg


def run_cli_vo(sequence, out_dir: Path, args) -> tuple:
    """``trianflow vo SEQUENCE --out OUT_DIR --no-progress ARGS`` in this process, its output captured:
    ``(run.json dict, poses (N,4,4), None)``, or ``(None, None, error line)`` when it exits non-zero."""
    import io

    from trianflow.cli import main as cli_main
    from trianflow.io.trajectory import read_trajectory

    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        rc = cli_main(["vo", str(sequence), "--out", str(out_dir), "--no-progress", *args])
    if rc != 0:
        return None, None, f"trianflow vo exit code {rc}: {log.getvalue().strip().splitlines()[-1:]}"
    run = json.loads((Path(out_dir) / "run.json").read_text())
    return run, read_trajectory(Path(out_dir) / "poses.txt", fmt="kitti")[1], None


def run_timed_vo(seq, cfg, flow_fn=None, depth_fn=None, warmup_frames: int = 3):
    """Run the VO on ``seq`` after a warm-up run on its first ``warmup_frames`` frames (lazy initialisation
    of OpenCV / torch kernels); returns ``(result, seconds)`` of the timed run (image reading included)."""
    from trianflow.vo import run_vo

    run_vo(HeadSequence(seq, warmup_frames), cfg, flow_fn=flow_fn, depth_fn=depth_fn, keep_points=False)
    t0 = time.perf_counter()
    res = run_vo(seq, cfg, flow_fn=flow_fn, depth_fn=depth_fn, keep_points=False)
    return res, time.perf_counter() - t0


def run_default_vo(seq):
    """``trianflow vo`` as it runs with no option, once (no warm-up); returns ``(poses (N,4,4), seconds)``."""
    from trianflow.vo import VOConfig, run_vo

    t0 = time.perf_counter()
    poses = run_vo(seq, VOConfig(), keep_points=False).poses
    return poses, time.perf_counter() - t0


def vo_speed(res, seconds: float, n_frames: int) -> dict:
    """Seconds, frames/s end to end, per-stage milliseconds and the status counts of a VO run."""
    return {
        "seconds": seconds,
        "fps": n_frames / seconds,
        "flow_ms": res.timings["flow_ms"],
        "select_ms": res.timings["select_ms"],
        "geometry_ms": res.timings["geometry_ms"],
        "status": res.status_counts(),
    }


# ----------------------------------------------------------------------------------------------
# VO benchmarks: evaluation against ground truth


def trajectory_metrics(est, gt, align: str = "sim3") -> dict:
    """ATE RMSE (m and % of the GT path), KITTI drift, RPE, path length and alignment scale of ``est``
    against ``gt`` (both ``(N,4,4)`` c2w)."""
    from trianflow.evaluation.trajectory import evaluate_trajectory

    m = evaluate_trajectory(est, gt, align=align).to_dict()
    return {"ate_rmse": m["ape_rmse"], "ate_pct_of_path": 100 * m["ape_rmse"] / max(m["path_length"], 1e-9),
            "kitti_t_err": m["kitti_t_err"], "kitti_r_err": m["kitti_r_err"],
            "kitti_segments": m["kitti_n_segments"],
            "rpe_trans_rmse": m["rpe_trans_rmse"], "rpe_rot_rmse": m["rpe_rot_rmse"], "path_length": m["path_length"],
            "scale": m["scale"]}


def path_length(poses) -> float:
    """Length of the camera path of ``poses (N,4,4)`` (sum of the steps between camera centres)."""
    return float(np.linalg.norm(np.diff(np.asarray(poses)[:, :3, 3], axis=0), axis=1).sum())


def vo_accuracy(res, gt, metric: bool = False) -> dict:
    """Accuracy of a VO result against ``gt (N,4,4)`` c2w (its first ``len(res.poses)`` poses):
    :func:`trajectory_metrics` (Sim3), with ``metric`` also the SE(3) ATE, the path-length ratio without
    scale alignment and the result's ground-scale record, then the per-pair rotation error (deg/frame) and
    translation-direction error (deg)."""
    from trianflow.evaluation.relative import relative_pose_errors

    gt = gt[: len(res.poses)]
    out = trajectory_metrics(res.poses, gt)
    if metric:
        se3 = trajectory_metrics(res.poses, gt, align="se3")
        out["se3_ate_rmse"], out["se3_ate_pct_of_path"] = se3["ate_rmse"], se3["ate_pct_of_path"]
        out["length_ratio_unaligned"] = path_length(res.poses) / max(path_length(gt), 1e-9)
        out["ground"] = res.ground
    rel = relative_pose_errors(res.poses, gt)
    out.update({k: rel[k] for k in ("rot_err_deg_mean", "rot_err_deg_max", "trans_dir_err_deg_median",
                                    "trans_dir_err_deg_max") if k in rel})
    return out


def ate_pct(poses, gt) -> float:
    """Sim3-aligned ATE RMSE of ``poses`` against ``gt`` in % of the GT path; NaN where no Sim3 alignment
    exists (e.g. a perfectly straight ground truth)."""
    from trianflow.errors import InputError
    from trianflow.evaluation.trajectory import evaluate_trajectory

    try:
        m = evaluate_trajectory(poses, gt, align="sim3")
    except InputError:
        return float("nan")
    return 100.0 * m.ape_rmse / m.path_length


# ----------------------------------------------------------------------------------------------
# VO benchmarks: pycolmap's incremental mapper as the peer


def pycolmap_poses(seq, frames, self_calibrate: bool = False):
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


def pycolmap_benchmark(seq, n_frames: int | None = None) -> dict:
    """pycolmap's incremental mapper on the first ``n_frames`` frames of ``seq`` (default all): seconds,
    frames registered, frames given and, with ground truth and at least 3 registered frames,
    :func:`trajectory_metrics` over the registered frames."""
    n = min(n_frames or len(seq), len(seq))
    poses, seconds, _ = pycolmap_poses(seq, range(n))
    if not poses:
        return {"seconds": seconds, "registered": 0, "note": "pycolmap failed to initialise"}
    idx = sorted(poses)
    out = {"seconds": seconds, "registered": len(idx), "frames": n}
    if seq.gt_poses is not None and len(idx) >= 3:
        est = np.stack([poses[i] for i in idx])
        out.update(trajectory_metrics(est, np.asarray(seq.gt_poses)[idx]))
    return out


# ----------------------------------------------------------------------------------------------
# training benchmarks


STEREO_RECIPES = ("stereo_monodepth", "stereo_m3depth", "kitti_stereo_mono")
"""The stereo training recipes (``configs/<recipe>.yaml``) the training benchmarks time."""


def synthetic_batch(size, batch: int, device, stereo: bool = False) -> dict:
    """``batch`` consecutive pairs of one rendered synthetic sequence (``forward_turn``, seed 0) of
    ``size = (H, W)``, collated on ``device``: images ``(B,3,H,W)`` and the other keys of ``SyntheticDataset``'s
    samples; ``stereo``: stereo pairs (+ their next frames) with KITTI's 0.54 m baseline."""
    import torch
    from torch.utils.data import default_collate

    from trianflow.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(n_frames=batch + 1, size=tuple(size), kind="forward_turn", seed=0,
                          baseline=0.54 if stereo else None)
    samples = [ds[i] for i in range(batch)]
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in default_collate(samples).items()}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_task(task, stage: str, batch: dict, device, amp: str, steps: int, warmup: int,
              grad_clip: float = 10.0, channels_last: bool = False, corr: str | None = None) -> dict:
    """Time ``steps`` full optimiser steps (forward, backward, clipping, Adam) of a training task after
    ``warmup`` untimed ones.

    Returns images/s, ms per step, peak memory (``torch.cuda.max_memory_allocated`` on CUDA, max RSS on
    CPU), the last loss (None when not finite) and ``n_valid`` where the task reports it.
    """
    import torch

    from trianflow.training.trainer import StepContext

    models = task.models()
    if corr and "flow" in models:
        models["flow"].corr_method = corr
    for m in models.values():
        m.to(device)
        if channels_last:
            m.to(memory_format=torch.channels_last)
    task.set_stage(stage)
    for m in models.values():
        m.train(any(p.requires_grad for p in m.parameters()))
    params = task.trainable_parameters()
    opt = torch.optim.Adam(params, lr=1e-5)
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    out = None

    def one(i: int):
        nonlocal out
        ctx = StepContext(step=i, stage=stage, device=device, models=models, want_images=False,
                          autocast=autocast, amp_dtype=dtype)
        opt.zero_grad(set_to_none=True)
        out = task.step(batch, ctx)
        scaler.scale(out.loss).backward()
        if scaler.is_enabled():
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip or float("inf"))
        scaler.step(opt)
        scaler.update()

    for i in range(warmup):
        one(i)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(steps):
        one(warmup + i)
    _sync(device)
    dt = time.perf_counter() - t0
    b = batch["image"].shape[0]
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    res = {"images_per_s": round(steps * b / dt, 3), "step_ms": round(1000 * dt / steps, 1),
           "peak_mem_mb": round(peak, 1)}
    if "n_valid" in out.terms:
        res["n_valid"] = int(float(out.terms["n_valid"]))
    loss = float(out.loss.detach())
    res["loss"] = loss if math.isfinite(loss) else None
    task = models = opt = params = None  # free them before emptying the CUDA cache
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def bench_recipe(recipe: str, stage: str, batch: dict, device, amp: str, steps: int, warmup: int) -> dict:
    """:func:`time_task` on the task of ``configs/<recipe>.yaml`` at ``stage`` (its gradient clipping)."""
    import torch

    from trianflow.config import load_config
    from trianflow.training.registry import get_task

    cfg = load_config(ROOT / "configs" / f"{recipe}.yaml", [f"train.stage={stage}", "train.device=cpu",
                                                            f"train.amp={amp}"])
    torch.manual_seed(0)
    return time_task(get_task(cfg.train.task)(cfg), stage, batch, device, amp, steps, warmup,
                     grad_clip=cfg.optim.grad_clip)


def add_bench_args(ap: argparse.ArgumentParser, unit: str) -> None:
    """The options both training benchmarks take: --device --amp --size --batch --steps --warmup --threads
    (``unit``: what a timed step is counted per, for the help text)."""
    ap.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    ap.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                    help="autocast dtype of the networks (auto: bf16 on CUDA, off on CPU)")
    ap.add_argument("--size", type=int, nargs=2, default=(256, 832), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None, help=f"timed steps per {unit} (default 20 CUDA, 2 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 CUDA, 1 CPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")


def resolve_bench_args(args, min_size: int):
    """``(device, amp, steps, warmup)`` from the common options of the training benchmarks (sets torch
    threads).

    Defaults: CUDA when available, bf16 AMP on CUDA and off on CPU, 20/5 timed/warm-up steps on CUDA and
    2/1 on CPU. Raises InputError for a missing GPU or impossible sizes/counts.
    """
    import torch

    from trianflow.errors import InputError
    from trianflow.inference import resolve_device

    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    amp = args.amp if args.amp != "auto" else ("bf16" if cuda else "off")
    steps = args.steps if args.steps is not None else (20 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if args.batch < 1 or steps < 1 or warmup < 0 or min(args.size) < min_size:
        raise InputError(f"need --batch >= 1, --steps >= 1, --warmup >= 0 and --size of at least {min_size} px")
    return device, amp, steps, warmup
