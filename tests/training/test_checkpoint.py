"""Tests for trianflow.training.checkpoint: atomic writes, rotation, safe loading, arch checks, RNG."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from trianflow.errors import InputError
from trianflow.training import checkpoint as C


def _state(step: int, value: float = 0.0) -> dict:
    return {"step": step, "models": {"net": {"w": torch.full((3,), value)}}, "arch": {"net": {"dim": 3}}}


def test_save_load_roundtrip(tmp_path):
    path = C.save_checkpoint(tmp_path / "a" / "c.pt", _state(7, 1.5))
    got = C.load_checkpoint(path)
    assert got["step"] == 7
    assert torch.equal(got["models"]["net"]["w"], torch.full((3,), 1.5))
    assert got["format"] == C.CHECKPOINT_FORMAT and got["format_version"] == C.FORMAT_VERSION
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary files left


def test_manager_keeps_last_k_and_last_points_to_newest(tmp_path):
    mgr = C.CheckpointManager(tmp_path, keep=2)
    for step in (5, 10, 15):
        mgr.save(_state(step, float(step)), step)
    assert [p.name for p in mgr.step_files()] == ["step_0000010.pt", "step_0000015.pt"]
    last = C.load_checkpoint(mgr.last)
    assert last["step"] == 15 and float(last["models"]["net"]["w"][0]) == 15.0
    # last.pt survives deleting the step file it may be hard-linked to
    mgr.step_path(15).unlink()
    assert C.load_checkpoint(mgr.last)["step"] == 15


def test_manager_keep_zero_writes_only_last(tmp_path):
    mgr = C.CheckpointManager(tmp_path, keep=0)
    mgr.save(_state(3), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_manager_falls_back_to_copy_without_hard_links(tmp_path, monkeypatch):
    def no_link(*a, **k):
        raise OSError("links not supported")

    monkeypatch.setattr(C.os, "link", no_link)
    mgr = C.CheckpointManager(tmp_path, keep=1)
    mgr.save(_state(4, 4.0), 4)
    assert C.load_checkpoint(mgr.last)["step"] == 4
    assert mgr.last.stat().st_nlink == 1


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    """A save killed half-way (simulated) must not damage last.pt nor leave temp files."""
    mgr = C.CheckpointManager(tmp_path, keep=0)
    mgr.save(_state(1, 1.0), 1)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        with open(f, "r+b") as fh:  # half-written file, then the process "dies"
            fh.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(C.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        mgr.save(_state(2, 2.0), 2)
    assert C.load_checkpoint(mgr.last)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_truncated_and_garbage_files_raise_input_error(tmp_path):
    good = C.save_checkpoint(tmp_path / "good.pt", _state(1))
    data = good.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "empty.pt": b"",
        "garbage.pt": bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)),
        "text.pt": b"hello, I am not a checkpoint\n",
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(InputError) as e:
            C.load_checkpoint(p)
        msg = str(e.value)
        assert name in msg and "\n" not in msg
        assert "corrupted or truncated" in msg or "not a trianflow" in msg


def test_foreign_files_raise_input_error(tmp_path):
    sd = tmp_path / "state_dict.pt"
    torch.save(nn.Linear(2, 2).state_dict(), sd)  # a plain state_dict, not a training checkpoint
    with pytest.raises(InputError, match="not a trianflow training checkpoint"):
        C.load_checkpoint(sd)
    obj = tmp_path / "pickled_object.pt"
    torch.save({"format": C.CHECKPOINT_FORMAT, "model": nn.Linear(2, 2)}, obj)  # arbitrary objects
    with pytest.raises(InputError, match="cannot be loaded safely"):
        C.load_checkpoint(obj)
    pk = tmp_path / "plain.pkl"
    pk.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InputError, match="plain.pkl"):
        C.load_checkpoint(pk)
    with pytest.raises(InputError, match="checkpoint not found"):
        C.load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(InputError, match="is a directory"):
        C.load_checkpoint(tmp_path)
    newer = C.save_checkpoint(tmp_path / "newer.pt", {**_state(1), "format_version": C.FORMAT_VERSION + 1})
    with pytest.raises(InputError, match="newer"):
        C.load_checkpoint(newer)


def test_rng_state_roundtrip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # put numpy's gaussian cache in a non-trivial state
    state = C.capture_rng_state()
    expected = (random.random(), np.random.randn(3), torch.rand(3))
    C.save_checkpoint(tmp_path / "r.pt", {"step": 0, "models": {}, "rng": [state]})
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    C.restore_rng_state(C.load_checkpoint(tmp_path / "r.pt")["rng"][0])
    got = (random.random(), np.random.randn(3), torch.rand(3))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])


class _Net(nn.Module):
    def __init__(self, dim: int, with_arch: bool = True):
        super().__init__()
        self.dim = dim
        self.fc = nn.Linear(dim, 2)
        if not with_arch:
            self.arch_config = None  # type: ignore[assignment]

    def arch_config(self):
        return {"kind": "net", "dim": self.dim}


def test_load_model_weights_and_arch_mismatch(tmp_path):
    src = _Net(4)
    ckpt = {"models": {"net": src.state_dict()}, "arch": {"net": C.model_arch(src)}}
    dst = _Net(4)
    C.load_model_weights(dst, ckpt, "net", "x.pt")
    assert torch.equal(dst.fc.weight, src.fc.weight)
    with pytest.raises(InputError, match=r"x.pt: 'net' network was saved with another architecture \(dim: 4 vs 8\)"):
        C.load_model_weights(_Net(8), ckpt, "net", "x.pt")
    with pytest.raises(InputError, match="has no 'depth' network .*it has: net"):
        C.load_model_weights(_Net(4), ckpt, "depth", "x.pt")


def test_state_dict_check_without_arch_reports_shapes():
    """Without arch dicts the key/shape check still catches a different architecture."""
    a, b = _Net(4, with_arch=False), _Net(8, with_arch=False)
    assert C.model_arch(a) is None
    ckpt = {"models": {"net": b.state_dict()}, "arch": {"net": None}}
    before = a.fc.weight.detach().clone()
    with pytest.raises(InputError) as e:
        C.load_model_weights(a, ckpt, "net", "y.pt")
    msg = str(e.value)
    assert "y.pt" in msg and "fc.weight" in msg and "(2, 8)" in msg and "(2, 4)" in msg
    assert torch.equal(a.fc.weight, before)  # nothing was loaded


def test_state_dict_check_messages():
    a = _Net(4, with_arch=False)
    with pytest.raises(InputError, match=r"shape mismatch\(es\) \(e.g. fc.weight: \(2, 8\) vs \(2, 4\)\)"):
        C.check_state_dict(a, _Net(8).state_dict(), "ckpt")
    with pytest.raises(InputError, match="2 missing .*2 unexpected"):
        C.check_state_dict(a, nn.Sequential(nn.Linear(4, 2)).state_dict(), "ckpt")
    C.check_state_dict(a, _Net(4).state_dict(), "ckpt")  # matching: no error
