"""Tests for trianflow.training.stereo_task: the ``stereo`` and ``stereo_mono`` tasks and their configs (CPU,
tiny images, a few steps). Their objective: tests/losses/test_stereo_objective.py; datasets:
tests/data/test_builders.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trianflow.config import load_config
from trianflow.data.builders import build_stereo_dataset
from trianflow.errors import InputError
from trianflow.training.checkpoint import load_checkpoint
from trianflow.training.registry import available_tasks, get_task
from trianflow.training.stereo_task import StereoMonoTask, StereoTask
from trianflow.training.trainer import StepContext, Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box is small and shared: one thread is faster under load
    yield
    torch.set_num_threads(n)


def cfg_with(*overrides):
    return load_config(None, list(overrides))


# ----------------------------------------------------------------------------------- bad input


def test_dataset_and_model_config_errors():
    with pytest.raises(InputError, match="unknown stereo dataset"):
        build_stereo_dataset(cfg_with("data.dataset=nope"))
    with pytest.raises(InputError, match="data.root"):
        build_stereo_dataset(cfg_with("data.dataset=kitti_stereo"))
    with pytest.raises(InputError, match="synthetic sequences are"):
        build_stereo_dataset(cfg_with("data.dataset=synthetic_stereo", "data.sequences=[spiral:0:4]"))
    with pytest.raises(InputError, match="synthetic sequences are"):
        build_stereo_dataset(cfg_with("data.dataset=synthetic_stereo", "data.sequences=[straight:x]"))
    with pytest.raises(InputError, match="temporal neighbours"):
        build_stereo_dataset(cfg_with("data.dataset=middlebury"), frames=2)
    with pytest.raises(InputError, match="stereo DepthNet"):
        StereoTask(cfg_with("train.task=stereo", "model.depth.stereo=false"))
    with pytest.raises(InputError, match="stages"):
        StereoMonoTask(cfg_with("train.task=stereo_mono")).set_stage("bogus")


# ----------------------------------------------------------------------------------- trainer


def _write_stereo_folder(folder: Path, n=3, h=48, w=96, d=6):
    (folder / "left").mkdir(parents=True)
    (folder / "right").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        tex = cv2.resize((rng.random((h // 4, (w + d) // 4, 3)) * 255).astype(np.uint8), (w + d, h))
        cv2.imwrite(str(folder / "left" / f"{i:03d}.png"), tex[:, :w])
        cv2.imwrite(str(folder / "right" / f"{i:03d}.png"), tex[:, d:d + w])
    (folder / "calib.txt").write_text("60.0 0.3\n")


def test_stereo_task_trains_two_steps_on_a_stereo_folder(tmp_path):
    assert {"stereo", "stereo_mono"} <= set(available_tasks())
    _write_stereo_folder(tmp_path / "pairs")
    cfg = cfg_with("train.task=stereo", "data.dataset=stereo_folder", f"data.root={tmp_path / 'pairs'}",
                   "data.size=[64,128]", "data.batch_size=2", "data.num_workers=0", "data.pin_memory=false",
                   "train.steps=2", "train.log_every=1", "train.image_every=1", "train.device=cpu",
                   "loss.w_icp=1e-3", f"train.out_dir={tmp_path / 'run'}")
    tr = Trainer.from_config(cfg)
    assert isinstance(tr.task, StereoTask)
    summary = tr.run()
    assert summary["steps_run"] == 2 and summary["skipped_steps"] == 0
    assert np.isfinite(summary["loss"]) and {"stereo_ap", "stereo_lr", "icp"} <= set(summary["terms"])
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert set(ckpt["models"]) == {"depth"}
    assert any((tmp_path / "run" / "tb").iterdir())


def test_stereo_mono_task_trains_two_steps_on_synthetic(tmp_path):
    cfg = cfg_with("train.task=stereo_mono", "train.stage=flow", "data.dataset=synthetic_stereo",
                   "data.sequences=[forward_turn:0:4:0.5]", "data.size=[64,192]", "data.batch_size=2",
                   "data.num_workers=0", "data.pin_memory=false", "train.steps=2", "train.log_every=1",
                   "train.image_every=0", "train.device=cpu", f"train.out_dir={tmp_path / 'run'}")
    tr = Trainer.from_config(cfg)
    assert isinstance(tr.task, StereoMonoTask) and set(tr.models) == {"flow", "depth"}
    before = {k: v.clone() for k, v in tr.models["flow"].state_dict().items()}
    summary = tr.run()
    assert summary["steps_run"] == 2 and np.isfinite(summary["loss"])
    assert {"stereo_ap", "flow", "flow_smooth", "gt_abs_rel_metric"} <= set(summary["terms"])
    after = tr.models["flow"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the flow stage trains the FlowNet


class _GTFlow(torch.nn.Module):
    """Stand-in FlowNet returning exact flow pyramids (strides 1, 4, 8, 16, 32)."""

    def __init__(self, fwd, bwd):
        super().__init__()
        self.fwd, self.bwd = fwd, bwd
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    @staticmethod
    def _pyr(f):
        h, w = f.shape[-2:]
        out = [f]
        for s in (4, 8, 16, 32):
            hs, ws = -(-h // s), -(-w // s)
            out.append(F.interpolate(f, size=(hs, ws), mode="bilinear", align_corners=False)
                       * torch.tensor([ws / w, hs / h]).view(1, 2, 1, 1))
        return out

    def forward_bidirectional(self, img1, img2):
        return self._pyr(self.fwd), self._pyr(self.bwd)


def test_stereo_mono_depth_stage_trains_depth_from_triangulation():
    """Exact flow in, stereo terms off: the triangulation losses alone reach the DepthNet."""
    from trianflow.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(n_frames=3, size=(64, 192), baseline=0.54, frames=2)
    seq = ds.seq
    samples = [ds[i] for i in range(2)]
    batch = torch.utils.data.default_collate(samples)
    fwd = torch.stack([torch.from_numpy(seq.flow(i, i + 1)[0]) for i in range(2)])
    bwd = torch.stack([torch.from_numpy(seq.flow(i + 1, i)[0]) for i in range(2)])
    cfg = cfg_with("train.task=stereo_mono", "train.stage=depth", "loss.w_stereo_ap=0", "loss.w_stereo_lr=0",
                   "loss.w_stereo_smooth=0", "loss.num_matches=1500", "loss.ransac_iters=50")
    task = StereoMonoTask(cfg)
    stub = _GTFlow(fwd, bwd)
    task.set_stage("depth")
    assert not any(p.requires_grad for p in task.flow_net.parameters())
    ctx = StepContext(step=0, stage="depth", device=torch.device("cpu"), models={"flow": stub, "depth": task.depth_net},
                      want_images=True, autocast=lambda: torch.autocast("cpu", enabled=False))
    out = task.step(batch, ctx)
    assert out.terms["n_valid"] == 2.0
    assert out.terms["tri"] > 0 and out.terms["pd"] > 0 and np.isfinite(float(out.loss.detach()))
    out.loss.backward()
    g = sum(float(p.grad.abs().sum()) for p in task.depth_net.parameters() if p.grad is not None)
    assert g > 0
    assert {"flow", "inliers", "disp_left"} <= set(out.images)


# ----------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name, task, icp", [("stereo_monodepth", "stereo", 0.0), ("stereo_m3depth", "stereo", 1e-3),
                                              ("kitti_stereo_mono", "stereo_mono", 0.0),
                                              ("middlebury_overfit", "stereo", 0.0)])
def test_configs_build_their_tasks(name, task, icp):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.train.task == task and cfg.loss.w_icp == pytest.approx(icp)
    t = get_task(task)(cfg)
    models = t.models()
    assert models["depth"].stereo
    assert set(models) == ({"flow", "depth"} if task == "stereo_mono" else {"depth"})
    if name == "middlebury_overfit":
        # the largest GT disparity (0.081 of the width) must be reachable by disp_scale * sigmoid
        assert models["depth"].disp_scale > 0.09
