"""Tests for trianflow.config: defaults, YAML + base inheritance, overrides, errors, round trip."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from trianflow.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_keys,
    config_to_dict,
    load_config,
    save_config,
)
from trianflow.errors import InputError


def _write(path, data) -> str:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def test_defaults_match_dataclasses():
    cfg = load_config(None)
    assert cfg == TrainConfig()
    assert cfg.optim.lr == 1e-4
    assert cfg.train.amp == "off"
    assert cfg.data.size == [256, 832]
    assert cfg.model.flow == {} and cfg.model.depth == {}


def test_config_keys_cover_all_fields():
    keys = config_keys()
    for sec in ("model", "loss", "data", "optim", "train"):
        assert sec in keys
    for k in ("optim.lr", "train.init_flow", "loss.w_tri", "loss.w_pf", "loss.w_pd", "loss.w_icp", "data.frames"):
        assert k in keys
    n_fields = sum(len(dataclasses.fields(f.type if isinstance(f.type, type) else getattr(TrainConfig(), f.name)))
                   for f in dataclasses.fields(TrainConfig))
    assert len(keys) == 5 + n_fields


def test_yaml_file_and_base_inheritance(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "base.yaml", {"optim": {"lr": 3e-4, "grad_clip": 5.0},
                                    "model": {"flow": {"levels": 6, "dim": 32}}, "train": {"steps": 10}})
    # child lives in another folder and names its base relative to itself
    child = _write(tmp_path / "sub" / "child.yaml",
                   "base: ../base.yaml\noptim:\n  lr: 2.0e-4\nmodel:\n  flow:\n    dim: 64\ntrain:\n  stage: depth\n")
    cfg = load_config(child)
    assert cfg.optim.lr == pytest.approx(2e-4)  # child wins
    assert cfg.optim.grad_clip == 5.0  # from base
    assert cfg.model.flow == {"levels": 6, "dim": 64}  # free-form dicts merge deeply
    assert cfg.train.steps == 10 and cfg.train.stage == "depth"
    assert cfg.optim.betas == [0.9, 0.999]  # untouched default


def test_multiple_bases_in_order(tmp_path):
    _write(tmp_path / "a.yaml", {"train": {"steps": 1, "seed": 1}})
    _write(tmp_path / "b.yaml", {"train": {"steps": 2}})
    c = _write(tmp_path / "c.yaml", {"base": ["a.yaml", "b.yaml"]})
    cfg = load_config(c)
    assert (cfg.train.steps, cfg.train.seed) == (2, 1)


def test_overrides_types_and_priority(tmp_path):
    f = _write(tmp_path / "c.yaml", {"optim": {"lr": 1e-3}, "data": {"size": [64, 64]}})
    cfg = load_config(f, ["optim.lr=2e-4", "data.size=[128,416]", "model.depth.layers=18",
                          "data.root=2011", "train.init_flow=null", "train.steps=1e3", "loss.w_tri=1",
                          "data.sequences=['00','01']", "train.amp=bf16", "data.stereo=true"])
    assert cfg.optim.lr == pytest.approx(2e-4) and isinstance(cfg.optim.lr, float)  # '2e-4' -> float
    assert cfg.data.size == [128, 416]
    assert cfg.model.depth == {"layers": 18}
    assert cfg.data.root == "2011"  # string field keeps the raw text
    assert cfg.train.init_flow is None
    assert cfg.train.steps == 1000 and isinstance(cfg.train.steps, int)
    assert cfg.loss.w_tri == 1.0 and isinstance(cfg.loss.w_tri, float)
    assert cfg.data.sequences == ["00", "01"]
    assert cfg.train.amp == "bf16" and cfg.data.stereo is True


def test_override_of_a_whole_section_keeps_other_fields(tmp_path):
    f = _write(tmp_path / "c.yaml", {"optim": {"grad_clip": 3.0}})
    cfg = load_config(f, ["optim={lr: 0.5}"])
    assert cfg.optim.lr == 0.5 and cfg.optim.grad_clip == 3.0


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        ("lr=1", "unknown config key 'lr' (did you mean 'optim.lr'?)"),
        ("trian.steps=3", "unknown config key 'trian.steps' (did you mean 'train.steps'?)"),
        ("loss.w_trii=3", "did you mean 'loss.w_tri'?"),
    ],
)
def test_unknown_override_key_suggests_closest(override, expected):
    with pytest.raises(InputError, match="unknown config key") as e:
        load_config(None, [override])
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_yaml_key_names_file_and_suggestion(tmp_path):
    f = _write(tmp_path / "bad.yaml", {"data": {"batchsize": 4}})
    with pytest.raises(InputError) as e:
        load_config(f)
    msg = str(e.value)
    assert "data.batchsize" in msg and "data.batch_size" in msg and "bad.yaml" in msg


def test_unknown_key_in_base_file_is_reported(tmp_path):
    _write(tmp_path / "base.yaml", {"optim": {"lerning_rate": 1}})
    f = _write(tmp_path / "c.yaml", {"base": "base.yaml"})
    with pytest.raises(InputError, match="optim.lerning_rate.*base.yaml"):
        load_config(f)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("data.batch_size=abc", "'data.batch_size' must be an integer"),
        ("data.batch_size=2.5", "'data.batch_size' must be an integer"),
        ("train.amp=fp32", "'train.amp' must be one of 'off', 'bf16', 'fp16'"),
        ("data.stereo=1", "'data.stereo' must be a boolean"),
        ("data.size=5", "'data.size' must be a list of integers"),
        ("data.size=[1,x]", "'data.size[1]' must be an integer"),
        ("optim.lr=fast", "'optim.lr' must be a number"),
        ("model.flow=3", "'model.flow' must be a mapping"),
        ("optim=3", "'optim' is a section"),
    ],
)
def test_wrong_types_name_the_key(override, needle):
    with pytest.raises(InputError) as e:
        load_config(None, [override])
    assert needle in str(e.value)
    assert override in str(e.value)


def test_override_syntax_errors():
    with pytest.raises(InputError, match="not of the form key=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(InputError, match="without dashes"):
        load_config(None, ["--optim.lr=1"])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.steps=0", "train.steps must be > 0"),
        ("data.size=[1,2,3]", "data.size must be [H, W]"),
        ("optim.betas=[0.9,1.5]", "optim.betas"),
        ("optim.milestones=[5,2]", "optim.milestones must be increasing"),
        ("data.batch_size=0", "data.batch_size must be > 0"),
        ("data.frames=4", "data.frames must be 1, 2 or 3"),
    ],
)
def test_value_validation(override, needle):
    with pytest.raises(InputError) as e:
        load_config(None, [override])
    assert needle in str(e.value)


def test_file_errors(tmp_path):
    with pytest.raises(InputError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = _write(tmp_path / "bad.yaml", "optim: [1, 2\n")
    with pytest.raises(InputError, match="cannot parse config file .*bad.yaml"):
        load_config(bad)
    lst = _write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(InputError, match="must contain a mapping"):
        load_config(lst)
    _write(tmp_path / "a.yaml", {"base": "b.yaml"})
    _write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(InputError, match="inheritance cycle"):
        load_config(tmp_path / "a.yaml")
    missing_base = _write(tmp_path / "m.yaml", {"base": "gone.yaml"})
    with pytest.raises(InputError, match="gone.yaml.*inherited by"):
        load_config(missing_base)


def test_empty_sections_and_empty_file(tmp_path):
    f = _write(tmp_path / "e.yaml", "optim:\ntrain:\n  steps: 7\n")
    assert load_config(f).train.steps == 7
    empty = _write(tmp_path / "empty.yaml", "")
    assert load_config(empty) == TrainConfig()


def test_save_and_reload_roundtrip(tmp_path):
    cfg = load_config(None, ["optim.lr=3e-4", "model.flow={levels: 5, dims: [16, 32]}", "data.sequences=['09']",
                             "train.init_depth=runs/d/last.pt", "data.frames=3"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_config_from_dict_and_apply_overrides():
    d = apply_overrides(config_to_dict(TrainConfig()), ["train.steps=5"])
    assert d["train"]["steps"] == 5
    assert config_from_dict({"train": {"steps": 9}}).train.steps == 9
    with pytest.raises(InputError, match="unknown config key 'train.stepz'.*checkpoint"):
        config_from_dict({"train": {"stepz": 9}}, source="checkpoint x.pt")
