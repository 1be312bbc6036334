"""Training configuration: typed dataclass defaults, YAML files and ``key=value`` overrides.

A configuration is a :class:`TrainConfig` made of five sections (``model``, ``loss``, ``data``,
``optim``, ``train``). Values come, in increasing priority, from

1. the dataclass defaults below,
2. a YAML file (which may inherit from other files with ``base: other.yaml`` or
   ``base: [a.yaml, b.yaml]``, paths relative to the file that names them),
3. dotted overrides such as ``optim.lr=2e-4`` or ``data.size=[128,416]`` (the value is parsed
   with ``yaml.safe_load``; for string fields the raw text is kept, so ``data.root=2011`` is
   the string ``"2011"``).

Every key is checked: an unknown key raises :class:`~trianflow.errors.InputError` with the
closest valid key suggested, and a value of the wrong type raises ``InputError`` naming the key
and the expected type. ``model.flow`` and ``model.depth`` are free-form dicts (their content is
checked by the model constructors), so any key below them is accepted.

Adding a field is one line in the matching dataclass: loading, overrides, type checks, error
suggestions and saving pick it up automatically.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from trianflow.errors import InputError
from trianflow.io.atomic import write_text

__all__ = [
    "ModelConfig",
    "LossConfig",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "save_config",
    "config_keys",
    "apply_overrides",
]


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Network hyper-parameters, passed as keyword arguments to the model constructors.

    ``flow`` configures the flow network (``trianflow.models.flownet``), ``depth`` the depth
    network (``trianflow.models.depthnet``). Both are free-form dicts; the model constructors
    validate their keys.
    """

    flow: dict = field(default_factory=dict)
    depth: dict = field(default_factory=dict)


@dataclass
class LossConfig:
    """Loss weights and parameters (read by ``trianflow.losses.objective``).

    A weight of 0 disables its term. Names: ``w_<term>``. TrianFlow terms: ``w_flow``
    (photometric flow loss), ``w_flow_smooth`` (2nd-order edge-aware flow smoothness),
    ``w_flow_consis`` (forward-backward flow consistency), ``w_tri`` (depth vs triangulated
    depth, L_d), ``w_pf`` (flow vs depth-reprojected correspondences, L_pf), ``w_pd``
    (photometric loss of the depth/pose warp, L_pd), ``w_smooth`` (edge-aware 1st-order depth
    smoothness). Stereo (Monodepth) terms: ``w_stereo_ap`` (appearance), ``w_stereo_lr``
    (left-right disparity consistency), ``w_stereo_smooth``; M3Depth ``w_icp`` (3-D ICP
    consistency); MiDaS ``w_ssi`` and ``w_ssi_grad`` (scale-shift invariant + gradient matching).
    Warm start of the FlowNet: ``w_distill`` (flow and joint stages) fits the forward-backward
    consistent OpenCV DIS flow (preset ``distill_preset``) of each training pair during the first
    ``distill_steps`` steps (0: every step). ``geometry_flow`` (``network`` or ``dis``): where the
    depth and joint stages take the correspondences of their two-view geometry from.
    """

    # photometric error = ssim_weight * (1 - SSIM) / 2 + (1 - ssim_weight) * L1
    ssim_weight: float = 0.85
    num_scales: int = 4
    # TrianFlow, flow stage
    w_flow: float = 1.0
    w_flow_smooth: float = 10.0
    w_flow_consis: float = 0.01
    use_fb_mask: bool = True  # mask pixels failing the forward-backward check ...
    fb_abs: float = 3.0  # ... |f + b| < max(fb_rel * |f|, fb_abs) pixels (trianflow.losses.flow)
    fb_rel: float = 0.05
    occ_threshold: float = 0.0  # forward-splat occlusion: visible where splatted weight > threshold
    edge_weight: float = 10.0  # edge-awareness of the smoothness terms (exp(-edge_weight * |dI|))
    w_distill: float = 0.0  # DIS-flow distillation (trianflow.losses.flow.flow_distill_loss)
    distill_steps: int = 0
    distill_preset: str = "medium"
    geometry_flow: str = "network"  # depth/joint stages: correspondences from the FlowNet or from DIS ("dis")
    # TrianFlow, depth stage
    w_tri: float = 1.0
    tri_loss: str = "rel2"  # L_d: "rel2" = TrianFlow's ((D_tri - D) / D_tri)^2, "log_l1" = |log D - log D_tri|
    w_pf: float = 1.0
    w_pd: float = 0.1
    w_smooth: float = 1e-3
    num_matches: int = 6000  # correspondences sampled from the flow for the essential matrix
    match_sample_ratio: float = 0.2  # fraction of the top-scoring flow pixels they are drawn from
    ransac_iters: int = 100
    inlier_thresh: float = 0.5  # epipolar (Sampson) distance in pixels for the inlier mask M_r
    min_ray_angle_deg: float = 0.5  # triangulated points with smaller parallax are dropped
    # stereo (Monodepth / M3Depth / MiDaS-style)
    w_stereo_ap: float = 1.0
    w_stereo_lr: float = 1.0
    w_stereo_smooth: float = 0.1
    w_icp: float = 0.0
    w_ssi: float = 0.0
    w_ssi_grad: float = 0.0
    min_depth: float = 0.1
    max_depth: float = 100.0


@dataclass
class DataConfig:
    """Training data (read by the task's ``build_dataset``; names follow ``trianflow.data``).

    ``dataset``: ``kitti_odometry``, ``kitti_raw``, ``synthetic``, ``stereo_pairs``, ...;
    ``root`` its folder; ``split_file`` a monodepth2-style split (KITTI raw); ``sequences`` the
    KITTI odometry sequences (empty: all). ``frames`` consecutive frames per sample (1: ``image``;
    2: + ``image_next``; 3: + ``image_prev``), ``stride`` the gap between them. ``size`` is
    ``[H, W]`` after resizing. ``static_filter`` drops near-static pairs whose
    ``static_method`` score (``mad``: mean abs grey difference 0..255; ``flow``: median flow in
    px) is below ``static_threshold``. ``augment`` enables ``flip`` / ``color_jitter`` /
    ``scale_crop`` (max zoom factor, 1 = off). ``max_samples`` > 0 truncates the dataset.
    ``frame_range`` ``[start, end]`` keeps the samples whose frames all lie in ``start <= i < end``
    of every sequence / drive (empty: all frames), e.g. ``[0, 300]`` for training and
    ``[300, 400]`` for validation of the same sequence. ``camera`` picks the KITTI camera:
    ``auto`` (colour when present, else grey), ``color`` (odometry ``image_2``/``image_3``, raw
    ``image_02``/``image_03``) or ``gray`` (``image_0``/``image_1``, raw ``image_00``/``image_01``).
    """

    dataset: str = "synthetic"
    root: str = ""
    split_file: str = ""
    sequences: list[str] = field(default_factory=list)
    size: list[int] = field(default_factory=lambda: [256, 832])
    batch_size: int = 8
    num_workers: int = 4
    pin_memory: bool = True
    frames: int = 2
    stride: int = 1
    stereo: bool = False
    static_filter: bool = False
    static_threshold: float = 1.0
    static_method: str = "mad"
    augment: bool = True
    flip: bool = True
    color_jitter: bool = True
    scale_crop: float = 1.0
    max_samples: int = 0
    frame_range: list[int] = field(default_factory=list)
    camera: str = "auto"


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    ``schedule``: ``constant``; ``step`` (multiply by ``gamma`` at each of ``milestones``, in
    steps); ``cosine`` (to ``min_lr_ratio * lr`` at ``train.steps``). ``warmup_steps`` ramps
    linearly from 0. ``grad_clip`` is the max global gradient norm (0 disables clipping).
    """

    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    schedule: Literal["constant", "step", "cosine"] = "constant"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.5
    min_lr_ratio: float = 0.01
    warmup_steps: int = 0


@dataclass
class RunConfig:
    """How to run training (section ``train``).

    ``task`` names a registered training task (``trianflow.training.registry``); ``stage`` is the
    TrianFlow stage (``flow`` → ``depth`` → ``joint``; other tasks may ignore it). ``amp``:
    ``off`` / ``bf16`` / ``fp16`` (fp16 uses a GradScaler). ``device``: ``auto``, ``cpu``,
    ``cuda`` or ``cuda:N``. ``init_flow`` / ``init_depth``: checkpoints whose ``flow`` / ``depth``
    weights initialise this run (stage chaining; optimiser state is not taken from them).
    ``log_every`` / ``image_every`` / ``ckpt_every`` are in steps (0 disables images/periodic
    checkpoints); ``keep_ckpts`` step checkpoints are kept besides ``last.pt``. Training aborts
    after ``max_consecutive_skips`` consecutive steps with a non-finite loss or gradient.
    """

    task: str = "trianflow"
    stage: Literal["flow", "depth", "joint"] = "flow"
    steps: int = 100000
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool = False
    log_every: int = 50
    image_every: int = 1000
    ckpt_every: int = 5000
    keep_ckpts: int = 3
    out_dir: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    init_flow: Optional[str] = None
    init_depth: Optional[str] = None
    max_consecutive_skips: int = 100
    find_unused_parameters: bool = False
    deterministic: bool = False


@dataclass
class TrainConfig:
    """The whole training configuration. See the module docstring for how it is assembled."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)


# --------------------------------------------------------------------------------------------
# schema helpers
# --------------------------------------------------------------------------------------------

_NONE_TYPE = type(None)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_freeform(tp) -> bool:
    return tp is dict or typing.get_origin(tp) is dict


def config_keys(cls=TrainConfig, prefix: str = "") -> list[str]:
    """All valid dotted keys of a config class, sections included (``["model", "model.flow", ...]``)."""
    keys = []
    for name, tp in _hints(cls).items():
        key = f"{prefix}{name}"
        keys.append(key)
        if _is_section(tp):
            keys.extend(config_keys(tp, key + "."))
    return keys


def _suggest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not match:  # e.g. 'lr' -> 'optim.lr': compare the last components
        last = key.rsplit(".", 1)[-1]
        by_last = {k.rsplit(".", 1)[-1]: k for k in valid if "." in k}
        close = difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.7)
        match = [by_last[close[0]]] if close else []
    return f" (did you mean '{match[0]}'?)" if match else ""


def _unknown(key: str, source: str) -> InputError:
    valid = config_keys()
    return InputError(f"unknown config key '{key}'{_suggest(key, valid)} in {source}")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is Union:
        inner = [a for a in args if a is not _NONE_TYPE]
        return f"{_type_name(inner[0])} or null"
    if origin is list:
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(args[0], 'values') if args else 'values'}"
    if _is_freeform(tp):
        return "a mapping"
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp, key: str, source: str) -> Any:
    """Check/convert ``value`` to the field type ``tp``; raise InputError naming ``key``."""

    def bad(extra: str = "") -> InputError:
        return InputError(
            f"config key '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__}) in {source}{extra}"
        )

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:  # Optional[T]
        if value is None:
            return None
        inner = [a for a in args if a is not _NONE_TYPE]
        return _coerce(value, inner[0], key, source)
    if origin is Literal:
        # YAML reads a bare off/on/no/yes as a boolean: map it back when the choices are strings
        if isinstance(value, bool) and all(isinstance(a, str) for a in args):
            for word in (("off", "no", "false") if not value else ("on", "yes", "true")):
                if word in args:
                    value = word
                    break
        if value not in args:
            raise bad()
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                value_f = float(value)
            except ValueError:
                raise bad() from None
        else:
            value_f = value
        if isinstance(value_f, float) and value_f.is_integer():
            return int(value_f)
        raise bad()
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads '1e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if not isinstance(value, str):
            raise bad(" (quote it to make it a string)")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad()
        elem = args[0] if args else Any
        if elem is Any:
            return list(value)
        return [_coerce(v, elem, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if _is_freeform(tp):
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if _is_section(tp):
        if not isinstance(value, dict):
            raise InputError(f"config key '{key}' is a section; set its fields (e.g. '{key}.<field>=...') in {source}")
        return _build(tp, value, key + ".", source)
    return value  # pragma: no cover - unsupported annotation: accept as is


def _build(cls, values: dict, prefix: str, source: str):
    hints = _hints(cls)
    kwargs = {}
    for name, value in values.items():
        if name not in hints:
            raise _unknown(prefix + name, source)
        kwargs[name] = _coerce(value, hints[name], prefix + name, source)
    return cls(**kwargs)


def _deep_merge(base: dict, update: dict, cls, prefix: str, source: str) -> dict:
    """Merge ``update`` into a copy of ``base`` following the schema ``cls`` (checks keys)."""
    out = dict(base)
    hints = _hints(cls) if cls is not None else None
    for k, v in update.items():
        if not isinstance(k, str):
            raise InputError(f"config key {k!r} under '{prefix or '<top>'}' is not a string in {source}")
        key = prefix + k
        if hints is not None:
            if k not in hints:
                raise _unknown(key, source)
            tp = hints[k]
            if _is_section(tp) and v is None:  # an empty section in YAML ("optim:")
                continue
            if _is_section(tp) and isinstance(v, dict):
                out[k] = _deep_merge(out.get(k, {}), v, tp, key + ".", source)
                continue
            if _is_freeform(tp) and isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = _deep_merge(out[k], v, None, key + ".", source)
                continue
            out[k] = v
        else:  # free-form dict: merge nested mappings, replace anything else
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = _deep_merge(out[k], v, None, key + ".", source)
            else:
                out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def config_to_dict(cfg: TrainConfig) -> dict:
    """Plain nested dict (YAML/JSON serialisable) of a config."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict, source: str = "a config dict") -> TrainConfig:
    """Build a :class:`TrainConfig` from a (possibly partial) nested dict over the defaults.

    Raises InputError for unknown keys or wrong types, naming ``source``.
    """
    if not isinstance(d, dict):
        raise InputError(f"{source} must be a mapping of sections, got {type(d).__name__}")
    merged = _deep_merge(config_to_dict(TrainConfig()), d, TrainConfig, "", source)
    cfg = _build(TrainConfig, merged, "", source)
    _validate(cfg, source)
    return cfg


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict:
    """Read one YAML file and the files it inherits from (``base:``), merged, as a raw (partial) dict."""
    path = Path(path)
    if not path.is_file():
        where = f" (inherited by {seen[-1]})" if seen else ""
        raise InputError(f"config file not found: {path}{where}")
    real = path.resolve()
    if real in seen:
        chain = " -> ".join(str(p) for p in (*seen, real))
        raise InputError(f"config inheritance cycle: {chain}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        msg = " ".join(str(exc).split())
        raise InputError(f"cannot parse config file {path}: {msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config file {path}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must contain a mapping of sections (model, loss, data, optim, train)")
    bases = data.pop("base", None)
    merged: dict = {}  # only what the files set; defaults are applied by the caller
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise InputError(f"'base' in {path} must be a file name or a list of file names")
        for b in bases:
            base_path = Path(b) if os.path.isabs(b) else path.parent / b
            merged = _deep_merge(merged, _read_yaml(base_path, (*seen, real)), TrainConfig, "", str(base_path))
    return _deep_merge(merged, data, TrainConfig, "", str(path))


def _field_type(key: str):
    """Type of a dotted key, or ``dict`` for keys inside a free-form dict; None if unknown."""
    cls: Any = TrainConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if _is_freeform(cls):
            return Any
        if not _is_section(cls):
            return None
        hints = _hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
    return cls


def _parse_override_value(raw: str, tp) -> Any:
    text = raw.strip()
    inner = [a for a in typing.get_args(tp) if a is not _NONE_TYPE] if typing.get_origin(tp) is Union else [tp]
    if inner and inner[0] is str:  # keep the raw text for string fields
        if typing.get_origin(tp) is Union and text in ("null", "~", "None", ""):
            return None
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]
        return text
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides to a raw config dict (keys checked, types not yet)."""
    out = d
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override '{item}' is not of the form key=value (e.g. optim.lr=2e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key.startswith("--"):
            raise InputError(f"override '{item}': write config overrides without dashes, e.g. '{key[2:]}={raw}'")
        if not key:
            raise InputError(f"override '{item}' has an empty key")
        tp = _field_type(key)
        if tp is None:
            raise _unknown(key, f"override '{item}'")
        value = _parse_override_value(raw, tp)
        if _is_section(tp) and not isinstance(value, dict):
            raise InputError(f"config key '{key}' is a section; set its fields (e.g. '{key}.<field>=...') "
                             f"in override '{item}'")
        if tp is not Any and not _is_section(tp):  # type-check now so the message names the override
            value = _coerce(value, tp, key, f"override '{item}'")
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        out = _deep_merge(out, nested, TrainConfig, "", f"override '{item}'")
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a training config: defaults <- YAML ``path`` (with ``base:`` inheritance) <- overrides.

    Args:
        path: YAML file or None for the defaults only.
        overrides: dotted ``key=value`` strings, e.g. ``["optim.lr=2e-4", "data.size=[128,416]"]``.

    Returns:
        The validated :class:`TrainConfig`.

    Raises:
        InputError: missing/unparsable file, unknown key (closest valid key suggested), wrong
        value type, or an invalid value (e.g. ``train.steps=0``).
    """
    d = config_to_dict(TrainConfig())
    if path is not None:
        d = _deep_merge(d, _read_yaml(Path(path), ()), TrainConfig, "", str(path))
    d = apply_overrides(d, list(overrides or []))
    source = f"{path}" + (" + overrides" if overrides else "") if path is not None else "overrides"
    cfg = _build(TrainConfig, d, "", source)
    _validate(cfg, source)
    return cfg


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML to ``path`` atomically; :func:`load_config` reads it back equal."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    write_text(path, text)


def _validate(cfg: TrainConfig, source: str) -> None:
    """Value checks beyond types (positive sizes, ordered milestones, ...)."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise InputError(f"{msg} in {source}")

    t, d, o = cfg.train, cfg.data, cfg.optim
    need(t.steps > 0, f"train.steps must be > 0 (got {t.steps})")
    need(t.log_every > 0, f"train.log_every must be > 0 (got {t.log_every})")
    need(t.image_every >= 0, f"train.image_every must be >= 0 (got {t.image_every})")
    need(t.ckpt_every >= 0, f"train.ckpt_every must be >= 0 (got {t.ckpt_every})")
    need(t.keep_ckpts >= 0, f"train.keep_ckpts must be >= 0 (got {t.keep_ckpts})")
    need(t.max_consecutive_skips > 0, f"train.max_consecutive_skips must be > 0 (got {t.max_consecutive_skips})")
    need(d.batch_size > 0, f"data.batch_size must be > 0 (got {d.batch_size})")
    need(d.num_workers >= 0, f"data.num_workers must be >= 0 (got {d.num_workers})")
    need(len(d.size) == 2 and all(s > 0 for s in d.size), f"data.size must be [H, W] with positive values (got {d.size})")
    need(d.stride > 0, f"data.stride must be > 0 (got {d.stride})")
    need(d.frames in (1, 2, 3), f"data.frames must be 1, 2 or 3 (got {d.frames})")
    need(d.scale_crop >= 1.0, f"data.scale_crop must be >= 1 (got {d.scale_crop}; 1 disables it)")
    need(o.lr > 0, f"optim.lr must be > 0 (got {o.lr})")
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), f"optim.betas must be two values in [0, 1) (got {o.betas})")
    need(o.grad_clip >= 0, f"optim.grad_clip must be >= 0 (got {o.grad_clip}; 0 disables clipping)")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0 (got {o.weight_decay})")
    need(o.milestones == sorted(o.milestones), f"optim.milestones must be increasing (got {o.milestones})")
    need(o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0 (got {o.warmup_steps})")
