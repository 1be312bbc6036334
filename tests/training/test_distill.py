"""The FlowNet's warm start from DIS (``loss.w_distill``) and the DIS geometry of the depth stages
(``loss.geometry_flow=dis``), the training log and ``{stage}`` in ``train.out_dir``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trianflow.data.synthetic import synthetic_sequence
from trianflow.errors import InputError
from trianflow.flow_backends import dis_flow_targets
from trianflow.losses.flow import flow_distill_loss
from trianflow.training import Trainer
from tests.training.test_tasks import make_cfg


def _shifted_pair(dx=3, dy=1, h=48, w=96):
    rng = np.random.default_rng(0)
    base = (rng.random((h + 20, w + 20)) * 255).astype(np.float32)
    import cv2

    base = cv2.GaussianBlur(base, (0, 0), 1.5)
    a = base[10:10 + h, 10:10 + w]
    b = base[10 - dy:10 - dy + h, 10 - dx:10 - dx + w]  # content moves by (+dx, +dy) from a to b
    t = lambda x: torch.from_numpy(np.repeat(x[None] / 255.0, 3, 0)).float()[None]  # noqa: E731
    return t(a), t(b)


def test_dis_targets_recover_a_shift():
    a, b = _shifted_pair()
    f, g, mf, mg = dis_flow_targets(a, b, preset="medium")
    assert f.shape == (1, 2, 48, 96) and mf.shape == (1, 1, 48, 96)
    m = mf[0, 0] > 0
    assert m.float().mean() > 0.6
    assert float(f[0, 0][m].median()) == pytest.approx(3.0, abs=0.3)
    assert float(f[0, 1][m].median()) == pytest.approx(1.0, abs=0.3)
    assert float(g[0, 0][mg[0, 0] > 0].median()) == pytest.approx(-3.0, abs=0.3)
    # the right border strip moves out of image 2: not consistent, not a target
    assert float(mf[0, 0, :, -2:].mean()) < 0.5


def test_distill_loss_pyramid():
    target = torch.zeros(1, 2, 32, 64)
    target[:, 0] = 8.0  # 8 px to the right at full resolution
    mask = torch.ones(1, 1, 32, 64)
    exact = [target, target[:, :, ::4, ::4] / 4, target[:, :, ::8, ::8] / 8]  # each level in its own pixels
    zero = [torch.zeros_like(x) for x in exact]
    assert float(flow_distill_loss(exact, target, mask, 3)) == pytest.approx(0.2, abs=1e-4)  # 2 x sqrt(0.01)
    assert float(flow_distill_loss(zero, target, mask, 3)) > 3.0
    # masked-out pixels do not count
    bad = [x.clone() for x in exact]
    bad[0][:, :, :, :32] = 100.0
    half = mask.clone()
    half[:, :, :, :40] = 0
    assert float(flow_distill_loss(bad[:1], target, half, 1)) == pytest.approx(0.2, abs=1e-4)
    # the gradient moves the student towards the teacher
    s = [torch.zeros(1, 2, 32, 64, requires_grad=True)]
    flow_distill_loss(s, target, mask, 1).backward()
    assert float(s[0].grad[:, 0].sum()) < 0


def test_flow_stage_with_distillation_learns_the_teacher(tmp_path):
    cfg = make_cfg(tmp_path, "flow", "loss.w_distill=1.0", "loss.distill_steps=3", "train.steps=4",
                   "optim.lr=1e-3")
    s = Trainer.from_config(cfg).run()
    assert s["steps_run"] == 4 and math.isfinite(s["loss"])
    log = (tmp_path / "flow" / "log.jsonl").read_text().splitlines()
    import json

    entries = [json.loads(x) for x in log]
    assert [e["step"] for e in entries] == [1, 2, 3, 4]
    assert all("distill" in e["terms"] for e in entries[:3]) and "distill" not in entries[3]["terms"]


def test_depth_stage_with_dis_geometry_runs_no_flownet(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, "depth", "loss.geometry_flow=dis")
    tr = Trainer.from_config(cfg)

    def boom(*a, **k):
        raise AssertionError("the FlowNet ran")

    monkeypatch.setattr(tr.models["flow"], "forward_bidirectional", boom)
    s = tr.run()
    assert s["steps_run"] == 2 and math.isfinite(s["loss"]) and {"tri", "pf", "pd", "n_valid"} <= set(s["terms"])
    joint = Trainer.from_config(make_cfg(tmp_path, "joint", "loss.geometry_flow=dis")).run()
    assert math.isfinite(joint["loss"]) and {"flow", "tri"} <= set(joint["terms"])
    with pytest.raises(InputError, match="geometry_flow"):
        Trainer.from_config(make_cfg(tmp_path, "depth", "loss.geometry_flow=sift", name="bad")).run()


def test_stage_placeholder_in_out_dir(tmp_path):
    cfg = make_cfg(tmp_path, "flow", f"train.out_dir={tmp_path / 'recipe_{stage}'}", "train.steps=1")
    tr = Trainer.from_config(cfg)
    assert tr.out_dir == tmp_path / "recipe_flow" and tr.cfg.train.out_dir == str(tmp_path / "recipe_flow")
    s = tr.run()
    assert (tmp_path / "recipe_flow" / "last.pt").is_file() and s["steps_run"] == 1
