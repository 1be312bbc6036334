#!/usr/bin/env python3
"""Measure the networks of the real KITTI recipe (``configs/kitti_cpu.yaml``) on held-out frames; prints JSON.

Sections (each can be skipped with ``--skip``):

``flow``
    On the validation pairs ``(i, i + 1)`` of ``--data`` (``--val-range``, default frames 300-399 of
    ``kitti_03_first400``), at the training resolution (``--size``, K scaled alike): the forward and
    backward flow of the FlowNet and of OpenCV DIS (presets ``medium`` and ``balanced``). For each,
    the correspondences the pipeline would use (TrianFlow score = visibility / (0.1 + fb distance),
    best 20 %, 6000 drawn at random) and the share of them whose Sampson distance under the
    *ground-truth* relative pose is below 1 px (``sampson_lt1``; also the median distance), and the
    photometric flow loss (SSIM + L1 on visible, fb-consistent pixels, finest scale; lower is better),
    the median flow length of the matches, and the relative pose that the training geometry (batched
    RANSAC, as in the depth stage) estimates from them: share of valid poses and median rotation /
    translation-direction errors against GT. The Sampson share alone cannot tell a flow that is too
    short along its epipolar line (a zero flow satisfies any forward translation's epipolar constraint):
    read it with the photometric loss and the pose errors.
``depth``
    Median-scaled AbsRel and delta < 1.25 of the DepthNet (at its training size) against (a) the
    depth from the ground-truth disparity of the KITTI stereo 2012 pairs (``--stereo2012``, left
    images, depth = f B / d, 0.1-80 m) and (b) the depths of the points triangulated from DIS flow
    (full resolution, balanced preset) by the same RANSAC + midpoint step as the VO's pairs, on the
    validation pairs (every ``--depth-every``-th).
``vo``
    Visual odometry on the validation frames (a temporary KITTI folder of links): DIS (the default
    and ``--refine none``), ``--flow CKPT`` (both refinements) and ``--depth CKPT`` with
    ``--refine none`` (TrianFlow's depth-aligned per-pair scale); Sim3 ATE (m and % of the path)
    and the KITTI drift over 20-50 m segments (the 71 m of the validation frames hold no 100 m one).

``--flow`` / ``--depth`` take checkpoints (``last.pt`` of a stage) or ``untrained`` (random
weights of the same architecture: the floor). Without ``--depth`` the depth section and the depth
VO run are skipped.

    python tools/eval_real_recipe.py --flow runs/kitti_cpu_flow/last.pt --depth runs/kitti_cpu_depth/last.pt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trianflow.data.kitti_odometry import open_kitti_odometry, parse_calib  # noqa: E402
from trianflow.errors import InputError  # noqa: E402
from trianflow.evaluation.depth_metrics import compute_depth_metrics  # noqa: E402
from trianflow.flow_backends import DISFlow  # noqa: E402
from trianflow.geometry.epipolar import sampson_distance  # noqa: E402
from trianflow.geometry.pose import rotation_error_deg, translation_angle_deg  # noqa: E402
from trianflow.geometry.sampling import sample_correspondences  # noqa: E402
from trianflow.geometry.two_view import two_view_geometry  # noqa: E402
from trianflow.losses.flow import flow_loss  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def _skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])


def fundamental_from_pose(T_1to2: np.ndarray, K: np.ndarray) -> np.ndarray:
    """F with ``x2^T F x1 = 0`` for pixels of two views of one camera, relative pose ``T_1to2``."""
    E = _skew(T_1to2[:3, 3]) @ T_1to2[:3, :3]
    Ki = np.linalg.inv(K)
    return Ki.T @ E @ Ki


def _tensor(img: np.ndarray) -> torch.Tensor:
    a = img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().unsqueeze(0) / 255.0


def _resize(img: np.ndarray, size) -> np.ndarray:
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def load_net(path: str, kind: str, size):
    """``(model, size)`` of a checkpoint, or a freshly initialised network for ``untrained``."""
    from trianflow.inference import load_depthnet, load_flownet
    from trianflow.models import build_depthnet, build_flownet

    if path == "untrained":
        torch.manual_seed(0)
        net = build_flownet({}) if kind == "flow" else build_depthnet({})
        return net.eval(), tuple(size)
    return (load_flownet if kind == "flow" else load_depthnet)(path, size=size)


def flow_section(seq, val, size, flow_ckpt, seed=0) -> dict:
    h, w = size
    H, W = seq.size
    K = seq.K.copy()
    K[0] *= w / W
    K[1] *= h / H
    methods = {"dis_medium": DISFlow("medium"), "dis_balanced": DISFlow("balanced")}
    net = None
    if flow_ckpt:
        net, _ = load_net(flow_ckpt, "flow", size)
    names = list(methods) + (["network"] if net is not None else [])
    acc = {n: {"lt1": [], "med": [], "photo": [], "ms": [], "mag": [], "rot": [], "tdir": [], "ok": []}
           for n in names}
    Kt = torch.from_numpy(K).float()
    prev = None
    for i in range(val[0], val[1] - 1):
        a = prev if prev is not None else _resize(seq.read(i), size)
        b = _resize(seq.read(i + 1), size)
        prev = b
        T = np.linalg.inv(seq.gt_poses[i + 1]) @ seq.gt_poses[i]
        F = torch.from_numpy(fundamental_from_pose(T, K)).float().unsqueeze(0)
        ta, tb = _tensor(a), _tensor(b)
        for n in names:
            t0 = time.perf_counter()
            if n == "network":
                with torch.no_grad():
                    fw, bw = net.forward_bidirectional(ta, tb)
                fwd, bwd = fw[0].float(), bw[0].float()
            else:
                f, g = methods[n](a, b)
                fwd = torch.from_numpy(f).permute(2, 0, 1)[None].float()
                bwd = torch.from_numpy(g).permute(2, 0, 1)[None].float()
            acc[n]["ms"].append(1000 * (time.perf_counter() - t0))
            gen = torch.Generator().manual_seed(seed + i)
            c = sample_correspondences(fwd, bwd, num_samples=6000, top_ratio=0.2, generator=gen)
            d = sampson_distance(F, c.x1.float(), c.x2.float())[0][c.valid[0]].numpy()
            acc[n]["lt1"].append(float(np.mean(d < 1.0)))
            acc[n]["med"].append(float(np.median(d)))
            acc[n]["mag"].append(float((c.x2 - c.x1)[0][c.valid[0]].norm(dim=-1).median()))
            # the pose the pipeline would estimate from these matches (same RANSAC as training), against GT
            geo = two_view_geometry(fwd, bwd, Kt[None], generator=torch.Generator().manual_seed(seed + i),
                                    seed=seed + i)
            ok = bool(geo.valid[0])
            acc[n]["ok"].append(ok)
            if ok:
                Tg = torch.from_numpy(T).float()
                acc[n]["rot"].append(float(rotation_error_deg(geo.pose.R[0].float(), Tg[:3, :3])))
                acc[n]["tdir"].append(float(translation_angle_deg(geo.pose.t[0].float().view(3), Tg[:3, 3])))
            with torch.no_grad():
                r = flow_loss(ta, tb, [fwd], [bwd], flow_units="scale")
            acc[n]["photo"].append(float(r.terms["flow"]))
    out = {"pairs": val[1] - 1 - val[0], "size": [h, w], "K_scaled": [round(float(v), 3) for v in K.ravel()]}
    for n in names:
        out[n] = {"sampson_lt1": round(float(np.mean(acc[n]["lt1"])), 4),
                  "median_sampson_px": round(float(np.median(acc[n]["med"])), 4),
                  "photometric": round(float(np.mean(acc[n]["photo"])), 5),
                  "median_flow_px": round(float(np.median(acc[n]["mag"])), 2),
                  "pose_valid": round(float(np.mean(acc[n]["ok"])), 3),
                  "pose_rot_err_deg": _med(acc[n]["rot"]), "pose_tdir_err_deg": _med(acc[n]["tdir"]),
                  "ms_per_pair": round(float(np.median(acc[n]["ms"])), 1)}
    return out


def _med(v) -> float | None:
    return round(float(np.median(v)), 4) if len(v) else None


def _median_scaled(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Eigen AbsRel / delta < 1.25 of ``pred`` scaled by ``median(gt) / median(pred)`` (sparse points)."""
    m = compute_depth_metrics(pred * (np.median(gt) / np.median(pred)), gt)
    return {"abs_rel": round(m["abs_rel"], 4), "a1": round(m["a1"], 4), "n": int(gt.size)}


def _predict_depth(net, size, img: np.ndarray) -> np.ndarray:
    from trianflow.inference import predict_depth

    with torch.no_grad():
        return predict_depth(net, _tensor(img), size=size)[0, 0].numpy()


def depth_stereo2012(net, size, root: Path) -> dict:
    calib = parse_calib(root / "calib.txt")
    f = float(calib["P2"][0, 0])
    B = float((calib["P2"][0, 3] - calib["P3"][0, 3]) / f)
    per = []
    for left in sorted((root / "colored_0").glob("*_10.png")):
        img = cv2.cvtColor(cv2.imread(str(left)), cv2.COLOR_BGR2RGB)
        disp = cv2.imread(str(root / "disp_occ" / left.name), cv2.IMREAD_UNCHANGED).astype(np.float64) / 256.0
        m = disp > 0
        gt = np.zeros_like(disp)
        gt[m] = f * B / disp[m]
        m &= (gt > 0.1) & (gt < 80.0)
        pred = _predict_depth(net, size, img)
        per.append(_median_scaled(pred[m], gt[m]))
    return {"images": len(per), "abs_rel": round(float(np.mean([p["abs_rel"] for p in per])), 4),
            "a1": round(float(np.mean([p["a1"] for p in per])), 4), "per_image": per}


def depth_triangulated(net, size, seq, val, every: int) -> dict:
    dis = DISFlow("balanced")
    Kt = torch.from_numpy(seq.K).float().unsqueeze(0)
    per = []
    for i in range(val[0], val[1] - 1, every):
        a, b = seq.read(i), seq.read(i + 1)
        f, g = dis(a, b)
        fwd = torch.from_numpy(f).permute(2, 0, 1)[None].float()
        bwd = torch.from_numpy(g).permute(2, 0, 1)[None].float()
        geo = two_view_geometry(fwd, bwd, Kt, generator=torch.Generator().manual_seed(i), seed=i)
        if not bool(geo.valid[0]):
            continue
        ok = geo.tri.valid[0]
        x1 = geo.corr.x1[0][ok].numpy()
        z = geo.tri.depth1[0][ok].numpy()
        pred = _predict_depth(net, size, a)
        u = np.clip(np.round(x1[:, 0]).astype(int), 0, pred.shape[1] - 1)
        v = np.clip(np.round(x1[:, 1]).astype(int), 0, pred.shape[0] - 1)
        keep = (z > 0) & np.isfinite(z)
        if keep.sum() < 50:
            continue
        per.append(_median_scaled(pred[v, u][keep], z[keep]))
    if not per:
        return {"pairs": 0}
    return {"pairs": len(per), "abs_rel": round(float(np.mean([p["abs_rel"] for p in per])), 4),
            "a1": round(float(np.mean([p["a1"] for p in per])), 4),
            "points_per_pair": int(np.mean([p["n"] for p in per]))}


def make_val_folder(data: Path, val, tmp: Path) -> Path:
    """A KITTI odometry folder of links to the frames ``val`` of ``data`` (poses re-based on the first)."""
    seq = open_kitti_odometry(data)
    out = tmp / "val"
    (out / seq.meta["camera"]).mkdir(parents=True)
    for k, i in enumerate(range(*val)):
        os.symlink(seq.files[i].resolve(), out / seq.meta["camera"] / f"{k:06d}.png")
    (out / "calib.txt").write_text((data / "calib.txt").read_text())
    T0 = np.linalg.inv(seq.gt_poses[val[0]])
    lines = [" ".join(f"{v:.9e}" for v in (T0 @ P)[:3].ravel()) for P in seq.gt_poses[val[0]:val[1]]]
    (out / "poses.txt").write_text("\n".join(lines) + "\n")
    return out


def vo_section(folder: Path, flow_ckpt, depth_ckpt) -> dict:
    from trianflow.api import evaluate_trajectory, open_sequence, run_vo

    runs = {"dis": ({}, None, None), "dis_refine_none": ({"refine": "none"}, None, None)}
    if flow_ckpt and flow_ckpt != "untrained":
        runs["flow_net"] = ({}, flow_ckpt, None)
        runs["flow_net_refine_none"] = ({"refine": "none"}, flow_ckpt, None)
    if depth_ckpt and depth_ckpt != "untrained":
        runs["depth_net_refine_none"] = ({"refine": "none"}, None, depth_ckpt)
    out = {}
    for name, (opts, fl, dp) in runs.items():
        seq = open_sequence(folder)
        t0 = time.perf_counter()
        res = run_vo(seq, flow=fl, depth=dp, **opts)
        dt = time.perf_counter() - t0
        m = evaluate_trajectory(res, seq, align="sim3", kitti_lengths=(20, 30, 40, 50)).to_dict()
        out[name] = {"ate_m": round(m["ape_rmse"], 4), "ate_pct": round(100 * m["ape_rmse"] / m["path_length"], 3),
                     "t_err_20_50m": None if m["kitti_t_err"] is None else round(m["kitti_t_err"], 3),
                     "r_err_20_50m": None if m["kitti_r_err"] is None else round(m["kitti_r_err"], 3),
                     "fps": round(len(seq) / dt, 2)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA / "kitti_03_first400"), help="KITTI odometry sequence folder with poses")
    p.add_argument("--val-range", nargs=2, type=int, default=(300, 400), metavar=("START", "END"))
    p.add_argument("--size", nargs=2, type=int, default=(128, 416), metavar=("H", "W"))
    p.add_argument("--flow", help="FlowNet checkpoint or 'untrained'")
    p.add_argument("--depth", help="DepthNet checkpoint or 'untrained'")
    p.add_argument("--stereo2012", default=str(DATA / "kitti_stereo2012"))
    p.add_argument("--depth-every", type=int, default=3, help="every N-th validation pair for the triangulated depth")
    p.add_argument("--skip", default="", help="comma-separated sections to skip: flow, depth, vo")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    skip = {s for s in args.skip.split(",") if s}
    data = Path(args.data)
    try:
        seq = open_kitti_odometry(data)
        if seq.gt_poses is None:
            raise InputError(f"{data}: no ground-truth poses")
        val = (int(args.val_range[0]), min(int(args.val_range[1]), len(seq)))
        if val[1] - val[0] < 10:
            raise InputError(f"--val-range {args.val_range}: fewer than 10 frames in {data}")
        out = {"data": str(data), "val_range": list(val), "flow_ckpt": args.flow, "depth_ckpt": args.depth}
        if "flow" not in skip:
            out["flow"] = flow_section(seq, val, tuple(args.size), args.flow)
        if args.depth and "depth" not in skip:
            net, size = load_net(args.depth, "depth", args.size)
            out["depth"] = {"stereo2012": depth_stereo2012(net, size, Path(args.stereo2012)),
                            "triangulated_val": depth_triangulated(net, size, seq, val, args.depth_every)}
        if "vo" not in skip:
            with tempfile.TemporaryDirectory() as tmp:
                out["vo"] = vo_section(make_val_folder(data, val, Path(tmp)), args.flow, args.depth)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
