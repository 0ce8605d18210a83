"""The analysis scheduler: which camera's newest frame is analysed next, on a clock tests can drive.

Every camera hands its sampled frames to the scheduler; a newer frame replaces one still waiting
(newest wins, the replaced one counted as skipped for ``overload``), so no queue grows and a frame
analysed under overload is at most one sampling interval old. Whenever an analysis slot (one per
detector session) is free and a frame waits, the waiting camera that was analysed least lately
goes next: each camera's service is a count of its analysed frames that decays with a time
constant of SERVICE_TAU_S, divided by its weight. That is max-min fairness in frames: under overload
every camera of one priority is analysed at the same rate, a camera asking less than that (a
patrol camera at 0.25 fps) gets all it asks, and what it leaves goes to the others. A decaying
count rather than start-time fair queueing's virtual time, because with newest-frame-wins a
camera has no frame waiting most of the time: virtual time forgets a camera's past service each
time it goes idle, so a camera whose frames came when others were idle kept its lead for good.
No camera starves: one that was idle has the least recent service and goes first.

Thread-safe: the loop offers frames and reads figures while the analysis threads take jobs
themselves (gateway/analysis.py), so every public method holds ``lock`` (reentrant, so that a
caller may hold it across several calls, or wait on a Condition built on it).

``priority`` scales the weight: a ``high`` camera's share is 4x a ``normal`` one's, 16x a ``low``
one's, so low-priority cameras are shed first and high ones last, yet none is shed to nothing.
"""

from __future__ import annotations

import collections
import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

PRIORITY_WEIGHTS: dict[str, float] = {"low": 1.0, "normal": 4.0, "high": 16.0}
RATE_WINDOW_S = 5.0  # rates and the overload flag look at this much recent time
OVERLOAD_SHARE = 0.05  # frames superseded over this share of those offered (in the window): overloaded
JOB_EMA = 0.05  # smoothing of the mean job time that capacity is estimated from
SERVICE_TAU_S = 5.0  # time constant of the decaying count of analysed frames that fairness compares
# Under overload each camera is told the rate it will get (its fair share), so its decoder can skip
# what would only be superseded; the shares add up to this much more than was analysed, so frames
# keep arriving faster than they are taken and any capacity that frees up is claimed. Overloaded
# cameras offer their frames in bursts at the head of each GOP, so the slots wait for frames unless
# well more than the capacity is offered: at 24 cameras (bench.pipeline, 2-core machine, 2 runs each)
# 1.1 gave 24-25 analysed frames/s with the detectors 62 % busy, 1.3 gave 29-30, 1.6 gave 24-27.
TARGET_HEADROOM = 1.3
# A frame that waited this long for a slot is dropped (counted as overload) instead of analysed: under
# overload, capture to subscriber stays within a second (bench.pipeline at 24 cameras: p95 1.2 s without).
STALE_S = 0.75
# ... unless the camera's next frame is far off: a patrol camera at 0.25 fps whose frame is dropped is not
# looked at for 8 s, so its frame may wait up to this share of its interval (at most STALE_MAX_S). Bursts of
# key frames (200 patrol cameras) made frames wait past 0.75 s with the machine 80 % busy: 88-94 % analysed.
STALE_INTERVALS = 0.5
STALE_MAX_S = 2.0
TARGET_REFRESH_S = 1.0  # fair shares are worked out again this often
SHARES_OFF_MARGIN = 1.1  # fair shares end when the capacity exceeds what is asked by this factor

T = TypeVar("T")
F = TypeVar("F", bound=Callable)


def _locked(method: F) -> F:
    """Run a public method under the scheduler's lock."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class SkipReason(str, Enum):
    """Why a sampled frame was not analysed."""

    OVERLOAD = "overload"  # a newer frame of the camera arrived before an analysis slot was free
    DECODE_BEHIND = "decode_behind"  # decoding fell behind the stream: packets dropped to the next key frame


class _Window:
    """Counts over a sliding window on the scheduler's clock (one mark per second bucket)."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: collections.deque[list[float]] = collections.deque()  # [second, count]

    def add(self, now: float, n: float = 1.0) -> None:
        sec = float(int(now))
        if self._buckets and self._buckets[-1][0] == sec:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([sec, n])
        self._trim(now)

    def _trim(self, now: float) -> None:
        cut = now - RATE_WINDOW_S
        while self._buckets and self._buckets[0][0] < cut:
            self._buckets.popleft()

    def total(self, now: float) -> float:
        self._trim(now)
        return sum(n for _, n in self._buckets)

    def rate(self, now: float, since: float) -> float:
        """Per second over the window, or since `since` when that is more recent (a camera just added)."""
        span = min(RATE_WINDOW_S, max(now - since, 1.0))
        return self.total(now) / span


@dataclass(slots=True)
class _Camera(Generic[T]):
    key: str
    fps: float
    weight: float
    added_at: float
    pending: T | None = None
    waiting_since: float = 0.0  # when a frame of it began to wait (kept across supersedes): breaks ties
    pending_at: float = 0.0  # when the frame waiting now was offered
    busy: bool = False
    service: float = 0.0  # analysed frames, decaying with SERVICE_TAU_S, as of service_at
    service_at: float = 0.0
    offered: int = 0
    analysed: int = 0
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    offered_w: _Window = field(default_factory=_Window)
    analysed_w: _Window = field(default_factory=_Window)
    skipped_w: _Window = field(default_factory=_Window)

    @property
    def stale_s(self) -> float:
        """How long a frame of this camera may wait for a slot before it is dropped."""
        return max(STALE_S, min(STALE_MAX_S, STALE_INTERVALS / self.fps)) if self.fps > 0 else STALE_S

    @property
    def ready(self) -> bool:
        return self.pending is not None and not self.busy


@dataclass(frozen=True, slots=True)
class CameraLoad:
    """One camera's analysis figures."""

    fps_asked: float
    fps_analyzed: float
    analysed: int
    skipped: dict[str, int]
    shed: bool  # it gets less than it asks: held to a fair share below its rate, or frames superseded lately


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """The gateway's analysis load as a whole."""

    slots: int
    busy: int
    cameras: int
    asked_fps: float  # what the cameras ask (their rates while they deliver frames)
    offered_fps: float  # sampled frames handed over per second
    analyzed_fps: float
    capacity_fps: float | None  # slots / mean job time; None before the first job
    load: float | None  # asked / capacity
    overloaded: bool
    skipped: dict[str, int]


class AnalysisScheduler(Generic[T]):
    """Fair, newest-frame-wins scheduling of analysis jobs over a fixed number of slots."""

    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self.clock = clock
        self.lock = threading.RLock()
        self._cams: dict[str, _Camera[T]] = {}
        self._busy_slots = 0
        self._job_s: float | None = None  # smoothed seconds a slot is held per job
        self._superseded = _Window()
        self._offered = _Window()
        self._analysed = _Window()
        self._skipped_total: collections.Counter[str] = collections.Counter()
        self._targets: dict[str, float] = {}
        self._targets_at = float("-inf")

    # ---- cameras ---------------------------------------------------------------------------------
    @_locked
    def add(self, key: str, fps: float, priority: str = "normal") -> None:
        """Register a camera (or change its rate and priority)."""
        cam = self._cams.get(key)
        weight = PRIORITY_WEIGHTS[priority]
        if cam is None:
            now = self.clock()
            self._cams[key] = _Camera(key, fps, weight, now, service_at=now)
        else:
            cam.fps, cam.weight = fps, weight

    @_locked
    def remove(self, key: str) -> None:
        """Forget a camera; a job of it still running finishes normally."""
        self._cams.pop(key, None)

    @_locked
    def __contains__(self, key: str) -> bool:
        return key in self._cams

    # ---- frames ----------------------------------------------------------------------------------
    @_locked
    def offer(self, key: str, item: T) -> None:
        """A camera's newest sampled frame; it replaces one still waiting (counted as overload)."""
        cam = self._cams.get(key)
        if cam is None:
            return
        now = self.clock()
        cam.offered += 1
        cam.offered_w.add(now)
        self._offered.add(now)
        if cam.pending is not None:
            self._skip(cam, SkipReason.OVERLOAD, now)
            self._superseded.add(now)
        else:
            cam.waiting_since = now
        cam.pending, cam.pending_at = item, now

    @_locked
    def skipped(self, key: str, reason: SkipReason, n: int = 1) -> None:
        """Count frames lost before they reached the scheduler (decoding behind)."""
        cam = self._cams.get(key)
        if cam is not None and n > 0:
            self._skip(cam, reason, self.clock(), n)

    def _skip(self, cam: _Camera[T], reason: SkipReason, now: float, n: int = 1) -> None:
        cam.skipped[reason.value] += n
        cam.skipped_w.add(now, n)
        self._skipped_total[reason.value] += n

    # ---- jobs ------------------------------------------------------------------------------------
    @_locked
    def take(self) -> tuple[str, T] | None:
        """The next job when a slot is free and a frame waits; the slot and the camera become busy."""
        if self._busy_slots >= self.slots:
            return None
        now = self.clock()
        best: _Camera[T] | None = None
        best_key = (0.0, 0.0)
        for cam in self._cams.values():
            if not cam.ready:
                continue
            if now - cam.pending_at > cam.stale_s:
                # Too old to be worth a slot: what it shows is history by the time it is published.
                cam.pending = None
                self._skip(cam, SkipReason.OVERLOAD, now)
                self._superseded.add(now)
                continue
            # Least recent service per weight first; equal service: the one waiting longest.
            key = (cam.service * math.exp((cam.service_at - now) / SERVICE_TAU_S) / cam.weight, cam.waiting_since)
            if best is None or key < best_key:
                best, best_key = cam, key
        if best is None:
            return None
        item, best.pending = best.pending, None
        best.busy = True
        self._busy_slots += 1
        best.service = best.service * math.exp((best.service_at - now) / SERVICE_TAU_S) + 1.0
        best.service_at = now
        best.analysed += 1
        best.analysed_w.add(now)
        self._analysed.add(now)
        assert item is not None
        return best.key, item

    @_locked
    def slot_done(self, held_s: float) -> None:
        """A job's heavy part finished: its slot is free (held_s: how long it held it)."""
        self._busy_slots = max(0, self._busy_slots - 1)
        self._job_s = held_s if self._job_s is None else (1 - JOB_EMA) * self._job_s + JOB_EMA * held_s

    @_locked
    def finish(self, key: str) -> None:
        """A camera's job is completely done (results applied): its next frame may go."""
        cam = self._cams.get(key)
        if cam is not None:
            cam.busy = False

    @property
    def waiting(self) -> bool:
        """Whether a job could be taken now."""
        with self.lock:
            return self._busy_slots < self.slots and any(c.ready for c in self._cams.values())

    # ---- figures ---------------------------------------------------------------------------------
    @_locked
    def camera(self, key: str) -> CameraLoad | None:
        """One camera's figures, or None when it is not registered."""
        cam = self._cams.get(key)
        if cam is None:
            return None
        now = self.clock()
        return CameraLoad(
            fps_asked=cam.fps, fps_analyzed=round(cam.analysed_w.rate(now, cam.added_at), 2), analysed=cam.analysed,
            skipped=dict(cam.skipped),
            # Held to a fair share below what it asks, or frames of it were superseded lately.
            shed=self._targets.get(key, cam.fps) < cam.fps or cam.skipped_w.total(now) > 0,
        )

    @_locked
    def target(self, key: str) -> float:
        """The rate this camera will be analysed at: what it asks, or under overload its fair share."""
        now = self.clock()
        if now - self._targets_at >= TARGET_REFRESH_S:
            self._targets = self._fair_shares(now)
            self._targets_at = now
        cam = self._cams.get(key)
        if cam is None:
            return 0.0
        return self._targets.get(key, cam.fps)

    @_locked
    def share(self, key: str) -> float:
        """The part of its asked rate this camera is analysed at: 1.0, or less when held to a fair share."""
        cam = self._cams.get(key)
        if cam is None or cam.fps <= 0:
            return 1.0
        return min(1.0, self.target(key) / cam.fps)

    @_locked
    def fulfilment(self) -> float | None:
        """Under fair shares: the analysed rate over the sum of the shares (1.0 when every camera gets its
        share), else None. A camera is short of its share through a collision only when it gets clearly less
        than this; when all are short alike the capacity was overestimated and no camera is to blame."""
        if not self._targets:
            return None
        now = self.clock()
        promised = sum(self._targets.get(c.key, 0.0) for c in self._cams.values())
        if promised <= 0:
            return None
        return self._analysed.total(now) / RATE_WINDOW_S / promised

    def _fair_shares(self, now: float) -> dict[str, float]:
        """Max-min fair rates (weighted by priority) that fill the capacity, plus headroom; {} when all fit.

        Capacity comes from how long a job holds its slot (CPU waits included), not from what was
        analysed: frames superseded for want of a slot at one instant must not shrink the shares for
        good, and once cameras decode less the jobs get faster and the shares grow.
        """
        if not self._job_s:
            return {}
        capacity = TARGET_HEADROOM * self.slots / self._job_s
        cams = sorted((c for c in self._cams.values() if c.offered_w.total(now) > 0), key=lambda c: c.fps / c.weight)
        asked = sum(c.fps for c in cams)
        # Hysteresis: shares, once given, stay until the capacity clearly covers what is asked.
        if asked <= capacity * (1.0 if not self._targets else 1.0 / SHARES_OFF_MARGIN):
            return {}
        shares: dict[str, float] = {}
        weights = sum(c.weight for c in cams)
        for i, cam in enumerate(cams):
            level = capacity / weights if weights > 0 else 0.0
            if cam.fps <= level * cam.weight:
                shares[cam.key] = cam.fps  # asks less than its share: gets all of it
                capacity -= cam.fps
                weights -= cam.weight
                continue
            for rest in cams[i:]:
                shares[rest.key] = level * rest.weight
            break
        return shares

    @_locked
    def stats(self) -> SchedulerStats:
        """The whole gateway's analysis figures."""
        now = self.clock()
        offered = self._offered.total(now)
        # A camera asks its rate while it delivers frames; one offline asks nothing of the detectors.
        asked = sum(c.fps for c in self._cams.values() if c.offered_w.total(now) > 0)
        capacity = self.slots / self._job_s if self._job_s else None
        # Overloaded: frames are being superseded, or the cameras are held to fair shares below what they ask.
        overloaded = bool(self._targets) or (offered > 0 and self._superseded.total(now) > OVERLOAD_SHARE * offered)
        return SchedulerStats(
            slots=self.slots, busy=self._busy_slots, cameras=len(self._cams), asked_fps=round(asked, 2),
            offered_fps=round(offered / RATE_WINDOW_S, 2), analyzed_fps=round(self._analysed.total(now) / RATE_WINDOW_S, 2),
            capacity_fps=round(capacity, 1) if capacity else None,
            load=round(asked / capacity, 2) if capacity else None, overloaded=overloaded,
            skipped=dict(self._skipped_total),
        )
