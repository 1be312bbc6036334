"""Keyframes, flow tracks and sliding-window bundle adjustment (``trianflow vo --refine ba``).

- :mod:`trianflow.mapping.tracks`: :class:`FlowTracks`, points followed through dense flow
  (Lucas-Kanade refined) and observed at keyframes;
- :mod:`trianflow.mapping.keyframes`: :class:`KeyframeSelector`, keyframes by de-rotated
  parallax, inlier ratio, track survival and interval; :class:`MapKeyframe`, a keyframe of the map;
- :mod:`trianflow.mapping.triangulation`: multi-view (midpoint) triangulation of tracks and
  reprojection errors;
- :mod:`trianflow.mapping.bundle_adjustment`: one pycolmap bundle adjustment
  (:func:`bundle_adjust`) and the pose conversions to and from pycolmap;
- :mod:`trianflow.mapping.window_ba`: one window adjustment (:func:`adjust_window`: point
  selection, triangulation of new points, the solve, outliers) returning a :class:`WindowUpdate`;
- :mod:`trianflow.mapping.frame_poses`: every frame's pose after the adjustments
  (:func:`interpolate_frame_poses`);
- :mod:`trianflow.mapping.map_export`: the points a keyframe sees, the map with its observations, the
  mapper's summary;
- :mod:`trianflow.mapping.local_mapper`: :class:`LocalMapper`, the VO's back end (keyframes,
  tracks and sliding-window adjustment put together).
"""

from trianflow.mapping.bundle_adjustment import BAOptions, BAResult, bundle_adjust
from trianflow.mapping.frame_poses import interpolate_frame_poses
from trianflow.mapping.keyframes import KeyframePolicy, KeyframeSelector, MapKeyframe, derotated_parallax
from trianflow.mapping.local_mapper import LocalMapper, MapperConfig
from trianflow.mapping.tracks import FlowTracks, TrackObservations, bilinear_sample, corner_seeds
from trianflow.mapping.triangulation import reprojection_errors, triangulate_tracks
from trianflow.mapping.window_ba import WindowUpdate, adjust_window

__all__ = [
    "BAOptions",
    "BAResult",
    "LocalMapper",
    "MapKeyframe",
    "MapperConfig",
    "WindowUpdate",
    "adjust_window",
    "interpolate_frame_poses",
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
