"""Registry of training tasks: ``@register_task("name")`` and ``get_task("name")``.

A task factory is a callable ``factory(cfg: TrainConfig) -> task`` (usually a :class:`Task`
subclass) implementing the protocol documented in ``trianflow.training.protocol``. The built-in
``toy`` task lives in ``trianflow.training.toy``; the real tasks register themselves in
``trianflow.training.tasks`` (``trianflow``) and ``trianflow.training.stereo_task`` (``stereo``,
``stereo_mono``), which :func:`get_task` imports lazily when they exist.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from typing import Callable

from trianflow.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["register_task", "get_task", "available_tasks"]

_TASKS: dict[str, Callable] = {}
_LAZY_MODULES = ("trianflow.training.toy", "trianflow.training.tasks", "trianflow.training.stereo_task")
_loaded = False


def register_task(name: str) -> Callable[[Callable], Callable]:
    """Class/function decorator registering a task factory under ``name``.

    Re-registering the same name with another object raises ``ValueError`` (two tasks
    claiming one name is a programming error).
    """

    def deco(factory: Callable) -> Callable:
        old = _TASKS.get(name)
        if old is not None and old is not factory and getattr(old, "__qualname__", None) != getattr(
            factory, "__qualname__", object()
        ):
            raise ValueError(f"training task '{name}' is already registered by {old!r}")
        _TASKS[name] = factory
        return factory

    return deco


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _LAZY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # the module exists but one of its imports is missing
                raise
            log.debug("task module %s not present", mod)
    _loaded = True


def available_tasks() -> list[str]:
    """Sorted names of all registered tasks (built-in modules imported first)."""
    _load_builtin()
    return sorted(_TASKS)


def get_task(name: str) -> Callable:
    """The factory registered as ``name``.

    Raises:
        InputError: unknown name, listing the valid ones (and the closest match).
    """
    _load_builtin()
    if name not in _TASKS:
        valid = sorted(_TASKS)
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise InputError(f"unknown training task '{name}'{hint}; set train.task to one of: {', '.join(valid)}")
    return _TASKS[name]
