"""``trianflow two-view IMG1 IMG2 --intrinsics fx,fy,cx,cy``: relative pose of two images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trianflow.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("two-view", help="relative pose [R|t] of two images",
                       description="Estimate the pose of camera 2 w.r.t. camera 1 (X2 = R X1 + t, |t| = 1) from "
                       "dense flow, robust essential-matrix estimation and cheirality; triangulate the inliers.")
    p.add_argument("img1", metavar="IMG1")
    p.add_argument("img2", metavar="IMG2")
    p.add_argument("--intrinsics", required=True, metavar="fx,fy,cx,cy")
    p.add_argument("--backend", choices=("opencv", "pycolmap", "torch"), default="opencv")
    p.add_argument("--flow", metavar="CKPT", help="FlowNet checkpoint instead of DIS flow")
    p.add_argument("--samples", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def read_image(path) -> np.ndarray:
    """``(H,W,3)`` uint8 RGB (gray repeated), or InputError naming the file."""
    from trianflow.data.image_folder import read_image as _read

    img = _read(path)
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def run(args) -> int:
    from trianflow.data.sequence import parse_intrinsics
    from trianflow.two_view import estimate_two_view

    K = parse_intrinsics(args.intrinsics)
    a, b = read_image(args.img1), read_image(args.img2)
    if a.shape != b.shape:
        raise InputError(f"{args.img1} is {a.shape[1]}x{a.shape[0]} but {args.img2} is {b.shape[1]}x{b.shape[0]}: "
                         "the two images must have the same size")
    flow_fn = None
    if args.flow:
        from trianflow.inference import load_flow_fn

        flow_fn = load_flow_fn(args.flow, device="cpu")
    r = estimate_two_view(a, b, K, flow_fn=flow_fn, num_samples=args.samples, backend=args.backend, seed=args.seed)
    if args.json:
        print(json.dumps(r.to_dict()))
        return 0
    np.set_printoptions(precision=6, suppress=True)
    print(f"status: {r.status}")
    print(f"R (camera 1 -> camera 2):\n{r.R}")
    print(f"t (unit): {r.t}")
    print(f"inliers: {r.inliers} of {r.matches} sampled correspondences")
    print(f"triangulated points: {r.points}")
    return 0
