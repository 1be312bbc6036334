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
"""

from trianflow.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
