"""trianflow.evaluation: metrics against ground truth.

* :mod:`~trianflow.evaluation.trajectory` - APE / RPE / KITTI drift of a trajectory (evo core);
* :mod:`~trianflow.evaluation.kitti_odometry` - the KITTI odometry t_err / r_err;
* :mod:`~trianflow.evaluation.relative` - per-pair rotation and translation-direction errors;
* :mod:`~trianflow.evaluation.depth_metrics` - Eigen depth metrics, crops, depth files and folders;
* :mod:`~trianflow.evaluation.disparity` - stereo disparity errors and the non-occlusion mask;
* :mod:`~trianflow.evaluation.gt_metrics` - batched torch metrics of training batches (flow EPE,
  median-scaled / metric AbsRel) and of networks over a dataset;
* :mod:`~trianflow.evaluation.summary` - the table of the end-to-end pipelines (Markdown + JSON).
"""
