"""trianflow.geometry: pure batched torch functions, device-agnostic, fp32 / fp64.

``camera`` (intrinsics, back-projection), ``pose``, ``flow`` (warping, forward-backward
consistency, occlusion), ``sampling`` (correspondence scores and selection), ``epipolar``,
``ransac`` (opencv / pycolmap / torch backends, one result type), ``triangulation``, ``scale``,
``warp`` (warping by depth + pose or disparity, stereo depth <-> disparity) and ``two_view``
(TrianFlow's pose + triangulation of a batch of flow pairs, used by the training tasks).
"""
