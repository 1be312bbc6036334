"""The Python API at the top of the package: the README example runs, bad input raises InputError."""

import re
from pathlib import Path

import numpy as np
import pytest

import trianflow as tf
from trianflow import InputError

ROOT = Path(__file__).resolve().parents[1]
KITTI = ROOT.parent / "shared" / "data" / "kitti_odom_straight"


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Use from Python\n", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "the '## Use from Python' section has no python code block"
    return m.group(1)


@pytest.mark.skipif(not KITTI.is_dir(), reason=f"real KITTI snippet not found at {KITTI}")
def test_readme_example_runs(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    exec(compile(_readme_example(), "README.md:Use from Python", "exec"), {"__name__": "__readme__"})
    assert "ATE" in capsys.readouterr().out


def test_public_names_resolve():
    for name in tf.__all__:
        assert getattr(tf, name) is not None, name
    assert tf.VOConfig().refine == "ba"
    with pytest.raises(AttributeError):
        tf.no_such_thing  # noqa: B018


@pytest.fixture(scope="module")
def syn_folder(tmp_path_factory):
    from trianflow.data.synthetic import synthetic_sequence, write_kitti_layout

    d = tmp_path_factory.mktemp("syn")
    return write_kitti_layout(synthetic_sequence(n_frames=5, size=(128, 384), seed=2), d / "seq")


def test_run_vo_on_a_path_with_options(syn_folder):
    res = tf.run_vo(syn_folder, refine="none")
    assert res.poses.shape == (5, 4, 4) and res.config.refine == "none"
    m = tf.evaluate_trajectory(res, tf.open_sequence(syn_folder))
    assert m.n_poses == 5 and m.ape_rmse < 0.05 * m.path_length
    seen = []
    tf.run_vo(tf.open_sequence(syn_folder), {"refine": "none"}, observer=lambda i, img, pose, info, vo: seen.append(i))
    assert seen == list(range(5))


def test_intrinsics_from_fov():
    K = tf.intrinsics_from_fov(90, (480, 640))
    assert K[0, 0] == pytest.approx(320) and K[1, 1] == pytest.approx(320)
    assert K[0, 2] == pytest.approx(319.5) and K[1, 2] == pytest.approx(239.5)
    for bad in (10, 170, 5, 180, float("nan"), "wide"):
        with pytest.raises(InputError, match="field of view"):
            tf.intrinsics_from_fov(bad, (480, 640))


def test_open_sequence_with_fov(syn_folder):
    seq = tf.open_sequence(syn_folder, fov=60)
    H, W = seq.size
    assert seq.K[0, 0] == pytest.approx((W / 2) / np.tan(np.radians(30)))
    with pytest.raises(InputError, match="only one"):
        tf.open_sequence(syn_folder, "100,100,50,50", fov=60)


@pytest.mark.parametrize("call, match", [
    (lambda s: tf.open_sequence(s.parent / "missing"), "no such"),
    (lambda s: tf.run_vo(s, refine="bogus"), "refine"),
    (lambda s: tf.run_vo(s, refin="none"), "did you mean 'refine'"),
    (lambda s: tf.run_vo(s, config=3), "VOConfig"),
    (lambda s: tf.run_vo(42), "FrameSequence"),
    (lambda s: tf.run_vo(s, stereo=True), "right camera"),
    (lambda s: tf.run_vo(s, flow=s / "nope.pt"), "no such flow checkpoint"),
    (lambda s: tf.load_depth_model(s / "nope.pt"), "no such depth checkpoint"),
    (lambda s: tf.evaluate_trajectory(np.zeros((3, 4, 4)), np.zeros((2, 4, 4))), "only 2"),
    (lambda s: tf.evaluate_trajectory(np.zeros((3, 3)), np.zeros((3, 4, 4))), "(N,4,4)"),
    (lambda s: tf.estimate_two_view(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 40, 3), np.uint8), np.eye(3)),
     "differ in size"),
    (lambda s: tf.estimate_two_view(s / "a.png", s / "b.png", np.eye(3)), "no such image"),
    (lambda s: tf.estimate_two_view(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)), "one of them"),
    (lambda s: tf.load_run(s), "run.json"),
])
def test_bad_input_raises_input_error(syn_folder, call, match):
    with pytest.raises(InputError, match=re.escape(match)):
        call(syn_folder)


def test_estimate_two_view_from_paths(syn_folder):
    seq = tf.open_sequence(syn_folder)
    files = sorted((syn_folder / "image_2").glob("*.png"))
    est = tf.estimate_two_view(files[0], files[1], seq.K)
    assert est.status == "ok" and est.inliers > 50
    assert abs(np.linalg.norm(est.t) - 1) < 1e-6
    by_fov = tf.estimate_two_view(seq.read(0), seq.read(1), fov=90)
    assert by_fov.R.shape == (3, 3)
