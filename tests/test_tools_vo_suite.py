"""``tools/bench_vo_suite.py``: the VO regression table over every sequence and replay."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def suite():
    return _load("bench_vo_suite")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data folder like ``../shared/data``: a KITTI-layout stereo sequence with GT and a folder that is
    not a sequence (left out)."""
    from trianflow.data.synthetic import synthetic_sequence, write_kitti_layout

    d = tmp_path_factory.mktemp("data")
    write_kitti_layout(synthetic_sequence(n_frames=9, size=(128, 384), seed=2, baseline=0.54), d / "syn", gray=True)
    (d / "not_a_sequence").mkdir()
    (d / "not_a_sequence" / "README.md").write_text("trajectories only\n")
    return d


def test_irregular_replay_strides():
    lib = _load("benchlib")
    assert lib.REPLAYS["irregular"](14) == [0, 1, 4, 6, 7, 10, 12, 13]
    assert lib.irregular_strides(1) == [0]


def test_suite_rows_json_and_markdown(suite, data, tmp_path, capsys):
    md = tmp_path / "table.md"
    assert suite.main(["--data", str(data), "--replays", "1x,irregular,rev", "--markdown", str(md),
                       "--", "--refine", "none"]) == 0
    out = capsys.readouterr().out.strip().split("\n\n")
    rows = [json.loads(line) for line in out[0].splitlines()]
    assert [(r["sequence"], r["replay"], r["frames"]) for r in rows] == [
        ("syn", "1x", 9), ("syn", "irregular", 5), ("syn", "rev", 9)]
    for r in rows:
        assert r["flags"] == "--refine none" and r["fps"] > 0
        assert math.isfinite(r["ate_pct"]) and r["ate_pct"] < 5.0, r  # exact synthetic GT: a working VO
        assert r["t_err"] is None  # a path of a few metres has no 100 m segment
    table = md.read_text()
    assert out[1].strip() == table.strip()
    assert table.splitlines()[0].startswith("| sequence | replay | frames | ATE %")
    assert len(table.splitlines()) == 2 + len(rows)


def test_suite_metric_flags_add_se3_and_length(suite, data, capsys):
    assert suite.main(["--data", str(data), "--replays", "rev", "--", "--refine", "none", "--stereo"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "error" not in row, row
    # metric: the replay keeps the right camera, so the path has its true length without alignment
    assert abs(row["length_ratio"] - 1.0) < 0.05 and row["se3_ate_pct"] < 5.0, row


def test_a_failed_run_is_a_row_with_its_error(suite, data, capsys):
    assert suite.main(["--data", str(data), "--replays", "1x", "--", "--samples", "3"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "exit code 2" in row["error"] and "--samples 3" in row["error"]


def test_unknown_sequence_or_replay_is_refused(suite, data, capsys):
    with pytest.raises(SystemExit):
        suite.main(["--data", str(data), "--sequences", "nope"])
    with pytest.raises(SystemExit):
        suite.main(["--data", str(data), "--replays", "4x"])
    assert "not a sequence" in capsys.readouterr().err


def test_stored_pycolmap_figures_join_the_same_frames(suite):
    stored = {"rows": {"syn/1x": {"frames": 9, "seconds": 18.0, "ate_pct": 0.5, "r_err": None}}}
    row = suite.with_peer({"sequence": "syn", "replay": "1x", "frames": 9, "fps": 3.0}, stored)
    assert row["colmap_ate_pct"] == 0.5 and np.isclose(row["speedup"], 6.0)  # 2 s vs 1/3 s per frame
    other = suite.with_peer({"sequence": "syn", "replay": "1x", "frames": 8, "fps": 3.0}, stored)
    assert "colmap_ate_pct" not in other  # stored for other frames: not comparable


def test_stored_figures_say_how_they_were_made(suite):
    stored = suite.load_stored()
    for key, entry in stored["rows"].items():
        assert {"frames", "seconds", "command", "measured"} <= set(entry), key
