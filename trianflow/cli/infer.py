"""``trianflow flow`` and ``trianflow depth``: run trained networks on images and save the results.

Examples::

    trianflow flow frame0.png frame1.png --ckpt runs/flow/last.pt --out out/flow
    trianflow flow frames/ --ckpt runs/flow/last.pt --out out/flow          # consecutive pairs
    trianflow depth frames/ --ckpt runs/depth/last.pt --out out/depth

Outputs (all written atomically):

- flow: ``OUT/flo/<stem of image 1>.flo`` (Middlebury) and ``OUT/vis/<stem>.png`` (colour wheel);
  with ``--backward`` also ``<stem>_bwd``;
- depth: ``OUT/depth/<stem>.png`` (16-bit, depth x 256 like KITTI), ``OUT/npy/<stem>.npy`` (float32)
  and ``OUT/vis/<stem>.png`` (inverse-depth colour map).

Both subcommands live in this module (the dispatcher calls :func:`add_parser` once for both).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trianflow.errors import InputError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, metavar="CKPT", help="checkpoint written by 'trianflow train'")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="working resolution of the network (default: its training size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(sub) -> None:
    """Register the ``flow`` and ``depth`` sub-commands."""
    p = sub.add_parser(
        "flow",
        help="optical flow of image pairs with a trained FlowNet",
        description="Predict optical flow with a FlowNet checkpoint. Give two images (one pair) or one folder "
        "(consecutive pairs in natural order). Writes OUT/flo/<stem>.flo and OUT/vis/<stem>.png.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="IMG1 IMG2, or a folder of images")
    _common(p)
    p.add_argument("--backward", action="store_true", help="also write the backward flow (<stem>_bwd)")
    p.add_argument("--max-flow", type=float, metavar="PX",
                   help="flow magnitude shown fully saturated in the colour image (default: per image maximum)")
    p.set_defaults(func=run_flow)

    p = sub.add_parser(
        "depth",
        help="depth of images with a trained DepthNet",
        description="Predict depth with a DepthNet checkpoint for one image or every image of a folder. Writes "
        "OUT/depth/<stem>.png (16-bit, depth*256), OUT/npy/<stem>.npy and OUT/vis/<stem>.png (inverse depth).",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    _common(p)
    p.add_argument("--focal", type=float, help="stereo networks: focal length in pixels (for metric depth)")
    p.add_argument("--baseline", type=float, help="stereo networks: baseline in metres (for metric depth)")
    p.set_defaults(func=run_depth)


def _images_of(inputs: list[str]) -> list[Path]:
    from trianflow.data.image_folder import IMAGE_EXTENSIONS, list_images

    files: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise InputError(f"{p}: no images in this folder ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such image file or folder")
    return files


def _check_out(out: str) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path}: exists and is not a folder; give a folder path")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _size(args):
    if args.size is None:
        return None
    if min(args.size) < 8:
        raise InputError(f"--size {args.size[0]} {args.size[1]}: both must be >= 8 pixels")
    return tuple(args.size)


def _unique_stems(files: list[Path]) -> list[str]:
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{f.parent.name}_{f.stem}" for f in files]  # files from several folders sharing names


def run_flow(args: argparse.Namespace) -> int:
    """Entry point of ``trianflow flow``."""
    from tqdm import tqdm

    from trianflow.data.image_folder import read_image
    from trianflow.inference import load_flow_fn, write_flow_outputs

    if len(args.inputs) == 1:
        if not Path(args.inputs[0]).is_dir():
            raise InputError(f"{args.inputs[0]}: give two images (IMG1 IMG2) or one folder of images")
        files = _images_of(args.inputs)
        if len(files) < 2:
            raise InputError(f"{args.inputs[0]}: found {len(files)} image; flow needs at least 2")
    elif len(args.inputs) == 2:
        files = _images_of(args.inputs)
        if len(files) != 2:
            raise InputError("give exactly two image files (IMG1 IMG2) or one folder")
    else:
        raise InputError(f"got {len(args.inputs)} inputs: give two images (IMG1 IMG2) or one folder of images")
    if args.max_flow is not None and not args.max_flow > 0:
        raise InputError(f"--max-flow {args.max_flow}: must be > 0")
    out = _check_out(args.out)
    flow_fn = load_flow_fn(args.ckpt, device=args.device, size=_size(args))
    stems = _unique_stems(files)
    pairs = list(range(len(files) - 1))
    bar = tqdm(pairs, unit="pair", desc="flow", disable=args.no_progress or len(pairs) < 2, file=sys.stderr)
    prev = read_image(files[0])
    for i in bar:
        nxt = read_image(files[i + 1])
        if prev.shape[:2] != nxt.shape[:2]:
            raise InputError(f"{files[i]} ({prev.shape[1]}x{prev.shape[0]}) and {files[i + 1]} "
                             f"({nxt.shape[1]}x{nxt.shape[0]}) differ in size")
        fwd, bwd = flow_fn(prev, nxt)
        write_flow_outputs(out, stems[i], fwd, args.max_flow)
        if args.backward:
            write_flow_outputs(out, stems[i] + "_bwd", bwd, args.max_flow)
        prev = nxt
    bar.close()
    print(f"wrote {len(pairs)} flow field(s) to {out}/flo (.flo) and {out}/vis (colour PNG)")
    return 0


def run_depth(args: argparse.Namespace) -> int:
    """Entry point of ``trianflow depth``."""
    from tqdm import tqdm

    from trianflow.data.image_folder import read_image
    from trianflow.inference import load_depth_fn, write_depth_outputs

    files = _images_of(args.inputs)
    for name in ("focal", "baseline"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise InputError(f"--{name} {v}: must be > 0")
    out = _check_out(args.out)
    depth_fn = load_depth_fn(args.ckpt, device=args.device, size=_size(args), focal=args.focal,
                             baseline=args.baseline)
    stems = _unique_stems(files)
    bar = tqdm(list(zip(files, stems)), unit="image", desc="depth", disable=args.no_progress or len(files) < 2,
               file=sys.stderr)
    for f, stem in bar:
        depth = depth_fn(read_image(f))
        write_depth_outputs(out, stem, depth)
    bar.close()
    print(f"wrote {len(files)} depth map(s) to {out}/depth (16-bit PNG), {out}/npy and {out}/vis")
    return 0
