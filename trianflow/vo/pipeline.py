"""Work that need not wait for the current frame, and the threads the run uses.

:class:`FramePipeline` reads and decodes frame ``i+1`` on a worker thread while the VO processes
frame ``i``, and (with the default DIS flow) computes its flow from frame ``i`` there too: frame ``i``
becomes the reference of frame ``i+1`` unless the VO holds an older one (a static or rotation-only
frame), and then the speculative flow is dropped and the VO computes the one it needs. Image decoding
and DIS release the GIL, so on two cores they run beside the VO's Python geometry instead of before it.
The outputs are byte-identical to the sequential loop (DIS is deterministic; the same flow is computed,
only elsewhere).

:func:`thread_plan` decides the thread counts from ``--threads`` (default: the cores the process may
use): OpenCV's pool gets all of them (the VO's thread and the worker share it: a parallel loop started
while the pool is busy runs in its caller's thread, so no more than that many threads compute), the
pipeline's worker runs when there are at least 2, torch's small-tensor geometry stays single-threaded and
the bundle adjustment's solver uses 1 thread. Measured on kitti_03_first400, 2 cores, whole process, median of
3 interleaved runs: 62.2 s with ``--threads 1``, 43.9 s with the earlier sequential loop (OpenCV's loops on 2
threads), 41.4 s with the worker (docs/RESULTS.md); OpenCV on 1 thread beside the worker was slower.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np

from trianflow.errors import InputError

__all__ = ["ThreadPlan", "thread_plan", "applied_threads", "PrefetchedFlow", "FramePipeline", "read_frame"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ThreadPlan:
    threads: int  # the budget (``--threads``; 0 resolved to the usable cores)
    requested: int  # what was asked (0 = auto)
    opencv: int  # cv2.setNumThreads (the pool the loop and the worker share)
    torch: int  # torch.set_num_threads for the geometry (0 = left as it is)
    pipeline: bool  # the reading / flow worker thread

    def as_dict(self) -> dict:
        return {"threads": self.threads, "requested": self.requested or "auto", "opencv": self.opencv,
                "torch": self.torch, "pipeline": self.pipeline, "cores": usable_cores()}


def thread_plan(threads: int = 0, torch_threads: int = 1) -> ThreadPlan:
    """The thread counts for a budget of ``threads`` (0: the usable cores)."""
    if threads < 0:
        raise InputError(f"--threads {threads}: give a positive number of threads (0 or leave it out: all cores)")
    n = int(threads) if threads > 0 else usable_cores()
    return ThreadPlan(threads=n, requested=int(threads), opencv=n, torch=torch_threads, pipeline=n >= 2)


class applied_threads:
    """Context manager: set OpenCV's and torch's thread counts of a :class:`ThreadPlan`, restore them after."""

    def __init__(self, plan: ThreadPlan):
        self.plan = plan

    def __enter__(self):
        import cv2
        import torch

        self._cv, self._torch = cv2.getNumThreads(), torch.get_num_threads()
        cv2.setNumThreads(self.plan.opencv)
        if self.plan.torch > 0:
            torch.set_num_threads(self.plan.torch)
        return self.plan

    def __exit__(self, *exc):
        import cv2
        import torch

        cv2.setNumThreads(self._cv)
        torch.set_num_threads(self._torch)
        return False


def read_frame(seq, i: int, cfg, warnings: List[str]):
    """Frame ``i`` (and its right image with stereo); ``(None, None)`` for an unreadable frame
    when ``cfg.skip_unreadable`` (a warning naming the file is logged and collected)."""
    import logging

    try:
        img = seq.read(i)
        right = seq.read_right(i) if (cfg.stereo and seq.has_stereo) else None
        return img, right
    except InputError as exc:
        if not cfg.skip_unreadable:
            raise
        msg = f"frame {i} skipped: {exc} (bridged like a black frame; use --strict to stop instead)"
        logging.getLogger("trianflow.vo.run").warning(msg)
        warnings.append(msg)
        return None, None


class PrefetchedFlow:
    """The VO's flow callable: returns a flow computed ahead for exactly these two image arrays
    (by identity), else computes it with ``flow_fn``. ``seconds`` sums the flow computation wherever
    it ran (ahead on the worker or here)."""

    def __init__(self, flow_fn: Callable):
        self.flow_fn = flow_fn
        self._ready = None
        self.seconds = 0.0
        self.hits = 0
        self.misses = 0

    def offer(self, img1, img2, flows, seconds: float) -> None:
        self._ready = (img1, img2, flows)
        self.seconds += seconds

    def __call__(self, img1, img2):
        r, self._ready = self._ready, None
        if r is not None and r[0] is img1 and r[1] is img2:
            self.hits += 1
            return r[2]
        self.misses += 1
        t0 = time.perf_counter()
        out = self.flow_fn(img1, img2)
        self.seconds += time.perf_counter() - t0
        return out


class FramePipeline:
    """Iterate ``(i, image, right)`` over ``seq``, reading frame ``i+1`` (and, given ``ahead_flow``,
    its flow from frame ``i``, handed to ``prefetched``) on one worker thread while the caller
    processes frame ``i``. With ``enabled=False`` it reads in the caller's thread, frame by frame.
    ``read_s`` sums the reading time wherever it ran; ``wait_s`` the time the caller waited."""

    def __init__(self, seq, cfg, warnings: List[str], enabled: bool = True, ahead_flow: Optional[Callable] = None,
                 prefetched: Optional[PrefetchedFlow] = None, prepare: Optional[Callable] = None,
                 offer: Optional[Callable] = None):
        self.seq, self.cfg, self.warnings = seq, cfg, warnings
        self.enabled = enabled and len(seq) > 1
        self.ahead_flow = ahead_flow if (ahead_flow is not None and prefetched is not None) else None
        self.prefetched = prefetched
        # what the VO derives from the flows alone (TwoViewPose.prepare), computed ahead as well, and where
        # it is handed in (TwoViewPose.offer)
        self.prepare, self.offer = (prepare, offer) if (prepare is not None and offer is not None) else (None, None)
        self.read_s = 0.0
        self.wait_s = 0.0
        self._pool: Optional[ThreadPoolExecutor] = None

    def _job(self, i: int, prev):
        t0 = time.perf_counter()
        img, right = read_frame(self.seq, i, self.cfg, self.warnings)
        t_read = time.perf_counter() - t0
        flows, t_flow = None, 0.0
        if self.ahead_flow is not None and prev is not None and img is not None and _shape_ok(prev, img):
            t1 = time.perf_counter()
            flows = self.ahead_flow(prev, img)
            t_flow = time.perf_counter() - t1
            if self.prepare is not None:
                flows = (*flows, self.prepare(*flows))
        return img, right, t_read, flows, t_flow

    def __iter__(self):
        n = len(self.seq)
        if not self.enabled:
            for i in range(n):
                t0 = time.perf_counter()
                img, right = read_frame(self.seq, i, self.cfg, self.warnings)
                dt = time.perf_counter() - t0
                self.read_s += dt
                self.wait_s += dt
                yield i, img, right
            return
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="trianflow-read")
        try:
            fut = self._pool.submit(self._job, 0, None)
            for i in range(n):
                t0 = time.perf_counter()
                img, right, t_read, flows, t_flow = fut.result()
                self.wait_s += time.perf_counter() - t0
                self.read_s += t_read
                if flows is not None:
                    if self.prepare is not None:
                        self.offer(*flows)
                        flows = flows[:2]
                    self.prefetched.offer(self._prev, img, flows, t_flow)
                self._prev = img
                if i + 1 < n:
                    fut = self._pool.submit(self._job, i + 1, img)
                yield i, img, right
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    _prev = None


def _shape_ok(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape[:2] == b.shape[:2]
