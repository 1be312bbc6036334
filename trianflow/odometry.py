"""The VO's former single module; the VO now lives in :mod:`trianflow.vo`, one module per step.

This path keeps working for user code: ``from trianflow.odometry import VOConfig, run_vo``.
"""

from trianflow.vo import (STATUSES, FrameInfo, VisualOdometry, VOConfig, VOResult, config_dict,  # noqa: F401
                          resolve_dis_preset, run_vo)

__all__ = ["STATUSES", "FrameInfo", "VOConfig", "VOResult", "VisualOdometry", "run_vo", "resolve_dis_preset",
           "config_dict"]
