"""`trianflow report`: self-contained HTML with embedded PNGs and the right metrics, PNG set,
explicit GT, moved input, no GT, bad input."""

import base64
import json
import re
import shutil

import pytest

from trianflow.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from trianflow.data.synthetic import synthetic_sequence, write_kitti_layout

    d = tmp_path_factory.mktemp("report")
    seq_dir = write_kitti_layout(synthetic_sequence(n_frames=8, size=(128, 384), seed=5), d / "seq")
    out = d / "run"
    assert main(["vo", str(seq_dir), "--out", str(out), "--refine", "ba", "--no-progress"]) == 0
    return {"seq": seq_dir, "run": out}


def _pngs(html):
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def test_html_report_is_self_contained_with_metrics(run, tmp_path, capsys):
    from trianflow.evaluation.trajectory import evaluate_trajectory
    from trianflow.io.trajectory import read_trajectory
    from trianflow.run_dir import load_run

    out = tmp_path / "r.html"
    assert main(["report", str(run["run"]), "--out", str(out), "--frames", "2"]) == 0
    printed = capsys.readouterr().out
    html = out.read_text()
    pngs = _pngs(html)
    assert len(pngs) == 2 + 2  # trajectory, per-frame plot, two frames
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 5000 for p in pngs)
    assert "src='http" not in html and "src=\"http" not in html  # nothing to fetch
    r = load_run(run["run"])
    _, gt = read_trajectory(run["seq"] / "poses.txt", fmt="kitti")
    m = evaluate_trajectory(r.poses, gt, align="sim3")
    assert f"{m.ape_rmse:.4f}" in html and f"{m.ape_rmse:.4f}" in printed
    for key in ("APE RMSE", "RPE rotation", "frame status", "bundle adjustment", "sparse triangulated depth"):
        assert key in html, key
    assert "Note:" not in html  # input and GT were found


def test_png_report_and_explicit_gt(run, tmp_path):
    gt = tmp_path / "gt.txt"
    shutil.copy(run["seq"] / "poses.txt", gt)
    out = tmp_path / "png"
    assert main(["report", str(run["run"]), "--format", "png", "--out", str(out), "--gt", str(gt),
                 "--frames", "1"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names[:2] == ["frame_000000.png", "frames.png"] and "trajectory.png" in names and "metrics.json" in names
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["metrics"]["align"] == "sim3" and meta["metrics"]["ape_rmse"] > 0
    assert str(gt) in meta["table"]["ground truth"]


def test_report_when_the_input_moved_and_without_gt(run, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(run["seq"], moved)
    run2 = tmp_path / "run2"
    shutil.copytree(run["run"], run2)
    meta = json.loads((run2 / "run.json").read_text())
    meta["input"]["path"] = str(tmp_path / "gone")
    (run2 / "run.json").write_text(json.dumps(meta))
    assert main(["report", str(run2)]) == 0
    text = capsys.readouterr().out
    assert "cannot open the input sequence" in text and "no ground truth" in text
    html = (run2 / "report.html").read_text()
    assert len(_pngs(html)) == 2 and "APE RMSE" not in html  # top view + per-frame plot only
    assert main(["report", str(run2), "--sequence", str(moved)]) == 0
    assert len(_pngs((run2 / "report.html").read_text())) == 2 + 3


def test_report_bad_input(run, tmp_path, capsys):
    rc = main(["report", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "no such run directory" in err
    rc = main(["report", str(run["run"]), "--gt", str(tmp_path / "missing_gt.txt"), "--out", str(tmp_path / "x.html")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err
    rc = main(["report", str(run["run"]), "--out", str(tmp_path)])
    assert rc == 2 and "is a folder" in capsys.readouterr().err


def test_report_lists_and_draws_loop_closures(run, tmp_path):
    from trianflow.report import _trajectory_figure, collect_report, run_loops

    run2 = tmp_path / "run_loop"
    shutil.copytree(run["run"], run2)
    meta = json.loads((run2 / "run.json").read_text())
    assert meta["loops"]["accepted"] == 0  # the default ran the loop closure; 8 frames hold no revisit
    meta["loops"] = {**meta["loops"], "accepted": 1, "verified": 2, "max_correction": 0.25,
                     "loops": [{"query": 7, "candidate": 1, "inliers": 120}]}
    (run2 / "run.json").write_text(json.dumps(meta))
    data = collect_report(run2)
    assert run_loops(data.run) == [(7, 1)]
    ax = _trajectory_figure(data).axes[0]
    assert any(ln.get_label().startswith("loop closures (1)") for ln in ax.get_lines())
    html = tmp_path / "r.html"
    assert main(["report", str(run2), "--out", str(html), "--frames", "0"]) == 0
    text = html.read_text()
    assert "loop closure" in text and "7\u21941" in text
