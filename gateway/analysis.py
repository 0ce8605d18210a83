"""Analysis of sampled frames: one scheduler for the gateway, one CameraAnalysis per camera.

The scheduler (analytics/scheduler.py) decides whose newest frame goes next; `AnalysisRunner`
keeps every detector session busy with such jobs. A job has a heavy part on an analysis thread
(convert to BGR, thumbnails, quality diagnosis when due, motion gate, inference, tracker, event
snapshots) and a light part on the loop (publishing). The slot is freed as soon as the heavy part
ends; the camera's next frame waits for the light part, so each camera's events stay in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analytics.detector import Detector
from analytics.events import Event, Origin, iso_ms
from analytics.motion import MotionGate
from analytics.pool import DEFAULT_NICE, DetectorPool, lower_thread_priority
from analytics.quality import (
    FAULTS, SMALL_WIDTH, BaselineStore, QualityChange, QualityConfig, QualityDiagnoser, Thumbs, small_thumb,
)
from analytics.rules import Line, RuleEngine, RuleHit, Zone
from analytics.scheduler import AnalysisScheduler
from analytics.snapshot import SNAPSHOT_WIDTH, fit, render_snapshot
from analytics.tracker import IouTracker
from analytics.types import Detection, Frame, Sample, TrackUpdate
from gateway.events import EventLog
from registry.models import Camera

log = logging.getLogger(__name__)

_PHASE = {"appear": "start", "update": "update", "leave": "end"}
PERIODIC_LOOK_S = 10.0  # with the motion gate shut and nothing tracked, still look this often
DIAGNOSIS_STRETCH_MAX = 2.0  # under overload quality checks run at most this much less often than asked
MOTION_END_S = 3.0  # no motion for this long ends a motion event (no-model mode)
MOTION_START_FRAMES = 2  # frames in a row with motion start one
IDLE_MARGIN_S = 0.5  # no analysed frame for the tracker's max age plus this: objects in view are gone
WATCH_S = 1.0  # how often the runner's task checks that its threads are alive


@dataclass(frozen=True, slots=True)
class EventSink:
    """Where a camera's analysis publishes: the tier's event log, under this gateway's origin."""

    events: EventLog
    origin: Origin
    model: str | None
    snapshot_width: int = SNAPSHOT_WIDTH  # event snapshots at most this wide (events.snapshot_width)
    # Where a camera's occlusion baseline outlives restarts (gateway/quality_store.py); None: nowhere.
    baselines: Callable[[Camera], BaselineStore | None] | None = None
    # Told (kind "appear" | "leave", track id, when) as tracks start and end: events-mode recording.
    # Called on the worker thread: it must only hand over (never wait).
    tracks: Callable[[str, int, float], None] | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the heavy part of a job does, decided on the loop from the camera's state."""

    max_width: int
    diagnose: bool  # quality diagnosis is due on this frame
    detect_always: bool  # tracks are open or the periodic look is due: detect even without motion
    min_score: float
    labels: frozenset[str] | None
    motion_threshold: float | None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An event ready to publish, with its snapshot (rendered on the worker thread)."""

    event: Event
    snapshot: bytes | None = None


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What the heavy part of a job made of one frame: the events to publish and what the live view shows."""

    frame: Frame
    detections: tuple[Detection, ...] | None  # None: the detector did not run
    events: tuple[Outgoing, ...]
    convert_s: float  # thread CPU seconds: BGR conversion
    diagnose_s: float  # thumbnails, quality checks and motion gate
    detect_s: float  # inference (letterbox, ONNX Runtime, NMS)
    events_s: float  # tracker and event snapshots


def _label_set(camera: Camera) -> frozenset[str] | None:
    """The labels a camera reports, built once per settings change rather than per frame."""
    return frozenset(camera.analytics.labels) if camera.analytics.labels else None


def _rules(camera: Camera) -> RuleEngine:
    """The camera's zones and lines as a rule engine, built once per settings change."""
    a = camera.analytics
    zones = [Zone(z.name, tuple(tuple(p) for p in z.polygon), frozenset(z.labels) if z.labels else None, z.loiter_s)
             for z in a.zones]
    lines = [Line(ln.name, tuple(ln.a), tuple(ln.b), frozenset(ln.labels) if ln.labels else None) for ln in a.lines]
    return RuleEngine(zones, lines)  # type: ignore[arg-type]


def _quality_config(camera: Camera) -> QualityConfig:
    """The diagnoser's thresholds from the camera's settings, built once per settings change."""
    q = camera.analytics.quality
    return QualityConfig(**q.model_dump(exclude={"enabled", "disabled", "interval_s"}), disabled=tuple(q.disabled))


@dataclass(slots=True)
class StageTimes:
    """Thread CPU seconds per stage, summed over analysed frames (the bench's per-frame breakdown)."""

    frames: int = 0
    convert_s: float = 0.0
    diagnose_s: float = 0.0
    detect_s: float = 0.0
    events_s: float = 0.0  # tracker and snapshots (snapshot_s is part of it)
    snapshot_s: float = 0.0
    snapshots: int = 0

    def per_frame_ms(self) -> dict[str, float]:
        """Mean thread CPU milliseconds per analysed frame, by stage (/healthz shows them)."""
        n = max(self.frames, 1)
        return {"convert": round(1000 * self.convert_s / n, 2), "diagnose_and_gate": round(1000 * self.diagnose_s / n, 2),
                "detect": round(1000 * self.detect_s / n, 2), "track_and_snapshots": round(1000 * self.events_s / n, 2)}


class CameraAnalysis:
    """One camera's analysis state: motion gate, tracker, quality diagnosis, and the events they raise.

    The heavy part of a frame (`work`) runs on a worker thread and does everything, snapshots
    included; the loop only publishes what it returns (`apply`). Only one job of a camera runs at a
    time (the scheduler sees to it), and the loop touches the state only while none runs (`idle`,
    `stop`), so the state needs no lock.
    """

    def __init__(self, camera: Camera, sink: EventSink, max_width: int,
                 clock: Callable[[], float] = time.time, stages: StageTimes | None = None) -> None:
        self.camera = camera
        self.sink = sink
        self.max_width = max_width
        self.clock = clock
        self.stages = stages if stages is not None else StageTimes()
        self.tracker = IouTracker()
        self.gate = MotionGate()
        # The occlusion baseline outlives restarts in the tier's Redis: restored now, saved now and then.
        self.quality = QualityDiagnoser(_quality_config(camera), sink.baselines(camera) if sink.baselines else None)
        self.quality_open: set[str] = set()  # faults whose start was published: only these get an end
        self.rules = _rules(camera)
        self._labels = _label_set(camera)
        self.in_motion = False
        self.motion_frames = 0
        self.last_motion = 0.0
        self.last_detect = float("-inf")
        self.last_diagnosed = float("-inf")
        self.last_frame_at: float | None = None
        self.busy = False  # a job of this camera is on a worker thread
        # Newest analysed frame and the detections drawn from it: thumbnails, live view and upper
        # tiers read these; nothing decodes a second time for them.
        self.latest: Frame | None = None
        self.latest_detections: tuple[Detection, ...] = ()
        self.frames_analyzed = 0
        self._track_snaps: dict[int, tuple[Detection, bytes]] = {}  # open track -> its last snapshot and what it shows
        self._scaled: tuple[np.ndarray, int, np.ndarray] | None = None  # (frame, width, it scaled): within a job
        self.detections_run = 0
        self.inference_s = 0.0

    def configure(self, camera: Camera) -> None:
        """Apply changed analysis settings (read by the next frame)."""
        rules_changed = (camera.analytics.zones, camera.analytics.lines) != (self.camera.analytics.zones,
                                                                             self.camera.analytics.lines)
        self.camera = camera
        self._labels = _label_set(camera)
        self.quality.config = _quality_config(camera)
        if rules_changed:
            self.rules = _rules(camera)  # read by the next frame; what was inside the old zones is forgotten

    # ---- a job -----------------------------------------------------------------------------------
    def plan(self, sample: Sample, share: float = 1.0) -> _Plan:
        """Decide what the heavy part does with this frame (share: of its asked rate the camera is analysed at)."""
        a = self.camera.analytics
        now = sample.captured_at
        # Shed alongside the analysis: a camera held to half its rate is diagnosed half as often (up to
        # DIAGNOSIS_STRETCH_MAX times its interval). Diagnosis is a cost per camera-second, not per frame:
        # at 24 overloaded cameras it was a quarter of the overhead per analysed frame (bench.pipeline).
        interval = a.quality.interval_s * min(DIAGNOSIS_STRETCH_MAX, 1.0 / max(share, 1e-3))
        diagnose = a.quality.enabled and now - self.last_diagnosed >= interval
        if diagnose:
            self.last_diagnosed = now
        return _Plan(
            max_width=self.max_width, diagnose=diagnose,
            detect_always=bool(self.tracker.active) or now - self.last_detect >= PERIODIC_LOOK_S,
            min_score=a.min_score, labels=self._labels, motion_threshold=a.motion_threshold,
        )

    def work(self, sample: Sample, plan: _Plan, detector: Detector | None,
             detect: Callable[[Detector, object, float, frozenset[str] | None], list[Detection]] | None = None
             ) -> FrameResult:
        """The heavy part, on a worker thread: convert, diagnose when due, gate, detect, track, render snapshots."""
        t0 = time.thread_time()
        image = sample.picture.to_bgr(plan.max_width)
        frame = Frame(sample.camera_id, image, sample.captured_at, sample.media_ts, sample.seq)
        t1 = time.thread_time()
        changes: list[QualityChange] = []
        small = sample.picture.thumb(SMALL_WIDTH)  # None: made from the converted frame
        if plan.diagnose:
            # Thumbnails made once serve the quality checks and the motion gate alike.
            thumbs = Thumbs.of(image, small)
            changes = self.quality.update(thumbs, frame.captured_at)
            small = thumbs.small
        elif small is None:
            small = small_thumb(image)
        if plan.motion_threshold is not None:
            self.gate.threshold = plan.motion_threshold
        moving = self.gate.update(small) >= self.gate.threshold
        t2 = time.thread_time()
        dets: tuple[Detection, ...] | None = None
        if detector is not None and (moving or plan.detect_always):
            run = detect or (lambda d, img, s, lab: d.detect(img, s, lab))
            dets = tuple(run(detector, image, plan.min_score, plan.labels))
        t3 = time.thread_time()
        out: list[Outgoing] = []
        now = frame.captured_at
        if changes:
            out += self._quality_events(changes, frame)
        elif self.quality_open and not self.camera.analytics.quality.enabled:
            out += self._quality_events(self.quality.flush(now, "diagnosis switched off"), frame)
        if moving:
            self.last_motion = now
        if detector is not None:
            if dets is not None:
                self.last_detect = now
                updates = self.tracker.update(frame, list(dets))
                self._tell_tracks(updates, now)
                out += [self._track_event(u) for u in updates]
                if not self.rules.empty:
                    hits = self.rules.update(now, self.tracker.seen, self.tracker.ended)
                    out += [self._rule_event(h, frame) for h in hits]
        else:
            out += self._motion_events(moving, frame)
        self._scaled = None  # the job's frames are published; the scaled copy is not kept beside them
        return FrameResult(frame, dets, tuple(out), t1 - t0, t2 - t1, t3 - t2, time.thread_time() - t3)

    def apply(self, r: FrameResult) -> None:
        """The loop's part: publish the events, show the frame and its detections."""
        self.frames_analyzed += 1
        self.last_frame_at = r.frame.captured_at
        st = self.stages
        st.frames += 1
        st.convert_s += r.convert_s
        st.diagnose_s += r.diagnose_s
        st.detect_s += r.detect_s
        st.events_s += r.events_s
        self.latest = r.frame
        if r.detections is not None:
            self.detections_run += 1
            self.inference_s += r.detect_s
        # Nothing tracked and nothing moving: the live view must not keep drawing old boxes.
        self.latest_detections = r.detections or ()
        self._publish(r.events)

    async def idle(self) -> None:
        """No frame analysed for a while (stream stalled or ended): objects in view are gone from our view."""
        last = self.last_frame_at
        now = self.clock()
        if self.busy or (last is not None and now - last < self.tracker.max_age_s + IDLE_MARGIN_S):
            return
        await self._flush(now, [])

    async def stop(self) -> None:
        """End what was reported open: every object in view gets its end, every quality fault too.

        Called once no job of this camera runs any more (the runner waited for it).
        """
        now = self.clock()
        ends = {c.fault: c for c in self.quality.flush(now, "camera stopped")}
        faults = [ends.get(f) or QualityChange(f, "end", 0.0, {"cause": "camera stopped"})
                  for f in FAULTS if f in self.quality_open]
        await self._flush(now, faults)

    async def _flush(self, now: float, faults: list[QualityChange]) -> None:
        # Rendered off the loop: the ends of what was in view carry their best picture.
        def render() -> list[Outgoing]:
            updates = self.tracker.flush(now)
            self._tell_tracks(updates, now)
            out = [self._track_event(u) for u in updates]
            out += [self._rule_event(h, None) for h in self.rules.update(now, [], self.tracker.ended)]
            if self.in_motion:
                self.in_motion = False
                out.append(self._motion_event("end", None))
            out += self._quality_events(faults, None)
            self._scaled = None  # as at the end of a job: no frame kept for snapshots past their events
            return out
        self._publish(await asyncio.get_running_loop().run_in_executor(None, render))

    def _publish(self, events: tuple[Outgoing, ...] | list[Outgoing]) -> None:
        for o in events:
            self.sink.events.publish(o.event, o.snapshot)

    @property
    def faults(self) -> tuple[str, ...]:
        """Active quality faults, in FAULTS order."""
        return tuple(f for f in FAULTS if f in self.quality_open)

    # ---- events (made on the worker thread, published by the loop) ---------------------------------
    def _snapshot(self, image: np.ndarray, *args) -> bytes:
        # Rendered only for an event about to be published, at most events.snapshot_width wide. The frame is
        # scaled once for all the events it raises (scaling a 720p frame costs as much as encoding the result).
        t0 = time.thread_time()
        try:
            width = self.sink.snapshot_width
            scaled = self._scaled
            if scaled is None or scaled[0] is not image or scaled[1] != width:
                scaled = self._scaled = (image, width, fit(image, width))
            return render_snapshot(scaled[2], *args, max_width=width)
        finally:
            self.stages.snapshot_s += time.thread_time() - t0
            self.stages.snapshots += 1

    def _quality_events(self, changes: list[QualityChange], frame: Frame | None) -> list[Outgoing]:
        cam = self.camera
        out = []
        # Ends first: a start of another fault in the same frame may mask them.
        for change in sorted(changes, key=lambda c: c.phase != "end"):
            if change.phase == "start":
                self.quality_open.add(change.fault)
            elif change.fault in self.quality_open:
                self.quality_open.discard(change.fault)
            else:
                continue
            log.info("camera %s: quality %s %s (score %.2f)", cam.id, change.fault, change.phase, change.score)
            # A start carries the picture that shows the fault.
            snap = self._snapshot(frame.image) if change.phase == "start" and frame is not None else None
            out.append(Outgoing(Event(
                type="quality", camera_id=cam.id, node=cam.node,
                ts=iso_ms(frame.captured_at if frame else self.clock()), origin=self.sink.origin,
                phase=change.phase, reason=change.fault, score=change.score, extra=change.extra,
                media_ts=frame.media_ts if frame else None,
            ), snap))
        return out

    def _motion_events(self, moving: bool, frame: Frame) -> list[Outgoing]:
        """No model: motion starts after a few moving frames and ends after a still spell."""
        self.motion_frames = self.motion_frames + 1 if moving else 0
        if not self.in_motion and self.motion_frames >= MOTION_START_FRAMES:
            self.in_motion = True
            return [self._motion_event("start", frame, self._snapshot(frame.image))]
        if self.in_motion and frame.captured_at - self.last_motion > MOTION_END_S:
            self.in_motion = False
            return [self._motion_event("end", frame)]
        return []

    def _motion_event(self, phase: str, frame: Frame | None, snapshot: bytes | None = None) -> Outgoing:
        cam = self.camera
        return Outgoing(Event(
            type="motion", camera_id=cam.id, node=cam.node, ts=iso_ms(frame.captured_at if frame else self.clock()),
            origin=self.sink.origin, phase=phase, media_ts=frame.media_ts if frame else None,
        ), snapshot)

    def _tell_tracks(self, updates: list[TrackUpdate], now: float) -> None:
        # `now`, not the update's frame: a leave's frame is the object's best sighting, not its last.
        if self.sink.tracks is not None:
            for u in updates:
                if u.kind != "update":
                    self.sink.tracks(u.kind, u.track_id, now)

    def _track_event(self, u: TrackUpdate) -> Outgoing:
        d = u.detection
        cam = self.camera
        # An object's end carries its best sighting, most often the one its start or last update already
        # showed: the JPEG made then is sent again rather than encoded twice (a track was two encodes).
        kept = self._track_snaps.pop(u.track_id, None) if u.kind == "leave" else None
        if kept is not None and kept[0] is d:
            snap = kept[1]
        else:
            snap = self._snapshot(u.frame.image, d.box, d.label, d.score)
            if u.kind != "leave":
                self._track_snaps[u.track_id] = (d, snap)
        return Outgoing(Event(
            type="detection", camera_id=cam.id, node=cam.node, ts=iso_ms(u.frame.captured_at),
            origin=self.sink.origin, label=d.label, score=d.score, box=d.box, track_id=u.track_id,
            model=self.sink.model, media_ts=u.frame.media_ts, phase=_PHASE[u.kind],
        ), snap)


    def _rule_event(self, h: RuleHit, frame: Frame | None) -> Outgoing:
        """A zone's enter/leave/loiter or a line's crossing; all but a leave carry a snapshot of who it was."""
        tp = h.track
        cam = self.camera
        snap = None
        if frame is not None and h.phase != "leave":
            snap = self._snapshot(frame.image, tp.box, tp.label, tp.score)
        return Outgoing(Event(
            type=h.kind, camera_id=cam.id, node=cam.node, ts=iso_ms(frame.captured_at if frame else self.clock()),
            origin=self.sink.origin, label=tp.label, score=tp.score, box=tp.box, track_id=tp.track_id, zone=h.rule,
            phase=h.phase, direction=h.direction, model=self.sink.model, media_ts=frame.media_ts if frame else None,
        ), snap)


class AnalysisRunner:
    """Keeps the analysis slots busy: one thread per slot takes its next job from the scheduler itself.

    A thread that finishes a frame's heavy part takes the next job at once, without a round trip
    through the event loop: with the loop busy publishing events for two dozen cameras, waiting for it
    to hand out each job left the detectors idle half the time (bench.pipeline, N = 24 on 2 cores:
    detectors 49 % busy with the machine 78 % busy). Only the light part (publishing) goes to the loop;
    a camera's next frame waits for it, so each camera's events stay in order.
    """

    def __init__(self, pool: DetectorPool | None, threads: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        slots = pool.workers if pool is not None else threads
        self.scheduler: AnalysisScheduler[Sample] = AnalysisScheduler(slots, clock)
        self.cameras: dict[str, CameraAnalysis] = {}  # changed on the loop under the scheduler's lock
        self.stages = StageTimes()
        self._cond = threading.Condition(self.scheduler.lock)  # a job may be waiting, or stop
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[str] = set()  # cameras whose job was taken and is not yet published
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}  # detach() waiting for a camera's job
        self._stopping = False
        self.failures = 0

    # ---- cameras ---------------------------------------------------------------------------------
    def attach(self, analysis: CameraAnalysis) -> None:
        """Schedule a camera's frames."""
        cam = analysis.camera
        with self._cond:
            self.cameras[cam.id] = analysis
            self.scheduler.add(cam.id, cam.analytics.fps, cam.analytics.priority)

    def reconfigure(self, camera: Camera) -> None:
        """A camera's rate or priority changed."""
        with self._cond:
            if camera.id in self.scheduler:
                self.scheduler.add(camera.id, camera.analytics.fps, camera.analytics.priority)

    async def detach(self, camera_id: str, timeout: float = 5.0) -> None:
        """Stop scheduling a camera and wait (bounded) for its job in flight: a worker thread cannot be cancelled."""
        with self._cond:
            self.scheduler.remove(camera_id)
            self.cameras.pop(camera_id, None)
            running = camera_id in self._running
        if running:
            # The job publishes what its frame raised before it ends, so a start found there precedes
            # the end that stop() then publishes for it.
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(camera_id, []).append(done)
            await asyncio.wait([done], timeout=timeout)

    def offer(self, sample: Sample) -> None:
        """A camera's newest sampled frame (newest wins)."""
        with self._cond:
            self.scheduler.offer(sample.camera_id, sample)
            self._cond.notify()

    # ---- the threads -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Start one analysis thread per slot and watch them: a thread that dies ends this task (and /healthz says so)."""
        self._loop = asyncio.get_running_loop()
        for i in range(self.scheduler.slots):
            t = threading.Thread(target=self._work, name=f"analysis-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        while not self._stopping:
            await asyncio.sleep(WATCH_S)
            dead = [t.name for t in self._threads if not t.is_alive()]
            if dead and not self._stopping:
                raise RuntimeError(f"analysis thread {dead[0]} ended")

    def _work(self) -> None:
        # Inference takes what decoding leaves (gateway/ingest.py); as nice as detector.nice says.
        lower_thread_priority(self.pool.nice if self.pool is not None else DEFAULT_NICE)
        while True:
            with self._cond:
                while (job := None if self._stopping else self.scheduler.take()) is None:
                    if self._stopping:
                        return
                    self._cond.wait()
                key, sample = job
                analysis = self.cameras.get(key)
                if analysis is None:  # removed between offer and take
                    self.scheduler.slot_done(0.0)
                    self.scheduler.finish(key)
                    continue
                self._running.add(key)
                analysis.busy = True
            t0 = time.perf_counter()
            result: FrameResult | None = None
            try:
                result = self._heavy(analysis, sample)
            except Exception:
                # One bad frame or a detector hiccup must not end this camera's analysis.
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    log.exception("camera %s: analysis failed (%d failures so far)", key, self.failures)
            finally:
                analysis.busy = False
                with self._cond:
                    self.scheduler.slot_done(time.perf_counter() - t0)
            try:
                self._loop.call_soon_threadsafe(self._complete, key, analysis, result)  # type: ignore[union-attr]
            except RuntimeError:  # the loop closed: the gateway is gone
                return

    def _heavy(self, analysis: CameraAnalysis, sample: Sample) -> FrameResult:
        plan = analysis.plan(sample, self.scheduler.share(analysis.camera.id))
        if self.pool is None:
            return analysis.work(sample, plan, None)
        with self.pool.session() as det:
            return analysis.work(sample, plan, det, self.pool.timed_detect)

    def _complete(self, key: str, analysis: CameraAnalysis, result: FrameResult | None) -> None:
        """On the loop: publish a job's events; then the camera's next frame may go."""
        try:
            if result is not None:
                analysis.apply(result)
        except Exception:
            log.exception("camera %s: publishing an analysed frame failed", key)
        finally:
            with self._cond:
                self.scheduler.finish(key)
                self._running.discard(key)
                self._cond.notify()
            for done in self._waiters.pop(key, ()):
                if not done.done():
                    done.set_result(None)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking jobs; jobs in flight finish (bounded) and are published."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            await asyncio.to_thread(t.join, max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(0)  # let completions the threads handed over run
