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

Thread use: `stream_opened`, `packet`, `stream_ended` from the demuxer thread; `subscribe`, iteration
and `close` of a viewer on the event loop (they take a lock for microseconds, never block).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import av

from gateway.recording.codecs import codec_string
from gateway.recording.mp4 import (
    LIVE_OPTIONS, StreamTemplate, copy_packet, fragment_starts_with_key, trex_default_flags,
)

log = logging.getLogger(__name__)

VIEWER_QUEUE_BYTES = 4 << 20  # per viewer: 8 s of a 4 Mbit/s camera waiting to be sent; beyond it, skip
VIEWER_QUEUE_FRAGMENTS = 300  # ...or 12 s of 25 fps fragments
GOP_CACHE_BYTES = 16 << 20  # fragments since the last key frame kept for new viewers (a 10 s GOP at 12 Mbit/s)
LINGER_S = 10.0  # the muxer keeps running this long after the last viewer left: a reload starts at once
MAX_TS_JUMP_S = 10.0  # a forward jump beyond this (or any backward one) is a restart: time continues one frame on
MAX_BOX_BYTES = 64 << 20  # a box larger than this from our own muxer means a bug: the stream is reset
DEFAULT_FRAME_S = 0.04


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

    def __init__(self, muxer: "LiveMuxer", loop: asyncio.AbstractEventLoop, max_bytes: int,
                 max_fragments: int) -> None:
        self._muxer = muxer
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

    # ---- muxer side (demuxer thread; also the loop, under the muxer's lock, at subscribe) ------------
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
        """Stop watching (the muxer forgets this viewer; iteration ends)."""
        self._muxer._unsubscribe(self)
        self._end("closed")


class _BoxSplitter:
    """The muxer's output, cut into top-level boxes; calls back with the init segment and each fragment."""

    def __init__(self, on_init: Callable[[bytes], None], on_fragment: Callable[[bytes], None]) -> None:
        self._buf = bytearray()
        self._on_init = on_init
        self._on_fragment = on_fragment
        self._init = bytearray()
        self._moof: bytes | None = None
        self.broken = False

    def write(self, data: bytes) -> int:
        """File-like write for PyAV."""
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 8:
            size = int.from_bytes(buf[pos:pos + 4], "big")
            kind = bytes(buf[pos + 4:pos + 8])
            if size == 1:
                if n - pos < 16:
                    break
                size = int.from_bytes(buf[pos + 8:pos + 16], "big")
            if size < 8 or size > MAX_BOX_BYTES:
                self.broken = True
                break
            if n - pos < size:
                break
            box = bytes(buf[pos:pos + size])
            pos += size
            if kind == b"moof":
                self._moof = box
            elif kind == b"mdat":
                if self._moof is not None:
                    self._on_fragment(self._moof + box)
                    self._moof = None
            elif kind in (b"ftyp", b"moov"):
                self._init += box
                if kind == b"moov":
                    self._on_init(bytes(self._init))
            # mfra (at the trailer) and free boxes are not for viewers.
        del buf[:pos]
        return len(data)


class LiveMuxer:
    """One camera's live fMP4 (see the module docstring)."""

    def __init__(self, camera_id: str, loop: asyncio.AbstractEventLoop, *, viewer_bytes: int = VIEWER_QUEUE_BYTES,
                 viewer_fragments: int = VIEWER_QUEUE_FRAGMENTS, clock: Callable[[], float] = time.monotonic) -> None:
        self.camera_id = camera_id
        self._loop = loop
        self._viewer_bytes = viewer_bytes
        self._viewer_fragments = viewer_fragments
        self._clock = clock
        self._lock = threading.Lock()
        self._viewers: list[LiveViewer] = []  # replaced, never mutated: the demuxer reads it without the lock
        self._last_viewer_at = -1e18
        # Demuxer-thread state.
        self._tpl: StreamTemplate | None = None
        self._out: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._splitter: _BoxSplitter | None = None
        self._init: bytes | None = None
        self._trex = 0
        self._gop: list[bytes] | None = None  # fragments since the last key frame (None: wait for one)
        self._gop_bytes = 0
        self._base = 0
        self._shift = 0
        self._last_dts: int | None = None
        self._tbf = 0.0
        self._frame = 1
        # Wall time (time.time()) minus media time of the stream now muxed, the smallest seen: a frame shown at
        # media time t reached the gateway at about t + wall_offset (the page's latency figure). None: not muxing.
        self.wall_offset: float | None = None
        self.codecs: str | None = None  # RFC 6381 string of the stream (codecs.py), once it opened
        self.fragments = 0
        self.bytes = 0
        self.errors = 0

    # ---- loop side ----------------------------------------------------------------------------------
    def subscribe(self, *, max_bytes: int | None = None, max_fragments: int | None = None) -> LiveViewer:
        """A new viewer; it starts with the init segment and the fragments since the last key frame."""
        v = LiveViewer(self, self._loop, max_bytes or self._viewer_bytes, max_fragments or self._viewer_fragments)
        with self._lock:
            self._viewers = self._viewers + [v]
            if self._init is not None and self._gop is not None:
                v._start(self._init, list(self._gop))
        return v

    def _unsubscribe(self, v: LiveViewer) -> None:
        with self._lock:
            if v in self._viewers:
                self._viewers = [x for x in self._viewers if x is not v]
                if not self._viewers:
                    self._last_viewer_at = self._clock()

    @property
    def viewers(self) -> int:
        """Viewers now."""
        return len(self._viewers)

    def stats(self) -> LiveStats:
        """Viewers, whether muxing, fragments and bytes made, errors."""
        return LiveStats(len(self._viewers), self._out is not None, self.fragments, self.bytes, self.errors)

    def close(self) -> None:
        """End every viewer (the camera is going away); call from the loop or the demuxer thread."""
        with self._lock:
            viewers, self._viewers = self._viewers, []
        for v in viewers:
            v._end("camera closed")

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
        if not self._viewers:
            if self._out is not None and self._clock() - self._last_viewer_at > LINGER_S:
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
        self._note_arrival(pts + self._shift - self._base)
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

    def _note_arrival(self, media_pts: int) -> None:
        # The smallest offset is the packet that waited least: later ones came late by network or pacing jitter.
        offset = time.time() - media_pts * self._tbf
        if self.wall_offset is None or offset < self.wall_offset:
            self.wall_offset = offset

    def _start(self, first_dts: int) -> None:
        splitter = _BoxSplitter(self._got_init, self._got_fragment)
        out = av.open(splitter, "w", format="mp4", options=dict(LIVE_OPTIONS))
        self._stream = self._tpl.add_to(out)
        self._out, self._splitter = out, splitter
        self._base = first_dts
        self._gop, self._gop_bytes = None, 0
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
        with self._lock:
            self._init = None
            self._gop, self._gop_bytes = None, 0
            if reason is None:
                return
            # Viewers that have a stream end; those still waiting for one wait for the next.
            ending = [v for v in self._viewers if v.started]
            self._viewers = [v for v in self._viewers if not v.started]
        for v in ending:
            v._end(reason)

    def _got_init(self, init: bytes) -> None:
        self._trex = trex_default_flags(init[init.find(b"moov") - 4:])
        with self._lock:
            self._init = init

    def _got_fragment(self, data: bytes) -> None:
        moof_size = int.from_bytes(data[:4], "big")
        key = fragment_starts_with_key(data[:moof_size], self._trex)
        self.fragments += 1
        self.bytes += len(data)
        with self._lock:
            if key:
                self._gop, self._gop_bytes = [data], len(data)
            else:
                if self._gop is not None:
                    self._gop.append(data)
                    self._gop_bytes += len(data)
                    if self._gop_bytes > GOP_CACHE_BYTES:
                        self._gop = None  # too long a GOP to keep: new viewers wait for the next key frame
            viewers = self._viewers
            init = self._init
        for v in viewers:
            if not v.started:
                if key and init is not None:
                    v._start(init, [data])  # a viewer that came before the stream starts at its first key frame
            else:
                v._offer(data, key)


__all__ = ["LiveMuxer", "LiveViewer", "LiveStats", "VIEWER_QUEUE_BYTES", "VIEWER_QUEUE_FRAGMENTS"]
