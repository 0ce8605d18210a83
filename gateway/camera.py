"""One camera at run time: its connection loop (connect, watch, reconnect) around a CameraAnalysis.

The connection feeds sampled frames to the gateway's analysis scheduler; decoding runs on the
gateway's decode pool and analysis on its detector threads (gateway/ingest.py, gateway/analysis.py),
so a camera costs one demuxer thread blocked on I/O, not a core's share.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analytics.events import Event, Origin, iso_ms
from analytics.scheduler import SkipReason
from analytics.snapshot import SNAPSHOT_WIDTH
from analytics.types import Detection, Frame, Sample
from gateway.analysis import AnalysisRunner, CameraAnalysis, EventSink
from gateway.backoff import Backoff
from gateway.config import IngestConfig
from gateway.events import EventLog
from gateway.ingest import (
    DecodeCounters, DecodeMode, DecodeOptions, DecodePool, Demuxer, PacketPull, PacketSink, StreamError, StreamInfo,
)
from gateway.recording import CameraRecorder, LiveMuxer, Mode, RecorderState
from gateway.quality_store import baseline_store
from registry.models import Camera
from registry.urls import Source, SourceError, parse_source, scrub

if TYPE_CHECKING:
    from gateway.recordings import Recordings

log = logging.getLogger(__name__)

WATCH_TICK_S = 1.0  # how often a connection is checked for a stall (and analysis for idleness)


class CameraState(str, Enum):
    """Run-time state of a camera's stream."""

    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every camera worker shares: settings, the event log, the decode pool and the analysis runner."""

    node: str
    gateway_id: str
    ingest: IngestConfig
    media_dirs: tuple[Path, ...]
    events: EventLog
    decoders: DecodePool
    analysis: AnalysisRunner
    snapshot_width: int = SNAPSHOT_WIDTH  # events.snapshot_width
    clock: Callable[[], float] = time.time
    recordings: "Recordings | None" = None  # recording and the live fMP4 view (None: not wired, e.g. unit tests)

    @property
    def origin(self) -> Origin:
        return Origin(self.node, self.gateway_id)

    @property
    def model(self) -> str | None:
        pool = self.analysis.pool
        return pool.name if pool is not None else None


class _Rate:
    """Events per second over a sliding few-second window, from counts added now and then."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._marks: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, n: int = 1, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._marks.append((now, n))
        cut = now - self.window
        while self._marks and self._marks[0][0] < cut:
            self._marks.popleft()

    def value(self) -> float:
        now = time.monotonic()
        marks = [(t, n) for t, n in self._marks if t >= now - self.window]
        if not marks:
            return 0.0
        if len(marks) == 1:
            return float(marks[0][1])
        # The first mark's count arrived before its time: it opens the span, the others fill it.
        return round(sum(n for _, n in marks[1:]) / max(marks[-1][0] - marks[0][0], 1e-3), 2)


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A camera's run-time status as the API shows it; the defaults describe a camera not running."""

    state: str
    source: str  # "main" | "substream": which stream analysis pulls
    fps_in: float = 0.0
    fps_asked: float = 0.0  # the analysis rate asked (0 while the camera delivers no frames)
    fps_analyzed: float = 0.0
    shed: bool = False  # the gateway is overloaded and analyses fewer of this camera's frames than asked
    skipped: dict[str, int] = field(default_factory=dict)  # sampled frames not analysed, by reason
    last_frame_at: str | None = None
    reconnects: int = 0
    last_error: str | None = None
    frames_dropped: int = 0  # sum of skipped
    frames_analyzed: int = 0
    decode_errors: int = 0
    decode_mode: str = DecodeMode.ALL.value
    decode_head_s: float | None = None  # under overload: seconds decoded from each key frame (None: all)
    decode_light: bool = False  # under overload: those heads decoded without the deblocking filter
    decode_cpu_s: float = 0.0
    inferences: int = 0
    inference_ms: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    # Active video-quality faults of the last picture seen (analytics/quality.py FAULTS); a camera
    # is intact when it is online and this is empty.
    quality: tuple[str, ...] = ()
    gateway: str | None = None  # the gateway of the tier that runs the camera (None: none does now)
    # Recording here: mode, state (off / waiting / recording / standby / paused) and why, bytes and segments
    # written, the stream recorded (main), and the recordings' disk (free, used, budget, full). None: not known.
    recording: dict[str, Any] | None = None

    @classmethod
    def idle(cls, camera: Camera) -> "CameraStatus":
        """Status of a camera with no worker: disabled, or about to start."""
        state = CameraState.CONNECTING if camera.enabled else CameraState.DISABLED
        return cls(state=state.value, source=_source_kind(camera))


def _source_kind(camera: Camera) -> str:
    return "substream" if camera.substream_url else "main"


class CameraWorker:
    """Runs one camera: a connection loop feeding the analysis scheduler; status and state events."""

    def __init__(self, camera: Camera, ctx: RunContext) -> None:
        self.camera = camera
        self.ctx = ctx
        self.state = CameraState.CONNECTING
        self.last_error: str | None = None
        self.reconnects = 0
        self.last_frame_at: float | None = None
        self.info: StreamInfo | None = None
        self.frames_in = 0
        self._rate_in = _Rate()
        self.analysis = CameraAnalysis(camera, EventSink(
            ctx.events, ctx.origin, ctx.model, snapshot_width=ctx.snapshot_width,
            baselines=functools.partial(baseline_store, events=ctx.events), tracks=self._track), ctx.ingest.max_width,
                                       clock=ctx.clock, stages=ctx.analysis.stages)
        self._demuxer: Demuxer | None = None
        # A camera is online from its first sampled frame, which may wait for analysis a moment:
        # until a frame is analysed, the first sample stands for the newest frame.
        self._first: Sample | Frame | None = None
        self._past = DecodeCounters()  # counters of earlier connections
        self._reported = DecodeCounters()  # what _report_skips already told the scheduler
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._stopping = False
        # Recording and the live fMP4 view, fed by the analysis connection; a camera with a substream feeds
        # them from a demux-only connection to its main stream instead, open only while they want packets.
        self.recorder: CameraRecorder | None = None
        self.live_mux: LiveMuxer | None = None
        self._main_pull: PacketPull | None = None
        self.main_error: str | None = None  # why the main-stream connection last ended
        self._rec_paused = False  # a status event said recording is paused (disk full)

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Join the analysis scheduler and start the connection loop."""
        self.ctx.analysis.attach(self.analysis)
        self._tasks = [asyncio.create_task(self._ingest(), name=f"camera:{self.camera.id}:ingest")]
        if self.ctx.recordings is not None:
            self.recorder, self.live_mux = self.ctx.recordings.attach(self.camera)
            if self.camera.substream_url:
                self._tasks.append(asyncio.create_task(self._main_stream(), name=f"camera:{self.camera.id}:main"))

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the connection and its analysis; end open tracks and faults."""
        self._stopping = True
        if self._demuxer is not None:
            self._demuxer.quit.set()
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        self._tasks = []
        demuxer = self._demuxer
        if demuxer is not None:
            # The thread notices quit between packets; FFmpeg's socket timeout bounds a blocked read.
            await asyncio.to_thread(demuxer.join, timeout)
        pull = self._main_pull
        if pull is not None:
            pull.quit.set()
            await asyncio.to_thread(pull.join, timeout)
        if self.ctx.recordings is not None and self.recorder is not None:
            self.ctx.recordings.detach(self.camera.id)
        await self.ctx.analysis.detach(self.camera.id, timeout)
        # Every object reported in view gets its "end", so consumers can pair starts and ends.
        await self.analysis.stop()

    def update(self, camera: Camera) -> None:
        """Apply changes that need no reconnect (name, node, analytics settings)."""
        self.camera = camera
        self.analysis.configure(camera)
        self.ctx.analysis.reconfigure(camera)
        if self._demuxer is not None:
            self._demuxer.analysis_fps = camera.analytics.fps
        if self.ctx.recordings is not None and self.recorder is not None:
            self.ctx.recordings.configure(camera)
            self.sync_sinks()

    def mark_disabled(self, camera: Camera) -> None:
        """After stop(): record that the camera was switched off, and announce it with a status event."""
        self.camera = camera
        self._set_state(CameraState.DISABLED, "disabled by an administrator")

    @property
    def analysis_source(self) -> str:
        """The URL analysis pulls: the substream when there is one."""
        return self.camera.substream_url or self.camera.url

    @property
    def latest(self) -> Frame | None:
        """The newest analysed frame (thumbnails, live view, upper tiers); before the first one is analysed,
        the first frame sampled (converted here, once)."""
        analysed = self.analysis.latest
        if analysed is not None:
            self._first = None
            return analysed
        first = self._first
        if isinstance(first, Sample):
            first = self._first = Frame(first.camera_id, first.picture.to_bgr(self.ctx.ingest.max_width),
                                        first.captured_at, first.media_ts, first.seq)
        return first

    @property
    def latest_detections(self) -> tuple[Detection, ...]:
        """What the detector found on the newest analysed frame."""
        return self.analysis.latest_detections

    def decode_counters(self) -> DecodeCounters:
        """Decode counters over every connection so far."""
        return self._past + self._demuxer.counters if self._demuxer is not None else self._past

    # ---- status --------------------------------------------------------------------------------
    def status(self) -> CameraStatus:
        """The camera's run-time status for the API."""
        online = self.state == CameraState.ONLINE
        a = self.analysis
        load = self.ctx.analysis.scheduler.camera(self.camera.id)
        dec = self.decode_counters()
        skipped = dict(load.skipped) if load else {}
        return CameraStatus(
            state=self.state.value,
            source=_source_kind(self.camera),
            fps_in=self._rate_in.value() if online else 0.0,
            fps_asked=self.camera.analytics.fps if online else 0.0,
            fps_analyzed=load.fps_analyzed if load and online else 0.0,
            shed=bool(load and load.shed and online),
            skipped=skipped,
            last_frame_at=iso_ms(self.last_frame_at) if self.last_frame_at else None,
            reconnects=self.reconnects,
            last_error=self.last_error,
            frames_dropped=sum(skipped.values()),
            frames_analyzed=a.frames_analyzed,
            decode_errors=dec.decode_errors,
            decode_mode=(self._demuxer.mode if self._demuxer is not None else DecodeMode.ALL).value,
            decode_head_s=round(self._demuxer.head_s, 2) if self._demuxer and self._demuxer.head_s else None,
            decode_light=bool(self._demuxer and self._demuxer.decoder and self._demuxer.decoder.light),
            decode_cpu_s=round(dec.cpu_s, 3),
            inferences=a.detections_run,
            inference_ms=round(1000 * a.inference_s / a.detections_run, 1) if a.detections_run else None,
            width=self.info.width if self.info else None,
            height=self.info.height if self.info else None,
            codec=self.info.codec if self.info else None,
            quality=a.faults,
            gateway=self.ctx.gateway_id,
            recording=self._recording_status(),
        )

    # ---- recording and the live fMP4 view ------------------------------------------------------------
    def _wanted_sinks(self) -> tuple[PacketSink, ...]:
        """What wants this camera's packets now: its recorder unless off, its live muxer while watched (or lingering)."""
        out: list[PacketSink] = []
        rec = self.recorder
        if rec is not None and rec.settings.mode is not Mode.OFF:
            out.append(rec)
        mux = self.live_mux
        if mux is not None and (mux.viewers or mux.stats().running):
            out.append(mux)
        return tuple(out)

    def sync_sinks(self) -> None:
        """Attach to the camera's connection what wants its packets (from the loop: a tick, a viewer, a change)."""
        wanted = self._wanted_sinks()
        target = self._main_pull if self.camera.substream_url else self._demuxer
        if target is not None and target.sinks != wanted:
            target.sinks = wanted

    def _track(self, kind: str, track_id: int, at: float) -> None:
        # From the analysis worker thread: the recorder only notes it (a lock held for microseconds).
        rec = self.recorder
        if rec is None:
            return
        if kind == "appear":
            rec.track_appeared(track_id, at)
        elif kind == "leave":
            rec.track_left(track_id, at)

    def _recording_status(self) -> dict[str, Any] | None:
        rec, recs = self.recorder, self.ctx.recordings
        if rec is None or recs is None:
            return None
        st = rec.status().to_dict()
        st.pop("camera_id", None)
        st["stream"] = "main"
        if self.camera.substream_url and self.main_error:
            st["stream_error"] = self.main_error
        st["disk"] = recs.disk().to_dict()
        return st

    def _watch_recording(self) -> None:
        """Once a tick: a pause for disk space, and the resume, are announced with a status event."""
        rec = self.recorder
        if rec is None:
            return
        st = rec.status()
        paused = st.state is RecorderState.PAUSED
        if paused == self._rec_paused:
            return
        self._rec_paused = paused
        reason = f"recording paused: {st.reason or 'disk full'}" if paused else "recording resumed"
        log.log(logging.WARNING if paused else logging.INFO, "camera %s: %s", self.camera.id, reason)
        self.ctx.events.publish(Event(
            type="status", camera_id=self.camera.id, node=self.camera.node, ts=iso_ms(self.ctx.clock()),
            origin=self.ctx.origin, state=self.state.value, reason=reason,
            extra={"recording": st.state.value, **({"recording_reason": st.reason} if paused and st.reason else {})},
        ))

    async def _main_stream(self) -> None:
        """A camera with a substream: its main stream, pulled (demux only) while recording or a live view wants it.

        Analysis keeps the substream (cheap to decode); recording and live view get the camera's own quality. The
        connection exists only while something wants its packets, so a camera with recording off and nobody
        watching is pulled once, as before."""
        ing = self.ctx.ingest
        backoff = Backoff(ing.backoff_initial_s, ing.backoff_max_s)
        while not self._stopping:
            if not self._wanted_sinks():
                self._watch_recording()
                await asyncio.sleep(WATCH_TICK_S)
                continue
            try:
                source = parse_source(self.camera.url, list(self.ctx.media_dirs))
            except SourceError as e:
                self.main_error = str(e)
                await asyncio.sleep(backoff.next())
                continue
            pull = PacketPull(self.camera.id, source, DecodeOptions(self.camera.analytics.fps, ing.open_timeout_s),
                              self._wanted_sinks())
            self._main_pull = pull
            started = time.monotonic()
            pull.start()
            try:
                while pull.is_alive() and not self._stopping:
                    await asyncio.sleep(WATCH_TICK_S)
                    self.sync_sinks()
                    self._watch_recording()
                    if not pull.sinks:
                        break  # nothing wants the main stream any more
            finally:
                pull.quit.set()
                await asyncio.to_thread(pull.join, ing.open_timeout_s + 2)
                self._main_pull = None
            if pull.error is not None and not self._stopping:
                self.main_error = str(pull.error)
                log.info("camera %s: main stream (recording, live view): %s", self.camera.id, pull.error)
                if time.monotonic() - started >= ing.healthy_after_s:
                    backoff.reset()
                await asyncio.sleep(backoff.next())

    def _set_state(self, state: CameraState, reason: str | None = None) -> None:
        if state == self.state:
            return
        self.state = state
        log.info("camera %s: %s%s", self.camera.id, state.value, f" ({reason})" if reason else "")
        extra = {}
        if state == CameraState.ONLINE and self.info:
            extra = {"width": self.info.width, "height": self.info.height, "codec": self.info.codec}
        self.ctx.events.publish(Event(
            type="status", camera_id=self.camera.id, node=self.camera.node, ts=iso_ms(self.ctx.clock()),
            origin=self.ctx.origin, state=state.value, reason=reason, extra=extra,
        ))

    # ---- the connection loop -------------------------------------------------------------------
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
            deadline = time.monotonic() + wait
            # Interruptible (a config change wakes it); objects in view end while the camera is away.
            while (left := deadline - time.monotonic()) > 0 and not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), min(left, WATCH_TICK_S))
                except asyncio.TimeoutError:
                    pass
                await self.analysis.idle()
                self._watch_recording()
            self.reconnects += 1

    async def _run_once(self, source: Source, loop: asyncio.AbstractEventLoop) -> tuple[str, float]:
        """One connection: returns (why it ended, seconds it was online)."""
        ended: asyncio.Future[BaseException | None] = loop.create_future()
        online_since: float | None = None
        opened_at = time.monotonic()
        runner = self.ctx.analysis

        def on_open(info: StreamInfo) -> None:
            self.info = info

        def on_sample(sample: Sample) -> None:
            nonlocal online_since
            self.last_frame_at = sample.captured_at
            if online_since is None:
                online_since = time.monotonic()
                self.last_error = None
                if self.analysis.latest is None:
                    self._first = sample
                self._set_state(CameraState.ONLINE)
            runner.offer(sample)

        def on_end(err: BaseException | None) -> None:
            if not ended.done():
                ended.set_result(err)

        opts = DecodeOptions(self.camera.analytics.fps, self.ctx.ingest.open_timeout_s)
        demuxer = Demuxer(self.camera.id, source, opts, self.ctx.decoders, loop, on_open, on_sample, on_end)
        packets_seen = 0

        def pulse() -> None:
            # The demuxer counts packets in its thread; the loop reads the count once a tick.
            nonlocal packets_seen
            n = demuxer.packets - packets_seen
            if n:
                packets_seen += n
                self.frames_in += n
                self._rate_in.add(n)
                self.last_frame_at = max(self.last_frame_at or 0.0, demuxer.last_packet_at or 0.0)

        self._demuxer = demuxer
        self._reported = DecodeCounters()  # what _report_skips already told the scheduler
        self.sync_sinks()  # before it opens: the sinks hear of the stream from its start
        demuxer.start()
        stall = self.ctx.ingest.stall_timeout_s
        reason = "stream ended"
        try:
            while True:
                try:
                    err = await asyncio.wait_for(asyncio.shield(ended), WATCH_TICK_S)
                    reason = str(err) if err else "stream ended"
                    break
                except asyncio.TimeoutError:
                    pass
                pulse()
                self._report_skips(demuxer)
                self.sync_sinks()
                self._watch_recording()
                demuxer.target_fps = runner.scheduler.target(self.camera.id)
                load = runner.scheduler.camera(self.camera.id)
                if load is not None:
                    demuxer.adapt_head(load.fps_analyzed, runner.scheduler.fulfilment())
                await self.analysis.idle()
                now = time.monotonic()
                last = self.last_frame_at
                if online_since is None:
                    # Still opening: FFmpeg's timeout covers the socket, this covers a server that
                    # accepts but never sends a picture.
                    if now - opened_at > self.ctx.ingest.open_timeout_s + stall:
                        reason = "no picture from the source"
                        break
                elif last is not None and self.ctx.clock() - last > stall:
                    reason = f"no frames for {stall:.0f} s"
                    break
        finally:
            demuxer.quit.set()
            if demuxer.is_alive():
                await asyncio.to_thread(demuxer.join, self.ctx.ingest.open_timeout_s + 2)
            pulse()
            self._report_skips(demuxer)
            self._past = self._past + demuxer.counters
            self._demuxer = None
        return scrub(reason), (time.monotonic() - online_since) if online_since else 0.0

    def _report_skips(self, demuxer: Demuxer) -> None:
        """Tell the scheduler about frames decoding never produced since the last look, as sampled frames lost:
        packets dropped because decoding fell behind, and packets past an overloaded camera's GOP head."""
        c = demuxer.counters
        fps = self.info.fps if self.info and self.info.fps else None
        share = min(1.0, self.camera.analytics.fps / fps) if fps else 1.0  # sampled frames per packet
        for reason, now, before in ((SkipReason.DECODE_BEHIND, c.behind_dropped, self._reported.behind_dropped),
                                    (SkipReason.OVERLOAD, c.head_skipped, self._reported.head_skipped)):
            if now > before:
                self.ctx.analysis.scheduler.skipped(self.camera.id, reason, max(1, round((now - before) * share)))
        self._reported = dataclasses.replace(c)  # a copy: the decoder goes on counting in its own


def describe_error(e: BaseException) -> str:
    """A safe one-line description of a stream error."""
    if isinstance(e, StreamError):
        return str(e)
    return scrub(f"{type(e).__name__}: {e}")
