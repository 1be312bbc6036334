"""The Rerun recordings of `trianflow vo --viz` and `trianflow view`, written headless (save mode)
and read back with Rerun's own chunk reader; bad input of --viz / view / --fov."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rerun")

from trianflow.cli import main  # noqa: E402
from trianflow.viz.rerun_log import gt_in_estimate_frame, read_recording, umeyama  # noqa: E402

N = 6
PER_FRAME = ("/world/camera", "/world/camera/image", "/world/camera/image/inliers", "/world/trajectory", "/world/gt",
             "/status/log", "/status/code", "/status/inliers", "/status/matches", "/timings/frame_ms")


@pytest.fixture(scope="module")
def syn_folder(tmp_path_factory):
    from trianflow.data.synthetic import synthetic_sequence, write_kitti_layout

    d = tmp_path_factory.mktemp("syn")
    return write_kitti_layout(synthetic_sequence(n_frames=N, size=(128, 384), seed=2), d / "seq")


@pytest.fixture(scope="module")
def viz_run(syn_folder, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.delenv("DISPLAY", raising=False)
    monkeypatch_module.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path_factory.mktemp("vizrun") / "run"
    assert main(["vo", str(syn_folder), "--out", str(out), "--no-progress", "--viz"]) == 0  # no display: save
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_vo_viz_writes_recording_with_one_step_per_frame(viz_run):
    rrd = viz_run / "recording.rrd"
    assert rrd.is_file() and not (viz_run / "recording.rrd.tmp").exists()
    rec = read_recording(rrd)
    for ent in PER_FRAME:
        assert rec.get(ent) == list(range(N)), ent
    assert "/world" in rec  # static view coordinates
    assert rec["/world/points"] and set(rec["/world/points"]) <= set(range(1, N))
    assert rec["/world/keyframes"][0] == 0  # the first frame is a keyframe of the bundle adjustment
    assert rec["/world/map"][-1] == N - 1  # the final map at the last frame


def test_view_rebuilds_the_same_entities(viz_run, tmp_path, capsys):
    out = tmp_path / "v.rrd"
    assert main(["view", str(viz_run), "--save", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    live, view = read_recording(viz_run / "recording.rrd"), read_recording(out)
    assert set(live) == set(view)
    for ent in PER_FRAME:
        assert view[ent] == list(range(N)), ent


def test_view_without_display_writes_run_dir_recording(viz_run, tmp_path, monkeypatch):
    import shutil

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    run = tmp_path / "copy"
    shutil.copytree(viz_run, run)
    (run / "recording.rrd").unlink()
    assert main(["view", str(run), "--no-images"]) == 0
    rec = read_recording(run / "recording.rrd")
    assert "/world/camera/image" not in rec and rec["/world/camera"] == list(range(N))


def test_view_bad_input(tmp_path, capsys):
    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "run.json" in err
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_viz_without_the_extra_stops_before_any_frame(syn_folder, tmp_path, capsys, monkeypatch):
    from trianflow.data.sequence import FrameSequence

    monkeypatch.setitem(sys.modules, "rerun", None)  # import rerun -> ImportError

    def no_read(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("a frame was read")

    monkeypatch.setattr(FrameSequence, "read", no_read)
    out = tmp_path / "run"
    assert main(["vo", str(syn_folder), "--out", str(out), "--no-progress", "--viz", "save"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install trianflow[viz]" in err and "\n" not in err
    assert not out.exists()
    assert main(["view", str(tmp_path)]) == 2
    assert "pip install trianflow[viz]" in capsys.readouterr().err


def test_viz_spawn_without_display_is_an_error(syn_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["vo", str(syn_folder), "--out", str(tmp_path / "r"), "--no-progress", "--viz", "spawn"]) == 2
    assert "--viz save" in capsys.readouterr().err


def test_status_codes_follow_the_vo_statuses():
    from trianflow.vo import STATUSES
    from trianflow.viz.rerun_log import _STATUS_CODES

    assert tuple(STATUSES) == _STATUS_CODES


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 3))
    a = 0.7
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    dst = 2.5 * src @ R.T + [1, 2, 3]
    s, Re, t = umeyama(src, dst)
    assert s == pytest.approx(2.5) and np.allclose(Re, R) and np.allclose(t, [1, 2, 3])
    assert np.allclose(gt_in_estimate_frame(src, dst, "sim3"), src)
    s1, _, _ = umeyama(src, dst, with_scale=False)
    assert s1 == 1.0


def test_vo_viz_logs_the_depthnet_output(syn_folder, tmp_path, monkeypatch):
    import torch

    from trianflow.config import config_to_dict, load_config
    from trianflow.models import DepthNet
    from trianflow.training.checkpoint import save_checkpoint

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    torch.manual_seed(0)
    depth = DepthNet()
    cfg = config_to_dict(load_config(None, ["data.size=[64,128]", "train.stage=depth"]))
    ckpt = tmp_path / "depth.pt"
    save_checkpoint(ckpt, {"step": 1, "models": {"depth": depth.state_dict()}, "arch": {"depth": depth.arch_config()},
                           "config": cfg, "task": "trianflow", "stage": "depth"})
    out = tmp_path / "run"
    assert main(["vo", str(syn_folder), "--out", str(out), "--no-progress", "--refine", "none", "--depth", str(ckpt),
                 "--viz", "save"]) == 0
    rec = read_recording(out / "recording.rrd")
    assert rec["/depth"] and set(rec["/depth"]) <= set(range(1, N))
    assert rec["/world/camera"] == list(range(N))


def test_view_of_a_pair_by_pair_run(syn_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["vo", str(syn_folder), "--out", str(out), "--no-progress", "--refine", "none"]) == 0
    assert not (out / "tracks.npz").exists()
    assert main(["view", str(out), "--save", str(tmp_path / "v.rrd")]) == 0
    rec = read_recording(tmp_path / "v.rrd")
    assert rec["/world/camera"] == list(range(N)) and rec["/world/map"] == [N - 1]
    assert "/world/keyframes" not in rec
    assert main(["view", str(out), "--save", str(tmp_path / "v.txt")]) == 2


def test_view_draws_the_loop_edges(viz_run, tmp_path):
    import json
    import shutil

    run = tmp_path / "loop"
    shutil.copytree(viz_run, run)
    meta = json.loads((run / "run.json").read_text())
    assert "/world/loops" not in read_recording(viz_run / "recording.rrd")  # no loop in the short run
    meta["loops"] = {**(meta["loops"] or {}), "loops": [{"query": N - 1, "candidate": 0}]}
    (run / "run.json").write_text(json.dumps(meta))
    out = tmp_path / "v.rrd"
    assert main(["view", str(run), "--save", str(out), "--no-images"]) == 0
    assert "/world/loops" in read_recording(out)
