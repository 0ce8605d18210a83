"""Helpers for the recording tests: a driven clock, a paced feed of a file's packets, MP4 inspection, clips."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

CAMERA = "11010000001320000001"  # a valid GB/T 28181 network-camera code (type 132)
CAMERA_B = "11010000001310000002"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: wall time the recordings start at


class FakeClock:
    """A clock the test drives: the recorder's arrival times come from it, never from real time."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def set(self, t: float) -> None:
        """Move to t (never backwards)."""
        self.t = max(self.t, t)

    def advance(self, dt: float) -> None:
        """Move on dt seconds."""
        self.t += dt


def feed(sinks: Sequence[Any], path: str | Path, clock: FakeClock, *, start: float | None = None,
         seconds: float | None = None, passes: int = 1, skip: int = 0, open_stream: bool = True,
         each: Callable[[av.Packet, float], None] | None = None, end_stream: str | None = None) -> float:
    """Feed a file's video packets to sinks (recorder / live muxer) paced by the driven clock, as the demuxer does.

    Each packet arrives at start + (pass offset) + its dts; a file looped `passes` times restarts its timestamps
    (seek to 0) with wall time running on, like gateway/ingest.py. Stops after `seconds` of media when given.
    `skip` packets of the first pass are not fed (a stream joined mid-GOP). Returns the clock at the end.
    """
    start = clock() if start is None else start
    container = av.open(str(path))
    try:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        fps = float(stream.average_rate or 25)
        if open_stream:
            for s in sinks:
                s.stream_opened(stream)
        pass_start = 0.0
        n = 0
        done = False
        for p in range(passes):
            last = 0.0
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                n += 1
                t = packet.dts * tb if packet.dts is not None else last + 1 / fps
                last = t
                if seconds is not None and pass_start + t >= seconds:
                    done = True
                    break
                if n <= skip:
                    continue
                clock.set(start + pass_start + t)
                for s in sinks:
                    s.packet(packet)
                if each is not None:
                    each(packet, clock())
            if done:
                break
            pass_start += last + 1 / fps
            if p + 1 < passes:
                container.seek(0)
        if end_stream is not None:
            for s in sinks:
                s.stream_ended(end_stream)
        return clock()
    finally:
        container.close()


def boxes(data: bytes) -> list[str]:
    """Top-level box types of MP4 bytes (asserts the sizes add up)."""
    out = []
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        assert size >= 8 and pos + size <= len(data), f"torn box {kind!r} at {pos}"
        out.append(kind.decode("latin-1"))
        pos += size
    return out


@dataclass(frozen=True)
class Decoded:
    """What decoding a whole MP4 gave."""

    codec: str
    width: int
    height: int
    frames: int
    first: float  # presentation time of the first frame shown, s
    duration: float  # last frame's time - first frame's time + one frame, s
    bytes: int  # payload bytes of its packets
    errors: int  # packets the decoder refused
    packet_hashes: frozenset  # hash of every packet's payload (remux keeps them byte for byte)


def decode(path_or_bytes: str | Path | bytes, *, packets_only: bool = False) -> Decoded:
    """Decode every frame of an MP4 (file or bytes) with PyAV; count errors instead of raising."""
    import io

    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    container = av.open(src)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = float(stream.average_rate or 25)
        times: list[float] = []
        nbytes = errors = 0
        hashes = set()
        for packet in container.demux(stream):
            if packet.size:
                nbytes += packet.size
                hashes.add(hash(bytes(packet)))
            if packets_only:
                continue
            try:
                for frame in packet.decode():  # a raw stream's frames have no time: count them at the rate
                    times.append(float(frame.time) if frame.time is not None else len(times) / fps)
            except av.InvalidDataError:
                errors += 1
        width, height = ctx.width, ctx.height
        frames = len(times)
        first = min(times) if times else 0.0
        duration = (max(times) - first + 1 / fps) if times else 0.0
        return Decoded(ctx.name, width, height, frames, first, duration, nbytes, errors, frozenset(hashes))
    finally:
        container.close()


def source_packets(path: str | Path) -> tuple[frozenset, int, float]:
    """(hashes of every packet payload, total payload bytes, duration s) of a source file."""
    container = av.open(str(path))
    try:
        stream = container.streams.video[0]
        hashes, nbytes, end = set(), 0, 0.0
        tb = stream.time_base or Fraction(1, 90000)
        for packet in container.demux(stream):
            if packet.size:
                hashes.add(hash(bytes(packet)))
                nbytes += packet.size
                if packet.pts is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * tb))
        return frozenset(hashes), nbytes, end
    finally:
        container.close()


def _frames(seconds: float, fps: int, size: tuple[int, int]):
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 96)], axis=-1).astype(np.uint8)
    for i in range(round(seconds * fps)):
        image = background.copy()
        x = (i * 4) % (width - 32)
        image[height // 2 - 16:height // 2 + 16, x:x + 32] = 255
        yield i, av.VideoFrame.from_ndarray(image, format="bgr24")


def write_clip(path: str | Path, codec: str = "libx265", *, seconds: float = 6.0, fps: int = 25, gop: int = 25,
               size: tuple[int, int] = (320, 240), bframes: int = 0, fmt: str | None = None) -> Path:
    """Write a small synthetic clip (a square moving over a gradient) with a fixed GOP; return its path."""
    path = Path(path)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if codec == "libx265":
            stream.options = {"preset": "ultrafast",
                              "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:"
                                             "log-level=error:pools=1:frame-threads=1"}
        else:
            stream.options = {"preset": "veryfast", "threads": "1",
                              "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:b-adapt=0"}
        for i, frame in _frames(seconds, fps, size):
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
