import torch

from trianflow.geometry.sampling import correspondence_scores, sample_correspondences


def _flows(h=40, w=60, shift=2.0):
    f = torch.zeros(1, 2, h, w)
    f[:, 0] = shift
    return f, -f


def test_scores_follow_fb_distance_and_visibility():
    f, b = _flows()
    b2 = b.clone()
    b2[:, 1, 10:20, 10:20] += 1.0  # fb error of 1 px in a block
    s = correspondence_scores(f, b2)
    assert torch.allclose(s[0, 0, 0, 0], torch.tensor(10.0))  # 1/(0.1+0)
    inner = s[0, 0, 11:18, 9:17]
    assert torch.allclose(inner, torch.full_like(inner, 1 / 1.1), atol=1e-4)
    assert (s[0, 0, :, -2:] == 0).all()  # leaves image 2


def test_sampling_top_ratio_and_count():
    f, b = _flows(h=50, w=80)
    b[:, 1, :25] += 2.0  # top half is worse
    g = torch.Generator().manual_seed(0)
    c = sample_correspondences(f, b, num_samples=300, top_ratio=0.2, generator=g)
    assert c.x1.shape == (1, 300, 2) and c.valid.all()
    assert (c.x1[0, :, 1] >= 25).all(), "only the best 20 % (bottom half) may be sampled"
    assert torch.allclose(c.x2 - c.x1, torch.tensor([2.0, 0.0]).expand(1, 300, 2))
    assert len({tuple(p) for p in c.x1[0].tolist()}) == 300, "samples are distinct pixels"


def test_sampling_pads_with_invalid_when_too_few():
    f, b = _flows(h=10, w=10, shift=0.0)
    score = torch.zeros(1, 1, 10, 10)
    score[0, 0, 2, 3] = 1.0
    score[0, 0, 5, 5] = 2.0
    c = sample_correspondences(f, score=score, num_samples=50, top_ratio=1.0)
    assert int(c.valid.sum()) == 2
    assert {tuple(p) for p in c.x1[0][c.valid[0]].tolist()} == {(3.0, 2.0), (5.0, 5.0)}


def test_sampling_large_image_quantile_path_is_batched():
    h, w = 300, 800  # > 200k pixels: quantile path
    f = torch.zeros(2, 2, h, w)
    score = torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(1))
    c = sample_correspondences(f, score=score, num_samples=1000, top_ratio=0.2)
    assert c.valid.all()
    # all samples come from roughly the top 20 %
    assert float(c.score.min()) > 0.78
