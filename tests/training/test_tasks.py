"""Tests for the ``trianflow`` training task (trianflow.training.tasks): stages through the Trainer,
stage chaining, per-sample validity with exact synthetic ground truth (datasets: tests/data/test_builders.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trianflow.config import load_config
from trianflow.errors import InputError
from trianflow.geometry.pose import rotation_error_deg, translation_angle_deg
from trianflow.geometry.two_view import two_view_geometry
from trianflow.training import Trainer
from trianflow.training.checkpoint import load_checkpoint
from trianflow.training.registry import get_task
from trianflow.training.tasks import TrianFlowTask
from trianflow.training.trainer import StepContext
from trianflow.viz.images import to_display

SMALL_FLOW = "model.flow.pyramid_channels=[8,8,16,16,24,24]"


def make_cfg(tmp_path, stage, *extra, name=None):
    base = [
        "train.task=trianflow", f"train.stage={stage}", "train.steps=2", "train.device=cpu", "train.log_every=1",
        "train.image_every=0", "train.ckpt_every=0", f"train.out_dir={tmp_path / (name or stage)}",
        "data.batch_size=2", "data.num_workers=0", "data.size=[64,64]", "data.sequences=[forward_turn:0:3]",
        "loss.num_matches=600", "loss.num_scales=2", SMALL_FLOW,
    ]
    return load_config(None, base + list(extra))


def weights(path, name):
    return load_checkpoint(path)["models"][name]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------ stages via the Trainer


def test_three_stages_chain_through_checkpoints(tmp_path):
    assert get_task("trianflow") is TrianFlowTask
    # stage 1: flow only
    s1 = Trainer.from_config(make_cfg(tmp_path, "flow")).run()
    assert s1["steps_run"] == 2 and s1["skipped_steps"] == 0 and math.isfinite(s1["loss"])
    assert {"flow", "flow_smooth", "flow_consis", "gt_epe"} <= set(s1["terms"])
    ck1 = load_checkpoint(s1["checkpoint"])
    assert set(ck1["models"]) == {"flow"} and ck1["stage"] == "flow"
    # stage 2: depth, FlowNet initialised from stage 1 and frozen
    tr2 = Trainer.from_config(make_cfg(tmp_path, "depth", f"train.init_flow={s1['checkpoint']}"))
    assert same(tr2.models["flow"].state_dict(), weights(s1["checkpoint"], "flow"))
    depth0 = {k: v.clone() for k, v in tr2.models["depth"].state_dict().items()}
    s2 = tr2.run()
    assert s2["steps_run"] == 2 and math.isfinite(s2["loss"])
    assert {"tri", "pf", "pd", "smooth", "n_valid", "inlier_ratio", "gt_abs_rel"} <= set(s2["terms"])
    assert same(weights(s2["checkpoint"], "flow"), weights(s1["checkpoint"], "flow"))  # frozen
    assert not same(weights(s2["checkpoint"], "depth"), depth0)  # trained
    assert not tr2.models["flow"].training and tr2.models["depth"].training
    # stage 3: joint, both networks from the depth-stage checkpoint, both trained
    s3 = Trainer.from_config(make_cfg(tmp_path, "joint", f"train.init_flow={s2['checkpoint']}",
                                      f"train.init_depth={s2['checkpoint']}")).run()
    assert s3["steps_run"] == 2 and math.isfinite(s3["loss"])
    assert not same(weights(s3["checkpoint"], "flow"), weights(s2["checkpoint"], "flow"))
    assert not same(weights(s3["checkpoint"], "depth"), weights(s2["checkpoint"], "depth"))
    # a flow-stage checkpoint cannot initialise the DepthNet
    with pytest.raises(InputError, match="has no 'depth' network"):
        Trainer.from_config(make_cfg(tmp_path, "joint", f"train.init_depth={s1['checkpoint']}", name="bad"))


def test_flow_checkpoint_of_another_architecture_is_refused(tmp_path):
    s1 = Trainer.from_config(make_cfg(tmp_path, "flow", "train.steps=1")).run()
    cfg = make_cfg(tmp_path, "depth", f"train.init_flow={s1['checkpoint']}", "model.flow.context=false", name="d")
    with pytest.raises(InputError, match="another architecture"):
        Trainer.from_config(cfg)


def test_stage_and_model_errors(tmp_path):
    task = TrianFlowTask(make_cfg(tmp_path, "flow"))
    assert set(task.models()) == {"flow"}
    with pytest.raises(InputError, match="needs a DepthNet"):
        task.set_stage("depth")
    with pytest.raises(InputError, match="stereo task"):
        TrianFlowTask(make_cfg(tmp_path, "depth", "model.depth.stereo=true"))
    with pytest.raises(InputError, match="only a 'train' split"):
        task.build_dataset("val")


# ------------------------------------------------------------------------------------ geometry and validity


class _FixedFlow(nn.Module):
    """Stands in for the FlowNet: returns given flows (exact ground truth) whatever the images."""

    def __init__(self, fwd: torch.Tensor, bwd: torch.Tensor):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))
        self.fwd, self.bwd = fwd, bwd

    def forward_bidirectional(self, img1, img2):
        return [self.fwd], [self.bwd]


@pytest.fixture(scope="module")
def gt_batch():
    """Sample 0: frames 0 -> 1 of a synthetic sequence with exact flows; sample 1: a frame with itself."""
    from trianflow.data.synthetic import synthetic_sequence

    seq = synthetic_sequence(3, size=(64, 192), kind="forward_turn", seed=2)
    img = [torch.from_numpy(seq.read(i)).permute(2, 0, 1).float() / 255 for i in range(2)]
    f01, _ = seq.flow(0, 1)
    f10, _ = seq.flow(1, 0)
    K = torch.as_tensor(seq.K, dtype=torch.float32)
    batch = {
        "image": torch.stack([img[0], img[0]]),
        "image_next": torch.stack([img[1], img[0]]),
        "K": torch.stack([K, K]),
        "pose_gt": torch.stack([torch.as_tensor(seq.relative_pose(0, 1), dtype=torch.float32), torch.eye(4)]),
        "depth_gt": torch.stack([torch.from_numpy(seq.depth(0))[None]] * 2),
    }
    fwd = torch.stack([torch.from_numpy(f01), torch.zeros(2, 64, 192)])
    bwd = torch.stack([torch.from_numpy(f10), torch.zeros(2, 64, 192)])
    return batch, fwd, bwd


def test_two_view_geometry_on_exact_flow(gt_batch):
    batch, fwd, bwd = gt_batch
    geo = two_view_geometry(fwd, bwd, batch["K"], num_matches=2000, threshold=0.5, min_angle_deg=0.5, seed=1)
    assert geo.valid.tolist() == [True, False]  # identical images: no parallax, no triangulation
    T = batch["pose_gt"][0]
    assert float(rotation_error_deg(geo.pose.R[:1], T[None, :3, :3])) < 0.3
    assert float(translation_angle_deg(geo.pose.t[:1], T[None, :3, 3])) < 3.0
    assert geo.T.shape == (2, 4, 4) and geo.T.dtype == torch.float32
    # triangulated depths (unit baseline) x true baseline = true depth at those pixels
    ok = geo.tri.valid[0]
    assert int(ok.sum()) > 100
    uv = geo.corr.x1[0, ok].round().long()
    d_true = batch["depth_gt"][0, 0, uv[:, 1], uv[:, 0]]
    ratio = geo.tri.depth1[0, ok] * float(T[:3, 3].norm()) / d_true
    assert abs(float(ratio.median()) - 1.0) < 0.03


def test_invalid_sample_drops_out_while_the_other_learns(tmp_path, gt_batch):
    batch, fwd, bwd = gt_batch
    cfg = make_cfg(tmp_path, "depth", "data.size=[64,192]", "loss.num_matches=2000", "loss.num_scales=1")
    task = TrianFlowTask(cfg)
    task.set_stage("depth")
    depth = task.models()["depth"]
    depth.train()
    ctx = StepContext(step=0, stage="depth", device=torch.device("cpu"),
                      models={"flow": _FixedFlow(fwd, bwd), "depth": depth}, want_images=True,
                      autocast=lambda: torch.autocast("cpu", enabled=False))
    out = task.step(batch, ctx)
    assert float(out.terms["n_valid"]) == 1.0
    assert torch.isfinite(out.loss) and out.loss.requires_grad
    assert float(out.terms["tri"]) > 0 and float(out.terms["pd"]) > 0
    assert float(out.terms["gt_rot_err_deg"]) < 0.3  # only the valid sample is measured
    out.loss.backward()
    grads = [p.grad for p in depth.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # tensorboard images: all displayable
    assert {"image", "flow", "occlusion", "flow_mask", "disparity", "depth", "inliers", "epipolar_mask"} <= set(
        out.images)
    for name, im in out.images.items():
        assert to_display(im).shape[0] == 3, name
    # a few steps on this batch: the geometric loss of the valid sample falls
    opt = torch.optim.Adam(depth.parameters(), lr=1e-3)
    first = None
    for i in range(3):
        opt.zero_grad()
        o = task.step(batch, StepContext(step=i, stage="depth", device=torch.device("cpu"),
                                         models=ctx.models, want_images=False, autocast=ctx.autocast))
        o.loss.backward()
        opt.step()
        first = float(o.terms["tri"]) if first is None else first
    assert float(o.terms["tri"]) < first
    # both samples invalid: geometry terms are 0 but the loss stays finite and trainable (smoothness)
    both = {k: v[1:].repeat(2, *([1] * (v.dim() - 1))) for k, v in batch.items()}
    ctx2 = StepContext(step=0, stage="depth", device=torch.device("cpu"),
                       models={"flow": _FixedFlow(fwd[1:].repeat(2, 1, 1, 1), bwd[1:].repeat(2, 1, 1, 1)),
                               "depth": depth}, want_images=False, autocast=ctx.autocast)
    o2 = task.step(both, ctx2)
    assert float(o2.terms["n_valid"]) == 0 and float(o2.terms["tri"]) == 0 and torch.isfinite(o2.loss)
    o2.loss.backward()


# ------------------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_joint_step_on_cuda_with_amp(tmp_path):
    cfg = make_cfg(tmp_path, "joint", "train.device=cuda", "train.amp=bf16", "data.batch_size=4",
                   "data.sequences=[forward_turn:0:6]")
    s = Trainer.from_config(cfg).run()
    assert s["steps_run"] == 2 and math.isfinite(s["loss"]) and s["device"].startswith("cuda")
