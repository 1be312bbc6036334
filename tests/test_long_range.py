"""Issue 9: accurate-by-default VO, metric scale from the camera height, runs that never lose
their work (unreadable frames, SIGINT / SIGTERM)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from trianflow.evaluation.trajectory import evaluate_trajectory
from trianflow.vo import VOConfig, run_vo

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KITTI = DATA / "kitti_odom_straight"
KITTI03 = DATA / "kitti_03_first400"
TUM = DATA / "tum_fr3_office"
needs_kitti = pytest.mark.skipif(not KITTI.is_dir(), reason=f"real KITTI snippet not found at {KITTI}")


def _path_length(p):
    return float(np.linalg.norm(np.diff(p[:, :3, 3], axis=0), axis=1).sum())


@pytest.fixture(scope="module")
def street():
    from trianflow.data.synthetic import synthetic_sequence

    seq = synthetic_sequence(n_frames=24, size=(160, 512), kind="forward_turn", seed=1)
    seq.render_all()
    return seq


def test_camera_height_gives_metric_scale_on_the_synthetic_street(street):
    """The synthetic cameras ride 1.5 m above a textured ground plane: no alignment of scale."""
    res = run_vo(street, VOConfig(camera_height=1.5))
    assert res.ground["mode"] == "metric" and res.ground["planes_found"] >= 3
    ratio = _path_length(res.poses) / _path_length(street.gt_poses)
    # these small frames leave the map too few road points, so the planes come from the pairs'
    # DIS correspondences, which put the near road ~5 % too far (measured 0.947 here; on KITTI 03
    # the keyframe map gives 0.982, see docs/RESULTS.md)
    assert abs(ratio - 1) < 0.07, ratio
    m = evaluate_trajectory(res.poses, street.gt_poses, align="se3")
    assert m.ape_rmse < 0.04 * m.path_length
    src = {f.scale_source for f in res.frames}
    assert "ground" in src and src <= {"ground", "chained"}
    assert any(np.isfinite(f.ground_height) for f in res.frames)


@needs_kitti
def test_relative_ground_scale_never_uses_the_pairs_planes_on_the_kitti_snippet():
    """The snippet's road is untextured: the map holds no road plane, and the pairs' planes (heights
    1.5-2.3 map units from frame to frame) made the default 7x worse (ATE 0.26 % of the path against
    0.03-0.04 % without them). In the relative mode the run keeps the bundle adjustment's scale."""
    from trianflow.data import open_sequence

    seq = open_sequence(KITTI)
    res = run_vo(seq, VOConfig())
    n_kf = len(res.mapping["summary"]["keyframes"])
    assert res.ground["mode"] == "relative" and res.ground["evaluated"] == n_kf < len(seq) - 1  # keyframes only
    m = evaluate_trajectory(res.poses, seq.gt_poses, align="sim3")
    assert m.ape_rmse < 0.001 * m.path_length, (m.ape_rmse, m.path_length)


def test_ground_flow_finds_the_road_in_the_dense_flow(street):
    """--ground-flow: keyframes whose map holds no road plane take the plane of the dense flow below them
    (the synthetic floor is one plane under the cameras); the metric fallback to the pairs' planes where the map
    has fewer than 3 of its own is unchanged."""
    base = run_vo(street, VOConfig())
    res = run_vo(street, VOConfig(ground_flow=True))
    assert res.ground["flow_planes"] >= 1 and "flow_planes" not in base.ground
    assert res.ground["planes_found"] > base.ground["planes_found"]
    for r in (base, res):
        m = evaluate_trajectory(r.poses, street.gt_poses, align="sim3")
        assert m.ape_rmse < 0.02 * m.path_length
    metric = run_vo(street, VOConfig(camera_height=1.5, ground_flow=True))
    assert metric.ground["flow_planes"] == 0  # the pairs' planes, as without the option
    assert abs(_path_length(metric.poses) / _path_length(street.gt_poses) - 1) < 0.07


def test_camera_height_with_pair_by_pair_vo(street):
    res = run_vo(street, VOConfig(refine="none", camera_height=1.5))
    assert res.ground["planes_found"] > len(street) // 2
    assert abs(_path_length(res.poses) / _path_length(street.gt_poses) - 1) < 0.07


def test_no_ground_keeps_the_chained_scale_with_a_warning():
    from trianflow.vo import FrameInfo
    from trianflow.vo.ground import apply_ground_scale
    from trianflow.geometry.ground import GroundPlane

    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 2, 3] = [0, 1, 2]
    frames = [FrameInfo(i, 0.1 * i, "ok") for i in range(3)]
    none = GroundPlane(False, np.full(3, np.nan), float("nan"), reason="no points")
    out, summary = apply_ground_scale(poses, [(0, none, None, 0), (2, none, 1.0, 1)], frames, VOConfig(camera_height=1.65), None,
                                       None, warns := [])
    assert np.allclose(out, poses) and summary["planes_found"] == 0
    assert warns and "no ground plane" in warns[0] and "not metric" in warns[0]
    assert all(f.scale_source == "chained" for f in frames)


def test_bad_camera_height_is_refused():
    from trianflow.errors import InputError
    from trianflow.vo import VisualOdometry

    for h in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="camera height"):
            VisualOdometry(np.eye(3), (100, 200), VOConfig(camera_height=h))
    with pytest.raises(InputError, match="--stereo"):
        VisualOdometry(np.eye(3), (100, 200), VOConfig(camera_height=1.6, stereo=True))


def _cli(*args, env_home):
    env = {**os.environ, "HOME": str(env_home), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "trianflow", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def _cli_here(*args):
    """``_cli`` in this process (the CLI's ``main``, argparse's exit caught): the same exit code and
    stderr without a fresh interpreter per case."""
    import contextlib
    import io
    import types

    from trianflow.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:
            rc = exc.code
    return types.SimpleNamespace(returncode=rc, stderr=err.getvalue())


def test_cli_camera_height_bad_input(tmp_path):
    for i, bad in enumerate(("0", "-2", "abc", "nan")):
        run = _cli if i == 0 else (lambda *a, env_home: _cli_here(*a))  # one real process, the rest in-process
        r = run("vo", "missing_folder", "--out", tmp_path / "o", "--camera-height", bad, env_home=tmp_path)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --camera-height"), r.stderr
    if KITTI.is_dir():
        r = _cli_here("vo", KITTI, "--out", tmp_path / "o", "--camera-height", "1.65", "--stereo")
        assert r.returncode == 2 and "--stereo" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def _kitti_copy(folder: Path, n: int, src: Path = KITTI) -> Path:
    (folder / "image_0").mkdir(parents=True)
    for i in range(n):
        os.symlink(src / "image_0" / f"{i:06d}.png", folder / "image_0" / f"{i:06d}.png")
    shutil.copy(src / "calib.txt", folder / "calib.txt")
    rows = (src / "poses.txt").read_text().splitlines()[:n]
    (folder / "poses.txt").write_text("\n".join(rows) + "\n")
    return folder


@needs_kitti
def test_truncated_frame_is_skipped_or_stops_with_strict(tmp_path):
    seq = _kitti_copy(tmp_path / "seq", 21)
    bad = seq / "image_0" / "000010.png"
    data = (KITTI / "image_0" / "000010.png").read_bytes()
    bad.unlink()
    bad.write_bytes(data[: len(data) // 3])  # truncated PNG: the header (size) is intact
    out = tmp_path / "run"
    r = _cli("vo", seq, "--out", out, "--refine", "none", "--no-progress", env_home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "000010.png" in r.stderr and "skipped" in r.stderr
    import csv

    rows = list(csv.DictReader(open(out / "frames.csv")))
    assert len(rows) == 21 and rows[10]["status"] == "unreadable"
    assert all(row["status"] == "ok" for row in rows[11:]), [row["status"] for row in rows]
    assert len((out / "poses.txt").read_text().splitlines()) == 21
    meta = json.loads((out / "run.json").read_text())
    assert meta["interrupted"] is None and any("000010.png" in w for w in meta["warnings"])
    poses = np.loadtxt(out / "poses.txt").reshape(-1, 3, 4)
    assert np.all(np.diff(poses[:, 2, 3]) > 0)  # still driving forward, the gap bridged
    # --strict: one-line error naming the file, nothing written
    r = _cli("vo", seq, "--out", tmp_path / "strict", "--refine", "none", "--strict", "--no-progress",
             env_home=tmp_path)
    assert r.returncode == 2 and "000010.png" in r.stderr and r.stderr.strip().splitlines()[-1].startswith("error:")
    assert not (tmp_path / "strict" / "poses.txt").exists()


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.skipif(not KITTI03.is_dir(), reason=f"real KITTI 03 frames not found at {KITTI03}")
def test_signal_writes_the_frames_done_so_far(tmp_path, sig, code):
    out = tmp_path / "run"
    env = {**os.environ, "HOME": str(tmp_path), "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "trianflow", "vo", str(KITTI03), "--out", str(out),
                          "--max-frames", "300"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                         start_new_session=True)
    seen = []

    def reader():
        while True:
            b = p.stderr.read(1)
            if not b:
                break
            seen.append(b)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    import re

    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        done = [int(m) for m in re.findall(rb"(\d+)/300 \[", b"".join(seen))]
        if done and max(done) >= 8:
            break
        time.sleep(0.1)
    p.send_signal(sig)
    rc = p.wait(timeout=300)
    t.join(timeout=10)
    err = b"".join(seen).decode(errors="replace")
    assert rc == code, err[-2000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["interrupted"] == signal.Signals(sig).name
    n = len((out / "poses.txt").read_text().splitlines())
    assert 8 <= n < 300 and meta["input"]["frames"] == 300
    import csv

    assert len(list(csv.DictReader(open(out / "frames.csv")))) == n
    assert meta["timings"]["frames"] == n
    for name in ("poses_tum.txt", "points.npz", "tracks.npz"):
        assert (out / name).is_file()
    assert not list(out.glob("*.tmp*"))


@pytest.mark.skipif(not TUM.is_dir(), reason=f"TUM frames not found at {TUM}")
def test_indoor_sequence_with_camera_height_completes(tmp_path):
    out = tmp_path / "run"
    r = _cli("vo", TUM, "--out", out, "--camera-height", "1.2", "--no-progress", env_home=tmp_path)
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "run.json").read_text())
    assert meta["ground"]["mode"] == "metric"
    import csv

    rows = list(csv.DictReader(open(out / "frames.csv")))
    assert {row["scale_source"] for row in rows} <= {"ground", "chained"}
    if meta["ground"]["planes_found"] == 0:
        assert "no ground plane" in r.stderr
