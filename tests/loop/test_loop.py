"""Loop closure: the Sim(3) pose graph, the appearance index, the geometric verification and the
correction, on a synthetic drive around a block (exact ground truth) and on real KITTI frames."""

from pathlib import Path

import numpy as np
import pytest

from trianflow.data.synthetic import synthetic_sequence
from trianflow.evaluation.trajectory import evaluate_trajectory
from trianflow.loop import (LoopConfig, PlaceConfig, PlaceDatabase, PoseGraphEdge, Sim3, close_loops,
                            optimize_pose_graph, path_length, verify_loop)
from trianflow.loop.pose_graph import compose, inverse, sim3_from_pose

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def test_sim3_compose_inverse():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    a = (rng.uniform(0.5, 2, 4), Rotation.random(4, random_state=1).as_matrix(), rng.normal(size=(4, 3)))
    e = compose(a, inverse(a))
    assert np.allclose(e[0], 1) and np.allclose(e[1], np.eye(3)) and np.allclose(e[2], 0, atol=1e-12)
    X = rng.normal(size=3)
    b = (np.array([1.5]), Rotation.random(1, random_state=2).as_matrix(), rng.normal(size=(1, 3)))
    ab = compose((a[0][:1], a[1][:1], a[2][:1]), b)
    direct = a[0][0] * a[1][0] @ (b[0][0] * b[1][0] @ X + b[2][0]) + a[2][0]
    assert np.allclose(ab[0][0] * ab[1][0] @ X + ab[2][0], direct)


def _circle(n=60, radius=10.0):
    poses = np.tile(np.eye(4), (n, 1, 1))
    for k in range(n):
        phi = 2 * np.pi * k / n
        poses[k, :3, :3] = _rot_y(phi)
        poses[k, :3, 3] = [radius - radius * np.cos(phi), 0, radius * np.sin(phi)]
    return poses


def _drifted(gt, scale_drift=0.01, yaw_drift_deg=0.3):
    """The GT's relative motions with a growing scale and a yaw bias per step, integrated."""
    out = [np.eye(4)]
    for k in range(1, len(gt)):
        rel = np.linalg.inv(gt[k - 1]) @ gt[k]
        rel[:3, 3] *= (1 + scale_drift) ** k
        rel[:3, :3] = _rot_y(np.radians(yaw_drift_deg)) @ rel[:3, :3]
        out.append(out[-1] @ rel)
    return np.stack(out)


def test_pose_graph_closes_a_drifted_circle():
    gt = _circle()
    est = _drifted(gt)
    n = len(gt)
    nodes = [sim3_from_pose(p) for p in est]
    edges = [PoseGraphEdge(i, i + 1, sim3_from_pose(np.linalg.inv(est[i]) @ est[i + 1])) for i in range(n - 1)]
    # the loop: the last camera seen from the first, in the first camera's (true) scale
    rel = np.linalg.inv(gt[0]) @ gt[-1]
    s_last = (1 + 0.01) ** (n - 1)  # the drifted map is this much larger at the end
    edges.append(PoseGraphEdge(0, n - 1, Sim3(1.0 / s_last, rel[:3, :3], rel[:3, 3])))
    new, info = optimize_pose_graph(nodes, edges, step=float(np.linalg.norm(gt[1, :3, 3])))
    assert info["optimized"] and info["final_cost"] < 0.05 * info["initial_cost"]
    assert np.allclose(new[0].matrix(), nodes[0].matrix())  # the gauge
    end_before = np.linalg.norm(est[-1, :3, 3] - gt[-1, :3, 3])
    end_after = np.linalg.norm(new[-1].t - gt[-1, :3, 3])
    assert end_after < 0.1 * end_before
    assert new[-1].s == pytest.approx(1 / s_last, rel=0.05)
    # with no loop edge nothing moves
    same, _ = optimize_pose_graph(nodes, edges[:-1], step=1.0)
    assert max(np.abs(a.t - b.t).max() for a, b in zip(same, nodes)) < 1e-6


def test_optimize_pose_graph_trivial_inputs():
    nodes = [sim3_from_pose(np.eye(4))]
    out, info = optimize_pose_graph(nodes, [])
    assert out == nodes and info["optimized"] is False


@pytest.fixture(scope="module")
def block_loop():
    """A drive 1.3 times round a block (exact GT), every 3rd frame described as a place."""
    seq = synthetic_sequence(90, kind="loop", step=1.0, seed=0)
    db = PlaceDatabase(PlaceConfig(min_gap_frames=30))
    for i in range(0, len(seq), 3):
        db.add(i, seq.read(i))
    return seq, db


def test_places_described_in_the_background_equal_the_synchronous_ones(block_loop):
    seq, db = block_loop
    bg = PlaceDatabase(db.cfg, background=True)
    for i in range(0, len(seq), 3):
        bg.add_later(i, seq.read(i))
    assert len(bg) == len(db)  # waits for the background thread
    assert bg.candidates() == db.candidates()
    bg.add(len(seq), seq.read(0))  # a synchronous add after background ones keeps the order
    bg.close()
    assert [p.frame for p in bg.places] == [p.frame for p in db.places] + [len(seq)]
    for a, b in zip(bg.places, db.places):
        assert np.array_equal(a.xy, b.xy) and np.array_equal(a.desc, b.desc)


def _ate(poses, gt):
    return evaluate_trajectory(poses, gt).ape_rmse


def test_loop_found_verified_and_corrected_on_a_synthetic_block(block_loop):
    seq, db = block_loop
    gt = seq.gt_poses
    est = _drifted(gt, scale_drift=0.004, yaw_drift_deg=0.25)
    cfg = LoopConfig(places=db.cfg)
    res = close_loops(est, db, seq.K, cfg)
    s = res.summary
    assert s["accepted"] >= 2, s
    lap = 90 / 1.3
    for lp in s["loops"]:  # every loop pairs a frame of the second lap with its place on the first
        assert lp["query"] - lp["candidate"] == pytest.approx(lap, abs=8)
        assert lp["inliers"] >= 40
        assert lp["correction_m"] > 0
    assert {"proposals", "verified", "graph", "max_correction", "seconds"} <= set(s)
    before, after = _ate(est, gt), _ate(res.poses, gt)
    assert after < 0.5 * before, (before, after)
    assert res.scale.shape == (len(gt),) and np.all(res.scale > 0)


def test_no_loop_on_the_first_lap(block_loop):
    seq, db = block_loop
    first = PlaceDatabase(db.cfg)
    first.places = [p for p in db.places if p.frame <= 45]  # half a lap: no place is seen twice
    gt = seq.gt_poses[:46]
    res = close_loops(gt, first, seq.K, LoopConfig(places=db.cfg))
    assert res.summary["accepted"] == 0 and not res.loops
    assert np.array_equal(res.poses, gt) and np.all(res.scale == 1)


def test_verify_rejects_a_place_seen_from_far_down_the_road(block_loop):
    """Two frames a few metres apart on the first lap match well, but they are not a revisit."""
    seq, db = block_loop
    gt = seq.gt_poses
    dist = path_length(gt)
    q = next(k for k, p in enumerate(db.places) if p.frame == 12)
    c = next(k for k, p in enumerate(db.places) if p.frame == 9)
    edge, why = verify_loop(db.places, q, c, gt, seq.K, dist)
    assert edge is None and "not a revisit" in why
    # the revisit itself is accepted, with the GT scale (1) and the GT relative pose
    q2 = next(k for k, p in enumerate(db.places) if p.frame == 75)
    c2 = int(np.argmin([np.linalg.norm(gt[p.frame, :3, 3] - gt[75, :3, 3]) if p.frame < 40 else np.inf
                        for p in db.places]))
    edge, why = verify_loop(db.places, q2, c2, gt, seq.K, dist)
    assert edge is not None, why
    assert edge.scale == pytest.approx(1.0, abs=0.05)
    T = np.linalg.inv(gt[75]) @ gt[db.places[c2].frame]  # candidate camera -> query camera
    assert np.linalg.norm(edge.t - T[:3, 3]) < 0.25  # metres, with the points 5-30 m away
    cos = (np.trace(edge.R.T @ T[:3, :3]) - 1) / 2
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 1.0


@pytest.mark.skipif(not (SHARED / "kitti_03_first400").is_dir(), reason="needs ../shared/data/kitti_03_first400")
def test_no_loop_accepted_on_real_kitti_03_without_a_revisit():
    """285 m of real road that never comes back: every 3rd frame as a place, GT poses."""
    from trianflow.data import open_sequence

    seq = open_sequence(SHARED / "kitti_03_first400")
    db = PlaceDatabase()
    idx = list(range(0, len(seq), 3))
    for i in idx:
        db.add(i, seq.read(i))
    gt = np.asarray(seq.gt_poses)
    res = close_loops(gt, db, seq.K)
    assert res.summary["keyframes"] == len(idx)
    assert res.summary["accepted"] == 0, res.summary
    assert np.array_equal(res.poses, gt)


def test_run_vo_closes_the_loop_end_to_end():
    """The default VO round a synthetic block: the revisit is found in the run, recorded per frame, and the
    poses and points are the corrected ones."""
    from trianflow.vo import VOConfig, run_vo

    seq = synthetic_sequence(100, kind="loop", size=(144, 480), seed=0)
    seq.render_all()
    res = run_vo(seq, VOConfig(loop_min_gap=30))
    s = res.loops
    assert s is not None and s["accepted"] >= 1, s
    lap = 100 / 1.3
    for lp in s["loops"]:
        assert lp["query"] - lp["candidate"] == pytest.approx(lap, abs=8)
        assert res.frames[lp["query"]].loop == lp["candidate"]
    assert sum(f.loop >= 0 for f in res.frames) == s["accepted"]
    assert res.timings["loop_s"] == pytest.approx(s["seconds"])
    ate = evaluate_trajectory(res.poses, seq.gt_poses).ape_rmse
    assert ate < 0.3  # metres over a 100 m drive
    # the map points moved with their cameras: a map point still projects where its keyframe saw it
    m = res.mapping["map"]
    o = np.flatnonzero(m["obs_frame"] == s["loops"][0]["query"])
    assert len(o) > 10
    f = s["loops"][0]["query"]
    w2c = np.linalg.inv(res.poses[f])
    X = m["xyz"][m["obs_point"][o]] @ w2c[:3, :3].T + w2c[:3, 3]
    uv = X[:, :2] / X[:, 2:] * [res.K[0, 0], res.K[1, 1]] + [res.K[0, 2], res.K[1, 2]]
    assert np.median(np.linalg.norm(uv - m["obs_xy"][o], axis=1)) < 2.0
    off = run_vo(seq, VOConfig(loop="off", max_ref_hold=10))
    assert off.loops is None and all(fr.loop == -1 for fr in off.frames)


def test_metric_runs_close_loops_in_se3(block_loop):
    """With fix_scale (stereo, --camera-height) a loop corrects position and heading but keeps the map's scale."""
    seq, db = block_loop
    gt = seq.gt_poses
    est = _drifted(gt, scale_drift=0.0, yaw_drift_deg=0.1)
    res = close_loops(est, db, seq.K, LoopConfig(places=db.cfg, fix_scale=True))
    assert res.summary["accepted"] >= 2
    assert np.allclose(res.scale, 1.0, atol=1e-3)
    steps = lambda P: np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1)  # noqa: E731
    assert steps(res.poses).sum() == pytest.approx(steps(est).sum(), rel=0.03)  # about its length (edges bend)
    se3 = lambda P: evaluate_trajectory(P, gt, align="se3").ape_rmse  # noqa: E731  (metric: no scale alignment)
    assert se3(res.poses) < 0.75 * se3(est)  # measured 0.56 -> 0.36 m


def test_a_lone_verified_loop_is_not_accepted():
    from trianflow.loop.closure import _confirmed
    from trianflow.loop.verify import LoopEdge

    def edge(q, c, s=1.0):
        return LoopEdge(q, c, np.eye(3), np.zeros(3), s, 100, 200, 150, 50)

    assert _confirmed([(50, 5, edge(500, 50))], 10) == []
    two = [(50, 5, edge(500, 50)), (53, 8, edge(530, 80))]
    assert [e.query for e in _confirmed(two, 10)] == [500, 530]
    disagree = [(50, 5, edge(500, 50, 1.0)), (53, 8, edge(530, 80, 1.5))]  # the scale drifts disagree
    assert _confirmed(disagree, 10) == []
    far = [(50, 5, edge(500, 50)), (90, 8, edge(900, 80))]  # the second is elsewhere
    assert _confirmed(far, 10) == []
