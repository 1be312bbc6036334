"""Keyframes, flow tracks and sliding-window bundle adjustment (``trianflow vo --refine ba``).

- :mod:`trianflow.mapping.tracks`: :class:`FlowTracks`, points followed through dense flow
  (Lucas-Kanade refined) and observed at keyframes;
- :mod:`trianflow.mapping.keyframes`: :class:`KeyframeSelector`, keyframes by de-rotated
  parallax, inlier ratio, track survival and interval;
- :mod:`trianflow.mapping.triangulation`: multi-view (midpoint) triangulation of tracks and
  reprojection errors;
- :mod:`trianflow.mapping.bundle_adjustment`: one pycolmap bundle adjustment
  (:func:`bundle_adjust`) and the pose conversions to and from pycolmap;
- :mod:`trianflow.mapping.local_mapper`: :class:`LocalMapper`, the VO's back end (keyframes,
  tracks and sliding-window adjustment put together).
"""

from trianflow.mapping.bundle_adjustment import BAOptions, BAResult, bundle_adjust
from trianflow.mapping.keyframes import KeyframePolicy, KeyframeSelector, derotated_parallax
from trianflow.mapping.local_mapper import LocalMapper, MapperConfig
from trianflow.mapping.tracks import FlowTracks, TrackObservations, bilinear_sample, corner_seeds
from trianflow.mapping.triangulation import reprojection_errors, triangulate_tracks

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
    "corner_seeds",
]
