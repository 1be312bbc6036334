"""Tests for ``trianflow train`` (in-process through the CLI dispatcher, plus one SIGTERM subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from trianflow.cli import main
from trianflow.config import load_config
from trianflow.training import Trainer
from trianflow.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TOY = ["train.task=toy", "data.num_workers=0", "data.batch_size=4", "model.flow.samples=16", "train.log_every=2"]


def _json_line(out: str) -> dict:
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


def test_train_then_resume_from_yaml(tmp_path, capsys):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"task": "toy", "steps": 3}, "data": {"num_workers": 0, "batch_size": 4},
                                   "model": {"flow": {"samples": 16}}}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "finished at step 3/3" in printed and _json_line(printed)["step"] == 3
    assert load_checkpoint(out / "last.pt")["step"] == 3
    # bare --resume followed by an override: resumes out/last.pt and trains 2 more steps
    assert main(["train", "--config", str(cfg), "--out", str(out), "--resume", "train.steps=5"]) == 0
    printed = capsys.readouterr().out
    assert "finished at step 5/5 (2 steps" in printed
    assert load_config(out / "config.yaml").train.steps == 5


def test_resume_without_config_uses_checkpoint_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TOY, "train.steps=2", "optim.lr=0.003", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "step_0000002.pt"), "train.steps=3"]) == 0
    assert "finished at step 3/3" in capsys.readouterr().out
    saved = load_config(out / "config.yaml")
    assert saved.train.task == "toy" and saved.optim.lr == pytest.approx(0.003) and saved.train.steps == 3


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["optim.lrr=1"], "error: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        (["train.task=nope"], "error: unknown training task 'nope'"),
        (["--config", "missing.yaml"], "error: config file not found: missing.yaml"),
        (["train.task=toy", "--resume", "nothing_here.pt"], "error: checkpoint not found: nothing_here.pt"),
        (["data.batch_size=x"], "error: config key 'data.batch_size' must be an integer"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(needle) and "\n" not in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_requested_without_gpu(tmp_path, capsys):
    assert main(["train", *TOY, "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "error: --device cuda requested but torch.cuda.is_available() is False" in capsys.readouterr().err


def test_corrupted_checkpoint_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"PK\x03\x04 broken zip")
    assert main(["train", *TOY, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "last.pt is corrupted or truncated" in err and err.count("\n") == 1


def test_print_config_and_list_tasks(capsys):
    assert main(["train", "train.task=toy", "optim.lr=5e-4", "--print-config"]) == 0
    d = yaml.safe_load(capsys.readouterr().out)
    assert d["optim"]["lr"] == 5e-4 and d["train"]["task"] == "toy"
    assert main(["train", "--list-tasks"]) == 0
    assert "toy" in capsys.readouterr().out.split()


@pytest.mark.slow
def test_sigterm_during_cli_run_then_resume_matches_straight_run(tmp_path):
    """A real process killed with SIGTERM mid-run saves a checkpoint, exits 130, and resuming it
    gives the same weights as an uninterrupted run."""
    out = tmp_path / "killed"
    args = [*TOY, "train.steps=40", "train.ckpt_every=1", "train.keep_ckpts=1", "model.flow.sleep_s=0.05"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "trianflow", "train", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while max([int(p.stem[5:]) for p in out.glob("step_*.pt")] or [0]) < 3:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    stopped = _json_line(stdout)
    assert stopped["interrupted"] is True and 3 <= stopped["step"] < 40
    assert load_checkpoint(out / "last.pt")["step"] == stopped["step"]
    assert "resume with: trianflow train --resume" in stderr

    assert main(["train", "--resume", str(out / "last.pt"), "model.flow.sleep_s=0"]) == 0
    resumed = load_checkpoint(out / "last.pt")
    assert resumed["step"] == 40
    straight = Trainer.from_config(load_config(None, [*args, "model.flow.sleep_s=0",
                                                      f"train.out_dir={tmp_path / 'straight'}"]))
    straight.run()
    for name, m in straight.models.items():
        for k, v in m.state_dict().items():
            assert torch.equal(resumed["models"][name][k], v), (name, k)
