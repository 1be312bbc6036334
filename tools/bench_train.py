#!/usr/bin/env python
"""Training throughput of the TrianFlow stages: images/s per stage and peak memory, one JSON line.

Each stage (flow, depth, joint) runs the real ``trianflow`` task step (networks under autocast,
geometry on the device in fp32/fp64) plus backward, gradient clipping and the Adam update, on a
fixed batch of rendered synthetic frames, after warm-up steps. The default is the issue's
setting, 832x256 with batch 8.

    python tools/bench_train.py                                  # CUDA with bf16 AMP when available
    python tools/bench_train.py --device cpu --batch 2 --steps 2 # a quick CPU number
    python tools/bench_train.py --device cuda --amp fp16 --stages joint
    python tools/bench_train.py --device cpu --batch 2 --steps 1 --stereo   # + the stereo recipes

Output keys: ``device``, ``gpu``, ``amp``, ``size``, ``batch``, ``steps``, ``torch``, and per stage
``<stage>: {"images_per_s", "step_ms", "peak_mem_mb", "n_valid"}`` (``n_valid``: samples whose
pose/triangulation was valid in the last step). Peak memory is ``torch.cuda.max_memory_allocated``
on CUDA and the process's max RSS on CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trianflow.config import load_config  # noqa: E402
from trianflow.errors import InputError  # noqa: E402


def _batch(size, batch: int, device: torch.device) -> dict:
    """``batch`` consecutive pairs of one rendered synthetic sequence, collated on ``device``."""
    from torch.utils.data import default_collate

    from trianflow.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(n_frames=batch + 1, size=tuple(size), kind="forward_turn", seed=0)
    samples = [ds[i] for i in range(batch)]
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in default_collate(samples).items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_stage(stage: str, batch: dict, device: torch.device, amp: str, steps: int, warmup: int,
                channels_last: bool = False, corr: str | None = None) -> dict:
    """Time ``steps`` optimiser steps of ``stage`` after ``warmup`` steps; returns the stage's numbers."""
    from trianflow.training.tasks import TrianFlowTask

    cfg = load_config(None, [f"train.stage={stage}", "train.device=cpu", f"train.amp={amp}"])
    torch.manual_seed(0)
    return time_task(TrianFlowTask(cfg), stage, batch, device, amp, steps, warmup, grad_clip=10.0,
                     channels_last=channels_last, corr=corr)


def time_task(task, stage: str, batch: dict, device: torch.device, amp: str, steps: int, warmup: int,
              grad_clip: float = 10.0, channels_last: bool = False, corr: str | None = None) -> dict:
    """Time ``steps`` full optimiser steps (forward, backward, clipping, Adam) of a training task.

    Shared by this tool and ``tools/bench_train_stereo.py``. Returns images/s, ms per step, peak memory
    (``torch.cuda.max_memory_allocated`` on CUDA, max RSS on CPU), the last loss and ``n_valid``.
    """
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
    del task, models, opt, params
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def resolve_bench_args(args, min_size: int):
    """``(device, amp, steps, warmup)`` from the common options of the bench tools (sets torch threads).

    Defaults: CUDA when available, bf16 AMP on CUDA and off on CPU, 20/5 timed/warm-up steps on CUDA and
    2/1 on CPU. Raises InputError for a missing GPU or impossible sizes/counts.
    """
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_bench_args(ap, "stage")
    ap.add_argument("--stages", nargs="+", default=["flow", "depth", "joint"], choices=("flow", "depth", "joint"))
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--corr", choices=("loop", "unfold"), default=None, help="FlowNet cost-volume method")
    ap.add_argument("--stereo", nargs="*", default=None, metavar="RECIPE",
                    help="also time the stereo recipes (default when given without names: stereo_monodepth "
                    "stereo_m3depth kitti_stereo_mono) with tools/bench_train_stereo.py's batch; results under "
                    "'stereo/<recipe>'")
    args = ap.parse_args(argv)
    import logging

    logging.getLogger("trianflow.training.tasks").setLevel(logging.ERROR)  # "depth without init_flow" is expected
    try:
        device, amp, steps, warmup = resolve_bench_args(args, min_size=32)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    batch = _batch(args.size, args.batch, device)
    out = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if cuda else None, "amp": amp,
           "size": list(args.size), "batch": args.batch, "steps": steps, "warmup": warmup,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "corr": args.corr or "loop"}
    for stage in args.stages:
        out[stage] = bench_stage(stage, batch, device, amp, steps, warmup, args.channels_last, args.corr)
    if args.stereo is not None:
        import bench_train_stereo as bts  # tools/ is on sys.path when run as a script

        recipes = args.stereo or list(bts.RECIPES)
        sbatch = bts.make_batch(args.size, args.batch, device)
        for recipe in recipes:
            stage = "joint" if recipe == "kitti_stereo_mono" else "flow"
            out[f"stereo/{recipe}"] = bts.bench_recipe(recipe, stage, sbatch, device, amp, steps, warmup)
    for key, val in out.items():  # keep the per-stage numbers finite for JSON consumers
        if isinstance(val, dict) and "images_per_s" in val and not math.isfinite(val["images_per_s"]):
            val["images_per_s"] = None
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
