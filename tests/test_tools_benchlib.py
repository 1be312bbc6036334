"""``tools/benchlib.py``, the helpers the benchmark tools share, and the rule that no tool imports another."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
SNIPPET = REPO.parent / "shared" / "data" / "kitti_odom_straight"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _imported_modules(path: Path) -> set:
    """Top-level names of every module ``path`` imports (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_tool_imports_another_tool():
    tools = {p.stem for p in TOOLS.glob("*.py")} - {"benchlib"}
    assert {"bench_vo", "bench_rotation", "bench_train", "bench_train_stereo"} <= tools
    for name in sorted(tools | {"benchlib"}):
        assert not _imported_modules(TOOLS / f"{name}.py") & tools, f"tools/{name}.py imports a tool"
    tree = ast.parse((TOOLS / "benchlib.py").read_text())
    top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert "main" not in top  # a module, not a tool
    assert not any(isinstance(n, ast.If) for n in tree.body)  # no `if __name__ == "__main__"`


def test_benchlib_is_light_to_import():
    code = (f"import sys; sys.path.insert(0, {str(TOOLS)!r}); import benchlib; "
            "print(sorted(m for m in ('torch', 'cv2', 'pycolmap', 'trianflow') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_vo_config_per_mode():
    lib = _load("benchlib")
    assert lib.vo_config("plain").refine == "none"
    ba = lib.vo_config("ba")
    assert ba.refine == "ba" and ba.ground_scale == "off"
    assert lib.vo_config("height", camera_height=1.7).camera_height == 1.7
    assert lib.vo_config("network", device="cpu").flow == "network"
    default = lib.vo_config("default")
    from trianflow.vo import VOConfig

    assert default == VOConfig()
    with pytest.raises(ValueError, match="unknown VO mode"):
        lib.vo_config("fast")


def test_load_sequence_synthetic_and_head():
    lib = _load("benchlib")
    seq = lib.load_sequence("synthetic", max_frames=3)
    assert len(seq) == 3 and seq.gt_poses.shape == (3, 4, 4) and seq.size == (192, 640)
    head = lib.HeadSequence(seq, 2)
    assert len(head) == 2 and head.gt_poses is None and head.size == seq.size
    np.testing.assert_array_equal(head.read(1), seq.read(1))
    assert len(lib.HeadSequence(seq, 10)) == 3


def test_trajectory_metrics_and_vo_accuracy():
    lib = _load("benchlib")
    from trianflow.data.synthetic import make_trajectory

    gt = make_trajectory(20, "forward_turn", step=1.0, seed=0)
    m = lib.trajectory_metrics(gt, gt)
    assert m["ate_rmse"] == pytest.approx(0.0, abs=1e-9) and m["path_length"] == pytest.approx(19.0)
    assert lib.path_length(gt) == pytest.approx(19.0)
    est = gt.copy()
    est[:, :3, 3] *= 2.0  # twice too long: Sim3 removes it, SE(3) does not
    res = SimpleNamespace(poses=est[:15], ground={"mode": "metric"})
    acc = lib.vo_accuracy(res, gt, metric=True)
    assert list(acc)[:9] == ["ate_rmse", "ate_pct_of_path", "kitti_t_err", "kitti_r_err", "kitti_segments",
                             "rpe_trans_rmse", "rpe_rot_rmse", "path_length", "scale"]
    assert acc["ate_rmse"] == pytest.approx(0.0, abs=1e-9) and acc["scale"] == pytest.approx(0.5)
    assert acc["length_ratio_unaligned"] == pytest.approx(2.0) and acc["ground"] == {"mode": "metric"}
    assert acc["se3_ate_rmse"] > 1.0 and acc["rot_err_deg_max"] == pytest.approx(0.0, abs=1e-6)
    assert "se3_ate_rmse" not in lib.vo_accuracy(res, gt)
    assert lib.ate_pct(est, gt) == pytest.approx(0.0, abs=1e-9)
    straight = make_trajectory(10, "straight")
    assert np.isnan(lib.ate_pct(straight, straight))  # no Sim3 alignment of a straight line


@pytest.mark.skipif(not SNIPPET.exists(), reason="shared KITTI snippet not available")
def test_write_replay_reverses_the_snippet(tmp_path):
    lib = _load("benchlib")
    from trianflow.data import open_sequence

    src = open_sequence(SNIPPET)
    idx = lib.REPLAYS["rev_3x"](len(src))
    assert idx[:3] == [len(src) - 1, len(src) - 4, len(src) - 7]
    seq = open_sequence(lib.write_replay(SNIPPET, idx[:4], tmp_path / "rev"))
    assert len(seq) == 4
    np.testing.assert_allclose(seq.gt_poses[0], np.eye(4), atol=1e-9)
    np.testing.assert_array_equal(seq.read(1), src.read(idx[1]))
    rel = np.linalg.inv(src.gt_poses[idx[0]]) @ src.gt_poses[idx[3]]
    np.testing.assert_allclose(seq.gt_poses[3], rel, atol=1e-9)
    assert sorted(lib.REPLAYS["hold_3"](7)) == [0, 0, 0, 1, 1, 1]
