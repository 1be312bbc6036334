#!/usr/bin/env python3
"""One command for every GPU number (``make gpu-check``): prints one JSON summary.

On one CUDA GPU, within about 8 minutes, it runs (each part in its own process, with a time limit,
so one failure never hides the others):

``cuda_tests``     the ``cuda``-marked tests (``pytest -m cuda``): passed / failed / skipped counts;
``train_bench``    ``tools/bench_train.py --device cuda --amp bf16`` at 832x256, batch 8: images/s,
                   step time and peak memory of the flow, depth and joint stages and of the stereo
                   recipes (goal: joint >= 150 images/s on an H100);
``real_recipe``    200 steps of ``configs/kitti_cpu.yaml`` (flow stage, bf16) on the KITTI frames of
                   ``--data`` (default ``../shared/data/kitti_03_first400``): images/s and the loss;
``network_vo``     ``trianflow vo --flow <that checkpoint> --device cuda`` on the first ``--vo-frames``
                   frames of ``--data``, ``--refine none`` and the default: frames/s (goal >= 60) and ATE;
``ddp``            a 2-process DDP run of the synthetic recipe via torchrun when 2 or more GPUs are
                   present (else ``skipped``).

    python tools/gpu_check.py                 # everything; JSON on stdout, progress on stderr
    python tools/gpu_check.py --parts train_bench,network_vo --out /tmp/gpu_check

Without CUDA it prints ``{"cuda": false, ...}`` and exits 1. Checkpoints and run folders go under
``--out`` (default ``runs/gpu_check``), never into the repository's tracked files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "kitti_03_first400"
PARTS = ("cuda_tests", "train_bench", "real_recipe", "network_vo", "ddp")


def _run(cmd, timeout: float, env=None, cwd=REPO) -> dict:
    """Run ``cmd``; ``{"rc", "seconds", "stdout", "stderr"}`` (rc 124 on timeout)."""
    t0 = time.perf_counter()
    print(f"[gpu_check] {' '.join(str(c) for c in cmd)}", file=sys.stderr, flush=True)
    try:
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, **(env or {})), cwd=cwd)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "stdout": out, "stderr": err}


def _last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def _tail(text: str, n: int = 600) -> str:
    return text[-n:] if text else ""


def cuda_tests(args) -> dict:
    r = _run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"], timeout=150,
             env={"MPLBACKEND": "Agg"})
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", r["stdout"])}
    return {"rc": r["rc"], "seconds": r["seconds"], **counts,
            **({"tail": _tail(r["stdout"] + r["stderr"])} if r["rc"] not in (0, 5) else {})}


def train_bench(args) -> dict:
    r = _run([sys.executable, "tools/bench_train.py", "--device", "cuda", "--amp", "bf16", "--size", "256", "832",
              "--batch", "8", "--stereo"], timeout=200)
    res = _last_json(r["stdout"])
    if res is None:
        return {"rc": r["rc"], "seconds": r["seconds"], "tail": _tail(r["stderr"])}
    res["seconds"] = r["seconds"]
    joint = (res.get("joint") or {}).get("images_per_s")
    res["goal_joint_150_images_per_s"] = None if joint is None else bool(joint >= 150)
    return res


def real_recipe(args) -> dict:
    out = Path(args.out) / "real_recipe"
    r = _run([sys.executable, "-m", "trianflow", "train", "-c", "configs/kitti_cpu.yaml", "--device", "cuda",
              "--out", out, f"data.root={args.data}", "train.steps=200", "train.amp=bf16", "data.num_workers=4",
              "train.ckpt_every=200", "train.log_every=50", "train.image_every=0"], timeout=180)
    summary = _last_json(r["stdout"]) or {}
    log = []
    if (out / "log.jsonl").is_file():
        log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    return {"rc": r["rc"], "seconds": r["seconds"], "checkpoint": str(out / "last.pt"),
            "images_per_s": summary.get("images_per_s"), "final_loss": summary.get("loss"),
            "loss_by_step": {e["step"]: round(e["loss"], 4) for e in log},
            **({"tail": _tail(r["stderr"])} if r["rc"] != 0 else {})}


def network_vo(args, ckpt: Path | None) -> dict:
    if ckpt is None or not ckpt.is_file():
        return {"skipped": "no FlowNet checkpoint (the real_recipe part did not finish)"}
    res = {}
    for name, extra in (("refine_none", ["--refine", "none"]), ("default", [])):
        run_dir = Path(args.out) / f"vo_{name}"
        r = _run([sys.executable, "-m", "trianflow", "vo", args.data, "--out", run_dir, "--flow", ckpt,
                  "--device", "cuda", "--max-frames", str(args.vo_frames), "--no-progress", *extra], timeout=150)
        entry = {"rc": r["rc"], "seconds": r["seconds"]}
        rj = run_dir / "run.json"
        if rj.is_file():
            info = json.loads(rj.read_text())
            t = info.get("timings") or {}
            entry.update({k: t.get(k) for k in ("fps", "flow_ms", "select_ms", "geometry_ms")})
            ev = info.get("evaluation") or {}
            entry.update({k: ev.get(k) for k in ("ape_rmse", "path_length", "kitti_t_err") if k in ev})
        if r["rc"] != 0:
            entry["tail"] = _tail(r["stderr"])
        res[name] = entry
    fps = (res.get("refine_none") or {}).get("fps")
    res["goal_60_frames_per_s"] = None if fps is None else bool(fps >= 60)
    return res


def ddp(args, n_gpus: int) -> dict:
    if n_gpus < 2:
        return {"skipped": f"{n_gpus} GPU present (needs 2)"}
    out = Path(args.out) / "ddp"
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
              "trianflow", "train", "-c", "configs/synthetic_flow.yaml", "--device", "cuda", "--out", out,
              "train.steps=20", "train.amp=bf16", "data.num_workers=2"], timeout=180)
    return {"rc": r["rc"], "seconds": r["seconds"], "summary": _last_json(r["stdout"]),
            **({"tail": _tail(r["stderr"])} if r["rc"] != 0 else {})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    ap.add_argument("--data", default=str(DATA), help="KITTI odometry sequence folder (real recipe and VO)")
    ap.add_argument("--vo-frames", type=int, default=200)
    ap.add_argument("--out", default=str(REPO / "runs" / "gpu_check"))
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        print(f"error: unknown part {bad[0]!r}: use {', '.join(PARTS)}", file=sys.stderr)
        return 2
    import torch

    t0 = time.perf_counter()
    summary = {"cuda": torch.cuda.is_available(), "torch": torch.__version__}
    if not summary["cuda"]:
        summary["error"] = "no CUDA device: gpu-check needs one GPU (run it on the GPU machine)"
        print(json.dumps(summary))
        return 1
    n = torch.cuda.device_count()
    summary.update({"gpus": n, "gpu": torch.cuda.get_device_name(0), "data": args.data})
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if "cuda_tests" in parts:
        summary["cuda_tests"] = cuda_tests(args)
    if "train_bench" in parts:
        summary["train_bench"] = train_bench(args)
    ckpt = None
    if "real_recipe" in parts:
        summary["real_recipe"] = real_recipe(args)
        ckpt = Path(summary["real_recipe"]["checkpoint"])
    elif (Path(args.out) / "real_recipe" / "last.pt").is_file():
        ckpt = Path(args.out) / "real_recipe" / "last.pt"
    if "network_vo" in parts:
        summary["network_vo"] = network_vo(args, ckpt)
    if "ddp" in parts:
        summary["ddp"] = ddp(args, n)
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(summary, indent=1))
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    failed = [k for k, v in summary.items() if isinstance(v, dict) and v.get("rc") not in (None, 0, 5)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
