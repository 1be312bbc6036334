"""Loop closure for a finished VO run: find the revisits, verify them, correct the trajectory.

:func:`close_loops` takes the run's final poses and the :class:`~trianflow.loop.places.PlaceDatabase`
filled with its keyframes, and

1. proposes earlier keyframes that look like each keyframe (bag of words, the recent past skipped);
2. verifies each proposal geometrically (:func:`~trianflow.loop.verify.verify_loop`: essential matrix,
   PnP against the old place's triangulated features, scale drift from depth ratios, the cameras close
   compared with the path between them);
3. keeps only loops confirmed by a second verified loop nearby in both places (a single match, however
   good, can be a repeated facade);
4. optimises a Sim(3) pose graph over the keyframes (odometry edges + loop edges,
   :mod:`trianflow.loop.pose_graph`), then moves every frame with the correction of its keyframe.

Returns the corrected poses, the per-frame similarity that moved them (points follow with
:func:`trianflow.vo.ground.move_points`) and a JSON-ready summary.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from trianflow.loop.places import PlaceConfig, PlaceDatabase
from trianflow.loop.pose_graph import PoseGraphEdge, Sim3, inverse, compose, optimize_pose_graph, sim3_from_pose
from trianflow.loop.verify import LoopEdge, VerifyConfig, verify_loop

log = logging.getLogger(__name__)

__all__ = ["LoopConfig", "LoopResult", "close_loops", "path_length"]


@dataclass
class LoopConfig:
    places: PlaceConfig = field(default_factory=PlaceConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    confirm_keyframes: int = 10  # a loop needs a second verified loop within this many keyframes at both ends
    max_verifications: int = 400  # proposals verified at most (best appearance scores first)
    loop_weight: float = 1.0  # weight of a loop edge relative to an odometry edge
    # pose-graph weights, the inverse noise of an odometry edge relative to its translation (per typical step,
    # weight 1), measured on kitti_03_first400's default run against its GT: rotation 0.0009 rad, translation
    # 0.016 of the step, log scale 0.007 per keyframe edge
    rot_weight: float = 17.0
    scale_weight: float = 2.0
    fix_scale: bool = False  # stereo runs: SE(3) loops, the map's metric scale held


@dataclass
class LoopResult:
    poses: np.ndarray  # (N,4,4) corrected camera-to-world
    scale: np.ndarray  # (N,) scale of the correction applied to each frame (points follow it)
    loops: List[LoopEdge]
    summary: dict


def path_length(poses: np.ndarray) -> np.ndarray:
    """Distance travelled up to each frame ``(N,)`` along camera-to-world poses ``(N,4,4)``."""
    c = poses[:, :3, 3]
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(c, axis=0), axis=1))])


def close_loops(poses: np.ndarray, db: PlaceDatabase, K: np.ndarray, config: Optional[LoopConfig] = None
                ) -> LoopResult:
    """Find, verify and close loops in a trajectory ``poses (N,4,4)`` c2w whose keyframes ``db`` holds."""
    cfg = config or LoopConfig()
    t0 = time.perf_counter()
    n = len(poses)
    view = db.before(n)
    places = view.places
    summary = {"keyframes": len(places), "proposals": 0, "verified": 0, "accepted": 0, "loops": [],
               "describe_s": db.seconds}
    dist = path_length(poses)
    proposals = view.candidates(dist)
    summary["proposals"] = len(proposals)
    t_search = time.perf_counter()
    proposals = sorted(proposals, key=lambda p: -p[2])[:cfg.max_verifications]
    verified, cache = [], {}
    rejected: dict = {}
    for q, c, score in proposals:
        edge, why = verify_loop(places, q, c, poses, K, dist, cfg.verify, cache)
        if edge is None:
            key = re.sub(r"-?[\d.]+(e-?\d+)?", "N", why)
            rejected[key] = rejected.get(key, 0) + 1
            continue
        edge.score = score
        verified.append((q, c, edge))
    summary["verified"] = len(verified)
    t_verify = time.perf_counter()
    accepted = _confirmed(verified, cfg.confirm_keyframes)
    summary.update(search_s=t_search - t0, verify_s=t_verify - t_search)
    if not accepted:
        summary["seconds"] = time.perf_counter() - t0 + db.seconds
        return LoopResult(poses.copy(), np.ones(n), [], summary)
    # the pose graph: keyframes in order, odometry edges between neighbours, the loops
    kf = np.array([p.frame for p in places], np.int64)
    nodes = [sim3_from_pose(poses[f]) for f in kf]
    edges, steps = [], []
    for i in range(len(kf) - 1):
        rel = np.linalg.inv(poses[kf[i]]) @ poses[kf[i + 1]]
        edges.append(PoseGraphEdge(i, i + 1, sim3_from_pose(rel)))
        steps.append(np.linalg.norm(rel[:3, 3]))
    pos = {int(f): i for i, f in enumerate(kf)}
    for e in accepted:
        s_e = 1.0 if cfg.fix_scale else e.scale  # a metric map has no scale drift to correct
        S_qc = (np.array([s_e]), e.R[None], (s_e * e.t)[None])  # X_q = s (R X_c + t)
        s, R, t = inverse(S_qc)  # measured S_c^-1 S_q
        edges.append(PoseGraphEdge(pos[e.candidate], pos[e.query], Sim3(float(s[0]), R[0], t[0]), cfg.loop_weight))
    new_nodes, graph = optimize_pose_graph(nodes, edges, step=float(np.median(steps)) if steps else 1.0,
                                            rot_weight=cfg.rot_weight,
                                            scale_weight=1e4 if cfg.fix_scale else cfg.scale_weight)
    # every frame follows its keyframe: C = S_new S_old^-1
    old = (np.ones(len(kf)), poses[kf, :3, :3], poses[kf, :3, 3])
    new = (np.array([x.s for x in new_nodes]), np.stack([x.R for x in new_nodes]), np.stack([x.t for x in new_nodes]))
    C = compose(new, inverse(old))
    node_of = np.clip(np.searchsorted(kf, np.arange(n), side="right") - 1, 0, len(kf) - 1)
    Cs, CR, Ct = C[0][node_of], C[1][node_of], C[2][node_of]
    out = poses.copy()
    out[:, :3, :3] = CR @ poses[:, :3, :3]
    out[:, :3, 3] = Cs[:, None] * np.einsum("nij,nj->ni", CR, poses[:, :3, 3]) + Ct
    for e in accepted:
        d = e.as_dict()
        d["correction_m"] = float(np.linalg.norm(out[e.query, :3, 3] - poses[e.query, :3, 3]))
        d["correction_scale"] = float(Cs[e.query])
        summary["loops"].append(d)
    summary.update(accepted=len(accepted), graph=graph, rejected=rejected,
                   max_correction=float(np.max(np.linalg.norm(out[:, :3, 3] - poses[:, :3, 3], axis=1))),
                   seconds=time.perf_counter() - t0 + db.seconds)
    log.info("loop closure: %d loops accepted of %d verified (%d proposals); largest correction %.3g",
             len(accepted), len(verified), len(proposals), summary["max_correction"])
    return LoopResult(out, Cs, accepted, summary)


def _confirmed(verified: list, window: int, max_log_scale: float = 0.15) -> List[LoopEdge]:
    """The verified loops ``[(q place, c place, edge)]`` that another verified loop confirms: its query
    and candidate both within ``window`` keyframes of this one's and the same scale drift (log scales
    within ``max_log_scale``); one per query, the most inliers."""
    out = {}
    for i, (q, c, e) in enumerate(verified):
        ok = any(j != i and abs(q2 - q) <= window and abs(c2 - c) <= window and q2 != q
                 and abs(np.log(e2.scale / e.scale)) <= max_log_scale
                 for j, (q2, c2, e2) in enumerate(verified))
        if ok and (q not in out or e.inliers > out[q].inliers):
            out[q] = e
    return [out[q] for q in sorted(out)]
