"""Tests for trianflow.training.registry."""

from __future__ import annotations

import pytest

from trianflow.errors import InputError
from trianflow.training import registry
from trianflow.training.toy import ToyTask


def test_builtin_toy_task_is_registered():
    assert "toy" in registry.available_tasks()
    assert registry.get_task("toy") is ToyTask


def test_unknown_task_lists_valid_ones():
    with pytest.raises(InputError) as e:
        registry.get_task("tyo")
    msg = str(e.value)
    assert "unknown training task 'tyo'" in msg and "did you mean 'toy'" in msg and "toy" in msg.split("one of:")[1]


def test_register_and_conflict(monkeypatch):
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))

    @registry.register_task("unit_test_task")
    def factory(cfg):
        return cfg

    assert registry.get_task("unit_test_task") is factory
    assert "unit_test_task" in registry.available_tasks()

    def other(cfg):
        return None

    with pytest.raises(ValueError, match="already registered"):
        registry.register_task("unit_test_task")(other)
