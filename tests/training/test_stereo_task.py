"""Tests for trianflow.training.stereo_task: the ``stereo`` and ``stereo_mono`` tasks, their helpers,
datasets and configs (CPU, tiny images, a few steps)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trianflow.config import load_config
from trianflow.data.builders import build_stereo_dataset
from trianflow.data.stereo_pairs import MiddleburyDataset, check_stereo_batch
from trianflow.errors import InputError
from trianflow.losses.stereo_objective import disparity_target, stereo_objective
from trianflow.training.checkpoint import load_checkpoint
from trianflow.training.registry import available_tasks, get_task
from trianflow.training.stereo_task import StereoMonoTask, StereoTask
from trianflow.training.trainer import StepContext, Trainer

ROOT = Path(__file__).resolve().parents[2]
KITTI_ODOM = ROOT.parent / "shared" / "data" / "kitti_odom_straight"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box is small and shared: one thread is faster under load
    yield
    torch.set_num_threads(n)


def _texture(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, h // 4 + 1, w // 4 + 1, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def shifted_pair(b=2, h=32, w=64, d=4, baseline=0.5, fx=50.0):
    """Rectified pair with a constant disparity ``d`` px: ``left(x) = right(x - d)``."""
    tex = _texture(b, h, w + d)
    left, right = tex[..., :w].contiguous(), tex[..., d:d + w].contiguous()
    K = torch.tensor([[fx, 0, (w - 1) / 2], [0, fx, (h - 1) / 2], [0, 0, 1.0]]).expand(b, 3, 3).clone()
    return {"image": left, "image_right": right, "K": K, "baseline": torch.full((b,), float(baseline)),
            "frame_id": [f"pair/{i}" for i in range(b)]}


def constant_disps(b, h, w, frac, scales=4):
    return [torch.full((b, 1, (h + 2**s - 1) // 2**s, (w + 2**s - 1) // 2**s), float(frac)) for s in range(scales)]


def cfg_with(*overrides):
    return load_config(None, list(overrides))


# ----------------------------------------------------------------------------------- bad input


def test_check_stereo_batch_accepts_a_good_batch():
    check_stereo_batch(shifted_pair())
    check_stereo_batch({**shifted_pair(), "image_next": torch.rand(2, 3, 32, 64)}, need_next=True)


@pytest.mark.parametrize("mutate, words", [
    (lambda b: b.pop("image_right"), ["no 'image_right'", "stereo dataset"]),
    (lambda b: b.update(image_right=torch.rand(2, 3, 32, 60)), ["right images are", "one size"]),
    (lambda b: b.update(baseline=torch.tensor([0.5, 0.0])), ["baseline must be > 0", "pair/1"]),
    (lambda b: b.update(baseline=torch.tensor([-0.5, 0.5])), ["baseline must be > 0", "-0.5", "pair/0"]),
    (lambda b: b.update(baseline=torch.tensor([float("nan"), 0.5])), ["baseline must be > 0"]),
    (lambda b: b.pop("baseline"), ["no stereo 'baseline'"]),
    (lambda b: b.pop("K"), ["intrinsics 'K'"]),
])
def test_check_stereo_batch_rejects_bad_input(mutate, words):
    batch = shifted_pair()
    mutate(batch)
    with pytest.raises(InputError) as exc:
        check_stereo_batch(batch)
    for w in words:
        assert w in str(exc.value)


def test_check_stereo_batch_needs_next_frame_for_stereo_mono():
    with pytest.raises(InputError, match="image_next"):
        check_stereo_batch(shifted_pair(), need_next=True)


def test_dataset_and_model_config_errors():
    with pytest.raises(InputError, match="unknown stereo dataset"):
        build_stereo_dataset(cfg_with("data.dataset=nope"))
    with pytest.raises(InputError, match="data.root"):
        build_stereo_dataset(cfg_with("data.dataset=kitti_stereo"))
    with pytest.raises(InputError, match="synthetic sequences are"):
        build_stereo_dataset(cfg_with("data.dataset=synthetic_stereo", "data.sequences=[spiral:0:4]"))
    with pytest.raises(InputError, match="synthetic sequences are"):
        build_stereo_dataset(cfg_with("data.dataset=synthetic_stereo", "data.sequences=[straight:x]"))
    with pytest.raises(InputError, match="temporal neighbours"):
        build_stereo_dataset(cfg_with("data.dataset=middlebury"), frames=2)
    with pytest.raises(InputError, match="stereo DepthNet"):
        StereoTask(cfg_with("train.task=stereo", "model.depth.stereo=false"))
    with pytest.raises(InputError, match="stages"):
        StereoMonoTask(cfg_with("train.task=stereo_mono")).set_stage("bogus")


# ----------------------------------------------------------------------------------- helpers


def test_disparity_target_preference_and_inversion():
    depth = torch.tensor([[[[2.0, 0.0], [4.0, float("inf")]]]])
    t, m, key = disparity_target({"depth_gt": depth})
    assert key == "depth_gt"
    assert m.tolist() == [[[[True, False], [True, False]]]]
    assert torch.allclose(t[m], torch.tensor([0.5, 0.25]))
    t, m, key = disparity_target({"depth_gt": depth, "disp_gt": torch.ones(1, 1, 2, 2), "disp_teacher": 2 * torch.ones(1, 1, 2, 2)})
    assert key == "disp_teacher" and float(t.mean()) == 2.0
    assert disparity_target({"image": torch.rand(1, 3, 2, 2)}) is None


# ----------------------------------------------------------------------------------- objective


def test_stereo_objective_prefers_the_true_disparity():
    b, h, w, d = 2, 32, 64, 4
    batch = shifted_pair(b, h, w, d)
    lc = cfg_with().loss
    good = constant_disps(b, h, w, d / w)
    total_good, named_good, extras = stereo_objective(good, good, batch, lc)
    for wrong in (0.3 * d / w, 2.5 * d / w):
        bad = constant_disps(b, h, w, wrong)
        _, named_bad, _ = stereo_objective(bad, bad, batch, lc)
        assert named_good["stereo_ap"] < 0.6 * named_bad["stereo_ap"]
    assert torch.allclose(extras["disp_px"], torch.full_like(extras["disp_px"], float(d)))
    assert torch.allclose(extras["depth"], torch.full_like(extras["depth"], 50.0 * 0.5 / d))
    expect = (named_good["stereo_ap"] + lc.w_stereo_smooth * named_good["stereo_smooth"]
              + lc.w_stereo_lr * named_good["stereo_lr"])
    assert float(total_good) == pytest.approx(expect, rel=1e-5)


def test_stereo_objective_icp_and_ssi_terms_with_gradients():
    b, h, w, d = 2, 32, 64, 4
    batch = shifted_pair(b, h, w, d)
    # relative GT at twice the resolution (the prediction is resized to it): a ramp in x; sample 1 has none
    xs = torch.arange(2 * w, dtype=torch.float32)
    gt = (2.0 * d + 4.0 * xs / (2 * w)).view(1, 1, 1, -1).repeat(b, 1, 2 * h, 1)
    gt[1] = 0.0
    batch["disp_gt"] = gt
    lc = cfg_with("loss.w_icp=1e-3", "loss.w_ssi=1.0", "loss.w_ssi_grad=0.5").loss
    # the prediction is half the GT (another scale) at half its width, in width fractions
    xl = 2 * torch.arange(w, dtype=torch.float32) + 0.5  # GT column at the centre of each low-res pixel
    pred_px = 0.5 * (2.0 * d + 4.0 * xl / (2 * w)) / 2.0
    frac = (pred_px / w).view(1, 1, 1, -1).repeat(b, 1, h, 1).requires_grad_(True)
    dl = [frac] + [F.interpolate(frac, scale_factor=0.5**s, mode="bilinear", align_corners=False) for s in (1, 2, 3)]
    total, named, _ = stereo_objective(dl, [x * 1.0 for x in dl], batch, lc)
    assert {"icp", "ssi", "ssi_grad"} <= set(named) and all(np.isfinite(list(named.values())))
    assert named["ssi"] < 0.02  # the prediction is an exact scaled copy of the GT (up to resampling)
    total.backward()
    assert torch.isfinite(frac.grad).all() and frac.grad.abs().sum() > 0
    # a prediction unrelated to the GT costs much more
    noise = torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(1)) * 0.1 + 0.01
    nl = [noise] + [F.interpolate(noise, scale_factor=0.5**s, mode="bilinear", align_corners=False) for s in (1, 2, 3)]
    _, named_bad, _ = stereo_objective(nl, nl, batch, lc)
    assert named_bad["ssi"] > 10 * named["ssi"]
    # every GT empty: the SSI term is 0 and the loss stays finite
    batch["disp_gt"] = torch.zeros_like(gt)
    total0, named0, _ = stereo_objective(dl, dl, batch, lc)
    assert named0["ssi"] == 0.0 and torch.isfinite(total0)
    # w_ssi without any target is a configuration error
    batch.pop("disp_gt")
    with pytest.raises(InputError, match="w_ssi"):
        stereo_objective(dl, dl, batch, lc)
    with pytest.raises(InputError, match="w_stereo_lr"):
        stereo_objective(dl, dl, shifted_pair(b, h, w, d), cfg_with("loss.w_stereo_lr=-1").loss)


# ----------------------------------------------------------------------------------- datasets


def test_middlebury_dataset_scale_and_flip_swaps_left_right():
    pytest.importorskip("skimage")
    try:
        ds = build_stereo_dataset(cfg_with("data.dataset=middlebury", "data.size=[100,148]", "data.max_samples=12",
                                           "data.color_jitter=false"))
    except InputError as exc:  # scikit-image without its data files
        pytest.skip(str(exc))
    assert isinstance(ds, MiddleburyDataset) and len(ds) == 12
    ref = ds.sample
    assert ref["image"].shape == (3, 100, 148) and ref["disp_gt"].max() > 5
    torch.manual_seed(0)
    flipped = plain = 0
    for i in range(12):
        s = ds[i]
        if torch.equal(s["image"], ref["image_right"].flip(-1)):
            flipped += 1
            assert torch.equal(s["image_right"], ref["image"].flip(-1))
            assert float(s["disp_gt"].abs().sum()) == 0.0  # GT of the other camera: unknown now
            assert float(s["baseline"]) > 0
        else:
            assert torch.equal(s["image"], ref["image"])
            plain += 1
    assert flipped > 0 and plain > 0
    assert ds.eval_mask.shape == (100, 148) and 0.5 < ds.eval_mask.mean() < 1.0


def test_kitti_odometry_stereo_dataset_has_neighbours():
    if not (KITTI_ODOM / "image_1").is_dir():
        pytest.skip(f"{KITTI_ODOM} not available")
    cfg = cfg_with("data.dataset=kitti_odometry", f"data.root={KITTI_ODOM}", "data.size=[64,192]")
    s = build_stereo_dataset(cfg, frames=2)[0]
    assert {"image", "image_right", "image_next", "image_next_right", "baseline"} <= set(s)
    assert float(s["baseline"]) == pytest.approx(0.537, abs=0.01)
    assert s["image_right"].shape == s["image"].shape == (3, 64, 192)


# ----------------------------------------------------------------------------------- trainer


def _write_stereo_folder(folder: Path, n=3, h=48, w=96, d=6):
    (folder / "left").mkdir(parents=True)
    (folder / "right").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        tex = cv2.resize((rng.random((h // 4, (w + d) // 4, 3)) * 255).astype(np.uint8), (w + d, h))
        cv2.imwrite(str(folder / "left" / f"{i:03d}.png"), tex[:, :w])
        cv2.imwrite(str(folder / "right" / f"{i:03d}.png"), tex[:, d:d + w])
    (folder / "calib.txt").write_text("60.0 0.3\n")


def test_stereo_task_trains_two_steps_on_a_stereo_folder(tmp_path):
    assert {"stereo", "stereo_mono"} <= set(available_tasks())
    _write_stereo_folder(tmp_path / "pairs")
    cfg = cfg_with("train.task=stereo", "data.dataset=stereo_folder", f"data.root={tmp_path / 'pairs'}",
                   "data.size=[64,128]", "data.batch_size=2", "data.num_workers=0", "data.pin_memory=false",
                   "train.steps=2", "train.log_every=1", "train.image_every=1", "train.device=cpu",
                   "loss.w_icp=1e-3", f"train.out_dir={tmp_path / 'run'}")
    tr = Trainer.from_config(cfg)
    assert isinstance(tr.task, StereoTask)
    summary = tr.run()
    assert summary["steps_run"] == 2 and summary["skipped_steps"] == 0
    assert np.isfinite(summary["loss"]) and {"stereo_ap", "stereo_lr", "icp"} <= set(summary["terms"])
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert set(ckpt["models"]) == {"depth"}
    assert any((tmp_path / "run" / "tb").iterdir())


def test_stereo_mono_task_trains_two_steps_on_synthetic(tmp_path):
    cfg = cfg_with("train.task=stereo_mono", "train.stage=flow", "data.dataset=synthetic_stereo",
                   "data.sequences=[forward_turn:0:4:0.5]", "data.size=[64,192]", "data.batch_size=2",
                   "data.num_workers=0", "data.pin_memory=false", "train.steps=2", "train.log_every=1",
                   "train.image_every=0", "train.device=cpu", f"train.out_dir={tmp_path / 'run'}")
    tr = Trainer.from_config(cfg)
    assert isinstance(tr.task, StereoMonoTask) and set(tr.models) == {"flow", "depth"}
    before = {k: v.clone() for k, v in tr.models["flow"].state_dict().items()}
    summary = tr.run()
    assert summary["steps_run"] == 2 and np.isfinite(summary["loss"])
    assert {"stereo_ap", "flow", "flow_smooth", "gt_abs_rel_metric"} <= set(summary["terms"])
    after = tr.models["flow"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the flow stage trains the FlowNet


class _GTFlow(torch.nn.Module):
    """Stand-in FlowNet returning exact flow pyramids (strides 1, 4, 8, 16, 32)."""

    def __init__(self, fwd, bwd):
        super().__init__()
        self.fwd, self.bwd = fwd, bwd
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    @staticmethod
    def _pyr(f):
        h, w = f.shape[-2:]
        out = [f]
        for s in (4, 8, 16, 32):
            hs, ws = -(-h // s), -(-w // s)
            out.append(F.interpolate(f, size=(hs, ws), mode="bilinear", align_corners=False)
                       * torch.tensor([ws / w, hs / h]).view(1, 2, 1, 1))
        return out

    def forward_bidirectional(self, img1, img2):
        return self._pyr(self.fwd), self._pyr(self.bwd)


def test_stereo_mono_depth_stage_trains_depth_from_triangulation():
    """Exact flow in, stereo terms off: the triangulation losses alone reach the DepthNet."""
    from trianflow.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(n_frames=3, size=(64, 192), baseline=0.54, frames=2)
    seq = ds.seq
    samples = [ds[i] for i in range(2)]
    batch = torch.utils.data.default_collate(samples)
    fwd = torch.stack([torch.from_numpy(seq.flow(i, i + 1)[0]) for i in range(2)])
    bwd = torch.stack([torch.from_numpy(seq.flow(i + 1, i)[0]) for i in range(2)])
    cfg = cfg_with("train.task=stereo_mono", "train.stage=depth", "loss.w_stereo_ap=0", "loss.w_stereo_lr=0",
                   "loss.w_stereo_smooth=0", "loss.num_matches=1500", "loss.ransac_iters=50")
    task = StereoMonoTask(cfg)
    stub = _GTFlow(fwd, bwd)
    task.set_stage("depth")
    assert not any(p.requires_grad for p in task.flow_net.parameters())
    ctx = StepContext(step=0, stage="depth", device=torch.device("cpu"), models={"flow": stub, "depth": task.depth_net},
                      want_images=True, autocast=lambda: torch.autocast("cpu", enabled=False))
    out = task.step(batch, ctx)
    assert out.terms["n_valid"] == 2.0
    assert out.terms["tri"] > 0 and out.terms["pd"] > 0 and np.isfinite(float(out.loss.detach()))
    out.loss.backward()
    g = sum(float(p.grad.abs().sum()) for p in task.depth_net.parameters() if p.grad is not None)
    assert g > 0
    assert {"flow", "inliers", "disp_left"} <= set(out.images)


# ----------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name, task, icp", [("stereo_monodepth", "stereo", 0.0), ("stereo_m3depth", "stereo", 1e-3),
                                              ("kitti_stereo_mono", "stereo_mono", 0.0),
                                              ("middlebury_overfit", "stereo", 0.0)])
def test_configs_build_their_tasks(name, task, icp):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.train.task == task and cfg.loss.w_icp == pytest.approx(icp)
    t = get_task(task)(cfg)
    models = t.models()
    assert models["depth"].stereo
    assert set(models) == ({"flow", "depth"} if task == "stereo_mono" else {"depth"})
    if name == "middlebury_overfit":
        # the largest GT disparity (0.081 of the width) must be reachable by disp_scale * sigmoid
        assert models["depth"].disp_scale > 0.09
