"""Point tracks chained through dense optical flow.

A *track* is one scene point followed from frame to frame: its pixel in the current frame is
moved by the forward flow at that pixel (bilinear), and it is dropped as soon as the flow there
is not trustworthy (forward-backward distance above ``max_fb_px``, or the point leaves the
image). Observations - the track's pixel at a keyframe - are recorded only when the caller
asks (:meth:`FlowTracks.observe`), so the track list that bundle adjustment sees is a set of
``(track id, frame, x, y)`` rows over keyframes.

Pixel coordinates use the library convention: pixel centres at integers, ``x`` right, ``y``
down. Flows are ``(H,W,2)`` float arrays (channel 0 = x), the VO's ``flow_fn`` output.

With the two grey images, every step is refined by pyramidal Lucas-Kanade started at the
flow's prediction (dense flows such as DIS "fast" are smooth and biased at the pixel level; a
track drifts with them), and the forward-backward check is done on the refined positions.

New tracks are started from candidate pixels (the VO passes the inlier correspondences of the
current pair) on a grid: at most one track per ``cell_px x cell_px`` cell, so tracks stay
spread over the image and their number bounded by ``H*W / cell_px**2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

__all__ = ["match_brightness", "bilinear_sample", "TrackObservations", "FlowTracks", "corner_seeds"]


def bilinear_sample(field: np.ndarray, xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Sample ``field (H,W,C)`` at sub-pixel positions ``xy (M,2)`` (x, y; centres at integers).

    Returns ``(values (M,C) float64, inside (M,) bool)``; points outside ``[0,W-1] x [0,H-1]``
    get the value at the clamped position and ``inside = False``.
    """
    field = np.asarray(field)
    if field.ndim == 2:
        field = field[:, :, None]
    h, w = field.shape[:2]
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1) & np.isfinite(x) & np.isfinite(y)
    xc = np.clip(np.nan_to_num(x), 0, w - 1)
    yc = np.clip(np.nan_to_num(y), 0, h - 1)
    x0 = np.minimum(np.floor(xc).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(yc).astype(np.int64), max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    ax = (xc - x0)[:, None]
    ay = (yc - y0)[:, None]
    f = field.astype(np.float64, copy=False) if field.dtype != np.float32 else field
    v = (f[y0, x0] * (1 - ax) * (1 - ay) + f[y0, x1] * ax * (1 - ay) + f[y1, x0] * (1 - ax) * ay
         + f[y1, x1] * ax * ay)
    return v.astype(np.float64), inside


def image_stats(img: np.ndarray) -> Tuple[float, float]:
    """Mean and standard deviation of an image (as :func:`match_brightness` uses them)."""
    return float(img.mean()), float(img.std())


def match_brightness(img: np.ndarray, ref: np.ndarray, img_stats: Optional[Tuple[float, float]] = None,
                     ref_stats: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """``img (H,W)`` uint8 with its mean and standard deviation mapped onto those of ``ref``
    (a global gain and offset, so that Lucas-Kanade survives an exposure change). ``img_stats`` /
    ``ref_stats``: their :func:`image_stats` when the caller has them already."""
    m1, s1 = img_stats if img_stats is not None else image_stats(img)
    m0, s0 = ref_stats if ref_stats is not None else image_stats(ref)
    if s1 < 1e-6 or abs(m1 - m0) < 2.0 and abs(s1 - s0) < 0.02 * max(s0, 1.0):
        return img
    out = (img.astype(np.float32) - m1) * (s0 / s1) + m0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass
class TrackObservations:
    """Keyframe observations of tracks, one row each (columnar arrays of equal length ``O``).

    Attributes:
        track: ``(O,)`` int64 track id.
        frame: ``(O,)`` int64 frame index of the observation.
        xy: ``(O,2)`` float64 pixel (centres at integers).
    """

    track: np.ndarray
    frame: np.ndarray
    xy: np.ndarray

    def __len__(self) -> int:
        return len(self.track)

    def select(self, mask: np.ndarray) -> "TrackObservations":
        """Rows where ``mask (O,)`` is true."""
        return TrackObservations(self.track[mask], self.frame[mask], self.xy[mask])

    @staticmethod
    def empty() -> "TrackObservations":
        return TrackObservations(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)))


class FlowTracks:
    """Tracks of pixels chained through consecutive dense flows.

    Args:
        image_size: ``(H, W)``.
        max_fb_px: drop a track whose forward-backward flow distance exceeds this (pixels).
        border: drop a track closer than this many pixels to the image border.
        cell_px: grid cell size for starting new tracks (one track per cell).
        lk_window: Lucas-Kanade window (pixels) for the refinement with images.
        lk_fb_px: forward-backward limit of the refined positions.
        lk_max_shift_px: drop a track whose refinement moves it further than this from the
            flow's prediction.
        lk_levels: pyramid levels above full resolution for Lucas-Kanade (0 = full resolution only).

    State: ``ids (M,)`` and ``xy (M,2)`` of the active tracks in the last frame seen; all
    recorded observations (:meth:`observations`).
    """

    def __init__(self, image_size, max_fb_px: float = 1.0, border: float = 2.0, cell_px: int = 16,
                 lk_window: int = 15, lk_fb_px: float = 0.5, lk_max_shift_px: float = 3.0,
                 lk_levels: int = 1):
        self.h, self.w = int(image_size[0]), int(image_size[1])
        self.lk_window = int(lk_window)
        self.lk_levels = int(lk_levels)
        self.lk_fb_px = float(lk_fb_px)
        self.lk_max_shift_px = float(lk_max_shift_px)
        self.max_fb_px = float(max_fb_px)
        self.border = float(border)
        self.cell_px = max(int(cell_px), 1)
        self.ids = np.zeros(0, np.int64)
        self.xy = np.zeros((0, 2), np.float64)
        self.next_id = 0
        self._obs: list = []  # (ids, frame, xy) per observe() call
        self._stats: tuple = (None, None)  # (the last grey frame LK saw as gray2, its image_stats)
        self._last_frame: Optional[int] = None

    def __len__(self) -> int:
        return len(self.ids)

    def advance(self, flow_fwd: np.ndarray, flow_bwd: Optional[np.ndarray] = None,
                gray1: Optional[np.ndarray] = None, gray2: Optional[np.ndarray] = None) -> np.ndarray:
        """Move every active track into the next frame along ``flow_fwd (H,W,2)``.

        Without images, with ``flow_bwd (H,W,2)`` (next -> current) a track survives only if
        ``|f(p) + b(p + f(p))| <= max_fb_px``. With the grey frames ``gray1``, ``gray2``
        ``(H,W)`` uint8 the flow's prediction is refined by Lucas-Kanade, and a track survives
        if LK converged both ways, came back within ``lk_fb_px`` and moved at most
        ``lk_max_shift_px`` from the prediction. Tracks leaving the image (minus ``border``)
        are dropped. Returns the boolean mask ``(M,)`` of the tracks that survived (in the
        order of :attr:`ids` before the call).
        """
        if len(self.ids) == 0:
            return np.zeros(0, bool)
        f, inside = bilinear_sample(flow_fwd, self.xy)
        x2 = self.xy + f
        keep = inside & np.isfinite(x2).all(axis=1)
        if gray1 is not None and gray2 is not None:
            x2r, ok = self._lk_refine(gray1, gray2, self.xy, x2)
            keep &= ok & (np.linalg.norm(x2r - x2, axis=1) <= self.lk_max_shift_px)
            x2 = x2r
        elif flow_bwd is not None:
            b, inside2 = bilinear_sample(flow_bwd, x2)
            keep &= inside2 & (np.linalg.norm(f + b, axis=1) <= self.max_fb_px)
        keep &= self._in_bounds(x2)
        self.ids = self.ids[keep]
        self.xy = x2[keep]
        return keep

    def _lk_refine(self, gray1: np.ndarray, gray2: np.ndarray, x1: np.ndarray, x2: np.ndarray):
        """Pyramidal LK from ``x1`` in ``gray1`` started at ``x2`` in ``gray2``, and back;
        returns ``(refined x2 (M,2), ok (M,))``."""
        import cv2

        # gray1 was the previous call's gray2: its statistics are known (the same numbers, computed once)
        ref_stats = self._stats[1] if self._stats[0] is gray1 else image_stats(gray1)
        img_stats = image_stats(gray2)
        self._stats = (gray2, img_stats)
        gray2 = match_brightness(gray2, gray1, img_stats, ref_stats)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.01)
        win = (self.lk_window, self.lk_window)
        p1 = np.ascontiguousarray(x1, dtype=np.float32).reshape(-1, 1, 2)
        p2 = np.ascontiguousarray(np.nan_to_num(x2), dtype=np.float32).reshape(-1, 1, 2)
        lv = self.lk_levels
        q2, st, _ = cv2.calcOpticalFlowPyrLK(gray1, gray2, p1, p2.copy(), winSize=win, maxLevel=lv, criteria=crit,
                                             flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
        q1, st2, _ = cv2.calcOpticalFlowPyrLK(gray2, gray1, q2, p1.copy(), winSize=win, maxLevel=lv, criteria=crit,
                                              flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
        q2 = q2.reshape(-1, 2).astype(np.float64)
        back = np.linalg.norm(q1.reshape(-1, 2) - p1.reshape(-1, 2), axis=1)
        ok = (st.ravel() == 1) & (st2.ravel() == 1) & (back <= self.lk_fb_px) & np.isfinite(q2).all(axis=1)
        return q2, ok

    def _in_bounds(self, xy: np.ndarray) -> np.ndarray:
        m = self.border
        return (xy[:, 0] >= m) & (xy[:, 0] <= self.w - 1 - m) & (xy[:, 1] >= m) & (xy[:, 1] <= self.h - 1 - m)

    def spawn(self, candidates: np.ndarray, max_new: Optional[int] = None) -> np.ndarray:
        """Start tracks at ``candidates (N,2)`` pixels lying in grid cells without a track.

        Candidates are taken in the given order (pass the best first); at most one per free
        cell and at most ``max_new``. Returns the new track ids ``(K,)``.
        """
        c = np.asarray(candidates, dtype=np.float64).reshape(-1, 2)
        c = c[np.isfinite(c).all(axis=1) & self._in_bounds(c)] if len(c) else c
        if len(c) == 0:
            return np.zeros(0, np.int64)
        gw = (self.w + self.cell_px - 1) // self.cell_px
        gh = (self.h + self.cell_px - 1) // self.cell_px
        occupied = np.zeros(gw * gh, bool)
        if len(self.xy):
            cell_old = self._cells(self.xy, gw)
            occupied[cell_old] = True
        cells = self._cells(c, gw)
        _, first = np.unique(cells, return_index=True)  # first candidate of every cell
        first = np.sort(first)
        first = first[~occupied[cells[first]]]
        if max_new is not None:
            first = first[: max(int(max_new), 0)]
        new_ids = np.arange(self.next_id, self.next_id + len(first), dtype=np.int64)
        self.next_id += len(first)
        self.ids = np.concatenate([self.ids, new_ids])
        self.xy = np.concatenate([self.xy, c[first]])
        return new_ids

    def _cells(self, xy: np.ndarray, gw: int) -> np.ndarray:
        ix = np.clip((np.round(xy[:, 0]) // self.cell_px).astype(np.int64), 0, gw - 1)
        iy = (np.round(xy[:, 1]) // self.cell_px).astype(np.int64)
        return iy * gw + ix

    def observe(self, frame: int) -> TrackObservations:
        """Record the active tracks' pixels as observations in ``frame``; returns them."""
        frame = int(frame)
        if self._last_frame is not None and frame == self._last_frame and self._obs:
            self._obs.pop()  # observed twice in the same frame: keep the latest state
        obs = TrackObservations(self.ids.copy(), np.full(len(self.ids), frame, np.int64), self.xy.copy())
        self._obs.append(obs)
        self._last_frame = frame
        return obs

    def observations(self) -> TrackObservations:
        """All recorded observations, ordered by frame then by track id within a frame."""
        if not self._obs:
            return TrackObservations.empty()
        return TrackObservations(np.concatenate([o.track for o in self._obs]),
                                 np.concatenate([o.frame for o in self._obs]),
                                 np.concatenate([o.xy for o in self._obs]))

    def positions(self, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Current pixels of the tracks ``ids (K,)``: ``(xy (K,2), found (K,) bool)``."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(self.ids)
        pos = np.searchsorted(self.ids, ids, sorter=order) if len(self.ids) else np.zeros(len(ids), np.int64)
        pos = np.clip(pos, 0, max(len(self.ids) - 1, 0))
        found = np.zeros(len(ids), bool)
        xy = np.full((len(ids), 2), np.nan)
        if len(self.ids):
            idx = order[pos]
            found = self.ids[idx] == ids
            xy[found] = self.xy[idx[found]]
        return xy, found


def corner_seeds(image: np.ndarray, max_corners: int = 3000, min_distance: float = 8.0) -> np.ndarray:
    """Shi-Tomasi corners of ``image (H,W,3|H,W)`` uint8, strongest first: ``(N,2)`` pixels."""
    import cv2

    from trianflow.flow_backends import to_gray

    c = cv2.goodFeaturesToTrack(to_gray(image), int(max_corners), 0.01, float(min_distance))
    return np.zeros((0, 2)) if c is None else c.reshape(-1, 2).astype(np.float64)
