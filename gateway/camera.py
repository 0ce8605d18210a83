"""One camera at run time: ingest with reconnects, analysis, tracking, and the events they raise."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from analytics.events import Event, Origin, iso_ms
from analytics.motion import MotionGate
from analytics.pool import DetectorPool
from analytics.quality import FAULTS, QualityChange, QualityConfig, QualityDiagnoser, Thumbs
from analytics.snapshot import render_snapshot
from analytics.tracker import IouTracker
from analytics.types import Detection, Frame, TrackUpdate
from gateway.backoff import Backoff
from gateway.config import IngestConfig
from gateway.events import EventLog
from gateway.ingest import DecodeOptions, DecodeThread, FrameSlot, StreamError, StreamInfo
from registry.models import Camera
from registry.urls import Source, SourceError, parse_source, scrub

log = logging.getLogger(__name__)

_PHASE = {"appear": "start", "update": "update", "leave": "end"}


class CameraState(str, Enum):
    """Run-time state of a camera's stream."""

    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every camera worker shares: settings, the event log and the detector pool."""

    node: str
    gateway_id: str
    ingest: IngestConfig
    media_dirs: tuple[Path, ...]
    events: EventLog
    pool: DetectorPool | None

    @property
    def origin(self) -> Origin:
        return Origin(self.node, self.gateway_id)


class _Rate:
    """Events per second over a sliding few-second window."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._marks: list[tuple[float, int]] = []

    def add(self, n: int = 1, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._marks.append((now, n))
        cut = now - self.window
        while self._marks and self._marks[0][0] < cut:
            self._marks.pop(0)

    def value(self) -> float:
        now = time.monotonic()
        marks = [(t, n) for t, n in self._marks if t >= now - self.window]
        if not marks:
            return 0.0
        span = max(now - marks[0][0], 1.0)
        return round(sum(n for _, n in marks) / span, 2)


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A camera's run-time status as the API shows it; the defaults describe a camera not running."""

    state: str
    source: str  # "main" | "substream": which stream analysis pulls
    fps_in: float = 0.0
    fps_analyzed: float = 0.0
    last_frame_at: str | None = None
    reconnects: int = 0
    last_error: str | None = None
    frames_dropped: int = 0
    frames_analyzed: int = 0
    decode_errors: int = 0
    decode_mode: str = "all frames"
    inferences: int = 0
    inference_ms: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    # Active video-quality faults of the last picture seen (analytics/quality.py FAULTS); a camera
    # is intact when it is online and this is empty.
    quality: tuple[str, ...] = ()

    @classmethod
    def idle(cls, camera: Camera) -> "CameraStatus":
        """Status of a camera with no worker: disabled, or about to start."""
        state = CameraState.CONNECTING if camera.enabled else CameraState.DISABLED
        return cls(state=state.value, source=_source_kind(camera))


def _label_set(camera: Camera) -> frozenset[str] | None:
    """The labels a camera reports, built once per settings change rather than per frame."""
    return frozenset(camera.analytics.labels) if camera.analytics.labels else None


def _quality_config(camera: Camera) -> QualityConfig:
    """The diagnoser's thresholds from the camera's settings, built once per settings change."""
    q = camera.analytics.quality
    return QualityConfig(**q.model_dump(exclude={"enabled", "disabled"}), disabled=tuple(q.disabled))


def _diagnose(diagnoser: QualityDiagnoser, frame: Frame) -> tuple[Thumbs, list[QualityChange]]:
    """Shrink a frame once and diagnose it (runs in a worker thread: OpenCV releases the GIL)."""
    thumbs = Thumbs.of(frame.image)
    return thumbs, diagnoser.update(thumbs, frame.captured_at)


def _source_kind(camera: Camera) -> str:
    return "substream" if camera.substream_url else "main"


@dataclass(slots=True)
class _AnalysisState:
    """Mutable per-camera analysis state, owned by the analysis task alone."""

    tracker: IouTracker
    gate: MotionGate
    in_motion: bool = False
    motion_frames: int = 0
    last_motion: float = 0.0
    last_detect: float = 0.0
    # Track updates not yet published. A cancel (camera removed) can land while a snapshot is
    # being rendered; what is left here is published by stop(), so no start loses its end.
    pending: collections.deque[TrackUpdate] = field(default_factory=collections.deque)
    quality: QualityDiagnoser = field(default_factory=QualityDiagnoser)
    # Faults whose start was published: only these get an end (a start lost to a cancel gets none).
    quality_open: set[str] = field(default_factory=set)


class CameraWorker:
    """Runs one camera: a decode thread per connection, an analysis task, status and events."""

    def __init__(self, camera: Camera, ctx: RunContext) -> None:
        self.camera = camera
        self.ctx = ctx
        self.state = CameraState.CONNECTING
        self.last_error: str | None = None
        self.reconnects = 0
        self.last_frame_at: float | None = None
        self.info: StreamInfo | None = None
        self.frames_in = 0
        self.frames_analyzed = 0
        self.detections_run = 0
        self.inference_s = 0.0
        self._rate_in = _Rate()
        self._rate_an = _Rate()
        self.slot = FrameSlot()
        # Newest sampled frame and the detections last drawn from it: thumbnails, live view and
        # upper tiers read these; nothing decodes a second time for them.
        self.latest: Frame | None = None
        self.latest_detections: tuple[Detection, ...] = ()
        self._thread: DecodeThread | None = None
        self._past_decode_errors = 0  # damaged packets skipped on earlier connections
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._analysis = _AnalysisState(IouTracker(), MotionGate())
        self._analysis.quality.config = _quality_config(camera)
        self._labels = _label_set(camera)

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the ingest and analysis tasks."""
        cid = self.camera.id
        self._tasks = [
            asyncio.create_task(self._ingest(), name=f"camera:{cid}:ingest"),
            asyncio.create_task(self._analyze(), name=f"camera:{cid}:analyze"),
        ]

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop tasks and the decode thread; end open tracks."""
        self._stopping = True
        if self._thread is not None:
            self._thread.quit.set()
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        self._tasks = []
        thread = self._thread
        if thread is not None:
            # The thread notices quit between packets; FFmpeg's socket timeout bounds a blocked read.
            await asyncio.to_thread(thread.join, timeout)
        # Every object reported in view gets its "end", so consumers can pair starts and ends.
        loop = asyncio.get_running_loop()
        st = self._analysis
        await self._emit_tracks(st, st.tracker.flush(time.time()), loop)
        # Likewise every quality fault reported gets its end.
        ends = {c.fault: c for c in st.quality.flush(time.time(), "camera stopped")}
        self._publish_quality(st, [ends.get(f) or QualityChange(f, "end", 0.0, {"cause": "camera stopped"})
                                   for f in FAULTS if f in st.quality_open], None)

    def update(self, camera: Camera) -> None:
        """Apply changes that need no reconnect (name, node, analytics settings)."""
        self.camera = camera
        self._labels = _label_set(camera)
        self._analysis.quality.config = _quality_config(camera)  # read once per frame by the diagnoser
        if self._thread is not None:
            self._thread.analysis_fps = camera.analytics.fps

    def mark_disabled(self, camera: Camera) -> None:
        """After stop(): record that the camera was switched off, and announce it with a status event."""
        self.camera = camera
        self._set_state(CameraState.DISABLED, "disabled by an administrator")

    @property
    def analysis_source(self) -> str:
        """The URL analysis pulls: the substream when there is one."""
        return self.camera.substream_url or self.camera.url

    @property
    def decode_thread_id(self) -> int | None:
        """OS thread id of the current connection's decode thread (metrics read its CPU time), or None."""
        thread = self._thread
        return thread.native_id if thread is not None else None

    # ---- status --------------------------------------------------------------------------------
    def status(self) -> CameraStatus:
        """The camera's run-time status for the API."""
        online = self.state == CameraState.ONLINE
        thread = self._thread
        return CameraStatus(
            state=self.state.value,
            source=_source_kind(self.camera),
            fps_in=self._rate_in.value() if online else 0.0,
            fps_analyzed=self._rate_an.value() if online else 0.0,
            last_frame_at=iso_ms(self.last_frame_at) if self.last_frame_at else None,
            reconnects=self.reconnects,
            last_error=self.last_error,
            frames_dropped=self.slot.dropped,
            frames_analyzed=self.frames_analyzed,
            decode_errors=self._past_decode_errors + (thread.decode_errors if thread else 0),
            decode_mode="key frames" if thread and thread.key_frames_only else "all frames",
            inferences=self.detections_run,
            inference_ms=round(1000 * self.inference_s / self.detections_run, 1) if self.detections_run else None,
            width=self.info.width if self.info else None,
            height=self.info.height if self.info else None,
            codec=self.info.codec if self.info else None,
            quality=tuple(f for f in FAULTS if f in self._analysis.quality_open),
        )

    def _set_state(self, state: CameraState, reason: str | None = None) -> None:
        if state == self.state:
            return
        self.state = state
        log.info("camera %s: %s%s", self.camera.id, state.value, f" ({reason})" if reason else "")
        extra = {}
        if state == CameraState.ONLINE and self.info:
            extra = {"width": self.info.width, "height": self.info.height, "codec": self.info.codec}
        self.ctx.events.publish(Event(
            type="status", camera_id=self.camera.id, node=self.camera.node, ts=iso_ms(time.time()),
            origin=self.ctx.origin, state=state.value, reason=reason, extra=extra,
        ))

    # ---- ingest --------------------------------------------------------------------------------
    async def _ingest(self) -> None:
        ing = self.ctx.ingest
        backoff = Backoff(ing.backoff_initial_s, ing.backoff_max_s)
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                source = parse_source(self.analysis_source, list(self.ctx.media_dirs))
            except SourceError as e:
                # Checked at registration too; a file may have vanished or a media dir changed since.
                error: str | None = str(e)
                online_for = 0.0
            else:
                try:
                    error, online_for = await self._run_once(source, loop)
                except Exception as e:  # a bug here must not leave the camera unwatched
                    log.exception("camera %s: ingest failed", self.camera.id)
                    error, online_for = describe_error(e), 0.0
            if self._stopping:
                return
            self.last_error = error
            self._set_state(CameraState.OFFLINE, error)
            if online_for >= ing.healthy_after_s:
                backoff.reset()
            wait = backoff.next()
            log.debug("camera %s: reconnect in %.1fs", self.camera.id, wait)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)  # interruptible: a config change wakes it
            except asyncio.TimeoutError:
                pass
            self.reconnects += 1

    async def _run_once(self, source: Source, loop: asyncio.AbstractEventLoop) -> tuple[str, float]:
        """One connection: returns (why it ended, seconds it was online)."""
        ended: asyncio.Future[BaseException | None] = loop.create_future()
        online_since: float | None = None
        opened_at = time.monotonic()

        def on_open(info: StreamInfo) -> None:
            self.info = info

        def on_tick(n: int) -> None:
            self.frames_in += n
            self._rate_in.add(n)
            self.last_frame_at = time.time()

        def on_frame(frame: Frame) -> None:
            nonlocal online_since
            self.last_frame_at = frame.captured_at
            if online_since is None:
                online_since = time.monotonic()
                self.last_error = None
                self._set_state(CameraState.ONLINE)
            self.latest = frame
            self.slot.put(frame)

        def on_end(err: BaseException | None) -> None:
            if not ended.done():
                ended.set_result(err)

        opts = DecodeOptions(self.camera.analytics.fps, self.ctx.ingest.max_width, self.ctx.ingest.open_timeout_s)
        thread = DecodeThread(self.camera.id, source, opts, loop, on_open, on_frame, on_tick, on_end)
        self._thread = thread
        thread.start()
        stall = self.ctx.ingest.stall_timeout_s
        reason = "stream ended"
        try:
            while True:
                try:
                    err = await asyncio.wait_for(asyncio.shield(ended), 1.0)
                    reason = str(err) if err else "stream ended"
                    break
                except asyncio.TimeoutError:
                    pass
                now = time.monotonic()
                last = self.last_frame_at
                if online_since is None:
                    # Still opening: FFmpeg's timeout covers the socket, this covers a server that
                    # accepts but never sends a picture.
                    if now - opened_at > self.ctx.ingest.open_timeout_s + stall:
                        reason = "no picture from the source"
                        break
                elif last is not None and time.time() - last > stall:
                    reason = f"no frames for {stall:.0f} s"
                    break
        finally:
            thread.quit.set()
            if thread.is_alive():
                await asyncio.to_thread(thread.join, self.ctx.ingest.open_timeout_s + 2)
            self._past_decode_errors += thread.decode_errors
            self._thread = None
        return scrub(reason), (time.monotonic() - online_since) if online_since else 0.0

    # ---- analysis ------------------------------------------------------------------------------
    async def _analyze(self) -> None:
        st = self._analysis
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            try:
                frame = await asyncio.wait_for(self.slot.get(), timeout=st.tracker.max_age_s + 0.5)
            except asyncio.TimeoutError:
                # No frames: the stream stalled or ended; objects in view are gone from our view.
                await self._emit_tracks(st, st.tracker.flush(time.time()), loop)
                if st.in_motion:
                    st.in_motion = False
                    self._emit_motion("end", None)
                continue
            try:
                await self._analyze_one(frame, st, loop)
                failures = 0
            except Exception:
                # One bad frame or a detector hiccup must not end this camera's analysis.
                failures += 1
                if failures == 1 or failures % 100 == 0:
                    log.exception("camera %s: analysis failed (%d in a row)", self.camera.id, failures)

    async def _analyze_one(self, frame: Frame, st: "_AnalysisState", loop: asyncio.AbstractEventLoop) -> None:
        pool = self.ctx.pool
        self.frames_analyzed += 1
        self._rate_an.add()
        a = self.camera.analytics
        small = frame.image
        if a.quality.enabled:
            # Thumbnails made once per frame serve the quality checks and the motion gate alike.
            thumbs, changes = await loop.run_in_executor(None, _diagnose, st.quality, frame)
            small = thumbs.small
            await self._emit_quality(st, changes, frame, loop)
        elif st.quality_open:
            self._publish_quality(st, st.quality.flush(frame.captured_at, "diagnosis switched off"), frame)
        if a.motion_threshold is not None:
            st.gate.threshold = a.motion_threshold
        moving = st.gate.update(small) >= st.gate.threshold
        now = frame.captured_at
        if moving:
            st.last_motion = now
        if pool is not None:
            # The motion gate saves inference on still scenes; tracks in view are still followed,
            # and a periodic look catches objects that arrived while the gate was shut.
            if moving or st.tracker.active or now - st.last_detect > 10.0:
                st.last_detect = now
                t0 = time.perf_counter()
                dets = await pool.detect(frame.image, a.min_score, self._labels)
                self.latest_detections = tuple(dets)
                self.inference_s += time.perf_counter() - t0
                self.detections_run += 1
                await self._emit_tracks(st, st.tracker.update(frame, dets), loop)
            else:
                # Nothing tracked and nothing moving: the live view must not keep drawing old boxes.
                self.latest_detections = ()
            return
        st.motion_frames = st.motion_frames + 1 if moving else 0
        if not st.in_motion and st.motion_frames >= 2:
            st.in_motion = True
            snap = await loop.run_in_executor(None, render_snapshot, frame.image)
            self._emit_motion("start", frame, snap)
        elif st.in_motion and now - st.last_motion > 3.0:
            st.in_motion = False
            self._emit_motion("end", frame)

    async def _emit_quality(self, st: "_AnalysisState", changes: list[QualityChange], frame: Frame,
                            loop: asyncio.AbstractEventLoop) -> None:
        # Ends first, at once: a cancel during a start's snapshot must not lose them.
        self._publish_quality(st, [c for c in changes if c.phase == "end"], frame)
        for change in changes:
            if change.phase == "start":
                # A start carries the picture that shows the fault.
                snap = await loop.run_in_executor(None, render_snapshot, frame.image)
                self._publish_quality(st, [change], frame, snap)

    def _publish_quality(self, st: "_AnalysisState", changes: list[QualityChange], frame: Frame | None,
                         snapshot: bytes | None = None) -> None:
        for change in changes:
            if change.phase == "start":
                st.quality_open.add(change.fault)
            elif change.fault in st.quality_open:
                st.quality_open.discard(change.fault)
            else:
                continue
            log.info("camera %s: quality %s %s (score %.2f)", self.camera.id, change.fault, change.phase,
                     change.score)
            self.ctx.events.publish(Event(
                type="quality", camera_id=self.camera.id, node=self.camera.node,
                ts=iso_ms(frame.captured_at if frame else time.time()), origin=self.ctx.origin, phase=change.phase,
                reason=change.fault, score=change.score, extra=change.extra, media_ts=self._media_ts(frame),
            ), snapshot)

    def _emit_motion(self, phase: str, frame: Frame | None, snapshot: bytes | None = None) -> None:
        ts = frame.captured_at if frame else time.time()
        self.ctx.events.publish(Event(
            type="motion", camera_id=self.camera.id, node=self.camera.node, ts=iso_ms(ts),
            origin=self.ctx.origin, phase=phase, media_ts=self._media_ts(frame),
        ), snapshot)

    @staticmethod
    def _media_ts(frame: Frame | None) -> float | None:
        # File sources: position in the file; live streams: seconds since this connection opened.
        return frame.media_ts if frame is not None else None

    async def _emit_tracks(self, st: "_AnalysisState", updates: list[TrackUpdate],
                           loop: asyncio.AbstractEventLoop) -> None:
        st.pending.extend(updates)
        while st.pending:
            try:
                await self._emit_track(st.pending[0], loop)
            except asyncio.CancelledError:
                raise
            except Exception:
                st.pending.popleft()  # a snapshot that cannot be rendered must not block the rest
                raise
            st.pending.popleft()

    async def _emit_track(self, u: TrackUpdate, loop: asyncio.AbstractEventLoop) -> None:
        d = u.detection
        snap = await loop.run_in_executor(None, render_snapshot, u.frame.image, d.box, d.label, d.score)
        self.ctx.events.publish(Event(
            type="detection", camera_id=self.camera.id, node=self.camera.node, ts=iso_ms(u.frame.captured_at),
            origin=self.ctx.origin, label=d.label, score=d.score, box=d.box, track_id=u.track_id,
            model=self.ctx.pool.name if self.ctx.pool else None, media_ts=self._media_ts(u.frame),
            phase=_PHASE[u.kind],
        ), snap)



def describe_error(e: BaseException) -> str:
    """A safe one-line description of a stream error."""
    if isinstance(e, StreamError):
        return str(e)
    return scrub(f"{type(e).__name__}: {e}")
