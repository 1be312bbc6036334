"""Reference holding for slow cameras.

A ``static`` or ``rotation`` frame does not replace the reference frame: the next frame is matched
against the same reference, so parallax accumulates until the translation can be solved instead of
being lost pair by pair (a hand-held camera at 30 Hz, a car creeping forward). The reference is
held for at most ``max_ref_hold`` frames and while the next frame's median flow to it
(extrapolated) stays below ``hold_max_flow`` of the image width. Once a frame solves the
translation, the held frames are placed along it (:meth:`ReferenceHold.revise`).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

__all__ = ["ReferenceHold", "PARALLAX_NOISE_PX"]

# median parallax (px) that flow noise alone produces between frames that differ by a rotation
# (measured 0.07-0.17 px with DIS on KITTI turned in place; real creep of a slow camera: 0.4-1 px)
PARALLAX_NOISE_PX = 0.25


class ReferenceHold:
    """The frames matched against the current reference without replacing it.

    Args:
        max_hold: at most this many frames are held on one reference (0: consecutive pairs).
        max_flow_px: ... while the next frame's extrapolated median flow to it stays below this.
    """

    def __init__(self, max_hold: int, max_flow_px: float):
        self.max_hold = max_hold
        self.max_flow_px = max_flow_px
        self.count = 0  # frames held on the current reference
        self.frames: List[Tuple[int, np.ndarray, float]] = []  # (index, rotation ref->frame, parallax px)

    def can_hold(self, median_flow_px: float) -> bool:
        """Whether a static/rotation frame with this median flow to the reference may leave the
        reference in place. With ``refine="ba"`` the mapper does not see held frames: its tracks
        advance from the reference straight to the frame that solves the translation."""
        # the next frame will be one more frame away from the reference: extrapolate its flow
        expected = median_flow_px * (self.count + 2) / (self.count + 1)
        return self.count < self.max_hold and expected < self.max_flow_px

    def add(self, index: int, R: np.ndarray, parallax: float) -> None:
        """Frame ``index`` is held (rotation ``R (3,3)`` reference -> frame, its parallax in px)."""
        self.count += 1
        self.frames.append((index, R.copy(), parallax))

    def release(self) -> None:
        """A frame became the new reference: the count starts again (held frames stay until revised)."""
        self.count = 0

    def clear(self) -> None:
        self.count = 0
        self.frames = []

    def revise(self, rel: np.ndarray, index: int, ref: int, parallax: float,
               ref_c2w: np.ndarray) -> Dict[int, np.ndarray]:
        """Spread the translation that ``rel (4,4)`` (reference ``ref`` -> frame ``index``) solved over
        the held frames; returns ``{frame: (4,4) camera-to-world}`` for them (``ref_c2w``: the
        reference's pose).

        Each keeps its rotation; its centre moves by the fraction of the span it lies at (steady
        motion) or, when smaller, by the fraction its parallax is of this frame's ``parallax`` (a
        duplicated frame or a turn in place does not move; the parallax of sub-pixel motion is
        biased up by flow noise, so it only ever lowers the fraction). Parallax below the flow's
        noise floor (:data:`PARALLAX_NOISE_PX`) counts as none."""
        centre = -rel[:3, :3].T @ rel[:3, 3]  # of frame `index`, in the reference camera
        out = {}
        for j, R, p in self.frames:
            frac = min((j - ref) / max(index - ref, 1), p / max(parallax, 1e-9))
            if p < PARALLAX_NOISE_PX:
                frac = 0.0
            T = np.eye(4)
            T[:3, :3] = R.T
            T[:3, 3] = centre * frac
            out[j] = ref_c2w @ T
        self.frames = []
        return out
