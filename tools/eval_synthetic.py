#!/usr/bin/env python
"""Flow EPE and depth AbsRel of the synthetic recipe's networks against the renderer's ground truth.

The networks are built exactly as ``trianflow train --config CONFIG`` builds them (same seed, so
without checkpoints this measures the *initial* networks of that run), then the weights of the
given checkpoints are loaded over them. Evaluation runs on the config's (un-augmented) synthetic
training pairs, or on other synthetic sequences with ``--sequences``. Prints one JSON line.

    python tools/eval_synthetic.py --config configs/synthetic_depth.yaml                  # initial
    python tools/eval_synthetic.py --config configs/synthetic_depth.yaml \\
        --flow runs/synthetic_flow/last.pt --depth runs/synthetic_depth/last.pt           # trained
    python tools/eval_synthetic.py --config configs/synthetic_joint.yaml --sequences forward_turn:7:12
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trianflow.errors import InputError  # noqa: E402


def evaluate(config: str, flow: str | None = None, depth: str | None = None, sequences=None,
             overrides=None, device: str = "cpu") -> dict:
    """Build the config's networks (seeded as the trainer does), load checkpoints, evaluate; returns a dict."""
    from trianflow.config import load_config
    from trianflow.inference import resolve_device
    from trianflow.training.checkpoint import load_checkpoint, load_model_weights
    from trianflow.data.builders import build_trianflow_dataset
    from trianflow.evaluation.gt_metrics import evaluate_against_gt
    from trianflow.training.tasks import TrianFlowTask
    from trianflow.training.trainer import seed_everything

    ov = list(overrides or []) + ["data.augment=false"]
    if sequences:
        ov.append("data.sequences=[" + ",".join(sequences) + "]")
    cfg = load_config(config, ov)
    if cfg.data.dataset != "synthetic":
        raise InputError(f"{config}: data.dataset is {cfg.data.dataset!r}; this tool needs synthetic data "
                         "(ground truth)")
    seed_everything(cfg.train.seed)
    task = TrianFlowTask(cfg)  # same construction order and seed as Trainer.from_config
    models = task.models()
    for name, path in (("flow", flow), ("depth", depth)):
        if path:
            if name not in models:
                raise InputError(f"--{name} given but stage '{cfg.train.stage}' of {config} has no {name} network")
            load_model_weights(models[name], load_checkpoint(path), name, path)
    dev = resolve_device(device)
    for m in models.values():
        m.to(dev)
    out = evaluate_against_gt(build_trianflow_dataset(cfg), models.get("flow"), models.get("depth"), device=dev)
    out.update({"config": config, "flow": flow, "depth": depth, "sequences": list(cfg.data.sequences),
                "size": list(cfg.data.size)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="synthetic_*.yaml of the run")
    ap.add_argument("--flow", help="checkpoint whose 'flow' network is evaluated")
    ap.add_argument("--depth", help="checkpoint whose 'depth' network is evaluated")
    ap.add_argument("--sequences", nargs="+", help="evaluate on these synthetic sequences (<kind>:<seed>:<frames>)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args(argv)
    try:
        res = evaluate(args.config, args.flow, args.depth, args.sequences, args.overrides, args.device)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
