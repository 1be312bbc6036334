"""The state the VO carries from frame to frame (:class:`FrameState`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from trianflow.vo.track import PointTrack

__all__ = ["FrameState"]


@dataclass
class FrameState:
    """What the next frame is matched against and continued from."""

    pose_c2w: np.ndarray = field(default_factory=lambda: np.eye(4))  # (4,4) pose of the reference frame
    ref_image: Optional[np.ndarray] = None  # (H,W,3) uint8 reference (left) image
    ref_right: Optional[np.ndarray] = None  # its right image (stereo)
    ref_index: int = -1
    ref_blank: bool = False  # the reference has no texture (a run that starts dark)
    bridge_pose: Optional[np.ndarray] = None  # (4,4) constant-velocity pose through blank frames
    track: Optional[PointTrack] = None  # points carried to the next pair (scale chain, PnP)
    last_rel: np.ndarray = field(default_factory=lambda: np.eye(4))  # relative motion per frame (const. velocity)
    last_speed: Optional[float] = None  # translation length per frame (chain scale)

    def set_reference(self, image, right, index: int) -> None:
        self.ref_image, self.ref_right, self.ref_index = image, right, index
