"""``trianflow eval-depth PRED GT``: Eigen depth metrics of predicted depth maps against ground truth."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """\
Evaluate predicted depth against ground truth with the seven Eigen et al. metrics
(AbsRel, SqRel, RMSE, RMSE log, delta < 1.25, 1.25^2, 1.25^3), averaged over images.

PRED and GT are files or folders, matched by file stem (000000_10.npy <-> 000000_10.png), or two
(N,H,W) .npy/.npz stacks matched by index. Formats: .npy depth in metres; KITTI depth PNG
(uint16, metres*256, 0 = invalid); KITTI disparity PNG (uint16, pixels*256) converted to depth with
--calib. A GT file or folder whose name contains "disp" (e.g. disp_occ_0/) is read as disparity
unless --gt-kind says otherwise.

Resize rule: a prediction of another resolution is resized to the GT resolution (bilinear; pixel
disparities are multiplied by the width ratio). Pixels evaluated: min-depth < GT < max-depth inside
the crop. Predictions are clamped to [min-depth, max-depth] after optional median scaling
(use --median-scaling for monocular predictions, not for stereo/metric ones). Images whose GT
mask is empty are skipped and counted in n_skipped.

Crops (as Monodepth/SfMLearner name them): garg = rows 0.408-0.992, cols 0.036-0.964 of the GT
(the crop Monodepth2/TrianFlow use for KITTI Eigen-split numbers); eigen = rows 0.332-0.914.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval-depth", help="depth metrics (AbsRel, RMSE, delta) of predictions vs ground truth",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred", metavar="PRED", help="prediction file or folder (.npy metres, KITTI 16-bit .png)")
    p.add_argument("gt", metavar="GT", help="ground-truth file or folder (KITTI depth/disparity .png, .npy)")
    p.add_argument("--calib", metavar="F",
                   help="stereo calibration for disparity maps: a KITTI calib_cam_to_cam.txt (P_rect_02/03), "
                        "a P0..P3 calib file, a Middlebury calib.txt, a 'focal_px baseline_m' text, or a folder "
                        "of per-frame files <id>.txt")
    p.add_argument("--median-scaling", action="store_true",
                   help="scale each prediction by median(GT)/median(pred) (monocular depth)")
    p.add_argument("--crop", choices=["eigen", "garg", "none"], default="none", help="evaluation crop (default none)")
    p.add_argument("--min-depth", type=float, default=1e-3, help="minimum GT depth evaluated and prediction clamp (1e-3)")
    p.add_argument("--max-depth", type=float, default=80.0, help="depth cap in metres (default 80)")
    p.add_argument("--gt-kind", choices=["auto", "depth", "disp"], default="auto",
                   help="GT values are depth (m) or disparity (px); auto = disparity if the name contains 'disp'")
    p.add_argument("--pred-kind", choices=["depth", "disp"], default="depth",
                   help="prediction values are depth (m, default) or pixel disparity (needs --calib)")
    p.add_argument("--vis", metavar="DIR", help="write a colour-mapped prediction + abs-rel error image per frame here")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from trianflow.errors import InputError
    from trianflow.evaluation.depth_metrics import DEPTH_METRIC_KEYS, evaluate_depth_folder

    if not (0 < args.min_depth < args.max_depth):
        raise InputError(f"need 0 < --min-depth < --max-depth, got {args.min_depth} and {args.max_depth}")

    def progress(pairs):
        return tqdm(pairs, desc="eval-depth", unit="img", disable=len(pairs) < 20 or not sys.stderr.isatty(),
                    file=sys.stderr)

    res = evaluate_depth_folder(args.pred, args.gt, calib=args.calib, crop=args.crop, min_depth=args.min_depth,
                                max_depth=args.max_depth, median_scaling=args.median_scaling,
                                gt_kind=args.gt_kind, pred_kind=args.pred_kind, vis_dir=args.vis,
                                progress=progress)
    out = res.to_dict()
    if args.json:
        print(json.dumps(out))
        return 0
    names = {"abs_rel": "abs_rel", "sq_rel": "sq_rel", "rmse": "rmse", "rmse_log": "rmse_log",
             "a1": "d<1.25", "a2": "d<1.25^2", "a3": "d<1.25^3"}
    print(f"images: {res.n_images} evaluated, {res.n_skipped} skipped (empty GT mask); crop {res.crop}, "
          f"depth range ({res.min_depth:g}, {res.max_depth:g}) m")
    if res.unmatched_pred or res.unmatched_gt:
        print(f"unmatched: {len(res.unmatched_pred)} prediction(s), {len(res.unmatched_gt)} ground-truth file(s)")
    if res.median_scaling:
        print(f"median scaling ratio: median {res.ratio_median:.4f}, std/median {res.ratio_std:.4f}")
    print(" ".join(f"{names[k]:>10}" for k in DEPTH_METRIC_KEYS))
    print(" ".join(f"{res.metrics[k]:>10.4f}" for k in DEPTH_METRIC_KEYS))
    if args.vis:
        print(f"error images written to {args.vis}")
    return 0
