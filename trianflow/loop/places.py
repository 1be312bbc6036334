"""Place recognition over keyframes: ORB features per keyframe and a bag of binary words.

:class:`PlaceDatabase` keeps, for every keyframe the VO makes, its ORB keypoints ``(M,2)`` and
descriptors ``(M,32)`` uint8 (~1000 per frame, ~10 ms on a KITTI frame). At the end of the run
:meth:`PlaceDatabase.candidates` builds a vocabulary from the run's own descriptors (k-means on
their bits, then each descriptor is assigned to its nearest word by Hamming distance), weights the
words by TF-IDF, and proposes for every keyframe the earlier keyframes that look most alike,
skipping the recent past. Nothing is downloaded: the vocabulary is the sequence's own, so the
index works on any camera and scene (an indoor corridor as well as a town).

A proposal is only a candidate: :func:`trianflow.loop.verify.verify_loop` decides.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional

import cv2
import numpy as np
from scipy.sparse import csr_matrix

__all__ = ["PlaceConfig", "Place", "PlaceDatabase", "orb_features"]


@dataclass
class PlaceConfig:
    """Settings of the appearance index."""

    n_features: int = 1000  # ORB keypoints per keyframe
    vocabulary: int = 512  # words (k-means centres)
    train_descriptors: int = 20000  # descriptors sampled to build the vocabulary
    kmeans_iterations: int = 6
    min_gap_frames: int = 100  # candidates are at least this many frames older (the recent past is skipped)
    min_gap_places: float = 10.0  # ... and this many times the median place-to-place distance behind
    top_k: int = 3  # candidates proposed per keyframe
    min_score_ratio: float = 0.5  # candidate score >= this x the score of the keyframe's own neighbour
    seed: int = 0


@dataclass
class Place:
    """A keyframe's appearance: frame index, keypoints ``xy (M,2)`` pixels, descriptors ``(M,32)`` uint8."""

    frame: int
    xy: np.ndarray
    desc: np.ndarray


def orb_features(image: np.ndarray, n_features: int = 1000):
    """ORB keypoints ``(M,2)`` (pixel centres at integers) and descriptors ``(M,32)`` uint8 of an
    ``(H,W)`` or ``(H,W,3)`` uint8 image."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    orb = cv2.ORB_create(nfeatures=n_features, scaleFactor=1.2, nlevels=8, fastThreshold=12)
    kps, desc = orb.detectAndCompute(np.ascontiguousarray(gray), None)
    if desc is None or not kps:
        return np.zeros((0, 2)), np.zeros((0, 32), np.uint8)
    return np.array([k.pt for k in kps], dtype=np.float64), desc


class PlaceDatabase:
    """ORB features of the keyframes (:meth:`add`, or :meth:`add_later` off the caller's thread) and the
    candidate search (:meth:`candidates`).

    Args:
        config: :class:`PlaceConfig`.
        background: describe the images given to :meth:`add_later` on a worker thread (ORB releases the
            GIL), so that the VO's thread does not wait for them; the places are the same, in the same order.
    """

    def __init__(self, config: Optional[PlaceConfig] = None, background: bool = False):
        self.cfg = config or PlaceConfig()
        self._places: List[Place] = []
        self._pending: list = []  # futures of add_later, in call order
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="places") if background else None
        self.seconds = 0.0  # time spent describing images (on whichever thread)

    @property
    def places(self) -> List[Place]:
        """Every described place, in the order added (waits for the background descriptions)."""
        self.flush()
        return self._places

    @places.setter
    def places(self, value: List[Place]) -> None:
        self.flush()
        self._places = list(value)

    def __len__(self) -> int:
        return len(self.places)

    def _describe(self, frame: int, image: np.ndarray) -> Place:
        t0 = time.perf_counter()
        xy, desc = orb_features(image, self.cfg.n_features)
        self.seconds += time.perf_counter() - t0
        return Place(int(frame), xy, desc)

    def add(self, frame: int, image: np.ndarray) -> Place:
        """Describe keyframe ``frame`` from its image ``(H,W[,3])`` uint8 now."""
        self.flush()
        place = self._describe(frame, image)
        self._places.append(place)
        return place

    def add_later(self, frame: int, image: np.ndarray) -> None:
        """Describe keyframe ``frame`` on the background thread (synchronously without one). The caller must
        not modify ``image`` afterwards."""
        if self._pool is None:
            self.add(frame, image)
        else:
            self._pending.append(self._pool.submit(self._describe, frame, image))

    def flush(self) -> None:
        """Wait for the background descriptions and append them in order (their errors are raised here)."""
        while self._pending:
            self._places.append(self._pending.pop(0).result())

    def close(self) -> None:
        """Finish the pending descriptions and stop the background thread."""
        self.flush()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def before(self, n: int) -> "PlaceDatabase":
        """The places of frames ``< n`` (a view with the same settings; the features are shared)."""
        out = PlaceDatabase(self.cfg)
        out.places = [p for p in self.places if p.frame < n]
        out.seconds = self.seconds
        return out

    def frames(self) -> np.ndarray:
        return np.array([p.frame for p in self.places], dtype=np.int64)

    def bow_vectors(self) -> np.ndarray:
        """TF-IDF bag-of-words vectors ``(P, vocabulary)`` of all places, L2-normalised."""
        cfg = self.cfg
        alld = [p.desc for p in self.places if len(p.desc)]
        if not alld:
            return np.zeros((len(self.places), 1))
        pool = np.concatenate(alld)
        rng = np.random.default_rng(cfg.seed)
        take = pool if len(pool) <= cfg.train_descriptors else pool[rng.choice(len(pool), cfg.train_descriptors,
                                                                                replace=False)]
        k = int(min(cfg.vocabulary, max(1, len(take) // 4)))
        words = _binary_kmeans(take, k, cfg.kmeans_iterations, rng)
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        tf = np.zeros((len(self.places), k))
        for i, p in enumerate(self.places):
            if len(p.desc) == 0:
                continue
            w = np.array([m.trainIdx for m in matcher.match(p.desc, words)], dtype=np.int64)
            tf[i] = np.bincount(w, minlength=k) / len(w)
        df = (tf > 0).sum(0)
        idf = np.log(len(self.places) / np.maximum(df, 1))
        v = tf * idf
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def candidates(self, path_length: Optional[np.ndarray] = None) -> List[tuple]:
        """Proposed loops ``[(query place, candidate place, score ratio)]`` (indices into
        :attr:`places`), best first per query.

        A candidate is at least ``min_gap_frames`` older than the query; with ``path_length (N,)``
        (the distance travelled up to each frame, map units) the path driven between them must also be at
        least ``min_gap_places`` times the median distance between consecutive places (a vehicle that
        waits at a light for 100 frames has not left the place). Its score must be at least
        ``min_score_ratio`` times the query's similarity to the place just before it (the most alike any
        place can look to it), as DBoW normalises scores.
        """
        cfg = self.cfg
        n = len(self.places)
        fr = self.frames()
        if n < 3 or fr[-1] - fr[0] < cfg.min_gap_frames:  # nothing old enough: no vocabulary to build
            return []
        V = self.bow_vectors()
        S = V @ V.T
        place_step = float(np.median(np.diff(path_length[fr]))) if path_length is not None else 0.0
        out = []
        for q in range(1, n):
            old = np.flatnonzero(fr <= fr[q] - cfg.min_gap_frames)
            if path_length is not None and len(old):
                old = old[path_length[fr[q]] - path_length[fr[old]] >= cfg.min_gap_places * place_step]
            if not len(old):
                continue
            ref = S[q, q - 1]
            if ref <= 1e-9:
                continue
            best = old[np.argsort(-S[q, old])[:cfg.top_k]]
            for c in best:
                ratio = float(S[q, c] / ref)
                if ratio >= cfg.min_score_ratio:
                    out.append((q, int(c), ratio))
        return out


def _binary_kmeans(desc: np.ndarray, k: int, iterations: int, rng) -> np.ndarray:
    """Binary words ``(k,32)`` uint8: k-means on the descriptors' bits (as floats), centres rounded
    back to bits (majority per bit)."""
    bits = np.unpackbits(desc, axis=1).astype(np.float32)
    centres = bits[rng.choice(len(bits), k, replace=False)].copy()
    sq = (bits ** 2).sum(1)
    for _ in range(iterations):
        d = sq[:, None] - 2 * bits @ centres.T + (centres ** 2).sum(1)[None]
        lab = np.argmin(d, axis=1)
        count = np.bincount(lab, minlength=k).astype(np.float32)
        onehot = csr_matrix((np.ones(len(lab), np.float32), (lab, np.arange(len(lab)))), shape=(k, len(lab)))
        sums = onehot @ bits
        used = count > 0
        centres[used] = sums[used] / count[used, None]
    return np.packbits((centres >= 0.5).astype(np.uint8), axis=1)
