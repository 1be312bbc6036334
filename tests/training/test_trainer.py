"""Tests for trianflow.training.trainer with the built-in toy task (CPU, a few steps each)."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys

import pytest
import torch

from trianflow.config import load_config
from trianflow.errors import InputError
from trianflow.training import StepOutput, Trainer, TrainingDiverged
from trianflow.training.checkpoint import load_checkpoint
from trianflow.training.toy import ToyTask
from trianflow.training.trainer import _lr_lambda, seed_everything


def make_cfg(tmp_path, *overrides, name="run"):
    base = [
        "train.task=toy", "train.steps=6", "train.device=cpu", "train.log_every=2", "train.image_every=0",
        "train.ckpt_every=0", f"train.out_dir={tmp_path / name}", "data.batch_size=4", "data.num_workers=0",
        "model.flow.samples=16", "model.flow.noise=0.05", "model.flow.dropout=0.2",
    ]
    return load_config(None, base + list(overrides))


def train(cfg, resume=None, task=None):
    if task is None:
        tr = Trainer.from_config(cfg, resume=resume)
    else:
        tr = Trainer(cfg, task, resume=resume)
    return tr, tr.run()


def params(tr) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.detach().clone() for n, m in tr.models.items() for k, v in m.state_dict().items()}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def assert_differ(a: dict, b: dict, key: str):
    assert not torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("split, workers", [(3, 0), (4, 0), (3, 2)])
def test_resumed_run_equals_uninterrupted_run(tmp_path, split, workers):
    """6 steps straight == `split` steps + resume + rest, bit for bit (data order, augmentation,
    in-step randomness, Adam state). 16 samples / batch 4 = 4 batches per epoch, so the runs
    cross an epoch boundary; split=4 stops exactly on it."""
    w = f"data.num_workers={workers}"
    tr_a, sa = train(make_cfg(tmp_path, w, name="straight"))
    _, s1 = train(make_cfg(tmp_path, w, f"train.steps={split}", name="split"))
    assert s1["step"] == split
    ckpt = load_checkpoint(tmp_path / "split" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch_in_epoch"]) == divmod(split, 4)
    tr_b, sb = train(make_cfg(tmp_path, w, name="split"), resume="auto")
    assert sb["step"] == 6 and sb["steps_run"] == 6 - split
    assert_same(params(tr_a), params(tr_b))
    sa_opt, sb_opt = tr_a.optimizer.state_dict()["state"], tr_b.optimizer.state_dict()["state"]
    for i in sa_opt:
        assert torch.equal(sa_opt[i]["exp_avg_sq"], sb_opt[i]["exp_avg_sq"])
    assert sa["loss"] == sb["loss"]


class _SignalAt(ToyTask):
    """Toy task that sends itself SIGTERM during step `at` (like a cluster pre-emption)."""

    at = 2

    def step(self, batch, ctx):
        if ctx.step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().step(batch, ctx)


def test_sigterm_saves_checkpoint_and_resume_is_exact(tmp_path):
    tr_a, _ = train(make_cfg(tmp_path, name="straight"))
    cfg = make_cfg(tmp_path, name="killed")
    seed_everything(cfg.train.seed)
    tr, s = train(cfg, task=_SignalAt(cfg))
    assert s["interrupted"] is True and s["step"] == 3  # the step in flight is finished, then saved
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is not tr._on_signal  # handlers restored
    tr_b, s2 = train(cfg, resume="auto")
    assert s2["step"] == 6 and not s2["interrupted"]
    assert_same(params(tr_a), params(tr_b))


# ------------------------------------------------------------------------------------ non-finite


def test_nan_loss_steps_are_skipped_and_logged(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="trianflow.training.trainer")
    tr_ref, _ = train(make_cfg(tmp_path, "train.steps=1", name="ref"))
    tr, s = train(make_cfg(tmp_path, "train.steps=3", "model.flow.nan_steps=[1,2]", name="nan"))
    assert s["skipped_steps"] == 2 and s["step"] == 3
    assert_same(params(tr_ref), params(tr))  # the two NaN steps changed nothing
    assert sum("non-finite" in r.message for r in caplog.records) == 2
    assert "step 2" in caplog.records[-1].message


class _NanGrad(ToyTask):
    """Finite loss, NaN gradient (d sqrt(|x|)/dx at 0)."""

    def step(self, batch, ctx):
        out = super().step(batch, ctx)
        w = ctx.models["flow"].fc.weight
        out.loss = out.loss + (w - w.detach()).abs().sqrt().sum()
        return out


def test_non_finite_gradients_are_skipped(tmp_path):
    cfg = make_cfg(tmp_path, "train.steps=3")
    seed_everything(0)
    task = _NanGrad(cfg)
    init = {k: v.clone() for k, v in task.models()["flow"].state_dict().items()}
    tr, s = train(cfg, task=task)
    assert s["skipped_steps"] == 3
    for k, v in tr.models["flow"].state_dict().items():
        assert torch.equal(v, init[k])


def test_consecutive_non_finite_steps_abort(tmp_path):
    cfg = make_cfg(tmp_path, "train.steps=20", "train.max_consecutive_skips=3", "model.flow.nan_steps=[2,3,4,5,6]")
    with pytest.raises(TrainingDiverged, match="3 consecutive steps .*non-finite.*lower optim.lr"):
        train(cfg)


# ---------------------------------------------------------------------------------------- AMP


class _RecordDtype(ToyTask):
    dtypes: list

    def step(self, batch, ctx):
        with ctx.autocast():
            self.dtypes.append(ctx.models["flow"](batch["x"]).dtype)
        return super().step(batch, ctx)


def test_bf16_autocast_on_cpu_runs_and_updates(tmp_path):
    cfg = make_cfg(tmp_path, "train.amp=bf16", "train.steps=3")
    seed_everything(0)
    task = _RecordDtype(cfg)
    task.dtypes = []
    before = {k: v.clone() for k, v in task.models()["flow"].state_dict().items()}
    tr, s = train(cfg, task=task)
    assert task.dtypes == [torch.bfloat16] * 3
    assert s["skipped_steps"] == 0 and math.isfinite(s["loss"])
    assert not torch.equal(before["fc.weight"], tr.models["flow"].fc.weight)
    assert not tr.scaler.is_enabled()


def test_fp16_gradscaler_path_on_cpu(tmp_path):
    """fp16 + GradScaler (CPU autocast supports fp16): the scaler state resumes exactly, and
    overflowing gradients are skipped with the scale backed off."""
    tr_a, _ = train(make_cfg(tmp_path, "train.amp=fp16", name="a"))
    assert tr_a.scaler.is_enabled()
    train(make_cfg(tmp_path, "train.amp=fp16", "train.steps=3", name="b"))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["scaler"]["_growth_tracker"] == 3
    tr_b, _ = train(make_cfg(tmp_path, "train.amp=fp16", name="b"), resume="auto")
    assert_same(params(tr_a), params(tr_b))
    assert tr_b.scaler.state_dict() == tr_a.scaler.state_dict()

    cfg = make_cfg(tmp_path, "train.amp=fp16", "train.steps=3", name="c")
    seed_everything(0)
    tr, s = train(cfg, task=_NanGrad(cfg))
    assert s["skipped_steps"] == 3 and tr.scaler.get_scale() == 65536.0 / 8


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_gradscaler_on_cuda_resumes(tmp_path):
    over = ("train.amp=fp16", "train.device=cuda")
    tr_a, sa = train(make_cfg(tmp_path, *over, name="a"))
    assert tr_a.scaler.is_enabled() and sa["step"] == 6
    _, _ = train(make_cfg(tmp_path, *over, "train.steps=3", name="b"))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["scaler"]["scale"] > 0
    tr_b, _ = train(make_cfg(tmp_path, *over, name="b"), resume="auto")
    for k, v in params(tr_a).items():
        torch.testing.assert_close(v, params(tr_b)[k], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- stages, init


def test_stages_freeze_and_init_chaining(tmp_path):
    tr_flow, _ = train(make_cfg(tmp_path, "train.stage=flow", "train.steps=3", name="flow"))
    flow_ckpt = tmp_path / "flow" / "last.pt"
    cfg = make_cfg(tmp_path, "train.stage=depth", "train.steps=3", f"train.init_flow={flow_ckpt}", name="depth")
    seed_everything(0)
    task = ToyTask(cfg)
    depth_init = task.models()["depth"].fc.weight.detach().clone()
    tr, _ = Trainer(cfg, task), None
    assert tr.models["flow"].training is False and tr.models["depth"].training is True
    tr.run()
    saved_flow = load_checkpoint(flow_ckpt)["models"]["flow"]
    for k, v in tr.models["flow"].state_dict().items():  # loaded from the flow stage and frozen
        assert torch.equal(v, saved_flow[k])
    assert not torch.equal(tr.models["depth"].fc.weight, depth_init)
    # resuming a depth-stage run from a flow-stage checkpoint is a user mistake
    with pytest.raises(InputError, match="stage 'flow'.*train.init_flow"):
        Trainer.from_config(cfg, resume=flow_ckpt)


def test_init_checkpoint_errors(tmp_path):
    train(make_cfg(tmp_path, "train.steps=1", "model.flow.dim=4", name="small"))
    small = tmp_path / "small" / "last.pt"
    with pytest.raises(InputError, match=r"another architecture \(dim: 4 vs 8\)"):
        Trainer.from_config(make_cfg(tmp_path, f"train.init_flow={small}"))
    with pytest.raises(InputError, match=r"another architecture"):
        Trainer.from_config(make_cfg(tmp_path, name="small"), resume=small)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(small.read_bytes()[:300])
    with pytest.raises(InputError, match="bad.pt is corrupted or truncated"):
        Trainer.from_config(make_cfg(tmp_path, f"train.init_depth={bad}"))


def test_no_trainable_parameters_is_an_input_error(tmp_path):
    class Frozen(ToyTask):
        def set_stage(self, stage):
            for m in self.models().values():
                m.requires_grad_(False)

    cfg = make_cfg(tmp_path)
    with pytest.raises(InputError, match="no trainable parameters in stage 'flow'"):
        Trainer(cfg, Frozen(cfg))


def test_task_must_return_step_output(tmp_path):
    class Bad(ToyTask):
        def step(self, batch, ctx):
            return super().step(batch, ctx).loss

    cfg = make_cfg(tmp_path)
    with pytest.raises(TypeError, match="StepOutput"):
        Trainer(cfg, Bad(cfg)).run()


# ------------------------------------------------------------------------------- data, resume


def test_dataset_errors(tmp_path):
    with pytest.raises(InputError, match="training dataset is empty"):
        Trainer.from_config(make_cfg(tmp_path, "model.flow.samples=0"))
    with pytest.raises(InputError, match="3 samples, fewer than data.batch_size=4"):
        Trainer.from_config(make_cfg(tmp_path, "model.flow.samples=3"))


def test_resume_auto_without_checkpoint_starts_fresh_and_explicit_missing_fails(tmp_path):
    _, s = train(make_cfg(tmp_path, "train.steps=2"), resume="auto")
    assert s["step"] == 2 and s["steps_run"] == 2
    with pytest.raises(InputError, match="checkpoint not found"):
        Trainer.from_config(make_cfg(tmp_path), resume=tmp_path / "nope.pt")


def test_periodic_checkpoints_outputs_and_summary(tmp_path):
    _, s = train(make_cfg(tmp_path, "train.ckpt_every=2", "train.keep_ckpts=2", "train.steps=7"))
    run = tmp_path / "run"
    names = sorted(p.name for p in run.iterdir())
    assert names == ["config.yaml", "last.pt", "log.jsonl", "step_0000004.pt", "step_0000006.pt",
                     "step_0000007.pt", "summary.json", "tb"] or names == [
                         "config.yaml", "last.pt", "log.jsonl", "step_0000006.pt", "step_0000007.pt", "summary.json",
                         "tb"]
    ck = load_checkpoint(run / "last.pt")
    assert ck["step"] == 7 and ck["task"] == "toy" and ck["config"]["train"]["steps"] == 7
    assert len(ck["rng"]) == 1 and ck["arch"]["flow"] == {"kind": "toy_flow", "dim": 8}
    assert s["images_per_s"] > 0 and s["peak_mem_mb"] > 0 and s["step"] == 7
    assert load_config(run / "config.yaml").train.steps == 7


def test_tensorboard_scalars_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(make_cfg(tmp_path, "train.image_every=2", "train.log_every=2", "train.steps=4"))
    ea = EventAccumulator(str(tmp_path / "run" / "tb"))
    ea.Reload()
    tags = ea.Tags()
    for t in ("loss/total", "loss/flow", "train/lr", "train/images_per_s", "train/peak_mem_mb", "train/grad_norm"):
        assert t in tags["scalars"], t
    assert [e.step for e in ea.Scalars("loss/total")] == [2, 4]
    assert set(tags["images"]) == {"images/flow", "images/error"}
    assert len(ea.Images("images/flow")) == 2


def test_runs_without_tensorboard(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    caplog.set_level(logging.WARNING)
    _, s = train(make_cfg(tmp_path, "train.steps=2", "train.image_every=1"))
    assert s["step"] == 2
    assert any("tensorboard is not installed" in r.message for r in caplog.records)
    assert not (tmp_path / "run" / "tb").exists()


# ------------------------------------------------------------------------------- schedule


def test_lr_schedules():
    cfg = load_config(None, ["optim.schedule=step", "optim.milestones=[10,20]", "optim.gamma=0.5"])
    f = _lr_lambda(cfg)
    assert [f(0), f(9), f(10), f(19), f(20)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    cfg = load_config(None, ["optim.schedule=cosine", "train.steps=100", "optim.min_lr_ratio=0.1"])
    f = _lr_lambda(cfg)
    assert f(0) == pytest.approx(1.0) and f(50) == pytest.approx(0.55) and f(100) == pytest.approx(0.1)
    cfg = load_config(None, ["optim.warmup_steps=4"])
    f = _lr_lambda(cfg)
    assert [f(0), f(1), f(3), f(4)] == [0.25, 0.5, 1.0, 1.0]


# ------------------------------------------------------------------------------- image helpers


def test_step_output_defaults():
    out = StepOutput(loss=torch.tensor(1.0))
    assert out.terms == {} and out.images is None and out.num_images is None


def test_out_dir_argument_overrides_config_and_is_saved(tmp_path):
    cfg = make_cfg(tmp_path, "train.steps=1")
    seed_everything(0)
    tr = Trainer(cfg, ToyTask(cfg), out_dir=tmp_path / "elsewhere")
    tr.run()
    assert (tmp_path / "elsewhere" / "last.pt").exists() and not (tmp_path / "run").exists()
    assert load_config(tmp_path / "elsewhere" / "config.yaml").train.out_dir == str(tmp_path / "elsewhere")
