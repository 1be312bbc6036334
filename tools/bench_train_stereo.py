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
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: the shared helpers

import torch  # noqa: E402

import benchlib  # noqa: E402
from trianflow.errors import InputError  # noqa: E402

RECIPES = benchlib.STEREO_RECIPES


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_bench_args(ap, "recipe")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    ap.add_argument("--mono-stages", nargs="+", default=["joint"], choices=("flow", "depth", "joint"),
                    help="stages of kitti_stereo_mono to time (default: joint)")
    args = ap.parse_args(argv)

    try:
        device, amp, steps, warmup = benchlib.resolve_bench_args(args, min_size=64)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    batch = benchlib.synthetic_batch(args.size, args.batch, device, stereo=True)
    out = {"tool": "bench_train_stereo", "device": str(device),
           "gpu": torch.cuda.get_device_name(device) if cuda else None, "amp": amp, "size": list(args.size),
           "batch": args.batch, "steps": steps, "warmup": warmup, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "render_s": round(time.perf_counter() - t0, 1)}
    try:
        for recipe in args.recipes:
            if recipe == "kitti_stereo_mono":
                for stage in args.mono_stages:
                    out[f"{recipe}/{stage}"] = benchlib.bench_recipe(recipe, stage, batch, device, amp, steps, warmup)
            else:
                out[recipe] = benchlib.bench_recipe(recipe, "flow", batch, device, amp, steps, warmup)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    benchlib.print_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
