"""`trianflow export`: COLMAP round trip (poses to 1e-9, same points, tracks, pixel convention),
PLY read back by our reader and by pycolmap, TUM/KITTI trajectories, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from trianflow.cli import main
from trianflow.export import read_colmap_poses, read_ply, run_points
from trianflow.io.trajectory import read_trajectory
from trianflow.run_dir import load_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A synthetic KITTI-layout folder and two VO runs on it: plain and --refine ba."""
    from trianflow.data.synthetic import synthetic_sequence, write_kitti_layout

    d = tmp_path_factory.mktemp("export")
    seq_dir = write_kitti_layout(synthetic_sequence(n_frames=8, size=(128, 384), seed=4), d / "seq")
    plain, ba = d / "plain", d / "ba"
    assert main(["vo", str(seq_dir), "--out", str(plain), "--refine", "none", "--no-progress"]) == 0
    assert main(["vo", str(seq_dir), "--out", str(ba), "--refine", "ba", "--no-progress"]) == 0
    return {"seq": seq_dir, "plain": plain, "ba": ba}


def _sorted_rows(a):
    a = np.asarray(a, dtype=np.float64)
    return a[np.lexsort(a.T[::-1])]


@pytest.mark.parametrize("text", [False, True])
def test_colmap_round_trip_of_an_adjusted_run(runs, tmp_path, text, capsys):
    import pycolmap

    out = tmp_path / "model"
    args = ["export", str(runs["ba"]), "--format", "colmap", "--out", str(out)] + (["--text"] if text else [])
    assert main(args) == 0
    assert "from map" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    ext = ".txt" if text else ".bin"
    assert {f"cameras{ext}", f"images{ext}", f"points3D{ext}"} <= names
    run = load_run(runs["ba"])
    rec = pycolmap.Reconstruction(str(out))
    # poses: same order (image ids = frame + 1), names = the input files, to 1e-9
    img_names, poses = read_colmap_poses(out)
    assert img_names == [f"{i:06d}.png" for i in range(len(run.poses))]
    assert np.abs(poses - run.poses).max() < 1e-9
    # camera: PINHOLE, COLMAP pixel centres at +0.5
    cam = rec.cameras[1]
    assert cam.model_name == "PINHOLE" and (cam.width, cam.height) == (384, 128)
    K = run.K
    assert np.allclose(cam.params, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5], atol=1e-9)
    # points: the same coordinates and colours, each with its observations as track
    t = run.tracks
    got = np.array([np.r_[p.xyz, p.color] for p in rec.points3D.values()])
    want = np.c_[t["xyz"], t["rgb"]]
    assert len(got) == len(want) > 100
    assert np.abs(_sorted_rows(got) - _sorted_rows(want)).max() < (1e-6 if text else 1e-12)
    lengths = sorted(p.track.length() for p in rec.points3D.values())
    assert lengths == sorted(np.bincount(t["obs_point"]).tolist()) and min(lengths) >= 2
    # 2D points of one keyframe = its observations + 0.5, and they reproject
    f = int(t["obs_frame"][0])
    img = rec.images[f + 1]
    xy = np.array([p.xy for p in img.points2D])
    assert np.abs(_sorted_rows(xy) - _sorted_rows(t["obs_xy"][t["obs_frame"] == f] + 0.5)).max() < 1e-6
    assert rec.compute_mean_reprojection_error() < 1.0


def test_colmap_export_of_a_plain_run_uses_pair_points(runs, tmp_path):
    import pycolmap

    out = tmp_path / "model"
    assert main(["export", str(runs["plain"]), "--format", "colmap", "--out", str(out)]) == 0
    run = load_run(runs["plain"])
    rec = pycolmap.Reconstruction(str(out))
    assert rec.num_images() == len(run.poses) == 8
    assert rec.num_points3D() == len(run.points["xyz"])
    assert all(p.track.length() == 2 for p in rec.points3D.values())  # the pair's two frames
    _, poses = read_colmap_poses(out)
    assert np.abs(poses - run.poses).max() < 1e-9
    assert rec.compute_mean_reprojection_error() < 2.0


def test_ply_export_reads_back(runs, tmp_path):
    import pycolmap

    out = tmp_path / "cloud.ply"
    assert main(["export", str(runs["ba"]), "--format", "ply", "--out", str(out)]) == 0
    xyz, rgb = read_ply(out)
    pts = run_points(runs["ba"])
    assert np.array_equal(xyz, pts["xyz"]) and np.array_equal(rgb, pts["rgb"])
    rec = pycolmap.Reconstruction()
    rec.import_PLY(str(out))  # an independent reader
    assert rec.num_points3D() == len(xyz)
    other = np.array([p.xyz for p in rec.points3D.values()])
    assert np.abs(_sorted_rows(other) - _sorted_rows(xyz)).max() < 1e-4  # pycolmap keeps float32
    # the per-pair points of the same run on request
    assert main(["export", str(runs["ba"]), "--format", "ply", "--out", str(tmp_path / "p.ply"),
                 "--points", "pairs"]) == 0
    assert len(read_ply(tmp_path / "p.ply")[0]) == len(load_run(runs["ba"]).points["xyz"])


@pytest.mark.parametrize("fmt", ["tum", "kitti"])
def test_trajectory_exports(runs, tmp_path, fmt):
    out = tmp_path / f"traj.{fmt}.txt"
    assert main(["export", str(runs["ba"]), "--format", fmt, "--out", str(out)]) == 0
    run = load_run(runs["ba"])
    ts, poses = read_trajectory(out, fmt=fmt)
    assert np.abs(poses - run.poses).max() < 1e-9
    if fmt == "tum":
        assert np.allclose(ts, np.arange(8) * 0.1)


def _bad(args, capsys, match):
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and match in err and "Traceback" not in err


def test_export_bad_input(runs, tmp_path, capsys):
    _bad(["export", str(tmp_path / "nope"), "--format", "ply", "--out", str(tmp_path / "a.ply")], capsys,
         "no such run directory")
    _bad(["export", str(runs["seq"]), "--format", "tum", "--out", str(tmp_path / "a.txt")], capsys, "missing run.json")
    _bad(["export", str(runs["plain"]), "--format", "ply", "--out", str(tmp_path), "--points", "pairs"], capsys,
         "is a folder")
    _bad(["export", str(runs["plain"]), "--format", "ply", "--out", str(tmp_path / "b.ply"), "--points", "map"],
         capsys, "no tracks.npz")
    afile = tmp_path / "file"
    afile.write_text("x")
    _bad(["export", str(runs["plain"]), "--format", "colmap", "--out", str(afile)], capsys, "not a folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in Path(runs["plain"]).iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "run.json").write_text(json.dumps({"input": {}}))
    _bad(["export", str(broken), "--format", "colmap", "--out", str(tmp_path / "m")], capsys, "intrinsics")
    assert not (tmp_path / "m").exists()
