#!/usr/bin/env python
"""Overfit the stereo task on the Middlebury 2014 "motorcycle" pair and measure the disparity error.

The pair is the one scikit-image ships (741x500, 1/4 of the original Middlebury size);
``--scale`` (relative to it) or ``data.size`` in the config picks the working resolution
(``configs/middlebury_overfit.yaml``: scale 0.5, 370x250 = 1/8 of the original). The ``stereo``
task is trained by the generic :class:`~trianflow.training.trainer.Trainer` (unchanged) on the
pair repeated, on CPU by default, for ``--steps`` steps or ``--time-limit`` seconds, whichever
comes first.

Evaluation (every ``--eval-every`` steps and at the end; DepthNet in eval mode, no flip
post-processing): absolute difference between the predicted left disparity (width fraction x W,
pixels of the working resolution) and the GT disparity, over the GT pixels that are known (the
shipped map marks unknown pixels inf; the area-downscaled GT keeps only pixels whose whole
footprint is known) and non-occluded (derived from the GT by forward splatting along rows,
:func:`trianflow.evaluation.disparity.nonoccluded_mask`, because the scikit-image pair has no
occlusion mask; pixels that leave the right image are excluded too).

Prints ONE JSON line: the curve (``[step, median_px, mean_px, elapsed_s]`` rows), the final
``median``/``mean``/``rmse``/``bad1..3``, the GT range, the resolution, timings and whether the
goal (median < ``--goal`` px, default 2) was met. ``--plot out.png`` writes the curve and the
disparity maps.

Example (``--threads 1`` is faster than 2 threads on a busy 2-core machine)::

    python tools/overfit_middlebury.py --threads 1 --plot /tmp/overfit.png
    python tools/overfit_middlebury.py --scale 1.0 --steps 200 --eval-every 25   # 741x500
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "middlebury_overfit.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: train.steps of the config)")
    p.add_argument("--time-limit", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--eval-every", type=int, default=25, help="evaluate every N steps (default: %(default)s)")
    p.add_argument("--scale", type=float, default=None,
                   help="scale relative to the scikit-image pair (741x500); overrides data.size")
    p.add_argument("--device", default=None, help="cpu / cuda (default: train.device of the config)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=None, help="train.seed")
    p.add_argument("--goal", type=float, default=2.0, help="median error goal in px (default: %(default)s)")
    p.add_argument("--out", default=None, help="run folder (default: a temporary folder, deleted)")
    p.add_argument("--plot", default=None, help="write a PNG with the curve and the disparity maps")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. optim.lr=5e-4)")
    return p.parse_args(argv)


def make_config(args):
    """The training config with the command-line options applied."""
    from trianflow.config import load_config
    from trianflow.data.stereo_pairs import MIDDLEBURY_WIDTH

    ov = list(args.overrides)
    if args.steps is not None:
        ov.append(f"train.steps={args.steps}")
    if args.device is not None:
        ov.append(f"train.device={args.device}")
    if args.seed is not None:
        ov.append(f"train.seed={args.seed}")
    if args.scale is not None:
        if not 0 < args.scale <= 1:
            raise SystemExit("error: --scale must be in (0, 1]")
        w = int(round(MIDDLEBURY_WIDTH * args.scale))
        h = int(round(500 * args.scale))
        ov.append(f"data.size=[{h},{w}]")
    return load_config(args.config, ov)


def run(args) -> dict:
    """Train and evaluate; returns the result dict (the JSON line)."""
    import numpy as np
    import torch

    from trianflow.evaluation.disparity import disparity_errors
    from trianflow.training.stereo_task import StereoTask
    from trianflow.training.trainer import Trainer, seed_everything

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = make_config(args)
    if cfg.data.dataset != "middlebury" or cfg.train.task != "stereo":
        raise SystemExit(f"error: {args.config} must use train.task=stereo and data.dataset=middlebury")
    seed_everything(cfg.train.seed)

    curve: list = []
    state = {"t0": None, "trainer": None}

    class OverfitTask(StereoTask):
        """The stereo task plus evaluation every ``eval_every`` steps and a time limit."""

        def build_dataset(self, split):
            ds = super().build_dataset(split)
            self.dataset = ds
            return ds

        def evaluate(self, device) -> tuple:
            ds = self.dataset
            net = self.depth_net
            was_training = net.training
            net.eval()
            with torch.no_grad():
                img = ds.sample["image"][None].to(device)
                disp = net(img)["disp_left"][0][0, 0] * img.shape[-1]
            net.train(was_training)
            pred = disp.float().cpu().numpy()
            return pred, disparity_errors(pred, ds.raw["disp"], ds.eval_mask)

        def step(self, batch, ctx):
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            if ctx.step % args.eval_every == 0:
                _, err = self.evaluate(ctx.device)
                curve.append([ctx.step, round(err["median"], 4), round(err["mean"], 4),
                              round(time.perf_counter() - state["t0"], 2)])
            if args.time_limit is not None and time.perf_counter() - state["t0"] > args.time_limit:
                state["trainer"].request_stop()
            return super().step(batch, ctx)

    task = OverfitTask(cfg)
    tmp = None
    out_dir = args.out
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="overfit_middlebury_")
        out_dir = tmp.name
    try:
        trainer = Trainer(cfg, task, out_dir=out_dir)
        state["trainer"] = trainer
        summary = trainer.run()
        pred, err = task.evaluate(trainer.device)
    finally:
        if tmp is not None:
            tmp.cleanup()
    elapsed = time.perf_counter() - state["t0"] if state["t0"] else 0.0
    curve.append([summary["step"], round(err["median"], 4), round(err["mean"], 4), round(elapsed, 2)])
    ds = task.dataset
    gt = ds.raw["disp"]
    g = gt[ds.eval_mask]
    h, w = gt.shape
    result = {
        "tool": "overfit_middlebury",
        "size": [h, w],
        "scale_of_original": round(w / 2964.0, 4),
        "steps": summary["step"],
        "elapsed_s": round(elapsed, 1),
        "images_per_s": summary["images_per_s"],
        "device": summary["device"],
        "threads": torch.get_num_threads(),
        "lr": cfg.optim.lr,
        "disp_scale": task.depth_net.disp_scale,
        "gt_disp_range_px": [round(float(g.min()), 2), round(float(np.median(g)), 2), round(float(g.max()), 2)],
        "eval_pixels": err["n_pixels"],
        "eval_fraction": round(err["n_pixels"] / float(h * w), 4),
        "final": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in err.items()},
        "goal_median_px": args.goal,
        "goal_met": bool(err["median"] < args.goal),
        "curve_columns": ["step", "median_px", "mean_px", "elapsed_s"],
        "curve": curve,
    }
    if args.plot:
        write_plot(args.plot, curve, pred, gt, ds.eval_mask, result)
        result["plot"] = str(args.plot)
    return result


def write_plot(path, curve, pred, gt, mask, result) -> None:
    """PNG: error curve, predicted disparity, GT disparity, absolute error on evaluated pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from trianflow.io.atomic import atomic_path

    c = np.asarray(curve, dtype=float)
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    ax[0, 0].plot(c[:, 0], c[:, 1], "o-", label="median")
    ax[0, 0].plot(c[:, 0], c[:, 2], "s-", label="mean")
    ax[0, 0].axhline(result["goal_median_px"], color="k", ls="--", lw=0.8, label="goal")
    ax[0, 0].set_yscale("log")
    ax[0, 0].set_xlabel("step")
    ax[0, 0].set_ylabel("|disparity error| (px)")
    ax[0, 0].set_title(f"Middlebury motorcycle {result['size'][1]}x{result['size'][0]}")
    ax[0, 0].legend()
    vmax = float(gt[mask].max())
    ax[0, 1].imshow(pred, vmin=0, vmax=vmax, cmap="magma")
    ax[0, 1].set_title("predicted disparity (px)")
    ax[1, 0].imshow(np.where(gt > 0, gt, np.nan), vmin=0, vmax=vmax, cmap="magma")
    ax[1, 0].set_title("GT disparity (px)")
    err = np.where(mask, np.abs(pred - gt), np.nan)
    im = ax[1, 1].imshow(err, vmin=0, vmax=5, cmap="viridis")
    ax[1, 1].set_title(f"|error| on evaluated pixels (median {result['final']['median']:.2f} px)")
    fig.colorbar(im, ax=ax[1, 1], shrink=0.8)
    for a in (ax[0, 1], ax[1, 0], ax[1, 1]):
        a.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(ROOT))
    from trianflow.errors import InputError

    try:
        result = run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
