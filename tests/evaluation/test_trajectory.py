"""Tests for trianflow.evaluation.trajectory: equality with evo's APE/RPE, alignment, bad input."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trianflow.errors import InputError
from trianflow.evaluation.trajectory import TrajectoryMetrics, evaluate_trajectory
from trianflow.io.trajectory import write_kitti, write_tum

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "trajectories"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared trajectories not found at {DATA}")

# (estimate, ground truth, evo sub-command)
PAIRS = {
    "kitti00": ("KITTI_00_ORB.txt", "KITTI_00_gt.txt", "kitti"),
    "fr1_xyz": ("freiburg1_xyz-rgbdslam.txt", "freiburg1_xyz-groundtruth.txt", "tum"),
    "fr2_desk": ("fr2_desk_ORB.txt", "fr2_desk_groundtruth.txt", "tum"),
}
RTOL = 1e-9


def evo_results(pair: str, align: str, rotation: bool = True, delta=1, unit="frames", all_pairs=False):
    """APE / RPE results of evo's own API (the functions behind evo_ape / evo_rpe) on a pair."""
    from evo.core.metrics import PoseRelation, Unit
    from evo.main_ape import ape
    from evo.main_rpe import rpe
    from evo.tools import file_interface

    est_name, gt_name, kind = PAIRS[pair]
    read = file_interface.read_kitti_poses_file if kind == "kitti" else file_interface.read_tum_trajectory_file
    ref, est = read(str(DATA / gt_name)), read(str(DATA / est_name))
    if kind == "tum":
        ref, est = ref.sync_with(est, max_diff=0.01)  # as evo's CLI does (default --t_max_diff)
    kw = dict(align=align != "none", correct_scale=align == "sim3")
    evo_unit = {"frames": Unit.frames, "m": Unit.meters}[unit]
    out = {"ape": ape(copy.deepcopy(ref), copy.deepcopy(est), PoseRelation.translation_part, **kw)}
    rels = [("rpe_trans", PoseRelation.translation_part)]
    if rotation:
        rels.append(("rpe_rot", PoseRelation.rotation_angle_deg))
    for key, rel in rels:
        out[key] = rpe(
            copy.deepcopy(ref), copy.deepcopy(est), rel, delta=delta, delta_unit=evo_unit, all_pairs=all_pairs, **kw
        )
    return out


def check_against_evo(m: TrajectoryMetrics, ref: dict, align: str):
    a = ref["ape"].stats
    for k in ("rmse", "mean", "median", "std", "min", "max"):
        assert getattr(m, f"ape_{k}") == pytest.approx(a[k], rel=RTOL), k
    np.testing.assert_allclose(m.ape_errors, ref["ape"].np_arrays["error_array"], rtol=RTOL, atol=1e-12)
    for key in ("rpe_trans", "rpe_rot"):
        if key not in ref:
            continue
        st = ref[key].stats
        for k in ("rmse", "mean", "median", "max"):
            assert getattr(m, f"{key}_{k}") == pytest.approx(st[k], rel=RTOL), (key, k)
        np.testing.assert_allclose(
            getattr(m, f"{key}_errors"), ref[key].np_arrays["error_array"], rtol=RTOL, atol=1e-12
        )
    if align == "sim3":
        S = ref["ape"].np_arrays["alignment_transformation_sim3"]
        assert m.scale == pytest.approx(np.cbrt(np.linalg.det(S[:3, :3])), rel=RTOL)
        np.testing.assert_allclose(m.alignment, S, rtol=RTOL, atol=1e-12)
    else:
        assert m.scale == 1.0


@needs_data
@pytest.mark.parametrize("align", ["sim3", "se3", "none"])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_equals_evo(pair, align):
    est, gt, kind = PAIRS[pair]
    m = evaluate_trajectory(DATA / est, DATA / gt, align=align)
    # the RPE rotation angle does not depend on the alignment: check it once on the long KITTI run
    ref = evo_results(pair, align, rotation=(pair != "kitti00" or align == "sim3"))
    check_against_evo(m, ref, align)
    assert m.association == ("index" if kind == "kitti" else "timestamps")
    assert m.n_poses == ref["ape"].np_arrays["error_array"].shape[0]
    if pair == "kitti00":
        assert m.n_poses == 4541
        assert m.path_length == pytest.approx(3724.187, abs=1e-3)
        assert 0.5 < m.kitti_t_err < 1.0 and 0.15 < m.kitti_r_err < 0.35
    else:
        assert m.kitti_t_err is None and m.kitti_r_err is None and "shorter" in m.kitti_note


@needs_data
@pytest.mark.parametrize(
    "delta, unit, all_pairs",
    [(10, "frames", False), (10, "frames", True), (0.2, "m", False), (0.2, "m", True)],
)
def test_rpe_options_equal_evo(delta, unit, all_pairs):
    est, gt, _ = PAIRS["fr1_xyz"]
    m = evaluate_trajectory(DATA / est, DATA / gt, align="sim3", rpe_delta=delta, rpe_unit=unit, rpe_all_pairs=all_pairs)
    check_against_evo(m, evo_results("fr1_xyz", "sim3", delta=delta, unit=unit, all_pairs=all_pairs), "sim3")
    assert m.rpe_all_pairs is all_pairs and m.rpe_delta == delta and m.rpe_unit == unit


@needs_data
def test_equals_evo_command_line(tmp_path):
    """Run the evo_ape / evo_rpe executables themselves and compare their saved results."""
    from evo.tools import file_interface

    bindir = Path(sys.executable).parent
    if not (bindir / "evo_ape").exists():
        pytest.skip(f"evo_ape not found next to {sys.executable}")
    env = dict(os.environ, HOME=str(tmp_path), MPLBACKEND="Agg")
    est, gt, _ = PAIRS["fr2_desk"]
    runs = {
        "ape": [str(bindir / "evo_ape"), "tum", str(DATA / gt), str(DATA / est), "-as"],
        "rpe_trans": [str(bindir / "evo_rpe"), "tum", str(DATA / gt), str(DATA / est), "-as", "--delta", "5"],
        "rpe_rot": [str(bindir / "evo_rpe"), "tum", str(DATA / gt), str(DATA / est), "-as", "-r", "angle_deg",
                    "--delta", "5"],
    }
    ref = {}
    for key, cmd in runs.items():
        zip_path = tmp_path / f"{key}.zip"
        subprocess.run(cmd + ["--save_results", str(zip_path), "--no_warnings"], env=env, check=True,
                       capture_output=True, timeout=120)
        ref[key] = file_interface.load_res_file(str(zip_path))
    m = evaluate_trajectory(DATA / est, DATA / gt, align="sim3", rpe_delta=5)
    check_against_evo(m, ref, "sim3")


def smooth_trajectory(n: int, step: float = 1.5, seed: int = 0) -> np.ndarray:
    """A curvy, non-planar camera trajectory (N,4,4) of n poses, ~step metres apart."""
    rng = np.random.default_rng(seed)
    P = np.tile(np.eye(4), (n, 1, 1))
    for i in range(1, n):
        a, b = 0.02 * math.sin(i / 40.0), 0.005 * math.cos(i / 25.0)
        ca, sa, cb, sb = math.cos(a), math.sin(a), math.cos(b), math.sin(b)
        Ry = np.array([[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]])
        Rx = np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]])
        T = np.eye(4)
        T[:3, :3] = Ry @ Rx
        T[:3, 3] = [0.0, 0.02 * rng.normal(), step]
        P[i] = P[i - 1] @ T
    return P


def test_sim3_transformed_copy_is_perfect():
    gt = smooth_trajectory(300)
    s = 0.37  # monocular scale
    A = np.eye(4)
    c, sn = math.cos(0.7), math.sin(0.7)
    A[:3, :3] = [[c, -sn, 0], [sn, c, 0], [0, 0, 1]]
    A[:3, 3] = [3.0, -2.0, 10.0]
    est = gt.copy()
    est[:, :3, 3] *= s
    est = A @ est
    m = evaluate_trajectory(est, gt, align="sim3")
    assert m.scale == pytest.approx(1 / s, rel=1e-9)
    assert m.ape_rmse < 1e-9 and m.rpe_trans_rmse < 1e-9 and m.rpe_rot_rmse < 1e-5
    assert m.kitti_t_err == pytest.approx(0.0, abs=1e-9) and m.kitti_r_err == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(m.est_xyz, gt[:, :3, 3], atol=1e-8)
    # without scale correction the error is large and the KITTI drift shows the scale error
    m3 = evaluate_trajectory(est, gt, align="se3")
    assert m3.scale == 1.0 and m3.ape_rmse > 1.0
    # per segment the error translation is (1 - s) * chord(first, last): t_err = 100 (1-s) mean(chord / L)
    from trianflow.evaluation.kitti_odometry import segment_errors

    seg = segment_errors(gt, gt)
    f, last, L = seg[:, 0].astype(int), seg[:, 1].astype(int), seg[:, 2]
    chord = np.linalg.norm(gt[last, :3, 3] - gt[f, :3, 3], axis=1)
    assert m3.kitti_t_err == pytest.approx(100 * (1 - s) * np.mean(chord / L), rel=1e-9)
    mn = evaluate_trajectory(est, gt, align="none")
    assert mn.ape_rmse > m3.ape_rmse
    np.testing.assert_allclose(mn.alignment, np.eye(4))


def test_gt_longer_than_estimate_uses_prefix_and_notes_it():
    gt = smooth_trajectory(200, seed=1)
    est = gt[:150].copy()
    est[:, :3, 3] += np.random.default_rng(2).normal(scale=0.1, size=(150, 3))
    m = evaluate_trajectory(est, gt, align="se3")
    ref = evaluate_trajectory(est, gt[:150], align="se3")
    assert m.n_poses == 150 and m.n_gt == 200 and m.n_est == 150
    assert m.ape_rmse == ref.ape_rmse and m.rpe_trans_rmse == ref.rpe_trans_rmse
    assert any("first 150 GT poses" in note for note in m.notes)
    assert not ref.notes


def test_estimate_longer_than_gt_is_an_error(tmp_path):
    gt = smooth_trajectory(50)
    write_kitti(tmp_path / "gt.txt", gt)
    write_kitti(tmp_path / "est.txt", smooth_trajectory(60))
    with pytest.raises(InputError, match=r"est\.txt has 60 poses but .*gt\.txt only 50"):
        evaluate_trajectory(tmp_path / "est.txt", tmp_path / "gt.txt")


def test_no_overlapping_timestamps(tmp_path):
    P = smooth_trajectory(30)
    write_tum(tmp_path / "est.tum", 100.0 + 0.1 * np.arange(30), P)
    write_tum(tmp_path / "gt.tum", 500.0 + 0.1 * np.arange(30), P)
    with pytest.raises(InputError) as info:
        evaluate_trajectory(tmp_path / "est.tum", tmp_path / "gt.tum")
    msg = str(info.value)
    assert "no overlapping timestamps" in msg and "est.tum" in msg and "gt.tum" in msg
    assert "--max-diff" in msg and "same sequence" in msg
    # a large enough max_diff associates them (each pose with the nearest stamp on the other side)
    m = evaluate_trajectory(tmp_path / "est.tum", tmp_path / "gt.tum", max_diff=1000.0, align="none")
    assert m.association == "timestamps" and m.n_poses == 30


def test_timestamp_association_with_offset_rates(tmp_path):
    # GT at 100 Hz, estimate at 10 Hz with 2 ms jitter: every estimate pose finds its GT pose
    gt = smooth_trajectory(1000, step=0.15)
    t_gt = 50.0 + 0.01 * np.arange(1000)
    idx = np.arange(0, 1000, 10)
    t_est = t_gt[idx] + 0.002
    write_tum(tmp_path / "gt.tum", t_gt, gt)
    write_tum(tmp_path / "est.tum", t_est, gt[idx])
    m = evaluate_trajectory(tmp_path / "est.tum", tmp_path / "gt.tum", align="sim3")
    assert m.n_poses == 100 and m.association == "timestamps"
    assert m.ape_rmse < 1e-9 and m.scale == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(m.timestamps, t_gt[idx])


def test_mixed_timestamps_match_by_index(tmp_path):
    gt = smooth_trajectory(40)
    write_kitti(tmp_path / "gt.txt", gt)
    write_tum(tmp_path / "est.tum", np.arange(40) * 0.1, gt)
    m = evaluate_trajectory(tmp_path / "est.tum", tmp_path / "gt.txt", align="se3")
    assert m.association == "index" and any("only one trajectory has timestamps" in n for n in m.notes)
    assert m.ape_rmse < 1e-9


def test_degenerate_and_invalid_inputs():
    line = np.tile(np.eye(4), (20, 1, 1))
    line[:, 2, 3] = np.arange(20.0)
    with pytest.raises(InputError, match="--align none"):
        evaluate_trajectory(line, line, align="sim3")
    m = evaluate_trajectory(line, line, align="none")
    assert m.ape_rmse == 0.0 and m.kitti_t_err is None
    with pytest.raises(InputError, match="unknown alignment"):
        evaluate_trajectory(line, line, align="sim2")
    with pytest.raises(InputError, match="integer"):
        evaluate_trajectory(line, line, align="none", rpe_delta=1.5)
    with pytest.raises(InputError, match="no pose pairs"):
        evaluate_trajectory(line, line, align="none", rpe_delta=50)
    bad = smooth_trajectory(20)
    bad[5, :3, :3] *= 1.1  # not a rotation
    with pytest.raises(InputError, match="not valid rotation matrices"):
        evaluate_trajectory(bad, smooth_trajectory(20), align="se3")
    with pytest.raises(InputError, match="need at least 3"):
        evaluate_trajectory(smooth_trajectory(2), smooth_trajectory(2), align="sim3")


def test_to_dict_is_json_serialisable():
    gt = smooth_trajectory(120)
    est = gt.copy()
    est[:, :3, 3] += 0.05
    m = evaluate_trajectory(est, gt, align="se3")
    d = m.to_dict()
    for key in ("ape_rmse", "ape_mean", "rpe_trans_rmse", "rpe_rot_rmse", "kitti_t_err", "kitti_r_err", "align",
                "scale", "n_poses", "path_length"):
        assert key in d
    assert "ape_errors" not in d
    s = json.dumps(d)
    assert json.loads(s)["align"] == "se3"
    full = json.loads(json.dumps(m.to_dict(include_arrays=True)))
    assert len(full["ape_errors"]) == 120 and len(full["est_xyz"]) == 120
    np.testing.assert_allclose(full["ape_errors"], m.ape_errors)


def test_kitti_lengths_give_the_drift_of_short_paths():
    gt = smooth_trajectory(300)
    path = float(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1).sum())
    est = gt.copy()
    est[:, :3, 3] += np.random.default_rng(3).normal(scale=0.05, size=(300, 3))
    from trianflow.evaluation.kitti_odometry import kitti_odometry_error

    short = (path / 4, path / 2)
    m = evaluate_trajectory(est, gt, align="none", kitti_lengths=short)
    ref = kitti_odometry_error(gt, est, lengths=short)
    assert m.kitti_n_segments == ref.n_segments > 0
    assert m.kitti_t_err == pytest.approx(ref.t_err) and m.kitti_r_err == pytest.approx(ref.r_err)
    # the default lengths differ from these: another number (or none for a path under 100 m)
    d = evaluate_trajectory(est, gt, align="none")
    assert d.kitti_n_segments != m.kitti_n_segments
    for bad in ((), (0.0,), (-5.0, 10.0), (float("nan"),)):
        with pytest.raises(InputError, match="segment lengths"):
            evaluate_trajectory(est, gt, kitti_lengths=bad)
