"""``trianflow train``: train a registered task from a YAML config with ``key=value`` overrides.

Examples::

    trianflow train --config configs/kitti_flow.yaml data.root=/data/kitti optim.lr=2e-4
    trianflow train --config configs/kitti_flow.yaml --resume            # out_dir/last.pt
    trianflow train --resume runs/flow/step_0005000.pt                   # config from the checkpoint
    torchrun --nproc_per_node 4 -m trianflow train --config configs/kitti_flow.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "train a model (TrianFlow stages, stereo, toy) from a YAML config"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help=HELP,
        description=HELP + ". Overrides are dotted keys, e.g. optim.lr=2e-4 data.size=[128,416] "
        "train.stage=depth train.init_flow=runs/flow/last.pt. Multi-GPU: torchrun --nproc_per_node N "
        "-m trianflow train ...",
    )
    p.add_argument("--config", "-c", help="YAML config (may inherit with 'base: other.yaml'); "
                   "default: the built-in defaults, or the checkpoint's config when resuming")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=2e-4")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                   help="resume from a checkpoint (default with no PATH: OUT_DIR/last.pt if it exists)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (same as train.device=...)")
    p.add_argument("--out", help="run folder for checkpoints, logs and tensorboard (same as train.out_dir=...)")
    p.add_argument("--print-config", action="store_true", help="print the merged config as YAML and exit")
    p.add_argument("--list-tasks", action="store_true", help="list the registered training tasks and exit")
    p.add_argument("--viz", nargs="?", const="auto", choices=("auto", "spawn", "save"), metavar="auto|spawn|save",
                   help="also log losses, flow/depth images and the GT metrics to the Rerun viewer (pip install "
                   "trianflow[viz]; tensorboard stays on): spawned with a display, else OUT_DIR/recording.rrd")
    p.set_defaults(func=run)
    return p


def _resolve_args(args) -> tuple[list[str], str | None]:
    overrides = list(args.overrides)
    resume = args.resume
    # `--resume optim.lr=1` : argparse took the override as the PATH
    if resume not in (None, "auto") and "=" in resume and not Path(resume).exists():
        overrides.insert(0, resume)
        resume = "auto"
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    return overrides, resume


def _load(args, overrides: list[str], resume: str | None):
    """The config: --config + overrides, or (resuming without --config) the checkpoint's + overrides."""
    from trianflow.config import apply_overrides, config_from_dict, config_to_dict, load_config
    from trianflow.training.checkpoint import load_checkpoint

    if args.config is None and resume is not None:
        if resume == "auto":
            path = Path(load_config(None, overrides).train.out_dir) / "last.pt"
        else:
            path = Path(resume)
        if path.exists():
            source = f"config stored in {path}"
            saved = config_to_dict(config_from_dict(load_checkpoint(path).get("config") or {}, source))
            return config_from_dict(apply_overrides(saved, overrides), source + " + overrides")
    return load_config(args.config, overrides)


def run(args) -> int:
    """Entry point of ``trianflow train``; returns the exit code (130 when stopped by a signal)."""
    from trianflow.training import available_tasks
    from trianflow.training import distributed as D

    if args.list_tasks:
        print("\n".join(available_tasks()))
        return 0
    viz_mode = None
    if getattr(args, "viz", None):
        from trianflow.viz.rerun_log import require_rerun, resolve_mode

        require_rerun()
        viz_mode = resolve_mode(args.viz)
    overrides, resume = _resolve_args(args)
    cfg = _load(args, overrides, resume)
    if args.print_config:
        import yaml

        from trianflow.config import config_to_dict

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None), end="")
        return 0

    from trianflow.training.trainer import Trainer

    trainer, finished = None, False
    try:
        trainer = Trainer.from_config(cfg, resume=resume, progress=True)
        if viz_mode is not None and trainer.info.is_main:
            from trianflow.viz.rerun_log import TrainRecorder

            trainer.out_dir.mkdir(parents=True, exist_ok=True)
            trainer.viz_writer = TrainRecorder(trainer.out_dir / "recording.rrd" if viz_mode == "save" else None,
                                               spawn=viz_mode == "spawn")
        summary = trainer.run()
        main = trainer.info.is_main
        finished = True
    finally:
        if trainer is not None:
            trainer.close()
        D.cleanup(sync=finished)
    if main:
        ips = summary["images_per_s"] or 0.0
        line = (f"{'stopped' if summary['interrupted'] else 'finished'} at step {summary['step']}/{cfg.train.steps} "
                f"({summary['steps_run']} steps in {summary['elapsed_s']:.1f} s, "
                f"{ips:.1f} images/s, {summary['skipped_steps']} skipped, peak {summary['peak_mem_mb']:.0f} MB); "
                f"checkpoint: {summary['checkpoint']}")
        print(line)
        print(json.dumps({k: summary[k] for k in ("step", "loss", "skipped_steps", "images_per_s", "interrupted")}))
        if summary["interrupted"]:
            print(f"resume with: trianflow train --resume {summary['checkpoint']}", file=sys.stderr)
    return 130 if summary["interrupted"] else 0
