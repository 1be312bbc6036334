"""The training readers on real KITTI frames: folders of links to ``../shared/data`` in the official
KITTI odometry and KITTI raw layouts (grey and colour cameras, stereo, two calibrations in one run,
frame ranges, static frames), and the one-line errors of ``trianflow train`` on bad data roots."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trianflow.config import load_config
from trianflow.data.builders import build_stereo_dataset, build_trianflow_dataset
from trianflow.data.kitti_odometry import KittiOdometryDataset, parse_calib
from trianflow.data.kitti_raw import KittiRawDataset
from trianflow.data.sequences_dataset import parse_frame_range
from trianflow.errors import InputError

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
K03 = DATA / "kitti_03_first400"
K06 = DATA / "kitti_odom_straight"
S12 = DATA / "kitti_stereo2012"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not (K03.is_dir() and K06.is_dir() and S12.is_dir()),
                                reason="../shared/data (real KITTI frames) is not here")

SIZE = (64, 208)


def _link_frames(src: Path, dst: Path, frames, names=None) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob("*.png"))
    for k, i in enumerate(frames):
        name = names[k] if names else f"{k:06d}.png"
        os.symlink(files[i], dst / name)


def _poses(src: Path, frames) -> str:
    lines = (src / "poses.txt").read_text().splitlines()
    return "\n".join(lines[i] for i in frames) + "\n"


def _odometry_root(tmp: Path, n: int = 8) -> Path:
    """``<tmp>/dataset/sequences/{03,06}`` (grey; 06 also has its right camera) + ``poses/``."""
    root = tmp / "dataset"
    s03, s06 = root / "sequences" / "03", root / "sequences" / "06"
    _link_frames(K03 / "image_0", s03 / "image_0", range(n))
    (s03 / "calib.txt").write_text((K03 / "calib.txt").read_text())
    for cam in ("image_0", "image_1"):
        _link_frames(K06 / cam, s06 / cam, range(n))
    (s06 / "calib.txt").write_text((K06 / "calib.txt").read_text())
    (root / "poses").mkdir()
    (root / "poses" / "03.txt").write_text(_poses(K03, range(n)))
    (root / "poses" / "06.txt").write_text(_poses(K06, range(n)))
    return root


def _P(P: np.ndarray) -> str:
    return " ".join(f"{v:.6e}" for v in P.ravel())


def _raw_root(tmp: Path, n: int = 6) -> Path:
    """A KITTI raw root: one grey drive (frames of sequence 06, cameras 00/01) and one colour drive
    of another date and calibration (the two stereo 2012 pairs, cameras 02/03)."""
    root = tmp / "raw"
    c06, c12 = parse_calib(K06 / "calib.txt"), parse_calib(S12 / "calib.txt")
    d1 = root / "2011_10_03" / "2011_10_03_drive_0042_sync"
    for cam, src in (("image_00", "image_0"), ("image_01", "image_1")):
        _link_frames(K06 / src, d1 / cam / "data", range(n), [f"{k:010d}.png" for k in range(n)])
    (root / "2011_10_03" / "calib_cam_to_cam.txt").write_text(
        f"calib_time: 09-Jan-2012 13:57:47\nP_rect_00: {_P(c06['P0'])}\nP_rect_01: {_P(c06['P1'])}\n")
    d2 = root / "2011_09_30" / "2011_09_30_drive_0016_sync"
    for cam, src in (("image_02", "colored_0"), ("image_03", "colored_1")):
        _link_frames(S12 / src, d2 / cam / "data", range(2), [f"{k:010d}.png" for k in range(2)])
    (root / "2011_09_30" / "calib_cam_to_cam.txt").write_text(
        f"P_rect_02: {_P(c12['P2'])}\nP_rect_03: {_P(c12['P3'])}\n")
    return root


def _cfg(**data):
    over = [f"data.{k}={v}" for k, v in data.items()]
    return load_config(None, ["data.augment=false", f"data.size=[{SIZE[0]},{SIZE[1]}]", *over])


def test_two_sequences_two_calibrations(tmp_path):
    root = _odometry_root(tmp_path)
    ds = build_trianflow_dataset(_cfg(dataset="kitti_odometry", root=str(root)))
    assert len(ds) == 14  # 7 pairs per sequence
    a, b = ds[0], ds[13]
    fx03, fx06 = parse_calib(K03 / "calib.txt")["P0"][0, 0], parse_calib(K06 / "calib.txt")["P0"][0, 0]
    # K scaled with the resize of each sequence's own image size (1242x375 and 1226x370)
    assert float(a["K"][0, 0]) == pytest.approx(fx03 * SIZE[1] / 1242, rel=1e-5)
    assert float(b["K"][0, 0]) == pytest.approx(fx06 * SIZE[1] / 1226, rel=1e-5)
    assert a["image"].shape == b["image"].shape == (3, *SIZE)
    # ground truth T_1to2 from the official poses/NN.txt: the car drives forward (-z in the first camera)
    assert float(a["pose_gt"][2, 3]) < -0.3
    batch = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(ds, [0, 13]), batch_size=2)))
    assert batch["K"].shape == (2, 3, 3) and not torch.equal(batch["K"][0], batch["K"][1])
    # a named subset, and a sequence that is not there
    assert len(KittiOdometryDataset(root, sequences=["06"], size=SIZE)) == 7
    with pytest.raises(InputError, match="sequence 07 not found"):
        KittiOdometryDataset(root, sequences=["07"], size=SIZE)


def test_frame_range_split(tmp_path):
    root = _odometry_root(tmp_path, n=10)
    seq03 = root / "sequences" / "03"
    train = build_trianflow_dataset(_cfg(dataset="kitti_odometry", root=str(seq03), frame_range="[0,6]"))
    val = build_trianflow_dataset(_cfg(dataset="kitti_odometry", root=str(seq03), frame_range="[6,10]"))
    ids_t = [train.datasets[0].indices[k] for k in range(len(train))]
    ids_v = [val.datasets[0].indices[k] for k in range(len(val))]
    assert ids_t == [0, 1, 2, 3, 4] and ids_v == [6, 7, 8]  # pairs (i, i+1) inside each range
    assert max(ids_t) + 1 < min(ids_v)  # no frame is shared
    triplets = KittiOdometryDataset(seq03, frames=3, size=SIZE, frame_range=(6, 10))
    assert list(triplets.datasets[0].indices) == [7, 8]
    assert parse_frame_range([]) is None
    for bad in ([5], [6, 6], [-1, 4], ["a", 3], [1.5, 3]):
        with pytest.raises(InputError, match="frame_range"):
            parse_frame_range(bad)
    with pytest.raises(InputError, match=r"no training samples .*frame_range=\[20, 30\]"):
        KittiOdometryDataset(seq03, size=SIZE, frame_range=(20, 30))


def test_static_frames_are_skipped(tmp_path):
    seq = tmp_path / "seq"
    _link_frames(K03 / "image_0", seq / "image_0", [0, 1, 1, 2, 3])  # the camera "stops" at frame 1
    (seq / "calib.txt").write_text((K03 / "calib.txt").read_text())
    ds = build_trianflow_dataset(_cfg(dataset="kitti_odometry", root=str(seq), static_filter="true",
                                      static_threshold=2.0))
    assert list(ds.datasets[0].indices) == [0, 2, 3]


def test_gray_and_color_cameras(tmp_path):
    seq = tmp_path / "seq"
    _link_frames(S12 / "colored_0", seq / "image_2", range(2))
    _link_frames(S12 / "colored_1", seq / "image_3", range(2))
    _link_frames(K06 / "image_0", seq / "image_0", range(3))
    c12 = parse_calib(S12 / "calib.txt")
    (seq / "calib.txt").write_text((K06 / "calib.txt").read_text() + f"P2: {_P(c12['P2'])}\nP3: {_P(c12['P3'])}\n")
    color = KittiOdometryDataset(seq, size=SIZE, camera="color")
    gray = KittiOdometryDataset(seq, size=SIZE, camera="gray")
    assert len(color) == 1 and len(gray) == 2
    assert color.sequences[0].meta["camera"] == "image_2" and gray.sequences[0].meta["camera"] == "image_0"
    img = color[0]["image"]
    assert not torch.allclose(img[0], img[2])  # real colour
    g = gray[0]["image"]
    assert torch.equal(g[0], g[1]) and torch.equal(g[0], g[2])  # grey as three equal channels
    st = KittiOdometryDataset(seq, size=SIZE, camera="color", stereo=True)
    assert float(st[0]["baseline"]) == pytest.approx(0.5379, abs=2e-3)
    with pytest.raises(InputError, match="no image_2/ folder for camera=color"):
        KittiOdometryDataset(K03, size=SIZE, camera="color")


def test_kitti_raw_gray_and_color_drives(tmp_path):
    root = _raw_root(tmp_path)
    ds = KittiRawDataset(root, size=SIZE, stereo=True)  # camera=auto: colour where there is, grey elsewhere
    names = {it[0].split("/")[0]: it[2] for it in ds.items}
    assert names == {"2011_10_03": "00", "2011_09_30": "02"}
    assert len(ds) == 5 + 1
    grey = next(ds[k] for k, it in enumerate(ds.items) if it[2] == "00")
    colour = next(ds[k] for k, it in enumerate(ds.items) if it[2] == "02")
    assert float(grey["baseline"]) == pytest.approx(0.537, abs=3e-3)
    assert float(colour["baseline"]) == pytest.approx(0.5379, abs=2e-3)
    assert float(grey["K"][0, 0]) == pytest.approx(707.0912 * SIZE[1] / 1226, rel=1e-5)
    assert grey["image_right"].shape == (3, *SIZE)
    assert torch.equal(grey["image"][0], grey["image"][1]) and not torch.equal(colour["image"][0], colour["image"][2])
    only_color = KittiRawDataset(root, size=SIZE, camera="color")
    assert {it[0].split("/")[0] for it in only_color.items} == {"2011_09_30"}
    rng = KittiRawDataset(root, size=SIZE, camera="gray", frame_range=(2, 5))
    assert sorted(it[1] for it in rng.items) == [2, 3]
    # the stereo recipe builder on the raw root
    cfg = _cfg(dataset="kitti_raw", root=str(root))
    assert len(build_stereo_dataset(cfg, "train")) == 6 + 2


def _train(tmp_path, *args, task_config="configs/kitti_cpu.yaml"):
    env = dict(os.environ, HOME=str(tmp_path))
    cmd = [sys.executable, "-m", "trianflow", "train", "-c", str(REPO / task_config), "--device", "cpu",
           "--out", str(tmp_path / "run"), "train.steps=1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def _train_here(tmp_path, *args, task_config="configs/kitti_cpu.yaml"):
    """``_train`` in this process (the CLI's ``main``): the same exit code and stderr, without paying
    a fresh interpreter and torch import per case (the first case of each test still runs a real process)."""
    import contextlib
    import io
    import types

    from trianflow.cli import main

    argv = ["train", "-c", str(REPO / task_config), "--device", "cpu", "--out", str(tmp_path / "run"),
            "train.steps=1", *args]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return types.SimpleNamespace(returncode=rc, stderr=err.getvalue(), args=argv)


def _one_line_error(r, *words):
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not (Path(r.args[r.args.index("--out") + 1]) / "last.pt").exists()  # before any training step


def test_bad_data_roots_fail_before_training(tmp_path):
    empty = tmp_path / "empty_seq"
    (empty / "image_0").mkdir(parents=True)
    (empty / "calib.txt").write_text((K03 / "calib.txt").read_text())
    _one_line_error(_train(tmp_path, f"data.root={empty}"), str(empty / "image_0"), "no images")

    nothing = tmp_path / "nothing"
    nothing.mkdir()
    _one_line_error(_train_here(tmp_path, f"data.root={nothing}"), str(nothing), "no KITTI odometry sequences")

    mixed = tmp_path / "mixed"
    _link_frames(K03 / "image_0", mixed / "image_0", range(3))
    os.symlink(sorted((K06 / "image_0").glob("*.png"))[3], mixed / "image_0" / "000003.png")
    (mixed / "calib.txt").write_text((K03 / "calib.txt").read_text())
    _one_line_error(_train_here(tmp_path, f"data.root={mixed}"), "000003.png", "1226x370", "same size")

    nocam = tmp_path / "nocam"
    _link_frames(K03 / "image_0", nocam / "image_0", range(3))
    (nocam / "calib.txt").write_text((K06 / "calib.txt").read_text().replace("P0:", "PX:"))
    _one_line_error(_train_here(tmp_path, f"data.root={nocam}"), str(nocam / "calib.txt"), "P0")

    raw = _raw_root(tmp_path)
    calib = raw / "2011_10_03" / "calib_cam_to_cam.txt"
    calib.write_text(calib.read_text().replace("P_rect_00", "P_rect_0X"))
    _one_line_error(_train_here(tmp_path, "data.dataset=kitti_raw", f"data.root={raw}"), str(calib), "P_rect_00")


def test_stereo_recipe_on_a_monocular_folder(tmp_path):
    r = _train(tmp_path, "data.dataset=kitti_odometry", f"data.root={K03}", "data.size=[64,208]",
               task_config="configs/stereo_monodepth.yaml")
    _one_line_error(r, str(K03), "right camera", "monocular")


def test_kitti_cpu_recipe_data():
    """The recipe's own data: frames 0-299 of KITTI 03, 128x416, static pairs dropped."""
    cfg = load_config(str(REPO / "configs" / "kitti_cpu.yaml"), [f"data.root={K03}"])
    assert cfg.data.frame_range == [0, 300] and cfg.train.out_dir == "runs/kitti_cpu_{stage}"
    ds = build_trianflow_dataset(cfg)
    idx = ds.datasets[0].indices
    assert 250 < len(ds) <= 299 and min(idx) >= 0 and max(idx) == 298
    s = ds[0]
    assert s["image"].shape == (3, 128, 416) and "image_aug" in s
