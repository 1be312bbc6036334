"""The speed tools: ``tools/profile_vo.py`` (time per stage) and ``tools/bench_peers.py`` (ORB-SLAM3 beside us)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

REPO = Path(__file__).resolve().parents[1]
SNIPPET = REPO.parent / "shared" / "data" / "kitti_odom_straight"


@pytest.mark.skipif(not SNIPPET.is_dir(), reason=f"real KITTI snippet not found at {SNIPPET}")
def test_profile_vo_accounts_for_the_run(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "tools" / "profile_vo.py"), str(SNIPPET), "--", "--max-frames", "12"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ms = out["ms_per_frame"]
    assert out["frames"] == 12 and set(ms) >= {"flow", "selection", "essential_ransac", "tracks_lk",
                                                "bundle_adjustment", "write_outputs", "startup"}
    assert all(v >= 0 for v in ms.values())
    for stage in ("selection", "essential_ransac", "tracks_lk", "bundle_adjustment", "write_outputs"):
        assert ms[stage] > 0, stage  # each stage was seen doing work
    # the stages add up to the whole process (no stage counted twice, none lost)
    assert sum(ms.values()) * 12 / 1000 == pytest.approx(out["process_s_profiled"], rel=0.1)
    if out["threads"]["pipeline"]:
        assert out["worker_ms"]["flow"] > 0  # computed ahead on the worker, not in the loop


def test_orb_poses_fill_the_frames_it_lacks(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tools"))
    bp = importlib.import_module("bench_peers")
    ts = np.arange(6) * 0.1
    q = Rotation.from_euler("y", 5, degrees=True).as_quat()  # x y z w, as in the EuRoC export
    rows = np.array([[int(round(t * 1e9)), t, 0, 2 * t, *q] for t in ts[[2, 3, 5]]], np.float64)
    poses, missing = bp.orb_poses(rows, ts)
    assert missing == 3
    np.testing.assert_allclose(poses[:, :3, 3][:, 0], [0.2, 0.2, 0.2, 0.3, 0.3, 0.5])  # before init: the first
    np.testing.assert_allclose(poses[4, :3, :3], Rotation.from_quat(q).as_matrix())
    poses, missing = bp.orb_poses(np.zeros((0, 8)), ts)
    assert missing == 6 and np.allclose(poses, np.eye(4))


def test_bench_peers_says_when_orbslam3_is_missing(tmp_path):
    code = ("import sys; sys.modules['pyorbslam3'] = None; sys.path.insert(0, %r); import bench_peers; "
            "sys.exit(bench_peers.main([]))" % str(REPO / "tools"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 2
    assert "pip install pyorbslam3" in r.stderr and "GPL" in r.stderr and "Traceback" not in r.stderr
