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
import logging
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: the shared helpers

import torch  # noqa: E402

import benchlib  # noqa: E402

from trianflow.config import load_config  # noqa: E402
from trianflow.errors import InputError  # noqa: E402


def bench_stage(stage: str, batch: dict, device: torch.device, amp: str, steps: int, warmup: int,
                channels_last: bool = False, corr: str | None = None) -> dict:
    """Time ``steps`` optimiser steps of ``stage`` after ``warmup`` steps; returns the stage's numbers."""
    from trianflow.training.tasks import TrianFlowTask

    cfg = load_config(None, [f"train.stage={stage}", "train.device=cpu", f"train.amp={amp}"])
    torch.manual_seed(0)
    return benchlib.time_task(TrianFlowTask(cfg), stage, batch, device, amp, steps, warmup, grad_clip=10.0,
                              channels_last=channels_last, corr=corr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_bench_args(ap, "stage")
    ap.add_argument("--stages", nargs="+", default=["flow", "depth", "joint"], choices=("flow", "depth", "joint"))
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--corr", choices=("loop", "unfold"), default=None, help="FlowNet cost-volume method")
    ap.add_argument("--stereo", nargs="*", default=None, metavar="RECIPE",
                    help="also time the stereo recipes (default when given without names: stereo_monodepth "
                    "stereo_m3depth kitti_stereo_mono) with tools/bench_train_stereo.py's batch; results under "
                    "'stereo/<recipe>'")
    args = ap.parse_args(argv)
    logging.getLogger("trianflow.training.tasks").setLevel(logging.ERROR)  # "depth without init_flow" is expected
    try:
        device, amp, steps, warmup = benchlib.resolve_bench_args(args, min_size=32)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    batch = benchlib.synthetic_batch(args.size, args.batch, device)
    out = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if cuda else None, "amp": amp,
           "size": list(args.size), "batch": args.batch, "steps": steps, "warmup": warmup,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "corr": args.corr or "loop"}
    for stage in args.stages:
        out[stage] = bench_stage(stage, batch, device, amp, steps, warmup, args.channels_last, args.corr)
    if args.stereo is not None:
        recipes = args.stereo or list(benchlib.STEREO_RECIPES)
        sbatch = benchlib.synthetic_batch(args.size, args.batch, device, stereo=True)
        for recipe in recipes:
            stage = "joint" if recipe == "kitti_stereo_mono" else "flow"
            out[f"stereo/{recipe}"] = benchlib.bench_recipe(recipe, stage, sbatch, device, amp, steps, warmup)
    for key, val in out.items():  # keep the per-stage numbers finite for JSON consumers
        if isinstance(val, dict) and "images_per_s" in val and not math.isfinite(val["images_per_s"]):
            val["images_per_s"] = None
    benchlib.print_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
