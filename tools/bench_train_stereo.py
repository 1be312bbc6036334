#!/usr/bin/env python
"""Training throughput of the stereo recipes: images/s and peak memory, one JSON line.

Recipes (``--recipes``): ``stereo_monodepth`` and ``stereo_m3depth`` (task ``stereo``) and
``kitti_stereo_mono`` (task ``stereo_mono``; its stages with ``--mono-stages``, default
``joint``, the most expensive one). Each runs the real task step from ``configs/<recipe>.yaml``
(networks under autocast, losses and geometry in fp32) plus backward, gradient clipping and the
Adam update, on a fixed batch of rendered synthetic stereo frames (with their next frames), after
warm-up steps. The default is the issue's setting, 832x256 with batch 8.

    python tools/bench_train_stereo.py                                   # CUDA + bf16 when available
    python tools/bench_train_stereo.py --device cpu --batch 2 --steps 2  # a quick CPU number
    python tools/bench_train_stereo.py --recipes stereo_m3depth --amp fp16

Output keys: ``device``, ``gpu``, ``amp``, ``size``, ``batch``, ``steps``, ``warmup``, ``torch``,
``threads`` and per recipe (``kitti_stereo_mono/<stage>`` for the joint recipe)
``{"images_per_s", "step_ms", "peak_mem_mb", "loss"}`` (plus ``n_valid`` for the stereo_mono
depth/joint stages: samples whose pose/triangulation was valid in the last step). An image is one
left image (with its right image, and next frame for stereo_mono). Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA (reset per recipe) and the process's max RSS on CPU
(monotonic over the run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from trianflow.config import load_config  # noqa: E402
from trianflow.errors import InputError  # noqa: E402

RECIPES = ("stereo_monodepth", "stereo_m3depth", "kitti_stereo_mono")


def make_batch(size, batch: int, device: torch.device) -> dict:
    """``batch`` consecutive stereo pairs (+ next frames) of one rendered synthetic sequence, on ``device``."""
    from torch.utils.data import default_collate

    from trianflow.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(n_frames=batch + 1, size=tuple(size), kind="forward_turn", seed=0, baseline=0.54)
    samples = [ds[i] for i in range(batch)]
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in default_collate(samples).items()}


def bench_recipe(recipe: str, stage: str, batch: dict, device: torch.device, amp: str, steps: int,
                 warmup: int) -> dict:
    """Time ``steps`` optimiser steps of ``configs/<recipe>.yaml`` after ``warmup`` steps."""
    from bench_train import time_task  # tools/ is on sys.path when run as a script

    from trianflow.training.registry import get_task

    cfg = load_config(ROOT / "configs" / f"{recipe}.yaml", [f"train.stage={stage}", "train.device=cpu",
                                                            f"train.amp={amp}"])
    torch.manual_seed(0)
    return time_task(get_task(cfg.train.task)(cfg), stage, batch, device, amp, steps, warmup,
                     grad_clip=cfg.optim.grad_clip)


def main(argv=None) -> int:
    from bench_train import add_bench_args, resolve_bench_args  # tools/ is on sys.path when run as a script

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_bench_args(ap, "recipe")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    ap.add_argument("--mono-stages", nargs="+", default=["joint"], choices=("flow", "depth", "joint"),
                    help="stages of kitti_stereo_mono to time (default: joint)")
    args = ap.parse_args(argv)

    try:
        device, amp, steps, warmup = resolve_bench_args(args, min_size=64)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    batch = make_batch(args.size, args.batch, device)
    out = {"tool": "bench_train_stereo", "device": str(device),
           "gpu": torch.cuda.get_device_name(device) if cuda else None, "amp": amp, "size": list(args.size),
           "batch": args.batch, "steps": steps, "warmup": warmup, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "render_s": round(time.perf_counter() - t0, 1)}
    try:
        for recipe in args.recipes:
            if recipe == "kitti_stereo_mono":
                for stage in args.mono_stages:
                    out[f"{recipe}/{stage}"] = bench_recipe(recipe, stage, batch, device, amp, steps, warmup)
            else:
                out[recipe] = bench_recipe(recipe, "flow", batch, device, amp, steps, warmup)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
