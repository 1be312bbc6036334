"""The --smoke mode of every script in pipelines/ runs end to end on ../shared/data and writes its table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
NEEDS = {"evaluate_vo": ["kitti_odom_straight"], "kitti_trianflow": ["kitti_odom_straight", "kitti_stereo2012"],
         "kitti_stereo": ["kitti_stereo2012"]}


def _load(name):
    spec = importlib.util.spec_from_file_location(f"pipeline_{name}", ROOT / "pipelines" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_smoke(name, tmp_path, capsys):
    missing = [d for d in NEEDS[name] if not (SHARED / d).is_dir()]
    if missing:
        pytest.skip(f"../shared/data/{missing[0]} is absent (the smoke run reads it)")
    assert _load(name).main(["--smoke", "--out", str(tmp_path), "--threads", "1"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    md = (tmp_path / "results.md").read_text()
    assert "written:" in capsys.readouterr().out
    if name != "kitti_stereo":
        (row,) = res["vo"]
        assert row["sequence"] == "kitti_odom_straight" and row["frames"] == 12 and row["ate"] >= 0
        assert row["t_err"] is None and "shorter than" in row["note"]  # 13 m < the 100 m KITTI segments
        assert "| kitti_odom_straight | 12 |" in md
    if name != "evaluate_vo":
        d = res["depth"]
        assert d["n_images"] == 2 and d["crop"] == "garg" and 0 < d["abs_rel"] and 0 <= d["a1"] <= 1
        assert d["median_scaling"] == (name == "kitti_trianflow") and "abs_rel" in md
