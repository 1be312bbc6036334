"""Tests for trianflow.inference and the ``trianflow flow`` / ``trianflow depth`` / ``trianflow vo --flow``
commands, with tiny checkpoints written directly (no training)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from trianflow.cli import build_parser, main
from trianflow.config import config_to_dict, load_config
from trianflow.errors import InputError
from trianflow.inference import (
    FLO_MAGIC,
    load_depth_fn,
    load_depthnet,
    load_flow_fn,
    load_flownet,
    predict_depth,
    predict_flow,
    read_flo,
    write_depth_outputs,
    write_flo,
)
from trianflow.models import DepthNet, FlowNet
from trianflow.training.checkpoint import save_checkpoint

TRAIN_SIZE = [64, 128]  # working size stored in the checkpoints; the test images are 64 x 192


def _ckpt(path, models: dict, stage: str):
    cfg = config_to_dict(load_config(None, [f"data.size={TRAIN_SIZE}", f"train.stage={stage}"]))
    save_checkpoint(path, {"step": 1, "models": {k: m.state_dict() for k, m in models.items()},
                           "arch": {k: m.arch_config() for k, m in models.items()}, "config": cfg,
                           "task": "trianflow", "stage": stage})
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    flow = FlowNet(pyramid_channels=(8, 8, 16, 16, 24, 24))
    depth = DepthNet()
    return {
        "flow": _ckpt(d / "flow.pt", {"flow": flow}, "flow"),
        "joint": _ckpt(d / "joint.pt", {"flow": flow, "depth": depth}, "joint"),
        "dir": d,
    }


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """4 rendered synthetic frames (64 x 192) as PNGs and as a KITTI-layout sequence folder."""
    from trianflow.data.synthetic import synthetic_sequence, write_kitti_layout

    d = tmp_path_factory.mktemp("frames")
    seq = synthetic_sequence(4, size=(64, 192), kind="forward_turn", seed=1)
    folder = d / "images"
    folder.mkdir()
    for i in range(len(seq)):
        cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(seq.read(i), cv2.COLOR_RGB2BGR))
    kitti = write_kitti_layout(seq, d / "kitti")
    # no ground truth: an untrained network's trajectory may be degenerate (all static), which the
    # evaluation after the run cannot align
    (kitti / "poses.txt").unlink()
    return {"folder": folder, "files": sorted(folder.glob("*.png")), "kitti": kitti, "seq": seq}


# ------------------------------------------------------------------------------------ .flo and colours


def test_flo_roundtrip_and_header(tmp_path):
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(5, 7, 2)).astype(np.float32) * 10
    p = tmp_path / "a.flo"
    write_flo(p, flow)
    raw = p.read_bytes()
    assert raw[:4] == b"PIEH"
    assert np.frombuffer(raw[:4], "<f4")[0] == np.float32(FLO_MAGIC)
    assert tuple(np.frombuffer(raw[4:12], "<i4")) == (7, 5)  # width, height
    assert len(raw) == 12 + 5 * 7 * 2 * 4
    np.testing.assert_array_equal(read_flo(p), flow)
    # u, v interleaved row-major: the second float of the data is v of pixel (0, 0)
    assert np.frombuffer(raw[16:20], "<f4")[0] == flow[0, 0, 1]


def test_read_flo_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.flo"
    bad.write_bytes(b"NOPE" + b"\0" * 20)
    with pytest.raises(InputError, match="not a Middlebury"):
        read_flo(bad)
    short = tmp_path / "short.flo"
    write_flo(short, np.zeros((4, 4, 2), np.float32))
    short.write_bytes(short.read_bytes()[:-8])
    with pytest.raises(InputError, match="header says 4x4"):
        read_flo(short)
    with pytest.raises(InputError, match="cannot read"):
        read_flo(tmp_path / "missing.flo")
    with pytest.raises(InputError, match=r"\(H,W,2\)"):
        write_flo(tmp_path / "x.flo", np.zeros((4, 4, 3)))


def test_write_depth_outputs(tmp_path):
    depth = np.linspace(1, 50, 6 * 8, dtype=np.float32).reshape(6, 8)
    paths = write_depth_outputs(tmp_path, "000001", depth)
    png = cv2.imread(str(paths["png"]), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16
    np.testing.assert_array_equal(png, np.round(depth * 256).astype(np.uint16))
    np.testing.assert_array_equal(np.load(paths["npy"]), depth)
    vis = cv2.imread(str(paths["vis"]))
    assert vis.shape == (6, 8, 3)
    assert vis[0, 0].sum() > vis[-1, -1].sum()  # near (small depth) is bright in the inverse-depth map


# ------------------------------------------------------------------------------------ prediction


class _ConstFlow(nn.Module):
    """Stub FlowNet: forward flow (+2, -1) px, backward (-2, +1) px at whatever size it runs."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))
        self.seen = None

    def forward_bidirectional(self, a, b):
        self.seen = tuple(a.shape[-2:])
        f = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        f[:, 0], f[:, 1] = 2.0, -1.0
        return [f], [-f]


def test_predict_flow_rescales_to_the_input_resolution():
    net = _ConstFlow()
    img = torch.rand(1, 3, 64, 192)
    fwd, bwd = predict_flow(net, img, img, size=(32, 48))
    assert net.seen == (32, 48)
    assert fwd.shape == (1, 2, 64, 192)
    torch.testing.assert_close(fwd[0, 0], torch.full((64, 192), 2.0 * 192 / 48))
    torch.testing.assert_close(fwd[0, 1], torch.full((64, 192), -1.0 * 64 / 32))
    torch.testing.assert_close(bwd, -fwd)


def test_predict_depth_resizes_disparity_and_inverts():
    net = DepthNet().eval()
    img = torch.rand(1, 3, 64, 192)
    d_small = predict_depth(net, img, size=(64, 96))
    assert d_small.shape == (1, 1, 64, 192)
    assert bool((d_small >= net.min_depth - 1e-4).all() and (d_small <= net.max_depth + 1e-3).all())
    d_full = predict_depth(net, img)
    with torch.no_grad():
        disp = net(img)["disp"][0]
    torch.testing.assert_close(d_full, 1.0 / (1 / net.max_depth + (1 / net.min_depth - 1 / net.max_depth) * disp))
    with pytest.raises(InputError, match="too small"):
        predict_depth(net, img, size=(32, 96))


def test_load_flow_fn_uses_the_training_size(ckpts, frames):
    net, size = load_flownet(ckpts["flow"])
    assert size == tuple(TRAIN_SIZE) and isinstance(net, FlowNet) and not net.training
    fn = load_flow_fn(ckpts["flow"])
    img1, img2 = frames["seq"].read(0), frames["seq"].read(1)
    fwd, bwd = fn(img1, img2)
    assert fwd.shape == (64, 192, 2) and bwd.shape == (64, 192, 2) and fwd.dtype == np.float32
    # the same as running the net at the training size and rescaling x by 192 / 128
    t1 = torch.from_numpy(img1).permute(2, 0, 1)[None].float() / 255
    t2 = torch.from_numpy(img2).permute(2, 0, 1)[None].float() / 255
    ref, _ = predict_flow(net, t1, t2, size=TRAIN_SIZE)
    np.testing.assert_allclose(fwd, ref[0].permute(1, 2, 0).numpy(), atol=1e-5)
    fn_native = load_flow_fn(ckpts["flow"], size=(64, 192))
    assert fn_native.size == (64, 192)


def test_load_depth_fn(ckpts, frames):
    fn = load_depth_fn(ckpts["joint"])
    d = fn(frames["seq"].read(0))
    assert d.shape == (64, 192) and d.dtype == np.float32 and np.all(np.isfinite(d)) and np.all(d > 0)
    grey = fn(frames["seq"].read(0)[..., 0])  # (H,W) grey input is accepted
    assert grey.shape == (64, 192)


# ------------------------------------------------------------------------------------ bad checkpoints


def test_bad_checkpoints_give_one_line_errors(ckpts, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InputError, match="corrupted or truncated|not a trianflow checkpoint"):
        load_flow_fn(corrupt)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(ckpts["flow"].read_bytes()[:5000])
    with pytest.raises(InputError, match="corrupted or truncated"):
        load_flownet(truncated)
    with pytest.raises(InputError, match="checkpoint not found"):
        load_flownet(tmp_path / "missing.pt")
    # a flow-stage checkpoint has no DepthNet
    with pytest.raises(InputError, match=r"has no 'depth' network \(it has: flow\).*flow-stage"):
        load_depth_fn(ckpts["flow"])
    # another architecture under the name 'flow'
    other = _ckpt(tmp_path / "other.pt", {"flow": DepthNet()}, "flow")
    with pytest.raises(InputError, match="'flow' network is a DepthNet, not a FlowNet"):
        load_flow_fn(other)
    # a toy-task checkpoint
    from trianflow.training.toy import ToyFlow

    toy = _ckpt(tmp_path / "toy.pt", {"flow": ToyFlow(8)}, "flow")
    with pytest.raises(InputError, match="is a toy_flow, not a FlowNet"):
        load_flownet(toy)
    # weights that do not fit the stored architecture
    sd = FlowNet(pyramid_channels=(8, 8, 16, 16, 24, 24)).state_dict()
    arch = FlowNet().arch_config()
    save_checkpoint(tmp_path / "mismatch.pt", {"step": 0, "models": {"flow": sd}, "arch": {"flow": arch}})
    with pytest.raises(InputError, match="does not match FlowNet"):
        load_flownet(tmp_path / "mismatch.pt")
    # NaN weights
    nan_net = FlowNet(pyramid_channels=(8, 8, 16, 16, 24, 24))
    with torch.no_grad():
        next(nan_net.parameters()).fill_(float("nan"))
    _ckpt(tmp_path / "nan.pt", {"flow": nan_net}, "flow")
    with pytest.raises(InputError, match="NaN/inf weights"):
        load_flownet(tmp_path / "nan.pt")
    # a plain state dict (not a trianflow checkpoint)
    torch.save(DepthNet().state_dict(), tmp_path / "plain.pt")
    with pytest.raises(InputError, match="not a trianflow training checkpoint"):
        load_depthnet(tmp_path / "plain.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is missing")
def test_gpu_requested_without_cuda(ckpts, frames, tmp_path, capsys):
    with pytest.raises(InputError, match="torch.cuda.is_available"):
        load_flow_fn(ckpts["flow"], device="cuda")
    rc = main(["depth", str(frames["files"][0]), "--ckpt", str(ckpts["joint"]), "--out", str(tmp_path / "o"),
               "--device", "cuda:0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "cuda" in err


# ------------------------------------------------------------------------------------ CLI


def test_both_subcommands_are_registered():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"flow", "depth"} <= set(sub.choices)


def test_flow_cli_pair_and_folder(ckpts, frames, tmp_path, capsys):
    f = frames["files"]
    out = tmp_path / "pair"
    assert main(["flow", str(f[0]), str(f[1]), "--ckpt", str(ckpts["flow"]), "--out", str(out), "--backward"]) == 0
    flo = read_flo(out / "flo" / "000000.flo")
    assert flo.shape == (64, 192, 2)
    fwd, bwd = load_flow_fn(ckpts["flow"])(frames["seq"].read(0), frames["seq"].read(1))
    np.testing.assert_allclose(flo, fwd, atol=1e-5)
    np.testing.assert_allclose(read_flo(out / "flo" / "000000_bwd.flo"), bwd, atol=1e-5)
    vis = cv2.imread(str(out / "vis" / "000000.png"))
    assert vis.shape == (64, 192, 3)
    out2 = tmp_path / "folder"
    assert main(["flow", str(frames["folder"]), "--ckpt", str(ckpts["flow"]), "--out", str(out2),
                 "--no-progress", "--max-flow", "5"]) == 0
    assert sorted(p.name for p in (out2 / "flo").iterdir()) == ["000000.flo", "000001.flo", "000002.flo"]
    assert "wrote 3 flow field(s)" in capsys.readouterr().out


def test_depth_cli(ckpts, frames, tmp_path):
    out = tmp_path / "d"
    assert main(["depth", str(frames["folder"]), "--ckpt", str(ckpts["joint"]), "--out", str(out),
                 "--no-progress"]) == 0
    names = sorted(p.name for p in (out / "depth").iterdir())
    assert names == [f"{i:06d}.png" for i in range(4)]
    png = cv2.imread(str(out / "depth" / "000002.png"), cv2.IMREAD_UNCHANGED)
    npy = np.load(out / "npy" / "000002.npy")
    assert png.dtype == np.uint16 and png.shape == (64, 192) and npy.shape == (64, 192)
    np.testing.assert_allclose(npy, load_depth_fn(ckpts["joint"])(frames["seq"].read(2)), rtol=1e-5)
    np.testing.assert_array_equal(png, np.round(npy.astype(np.float64) * 256).astype(np.uint16))
    assert (out / "vis" / "000002.png").is_file()


@pytest.mark.parametrize("argv, msg", [
    (["flow", "{img}"], "give two images"),
    (["flow", "{img}", "{img}", "{img}"], "got 3 inputs"),
    (["flow", "{empty}"], "no images in this folder"),
    (["depth", "{missing}"], "no such image file or folder"),
    (["depth", "{img}", "--size", "4", "4"], "must be >= 8"),
    (["depth", "{img}", "--size", "32", "96"], "both >= 64 pixels"),
])
def test_cli_bad_input(ckpts, frames, tmp_path, capsys, argv, msg):
    (tmp_path / "empty").mkdir()
    subst = {"img": str(frames["files"][0]), "empty": str(tmp_path / "empty"), "missing": str(tmp_path / "nope.png")}
    argv = [a.format(**subst) for a in argv] + ["--ckpt", str(ckpts["joint"]), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1


def test_cli_bad_checkpoint(ckpts, frames, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ckpts["flow"].read_bytes()[:3000])  # truncated download
    assert main(["flow", str(frames["folder"]), "--ckpt", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "corrupted or truncated" in err and err.count("\n") == 1
    assert main(["depth", str(frames["folder"]), "--ckpt", str(ckpts["flow"]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "has no 'depth' network" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------ VO with networks


def test_vo_with_network_flow_and_depth(ckpts, frames, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["vo", str(frames["kitti"]), "--flow", str(ckpts["joint"]), "--depth", str(ckpts["joint"]),
               "--out", str(run), "--no-progress", "--samples", "500"])
    assert rc == 0
    poses = np.loadtxt(run / "poses.txt")
    assert poses.shape == (4, 12) and np.all(np.isfinite(poses))
    meta = json.loads((run / "run.json").read_text())
    assert "network" in json.dumps(meta)
    assert "frames/s" in capsys.readouterr().out


def test_vo_with_bad_flow_checkpoint(ckpts, frames, tmp_path, capsys):
    rc = main(["vo", str(frames["kitti"]), "--flow", str(ckpts["dir"] / "nothing.pt"), "--out", str(tmp_path / "r"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoint not found" in err and err.count("\n") == 1
