import pytest
import torch

from trianflow.geometry.ransac import estimate_relative_pose
from trianflow.geometry.pose import rotation_error_deg, translation_angle_deg

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
