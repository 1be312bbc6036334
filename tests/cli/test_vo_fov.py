"""`trianflow vo --fov DEG`: a pinhole K from the horizontal field of view, and its bad input."""

import json

import numpy as np
import pytest

from trianflow.cli import main


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from trianflow.data.synthetic import synthetic_sequence, write_kitti_layout

    d = tmp_path_factory.mktemp("fov")
    seq = write_kitti_layout(synthetic_sequence(n_frames=4, size=(128, 384), seed=2), d / "seq")
    folder = d / "imgs"
    folder.mkdir()
    for i, f in enumerate(sorted((seq / "image_2").glob("*.png"))):
        (folder / f"frame{i}.png").write_bytes(f.read_bytes())
    return folder


def test_vo_fov_gives_pinhole_k(image_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["vo", str(image_folder), "--fov", "90", "--refine", "none", "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "run.json").read_text())
    intr = meta["intrinsics"]
    assert meta["fov_deg"] == 90
    assert intr["fx"] == pytest.approx(192.0) and intr["fy"] == pytest.approx(192.0)
    assert intr["cx"] == pytest.approx(191.5) and intr["cy"] == pytest.approx(63.5)
    assert np.loadtxt(out / "poses.txt").shape == (4, 12)


@pytest.mark.parametrize("argv, match", [
    (["--fov", "10"], "between 10 and 170"),
    (["--fov", "170"], "between 10 and 170"),
    (["--fov", "-5"], "between 10 and 170"),
    (["--fov", "nan"], "between 10 and 170"),
    (["--fov", "60", "--intrinsics", "100,100,50,50"], "only one"),
])
def test_vo_fov_bad_input(image_folder, tmp_path, capsys, argv, match):
    out = tmp_path / "run"
    assert main(["vo", str(image_folder), *argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and match in err
    assert not out.exists()
