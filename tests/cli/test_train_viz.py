"""`trianflow train --viz save`: losses, images and GT metrics in a Rerun recording (tensorboard stays)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("rerun")

from trianflow.cli import main  # noqa: E402
from trianflow.viz.rerun_log import read_recording  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOY = ["train.task=toy", "data.num_workers=0", "data.batch_size=4", "model.flow.samples=16", "train.log_every=1",
       "train.image_every=2"]


def test_train_viz_save_logs_losses_and_images(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TOY, "train.steps=4", "--out", str(out), "--device", "cpu", "--viz", "save"]) == 0
    rec = read_recording(out / "recording.rrd", timeline="step")
    assert rec["/loss/total"] == [1, 2, 3, 4]
    assert rec["/images/flow"] == [2, 4]
    assert "/train/lr" in rec
    assert not (out / "recording.rrd.tmp").exists()


@pytest.mark.skipif(not (REPO / "configs" / "synthetic_tiny.yaml").is_file(), reason="no synthetic recipe")
def test_train_viz_logs_gt_metrics(tmp_path):
    out = tmp_path / "syn"
    assert main(["train", "--config", str(REPO / "configs" / "synthetic_flow.yaml"), "train.steps=1",
                 "train.log_every=1", "train.image_every=1", "--out", str(out), "--device", "cpu", "--viz",
                 "save"]) == 0
    rec = read_recording(out / "recording.rrd", timeline="step")
    assert rec.get("/metrics/epe") == [1]
    assert any(k.startswith("/images/") for k in rec)


def test_train_viz_without_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rerun", None)
    assert main(["train", *TOY, "train.steps=2", "--out", str(tmp_path / "r"), "--viz"]) == 2
    err = capsys.readouterr().err
    assert "pip install trianflow[viz]" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
