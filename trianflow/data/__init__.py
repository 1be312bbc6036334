"""Datasets and frame sequences.

Two kinds of objects live here.

**Frame sequences** (for VO and inference) implement :class:`FrameSequence`: an ordered list of
frames with one pinhole camera, timestamps, and optionally a right camera (stereo) and ground-truth
poses. :func:`open_sequence` picks the right reader for a path (KITTI odometry folder, TUM RGB-D
folder, plain image folder, video file) from the reader registry (:func:`register_reader`; the
built-in readers register themselves when this package is imported) and raises
:class:`trianflow.InputError` with a clear message on bad input.

**Training datasets** (``torch.utils.data.Dataset``) return *sample dicts*. Keys (all optional
except ``image`` and ``K``), with shapes for one sample (the DataLoader adds the batch dim B):

=================  ==================  ==========================================================
key                shape / type        meaning
=================  ==================  ==========================================================
``image``          (3,H,W) float32     RGB in [0, 1] (grayscale repeated to 3 channels)
``image_aug``      (3,H,W) float32     colour-jittered copy of ``image`` fed to the networks;
                                       losses compare the un-jittered images
``image_next``     (3,H,W) float32     next frame in time (``image_next_aug`` likewise)
``image_prev``     (3,H,W) float32     previous frame in time (``image_prev_aug`` likewise)
``image_right``    (3,H,W) float32     right image of a rectified stereo pair
``K``              (3,3) float32       intrinsics of ``image`` after resize/crop/flip
``baseline``       () float32          stereo baseline in metres (> 0, right camera at +x)
``pose_gt``        (4,4) float32       T_1to2 mapping camera-of-``image`` coords to ``image_next``
``depth_gt``       (1,H,W) float32     metres, 0 where unknown
``disp_gt``        (1,H,W) float32     disparity in pixels, 0 where unknown
``flow_gt``        (2,H,W) float32     flow image -> image_next, channel 0 = x
``flow_valid``     (1,H,W) float32     1 where ``flow_gt`` is valid (stays in view, not occluded)
``image_next_right`` (3,H,W) float32   right images of the temporal neighbours (stereo; keeps a
 / ``image_prev_right``                 horizontal flip consistent)
``frame_id``       str                 "<sequence>/<index>" for logging
=================  ==================  ==========================================================

``*_aug`` exists for every image key. After a stereo flip (left and right swapped) the dense
ground truth ``depth_gt``/``disp_gt``/``flow_gt``/``flow_valid`` is set to 0 (unknown).

Modules: readers ``kitti_odometry``, ``kitti_raw``, ``tum``, ``image_folder``, ``video``,
``synthetic`` (renderer with exact ground truth); ``sequences_dataset`` (pairs over any sequence,
static-frame filtering); ``stereo_pairs`` (KITTI stereo, stereo folders, Middlebury);
``transforms`` (augmentation that keeps K right); ``toy`` (the vectors of the ``toy`` training
task, no images); ``builders`` (``data.dataset`` name -> dataset
for the training tasks). Import direction: readers -> ``sequence``; datasets -> readers;
``builders`` -> everything; nothing imports ``builders`` back.

Conventions: pixel centres at integer coordinates; camera x right, y down, z forward; poses are
4x4 column-vector transforms, ``T_1to2`` maps X1 to X2 = R X1 + t.
"""

from trianflow.data.sequence import FrameSequence, open_sequence, register_reader, registered_readers

# the built-in readers register themselves with trianflow.data.sequence when imported
from trianflow.data import image_folder, kitti_odometry, tum, video  # noqa: E402,F401  isort: skip

__all__ = ["FrameSequence", "open_sequence", "register_reader", "registered_readers"]
