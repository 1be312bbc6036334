"""`trianflow vo`, `two-view` and `demo` through the CLI entry point, including bad input."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from trianflow.cli import main

KITTI = Path(__file__).resolve().parents[3] / "shared" / "data" / "kitti_odom_straight"
needs_kitti = pytest.mark.skipif(not KITTI.is_dir(), reason=f"real KITTI snippet not found at {KITTI}")
INTR = "707.0912,707.0912,601.8873,183.1104"


@pytest.fixture(scope="module")
def syn_folder(tmp_path_factory):
    from trianflow.data.synthetic import synthetic_sequence, write_kitti_layout

    d = tmp_path_factory.mktemp("syn")
    return write_kitti_layout(synthetic_sequence(n_frames=6, size=(128, 384), seed=2), d / "seq")


def test_vo_writes_all_outputs(syn_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["vo", str(syn_folder), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "ATE RMSE" in text
    kitti = np.loadtxt(out / "poses.txt")
    assert kitti.shape == (6, 12) and np.allclose(kitti[0], np.eye(4)[:3].ravel())
    tum = np.loadtxt(out / "poses_tum.txt")
    assert tum.shape == (6, 8) and np.allclose(tum[:, 0], np.arange(6) * 0.1)
    rows = list(csv.DictReader(open(out / "frames.csv")))
    assert len(rows) == 6 and {"matches", "inliers", "status", "seconds"} <= set(rows[0])
    assert rows[0]["status"] == "first" and all(r["status"] == "ok" for r in rows[1:])
    meta = json.loads((out / "run.json").read_text())
    assert meta["intrinsics"]["fx"] > 0 and meta["input"]["frames"] == 6
    assert {"config", "timings", "trianflow_version", "evaluation"} <= set(meta)
    with np.load(out / "points.npz") as z:
        assert z["xyz"].shape[1] == 3 and len(z["xyz"]) == len(z["rgb"])
    # loop closure is on by default (6 frames: nothing old enough to revisit)
    assert meta["loops"]["accepted"] == 0 and meta["loops"]["keyframes"] >= 2
    assert all(r["loop"] == "-1" for r in rows)
    assert "loop closure: 0 loop(s) accepted" in text


def test_vo_no_loop(syn_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["vo", str(syn_folder), "--out", str(out), "--no-progress", "--no-loop"]) == 0
    assert "loop closure" not in capsys.readouterr().out
    meta = json.loads((out / "run.json").read_text())
    assert meta["loops"] is None and meta["config"]["loop"] == "off"


def test_vo_image_folder_with_intrinsics_and_max_frames(syn_folder, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(sorted((syn_folder / "image_2").glob("*.png"))):
        (folder / f"frame{i}.png").write_bytes(f.read_bytes())
    K = [ln for ln in (syn_folder / "calib.txt").read_text().splitlines() if ln.startswith("P0")][0].split()[1:]
    intr = f"{K[0]},{K[5]},{K[2]},{K[6]}"
    out = tmp_path / "run"
    assert main(["vo", str(folder), "--intrinsics", intr, "--max-frames", "4", "--out", str(out), "--no-progress"]) == 0
    assert np.loadtxt(out / "poses.txt").shape == (4, 12)


def test_vo_video_file(syn_folder, tmp_path):
    video = tmp_path / "clip.avi"
    frames = [cv2.imread(str(f)) for f in sorted((syn_folder / "image_2").glob("*.png"))]
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for f in frames:
        wr.write(f)
    wr.release()
    out = tmp_path / "run"
    assert main(["vo", str(video), "--intrinsics", "300,300,191.5,63.5", "--out", str(out), "--no-progress"]) == 0
    assert np.loadtxt(out / "poses.txt").shape == (len(frames), 12)


def _bad(args, capsys, match):
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and match in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_vo_bad_input(tmp_path, capsys, syn_folder):
    out = tmp_path / "run"
    _bad(["vo", str(tmp_path / "missing"), "--out", str(out)], capsys, "no such file or folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    _bad(["vo", str(empty), "--intrinsics", INTR, "--out", str(out)], capsys, str(empty))
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.png").write_bytes((syn_folder / "image_2" / "000000.png").read_bytes())
    _bad(["vo", str(one), "--intrinsics", INTR, "--out", str(out)], capsys, "at least 2")
    _bad(["vo", str(syn_folder), "--intrinsics", "1,2", "--out", str(out)], capsys, "intrinsics")
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    cv2.imwrite(str(sizes / "0.png"), np.zeros((40, 60, 3), np.uint8))
    cv2.imwrite(str(sizes / "1.png"), np.zeros((50, 60, 3), np.uint8))
    _bad(["vo", str(sizes), "--intrinsics", INTR, "--out", str(out), "--no-progress"], capsys, "size")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"{i}.png").write_bytes((syn_folder / "image_2" / f"{i:06d}.png").read_bytes())
    (broken / "2.png").write_bytes(b"not a png")
    _bad(["vo", str(broken), "--intrinsics", INTR, "--out", str(out), "--no-progress", "--strict"], capsys, "2.png")
    # without --strict the unreadable frame is skipped (bridged) and named in a warning
    skipped = tmp_path / "skipped"
    assert main(["vo", str(broken), "--intrinsics", INTR, "--out", str(skipped), "--no-progress"]) == 0
    assert "2.png" in capsys.readouterr().err
    assert (skipped / "frames.csv").read_text().splitlines()[3].split(",")[2] == "unreadable"
    bad_video = tmp_path / "x.mp4"
    bad_video.write_bytes(b"garbage")
    _bad(["vo", str(bad_video), "--intrinsics", INTR, "--out", str(out)], capsys, "x.mp4")
    bad_calib = tmp_path / "kitti"
    (bad_calib / "image_0").mkdir(parents=True)
    for i in range(2):
        (bad_calib / "image_0" / f"{i:06d}.png").write_bytes((syn_folder / "image_2" / f"{i:06d}.png").read_bytes())
    (bad_calib / "calib.txt").write_text("P0: 1 2 three\n")
    _bad(["vo", str(bad_calib), "--out", str(out)], capsys, "calib.txt")
    assert not out.exists(), "no partial output after an error"


def test_two_view_json(syn_folder, capsys):
    K = [ln for ln in (syn_folder / "calib.txt").read_text().splitlines() if ln.startswith("P0")][0].split()[1:]
    intr = f"{K[0]},{K[5]},{K[2]},{K[6]}"
    a, b = syn_folder / "image_2" / "000000.png", syn_folder / "image_2" / "000001.png"
    assert main(["two-view", str(a), str(b), "--intrinsics", intr, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {"R", "t", "inliers", "points", "status"} and d["status"] == "ok"
    R, t = np.array(d["R"]), np.array(d["t"])
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-5) and abs(np.linalg.norm(t) - 1) < 1e-5
    assert t[2] < -0.9  # camera moves forward: X2 = R X1 + t has t_z < 0
    assert d["inliers"] > 1000 and d["points"] > 500
    assert main(["two-view", str(a), str(b), "--intrinsics", intr]) == 0
    assert "inliers" in capsys.readouterr().out
    _bad(["two-view", str(a), "nope.png", "--intrinsics", intr], capsys, "nope.png")


@needs_kitti
def test_two_view_real_kitti_pair(capsys):
    a, b = KITTI / "image_0" / "000010.png", KITTI / "image_0" / "000011.png"
    assert main(["two-view", str(a), str(b), "--intrinsics", INTR, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    gt = np.loadtxt(KITTI / "poses.txt")
    P = [np.vstack([r.reshape(3, 4), [0, 0, 0, 1]]) for r in gt[10:12]]
    T = np.linalg.inv(P[1]) @ P[0]
    t_gt = T[:3, 3] / np.linalg.norm(T[:3, 3])
    ang = np.degrees(np.arccos(np.clip(np.dot(t_gt, d["t"]), -1, 1)))
    assert ang < 2.0, ang


def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "6", "--size", "128x384", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "ATE RMSE" in text
    for name in ("poses.txt", "poses_tum.txt", "frames.csv", "run.json", "trajectory.png", "report.md", "demo.log"):
        assert (out / name).is_file(), name


def test_vo_tum_layout_with_groundtruth(syn_folder, tmp_path, capsys):
    """A TUM RGB-D style folder (rgb.txt + groundtruth.txt) built from the synthetic frames."""
    from trianflow.data.synthetic import synthetic_sequence
    from trianflow.io.trajectory import write_tum

    seq = synthetic_sequence(n_frames=6, size=(128, 384), seed=2)
    tum = tmp_path / "rgbd_dataset_custom"
    (tum / "rgb").mkdir(parents=True)
    lines = ["# color images", "# timestamp filename"]
    ts = 1305031102.0 + np.arange(6) / 30.0
    for i, f in enumerate(sorted((syn_folder / "image_2").glob("*.png"))):
        name = f"rgb/{ts[i]:.6f}.png"
        (tum / name).write_bytes(f.read_bytes())
        lines.append(f"{ts[i]:.6f} {name}")
    (tum / "rgb.txt").write_text("\n".join(lines) + "\n")
    write_tum(tum / "groundtruth.txt", ts + 0.001, seq.gt_poses)
    out = tmp_path / "run"
    K = seq.K
    # an unknown (non-freiburg) folder needs --intrinsics
    _bad(["vo", str(tum), "--out", str(out)], capsys, "--intrinsics")
    intr = f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"
    assert main(["vo", str(tum), "--intrinsics", intr, "--out", str(out), "--no-progress"]) == 0
    t = np.loadtxt(out / "poses_tum.txt")
    assert np.allclose(t[:, 0], ts)  # timestamps from the input
    rc = main(["eval-traj", str(out / "poses_tum.txt"), str(tum / "groundtruth.txt"), "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["ape_rmse"] < 0.05 and d["n_poses"] == 6
