"""trianflow: self-supervised depth and visual odometry from video.

Importing the package has no I/O side effects. See ``README.md`` for usage and
``trianflow/data/__init__.py`` for the sample-dict conventions.
"""

from trianflow.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
