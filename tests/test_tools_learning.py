"""The measurement tools of the real recipe: ``tools/eval_real_recipe.py`` on a few real KITTI validation
frames, and ``tools/gpu_check.py`` (``make gpu-check``) without a GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fundamental_from_pose_is_epipolar():
    tool = _load("eval_real_recipe")
    rng = np.random.default_rng(0)
    K = np.array([[200.0, 0, 100], [0, 200, 60], [0, 0, 1]])
    R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R *= np.sign(np.linalg.det(R))
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = [0.1, -0.05, -1.0]
    X1 = rng.uniform([-3, -2, 4], [3, 2, 20], size=(50, 3))
    X2 = X1 @ R.T + T[:3, 3]
    x1 = (X1 / X1[:, 2:]) @ K.T
    x2 = (X2 / X2[:, 2:]) @ K.T
    F = tool.fundamental_from_pose(T, K)
    lines = x1 @ F.T  # epipolar lines of x1 in image 2
    dist = np.abs(np.sum(x2 * lines, axis=1)) / np.hypot(lines[:, 0], lines[:, 1])
    assert dist.max() < 1e-6  # pixels


@pytest.mark.skipif(not (DATA / "kitti_03_first400").is_dir(), reason="../shared/data is not here")
def test_eval_real_recipe_on_a_few_validation_frames(tmp_path, capsys):
    tool = _load("eval_real_recipe")
    torch.manual_seed(0)
    rc = tool.main(["--val-range", "300", "310", "--flow", "untrained", "--depth", "untrained", "--depth-every", "4"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["val_range"] == [300, 310] and out["flow"]["pairs"] == 9
    dis, net = out["flow"]["dis_medium"], out["flow"]["network"]
    # DIS on real frames: most selected matches agree with the GT epipolar geometry; random weights do not
    assert dis["sampson_lt1"] > 0.6 and net["sampson_lt1"] < dis["sampson_lt1"]
    assert dis["photometric"] < net["photometric"]
    d = out["depth"]
    assert d["stereo2012"]["images"] == 2 and 0 < d["stereo2012"]["abs_rel"] < 5
    assert d["triangulated_val"]["pairs"] >= 1 and d["triangulated_val"]["points_per_pair"] > 50
    vo = out["vo"]
    assert set(vo) == {"dis", "dis_refine_none"}  # no network VO for untrained weights
    assert vo["dis"]["ate_pct"] < 5
    assert tool.main(["--val-range", "300", "305", "--skip", "flow,vo"]) == 2  # fewer than 10 frames
    assert "fewer than 10 frames" in capsys.readouterr().err


def test_gpu_check_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: make gpu-check runs for real")
    r = subprocess.run([sys.executable, "tools/gpu_check.py"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["cuda"] is False and "needs one GPU" in out["error"]
    r = subprocess.run([sys.executable, "tools/gpu_check.py", "--parts", "cuda_tests,warp"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown part 'warp'" in r.stderr
    gc = _load("gpu_check")
    assert gc._last_json('noise\n{"a": 1}\nmore {bad\n') == {"a": 1}
