"""Single-image depth evaluation: the seven Eigen et al. metrics, KITTI crops, median scaling.

Protocol (as in the standard KITTI Eigen-split evaluation of SfMLearner / Monodepth / TrianFlow):

1. Pixels evaluated: ground truth finite and ``min_depth < gt < max_depth`` (defaults 1e-3 and
   80 m), inside the optional crop (``"garg"``, ``"eigen"`` or ``"none"``).
2. If the prediction has another resolution than the ground truth, it is resized to the ground
   truth's resolution with bilinear interpolation (:func:`resize_prediction`; disparity
   predictions are also multiplied by ``W_gt / W_pred``). The ground truth is never resized.
3. With ``median_scaling`` (monocular predictions, known only up to scale) the prediction is
   multiplied by ``ratio = median(gt) / median(pred)`` over the evaluated pixels; without it
   (stereo / metric predictions) it is used as is.
4. The prediction is clamped to ``[min_depth, max_depth]`` (a ``+inf`` prediction counts as
   ``max_depth``, a prediction <= 0 as ``min_depth``; NaN at an evaluated pixel is an error).
5. The metrics are computed per image and then averaged over images (not pooled over pixels).

Crops (fractions of the GT height ``h`` / width ``w``; rows ``[int(a*h), int(b*h))``, columns
``[int(c*w), int(d*w))``), named as in Monodepth's / SfMLearner's ``--garg_crop`` / ``--eigen_crop``:

- ``garg``: rows 0.40810811-0.99189189, cols 0.03594771-0.96405229 (Garg et al. ECCV 2016); this
  is the crop that Monodepth2 and TrianFlow apply for their KITTI Eigen-split numbers.
- ``eigen``: rows 0.3324324-0.91351351, cols 0.0359477-0.96405229 (reproduces Eigen et al. NIPS 2014).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np

from trianflow.errors import InputError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

DEPTH_METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
CROPS = ("none", "garg", "eigen")
MAP_SUFFIXES = (".npy", ".npz", ".png")

_GARG = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
_EIGEN = (0.3324324, 0.91351351, 0.0359477, 0.96405229)

__all__ = [
    "DEPTH_METRIC_KEYS",
    "CROPS",
    "EmptyMaskError",
    "DepthEvalResult",
    "compute_depth_metrics",
    "garg_crop_mask",
    "eigen_crop_mask",
    "crop_mask",
    "resize_prediction",
    "evaluate_depth_pair",
    "depth_error_image",
    "match_depth_files",
    "load_depth_map",
    "evaluate_depth_folder",
]


class EmptyMaskError(InputError):
    """No ground-truth pixel is left to evaluate in an image (after range and crop)."""


# ----------------------------------------------------------------------------- metrics


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def compute_depth_metrics(pred, gt, mask=None) -> dict:
    """The seven depth metrics of Eigen et al. over the pixels in ``mask``.

    Args:
        pred: ``(...)`` predicted depth (numpy or torch), > 0 on ``mask``.
        gt: ground-truth depth of the same shape, > 0 on ``mask``.
        mask: optional bool array of the same shape (default: every pixel).
    Returns:
        dict with python floats: ``abs_rel = mean(|p-g|/g)``, ``sq_rel = mean((p-g)^2/g)``,
        ``rmse = sqrt(mean((p-g)^2))``, ``rmse_log = sqrt(mean((log p - log g)^2))`` and
        ``a1, a2, a3`` = fraction of pixels with ``max(p/g, g/p) < 1.25, 1.25^2, 1.25^3``.
    Raises:
        EmptyMaskError if no pixel is selected; InputError for non-positive or non-finite values.
    """
    p = _np(pred).astype(np.float64)
    g = _np(gt).astype(np.float64)
    if p.shape != g.shape:
        raise InputError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    if mask is not None:
        m = _np(mask).astype(bool)
        if m.shape != g.shape:
            raise InputError(f"mask shape {m.shape} differs from ground truth shape {g.shape}")
        p, g = p[m], g[m]
    else:
        p, g = p.ravel(), g.ravel()
    if g.size == 0:
        raise EmptyMaskError("no valid ground-truth pixel to evaluate")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(g))):
        raise InputError("depth metrics need finite prediction and ground truth on the evaluated pixels")
    if np.any(p <= 0) or np.any(g <= 0):
        raise InputError("depth metrics need prediction and ground truth > 0 on the evaluated pixels")
    thresh = np.maximum(g / p, p / g)
    diff = p - g
    log_diff = np.log(p) - np.log(g)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff**2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


# ----------------------------------------------------------------------------- crops


def _frac_mask(h: int, w: int, fr) -> np.ndarray:
    if h <= 0 or w <= 0:
        raise InputError(f"crop mask needs a positive image size, got {h}x{w}")
    m = np.zeros((h, w), dtype=bool)
    r0, r1 = int(fr[0] * h), int(fr[1] * h)
    c0, c1 = int(fr[2] * w), int(fr[3] * w)
    m[r0:r1, c0:c1] = True
    return m


def garg_crop_mask(h: int, w: int) -> np.ndarray:
    """``(h,w)`` bool mask of the Garg crop: rows ``[int(.40810811h), int(.99189189h))``,
    cols ``[int(.03594771w), int(.96405229w))`` (used by Monodepth2 / TrianFlow on KITTI Eigen)."""
    return _frac_mask(h, w, _GARG)


def eigen_crop_mask(h: int, w: int) -> np.ndarray:
    """``(h,w)`` bool mask of the Eigen crop: rows ``[int(.3324324h), int(.91351351h))``,
    cols ``[int(.0359477w), int(.96405229w))`` (Eigen et al. NIPS 2014)."""
    return _frac_mask(h, w, _EIGEN)


def crop_mask(crop: Optional[str], h: int, w: int) -> np.ndarray:
    """``(h,w)`` bool mask for a crop name in ``("none", "garg", "eigen")`` (``None`` = ``"none"``)."""
    crop = (crop or "none").lower()
    if crop == "none":
        return np.ones((h, w), dtype=bool)
    if crop == "garg":
        return garg_crop_mask(h, w)
    if crop == "eigen":
        return eigen_crop_mask(h, w)
    raise InputError(f"unknown crop {crop!r}: use one of {', '.join(CROPS)}")


# ----------------------------------------------------------------------------- pair evaluation


def resize_prediction(pred, shape: Sequence[int], kind: str = "depth") -> np.ndarray:
    """Resize an ``(h,w)`` prediction to ``shape = (H,W)`` with bilinear interpolation.

    For ``kind="disp"`` the values are multiplied by ``W / w`` (disparity is measured in pixels of
    the image width); depth values are unchanged. Returns ``(H,W)`` float64 for float64 input, else
    float32; a prediction already of that size is returned unchanged.
    """
    import cv2

    p = _np(pred)
    p = p.astype(np.float64 if p.dtype == np.float64 else np.float32)
    if p.ndim != 2:
        raise InputError(f"prediction must be (H,W), got shape {p.shape}")
    H, W = int(shape[0]), int(shape[1])
    if p.shape == (H, W):
        return p
    out = cv2.resize(p, (W, H), interpolation=cv2.INTER_LINEAR)
    if kind == "disp":
        out = out * (W / p.shape[1])
    elif kind != "depth":
        raise InputError(f"unknown prediction kind {kind!r}: use depth or disp")
    return out


def evaluate_depth_pair(pred, gt, crop: Optional[str] = "none", min_depth: float = 1e-3,
                        max_depth: float = 80.0, median_scaling: bool = False, gt_valid=None):
    """Evaluate one predicted depth map against ground truth (protocol in the module docstring).

    Args:
        pred: ``(h,w)`` predicted depth (metres, or unit-less with ``median_scaling``); resized to
            the GT size with bilinear interpolation when ``(h,w) != (H,W)``.
        gt: ``(H,W)`` ground-truth depth in metres; 0 / non-finite = unknown.
        crop: ``"none"``, ``"garg"`` or ``"eigen"``.
        min_depth, max_depth: GT range evaluated and clamp range of the prediction.
        median_scaling: scale the prediction by ``median(gt)/median(pred)`` first.
        gt_valid: optional ``(H,W)`` bool mask of extra GT validity.
    Returns:
        ``(metrics, ratio)``: the dict of :func:`compute_depth_metrics` plus ``n_pixels``, and the
        median-scaling ratio (``None`` without median scaling).
    Raises:
        EmptyMaskError when no GT pixel is left; InputError for NaN predictions on evaluated pixels
        or a prediction whose median is not positive.
    """
    if not (0 < min_depth < max_depth):
        raise InputError(f"need 0 < min_depth < max_depth, got {min_depth} and {max_depth}")
    g = _np(gt).astype(np.float64)
    if g.ndim != 2:
        raise InputError(f"ground truth must be (H,W), got shape {g.shape}")
    p = _np(pred).astype(np.float64)
    p = np.where(np.isposinf(p), max_depth, p)
    p = np.where(np.isneginf(p), min_depth, p)
    p = resize_prediction(p, g.shape, "depth").astype(np.float64)
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(g) & (g > min_depth) & (g < max_depth)
    mask &= crop_mask(crop, *g.shape)
    if gt_valid is not None:
        gv = _np(gt_valid).astype(bool)
        if gv.shape != g.shape:
            raise InputError(f"gt_valid shape {gv.shape} differs from ground truth shape {g.shape}")
        mask &= gv
    if not mask.any():
        raise EmptyMaskError(
            f"no ground-truth pixel in ({min_depth:g}, {max_depth:g}) m inside crop {crop or 'none'!r}"
        )
    pv, gv_ = p[mask], g[mask]
    n_nan = int(np.isnan(pv).sum())
    if n_nan:
        raise InputError(f"prediction has NaN at {n_nan} evaluated pixel(s)")
    ratio = None
    if median_scaling:
        med = float(np.median(pv))
        if not (np.isfinite(med) and med > 0):
            raise InputError(f"median of the prediction over the evaluated pixels is {med}; cannot median-scale")
        ratio = float(np.median(gv_)) / med
        pv = pv * ratio
    pv = np.clip(pv, min_depth, max_depth)
    metrics = compute_depth_metrics(pv, gv_)
    metrics["n_pixels"] = int(mask.sum())
    return metrics, ratio


def depth_error_image(pred, gt, crop: Optional[str] = "none", min_depth: float = 1e-3,
                      max_depth: float = 80.0, ratio: Optional[float] = None, vmax: float = 0.3) -> np.ndarray:
    """A visual check of one prediction: ``(2H,W,3)`` uint8 RGB.

    Top: the (resized) prediction as a colour-mapped inverse depth. Bottom: the abs-rel error
    ``|p-g|/g`` at the evaluated GT pixels on a fixed ``[0, vmax]`` jet scale (blue = good, red >=
    ``vmax``), black where there is no GT; sparse GT (< 50 % density) is dilated by one pixel so
    that it is visible. ``ratio`` is the median-scaling factor applied to the prediction (if any).
    """
    import cv2

    from trianflow.viz.colormaps import colorize_error, colorize_inverse_depth

    g = _np(gt).astype(np.float64)
    p = resize_prediction(np.nan_to_num(_np(pred).astype(np.float64), nan=0.0, posinf=max_depth, neginf=0.0),
                          g.shape).astype(np.float64)
    if ratio is not None:
        p = p * ratio
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(g) & (g > min_depth) & (g < max_depth) & crop_mask(crop, *g.shape)
    pc = np.clip(p, min_depth, max_depth)
    err = np.zeros_like(g, dtype=np.float32)
    err[mask] = (np.abs(pc[mask] - g[mask]) / g[mask]).astype(np.float32)
    m8 = mask.astype(np.uint8)
    if mask.mean() < 0.5:
        kernel = np.ones((3, 3), np.uint8)
        err = cv2.dilate(err, kernel)
        m8 = cv2.dilate(m8, kernel)
    top = colorize_inverse_depth(pc)
    bottom = colorize_error(err, m8.astype(bool), vmax=vmax)
    return np.concatenate([top, bottom], axis=0)


# ----------------------------------------------------------------------------- files and folders


@dataclass
class DepthEvalResult:
    """Result of :func:`evaluate_depth_folder`.

    Attributes:
        metrics: the seven metrics averaged over the evaluated images.
        per_image: one dict per evaluated image: ``name``, the seven metrics, ``n_pixels``, ``ratio``.
        n_images: number of images evaluated.
        skipped: names of matched images skipped because no GT pixel was left (``n_skipped``).
        unmatched_pred, unmatched_gt: file stems without a partner on the other side.
        median_scaling: whether median scaling was applied.
        ratio_median: median of the per-image median-scaling ratios (``None`` without scaling).
        ratio_std: spread of the ratios, ``std(ratios / ratio_median)`` (as reported by Monodepth2).
    """

    metrics: dict
    per_image: list
    n_images: int
    skipped: list = field(default_factory=list)
    unmatched_pred: list = field(default_factory=list)
    unmatched_gt: list = field(default_factory=list)
    median_scaling: bool = False
    ratio_median: Optional[float] = None
    ratio_std: Optional[float] = None
    crop: str = "none"
    min_depth: float = 1e-3
    max_depth: float = 80.0

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def to_dict(self) -> dict:
        """Flat JSON-ready dict: the seven metrics, ``n_images``, ``n_skipped``, settings, and
        ``median_scaling_ratio`` / ``ratio_std`` when median scaling was used."""
        out = {k: float(self.metrics[k]) for k in DEPTH_METRIC_KEYS}
        out.update(n_images=self.n_images, n_skipped=self.n_skipped,
                   n_unmatched_pred=len(self.unmatched_pred), n_unmatched_gt=len(self.unmatched_gt),
                   crop=self.crop, min_depth=self.min_depth, max_depth=self.max_depth,
                   median_scaling=self.median_scaling)
        if self.median_scaling:
            out["median_scaling_ratio"] = self.ratio_median
            out["ratio_std"] = self.ratio_std
        return out


@dataclass(frozen=True)
class _MapRef:
    name: str
    path: Path
    index: Optional[int] = None  # frame index inside a (N,H,W) stack file


def _is_stack(path: Path) -> bool:
    if path.suffix.lower() not in (".npy", ".npz"):
        return False
    from trianflow.io.depth import read_depth_stack

    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception:  # noqa: BLE001 - reported properly when loaded
            return False
        shape = arr.shape
    else:
        shape = read_depth_stack(path).shape
    return len(shape) == 3 and shape[0] > 1 or (len(shape) == 4 and shape[1] == 1 and shape[0] > 1)


def _stack_len(path: Path) -> int:
    from trianflow.io.depth import read_depth_stack

    return int(read_depth_stack(path).shape[0])


def _list_maps(path: Path, role: str) -> dict:
    if not path.exists():
        raise InputError(f"{path}: {role} not found (give a file or a folder of .npy/.png maps)")
    if path.is_file():
        if path.suffix.lower() not in MAP_SUFFIXES:
            raise InputError(f"{path}: unsupported {role} file type; use .npy, .npz or a 16-bit .png")
        if _is_stack(path):
            return {f"{i:06d}": _MapRef(f"{i:06d}", path, i) for i in range(_stack_len(path))}
        return {path.stem: _MapRef(path.stem, path)}
    out: dict = {}
    for f in sorted(path.iterdir()):
        if f.name.startswith(".") or not f.is_file() or f.suffix.lower() not in MAP_SUFFIXES:
            continue
        if f.stem in out:
            raise InputError(f"{path}: two {role} files share the name {f.stem!r} "
                             f"({out[f.stem].path.name}, {f.name}); keep one per frame")
        out[f.stem] = _MapRef(f.stem, f)
    if not out:
        raise InputError(f"{path}: no .npy/.npz/.png {role} files in this folder")
    return out


def match_depth_files(pred_path: PathLike, gt_path: PathLike):
    """Pair prediction and GT maps.

    - two single map files: paired whatever their names;
    - two ``(N,H,W)`` stack files: paired by index (N must agree);
    - folders (or a file and a folder): matched by file stem (``000000_10.npy`` <-> ``000000_10.png``).

    Returns:
        ``(pairs, unmatched_pred, unmatched_gt)`` with ``pairs`` a sorted list of
        ``(name, pred_ref, gt_ref)``.
    Raises:
        InputError when nothing matches (with examples of both sides) or stack lengths differ.
    """
    pred_path, gt_path = Path(pred_path), Path(gt_path)
    preds = _list_maps(pred_path, "prediction")
    gts = _list_maps(gt_path, "ground truth")
    p_stack = pred_path.is_file() and next(iter(preds.values())).index is not None
    g_stack = gt_path.is_file() and next(iter(gts.values())).index is not None
    if p_stack or g_stack:
        if not (p_stack and g_stack):
            raise InputError(f"{pred_path if p_stack else gt_path} is an (N,H,W) stack: the other side must be "
                             "a stack of the same length too (or give folders of per-frame files)")
        if len(preds) != len(gts):
            raise InputError(f"stack lengths differ: {len(preds)} predictions in {pred_path}, "
                             f"{len(gts)} ground-truth maps in {gt_path}")
        return [(n, preds[n], gts[n]) for n in sorted(preds)], [], []
    if pred_path.is_file() and gt_path.is_file():
        (pn, pr), (_, gr) = next(iter(preds.items())), next(iter(gts.items()))
        return [(pn, pr, gr)], [], []
    names = sorted(set(preds) & set(gts))
    unmatched_pred = sorted(set(preds) - set(gts))
    unmatched_gt = sorted(set(gts) - set(preds))
    if not names:
        raise InputError(
            f"no file stem of {pred_path} matches one of {gt_path} (e.g. prediction {next(iter(preds))!r} vs "
            f"ground truth {next(iter(gts))!r}); name predictions like the GT files (000000_10.npy for 000000_10.png)"
        )
    return [(n, preds[n], gts[n]) for n in names], unmatched_pred, unmatched_gt


def _auto_kind(ref: _MapRef) -> str:
    where = (ref.path.parent.name + "/" + ref.path.stem).lower()
    return "disp" if "disp" in where else "depth"


def _calib_for(calib, name: str):
    """Resolve the StereoCalib for frame ``name`` from ``calib`` (None, StereoCalib, file or folder)."""
    from trianflow.io.depth import StereoCalib, read_stereo_calib

    if calib is None or isinstance(calib, StereoCalib):
        return calib
    c = Path(calib)
    if c.is_dir():
        for cand in (c / f"{name}.txt", c / f"{name.split('_')[0]}.txt"):
            if cand.is_file():
                return read_stereo_calib(cand)
        raise InputError(f"{c}: no calibration {name}.txt or {name.split('_')[0]}.txt for frame {name!r}")
    return read_stereo_calib(c)


def load_depth_map(ref, kind: str = "auto", calib=None, shape: Optional[Sequence[int]] = None) -> np.ndarray:
    """Load one depth map in metres (``(H,W)`` float32, 0 where unknown).

    Args:
        ref: a path (or an internal stack reference from :func:`match_depth_files`).
        kind: ``"depth"`` (metres), ``"disp"`` (pixels, converted with ``calib``) or ``"auto"``
            (``"disp"`` when the file or folder name contains "disp", else ``"depth"``).
            ``.png`` files are 16-bit KITTI PNGs (value / 256); ``.npy`` files hold the values.
        calib: :class:`trianflow.io.depth.StereoCalib`, a calibration file, or a folder of per-frame
            files ``<name>.txt`` / ``<name before '_'>.txt``; required for disparity.
        shape: for a disparity map, the ``(H,W)`` to resize it to before conversion (bilinear,
            values scaled by the width ratio) so that ``calib`` (given at that resolution) applies.
    """
    from trianflow.io.depth import (disparity_to_depth, read_depth_stack, read_kitti_depth_png,
                                    read_kitti_disp_png, read_npy_map)

    if not isinstance(ref, _MapRef):
        ref = _MapRef(Path(ref).stem, Path(ref))
    if kind == "auto":
        kind = _auto_kind(ref)
    if kind not in ("depth", "disp"):
        raise InputError(f"unknown map kind {kind!r}: use depth, disp or auto")
    suffix = ref.path.suffix.lower()
    if ref.index is not None:
        values = read_depth_stack(ref.path)[ref.index]
    elif suffix == ".png":
        values = read_kitti_disp_png(ref.path) if kind == "disp" else read_kitti_depth_png(ref.path)
    else:
        values = read_npy_map(ref.path)
    if kind == "depth":
        return values.astype(np.float32)
    cal = _calib_for(calib, ref.name)
    if cal is None:
        raise InputError(f"{ref.path}: is a disparity map; give --calib (KITTI calib_cam_to_cam, P2/P3 calib, "
                         "Middlebury calib.txt or 'focal baseline')")
    if shape is not None and tuple(values.shape) != tuple(shape):
        values = resize_prediction(np.where(np.isfinite(values), values, 0.0), shape, "disp")
    return disparity_to_depth(values, cal.focal, cal.baseline, cal.doffs)


def evaluate_depth_folder(pred_path: PathLike, gt_path: PathLike, calib=None, crop: Optional[str] = "none",
                          min_depth: float = 1e-3, max_depth: float = 80.0, median_scaling: bool = False,
                          gt_kind: str = "auto", pred_kind: str = "depth", vis_dir: Optional[PathLike] = None,
                          progress: Optional[Callable[[Iterable], Iterable]] = None) -> DepthEvalResult:
    """Evaluate prediction files against ground-truth files (matched by :func:`match_depth_files`).

    Args:
        pred_path, gt_path: files or folders (``.npy`` / ``.npz`` / 16-bit KITTI ``.png``).
        calib: for disparity GT or predictions: see :func:`load_depth_map`.
        crop, min_depth, max_depth, median_scaling: see :func:`evaluate_depth_pair`.
        gt_kind: ``"auto"`` (disparity if the GT file/folder name contains "disp"), ``"depth"``,
            ``"disp"``.
        pred_kind: ``"depth"`` (default) or ``"disp"`` (pixel disparity; resized to the GT size with
            values scaled by the width ratio, then converted with ``calib``).
        vis_dir: if given, write ``<vis_dir>/<name>.png`` (:func:`depth_error_image`) atomically.
        progress: optional wrapper of the pair list (e.g. ``tqdm``) for progress display.
    Returns:
        :class:`DepthEvalResult`. Images whose GT mask is empty are skipped with a warning.
    Raises:
        InputError when nothing matches or every matched image has an empty GT mask.
    """
    from trianflow.io.depth import write_rgb_png

    crop = (crop or "none").lower()
    crop_mask(crop, 1, 1)  # validate the name early
    if calib is not None and not hasattr(calib, "focal") and not Path(calib).exists():
        raise InputError(f"{calib}: calibration file or folder not found")
    pairs, unmatched_pred, unmatched_gt = match_depth_files(pred_path, gt_path)
    if unmatched_pred:
        log.warning("%d prediction(s) without ground truth ignored (e.g. %s)", len(unmatched_pred), unmatched_pred[0])
    if unmatched_gt:
        log.warning("%d ground-truth file(s) without prediction ignored (e.g. %s)", len(unmatched_gt), unmatched_gt[0])
    per_image, skipped, ratios = [], [], []
    iterable = progress(pairs) if progress is not None else pairs
    for name, pref, gref in iterable:
        gt = load_depth_map(gref, gt_kind, calib)
        pred = load_depth_map(pref, pred_kind, calib, shape=gt.shape)
        if pred.shape != gt.shape:
            log.debug("%s: prediction %s resized to GT %s (bilinear)", name, pred.shape, gt.shape)
        try:
            metrics, ratio = evaluate_depth_pair(pred, gt, crop, min_depth, max_depth, median_scaling)
        except EmptyMaskError as exc:
            log.warning("%s: skipped (%s)", gref.path if gref.index is None else f"{gref.path}[{gref.index}]", exc)
            skipped.append(name)
            continue
        except InputError as exc:
            raise InputError(f"{pref.path}: {exc}") from exc
        metrics = {"name": name, **metrics, "ratio": ratio}
        per_image.append(metrics)
        if ratio is not None:
            ratios.append(ratio)
        if vis_dir is not None:
            write_rgb_png(Path(vis_dir) / f"{name}.png",
                          depth_error_image(pred, gt, crop, min_depth, max_depth, ratio))
    if not per_image:
        raise InputError(f"{gt_path}: no ground-truth pixel in ({min_depth:g}, {max_depth:g}) m inside crop "
                         f"{crop!r} in any of the {len(pairs)} matched image(s); check --max-depth, --crop and the GT kind")
    mean = {k: float(np.mean([m[k] for m in per_image])) for k in DEPTH_METRIC_KEYS}
    ratio_median = ratio_std = None
    if ratios:
        r = np.asarray(ratios)
        ratio_median = float(np.median(r))
        ratio_std = float(np.std(r / ratio_median))
    return DepthEvalResult(metrics=mean, per_image=per_image, n_images=len(per_image), skipped=skipped,
                           unmatched_pred=unmatched_pred, unmatched_gt=unmatched_gt,
                           median_scaling=median_scaling, ratio_median=ratio_median, ratio_std=ratio_std,
                           crop=crop, min_depth=min_depth, max_depth=max_depth)
