"""Keyframes, flow tracks and sliding-window bundle adjustment (``trianflow vo --refine ba``).

- :mod:`trianflow.mapping.tracks`: :class:`FlowTracks`, points followed through dense flow
  (Lucas-Kanade refined) and observed at keyframes;
- :mod:`trianflow.mapping.keyframes`: :class:`KeyframeSelector`, keyframes by de-rotated
  parallax, inlier ratio, track survival and interval;
- :mod:`trianflow.mapping.bundle_adjustment`: multi-view triangulation, one pycolmap bundle
  adjustment (:func:`bundle_adjust`), and :class:`LocalMapper`, the VO's back end.
"""

from trianflow.mapping.bundle_adjustment import (
    BAOptions,
    BAResult,
    LocalMapper,
    MapperConfig,
    bundle_adjust,
    reprojection_errors,
    triangulate_tracks,
)
from trianflow.mapping.keyframes import KeyframePolicy, KeyframeSelector, derotated_parallax
from trianflow.mapping.tracks import FlowTracks, TrackObservations, bilinear_sample

__all__ = [
    "BAOptions",
    "BAResult",
    "LocalMapper",
    "MapperConfig",
    "bundle_adjust",
    "reprojection_errors",
    "triangulate_tracks",
    "KeyframePolicy",
    "KeyframeSelector",
    "derotated_parallax",
    "FlowTracks",
    "TrackObservations",
    "bilinear_sample",
]
