"""The VO's steps one by one (trianflow.vo.*), on rendered synthetic frames with exact ground truth."""

import numpy as np
import pytest
import torch

from trianflow.flow_backends import DISFlow
from trianflow.geometry.pose import rotation_error_deg as _rot_err
from trianflow.vo import VOConfig
from trianflow.vo.config import validate_config
from trianflow.vo.ground import GroundCollector
from trianflow.vo.reference import PARALLAX_NOISE_PX, ReferenceHold
from trianflow.vo.scale import ChainedScale, PairScaleInput, ScaleEstimate, ScaleSources
from trianflow.vo.track import PointTrack, advect
from trianflow.vo.two_view import TwoViewPose, parallax_px, rotation_only


@pytest.fixture(scope="module")
def street():
    from trianflow.data.synthetic import synthetic_sequence

    return synthetic_sequence(n_frames=3, size=(160, 512), kind="forward_turn", seed=3)


def _two_view(seq, cfg=None):
    cfg = cfg or VOConfig()
    return TwoViewPose(seq.K, seq.size, cfg, 2, torch.Generator().manual_seed(0), torch.device("cpu"))


def rotation_error_deg(R1, R2) -> float:
    return float(_rot_err(torch.as_tensor(R1, dtype=torch.float64), torch.as_tensor(R2, dtype=torch.float64)))


def _gt_rel(seq, i, j):
    return np.linalg.inv(seq.gt_poses[j]) @ seq.gt_poses[i]  # X_j = rel X_i


def test_two_view_pose_recovers_the_motion(street):
    flow = DISFlow("medium")
    fwd, bwd = flow(street.read(0), street.read(1))
    out = _two_view(street).estimate(fwd, bwd, None)
    gt = _gt_rel(street, 0, 1)
    assert out.kind == "pose" and out.matches > 3000 and out.inliers > 0.8 * out.matches
    assert rotation_error_deg(out.R.numpy(), gt[:3, :3]) < 0.05
    t = out.t_unit.numpy()
    cos = t @ gt[:3, 3] / np.linalg.norm(gt[:3, 3])
    assert abs(np.linalg.norm(t) - 1) < 1e-6 and cos > np.cos(np.radians(0.5))
    assert int(out.tri.valid.sum()) > 0.8 * out.inliers
    assert out.inlier_xy[0].shape == out.inlier_xy[1].shape == (out.inliers, 2)
    assert out.tracked is None  # nothing carried in


def test_two_view_static_pair(street):
    img = street.read(0)
    fwd, bwd = DISFlow("medium")(img, img)
    out = _two_view(street).estimate(fwd, bwd, None)
    assert out.kind == "static" and out.R is None and out.median_flow < 0.5


def test_rotation_only_and_parallax_on_exact_bearings():
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    Kt = torch.as_tensor(K, dtype=torch.float32).unsqueeze(0)
    rng = np.random.default_rng(0)
    x1 = torch.from_numpy(rng.uniform([0, 0], [640, 480], (400, 2)))
    import cv2

    R = torch.from_numpy(cv2.Rodrigues(np.array([0.01, -0.03, 0.005]))[0])
    H = torch.from_numpy(K) @ R @ torch.linalg.inv(torch.from_numpy(K))
    p = torch.cat([x1, torch.ones(400, 1, dtype=torch.float64)], 1) @ H.T
    x2 = p[:, :2] / p[:, 2:]
    x2[:20] += 30.0  # outliers are rejected
    Rest = rotation_only(Kt, 500.0, x1, x2)
    assert rotation_error_deg(Rest.numpy(), R.numpy()) < 1e-3
    par = parallax_px(Kt, R, x1, x2)
    assert float(par[20:].max()) < 1e-2 and float(par[:20].min()) > 40  # only the outliers have parallax


def test_reference_hold_limits_and_revision():
    hold = ReferenceHold(max_hold=2, max_flow_px=10.0)
    assert hold.can_hold(4.0)  # the next frame: 8 px expected
    assert not hold.can_hold(6.0)  # 12 px expected
    hold.add(1, np.eye(3), 0.1)  # below the noise floor: does not move
    hold.add(2, np.eye(3), 1.0)
    assert not hold.can_hold(0.1)  # at most 2 held frames
    rel = np.eye(4)
    rel[:3, 3] = [0, 0, -3.0]  # frame 3 lies 3 units ahead of the reference (X3 = X0 + t)
    ref_pose = np.eye(4)
    ref_pose[0, 3] = 5.0
    out = hold.revise(rel, index=3, ref=0, parallax=3.0, ref_c2w=ref_pose)
    assert sorted(out) == [1, 2] and hold.frames == []
    assert 0.1 < PARALLAX_NOISE_PX and np.allclose(out[1][:3, 3], [5, 0, 0])
    assert np.allclose(out[2][:3, 3], [5, 0, 1.0])  # 1/3 of the way by parallax, 2/3 by time: the smaller
    hold.release()
    assert hold.count == 0


def test_advect_keeps_only_reliable_flow():
    track = PointTrack(torch.tensor([[2.0, 2.0], [6.0, 2.0]], dtype=torch.float64),
                       torch.tensor([[0, 0, 5.0], [1, 0, 5.0]], dtype=torch.float64))
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = 1.5
    score = torch.full((1, 1, 8, 8), 10.0)
    score[..., 4:] = 0.5  # the right half is inconsistent
    moved = advect(track, flow, score)
    assert moved is not None
    kept, xy2 = moved
    assert len(kept) == 1 and torch.allclose(xy2, torch.tensor([[3.5, 2.0]], dtype=torch.float64))
    assert advect(None, flow, score) is None
    assert advect(track, flow, torch.zeros_like(score)) is None


class _Src:
    def __init__(self, est, fall_through):
        self.est, self.fall_through, self.calls = est, fall_through, 0

    def estimate(self, p):
        self.calls += 1
        return self.est


def test_scale_sources_try_in_order_and_fall_through():
    cfg = VOConfig()
    K = np.diag([500.0, 500.0, 1.0])
    Kt = torch.as_tensor(K, dtype=torch.float32).unsqueeze(0)
    src = ScaleSources(K, Kt, (100, 200), cfg, torch.Generator(), torch.device("cpu"))
    assert not src.per_pair and len(src.sources) == 1
    p = PairScaleInput(torch.eye(4).unsqueeze(0), None, None, None, np.zeros((100, 200, 3), np.uint8), None, True)
    assert src.estimate(p) == ScaleEstimate(1.0, True, 0)  # the first pair defines the unit
    p.first = False
    assert src.estimate(p).ok is False  # nothing carried: the caller keeps the previous speed
    stereo = _Src(ScaleEstimate(2.0, False, 3), fall_through=True)
    depth = _Src(ScaleEstimate(4.0, True, 30), fall_through=False)
    src.sources = [stereo, depth, src.chained]
    assert src.per_pair and src.estimate(p).scale == 4.0 and stereo.calls == depth.calls == 1
    stereo.est = ScaleEstimate(2.5, True, 40)
    assert src.estimate(p).scale == 2.5 and depth.calls == 1
    stereo.est = None  # not applicable (no right image)
    assert src.estimate(p).scale == 4.0


def test_chained_scale_recovers_the_length_of_the_unit_translation():
    K = np.array([[400.0, 0, 200], [0, 400, 100], [0, 0, 1]])
    Kt = torch.as_tensor(K, dtype=torch.float32).unsqueeze(0)
    rng = np.random.default_rng(1)
    X1 = np.c_[rng.uniform(-4, 4, 300), rng.uniform(-1, 2, 300), rng.uniform(6, 30, 300)]  # frame 1 (chain units)
    t = np.array([0.1, 0.0, -2.0])  # X2 = X1 + t: moved 2.0 forward, the true length
    X2 = X1 + t

    def proj(X):
        p = X @ K.T
        return p[:, :2] / p[:, 2:]

    prev = PointTrack(torch.from_numpy(proj(X1)), torch.from_numpy(X1))
    tracked = (prev, torch.from_numpy(proj(X2)))
    T_unit = torch.eye(4, dtype=torch.float64)
    T_unit[:3, 3] = torch.from_numpy(t / np.linalg.norm(t))
    est = ChainedScale(Kt, (200, 400), VOConfig(), torch.Generator().manual_seed(0)).estimate(
        PairScaleInput(T_unit.unsqueeze(0), None, None, tracked, None, None, False))
    assert est.ok and est.points > 250 and abs(est.scale - np.linalg.norm(t)) < 1e-3


def test_ground_collector_decides_when_the_ground_applies():
    K = np.eye(3)
    assert GroundCollector(VOConfig(), K, (100, 200)).enabled  # default: relative ground with the BA
    g = GroundCollector(VOConfig(), K, (100, 200))
    assert not g.per_pair and g.fits(None) == []  # relative: never the pairs' planes
    assert not GroundCollector(VOConfig(refine="none"), K, (100, 200)).enabled
    assert GroundCollector(VOConfig(refine="none", camera_height=1.6), K, (100, 200)).per_pair
    assert not GroundCollector(VOConfig(stereo=True), K, (100, 200)).enabled
    assert not GroundCollector(VOConfig(), K, (100, 200), depth_fn=lambda im: im).enabled
    assert GroundCollector(VOConfig(ground_scale="off"), K, (100, 200)).fits(None) is None


@pytest.mark.parametrize("bad, match", [(dict(refine="x"), "refine"), (dict(ground_scale="x"), "ground_scale"),
                                        (dict(camera_height=-1.0), "camera height"),
                                        (dict(camera_height=1.6, stereo=True), "--stereo")])
def test_validate_config(bad, match):
    from trianflow.errors import InputError

    with pytest.raises(InputError, match=match):
        validate_config(VOConfig(**bad))
