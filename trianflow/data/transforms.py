"""Transforms on sample dicts that keep intrinsics, poses and dense ground truth consistent.

Every transform is a callable ``sample -> sample`` (it may modify and return the same dict).
Keys follow :mod:`trianflow.data`: images ``(3,H,W)`` float32 in [0,1]; ``K (3,3)``;
``pose_gt (4,4)`` T_1to2; ``baseline ()``; dense ground truth ``depth_gt``/``disp_gt``/
``flow_valid`` ``(1,H,W)`` and ``flow_gt (2,H,W)``.

- :class:`Resize` resizes images (bilinear, antialiased) and dense ground truth (nearest, centre
  aligned; ``disp_gt`` and ``flow_gt`` rescaled), with ``cx' = (cx + 0.5) * s - 0.5``.
- :class:`RandomScaleCrop` zooms in by a random factor and crops back to the same size.
- :class:`RandomHorizontalFlip` mirrors everything (``cx' = W - 1 - cx``, ``pose' = S T S`` with
  ``S = diag(-1,1,1)``, flow x negated); a stereo sample also swaps left and right so that the
  right camera stays at +x and ``baseline`` stays positive (its dense ground truth is zeroed).
- :class:`ColorJitter` writes colour-jittered copies ``<key>_aug`` of every image (brightness,
  contrast, saturation, hue rotation, gamma), with the same random parameters for all images of
  one sample; the un-jittered images are kept for the losses.
- :class:`TransformedDataset` applies a transform (and adds the ``*_aug`` copies) to the samples
  of another dataset.

Image keys that these transforms know: ``image``, ``image_next``, ``image_prev``, ``image_right``,
``image_next_right``, ``image_prev_right`` and their ``*_aug`` copies.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from trianflow.geometry.camera import crop_intrinsics, flip_intrinsics, scale_intrinsics

BASE_IMAGE_KEYS = ("image", "image_next", "image_prev", "image_right", "image_next_right", "image_prev_right")
DENSE_KEYS = ("depth_gt", "disp_gt", "flow_gt", "flow_valid")


def image_keys(sample: dict, with_aug: bool = True) -> list:
    """Image keys present in ``sample`` (base keys first, then their ``*_aug`` copies)."""
    keys = [k for k in BASE_IMAGE_KEYS if k in sample]
    if with_aug:
        keys += [k + "_aug" for k in BASE_IMAGE_KEYS if k + "_aug" in sample]
    return keys


def to_image_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H,W,3)`` (or ``(H,W)``) uint8 -> ``(3,H,W)`` float32 in [0,1] (grey repeated to 3 channels)."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().div_(255.0)


def add_aug_copies(sample: dict) -> dict:
    """Make sure every image has an ``<key>_aug`` entry (the image itself when not jittered)."""
    for k in image_keys(sample, with_aug=False):
        sample.setdefault(k + "_aug", sample[k])
    return sample


def image_size(sample: dict) -> Tuple[int, int]:
    """``(H, W)`` of the sample's ``image``."""
    return tuple(sample["image"].shape[-2:])


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Iterable[Callable]):
        self.transforms = [t for t in transforms if t is not None]

    def __call__(self, sample: dict) -> dict:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


# ----------------------------------------------------------------------------------------------
# geometry


def _resize_dense(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x[None].float(), size=size, mode="nearest-exact")[0].to(x.dtype)


def resize_sample(sample: dict, size: Tuple[int, int]) -> dict:
    """Resize every image and dense map of ``sample`` to ``size = (H, W)`` and rescale ``K``.

    Images: bilinear with antialiasing (pixel-centre aligned). Dense maps: nearest (pixel-centre
    aligned); ``disp_gt`` is multiplied by the x scale, ``flow_gt`` channels by the x / y scales.
    """
    h0, w0 = image_size(sample)
    h, w = int(size[0]), int(size[1])
    if (h, w) == (h0, w0):
        return sample
    sx, sy = w / w0, h / h0
    resized = {}
    for k in image_keys(sample):
        img = sample[k]
        if id(img) not in resized:  # *_aug copies may share the tensor with their base image
            resized[id(img)] = F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False,
                                             antialias=True)[0].clamp_(0.0, 1.0)
        sample[k] = resized[id(img)]
    if "depth_gt" in sample:
        sample["depth_gt"] = _resize_dense(sample["depth_gt"], (h, w))
    if "flow_valid" in sample:
        sample["flow_valid"] = _resize_dense(sample["flow_valid"], (h, w))
    if "disp_gt" in sample:
        sample["disp_gt"] = _resize_dense(sample["disp_gt"], (h, w)) * sx
    if "flow_gt" in sample:
        f = _resize_dense(sample["flow_gt"], (h, w))
        sample["flow_gt"] = f * torch.tensor([sx, sy], dtype=f.dtype).view(2, 1, 1)
    if "K" in sample:
        sample["K"] = scale_intrinsics(sample["K"], sx, sy)
    return sample


def crop_sample(sample: dict, x0: int, y0: int, h: int, w: int) -> dict:
    """Crop every image and dense map to rows ``y0:y0+h``, columns ``x0:x0+w``; shift ``K``."""
    for k in image_keys(sample) + [k for k in DENSE_KEYS if k in sample]:
        sample[k] = sample[k][..., y0:y0 + h, x0:x0 + w]
    if "K" in sample:
        sample["K"] = crop_intrinsics(sample["K"], x0, y0)
    return sample


_S = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


def _mirror_pose(T: torch.Tensor) -> torch.Tensor:
    S = _S.to(T.dtype)
    return S @ T @ S


def hflip_sample(sample: dict) -> dict:
    """Mirror a sample left-right.

    Images and dense maps are flipped along W, ``flow_gt`` x is negated, ``K`` gets
    ``cx' = W - 1 - cx`` and ``pose_gt`` becomes ``S T S`` (S = diag(-1,1,1)). A stereo sample
    (with ``image_right``) also swaps left and right images (and ``image_next``/``image_prev``
    with ``image_next_right``/``image_prev_right``) so the right camera stays at +x; then
    ``pose_gt`` is converted to the (mirrored) right camera and the left-camera dense ground
    truth (``depth_gt``, ``disp_gt``, ``flow_gt``, ``flow_valid``) is zeroed (0 = unknown; the
    keys stay so that flipped and unflipped samples still collate into one batch).

    A stereo sample whose temporal neighbours have no right counterparts cannot be mirrored
    consistently: it is returned unchanged (use :func:`can_hflip` to check).
    """
    if not can_hflip(sample):
        return sample
    h, w = image_size(sample)
    flipped = {}
    for k in image_keys(sample):
        img = sample[k]
        if id(img) not in flipped:
            flipped[id(img)] = torch.flip(img, dims=[-1])
        sample[k] = flipped[id(img)]
    for k in ("depth_gt", "disp_gt", "flow_valid"):
        if k in sample:
            sample[k] = torch.flip(sample[k], dims=[-1])
    if "flow_gt" in sample:
        f = torch.flip(sample["flow_gt"], dims=[-1]).clone()
        f[0] = -f[0]
        sample["flow_gt"] = f
    if "K" in sample:
        sample["K"] = flip_intrinsics(sample["K"], w)
    stereo = "image_right" in sample
    if stereo:
        for base in ("image", "image_next", "image_prev"):
            right = base.replace("image", "image_right") if base == "image" else base + "_right"
            for suf in ("", "_aug"):
                if base + suf in sample and right + suf in sample:
                    sample[base + suf], sample[right + suf] = sample[right + suf], sample[base + suf]
        if "pose_gt" in sample:
            b = float(sample["baseline"]) if "baseline" in sample else 0.0
            B = torch.eye(4, dtype=sample["pose_gt"].dtype)
            B[0, 3] = -b  # left-camera coordinates -> right-camera coordinates
            sample["pose_gt"] = B @ sample["pose_gt"] @ torch.linalg.inv(B)
        for k in DENSE_KEYS:  # they belong to the old left camera: now unknown (zeros keep batches collatable)
            if k in sample:
                sample[k] = torch.zeros_like(sample[k])
    if "pose_gt" in sample:
        sample["pose_gt"] = _mirror_pose(sample["pose_gt"])
    return sample


def can_hflip(sample: dict) -> bool:
    """False for a stereo sample with a temporal neighbour that lacks its right image."""
    if "image_right" not in sample:
        return True
    return all(k + "_right" in sample for k in ("image_next", "image_prev") if k in sample)


class Resize:
    """Resize to ``size = (H, W)`` (see :func:`resize_sample`)."""

    def __init__(self, size: Tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: dict) -> dict:
        return resize_sample(sample, self.size)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class RandomScaleCrop:
    """Zoom in by a random factor in ``[1, max_scale]`` and crop a random window of the original size.

    ``K`` is scaled then shifted; dense maps are resized (nearest) and cropped alike.
    """

    def __init__(self, max_scale: float = 1.15, p: float = 0.5, generator: Optional[torch.Generator] = None):
        self.max_scale, self.p, self.generator = float(max_scale), float(p), generator

    def __call__(self, sample: dict) -> dict:
        r = torch.rand(4, generator=self.generator).tolist()
        if r[0] >= self.p or self.max_scale <= 1.0:
            return sample
        h, w = image_size(sample)
        s = 1.0 + r[1] * (self.max_scale - 1.0)
        h2, w2 = max(int(round(h * s)), h), max(int(round(w * s)), w)
        resize_sample(sample, (h2, w2))
        x0 = int(r[2] * (w2 - w + 1)) if w2 > w else 0
        y0 = int(r[3] * (h2 - h + 1)) if h2 > h else 0
        return crop_sample(sample, min(x0, w2 - w), min(y0, h2 - h), h, w)


class RandomHorizontalFlip:
    """Mirror the sample with probability ``p`` (see :func:`hflip_sample`)."""

    def __init__(self, p: float = 0.5, generator: Optional[torch.Generator] = None):
        self.p, self.generator = float(p), generator

    def __call__(self, sample: dict) -> dict:
        if torch.rand(1, generator=self.generator).item() < self.p:
            return hflip_sample(sample)
        return sample


# ----------------------------------------------------------------------------------------------
# colour

_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_GRAY = torch.tensor([0.299, 0.587, 0.114])


def jitter_image(img: torch.Tensor, brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0,
                 hue: float = 0.0, gamma: float = 1.0) -> torch.Tensor:
    """Colour-jitter one ``(3,H,W)`` image in [0,1] with given factors; returns a new tensor.

    Order: gamma ``x^gamma``, brightness ``x * b``, contrast around the image's mean grey level,
    saturation around each pixel's grey level, hue rotation by ``hue`` turns in YIQ space; the
    result is clamped to [0,1].
    """
    x = img.clamp(0.0, 1.0)
    if gamma != 1.0:
        x = x.pow(gamma)
    x = x * brightness
    gray_w = _GRAY.to(x.dtype).view(3, 1, 1)
    if contrast != 1.0:
        m = (x * gray_w).sum(0).mean()
        x = (x - m) * contrast + m
    if saturation != 1.0:
        g = (x * gray_w).sum(0, keepdim=True)
        x = g + (x - g) * saturation
    if hue != 0.0:
        a = 2 * math.pi * hue
        c, s = math.cos(a), math.sin(a)
        rot = torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=x.dtype)
        M = torch.linalg.inv(_RGB2YIQ.to(x.dtype)) @ rot @ _RGB2YIQ.to(x.dtype)
        x = torch.einsum("ij,jhw->ihw", M, x)
    return x.clamp(0.0, 1.0)


class ColorJitter:
    """Write colour-jittered ``<key>_aug`` copies of every image (same parameters within a sample).

    Factors are drawn uniformly: brightness in ``1 +- brightness``, contrast in ``1 +- contrast``,
    saturation in ``1 +- saturation``, hue shift in ``+- hue`` turns, gamma in ``gamma``. With
    probability ``1 - p`` the copies are un-jittered. The base images are never modified.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.05,
                 gamma: Sequence[float] = (0.8, 1.2), p: float = 1.0, generator: Optional[torch.Generator] = None):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.gamma = (float(gamma[0]), float(gamma[1]))
        self.p, self.generator = float(p), generator

    def sample_params(self) -> dict:
        """Draw one set of jitter factors (a dict of floats for :func:`jitter_image`)."""
        r = torch.rand(6, generator=self.generator).tolist()
        if r[0] >= self.p:
            return dict(brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, gamma=1.0)
        u = lambda x, a: 1.0 + (2 * x - 1) * a  # noqa: E731
        return dict(
            brightness=u(r[1], self.brightness), contrast=u(r[2], self.contrast),
            saturation=u(r[3], self.saturation), hue=(2 * r[4] - 1) * self.hue,
            gamma=self.gamma[0] + r[5] * (self.gamma[1] - self.gamma[0]),
        )

    def __call__(self, sample: dict) -> dict:
        params = self.sample_params()
        for k in image_keys(sample, with_aug=False):
            sample[k + "_aug"] = jitter_image(sample[k], **params)
        return sample


def default_train_transform(size: Optional[Tuple[int, int]] = (256, 832), flip: bool = True, jitter: bool = True,
                            scale_crop: float = 1.0) -> Compose:
    """Resize to ``size`` (None keeps the size), optional random scale-crop (``scale_crop > 1``),
    random horizontal flip and colour jitter, in that order."""
    return Compose([
        Resize(size) if size is not None else None,
        RandomScaleCrop(scale_crop) if scale_crop > 1.0 else None,
        RandomHorizontalFlip() if flip else None,
        ColorJitter() if jitter else None,
    ])


def default_eval_transform(size: Optional[Tuple[int, int]] = (256, 832)) -> Compose:
    """Resize only (the ``*_aug`` keys are plain copies)."""
    return Compose([Resize(size) if size is not None else None])


class TransformedDataset(Dataset):
    """Apply a sample transform (augmentation) to the samples of another dataset.

    Args:
        dataset: map-style dataset of sample dicts.
        transform: callable ``sample -> sample`` or None; ``*_aug`` copies are added afterwards.
        length: expose this many items, cycling over ``dataset`` (None: ``len(dataset)``).
    """

    def __init__(self, dataset: Dataset, transform=None, length: Optional[int] = None):
        self.dataset, self.transform = dataset, transform
        self.length = len(dataset) if length is None else int(length)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        sample = self.dataset[i % len(self.dataset)]  # type: ignore[arg-type]
        sample = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in sample.items()}
        if self.transform is not None:
            sample = self.transform(sample)
        return add_aug_copies(sample)
