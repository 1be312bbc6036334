"""TrianFlow on KITTI end to end: three training stages -> depth evaluation -> VO on test sequences.

    python pipelines/kitti_trianflow.py --kitti-root /data/kitti/dataset/sequences \\
        --test-sequences 09 10 --depth-gt /data/kitti_stereo_2015 --out runs/kitti_trianflow
    python pipelines/kitti_trianflow.py --smoke      # a few steps on ../shared/data, well under a minute on CPU

1. train ``configs/kitti_flow.yaml`` -> ``kitti_depth.yaml`` -> ``kitti_joint.yaml`` with the generic
   :class:`~trianflow.training.Trainer`, each stage initialised from the previous one's checkpoint
   (``<out>/flow``, ``<out>/depth``, ``<out>/joint``); extra ``KEY=VALUE`` arguments override every stage;
2. evaluate the joint DepthNet on the left images of a KITTI stereo folder with ground-truth disparity
   (Eigen metrics, Garg crop, 80 m cap, median scaling:
   :func:`trianflow.evaluation.summary.evaluate_depth_predictions`);
3. run VO (:func:`trianflow.vo.run_vo`, the joint FlowNet as flow, its DepthNet for the scale) on
   every test sequence and measure t_err / r_err / ATE against the ground truth;
4. write one table (``<out>/results.md`` and ``results.json``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from trianflow.config import load_config
from trianflow.data import open_sequence
from trianflow.data.stereo_pairs import KittiStereoDataset, kitti_stereo_year
from trianflow.evaluation.summary import (evaluate_depth_predictions, results_markdown, sample_rgb, vo_errors,
                                         write_results)
from trianflow.inference import load_depth_fn, load_flow_fn
from trianflow.vo import VOConfig, run_vo
from trianflow.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
STAGES = (("flow", "kitti_flow.yaml"), ("depth", "kitti_depth.yaml"), ("joint", "kitti_joint.yaml"))

#: overrides of the smoke run: tiny images and networks, 2 steps per stage on 4 pairs of the KITTI snippet
SMOKE_OVERRIDES = ["data.sequences=[]", "data.size=[64,192]", "data.batch_size=2", "data.num_workers=0",
                   "data.max_samples=4", "data.static_filter=false", "train.steps=2", "train.amp=off",
                   "train.device=cpu", "train.log_every=1", "train.image_every=0", "train.ckpt_every=0",
                   "model.flow.pyramid_channels=[8,8,16,16,24,24]", "loss.num_matches=2000"]


def train_three_stages(out: Path, overrides: list) -> Path:
    """Flow -> depth -> joint, each stage initialised from the previous checkpoint; returns the joint one."""
    init = {"flow": [], "depth": [f"train.init_flow={out / 'flow' / 'last.pt'}"],
            "joint": [f"train.init_flow={out / 'depth' / 'last.pt'}", f"train.init_depth={out / 'depth' / 'last.pt'}"]}
    for stage, config in STAGES:
        cfg = load_config(ROOT / "configs" / config, overrides + init[stage] + [f"train.out_dir={out / stage}"])
        trainer = Trainer.from_config(cfg)
        try:
            summary = trainer.run()
        finally:
            trainer.close()
        print(f"stage {stage}: step {summary['step']}, loss {summary['loss']:.4g}, checkpoint {summary['checkpoint']}")
    return out / "joint" / "last.pt"


def evaluate_depth(ckpt: Path, gt_root: Path) -> dict:
    """Eigen metrics of the DepthNet in ``ckpt`` on a KITTI stereo folder's left images (median-scaled)."""
    data = KittiStereoDataset(gt_root, split="training", year=kitti_stereo_year(gt_root))
    depth_fn = load_depth_fn(ckpt)
    pairs = ((depth_fn(sample_rgb(s)), s["depth_gt"]) for s in (data[i] for i in range(len(data))))
    return evaluate_depth_predictions(pairs, crop="garg", median_scaling=True, max_depth=80.0)


def evaluate_vo(ckpt: Path, sequences: list, max_frames=None) -> list:
    """VO with the trained networks on each test sequence; one row of errors per sequence."""
    cfg = VOConfig(flow="network")
    flow_fn, depth_fn = load_flow_fn(ckpt), load_depth_fn(ckpt)
    rows = []
    for path in sequences:
        seq = open_sequence(path, max_frames=max_frames)
        result = run_vo(seq, cfg, flow_fn=flow_fn, depth_fn=depth_fn)
        rows.append(vo_errors(seq.name, result.poses, seq.gt_poses, align="sim3"))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every stage")
    p.add_argument("--kitti-root", help="KITTI odometry root (dataset/sequences) with the training sequences")
    p.add_argument("--test-sequences", nargs="*", default=["09", "10"], help="VO test sequences (default 09 10)")
    p.add_argument("--depth-gt", help="KITTI stereo 2012/2015 folder with ground-truth disparity")
    p.add_argument("--out", default="runs/kitti_trianflow")
    p.add_argument("--max-frames", type=int, default=None, help="VO on the first frames of each test sequence")
    p.add_argument("--skip-training", action="store_true", help="evaluate <out>/joint/last.pt as it is")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--smoke", action="store_true", help="2 steps per stage on ../shared/data, 12 VO frames")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = list(args.overrides)
    if args.smoke:
        args.kitti_root = args.kitti_root or str(SHARED / "kitti_odom_straight")
        args.test_sequences = [args.kitti_root]
        args.depth_gt = args.depth_gt or str(SHARED / "kitti_stereo2012")
        args.max_frames = args.max_frames or 12
        overrides = SMOKE_OVERRIDES + overrides
    if not args.kitti_root or not args.depth_gt:
        p.error("give --kitti-root and --depth-gt (or --smoke)")
    out = Path(args.out)
    ckpt = out / "joint" / "last.pt"
    if not args.skip_training:
        ckpt = train_three_stages(out, [f"data.root={args.kitti_root}"] + overrides)
    depth = evaluate_depth(ckpt, Path(args.depth_gt))
    seqs = [s if Path(s).exists() else str(Path(args.kitti_root) / s) for s in args.test_sequences]
    rows = evaluate_vo(ckpt, seqs, args.max_frames)
    write_results(out, rows, depth, title="TrianFlow on KITTI",
                  meta={"checkpoint": str(ckpt), "kitti_root": args.kitti_root, "depth_gt": args.depth_gt,
                        "test_sequences": seqs, "max_frames": args.max_frames, "overrides": overrides})
    print(results_markdown(rows, depth, title="TrianFlow on KITTI"))
    print(f"written: {out / 'results.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
