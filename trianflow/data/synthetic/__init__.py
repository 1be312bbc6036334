"""A synthetic street-canyon scene rendered by ray casting in numpy, with exact depth, pose and flow.

The scene (built by :func:`build_scene` around the camera path) is a closed axis-aligned "room":
a ground plane 1.5 m below the cameras, two side walls, a far and a back wall and a high ceiling,
plus a few axis-aligned boxes on both sides of the street at different depths. Every surface
carries a deterministic procedural texture defined in world coordinates: multi-scale value noise
(6 octaves from ~3 m down to ~9 cm features) with a strong contrast stretch, mixed with sharp
"blob" edges and a low-frequency colour tint. Octaves finer than the sampling footprint are faded
out (a procedural mip-map), and every pixel averages ``supersample x supersample`` rays, so the
images are anti-aliased and optical flow (e.g. OpenCV DIS) and feature matchers work well. There
is no lighting: a surface point has the same colour in every view (up to the footprint filter).

Conventions (as in the rest of trianflow): camera x right, y down, z forward; poses are 4x4
camera-to-world matrices (column vectors); pixel centres at integer coordinates; depth is the z
coordinate in the camera frame (metres).

Modules: :mod:`~trianflow.data.synthetic.trajectory` (camera paths, intrinsics),
:mod:`~trianflow.data.synthetic.scene` (the scene: ray casting, textures), :mod:`~trianflow.data.synthetic.render`
(images, depth, exact flow), :mod:`~trianflow.data.synthetic.sequence` (the frame sequence, the KITTI-layout
writer), :mod:`~trianflow.data.synthetic.dataset` (the training dataset); every public name is re-exported here.

Public API: :func:`make_trajectory`, :func:`default_intrinsics`, :func:`build_scene`,
:func:`render_views`, :class:`SyntheticSequence`, :func:`synthetic_sequence`,
:func:`write_kitti_layout`, :class:`SyntheticDataset` (and :data:`TRAJECTORY_KINDS`, :class:`SyntheticScene`,
:func:`relative_pose`, :func:`flow_from_depth`).
"""

from trianflow.data.synthetic.trajectory import (  # noqa: I001  (dependency order)
    TRAJECTORY_KINDS,
    default_intrinsics,
    make_trajectory,
    relative_pose,
)
from trianflow.data.synthetic.scene import SyntheticScene, build_scene
from trianflow.data.synthetic.render import flow_from_depth, render_views
from trianflow.data.synthetic.sequence import SyntheticSequence, synthetic_sequence, write_kitti_layout
from trianflow.data.synthetic.dataset import SyntheticDataset

__all__ = [
    "TRAJECTORY_KINDS",
    "SyntheticDataset",
    "SyntheticScene",
    "SyntheticSequence",
    "build_scene",
    "default_intrinsics",
    "flow_from_depth",
    "make_trajectory",
    "relative_pose",
    "render_views",
    "synthetic_sequence",
    "write_kitti_layout",
]
