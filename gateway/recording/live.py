"""Live view at the camera's own quality: its packets remuxed into fragmented MP4, fanned out to viewers.

One `LiveMuxer` per camera, however many viewers: the demuxer thread hands it every packet; while anyone
watches (and LINGER_S after the last one left) it remuxes them (no decoding, no encoding) into a
progressive fMP4 stream, ftyp + moov first, then one moof + mdat fragment per frame (latency: one
frame). Chromium's <video> plays such a stream straight from an HTTP response (no Media Source
Extensions): serve the viewer's chunks in order as the body, Content-Type video/mp4.

Every viewer starts at a key frame: a new viewer gets the init segment and the fragments since the last
key frame (kept for this), so it starts at once. Viewers never hold the camera back: each has a bounded
queue, and a viewer too slow to drain it has its queue dropped and skips to the next key frame (counted
in `dropped` and `skips`); the demuxer thread never waits. When the stream ends or reopens, every
viewer's stream ends (a second moov cannot follow in the same body): the page reconnects.

The fan-out (init segment, key-frame cache, viewers, slow-viewer skips, counters) is `LiveFanout`, one piece
used by `LiveMuxer` (fed by its muxing) and by the relayed live share of a camera of another gateway or tier
(gateway/live_share.py, fed by cutting the relayed bytes into boxes with mp4.LiveBoxes).

Thread use: `stream_opened`, `packet`, `stream_ended` from the demuxer thread; `subscribe`, iteration
and `close` of a viewer on the event loop (they take a lock for microseconds, never block).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import av

from gateway.recording.codecs import codec_string
from gateway.recording.mp4 import (
    LIVE_OPTIONS, LiveBoxes, LiveStreamError, StreamTemplate, copy_packet, fragment_starts_with_key,
    trex_default_flags,
)

log = logging.getLogger(__name__)

VIEWER_QUEUE_BYTES = 4 << 20  # per viewer: 8 s of a 4 Mbit/s camera waiting to be sent; beyond it, skip
VIEWER_QUEUE_FRAGMENTS = 300  # ...or 12 s of 25 fps fragments
GOP_CACHE_BYTES = 16 << 20  # fragments since the last key frame kept for new viewers (a 10 s GOP at 12 Mbit/s)
LINGER_S = 10.0  # the muxer keeps running this long after the last viewer left: a reload starts at once
MAX_TS_JUMP_S = 10.0  # a forward jump beyond this (or any backward one) is a restart: time continues one frame on
MAX_BOX_BYTES = 64 << 20  # a box larger than this from our own muxer means a bug: the stream is reset
DEFAULT_FRAME_S = 0.04
# A source's capture clock is believed while it puts capture between this much after receipt (clocks of two
# machines agree only so well) and CAPTURE_MAX_AGE_S before it; otherwise the camera's clock is off (many are)
# and the figure falls back to receipt at the gateway.
CAPTURE_SKEW_S = 0.05
CAPTURE_MAX_AGE_S = 5.0


@dataclass(frozen=True, slots=True)
class LiveStats:
    """A live muxer's state (for metrics and status)."""

    viewers: int
    running: bool  # muxing now
    fragments: int  # fragments made since start
    bytes: int
    errors: int  # packets the muxer refused (it restarts at the next key frame)


class LiveViewer:
    """One viewer's stream: iterate it on the event loop for bytes (init segment, then fragments)."""

    def __init__(self, fanout: "LiveFanout", loop: asyncio.AbstractEventLoop, max_bytes: int,
                 max_fragments: int) -> None:
        self._fanout = fanout
        self._loop = loop
        self.max_bytes = max_bytes
        self.max_fragments = max_fragments
        self._lock = threading.Lock()
        self._init: bytes | None = None  # the init segment, once the muxer made it
        self._init_sent = False
        self._q: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._skipping = False
        self._ended = False
        self.end_reason: str | None = None
        self._waiter: asyncio.Future | None = None
        self._wake_pending = False
        self.sent = 0  # fragments handed to the reader
        self.dropped = 0  # fragments dropped for a slow reader
        self.skips = 0  # times the queue overflowed and the viewer skipped to the next key frame

    # ---- fan-out side (the feeding thread; also the loop, under the fan-out's lock, at subscribe) -----
    def _start(self, init: bytes, gop: list[bytes]) -> None:
        with self._lock:
            if self._ended:
                return
            self._init = init
            self._q.extend(gop)
            self._bytes += sum(map(len, gop))
        self._notify()

    def _offer(self, data: bytes, key: bool) -> None:
        with self._lock:
            if self._ended or self._init is None:
                return
            if self._skipping:
                if not key:
                    self.dropped += 1
                    return
                self._skipping = False
            if self._bytes + len(data) > self.max_bytes or len(self._q) >= self.max_fragments:
                # Too slow: drop what waits, go on from the next key frame (this one, if it is one).
                self.dropped += len(self._q)
                self.skips += 1
                self._fanout.skips += 1
                self._q.clear()
                self._bytes = 0
                if not key:
                    self._skipping = True
                    self.dropped += 1
                    return
            self._q.append(data)
            self._bytes += len(data)
        self._notify()

    def _end(self, reason: str) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self.end_reason = reason
        self._notify()

    def _notify(self) -> None:
        with self._lock:
            if self._waiter is None or self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nobody is reading
            pass

    # ---- loop side ----------------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
            fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def __aiter__(self) -> "LiveViewer":
        return self

    async def __anext__(self) -> bytes:
        """The next chunk: the init segment (ftyp + moov) first, then whole fragments (moof + mdat)."""
        while True:
            with self._lock:
                if self._init is not None and not self._init_sent:
                    self._init_sent = True
                    return self._init
                if self._q and self._init_sent:
                    data = self._q.popleft()
                    self._bytes -= len(data)
                    self.sent += 1
                    return data
                if self._ended:
                    raise StopAsyncIteration
                fut = self._waiter = self._loop.create_future()
            try:
                await fut
            finally:
                with self._lock:
                    self._waiter = None

    @property
    def started(self) -> bool:
        """Whether this viewer has its init segment (its stream began at a key frame)."""
        return self._init is not None

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for the reader."""
        return self._bytes

    def close(self) -> None:
        """Stop watching (the fan-out forgets this viewer; iteration ends)."""
        self._fanout._unsubscribe(self)
        self._end("closed")


class _BoxSplitter:
    """The muxer's output (PyAV writes it here), cut into the init segment and fragments by `LiveBoxes`."""

    def __init__(self, on_init: Callable[[bytes], None], on_fragment: Callable[[bytes], None]) -> None:
        self._boxes = LiveBoxes(MAX_BOX_BYTES)
        self._on_init = on_init
        self._on_fragment = on_fragment
        self.broken = False

    def write(self, data: bytes) -> int:
        """File-like write for PyAV."""
        if self.broken:
            return len(data)
        try:
            units = self._boxes.feed(data)
        except LiveStreamError:
            self.broken = True
            return len(data)
        for kind, unit in units:
            (self._on_init if kind == "init" else self._on_fragment)(unit)
        return len(data)


class LiveFanout:
    """One live fMP4 stream fanned out to any number of viewers: the init segment, the fragments since the last
    key frame (for new viewers), the viewers and their bounded queues. Fed by a `LiveMuxer` (from its muxing, on
    the demuxer thread) or by a relayed live stream shared by this gateway's viewers (gateway/live_share.py, on
    the loop): `set_init`, then `fragment` for each moof + mdat; `reset` between streams, `close` at the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, viewer_bytes: int = VIEWER_QUEUE_BYTES,
                 viewer_fragments: int = VIEWER_QUEUE_FRAGMENTS, gop_bytes: int = GOP_CACHE_BYTES,
                 on_idle: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._loop = loop
        self._viewer_bytes = viewer_bytes
        self._viewer_fragments = viewer_fragments
        self._gop_limit = gop_bytes
        self._on_idle = on_idle  # called (where the last viewer closed) when the last viewer leaves
        self._clock = clock
        self._lock = threading.Lock()
        self._viewers: list[LiveViewer] = []  # replaced, never mutated: the feeder reads it without the lock
        self.last_viewer_at = -1e18  # when the last viewer left (clock)
        self._init: bytes | None = None
        self._trex = 0
        self._gop: list[bytes] | None = None  # fragments since the last key frame (None: wait for one)
        self._gop_bytes = 0
        self.fragments = 0  # fragments fanned out since start
        self.bytes = 0
        self.subscribed = 0  # viewers ever subscribed
        self.skips = 0  # times a viewer overflowed its queue and skipped to the next key frame (all viewers)

    # ---- loop side ----------------------------------------------------------------------------------
    def subscribe(self, *, max_bytes: int | None = None, max_fragments: int | None = None) -> LiveViewer:
        """A new viewer; it starts with the init segment and the fragments since the last key frame."""
        v = LiveViewer(self, self._loop, max_bytes or self._viewer_bytes, max_fragments or self._viewer_fragments)
        with self._lock:
            self._viewers = self._viewers + [v]
            self.subscribed += 1
            if self._init is not None and self._gop is not None:
                v._start(self._init, list(self._gop))
        return v

    def _unsubscribe(self, v: LiveViewer) -> None:
        idle = False
        with self._lock:
            if v in self._viewers:
                self._viewers = [x for x in self._viewers if x is not v]
                if not self._viewers:
                    self.last_viewer_at = self._clock()
                    idle = True
        if idle and self._on_idle is not None:
            self._on_idle()

    @property
    def viewers(self) -> int:
        """Viewers now."""
        return len(self._viewers)

    @property
    def has_init(self) -> bool:
        """Whether a stream is under way (its init segment is known)."""
        return self._init is not None

    def close(self, reason: str) -> None:
        """End every viewer (the source is going away) and forget the stream."""
        with self._lock:
            viewers, self._viewers = self._viewers, []
            self._init, self._gop, self._gop_bytes = None, None, 0
        for v in viewers:
            v._end(reason)

    # ---- feeding side (one thread at a time) --------------------------------------------------------
    def set_init(self, init: bytes) -> None:
        """The init segment (ftyp + moov) of the stream that begins."""
        trex = trex_default_flags(init[init.find(b"moov") - 4:])
        with self._lock:
            self._init, self._trex = init, trex
            self._gop, self._gop_bytes = None, 0

    def fragment(self, data: bytes) -> bool:
        """One fragment (moof + mdat) to every viewer; returns whether it starts with a key frame."""
        moof_size = int.from_bytes(data[:4], "big")
        try:
            key = fragment_starts_with_key(data[:moof_size], self._trex)
        except (struct.error, IndexError, ValueError):  # a torn moof (a relayed stream is untrusted): not a key
            key = False
        self.fragments += 1
        self.bytes += len(data)
        with self._lock:
            if key:
                self._gop, self._gop_bytes = [data], len(data)
            elif self._gop is not None:
                self._gop.append(data)
                self._gop_bytes += len(data)
                if self._gop_bytes > self._gop_limit:
                    self._gop = None  # too long a GOP to keep: new viewers wait for the next key frame
            viewers = self._viewers
            init = self._init
        for v in viewers:
            if not v.started:
                if key and init is not None:
                    v._start(init, [data])  # a viewer that came before the stream starts at its first key frame
            else:
                v._offer(data, key)
        return key

    def reset(self, reason: str | None) -> None:
        """The stream stopped: forget it; with a reason, end the viewers that had it (those still waiting for a
        first key frame wait for the next stream)."""
        with self._lock:
            self._init = None
            self._gop, self._gop_bytes = None, 0
            if reason is None:
                return
            ending = [v for v in self._viewers if v.started]
            self._viewers = [v for v in self._viewers if not v.started]
        for v in ending:
            v._end(reason)


def _capture_offset(packet: av.Packet, media_pts: int, tbf: float) -> float | None:
    """Wall time of media time 0 by the source's own clock, or None: an RTSP source's sender reports (RTCP SR)
    map its RTP timestamps, the capture instants, to its wall clock, which FFmpeg keeps as the container's
    `start_time_realtime` (the wall time of pts 0), once the first report came."""
    if packet.pts is None:
        return None
    try:
        start = packet.stream.container.start_time_realtime
    except (AttributeError, ValueError):  # not an input container's packet (tests feed made-up ones)
        return None
    if not start:
        return None
    return start / 1e6 + (packet.pts - media_pts) * tbf


class LiveMuxer:
    """One camera's live fMP4 (see the module docstring)."""

    def __init__(self, camera_id: str, loop: asyncio.AbstractEventLoop, *, viewer_bytes: int = VIEWER_QUEUE_BYTES,
                 viewer_fragments: int = VIEWER_QUEUE_FRAGMENTS, clock: Callable[[], float] = time.monotonic) -> None:
        self.camera_id = camera_id
        self._clock = clock
        self.fanout = LiveFanout(loop, viewer_bytes=viewer_bytes, viewer_fragments=viewer_fragments, clock=clock)
        # Demuxer-thread state.
        self._tpl: StreamTemplate | None = None
        self._out: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._splitter: _BoxSplitter | None = None
        self._base = 0
        self._shift = 0
        self._last_dts: int | None = None
        self._tbf = 0.0
        self._frame = 1
        # Wall time (time.time()) minus media time of the stream now muxed: a frame of media time t was captured
        # (clock "capture": the camera's own sender reports, RTSP's RTCP) or reached the gateway (clock "receipt",
        # the smallest offset seen) at t + wall_offset: the page's latency figure. None: not muxing.
        self.wall_offset: float | None = None
        self.clock = "receipt"
        self._receipt_offset: float | None = None  # by the muxer's media time (a source without pts)
        # By the source's own pts, over every packet since the stream opened, muxed or not: converged by the time a
        # viewer comes (the first packets of a connection come in a burst, late, and would set it too high).
        self._source_receipt: float | None = None
        self.codecs: str | None = None  # RFC 6381 string of the stream (codecs.py), once it opened
        self.errors = 0

    # ---- loop side ----------------------------------------------------------------------------------
    def subscribe(self, *, max_bytes: int | None = None, max_fragments: int | None = None) -> LiveViewer:
        """A new viewer; it starts with the init segment and the fragments since the last key frame."""
        return self.fanout.subscribe(max_bytes=max_bytes, max_fragments=max_fragments)

    @property
    def viewers(self) -> int:
        """Viewers now."""
        return self.fanout.viewers

    @property
    def fragments(self) -> int:
        """Fragments made since start."""
        return self.fanout.fragments

    @property
    def bytes(self) -> int:
        """Bytes of fragments made since start."""
        return self.fanout.bytes

    def stats(self) -> LiveStats:
        """Viewers, whether muxing, fragments and bytes made, errors."""
        f = self.fanout
        return LiveStats(f.viewers, self._out is not None, f.fragments, f.bytes, self.errors)

    def close(self) -> None:
        """End every viewer (the camera is going away); call from the loop or the demuxer thread."""
        self.fanout.close("camera closed")

    # ---- demuxer thread -----------------------------------------------------------------------------
    def stream_opened(self, stream: av.VideoStream) -> None:
        """The camera's stream (re)opened: viewers of the previous one end; `stream` is the template."""
        self._stop("stream reopened")
        try:
            self._tpl = StreamTemplate(stream)
        except Exception as e:  # never let the live view break the demuxer thread
            log.warning("live view of camera %s: stream cannot be sent as MP4: %s", self.camera_id, e)
            self._tpl = None
            return
        self.codecs = codec_string(self._tpl.codec, self._tpl.extradata)
        self._tbf = float(self._tpl.time_base)
        self._source_receipt = None
        self._frame = self._tpl.frame_ticks()
        self._last_dts = None

    def stream_ended(self, reason: str | None = None) -> None:
        """The stream ended: every viewer's stream ends too."""
        self._stop("stream ended")
        self._tpl = None

    def packet(self, packet: av.Packet) -> None:
        """One packet of the camera's video stream (cheap while nobody watches); never raises."""
        try:
            self._packet(packet)
        except Exception:  # a bug here must not stop the camera: viewers reconnect to a fresh muxer
            log.exception("live view of camera %s failed", self.camera_id)
            self.errors += 1
            try:
                self._stop("muxer error")
            except Exception:
                self._out = None

    def _packet(self, packet: av.Packet) -> None:
        if packet.pts is not None and self._tbf:
            offset = time.time() - packet.pts * self._tbf
            last = self._source_receipt
            if last is None or offset < last or offset - last > MAX_TS_JUMP_S:  # (a jump up: timestamps restarted)
                self._source_receipt = offset
        if not self.fanout.viewers:
            if self._out is not None and self._clock() - self.fanout.last_viewer_at > LINGER_S:
                self._stop(None)
            if self._out is None:
                return
        if self._tpl is None or not packet.size:
            return
        pts, dts = packet.pts, packet.dts
        if dts is None:
            if pts is None:  # a raw stream: one frame after the last
                dts = 0 if self._last_dts is None else self._last_dts - self._shift + (packet.duration or self._frame)
            else:
                dts = pts
        if pts is None or pts < dts:
            pts = dts
        last = self._last_dts
        if last is not None:
            out_dts = dts + self._shift
            if out_dts <= last or (out_dts - last) * self._tbf > MAX_TS_JUMP_S:
                # Timestamps restarted (a file looped, a camera rebooted): go on one frame after the last.
                self._shift = last + self._frame - dts
        if self._out is None:
            if not packet.is_keyframe:
                return
            self._start(dts + self._shift)
        out_dts = dts + self._shift
        if self._last_dts is not None and out_dts <= self._last_dts:
            return  # still behind after the shift (a damaged dts): drop it
        self._last_dts = out_dts
        self._note_arrival(packet, pts + self._shift - self._base)
        try:
            self._out.mux(copy_packet(packet, pts + self._shift - self._base, out_dts - self._base,
                                      packet.duration or self._frame, self._stream, self._tpl.time_base))
        except (av.FFmpegError, ValueError, OSError) as e:
            self.errors += 1
            log.debug("live view of camera %s: packet refused: %s", self.camera_id, e)
            self._stop("muxer error")
            return
        if self._splitter is not None and self._splitter.broken:
            self._stop("muxer error")

    def _note_arrival(self, packet: av.Packet, media_pts: int) -> None:
        # The smallest offset is the packet that waited least: later ones came late by network or pacing jitter.
        if packet.pts is not None and self._source_receipt is not None:
            self._receipt_offset = self._source_receipt + (packet.pts - media_pts) * self._tbf
        else:
            offset = time.time() - media_pts * self._tbf
            if self._receipt_offset is None or offset < self._receipt_offset:
                self._receipt_offset = offset
        captured = _capture_offset(packet, media_pts, self._tbf)
        if captured is not None and -CAPTURE_SKEW_S <= self._receipt_offset - captured <= CAPTURE_MAX_AGE_S:
            self.wall_offset, self.clock = captured, "capture"
        else:
            self.wall_offset, self.clock = self._receipt_offset, "receipt"

    def _start(self, first_dts: int) -> None:
        self._receipt_offset = None
        self.fanout.reset(None)
        splitter = _BoxSplitter(self.fanout.set_init, self.fanout.fragment)
        out = av.open(splitter, "w", format="mp4", options=dict(LIVE_OPTIONS))
        self._stream = self._tpl.add_to(out)
        self._out, self._splitter = out, splitter
        self._base = first_dts
        self.wall_offset = None

    def _stop(self, reason: str | None) -> None:
        """Stop muxing; with a reason, end every viewer's stream (they reconnect to the next one)."""
        out, self._out = self._out, None
        if out is not None:
            if self._splitter is not None and reason is None:
                self._splitter._on_fragment = lambda data: None  # nobody watches: the last fragment goes nowhere
            try:
                out.close()
            except (av.FFmpegError, ValueError, OSError):
                pass
        self._splitter = None
        self._last_dts = None
        self._shift = 0
        self.wall_offset = None
        self.fanout.reset(reason)


__all__ = ["LiveFanout", "LiveMuxer", "LiveViewer", "LiveStats", "VIEWER_QUEUE_BYTES", "VIEWER_QUEUE_FRAGMENTS"]
