import numpy as np
import pytest
import torch

from trianflow.geometry.ransac import estimate_relative_pose
from trianflow.geometry.pose import axis_angle_to_matrix, rotation_error_deg, translation_angle_deg

from .conftest import make_scene


@pytest.mark.parametrize("backend", ["opencv", "pycolmap", "torch"])
def test_backends_recover_pose_with_outliers(backend):
    s = make_scene(b=2, n=1500, noise=0.5, outliers=0.3, seed=5)
    r = estimate_relative_pose(s["x1"].float(), s["x2"].float(), s["K"].float(), backend=backend, seed=0)
    assert r.valid.all(), r.reason
    assert (rotation_error_deg(r.R.double(), s["R"]) < 0.05).all()
    assert (translation_angle_deg(r.t.double(), s["t"]) < 1.0).all()
    # inliers: most clean points, few of the gross outliers
    clean = ~s["outliers"]
    recall = (r.inliers & clean).sum(-1).double() / clean.sum(-1)
    assert (recall > 0.9).all()
    assert r.R.dtype == torch.float32 and r.inliers.shape == (2, 1500)


def test_backends_agree():
    s = make_scene(b=1, n=1000, noise=0.3, outliers=0.2, seed=7)
    Rs = {}
    for be in ("opencv", "pycolmap", "torch"):
        r = estimate_relative_pose(s["x1"], s["x2"], s["K"], backend=be)
        Rs[be] = (r.R, r.t)
    for be in ("pycolmap", "torch"):
        assert rotation_error_deg(Rs[be][0], Rs["opencv"][0]).max() < 0.05
        assert translation_angle_deg(Rs[be][1], Rs["opencv"][1]).max() < 1.0


def test_per_sample_validity_does_not_zero_the_batch():
    s = make_scene(b=3, n=400, noise=0.2, seed=2)
    valid = torch.ones(3, 400, dtype=torch.bool)
    valid[1, 5:] = False  # sample 1 has only 5 correspondences
    for be in ("opencv", "torch"):
        r = estimate_relative_pose(s["x1"], s["x2"], s["K"], valid=valid, backend=be)
        assert r.valid.tolist() == [True, False, True]
        assert "too few" in r.reason[1]
        assert torch.equal(r.R[1], torch.eye(3, dtype=r.R.dtype)) and r.t[1].abs().sum() == 0
        assert (rotation_error_deg(r.R[[0, 2]], s["R"][[0, 2]]) < 0.05).all()


def test_unknown_backend():
    s = make_scene(b=1, n=20)
    with pytest.raises(ValueError, match="unknown RANSAC backend"):
        estimate_relative_pose(s["x1"], s["x2"], s["K"], backend="nope")


def _narrow_forward_scene(seed, n=1500, plane_frac=0.8, noise=0.5, outliers=0.1, w=416, h=128):
    """KITTI-like training crop: forward motion, narrow field of view, most points on the road plane."""
    g = np.random.default_rng(seed)
    K = np.array([[0.6 * w, 0, w / 2], [0, 0.6 * w, h / 2], [0, 0, 1.0]])
    npl = int(4 * n * plane_frac)
    X = np.concatenate([
        np.stack([g.uniform(-8, 8, npl), np.full(npl, 1.5), g.uniform(4, 30, npl)], 1),
        np.stack([g.uniform(-10, 10, 4 * n - npl), g.uniform(-3, 1.4, 4 * n - npl), g.uniform(5, 40, 4 * n - npl)], 1),
    ])
    R = axis_angle_to_matrix(torch.tensor(g.normal(0, 0.02, 3))).numpy()
    t = np.array([g.normal(0, 0.1), g.normal(0, 0.05), 1.0])
    t /= np.linalg.norm(t)
    x1, x2 = X @ K.T, (X @ R.T + t) @ K.T
    x1, x2 = x1[:, :2] / x1[:, 2:], x2[:, :2] / x2[:, 2:]
    inside = np.all((x1 > 0) & (x1 < [w, h]) & (x2 > 0) & (x2 < [w, h]), 1)
    x1, x2 = x1[inside][:n] + g.normal(0, noise, (n, 2)), x2[inside][:n] + g.normal(0, noise, (n, 2))
    bad = g.random(n) < outliers
    x2[bad] += g.normal(0, 15, (int(bad.sum()), 2))
    return x1, x2, K, R, t


def test_torch_backend_on_noisy_narrow_forward_scenes_with_a_dominant_plane():
    """Batched torch RANSAC (8-point hypotheses + local optimisation of the best 16) finds the
    motion where plain best-of-8-point hypotheses failed in about half of such scenes."""
    scenes = [_narrow_forward_scene(s) for s in range(16)]
    x1, x2, K, R, t = (torch.tensor(np.stack(v)) for v in zip(*scenes))
    r = estimate_relative_pose(x1.float(), x2.float(), K.float(), backend="torch", threshold=1.0)
    t_err = translation_angle_deg(r.t.double(), t)
    assert r.valid.all()
    assert int((t_err > 5).sum()) <= 1, t_err
    assert float(t_err.median()) < 2.0, t_err
    assert float(rotation_error_deg(r.R.double(), R).median()) < 0.2
