"""trianflow.vo.pipeline: the next frame and its flow computed ahead on a worker thread; the threads a run
uses. The results must be exactly those of the one-thread loop."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from trianflow.errors import InputError
from trianflow.vo import VOConfig, run_vo
from trianflow.vo.pipeline import applied_threads, thread_plan, usable_cores

REPO = Path(__file__).resolve().parents[2]
KITTI = REPO.parent / "shared" / "data" / "kitti_odom_straight"


@pytest.fixture(scope="module")
def slow_street():
    """5 cm per frame: many pairs hold an older reference (the speculative flow is then not the one needed)."""
    from trianflow.data.synthetic import synthetic_sequence

    return synthetic_sequence(n_frames=14, kind="forward_turn", step=0.05, seed=0)


def _same(a, b):
    np.testing.assert_array_equal(a.poses, b.poses)
    assert [(f.status, f.ref, f.inliers, f.scale) for f in a.frames] == \
        [(f.status, f.ref, f.inliers, f.scale) for f in b.frames]


def test_worker_gives_the_one_thread_results(slow_street):
    one = run_vo(slow_street, VOConfig(threads=1))
    two = run_vo(slow_street, VOConfig(threads=2))
    _same(one, two)
    for k in ("frame", "xyz", "xy", "rgb", "xy2"):
        np.testing.assert_array_equal(one.points[k], two.points[k])
    assert one.timings["threads"]["pipeline"] is False and "flow_ahead" not in one.timings
    ahead = two.timings["flow_ahead"]
    held = sum(f.ref < f.index - 1 for f in two.frames if f.ref >= 0)
    assert held > 0  # frames matched against an older reference: their flow is computed in the loop
    assert ahead["computed_in_loop"] >= held and ahead["used"] > 0
    assert ahead["used"] + ahead["computed_in_loop"] == sum(f.status != "first" for f in two.frames)


def test_threads_restored_and_planned():
    before = (cv2.getNumThreads(), torch.get_num_threads())
    plan = thread_plan(3)
    assert (plan.threads, plan.opencv, plan.torch, plan.pipeline) == (3, 3, 1, True)
    with applied_threads(plan):
        assert cv2.getNumThreads() == 3 and torch.get_num_threads() == 1
    assert (cv2.getNumThreads(), torch.get_num_threads()) == before
    one = thread_plan(1)
    assert one.pipeline is False and one.opencv == 1
    auto = thread_plan(0)
    assert auto.threads == usable_cores() and auto.as_dict()["requested"] == "auto"
    with pytest.raises(InputError, match="--threads"):
        thread_plan(-1)


def test_a_spilled_run_writes_the_same_points(slow_street, tmp_path, monkeypatch):
    """A long run's points go to disk (trianflow.io.point_store); forced here with a tiny threshold."""
    from trianflow.io import point_store
    from trianflow.run_dir import load_run, save_run
    from trianflow.vo import tracker

    ref = run_vo(slow_street, VOConfig(threads=1))
    save_run(tmp_path / "mem", ref, slow_street)
    monkeypatch.setattr(tracker, "PointStore", functools.partial(point_store.PointStore, spill_bytes=1000,
                                                                 spill_dir=str(tmp_path)))
    spilled = run_vo(slow_street, VOConfig(threads=1))
    assert isinstance(spilled.points, point_store.SpilledPoints)
    _same(ref, spilled)
    save_run(tmp_path / "disk", spilled, slow_street)
    a, b = load_run(tmp_path / "mem").points, load_run(tmp_path / "disk").points
    assert len(a["xyz"]) > 100
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.skipif(not KITTI.is_dir(), reason=f"real KITTI snippet not found at {KITTI}")
def test_cli_threads_option_in_run_json(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "MPLBACKEND": "Agg"}
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"t{n}"
        r = subprocess.run([sys.executable, "-m", "trianflow", "vo", str(KITTI), "--out", str(out), "--max-frames", "8",
                            "--threads", str(n), "--no-progress"], capture_output=True, text=True, env=env,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        meta = json.loads((out / "run.json").read_text())
        assert meta["config"]["threads"] == n and meta["threads"]["threads"] == n
        assert meta["threads"]["pipeline"] is (n >= 2) and meta["threads"]["opencv"] == n
        outs[n] = (out / "poses.txt").read_text()
    assert outs[1] == outs[2]
    r = subprocess.run([sys.executable, "-m", "trianflow", "vo", str(KITTI), "--out", str(tmp_path / "bad"),
                        "--threads", "-2"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --threads -2: give a positive number of threads (or leave it out: all cores)"]
