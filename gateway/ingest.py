"""Blocking decode of one camera in its own thread; frames handed to the loop, newest wins."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

from analytics.types import Frame
from registry.urls import Source, scrub

log = logging.getLogger(__name__)


MAX_BAD_PACKETS = 50  # this many undecodable packets in a row: the source is broken, not glitching


class StreamError(Exception):
    """A stream failed; the message is safe to show (credentials stripped)."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the decoder learned when the stream opened."""

    width: int
    height: int
    codec: str
    fps: float | None


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """Per-session decode settings."""

    analysis_fps: float
    max_width: int
    open_timeout_s: float


class FrameSlot:
    """One-frame mailbox on the loop: a new frame replaces an unread one, and the drop is counted."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        if self._frame is not None:
            self.dropped += 1
        self._frame = frame
        self._ready.set()

    async def get(self) -> Frame:
        while self._frame is None:
            self._ready.clear()
            await self._ready.wait()
        frame, self._frame = self._frame, None
        return frame


def _av_options(source: Source, opts: DecodeOptions) -> dict[str, str]:
    if source.kind == "rtsp":
        # FFmpeg's own socket timeout (µs) instead of PyAV's timeout=, whose interrupt callback
        # takes the GIL on every call (PyAV #1112, #1243).
        return {"rtsp_transport": "tcp", "timeout": str(int(opts.open_timeout_s * 1_000_000)),
                "rtsp_flags": "prefer_tcp"}
    return {}


class DecodeThread(threading.Thread):
    """Opens the source, decodes, samples at the analysis rate, converts only sampled frames."""

    def __init__(self, camera_id: str, source: Source, opts: DecodeOptions, loop: asyncio.AbstractEventLoop,
                 on_open: Callable[[StreamInfo], None], on_frame: Callable[[Frame], None],
                 on_tick: Callable[[int], None], on_end: Callable[[BaseException | None], None]) -> None:
        super().__init__(name=f"decode-{camera_id}", daemon=True)
        self.camera_id = camera_id
        self.source = source
        self.opts = opts
        self.loop = loop
        self.quit = threading.Event()
        self._on_open, self._on_frame, self._on_tick, self._on_end = on_open, on_frame, on_tick, on_end
        self.analysis_fps = opts.analysis_fps  # may be changed live from the loop
        self.decode_errors = 0  # damaged packets skipped (read from the loop for status)
        self.key_frames_only = False  # decoding only key frames: the analysis rate is at or below the GOP rate

    def _call(self, fn: Callable, *args) -> bool:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
            return True
        except RuntimeError:  # loop closed: the gateway is shutting down
            self.quit.set()
            return False

    def run(self) -> None:
        error: BaseException | None = None
        try:
            self._decode()
        except StreamError as e:
            error = e
        except av.FFmpegError as e:
            error = StreamError(scrub(_describe(e)))
        except Exception as e:  # a bug must not kill the supervisor; report it as a stream error
            log.exception("decoder for %s crashed", self.camera_id)
            error = StreamError(scrub(f"decoder crashed: {type(e).__name__}: {e}"))
        self._call(self._on_end, error)

    def _decode(self) -> None:
        url = str(self.source.path) if self.source.kind == "file" else self.source.url
        opened_at = time.monotonic()
        try:
            container = av.open(url, options=_av_options(self.source, self.opts))
        except av.InvalidDataError:
            # FFmpeg reports an RTSP server that accepts the connection but never answers as
            # "invalid data" once its socket timeout passes: say what actually happened.
            waited = time.monotonic() - opened_at
            if self.source.kind == "rtsp" and waited >= 0.9 * self.opts.open_timeout_s:
                raise StreamError(f"no answer from the camera within {waited:.0f} s") from None
            raise
        with contextlib.closing(container):
            if not container.streams.video:
                raise StreamError("source has no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if ctx.width * ctx.height > 1920 * 1080:
                # One core cannot decode 4K in real time: let FFmpeg spread one stream over threads.
                stream.thread_type = "AUTO"
            else:
                # Parallelism comes from one thread per camera; frame threads per decoder only add
                # latency and contention (bench, 16 files on 2 cores: 1,094 vs 872 frames/s with AUTO).
                ctx.thread_count = 1
            fps = float(stream.average_rate) if stream.average_rate else None
            self._call(self._on_open, StreamInfo(ctx.width, ctx.height, ctx.name, fps))
            is_file = self.source.kind == "file"
            seq = 0
            next_sample = 0.0
            loop_offset = 0.0  # media time added per pass so a looped file runs on like a live camera
            wall0 = time.monotonic()
            last_t = 0.0
            t0: float | None = None

            def pace(media_t: float) -> bool:
                """File sources: hold each packet until its time, as a live camera would send it."""
                delay = wall0 + loop_offset + media_t - time.monotonic()
                return not (delay > 0 and self.quit.wait(delay))

            while not self.quit.is_set():
                got = False
                for frame in self._frames(container, stream, pace if is_file else None):
                    got = True
                    if self.quit.is_set():
                        return
                    t = frame.time if frame.time is not None else last_t + 1 / (fps or 25)
                    if t0 is None:
                        t0 = 0.0 if is_file else t  # a live stream's clock starts where we joined it
                    t -= t0
                    last_t = t
                    stream_t = t + loop_offset
                    fps_a = self.analysis_fps
                    if fps_a > 0 and next_sample > stream_t + 1 / fps_a:
                        next_sample = stream_t  # the rate was raised: start the new grid now
                    # Half a frame of tolerance, so a sample due at a frame's time is not pushed to the next.
                    if fps_a <= 0 or stream_t + 0.5 / (fps or 25) < next_sample:
                        continue
                    next_sample += 1 / fps_a
                    if next_sample <= stream_t:  # first frame, a gap, or a rate change: restart the grid
                        next_sample = stream_t + 1 / fps_a
                    image = self._convert(frame)
                    seq += 1
                    out = Frame(self.camera_id, image, time.time(), round(t, 3), seq)
                    if not self._call(self._on_frame, out):
                        return
                if self.quit.is_set():
                    return
                if not is_file:
                    raise StreamError("stream ended")
                if not got:
                    raise StreamError("file has no decodable frames")
                # Loop the file: seek to the start and keep the clock running.
                loop_offset += last_t + 1 / (fps or 25)
                container.seek(0)
                stream.codec_context.flush_buffers()

    def _frames(self, container, stream, pace: Callable[[float], bool] | None):
        """Decode packet by packet so that a damaged packet costs a frame, not the connection."""
        bad = 0
        ticks = 0
        ctx = stream.codec_context
        tb = float(stream.time_base) if stream.time_base else 0.0
        last_key: float | None = None
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream flush packet
            if pace is not None and packet.dts is not None and tb and not pace(packet.dts * tb):
                return
            # Packets, not decoded frames, are the camera's pulse: in key-frame mode most are skipped.
            ticks += 1
            if ticks >= 5:
                self._call(self._on_tick, ticks)
                ticks = 0
            if packet.is_keyframe and packet.pts is not None and tb:
                t = packet.pts * tb
                if last_key is not None and t > last_key:
                    self._choose_mode(ctx, t - last_key)
                last_key = t
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                bad += 1
                self.decode_errors += 1
                if bad >= MAX_BAD_PACKETS:
                    raise StreamError(f"corrupt video: {bad} undecodable packets in a row") from None
                continue
            bad = 0
            yield from frames

    def _choose_mode(self, ctx, gop_s: float) -> None:
        """Decode key frames only when the analysis rate needs no more (DESIGN §7: ~8x cheaper)."""
        fps_a = self.analysis_fps
        key_only = fps_a > 0 and 1.0 / fps_a >= 0.95 * gop_s
        if key_only != self.key_frames_only:
            # Takes effect from the next packet; going back to all frames resumes at a key frame.
            ctx.skip_frame = "NONKEY" if key_only else "DEFAULT"
            self.key_frames_only = key_only

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        # Scale and convert in one swscale call, only for frames we analyse.
        if frame.width > self.opts.max_width:
            h = int(round(frame.height * self.opts.max_width / frame.width / 2)) * 2
            return frame.reformat(width=self.opts.max_width, height=h, format="bgr24").to_ndarray()
        return frame.to_ndarray(format="bgr24")


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
