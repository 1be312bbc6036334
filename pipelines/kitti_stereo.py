"""The stereo recipe end to end: train a stereo DepthNet (Monodepth / M3Depth) -> metric depth evaluation.

    python pipelines/kitti_stereo.py --config configs/stereo_monodepth.yaml data.root=/data/kitti_raw \\
        --depth-gt /data/kitti_stereo_2015 --out runs/kitti_stereo
    python pipelines/kitti_stereo.py --smoke      # 2 steps on ../shared/data/kitti_stereo2012, on CPU

1. train ``--config`` (default ``configs/stereo_monodepth.yaml``; ``configs/stereo_m3depth.yaml`` adds the
   ICP term) with :class:`~trianflow.training.Trainer`; ``KEY=VALUE`` arguments override it;
2. predict metric depth (``fx * baseline / disparity`` with each pair's calibration) for the left images
   of a KITTI stereo folder with ground-truth disparity and report the Eigen metrics without median
   scaling (Garg crop, 80 m cap), written as ``<out>/results.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from trianflow.config import load_config
from trianflow.data.stereo_pairs import KittiStereoDataset, kitti_stereo_year
from trianflow.evaluation.summary import evaluate_depth_predictions, results_markdown, sample_rgb, write_results
from trianflow.inference import load_depth_fn
from trianflow.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

#: overrides of the smoke run: the two KITTI stereo 2012 pairs at 64x192, 2 steps
SMOKE_OVERRIDES = ["data.dataset=kitti_stereo", f"data.root={SHARED / 'kitti_stereo2012'}", "data.size=[64,192]",
                   "data.batch_size=2", "data.num_workers=0", "train.steps=2", "train.amp=off", "train.device=cpu",
                   "train.log_every=1", "train.image_every=0", "train.ckpt_every=0"]


def train(config: Path, out: Path, overrides: list) -> Path:
    """Train the stereo recipe into ``out``; returns its last checkpoint."""
    cfg = load_config(config, overrides + [f"train.out_dir={out}"])
    trainer = Trainer.from_config(cfg)
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    print(f"stereo: step {summary['step']}, loss {summary['loss']:.4g}, checkpoint {summary['checkpoint']}")
    return out / "last.pt"


def evaluate_metric_depth(ckpt: Path, gt_root: Path) -> dict:
    """Eigen metrics of the metric stereo depth (each pair's focal length and baseline), no median scaling."""
    data = KittiStereoDataset(gt_root, split="training", year=kitti_stereo_year(gt_root))
    depth_fn = load_depth_fn(ckpt, focal=1.0, baseline=1.0)  # set per pair below

    def metric_depth(sample):
        depth_fn.focal, depth_fn.baseline = float(sample["K"][0, 0]), float(sample["baseline"])
        return depth_fn(sample_rgb(sample))

    pairs = ((metric_depth(s), s["depth_gt"]) for s in (data[i] for i in range(len(data))))
    return evaluate_depth_predictions(pairs, crop="garg", median_scaling=False, max_depth=80.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", default=str(ROOT / "configs" / "stereo_monodepth.yaml"))
    p.add_argument("--depth-gt", help="KITTI stereo 2012/2015 folder with ground-truth disparity")
    p.add_argument("--out", default="runs/kitti_stereo")
    p.add_argument("--skip-training", action="store_true", help="evaluate <out>/last.pt as it is")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--smoke", action="store_true", help="2 steps on ../shared/data/kitti_stereo2012")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = list(args.overrides)
    if args.smoke:
        args.depth_gt = args.depth_gt or str(SHARED / "kitti_stereo2012")
        overrides = SMOKE_OVERRIDES + overrides
    if not args.depth_gt:
        p.error("give --depth-gt (or --smoke)")
    out = Path(args.out)
    ckpt = out / "last.pt" if args.skip_training else train(Path(args.config), out, overrides)
    depth = evaluate_metric_depth(ckpt, Path(args.depth_gt))
    write_results(out, depth=depth, title="Stereo depth on KITTI",
                  meta={"checkpoint": str(ckpt), "config": args.config, "depth_gt": args.depth_gt,
                        "overrides": overrides})
    print(results_markdown(depth=depth, title="Stereo depth on KITTI"))
    print(f"written: {out / 'results.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
