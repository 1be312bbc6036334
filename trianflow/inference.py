"""Inference with trained networks: load checkpoints, predict flow and depth, write result files.

Checkpoints are those of ``trianflow train`` (:mod:`trianflow.training.checkpoint`): the networks
are rebuilt from the architecture stored beside their weights (``arch``), so a checkpoint does
not need the config it was trained with. The working resolution is the training size stored in
the checkpoint's config (``data.size``), unless another ``size`` is given: images are resized to
it, run through the network, and the results are resized back to the input resolution (flow
values are rescaled with the resize).

Public API:

- :func:`resolve_device`, :func:`load_flownet`, :func:`load_depthnet` (model + working size);
- :func:`load_flow_fn` -> ``flow_fn(img1, img2) -> (fwd, bwd)`` and :func:`load_depth_fn` ->
  ``depth_fn(img) -> depth``, the callables :func:`trianflow.vo.run_vo` takes (numpy in,
  numpy out);
- :func:`predict_flow`, :func:`predict_depth` (torch, batched);
- files: :func:`write_flo` / :func:`read_flo` (Middlebury ``.flo``), :func:`write_flow_outputs`
  (+ the Baker et al. colour wheel of :func:`trianflow.viz.colormaps.flow_to_color`),
  :func:`write_depth_outputs` (16-bit PNG, ``.npy``, inverse-depth colour map of
  :mod:`trianflow.viz.colormaps`). Every file is written atomically.

Bad input (missing/corrupted checkpoint, a checkpoint of another architecture or without the
wanted network, a CUDA device that does not exist) raises :class:`~trianflow.errors.InputError`
with a one-line message.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trianflow.errors import InputError
from trianflow.io.atomic import atomic_path

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

__all__ = [
    "resolve_device",
    "load_flownet",
    "load_depthnet",
    "load_flow_fn",
    "load_depth_fn",
    "predict_flow",
    "predict_depth",
    "FlowPredictor",
    "DepthPredictor",
    "write_flo",
    "read_flo",
    "write_flow_outputs",
    "write_depth_outputs",
    "FLO_MAGIC",
]

FLO_MAGIC = 202021.25  # "PIEH" as a little-endian float32
_DEPTH_MIN_SIDE = 64  # the DepthNet encoder (stride 32) needs at least 2 pixels at its coarsest level


# --------------------------------------------------------------------------------------------
# devices and checkpoints
# --------------------------------------------------------------------------------------------


def resolve_device(device: Union[str, torch.device, None] = "cpu") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` -> ``torch.device``.

    Raises:
        InputError: a CUDA device requested where none exists (or an unknown name).
    """
    from trianflow.training.distributed import resolve_device as _resolve

    if isinstance(device, torch.device):
        device = str(device)
    return _resolve(device or "cpu")


def _network_kind(arch) -> str:
    if isinstance(arch, dict):
        return str(arch.get("class") or arch.get("kind") or "unknown network")
    return "unknown network"


def _load_network(path: PathLike, name: str, cls_name: str, device) -> Tuple[nn.Module, dict]:
    from trianflow.models import build_depthnet, build_flownet, check_state_dict, model_from_arch
    from trianflow.training.checkpoint import load_checkpoint

    dev = resolve_device(device)
    ckpt = load_checkpoint(path)
    models = ckpt.get("models") or {}
    if name not in models:
        have = ", ".join(sorted(models)) or "none"
        hint = " (a flow-stage checkpoint: train the depth or joint stage for a DepthNet)" \
            if name == "depth" and ckpt.get("stage") == "flow" else ""
        raise InputError(f"checkpoint {path} has no '{name}' network (it has: {have}){hint}; "
                         f"pass a checkpoint with a {cls_name}")
    arch = (ckpt.get("arch") or {}).get(name)
    if arch is not None:
        kind = _network_kind(arch)
        if kind != cls_name:
            raise InputError(f"checkpoint {path}: its '{name}' network is a {kind}, not a {cls_name}; "
                             "pass a trianflow checkpoint of the right task")
        model = model_from_arch(arch)
    else:  # older checkpoint without arch: rebuild from its config
        mcfg = ((ckpt.get("config") or {}).get("model") or {}).get(name) or {}
        model = build_flownet(mcfg) if cls_name == "FlowNet" else build_depthnet(
            {k: v for k, v in mcfg.items() if k != "pretrained_encoder"})
    check_state_dict(model, models[name], f"checkpoint {path}: '{name}' network")
    model.load_state_dict(models[name], strict=True)
    for p in model.parameters():
        if not torch.isfinite(p).all():
            raise InputError(f"checkpoint {path}: the '{name}' network has NaN/inf weights (training diverged); "
                             "use an earlier checkpoint")
    model.eval().to(dev)
    return model, ckpt


def _working_size(ckpt: dict, size, min_side: int = 8) -> Optional[Tuple[int, int]]:
    if size is not None:
        if len(size) != 2 or int(size[0]) < min_side or int(size[1]) < min_side:
            raise InputError(f"working size must be (H, W) with both >= {min_side} pixels, got {tuple(size)}")
        return int(size[0]), int(size[1])
    s = ((ckpt.get("config") or {}).get("data") or {}).get("size")
    if isinstance(s, (list, tuple)) and len(s) == 2:
        return int(s[0]), int(s[1])
    return None


def load_flownet(path: PathLike, device="cpu", size: Optional[Sequence[int]] = None):
    """Load the FlowNet of a training checkpoint.

    Args:
        path: checkpoint file (``last.pt`` / ``step_*.pt``).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        size: working ``(H, W)``; default the training size of the checkpoint (None if unknown:
            then images are used at their own size).
    Returns:
        ``(model, size)``: the FlowNet in eval mode on ``device`` and the working size.
    Raises:
        InputError: see the module docstring.
    """
    model, ckpt = _load_network(path, "flow", "FlowNet", device)
    return model, _working_size(ckpt, size)


def load_depthnet(path: PathLike, device="cpu", size: Optional[Sequence[int]] = None):
    """Load the DepthNet of a training checkpoint; returns ``(model, size)`` like :func:`load_flownet`."""
    model, ckpt = _load_network(path, "depth", "DepthNet", device)
    return model, _working_size(ckpt, size, _DEPTH_MIN_SIDE)


# --------------------------------------------------------------------------------------------
# prediction (torch)
# --------------------------------------------------------------------------------------------


def _resize_images(img: torch.Tensor, size) -> torch.Tensor:
    if size is None or tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


@torch.no_grad()
def predict_flow(model: nn.Module, img1: torch.Tensor, img2: torch.Tensor, size=None):
    """Forward and backward flow at the input resolution.

    Args:
        model: a FlowNet.
        img1, img2: ``(B,3,H,W)`` float in [0,1] on the model's device.
        size: working ``(h, w)`` (None: the input size).
    Returns:
        ``(fwd, bwd)``: ``(B,2,H,W)`` fp32 flows in pixels of the input resolution.
    """
    from trianflow.models.flownet import upsample_flow

    h, w = img1.shape[-2:]
    a, b = _resize_images(img1, size), _resize_images(img2, size)
    fwd, bwd = model.forward_bidirectional(a, b)
    f, g = fwd[0].float(), bwd[0].float()
    if tuple(f.shape[-2:]) != (h, w):
        f, g = upsample_flow(f, (h, w)), upsample_flow(g, (h, w))
    return f, g


@torch.no_grad()
def predict_depth(model: nn.Module, img: torch.Tensor, size=None, focal: Optional[float] = None,
                  baseline: Optional[float] = None):
    """Depth at the input resolution.

    Args:
        model: a DepthNet. Monocular: depth from its sigmoid disparity (``min_depth``..``max_depth``,
            up to scale). Stereo: ``focal * baseline / disparity_px`` when both are given, else
            ``1 / disparity_px`` (up to scale).
        img: ``(B,3,H,W)`` in [0,1] on the model's device.
        size: working ``(h, w)`` (None: the input size). The disparity is resized back
            bilinearly before it is inverted.
    Returns:
        ``(B,1,H,W)`` fp32 depth (> 0).
    """
    from trianflow.models import disp_to_depth

    h, w = img.shape[-2:]
    x = _resize_images(img, size)
    if min(x.shape[-2:]) < _DEPTH_MIN_SIDE:
        raise InputError(f"DepthNet input of {x.shape[-1]}x{x.shape[-2]} pixels is too small: both sides must be "
                         f">= {_DEPTH_MIN_SIDE} (pass a larger working size)")
    out = model(x)
    if getattr(model, "stereo", False):
        d = out["disp_left"][0].float()
        if tuple(d.shape[-2:]) != (h, w):
            d = F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False)
        disp_px = (d * w).clamp(min=1e-6)  # fraction of the width -> pixels of the input
        fb = float(focal) * float(baseline) if focal and baseline else 1.0
        return fb / disp_px
    d = out["disp"][0].float()
    if tuple(d.shape[-2:]) != (h, w):
        d = F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False)
    return disp_to_depth(d, model.min_depth, model.max_depth)[1]


def _to_tensor(img: np.ndarray, device: torch.device, what: str) -> torch.Tensor:
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise InputError(f"{what}: expected an (H,W,3) RGB or (H,W) grey image, got shape {a.shape}")
    a = a[:, :, :3]
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float()
    if a.dtype == np.uint8:
        t = t / 255.0
    return t.unsqueeze(0).to(device)


class FlowPredictor:
    """``flow_fn(img1, img2) -> (fwd, bwd)`` on numpy images with a FlowNet (see :func:`load_flow_fn`)."""

    name = "network"

    def __init__(self, model: nn.Module, size=None):
        self.model = model
        self.size = size
        self.device = next(model.parameters()).device

    def __call__(self, img1: np.ndarray, img2: np.ndarray):
        """``(H,W,3)`` uint8 RGB frames -> two ``(H,W,2)`` float32 flows (1 -> 2, 2 -> 1)."""
        a = _to_tensor(img1, self.device, "flow input image 1")
        b = _to_tensor(img2, self.device, "flow input image 2")
        if a.shape != b.shape:
            raise InputError(f"flow: the two images differ in size ({a.shape[-1]}x{a.shape[-2]} vs "
                             f"{b.shape[-1]}x{b.shape[-2]})")
        f, g = predict_flow(self.model, a, b, self.size)
        return (np.ascontiguousarray(f[0].permute(1, 2, 0).cpu().numpy(), dtype=np.float32),
                np.ascontiguousarray(g[0].permute(1, 2, 0).cpu().numpy(), dtype=np.float32))


class DepthPredictor:
    """``depth_fn(img) -> (H,W)`` float32 depth with a DepthNet (see :func:`load_depth_fn`)."""

    def __init__(self, model: nn.Module, size=None, focal: Optional[float] = None, baseline: Optional[float] = None):
        self.model = model
        self.size = size
        self.focal, self.baseline = focal, baseline
        self.device = next(model.parameters()).device

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """``(H,W,3)`` uint8 RGB (or ``(H,W)`` grey) -> ``(H,W)`` float32 depth."""
        t = _to_tensor(img, self.device, "depth input image")
        d = predict_depth(self.model, t, self.size, self.focal, self.baseline)
        return np.ascontiguousarray(d[0, 0].cpu().numpy(), dtype=np.float32)


def load_flow_fn(path: PathLike, device="cpu", size: Optional[Sequence[int]] = None) -> Callable:
    """A VO flow backend from a FlowNet checkpoint: ``fn(img1, img2) -> (fwd, bwd)``.

    Args:
        path: training checkpoint with a ``flow`` network; device: see :func:`resolve_device`;
        size: working ``(H, W)`` (default: the training size in the checkpoint).
    Returns:
        a :class:`FlowPredictor`; it takes ``(H,W,3)`` uint8 frames and returns ``(H,W,2)``
        float32 flows at the input resolution.
    """
    model, wsize = load_flownet(path, device, size)
    return FlowPredictor(model, wsize)


def load_depth_fn(path: PathLike, device="cpu", size: Optional[Sequence[int]] = None,
                  focal: Optional[float] = None, baseline: Optional[float] = None) -> Callable:
    """A depth callable from a DepthNet checkpoint: ``fn(img) -> (H,W)`` float32 depth.

    Monocular networks give depth up to scale (their ``min_depth``..``max_depth`` range); stereo
    networks give metric depth when ``focal`` (px, at the input resolution) and ``baseline`` (m)
    are given.
    """
    model, wsize = load_depthnet(path, device, size)
    if getattr(model, "stereo", False) and not (focal and baseline):
        log.warning("%s holds a stereo DepthNet: without focal and baseline its depth is only up to scale", path)
    return DepthPredictor(model, wsize, focal, baseline)


# --------------------------------------------------------------------------------------------
# flow files and colour coding
# --------------------------------------------------------------------------------------------


def _check_flow(flow: np.ndarray, what: str) -> np.ndarray:
    f = np.asarray(flow)
    if f.ndim != 3 or f.shape[2] != 2:
        raise InputError(f"{what}: expected an (H,W,2) flow, got shape {f.shape}")
    return f


def write_flo(path: PathLike, flow: np.ndarray) -> None:
    """Write ``(H,W,2)`` flow (channel 0 = x) as a Middlebury ``.flo`` file, atomically.

    Format: the float32 tag 202021.25 (bytes ``PIEH``), int32 width, int32 height, then
    ``H*W*2`` float32 values (u, v interleaved, row-major), all little-endian.
    """
    f = _check_flow(flow, str(path)).astype("<f4")
    h, w = f.shape[:2]
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([w, h], "<i4").tobytes()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(np.ascontiguousarray(f).tobytes())


def read_flo(path: PathLike) -> np.ndarray:
    """Read a Middlebury ``.flo`` file -> ``(H,W,2)`` float32.

    Raises:
        InputError: missing file, wrong tag, or a size that does not match the data.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read flow file ({exc.strerror})") from None
    if len(raw) < 12 or np.frombuffer(raw[:4], "<f4")[0] != np.float32(FLO_MAGIC):
        raise InputError(f"{path}: not a Middlebury .flo file (bad header tag)")
    w, h = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    n = 2 * w * h
    if w <= 0 or h <= 0 or len(raw) != 12 + 4 * n:
        raise InputError(f"{path}: .flo header says {w}x{h} but the file holds {(len(raw) - 12) // 4} values")
    return np.frombuffer(raw[12:], "<f4").reshape(h, w, 2).astype(np.float32)


def write_flow_outputs(out_dir: PathLike, stem: str, flow: np.ndarray, max_flow: Optional[float] = None) -> dict:
    """Write ``out_dir/flo/<stem>.flo`` and the colour image ``out_dir/vis/<stem>.png``; returns the paths."""
    from trianflow.io.depth import write_rgb_png
    from trianflow.viz.colormaps import flow_to_color

    out = Path(out_dir)
    (out / "flo").mkdir(parents=True, exist_ok=True)
    (out / "vis").mkdir(parents=True, exist_ok=True)
    paths = {"flo": out / "flo" / f"{stem}.flo", "vis": out / "vis" / f"{stem}.png"}
    write_flo(paths["flo"], flow)
    write_rgb_png(paths["vis"], flow_to_color(flow, max_flow))
    return paths


def write_depth_outputs(out_dir: PathLike, stem: str, depth: np.ndarray) -> dict:
    """Write ``out_dir/depth/<stem>.png`` (16-bit, depth x 256 as KITTI), ``out_dir/npy/<stem>.npy``
    (float32) and ``out_dir/vis/<stem>.png`` (inverse-depth colour map); returns the paths."""
    from trianflow.io.depth import write_depth_npy, write_kitti_depth_png, write_rgb_png
    from trianflow.viz.colormaps import colorize_inverse_depth

    out = Path(out_dir)
    for sub in ("depth", "npy", "vis"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    paths = {"png": out / "depth" / f"{stem}.png", "npy": out / "npy" / f"{stem}.npy",
             "vis": out / "vis" / f"{stem}.png"}
    write_kitti_depth_png(paths["png"], depth)
    write_depth_npy(paths["npy"], depth)
    write_rgb_png(paths["vis"], colorize_inverse_depth(depth))
    return paths
