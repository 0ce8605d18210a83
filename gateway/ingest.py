"""Ingest: one demuxer thread per connection (I/O only), decoding on a pool sized to the cores.

A camera's connection reads packets in its own thread: reading a socket or a paced file costs
next to no CPU, and a thread blocked in FFmpeg's read holds no core. Decoding, the CPU-heavy part,
runs on a `DecodePool` of as many threads as there are cores, whatever the number of cameras: the
kernel shares the cores per runnable thread, so a thread per camera decoder took the cores from
inference as cameras were added (DESIGN §7: 24 decoders 1.16 cores, two detectors 0.27).

Decoding is the work that cannot be shed (H.264 needs every reference frame), so the pool's
threads run at normal priority and the detector threads below it (analytics/pool.py): inference
takes what decoding leaves. If decoding still falls behind, a camera's packets are dropped up to
its next key frame (counted as ``decode_behind``): a camera never lags its stream.

Sampled frames leave the pool unconverted (`AvPicture`): conversion to BGR happens on an analysis
worker for frames actually analysed, never for frames a newer one supersedes.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from analytics.sampler import Sampler
from analytics.types import Sample
from registry.urls import FILE_CONTAINERS, Source, scrub

log = logging.getLogger(__name__)

MAX_BAD_PACKETS = 50  # this many undecodable packets in a row: the source is broken, not glitching
QUEUE_SECONDS = 2.0  # packets waiting for a decoder beyond this much video: decoding fell behind
QUEUE_MIN_PACKETS = 25  # ...but never fewer than this (streams of unknown or very low rate)
BATCH_PACKETS = 8  # packets one pool thread decodes for a camera before it lets another camera in
# A paced file's packets may go this early. Small: packets let go in bunches reach the scheduler in
# bunches, and newest-wins then supersedes all but the last of each (at 0.1 s a 25 fps file gave at most
# ~8 frames a second, and cameras whose bunches fell apart got more than their share).
PACE_SLACK_S = 0.01
NONREF_MAX_SHARE = 0.5  # analysing at most this share of the frame rate: skip frames nothing refers to
KEY_ONLY_SHARE = 0.95  # an analysis interval at least this share of the GOP: decode key frames only
BURST_SHARE = 0.9  # a fair share under this share of the asked rate: decode only the head of each GOP
REORDER_MARGIN_S = 0.12  # decoded past the head's last sample: a reordered frame there may refer this far on
# An overloaded camera's samples are spread over this share of its GOP, but never closer than the asked
# spacing: at the start, in effect, at the asked rate from the key frame. Narrow, because a sample costs
# the GOP decoded up to it: at N = 24 (bench.pipeline, 2-core machine) heads over half the GOP cost 20
# decode core-ms per analysed frame, at the asked spacing 16, for 23.4 -> 27.1 analysed frames/s. A
# camera whose heads collide with others' (it gets less than its share) gets a wider head, up to MAX.
HEAD_SHARE = 0.1
HEAD_SHARE_MIN, HEAD_SHARE_MAX = 0.1, 0.7
# A camera's analysed / share, relative to all cameras' (AnalysisScheduler.fulfilment), below, above
# which its head widens, narrows. Relative, not absolute: when every camera is short alike (the capacity
# was overestimated), widening every head only made decoding dearer and every camera shorter still
# (heads at 0.7 for all: decode 13.5 core-ms per analysed frame; kept narrow: 9-10).
HEAD_ADAPT_LOW, HEAD_ADAPT_HIGH = 0.8, 0.95
HEAD_ADAPT_STEP = 1.15  # factor per second
LIGHT_HEADS = True  # overloaded cameras' GOP heads are decoded without the deblocking filter (StreamDecoder._switch)


class StreamError(Exception):
    """A stream failed; the message is safe to show (credentials stripped)."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the demuxer learned when the stream opened."""

    width: int
    height: int
    codec: str
    fps: float | None


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """Per-connection decode settings."""

    analysis_fps: float
    open_timeout_s: float


class DecodeMode(str, Enum):
    """Which frames the decoder decodes (status shows it)."""

    ALL = "all frames"
    REFERENCE = "reference frames"  # non-reference B-frames skipped: nothing decodes from them
    KEY = "key frames"


class AvPicture:
    """A decoded frame kept in the decoder's own format until someone needs BGR pixels.

    Converted at most once per width, under a lock: PyAV's reformat of one frame from two threads at
    once crashed (the analysis thread and the loop, for a thumbnail, can both want it).
    """

    __slots__ = ("_frame", "width", "height", "_lock", "_bgr")

    def __init__(self, frame: av.VideoFrame) -> None:
        self._frame = frame
        self.width = frame.width
        self.height = frame.height
        self._lock = threading.Lock()
        self._bgr: tuple[int, np.ndarray] | None = None

    def to_bgr(self, max_width: int) -> np.ndarray:
        """BGR pixels, scaled down to max_width in the same swscale call as the conversion."""
        with self._lock:
            if self._bgr is not None and self._bgr[0] == max_width:
                return self._bgr[1]
            f = self._frame
            w, h = f.width, f.height
            if w > max_width:
                w, h = max_width, int(round(f.height * max_width / f.width / 2)) * 2
            # One swscale context per converting thread, reused frame after frame: PyAV's default makes a
            # context per frame with a thread per core, started and stopped for every frame (282 threads
            # alive in the 200-camera patrol). SWS_THREADS, not 1: swscale's sliced path is 4-8x cheaper.
            image = _reformatter().reformat(f, width=w, height=h, format="bgr24", threads=SWS_THREADS).to_ndarray()
            self._bgr = (max_width, image)
            return image

    def thumb(self, width: int) -> np.ndarray:
        """A small BGR thumbnail (area-averaged) straight from the decoder's pixels: the motion gate's input.

        One swscale call from YUV costs 0.25 core-ms against 0.56 for shrinking the converted frame in three
        halvings (720p to 160 wide); its own context per thread, since a context reused at another size is
        rebuilt each time.
        """
        with self._lock:
            f = self._frame
            h = max(2, round(f.height * width / f.width))
            return _reformatter("thumb").reformat(f, width=width, height=h, format="bgr24", interpolation="AREA",
                                                  threads=1).to_ndarray()


_local = threading.local()
SWS_THREADS = 2  # per swscale context (bench: 0.6 core-ms per 720p frame; 1 thread: 2.4-4.9)


def _reformatter(use: str = "bgr") -> VideoReformatter:
    """This thread's swscale context holder for one use (each keeps its own size)."""
    r = getattr(_local, use, None)
    if r is None:
        r = VideoReformatter()
        setattr(_local, use, r)
    return r


_END_OF_PASS = object()  # queue marker: a file's last packet went by; drain the decoder before it loops


@dataclass(slots=True)
class DecodeCounters:
    """What one connection's decoding did (read from the loop for status and metrics)."""

    decoded: int = 0
    sampled: int = 0
    decode_errors: int = 0  # damaged packets skipped
    behind_dropped: int = 0  # packets dropped because decoding fell behind (to the next key frame)
    cpu_s: float = 0.0  # thread CPU time spent decoding this camera
    head_skipped: int = 0  # packets past a GOP's head not decoded (overload: they would only be superseded)

    def __add__(self, other: "DecodeCounters") -> "DecodeCounters":
        return DecodeCounters(self.decoded + other.decoded, self.sampled + other.sampled,
                              self.decode_errors + other.decode_errors, self.behind_dropped + other.behind_dropped,
                              self.cpu_s + other.cpu_s, self.head_skipped + other.head_skipped)


class StreamDecoder:
    """One connection's decoder: packets queued by its demuxer, decoded by whichever pool thread is free.

    At most one pool thread works on it at a time (``_scheduled``), so the codec context needs no lock;
    the queue does, because the demuxer fills it from its own thread.
    """

    def __init__(self, camera_id: str, stream: av.VideoStream, sampler: Sampler,
                 on_sample: Callable[[Sample], None], on_error: Callable[[BaseException], None],
                 max_queue: int, resubmit: Callable[["StreamDecoder"], None]) -> None:
        self.camera_id = camera_id
        self._resubmit = resubmit
        self._stream = stream
        self._main_ctx = stream.codec_context
        self._ctx = self._main_ctx  # the context decoding now: the stream's, or the light one (`_switch`)
        self._light_ctx: av.CodecContext | None = None
        self.light = False  # decoding without the deblocking filter now (under overload)
        self._light_failed = False  # this codec could not be opened light: always the full decoder
        self.sampler = sampler
        self._on_sample = on_sample
        self._on_error = on_error
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: collections.deque = collections.deque()
        self._max_queue = max_queue
        self._scheduled = False  # in the pool's ready queue or being decoded
        self._busy = False  # a pool thread is decoding right now
        self._closed = False
        self._held = False  # the demuxer is seeking: PyAV's seek flushes the codec, so nobody may decode
        self._wait_key = False  # after a drop: skip until the next key frame
        self._resync = False  # the decoder must drop its state before the next packet
        self._bad = 0
        self.key_only = False
        self.mode = DecodeMode.ALL
        self.counters = DecodeCounters()
        self._seq = 0

    # ---- demuxer side ----------------------------------------------------------------------------
    def push(self, packet: av.Packet | object, media_t: float | None = None, light: bool = False) -> bool:
        """Queue a packet (or _END_OF_PASS); True when the decoder must be handed to the pool.

        A media time given with a packet means the demuxer already chose it for analysis (key-frame mode).
        `light` (read at key frames): decode this GOP without the deblocking filter.
        """
        with self._lock:
            if self._closed:
                return False
            if packet is not _END_OF_PASS:
                if self._wait_key:
                    if not packet.is_keyframe:
                        self.counters.behind_dropped += 1
                        return False
                    self._wait_key = False
                if len(self._queue) >= self._max_queue:
                    # Decoding fell behind: drop what waits and resume at the next key frame, so the
                    # camera stays on its live edge instead of lagging ever further.
                    self.counters.behind_dropped += len(self._queue) + 1
                    self._queue.clear()
                    self._resync = True
                    if not packet.is_keyframe:
                        self._wait_key = True
                        return False
            self._queue.append((packet, media_t, light))
            if self._scheduled:
                return False
            self._scheduled = True
            return True

    def hold(self, timeout: float) -> None:
        """Wait (bounded) until queued packets are decoded, then keep pool threads off the codec until release()."""
        with self._lock:
            self._idle.wait_for(lambda: self._closed or (not self._queue and not self._busy), timeout)
            self._held = True
            self._idle.wait_for(lambda: not self._busy, timeout)

    def release(self) -> None:
        """Let pool threads decode again (after hold())."""
        with self._lock:
            self._held = False
            if not self._queue or self._scheduled:
                return
            self._scheduled = True
        self._resubmit(self)

    def close(self, timeout: float) -> None:
        """No more decoding; waits (bounded) for a pool thread that is mid-batch, so the container may close."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._idle.wait_for(lambda: not self._busy, timeout)

    # ---- pool side -------------------------------------------------------------------------------
    def decode_batch(self) -> bool:
        """Decode up to BATCH_PACKETS queued packets; True when more wait (re-queue me)."""
        with self._lock:
            if self._closed or self._held:
                self._scheduled = False  # release() hands it back if packets wait
                return False
            self._busy = True
            batch = [self._queue.popleft() for _ in range(min(BATCH_PACKETS, len(self._queue)))]
            resync, self._resync = self._resync, False
        t0 = time.thread_time()
        try:
            if resync:
                self._ctx.flush_buffers()
            for packet, media_t, light in batch:
                if packet is not _END_OF_PASS and packet.is_keyframe and light != self.light:
                    self._switch(light)
                if packet is _END_OF_PASS:
                    # The frames the decoder holds back for reordering come out only when drained.
                    self._decode(None, None)
                    self._ctx.flush_buffers()
                    self.sampler.new_pass()
                    continue
                self._decode(packet, media_t)
        except BaseException as e:  # noqa: BLE001 - reported to the connection, which ends
            with self._lock:
                self._closed = True
                self._queue.clear()
            self._on_error(e)
        finally:
            self.counters.cpu_s += time.thread_time() - t0
            with self._lock:
                self._busy = False
                self._idle.notify_all()
                more = bool(self._queue) and not self._closed
                self._scheduled = more
        return more

    def _decode(self, packet: av.Packet | None, chosen_t: float | None) -> None:
        try:
            frames = self._ctx.decode(packet)
            if chosen_t is not None:
                # A key frame alone: drain the decoder's reorder delay now, or this frame would come
                # out only with the next key frame, a GOP later.
                frames = frames + self._ctx.decode(None)
                self._ctx.flush_buffers()
        except av.InvalidDataError:
            self._bad += 1
            self.counters.decode_errors += 1
            if self._bad >= MAX_BAD_PACKETS:
                raise StreamError(f"corrupt video: {self._bad} undecodable packets in a row") from None
            return
        self._bad = 0
        for frame in frames:
            self.counters.decoded += 1
            if chosen_t is not None:
                media_t = chosen_t
            else:
                media_t = self.sampler.clock(frame.time)
                if not self.sampler.take(media_t):
                    continue
            self._seq += 1
            self.counters.sampled += 1
            self._on_sample(Sample(self.camera_id, AvPicture(frame), time.time(), round(media_t, 3), self._seq))

    def set_mode(self, mode: DecodeMode) -> None:
        """Change which frames are decoded; called by the demuxer between packets."""
        if mode == self.mode:
            return
        self.mode = mode
        self.key_only = mode == DecodeMode.KEY
        # skip_frame is read by the decoder per packet; a stale value for one batch costs nothing.
        for ctx in (self._main_ctx, self._light_ctx):
            if ctx is not None:
                ctx.skip_frame = self._skip_frame

    @property
    def _skip_frame(self) -> str:
        return "NONREF" if self.mode == DecodeMode.REFERENCE else "DEFAULT"

    def _switch(self, light: bool) -> None:
        """At a key frame (nothing after it refers to what came before): decode on the other context.

        The light one skips H.264/HEVC's deblocking filter, which FFmpeg reads only when a decoder opens:
        hence a second context. 15-20 % less decoding; on the street clip 97 % of the detections of the
        filtered frames are found alike (IoU >= 0.5, same label, mean score change 0.0002), the drift
        ending at each key frame. Used only for overloaded cameras' GOP heads.
        """
        if light and self._light_ctx is None:
            if self._light_failed:
                return
            try:
                ctx = av.CodecContext.create(self._main_ctx.name, "r")
                ctx.extradata = self._main_ctx.extradata
                ctx.thread_count = self._main_ctx.thread_count or 1
                ctx.options = {"skip_loop_filter": "all"}
            except (av.FFmpegError, ValueError) as e:  # a codec without it: keep the full decoder
                log.debug("camera %s: no light decoder (%s)", self.camera_id, e)
                self._light_failed = True
                return
            self._light_ctx = ctx
        self._ctx.flush_buffers()  # the rest of the last GOP is past the head: nothing waits for it
        self._ctx = self._light_ctx if light else self._main_ctx
        self._ctx.skip_frame = self._skip_frame
        self.light = light


class DecodePool:
    """Threads, one per core by default, that decode whichever camera has packets waiting."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads or os.cpu_count() or 1
        self._ready: queue.SimpleQueue[StreamDecoder | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the pool threads."""
        for i in range(self.threads):
            t = threading.Thread(target=self._work, name=f"decode-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, decoder: StreamDecoder) -> None:
        """Hand a decoder with queued packets to the pool (StreamDecoder.push said it must be)."""
        self._ready.put(decoder)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads after their current batch."""
        for _ in self._threads:
            self._ready.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def _work(self) -> None:
        while True:
            decoder = self._ready.get()
            if decoder is None:
                return
            try:
                more = decoder.decode_batch()
            except Exception:  # a bug here must not kill a pool thread: that camera's connection reports it
                log.exception("decode pool: %s failed", decoder.camera_id)
                continue
            if more:
                self._ready.put(decoder)  # to the back: other cameras' packets go first


def _av_options(source: Source, opts: DecodeOptions) -> dict[str, str]:
    if source.kind == "rtsp":
        # FFmpeg's own socket timeout (µs) instead of PyAV's timeout=, whose interrupt callback
        # takes the GIL on every call (PyAV #1112, #1243).
        return {"rtsp_transport": "tcp", "timeout": str(int(opts.open_timeout_s * 1_000_000)),
                "rtsp_flags": "prefer_tcp"}
    # A file reads only itself: no other protocol, no playlist or reference format (registry/urls.py).
    return source.file_options()


class PacketSink(Protocol):
    """Something fed every packet a connection reads (recording, the live fMP4 view): called on the demuxer thread.

    Each call must return at once (hand the packet over, never wait on a disk or a client): the thread reading
    the camera is the one calling."""

    def stream_opened(self, stream: av.VideoStream) -> None:
        """The stream opened (or the sink was attached to an open one): `stream` describes it."""

    def packet(self, packet: av.Packet) -> None:
        """One packet of the video stream, as read (every packet: before any skipping for analysis)."""

    def stream_ended(self, reason: str | None) -> None:
        """The stream ended or broke (`reason`, credentials scrubbed), or the sink was detached."""


SINK_DETACHED = "detached"  # stream_ended's reason for a sink taken off a connection still running


class SinkFanout:
    """A connection's packet sinks: `wanted` is set (a new tuple, never mutated) from the loop; the demuxer thread
    opens, feeds and ends them. A sink that raises is detached for the rest of the connection, logged once:
    recording or a viewer must never stop the camera's analysis."""

    __slots__ = ("camera_id", "wanted", "_seen", "active", "_failed", "_stream", "failures")

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.wanted: tuple[PacketSink, ...] = ()
        self._seen: tuple[PacketSink, ...] | None = None  # the `wanted` the active ones were made from
        self.active: tuple[PacketSink, ...] = ()
        self._failed: list[PacketSink] = []
        self._stream: av.VideoStream | None = None
        self.failures = 0

    def opened(self, stream: av.VideoStream) -> None:
        """The stream opened: every wanted sink hears of it."""
        self._stream = stream
        self._sync()

    def packet(self, packet: av.Packet) -> None:
        """Hand a packet to every sink (attaching and detaching first what the loop changed)."""
        if self.wanted is not self._seen:
            self._sync()
        for s in self.active:
            try:
                s.packet(packet)
            except Exception:  # noqa: BLE001 - the sink goes, the camera stays
                self._fail(s, "packet")

    def ended(self, reason: str | None) -> None:
        """The stream ended: every active sink hears why."""
        active, self.active, self._seen = self.active, (), None
        self._stream = None
        for s in active:
            self._call(s, "stream_ended", reason)

    def _sync(self) -> None:
        wanted = self.wanted
        self._seen = wanted
        if self._stream is None:
            return
        keep = tuple(s for s in wanted if s not in self._failed)
        for s in self.active:
            if s not in keep:
                self._call(s, "stream_ended", SINK_DETACHED)
        old = self.active
        self.active = keep
        for s in keep:
            if s not in old:
                self._call(s, "stream_opened", self._stream)

    def _call(self, sink: PacketSink, name: str, arg: object) -> None:
        try:
            getattr(sink, name)(arg)
        except Exception:  # noqa: BLE001
            self._fail(sink, name)

    def _fail(self, sink: PacketSink, what: str) -> None:
        self.failures += 1
        if sink not in self._failed:
            self._failed.append(sink)
            log.exception("camera %s: packet sink %s failed in %s; detached from this connection",
                          self.camera_id, type(sink).__name__, what)
        self.active = tuple(s for s in self.active if s is not sink)


class Demuxer(threading.Thread):
    """One connection: opens the source, reads packets (files paced as a live camera sends them), feeds its decoder."""

    def __init__(self, camera_id: str, source: Source, opts: DecodeOptions, pool: DecodePool,
                 loop: asyncio.AbstractEventLoop, on_open: Callable[[StreamInfo], None],
                 on_sample: Callable[[Sample], None], on_end: Callable[[BaseException | None], None]) -> None:
        super().__init__(name=f"demux-{camera_id}", daemon=True)
        self.camera_id = camera_id
        self.source = source
        self.opts = opts
        self.pool = pool
        self.loop = loop
        self.quit = threading.Event()
        self._on_open, self._on_sample, self._on_end = on_open, on_sample, on_end
        # The camera's pulse, read by the loop when it looks (no call per packet): packets read, and
        # when the last one came (wall clock).
        self.packets = 0
        self.last_packet_at: float | None = None
        self.analysis_fps = opts.analysis_fps  # may be changed live from the loop
        # The rate the scheduler will analyse this camera at (its fair share under overload), set from
        # the loop: below the asked rate only the head of each GOP is decoded, at the asked spacing.
        self.target_fps = opts.analysis_fps
        self.head_s: float | None = None  # seconds decoded from each key frame; None: the whole GOP
        self.head_fps: float | None = None  # under overload: the sampling rate (the share's spacing)
        # Share of the GOP the head's samples are spread over; the loop widens it for a camera whose
        # heads collide with others' (it gets less than its share) and narrows it back.
        self.head_share = HEAD_SHARE
        self.gop_s: float | None = None
        self.decoder: StreamDecoder | None = None
        self._has_b_frames = False
        self._error: BaseException | None = None  # the decoder's, raised here
        # Recording and the live fMP4 view: fed every packet read, on this thread (set `sinks` from the loop).
        self.fanout = SinkFanout(camera_id)

    @property
    def sinks(self) -> tuple[PacketSink, ...]:
        """The packet sinks this connection feeds."""
        return self.fanout.wanted

    @sinks.setter
    def sinks(self, value: tuple[PacketSink, ...]) -> None:
        self.fanout.wanted = tuple(value)

    def _call(self, fn: Callable, *args) -> bool:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
            return True
        except RuntimeError:  # loop closed: the gateway is shutting down
            self.quit.set()
            return False

    @property
    def counters(self) -> DecodeCounters:
        """This connection's decode counters (zeros before the stream opened)."""
        return self.decoder.counters if self.decoder is not None else DecodeCounters()

    @property
    def mode(self) -> DecodeMode:
        """Which frames are decoded now."""
        return self.decoder.mode if self.decoder is not None else DecodeMode.ALL

    def run(self) -> None:
        error: BaseException | None = None
        try:
            self._demux()
        except StreamError as e:
            error = e
        except av.FFmpegError as e:
            error = StreamError(scrub(_describe(e)))
        except Exception as e:  # a bug must not kill the supervisor; report it as a stream error
            log.exception("demuxer for %s crashed", self.camera_id)
            error = StreamError(scrub(f"demuxer crashed: {type(e).__name__}: {e}"))
        if self._error is not None:
            error = self._error
        self.fanout.ended(str(error) if error is not None else "stopped")
        self._call(self._on_end, error)

    def _decoder_failed(self, e: BaseException) -> None:
        # Runs on a pool thread: keep the first error, stop reading.
        if self._error is None:
            if isinstance(e, StreamError):
                self._error = e
            elif isinstance(e, av.FFmpegError):
                self._error = StreamError(scrub(_describe(e)))
            else:
                log.error("decoder for %s crashed: %r", self.camera_id, e)
                self._error = StreamError(scrub(f"decoder crashed: {type(e).__name__}: {e}"))
        self.quit.set()

    def _open(self) -> av.container.InputContainer:
        url = str(self.source.path) if self.source.kind == "file" else self.source.url
        opened_at = time.monotonic()
        try:
            return open_source(self.source, url, _av_options(self.source, self.opts))
        except av.InvalidDataError:
            # FFmpeg reports an RTSP server that accepts the connection but never answers as
            # "invalid data" once its socket timeout passes: say what actually happened.
            waited = time.monotonic() - opened_at
            if self.source.kind == "rtsp" and waited >= 0.9 * self.opts.open_timeout_s:
                raise StreamError(f"no answer from the camera within {waited:.0f} s") from None
            raise

    def _demux(self) -> None:
        container = self._open()
        decoder: StreamDecoder | None = None
        try:
            if not container.streams.video:
                raise StreamError("source has no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if ctx.width * ctx.height > 1920 * 1080:
                # One core cannot decode 4K in real time: let FFmpeg spread one stream over threads.
                stream.thread_type = "AUTO"
            else:
                # Parallelism comes from the pool; frame threads per decoder only add latency and
                # contention (bench, 16 files on 2 cores: 1,094 vs 872 frames/s with AUTO).
                ctx.thread_count = 1
            fps = float(stream.average_rate) if stream.average_rate else None
            # Only B-frames are ever left unreferenced in practice; without them REFERENCE saves nothing.
            self._has_b_frames = bool(ctx.has_b_frames)
            self._call(self._on_open, StreamInfo(ctx.width, ctx.height, ctx.name, fps))
            self.fanout.opened(stream)
            max_queue = max(QUEUE_MIN_PACKETS, int(QUEUE_SECONDS * (fps or 25)))
            decoder = StreamDecoder(self.camera_id, stream, Sampler(self.analysis_fps, fps),
                                    self._sample, self._decoder_failed, max_queue, self.pool.submit)
            self.decoder = decoder
            self._read(container, stream, decoder, fps)
        finally:
            if decoder is not None:
                decoder.close(timeout=self.opts.open_timeout_s)
            container.close()

    def _sample(self, sample: Sample) -> None:
        if not self._call(self._on_sample, sample):
            self.quit.set()

    def _feed(self, decoder: StreamDecoder, item: av.Packet | object, media_t: float | None = None) -> None:
        # Overloaded (only the GOP's head is decoded): the head is decoded light, without deblocking.
        if decoder.push(item, media_t, light=self.head_fps is not None and LIGHT_HEADS):
            self.pool.submit(decoder)

    def _read(self, container, stream, decoder: StreamDecoder, fps: float | None) -> None:
        is_file = self.source.kind == "file"
        fanout = self.fanout
        tb = float(stream.time_base) if stream.time_base else 0.0
        wall0 = time.monotonic()
        pass_start = 0.0  # wall offset of the current pass of a looped file
        last_key: float | None = None
        t0: float | None = None  # a live stream's clock starts where we joined it
        while not self.quit.is_set():
            got = False
            last_dts = 0.0
            for packet in container.demux(stream):
                if self.quit.is_set():
                    return
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream flush packet
                got = True
                t = packet.dts * tb if packet.dts is not None and tb else None
                if t is not None:
                    last_dts = t
                # Packets, not decoded frames, are the camera's pulse: in key-frame mode most are skipped.
                self.packets += 1
                skip = not packet.is_keyframe and (decoder.key_only or self._past_head(packet, tb, last_key))
                fed = fanout.wanted
                # Hold each packet until its time, as a live camera would send it. A packet never decoded is
                # not paced when nothing else takes it (a file's demuxer wakes only for the packets it feeds);
                # with sinks every packet is (recording a file must not come in bursts).
                if is_file and t is not None and (fed or not skip):
                    delay = wall0 + pass_start + t - time.monotonic()
                    if delay > PACE_SLACK_S and self.quit.wait(delay):
                        return
                if fed or fanout.active:
                    fanout.packet(packet)
                if skip:
                    self.last_packet_at = time.time()
                    continue
                self.last_packet_at = time.time()
                if packet.is_keyframe and packet.pts is not None and tb:
                    kt = packet.pts * tb
                    if last_key is not None and kt > last_key:
                        self.gop_s = kt - last_key
                        decoder.set_mode(self._choose_mode(self.gop_s, fps))
                    last_key = kt
                    self.head_s, self.head_fps = self._gop_head(decoder.mode)
                decoder.sampler.fps = self.head_fps or self.analysis_fps
                if decoder.key_only:
                    # Demux only: a non-key packet, or a key frame the sampler would not take, is never
                    # decoded. Key frames come in order, so their own times make the clock here.
                    if not packet.is_keyframe or packet.pts is None or not tb:
                        continue
                    kt = packet.pts * tb
                    if t0 is None:
                        t0 = 0.0 if is_file else kt
                    media_t = pass_start + kt - t0 if is_file else kt - t0
                    if decoder.sampler.take(media_t):
                        self._feed(decoder, packet, media_t)
                    continue
                self._feed(decoder, packet)
            if self.quit.is_set():
                return
            if not is_file:
                raise StreamError("stream ended")
            if not got:
                raise StreamError("file has no decodable frames")
            # Loop the file: seek to the start and keep the clock running, like a live camera.
            pass_start += last_dts + 1 / (fps or 25)
            self._feed(decoder, _END_OF_PASS)
            self.head_s, self.head_fps = None, None
            # PyAV's seek flushes the stream's codec context: no pool thread may be decoding meanwhile.
            decoder.hold(timeout=self.opts.open_timeout_s)
            try:
                container.seek(0)
            finally:
                decoder.release()
            last_key = None

    def _gop_head(self, mode: DecodeMode) -> tuple[float | None, float | None]:
        # Returns (seconds of each GOP to decode or None for all of it, the sampling rate or None for the asked one).
        """Under overload, how much of each GOP to decode and how densely to sample it.

        The camera gets `target_fps`; its samples are bunched at the start of the GOP (over
        `head_share` of it, at no more than the asked rate), and the frames after the last one are
        not decoded at all: spread over the whole GOP, each sample would need the GOP decoded up to
        it. A camera whose heads collide with others' (cameras whose GOPs start together ask at the
        same instant) gets a longer head (`adapt_head`).
        """
        fps_a, target, gop = self.analysis_fps, self.target_fps, self.gop_s
        if mode == DecodeMode.KEY or gop is None or fps_a <= 0 or target >= BURST_SHARE * fps_a:
            return None, None
        samples = max(1, round(target * gop))
        spacing = max(1.0 / fps_a, self.head_share * gop / samples)
        head = (samples - 1) * spacing + REORDER_MARGIN_S
        # A head as long as the GOP decodes it all, yet still samples at the share's spacing: sampling at
        # the asked rate would claim more than the share from the cameras whose heads are bunched.
        return (head if head < gop else None), 1.0 / spacing

    def _past_head(self, packet: av.Packet, tb: float, last_key: float | None) -> bool:
        """Under overload: whether this packet lies past its GOP's head (the scheduler would supersede it)."""
        if self.head_s is None or last_key is None or packet.pts is None or not tb:
            return False
        if packet.pts * tb - last_key <= self.head_s:
            return False
        self.decoder.counters.head_skipped += 1
        return True

    def adapt_head(self, analysed_fps: float, fulfilment: float | None) -> None:
        """From the loop, once a second under overload: widen the head while the camera gets clearly less of
        its share than the cameras as a whole get of theirs (`fulfilment`), narrow it back when it does not."""
        if self.head_s is None or self.target_fps <= 0:
            return
        got = analysed_fps / self.target_fps / min(1.0, fulfilment or 1.0)
        if got < HEAD_ADAPT_LOW:
            self.head_share = min(HEAD_SHARE_MAX, self.head_share * HEAD_ADAPT_STEP)
        elif got > HEAD_ADAPT_HIGH:
            self.head_share = max(HEAD_SHARE_MIN, self.head_share / HEAD_ADAPT_STEP)

    def _choose_mode(self, gop_s: float, fps: float | None) -> DecodeMode:
        """Decode as little as the analysis rate needs (DESIGN §7: key frames only ~8x cheaper)."""
        fps_a = self.analysis_fps
        if fps_a > 0 and 1.0 / fps_a >= KEY_ONLY_SHARE * gop_s:
            return DecodeMode.KEY
        if fps and fps_a <= NONREF_MAX_SHARE * fps and self._has_b_frames:
            return DecodeMode.REFERENCE
        return DecodeMode.ALL


class PacketPull(threading.Thread):
    """A demux-only connection: reads a stream's packets for its sinks and decodes nothing.

    For a camera whose analysis pulls its substream: recording and the live fMP4 view want the main stream (the
    camera's own quality), so the main stream gets this connection, and only while they are on
    (gateway/camera.py). Files are paced as a live camera sends them; a file loops like the analysis one."""

    def __init__(self, camera_id: str, source: Source, opts: DecodeOptions,
                 sinks: tuple[PacketSink, ...] = ()) -> None:
        super().__init__(name=f"pull-{camera_id}", daemon=True)
        self.camera_id = camera_id
        self.source = source
        self.opts = opts
        self.quit = threading.Event()
        self.fanout = SinkFanout(camera_id)
        self.fanout.wanted = tuple(sinks)
        self.packets = 0
        self.opened = False
        self.error: StreamError | None = None  # why it ended (None: stopped)

    @property
    def sinks(self) -> tuple[PacketSink, ...]:
        """The packet sinks fed."""
        return self.fanout.wanted

    @sinks.setter
    def sinks(self, value: tuple[PacketSink, ...]) -> None:
        self.fanout.wanted = tuple(value)

    def run(self) -> None:
        try:
            self._pull()
        except StreamError as e:
            self.error = e
        except av.FFmpegError as e:
            self.error = StreamError(scrub(_describe(e)))
        except Exception as e:  # a bug must not pass silently: say it as the connection's end
            log.exception("main-stream connection of %s crashed", self.camera_id)
            self.error = StreamError(scrub(f"connection crashed: {type(e).__name__}: {e}"))
        self.fanout.ended(str(self.error) if self.error is not None else "stopped")

    def _pull(self) -> None:
        url = str(self.source.path) if self.source.kind == "file" else self.source.url
        container = open_source(self.source, url, _av_options(self.source, self.opts))
        try:
            if not container.streams.video:
                raise StreamError("source has no video stream")
            stream = container.streams.video[0]
            self.opened = True
            self.fanout.opened(stream)
            is_file = self.source.kind == "file"
            tb = float(stream.time_base) if stream.time_base else 0.0
            fps = float(stream.average_rate) if stream.average_rate else None
            wall0 = time.monotonic()
            pass_start = 0.0
            while not self.quit.is_set():
                last_dts, got = 0.0, False
                for packet in container.demux(stream):
                    if self.quit.is_set():
                        return
                    if packet.size == 0:
                        continue
                    got = True
                    self.packets += 1
                    if packet.dts is not None and tb:
                        last_dts = packet.dts * tb
                        if is_file:
                            delay = wall0 + pass_start + last_dts - time.monotonic()
                            if delay > PACE_SLACK_S and self.quit.wait(delay):
                                return
                    self.fanout.packet(packet)
                if self.quit.is_set():
                    return
                if not is_file:
                    raise StreamError("stream ended")
                if not got:
                    raise StreamError("file has no packets")
                pass_start += last_dts + 1 / (fps or 25)
                container.seek(0)
        finally:
            container.close()


# ---- opening a source ------------------------------------------------------------------------------
def open_source(source: Source, url: str, options: dict[str, str]) -> av.container.InputContainer:
    """`av.open(url, options=options)`; a file source in a format outside FILE_CONTAINERS raises StreamError
    ("container format hls is not allowed for file sources ...")."""
    if source.kind != "file":
        return av.open(url, options=options)
    try:
        container = av.open(url, options=options)
    except av.FFmpegError as e:
        if e.errno == errno.EINVAL and "format_whitelist" in options:
            # FFmpeg refused the probed format ("Format not on whitelist"); name it for the operator.
            found = _probe_format(url)
            if found is None or not _allowed_container(found):
                raise StreamError(_refusal(found)) from None
        raise
    found = container.format.name
    if not _allowed_container(found):  # in case this FFmpeg ignored the whitelist
        container.close()
        raise StreamError(_refusal(found))
    return container


def _allowed_container(name: str) -> bool:
    return any(n in FILE_CONTAINERS for n in name.split(","))


def _refusal(found: str | None) -> str:
    what = f"container format {found}" if found else "this container format"
    return (f"{what} is not allowed for file sources (playlists and references to other files are refused); "
            "allowed: MP4/MOV, Matroska/WebM, AVI, MPEG-TS, MPEG-PS, FLV, raw H.264/H.265")


def _libavformat() -> ctypes.CDLL | None:
    """The libavformat PyAV runs on (the one mapped into this process), for its probe."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").partition("/")[2]
                if "libavformat" in path.rpartition("/")[2]:
                    return ctypes.CDLL("/" + path)
    except OSError:
        pass
    name = ctypes.util.find_library("avformat")
    return ctypes.CDLL(name) if name else None


class _ProbeData(ctypes.Structure):
    # FFmpeg's AVProbeData, whose layout has not changed since FFmpeg 2.x (libavformat/avformat.h).
    _fields_ = [("filename", ctypes.c_char_p), ("buf", ctypes.c_void_p), ("buf_size", ctypes.c_int),
                ("mime_type", ctypes.c_char_p)]


def _probe_format(path: str, size: int = 1 << 16) -> str | None:
    """The demuxer FFmpeg's probe names for a file (its first `size` bytes and its name), or None.

    Only reads the file; used to say what was refused. FFmpeg's own probe is what decides."""
    try:
        lib = _libavformat()
        if lib is None:
            return None
        with open(path, "rb") as f:
            head = f.read(size)
        buf = ctypes.create_string_buffer(head, len(head) + 64)  # FFmpeg wants zeroed padding after the data
        probe = lib.av_probe_input_format
        probe.restype = ctypes.c_void_p
        probe.argtypes = [ctypes.POINTER(_ProbeData), ctypes.c_int]
        fmt = probe(ctypes.byref(_ProbeData(os.fsencode(path), ctypes.cast(buf, ctypes.c_void_p), len(head), None)), 1)
        if not fmt:
            return None
        name = ctypes.cast(fmt, ctypes.POINTER(ctypes.c_char_p))[0]  # AVInputFormat starts with its name
        return name.decode("ascii", "replace") if name else None
    except Exception:  # only for a message: never let it fail the caller
        return None


def _describe(e: av.FFmpegError) -> str:
    name = type(e).__name__
    if isinstance(e, av.InvalidDataError):
        return f"corrupt or unsupported video ({e.strerror or name})"
    if isinstance(e, av.ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, av.TimeoutError):
        return "timed out"
    if isinstance(e, (av.HTTPUnauthorizedError, av.HTTPForbiddenError)):
        return "unauthorized (check the camera's user name and password)"
    if isinstance(e, (av.HTTPNotFoundError, av.FileNotFoundError)):
        return "stream not found on the server"
    msg = e.strerror or str(e)
    return f"{msg} ({name})"


__all__ = ["open_source", "AvPicture", "PacketPull", "PacketSink", "SinkFanout", "DecodeCounters", "DecodeMode", "DecodeOptions", "DecodePool", "Demuxer", "StreamDecoder",
           "StreamError", "StreamInfo", "MAX_BAD_PACKETS"]

