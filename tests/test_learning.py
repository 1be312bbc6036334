"""The synthetic TrianFlow recipe learns (a shorter CPU version of ``configs/synthetic_*.yaml``).

Stage 1 trains the FlowNet without supervision and stage 2 the DepthNet from triangulation with
the frozen FlowNet of stage 1, both through the real ``Trainer`` and the recipe's configs, measured
against the renderer's exact ground truth.

How robust the thresholds are (measured, 2-core CPU, torch 2.13 CPU): the flow EPE on the visible
pixels after N steps over seeds 0, 1, 2 and 1 or 2 threads (the same seed takes another path with
other BLAS kernels or thread counts):

- 100 steps (the earlier test): EPE ratio 0.17 - 1.32 (seed 2 diverged to 5.9 px): too short to assert;
- 200 steps (this test): ratio 0.061 - 0.094 (EPE 4.2 -> 0.27 - 0.42 px); asserted < 0.25, a margin of
  2.7x over the worst of the six runs, while a FlowNet that does not learn stays at ratio ~1.

The depth stage from that flow (50 steps measured; 20 in the test) is not asserted to learn: its median-scaled AbsRel went
0.54 -> 0.72 / 0.41 / 0.23 (seeds 0, 1, 2, 2 threads) and 0.24 (seed 0, 1 thread) - a chaotic start,
not a trend a short CI run can hold. It is checked to run end to end on the trained flow (pose and
triangulation valid, finite terms, no skipped step, the DepthNet's prediction changed); the full recipe
(``trianflow train`` for a few minutes, ``configs/synthetic_tiny.yaml``, ``tools/eval_synthetic.py``)
gets AbsRel 0.61 -> 0.16 (docs/RESULTS.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from trianflow.config import load_config
from trianflow.training import Trainer
from trianflow.data.builders import build_trianflow_dataset
from trianflow.evaluation.gt_metrics import evaluate_against_gt

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# shorter than the recipe: 2 training pairs instead of 4, fewer steps
COMMON = ["train.device=cpu", "train.image_every=0", "train.log_every=1000", "train.amp=off",
          "data.sequences=[forward_turn:0:3]", "train.seed=0"]
FLOW_STEPS = 200
DEPTH_STEPS = 20


@pytest.mark.slow
def test_synthetic_recipe_learns_flow_then_depth(tmp_path):
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(2)  # 2 threads as on CI (the spread over 1 and 2 threads is in the docstring)
    torch.use_deterministic_algorithms(True)
    try:
        cfg = load_config(CONFIGS / "synthetic_flow.yaml",
                          COMMON + [f"train.steps={FLOW_STEPS}", f"train.out_dir={tmp_path / 'flow'}"])
        data = build_trianflow_dataset(cfg)
        trainer = Trainer.from_config(cfg)
        epe0 = evaluate_against_gt(data, flow_net=trainer.models["flow"])["epe"]
        summary = trainer.run()
        epe1 = evaluate_against_gt(data, flow_net=trainer.models["flow"])["epe"]
        assert summary["skipped_steps"] == 0
        assert epe0 > 3.0  # the untrained network is far from the true flow
        assert epe1 < 0.25 * epe0, f"flow EPE {epe0:.3f} -> {epe1:.3f} px: did not fall to a quarter"

        cfg = load_config(CONFIGS / "synthetic_depth.yaml",
                          COMMON + [f"train.steps={DEPTH_STEPS}", f"train.out_dir={tmp_path / 'depth'}",
                                    f"train.init_flow={summary['checkpoint']}"])
        trainer = Trainer.from_config(cfg)
        rel0 = evaluate_against_gt(data, depth_net=trainer.models["depth"])["abs_rel"]
        summary = trainer.run()
        rel1 = evaluate_against_gt(data, depth_net=trainer.models["depth"])["abs_rel"]
        print(f"flow EPE {epe0:.3f} -> {epe1:.3f} px, depth AbsRel {rel0:.3f} -> {rel1:.3f}")
        assert summary["terms"]["n_valid"] > 0  # pose + triangulation worked on the trained flow
        assert summary["skipped_steps"] == 0
        assert all(math.isfinite(float(v)) for v in summary["terms"].values())
        assert rel0 > 0.3 and math.isfinite(rel1) and abs(rel1 - rel0) > 1e-3  # the DepthNet was trained
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
