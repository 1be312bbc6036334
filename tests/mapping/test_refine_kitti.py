"""`trianflow vo --refine ba` on the real KITTI snippet (first 16 frames) and its CLI options."""

import json
from pathlib import Path

import numpy as np
import pytest

from trianflow.cli import main

KITTI = Path(__file__).resolve().parents[3] / "shared" / "data" / "kitti_odom_straight"
needs_kitti = pytest.mark.skipif(not KITTI.is_dir(), reason=f"real KITTI snippet not found at {KITTI}")


@needs_kitti
def test_refine_ba_lowers_the_drift_on_real_footage(tmp_path, capsys):
    from trianflow.evaluation.trajectory import evaluate_trajectory
    from trianflow.io.trajectory import read_trajectory

    runs = {}
    for mode in ("none", "ba"):
        out = tmp_path / mode
        assert main(["vo", str(KITTI), "--max-frames", "16", "--out", str(out), "--refine", mode,
                     "--no-progress"]) == 0
        runs[mode] = out
    text = capsys.readouterr().out
    assert "bundle adjustment:" in text and "tracks.npz" in text
    _, gt = read_trajectory(KITTI / "poses.txt", fmt="kitti")
    ate = {m: evaluate_trajectory(read_trajectory(d / "poses.txt", fmt="kitti")[1], gt[:16]).ape_rmse
           for m, d in runs.items()}
    assert ate["ba"] < 0.7 * ate["none"], ate  # the issue asks for at least 30 % less
    meta = json.loads((runs["ba"] / "run.json").read_text())
    ref = meta["refine"]
    assert meta["config"]["refine"] == "ba" and ref["keyframes"][0] == 0 and len(ref["keyframes"]) >= 5
    assert ref["windows_adjusted"] >= len(ref["keyframes"]) - 3 and ref["final"] is None  # final adjustment off by default
    assert ref["K_final"] == ref["K_initial"]  # intrinsics held fixed by default
    with np.load(runs["ba"] / "tracks.npz") as z:
        assert len(z["xyz"]) > 1000 and set(np.unique(z["obs_frame"])) <= set(ref["keyframes"])
    assert not (runs["none"] / "tracks.npz").exists() and "refine" not in json.loads(
        (runs["none"] / "run.json").read_text())


def test_refine_options_need_refine_ba(tmp_path, capsys):
    for args in (["--refine", "none", "--refine-intrinsics"], ["--refine", "none", "--ba-window", "6"], ["--refine", "ba", "--ba-window", "0"]):
        rc = main(["vo", str(tmp_path), "--out", str(tmp_path / "o")] + args)
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and "ba" in err, (args, err)
