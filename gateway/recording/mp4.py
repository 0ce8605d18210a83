"""MP4 plumbing shared by recording and playback: stream templates, box walking, probing and repair.

Segments on disk are fragmented MP4 (`SEGMENT_OPTIONS`): the moov is written first and empty, and each
fragment (moof + mdat) is complete on disk once written, so a crash or a kill leaves a playable file
that only lacks the fragment being built; `repair_segment` cuts a torn last fragment off and
`probe_segment` reads how much time the file covers. FFmpeg's mov demuxer reads such files as any MP4.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av

log = logging.getLogger(__name__)

# Fragment at every key frame and at least every second: a crash loses at most ~1 s (the fragment the
# muxer holds in memory), not a whole GOP of a camera that sends a key frame every 10 s. The moov goes
# first and empty; flush_packets hands each fragment to the kernel as soon as it is complete.
SEGMENT_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000",
                   "flush_packets": "1"}
# Exports are plain MP4 with the moov moved to the front (fast start), so a <video> seeks at once.
EXPORT_OPTIONS = {"movflags": "+faststart"}
# Live: one fragment per frame (latency of one frame, ~100 bytes of moof each), moov first and empty.
LIVE_OPTIONS = {"movflags": "frag_every_frame+empty_moov+default_base_moof", "flush_packets": "1"}

_SYNC_BIT = 0x00010000  # sample_is_non_sync_sample in ISO/IEC 14496-12 sample flags
_HEADER = struct.Struct(">I4s")


class StreamTemplate:
    """The codec parameters of a camera's video stream, copied when it opens.

    A segment is opened by the writer thread long after the demuxer handed the stream over, maybe after
    the input container closed (its stream's parameters freed with it), so the parameters are copied into
    a private, never-written output stream; outputs are made from that copy.
    """

    __slots__ = ("_holder", "stream", "codec", "width", "height", "time_base", "fps", "extradata")

    def __init__(self, stream: av.VideoStream) -> None:
        self._holder = av.open(io.BytesIO(), "w", format="mp4")
        # opaque=True: the decoder's codec object, so a codec without an encoder here (hevc on a build
        # without libx265) can still be remuxed.
        self.stream = self._holder.add_stream_from_template(stream, opaque=True)
        ctx = stream.codec_context
        self.codec: str = ctx.name
        self.width: int = ctx.width
        self.height: int = ctx.height
        self.time_base: Fraction = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate
        self.fps: float | None = float(rate) if rate else None
        self.extradata: bytes = bytes(ctx.extradata or b"")

    def same_as(self, other: "StreamTemplate") -> bool:
        """Whether packets of `other`'s stream can continue a file made from this one."""
        return (self.codec, self.width, self.height, self.extradata) == (
            other.codec, other.width, other.height, other.extradata)

    def add_to(self, output: av.container.OutputContainer) -> av.VideoStream:
        """A stream in `output` with these parameters, for remuxing (no encoder)."""
        out = output.add_stream_from_template(self.stream, opaque=True)
        if self.codec == "hevc" and self.extradata:
            # 'hvc1' (parameter sets in the sample description) is what browsers and QuickTime play;
            # FFmpeg's default 'hev1' is refused by some.
            out.codec_context.codec_tag = "hvc1"
        return out

    def frame_ticks(self) -> int:
        """One frame's duration in time-base ticks (the stream's rate, else 25 fps)."""
        return max(1, round(1 / ((self.fps or 25.0) * self.time_base)))


def copy_packet(packet: av.Packet, pts: int, dts: int, duration: int, stream: av.VideoStream,
                time_base: Fraction) -> av.Packet:
    """A new packet sharing `packet`'s data (no copy) with its own timestamps, for `stream`.

    The demuxer's packet is shared with the decoder, which reads its pts on another thread: muxing
    rewrites a packet's timestamps and stream index in place, so it never muxes the original.
    """
    out = av.Packet(packet)
    out.time_base = time_base
    out.pts, out.dts = pts, dts
    out.duration = duration
    out.is_keyframe = packet.is_keyframe
    out.stream = stream
    return out


# ---- boxes ------------------------------------------------------------------------------------------
def iter_boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int, int]]:
    """(type, offset, size) of each complete box in data[start:end]; stops at a torn one."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = _HEADER.unpack_from(data, pos)
        head = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            return
        yield kind.decode("latin-1"), pos, size
        pos += size


def _child(data: bytes, box_off: int, box_size: int, kind: str, header: int = 8) -> tuple[int, int] | None:
    for k, off, size in iter_boxes(data, box_off + header, box_off + box_size):
        if k == kind:
            return off, size
    return None


def trex_default_flags(moov: bytes) -> int:
    """The default sample flags from moov/mvex/trex (0 when absent)."""
    mvex = _child(moov, 0, len(moov), "mvex")
    if mvex is None:
        return 0
    trex = _child(moov, mvex[0], mvex[1], "trex")
    if trex is None or trex[1] < 32:
        return 0
    return struct.unpack_from(">I", moov, trex[0] + 28)[0]


def fragment_starts_with_key(moof: bytes, trex_flags: int = 0) -> bool:
    """Whether the first sample of a fragment (its moof box) is a sync sample (a key frame)."""
    traf = _child(moof, 0, len(moof), "traf")
    if traf is None:
        return False
    flags = trex_flags
    tfhd = _child(moof, traf[0], traf[1], "tfhd")
    if tfhd is not None:
        off = tfhd[0] + 8
        tf_flags = struct.unpack_from(">I", moof, off)[0] & 0xFFFFFF
        p = off + 8  # version/flags, track_ID
        p += 8 if tf_flags & 0x01 else 0  # base_data_offset
        p += 4 if tf_flags & 0x02 else 0  # sample_description_index
        p += 4 if tf_flags & 0x08 else 0  # default_sample_duration
        p += 4 if tf_flags & 0x10 else 0  # default_sample_size
        if tf_flags & 0x20:
            flags = struct.unpack_from(">I", moof, p)[0]
    trun = _child(moof, traf[0], traf[1], "trun")
    if trun is None:
        return False
    off = trun[0] + 8
    tr_flags = struct.unpack_from(">I", moof, off)[0] & 0xFFFFFF
    p = off + 8  # version/flags, sample_count
    p += 4 if tr_flags & 0x01 else 0  # data_offset
    if tr_flags & 0x04:
        flags = struct.unpack_from(">I", moof, p)[0]
    elif tr_flags & 0x400:
        p += 4 if tr_flags & 0x100 else 0
        p += 4 if tr_flags & 0x200 else 0
        flags = struct.unpack_from(">I", moof, p)[0]
    return not flags & _SYNC_BIT


def file_boxes(path: Path) -> tuple[list[tuple[str, int, int]], int]:
    """Top-level boxes of a file, complete ones only, and the file's size (reads headers, seeks over bodies)."""
    boxes: list[tuple[str, int, int]] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                break
            box_size, kind = _HEADER.unpack_from(head)
            if box_size == 1 and len(head) == 16:
                box_size = struct.unpack_from(">Q", head, 8)[0]
            elif box_size == 0:
                box_size = size - pos
            if box_size < 8 or pos + box_size > size:
                break
            boxes.append((kind.decode("latin-1"), pos, box_size))
            pos += box_size
    return boxes, size


def repair_segment(path: Path) -> int:
    """Cut a fragmented segment after its last complete moof+mdat pair (a crash's torn tail); its new size.

    A file without a complete moov is left as it is (probe_segment then finds no packet)."""
    boxes, size = file_boxes(path)
    keep = 0
    saw_moov = False
    pending_moof = False
    for kind, off, box_size in boxes:
        if kind in ("ftyp", "free", "skip", "uuid"):
            keep = off + box_size if not pending_moof else keep
        elif kind == "moov":
            saw_moov = True
            keep = off + box_size
        elif kind == "moof":
            pending_moof = True
        elif kind == "mdat":
            if pending_moof:
                keep = off + box_size
                pending_moof = False
        elif kind == "mfra":
            keep = off + box_size
    if saw_moov and keep < size:
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return keep
    return size


@dataclass(frozen=True, slots=True)
class SegmentProbe:
    """What a segment file holds, read by demuxing it (no decoding)."""

    packets: int
    span_s: float  # seconds from its first key frame's pts to the end of its latest frame
    codec: str
    width: int
    height: int


def probe_segment(path: Path) -> SegmentProbe | None:
    """Demux a segment to learn the time it covers; None when no packet can be read from it."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError):
        return None
    try:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        tb = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate
        frame = 1 / float(rate) if rate else 0.04
        first: int | None = None
        last_end = 0.0
        n = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                if first is None:
                    first = packet.pts
                n += 1
                dur = float(packet.duration * tb) if packet.duration else frame
                last_end = max(last_end, float((packet.pts - first) * tb) + dur)
        except (av.FFmpegError, OSError, ValueError) as e:  # a torn tail: keep what was read
            log.debug("probe of %s stopped: %s", path.name, e)
        if n == 0:
            return None
        ctx = stream.codec_context
        return SegmentProbe(n, last_end, ctx.name, ctx.width, ctx.height)
    finally:
        container.close()


# ---- a live fMP4 stream, cut into its init segment and fragments --------------------------------------------
class LiveStreamError(ValueError):
    """A live fMP4 stream that cannot be cut into boxes: a bad size, a garbage type, boxes out of order."""


class LiveBoxes:
    """Incremental parser of a progressive fMP4 stream (ftyp, moov, then moof + mdat pairs), fed in pieces of
    any size: `feed` returns the whole units it completed, ("init", ftyp + moov) first, then ("fragment",
    moof + mdat) each. Every box is bounded by `max_box` (its size is checked from its header, before its body
    is buffered), so the buffer never holds more than one box and one piece; anything malformed raises
    LiveStreamError and the parser stays broken (a stream cannot be resynchronised after a bad size)."""

    __slots__ = ("max_box", "_buf", "_init", "_has_init", "_moof", "broken")

    def __init__(self, max_box: int) -> None:
        self.max_box = max_box
        self._buf = bytearray()
        self._init = bytearray()
        self._has_init = False
        self._moof: bytes | None = None
        self.broken: str | None = None

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        """The units completed by `data` (see the class docstring); LiveStreamError when malformed."""
        if self.broken is not None:
            raise LiveStreamError(self.broken)
        buf = self._buf
        buf += data
        out: list[tuple[str, bytes]] = []
        pos = 0
        try:
            while len(buf) - pos >= 8:
                size, kind = _HEADER.unpack_from(buf, pos)
                head = 8
                if size == 1:  # 64-bit largesize follows the type
                    if len(buf) - pos < 16:
                        break
                    size = struct.unpack_from(">Q", buf, pos + 8)[0]
                    head = 16
                elif size == 0:  # "to the end of the file": a stream has no end to run to
                    raise LiveStreamError(f"box {kind!r} of size 0 (to the end) in a live stream")
                if not all(0x20 <= c <= 0x7E for c in kind):
                    raise LiveStreamError("a box type that is not four printable characters (garbage)")
                if size < head:
                    raise LiveStreamError(f"box {kind.decode('latin-1')!r} of size {size} (< its header)")
                if size > self.max_box:
                    raise LiveStreamError(f"box {kind.decode('latin-1')!r} of {size} bytes (over {self.max_box})")
                if len(buf) - pos < size:
                    break
                box = bytes(buf[pos:pos + size])
                pos += size
                unit = self._box(kind, box)
                if unit is not None:
                    out.append(unit)
        except LiveStreamError as e:
            self.broken = str(e)
            buf.clear()
            raise
        del buf[:pos]
        return out

    def _box(self, kind: bytes, box: bytes) -> tuple[str, bytes] | None:
        if kind in (b"ftyp", b"moov"):
            if self._has_init:
                raise LiveStreamError("a second init segment (the stream restarted)")
            if kind == b"ftyp" and self._init:
                raise LiveStreamError("two ftyp boxes")
            self._init += box
            if len(self._init) > self.max_box:
                raise LiveStreamError("init segment too large")
            if kind == b"moov":
                self._has_init = True
                return "init", bytes(self._init)
            return None
        if kind == b"moof":
            if not self._has_init:
                raise LiveStreamError("a fragment before the init segment")
            if self._moof is not None:
                raise LiveStreamError("a moof without its mdat")
            self._moof = box
            return None
        if kind == b"mdat":
            if self._moof is None:
                raise LiveStreamError("an mdat without its moof")
            moof, self._moof = self._moof, None
            return "fragment", moof + box
        return None  # free, skip, mfra (a muxer's trailer), sidx...: nothing a viewer of this stream needs
