"""Tests for trianflow.training.distributed: env detection, devices, and 2-process DDP (gloo, CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from trianflow.config import load_config
from trianflow.errors import InputError
from trianflow.training import Trainer
from trianflow.training import distributed as D
from trianflow.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_detect_reads_torchrun_environment(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert D.detect() == D.DistInfo(0, 1, 0) and not D.detect().distributed and D.detect().is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = D.detect()
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 1)
    assert info.distributed and not info.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InputError, match="RANK=4 WORLD_SIZE=4"):
        D.detect()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(InputError, match="RANK='x' is not an integer"):
        D.detect()


def test_resolve_device():
    assert D.resolve_device("cpu") == torch.device("cpu")
    assert D.resolve_device("CPU ") == torch.device("cpu")
    expected_auto = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert D.resolve_device("auto") == expected_auto
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        D.resolve_device("gpu")
    with pytest.raises(InputError, match="unknown device 'gpu:0'"):
        D.resolve_device("gpu:0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without CUDA")
def test_cuda_requested_without_gpu_is_a_one_line_error():
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(InputError) as e:
            D.resolve_device(spec)
        msg = str(e.value)
        assert msg.startswith(f"--device {spec} requested but torch.cuda.is_available() is False")
        assert "--device cpu" in msg and "\n" not in msg


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_index_out_of_range():
    n = torch.cuda.device_count()
    assert D.resolve_device("cuda") == torch.device("cuda", 0)
    assert D.resolve_device(f"cuda:{n - 1}") == torch.device("cuda", n - 1)
    with pytest.raises(InputError, match=f"only {n} CUDA device"):
        D.resolve_device(f"cuda:{n}")


def test_single_process_helpers_are_no_ops():
    assert not D.is_initialized()
    m = nn.Linear(2, 2)
    assert D.wrap_ddp(m, torch.device("cpu")) is m
    assert D.unwrap(m) is m
    t = torch.tensor([1.0, 3.0])
    assert torch.equal(D.all_reduce_max(t), t)
    assert D.all_gather_objects({"a": 1}) == [{"a": 1}]
    D.barrier()
    D.cleanup()
    assert D.init_distributed(torch.device("cpu")) == D.detect()


_RUNNER = textwrap.dedent(
    """
    import json, sys, torch
    from trianflow.config import load_config
    from trianflow.training import Trainer
    from trianflow.training import distributed as D

    out = sys.argv[1]
    cfg = load_config(None, sys.argv[2:])
    tr = Trainer.from_config(cfg, resume="auto")
    s = tr.run()
    rank = tr.info.rank
    torch.save({f"{n}.{k}": v for n, m in tr.models.items() for k, v in m.state_dict().items()},
               f"{out}/rank{rank}.pt")
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"skipped": s["skipped_steps"], "world": s["world_size"],
                   "ddp": [type(m).__name__ for m in tr.wrapped.values()]}, f)
    tr.close()
    assert all(type(m).__name__ != "DistributedDataParallel" for m in tr.wrapped.values())
    D.cleanup()
    """
)


def _torchrun(tmp_path: Path, name: str, overrides: list[str]) -> Path:
    out = tmp_path / f"{name}_ranks"
    out.mkdir()
    runner = tmp_path / "runner.py"
    runner.write_text(_RUNNER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(runner), str(out), *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _toy(tmp_path: Path, run: str, *extra: str) -> list[str]:
    return ["train.task=toy", "train.device=cpu", "data.num_workers=0", "model.flow.samples=32",
            "model.flow.noise=0", "model.flow.dropout=0", "train.log_every=1", "optim.lr=0.01",
            f"train.out_dir={tmp_path / run}", *extra]


@pytest.mark.slow
def test_ddp_two_processes_gloo_matches_single_process_and_resumes(tmp_path):
    """2 ranks x batch 4 (DDP, gloo) == 1 process x batch 8 on the same samples; a NaN on
    rank 1 only makes both ranks skip; only rank 0 writes; a 2-rank resume continues exactly."""
    nan = ["model.flow.nan_steps=[1]", "model.flow.nan_rank=1"]
    ranks = _torchrun(tmp_path, "ddp", _toy(tmp_path, "ddp", "data.batch_size=4", "train.steps=6", *nan,
                                            "train.ckpt_every=4", "train.keep_ckpts=2"))
    p0, p1 = torch.load(ranks / "rank0.pt"), torch.load(ranks / "rank1.pt")
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k  # replicas identical
    info = [json.loads((ranks / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["skipped"] for i in info] == [1, 1] and info[0]["world"] == 2
    assert info[0]["ddp"] == ["DistributedDataParallel", "ToyDepth"]  # frozen depth net: not wrapped
    files = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert files == ["config.yaml", "last.pt", "log.jsonl", "step_0000004.pt", "step_0000006.pt", "summary.json",
                     "tb"]
    assert len(list((tmp_path / "ddp" / "tb").iterdir())) == 1  # one event file: rank 0 only
    steps = [json.loads(x)["step"] for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # rank 0 only writes the log
    ck = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ck["step"] == 6 and len(ck["rng"]) == 2

    # reference: one process, batch 8 (the union of both ranks' batches), NaN at step 1 as well
    single = load_config(None, _toy(tmp_path, "single", "data.batch_size=8", "train.steps=6",
                                    "model.flow.nan_steps=[1]"))
    tr = Trainer.from_config(single)
    assert tr.run()["skipped_steps"] == 1
    ref = {f"{n}.{k}": v for n, m in tr.models.items() for k, v in m.state_dict().items()}
    init = Trainer.from_config(single).models["flow"].fc.weight
    assert not torch.allclose(ref["flow.fc.weight"], init)
    for k in ref:
        torch.testing.assert_close(p0[k], ref[k], rtol=1e-5, atol=1e-6)

    # resume a 2-rank run from the step-4 checkpoint: it reaches the same step-6 weights
    (tmp_path / "resumed").mkdir()
    shutil.copyfile(tmp_path / "ddp" / "step_0000004.pt", tmp_path / "resumed" / "last.pt")
    res = _torchrun(tmp_path, "resumed", _toy(tmp_path, "resumed", "data.batch_size=4", "train.steps=6", *nan))
    r1 = torch.load(res / "rank1.pt")
    for k in r1:
        assert torch.equal(r1[k], p1[k]), k
