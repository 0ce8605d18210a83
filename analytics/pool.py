"""A pool of detector sessions on worker threads, awaited from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from analytics.detector import Detector, load_detector
from analytics.types import Detection

log = logging.getLogger(__name__)

T = TypeVar("T")

# Inference is the work that can be shed (the scheduler skips frames), decoding is not: detector
# threads run this much nicer than the rest, so the kernel gives decoders and the event loop the
# CPU they need first and inference everything left (bench: 24 cameras, decode kept up only so).
# Detector threads run this much nicer than decoding and the loop: decoding gets the CPU first (it cannot be
# shed), yet not all of it. At 10, bursts of key frames to decode (200 patrol cameras) stalled the analysis
# until waiting frames went stale: 72-86 % of the asked rate analysed with the machine 75-79 % busy; at 5,
# 87-95 % (0: 86-92 %); at 24 overloaded cameras 62.6-64.0 analysed/s at 5 against 56.8 (median) at 10.
DEFAULT_NICE = 5
WARMUP_RUNS = 2  # inferences per session at start-up


def lower_thread_priority(delta: int) -> None:
    """Make the calling OS thread `delta` nicer (Linux: nice is per thread); best effort elsewhere."""
    if delta <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + delta))
    except OSError as e:  # a sandbox may refuse it; scheduling still works, only less well
        log.debug("could not lower the priority of thread %d: %s", tid, e)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Counters of a DetectorPool at one moment."""

    inferences: int  # detect() calls completed (successfully or not)
    inference_s: float  # seconds spent inside Detector.detect, all workers together
    in_flight: int  # submitted and not finished: queued for a worker or running
    errors: int

    @property
    def mean_ms(self) -> float:
        """Mean milliseconds per inference (pre- and post-processing included)."""
        return 1000.0 * self.inference_s / self.inferences if self.inferences else 0.0


class DetectorPool:
    """N worker threads, each with its own single-threaded ORT session (DESIGN §7: 2x1 beats 1x2)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        workers: int = 2,
        intra_threads: int = 1,
        providers: list[str] | None = None,
        nice: int = DEFAULT_NICE,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        # load every session now: a bad --model must fail at start-up, not on the first frame
        detectors = [
            load_detector(model_path, intra_threads=intra_threads, providers=providers) for _ in range(workers)
        ]
        for det in detectors:
            # ONNX Runtime's first runs are several times slower (allocations, kernel choice): pay them
            # here, or the first seconds of analysis look like an overload.
            w, h = det.input_size
            for _ in range(WARMUP_RUNS):
                det.detect(np.zeros((h, w, 3), np.uint8))
        self._detector: Detector = detectors[0]
        # sessions are handed out through a queue; with max_workers == sessions a job never waits on it
        self._idle: queue.SimpleQueue[Detector] = queue.SimpleQueue()
        for d in detectors:
            self._idle.put(d)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detector",
                                            initializer=lower_thread_priority, initargs=(nice,))
        self.nice = nice  # analysis threads holding these sessions run this much nicer too (gateway/analysis.py)
        self._lock = threading.Lock()
        self._inferences = 0
        self._inference_s = 0.0
        self._in_flight = 0
        self._errors = 0
        self._closed = False
        self.workers = workers

    @property
    def name(self) -> str:
        """Model name, e.g. "yolox:yolox_nano"."""
        return self._detector.name

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names the model knows."""
        return self._detector.labels

    @property
    def family(self) -> str:
        """Model family ("yolox" or "yolov8")."""
        return self._detector.family

    def stats(self) -> PoolStats:
        """Snapshot of the counters."""
        with self._lock:
            return PoolStats(self._inferences, self._inference_s, self._in_flight, self._errors)

    async def detect(
        self, image: np.ndarray, min_score: float = 0.3, labels: frozenset[str] | None = None
    ) -> list[Detection]:
        """Detect objects on a worker thread; the event loop never blocks."""
        return await self.run(lambda det: self.timed_detect(det, image, min_score, labels))

    async def run(self, fn: Callable[[Detector], T]) -> T:
        """Run fn(detector) on a worker thread that holds one of the pool's sessions."""
        if self._closed:
            raise RuntimeError("detector pool is closed")
        with self._lock:
            self._in_flight += 1
        try:
            # what loop.run_in_executor does, but keeping the executor future: its callback
            # fires even when a queued job is cancelled before it starts (caller cancelled,
            # or close()), which a finally inside _run would miss
            inner = self._executor.submit(self._run, fn)
        except BaseException:
            self._done(None)
            raise
        inner.add_done_callback(self._done)
        return await asyncio.wrap_future(inner)

    def _done(self, _fut: object) -> None:
        with self._lock:
            self._in_flight -= 1

    def _run(self, fn: Callable[[Detector], T]) -> T:
        det = self._idle.get()
        try:
            return fn(det)
        finally:
            self._idle.put(det)

    @contextlib.contextmanager
    def session(self) -> Iterator[Detector]:
        """Hold one of the pool's sessions on the calling thread (an analysis thread, or a pool worker)."""
        with self._lock:
            self._in_flight += 1
        det = self._idle.get()
        try:
            yield det
        finally:
            self._idle.put(det)
            with self._lock:
                self._in_flight -= 1

    def timed_detect(self, det: Detector, image: np.ndarray, min_score: float,
                     labels: frozenset[str] | None) -> list[Detection]:
        """det.detect, counted in the pool's statistics (call on a worker thread, from run())."""
        t0 = time.perf_counter()
        ok = False
        try:
            out = det.detect(image, min_score, labels)
            ok = True
            return out
        finally:
            dt = time.perf_counter() - t0
            with self._lock:
                self._inferences += 1
                self._inference_s += dt
                if not ok:
                    self._errors += 1

    def close(self) -> None:
        """Stop the workers: queued jobs are cancelled, running ones finish."""
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "DetectorPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
