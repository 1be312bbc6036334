"""The points the VO carries from pair to pair: the last pair's triangulated points, expressed in
the current frame, which the next pair re-triangulates to chain the monocular scale (and PnP uses
when the essential matrix fails)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from trianflow.geometry.flow import sample_at

__all__ = ["PointTrack", "advect"]

# score of a reliable flow vector: visible and forward-backward distance below ~0.9 px
# (score = visible / (0.1 + fb distance), see trianflow.geometry.sampling)
_RELIABLE_SCORE = 1.0


@dataclass
class PointTrack:
    """Points triangulated in the last pair, expressed in the current frame (chain scale)."""

    xy: torch.Tensor  # (M,2) pixels in the current frame
    X: torch.Tensor  # (M,3) current-camera coordinates

    def __len__(self) -> int:
        return len(self.xy)


def advect(track: Optional[PointTrack], flow_fwd: torch.Tensor,
           score: torch.Tensor) -> Optional[Tuple[PointTrack, torch.Tensor]]:
    """Move the track's pixels into the next frame along the forward flow.

    Args:
        track: the points of the last pair (or ``None``).
        flow_fwd: ``(1,2,H,W)`` flow from the track's frame to the next one.
        score: ``(1,1,H,W)`` correspondence scores of that flow.
    Returns:
        ``None`` or ``(the reliable part of the track, their pixels (M,2) in the next frame)``:
        the points whose flow is visible and forward-backward consistent to ~1 px.
    """
    if track is None or len(track.xy) == 0:
        return None
    xy = track.xy.to(flow_fwd.dtype).view(1, 1, -1, 2)
    fl = sample_at(flow_fwd, xy)[0, :, 0].T  # (M,2)
    sc = sample_at(score, xy)[0, 0, 0]
    keep = sc > _RELIABLE_SCORE
    if not bool(keep.any()):
        return None
    return PointTrack(track.xy[keep], track.X[keep]), track.xy[keep] + fl[keep].double()
