"""trianflow: self-supervised depth and visual odometry from video.

Importing the package has no I/O side effects. See ``README.md`` for usage and
``trianflow/data/__init__.py`` for the sample-dict conventions.

One room per concern: ``geometry`` (pure batched torch: cameras, poses, flow, RANSAC,
triangulation, two-view geometry of a flow pair, stereo depth), ``models`` (networks),
``losses``, ``data`` (frame sequences behind a reader registry, training datasets and their
builders), ``evaluation`` (trajectory, KITTI drift, depth / disparity / flow metrics, the
pipelines' tables), ``viz`` (every picture; matplotlib imported lazily), ``training`` (the
trainer, the task registry and the tasks, which only compose the rooms above), ``mapping``,
``io`` and ``cli`` (the only module that prints). End-to-end runs are scripts in
``pipelines/`` at the top of the repository.

Python API (imported lazily on first use, so ``import trianflow`` stays light): ``open_sequence``,
``run_vo``, ``VOConfig``, ``VOResult``, ``evaluate_trajectory``, ``estimate_two_view``,
``load_flow_model``, ``load_depth_model``, ``intrinsics_from_fov``, ``save_run``, ``load_run``
(see :mod:`trianflow.api`). Every one raises :class:`InputError` for a user mistake.
"""

from trianflow.errors import InputError

__version__ = "0.1.0"

_API = {
    "open_sequence": "trianflow.api",
    "run_vo": "trianflow.api",
    "evaluate_trajectory": "trianflow.api",
    "estimate_two_view": "trianflow.api",
    "load_flow_model": "trianflow.api",
    "load_depth_model": "trianflow.api",
    "intrinsics_from_fov": "trianflow.api",
    "save_run": "trianflow.api",
    "load_run": "trianflow.api",
    "VOConfig": "trianflow.vo",
    "VOResult": "trianflow.vo",
    "FrameSequence": "trianflow.data.sequence",
}

__all__ = ["InputError", "__version__", *_API]


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'trianflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
