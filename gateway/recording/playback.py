"""Playback of recordings: one seekable MP4 (fast start) of a window, and a clip around an event time.

Exports remux the recorded packets (no decoding, no encoding): the camera's codec, resolution and bitrate.
The MP4 starts at the key frame at or before the window's start; the frames before the start are kept
for decoding but hidden by an edit list (FFmpeg writes one for the negative timestamps they get), so a
player shows exactly the window. It ends with the last packet decoded before the window's end. A gap
inside the window is a jump in the timestamps: players hold the frame before it. If the stream's
parameters change inside the window (another resolution after a camera restart) the export stops there
and says so (`Export.truncated`): one MP4 track has one codec configuration.

These functions block for as long as the reading and writing take (an hour of a 4 Mbit/s camera is
1.8 GB): run them in a thread (`loop.run_in_executor`), never on the event loop.
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import av

from gateway.recording.mp4 import EXPORT_OPTIONS, StreamTemplate, copy_packet
from gateway.recording.records import (
    POST_S_RANGE, PRE_S_RANGE, Export, NoRecording, RecordingError, Segment, WindowError, check_camera_id,
    check_window,
)
from gateway.recording.store import RecordingStore

log = logging.getLogger(__name__)

START_SLACK_S = 0.001  # a key frame this close after the asked start counts as at it (float rounding)


class _WindowWriter:
    """Packets of consecutive segments into one MP4, timestamps relative to the window's start."""

    def __init__(self, path: Path, start: float, end: float) -> None:
        self.path = path
        self.start, self.end = start, end
        self.output: av.container.OutputContainer | None = None
        self.stream: av.VideoStream | None = None
        self.tpl: StreamTemplate | None = None
        self.zero: float | None = None  # wall time of the MP4's time 0
        self.last_dts_s: Fraction | None = None  # last muxed dts, seconds from zero
        self.max_end = start
        self.segments = 0
        self.packets = 0
        self.truncated = False
        self.done = False

    def add(self, path: Path, seg: Segment) -> None:
        """Add the part of one segment that falls in the window (reads it to its end or the window's)."""
        try:
            container = av.open(str(path))
        except (av.FFmpegError, OSError) as e:
            log.warning("export: segment of camera %s unreadable: %s", seg.camera_id, getattr(e, "strerror", e))
            return
        with container:
            if not container.streams.video:
                return
            ins = container.streams.video[0]
            tpl = StreamTemplate(ins)
            if self.tpl is None:
                self.tpl = tpl
            elif not self.tpl.same_as(tpl):
                self.truncated = self.done = True
                return
            tb = ins.time_base or Fraction(1, 90000)
            frame = tpl.frame_ticks()
            first: int | None = None
            pending: list = []  # the GOP whose key frame is the latest at or before the start
            offset: int | None = None  # ticks added to this segment's timestamps
            used = False

            def emit(packets: list) -> None:
                nonlocal offset, used
                for p in packets:
                    if seg.start + float((p.dts - first) * tb) < self.end:
                        offset = self._mux(p, tb, first, seg.start, offset, frame)
                        used = True

            try:
                for pkt in container.demux(ins):
                    if pkt.size == 0 or pkt.pts is None or pkt.dts is None:
                        continue
                    if first is None:
                        first = pkt.pts  # the segment's first key frame: seg.start
                    if self.zero is None:
                        t_pts = seg.start + float((pkt.pts - first) * tb)
                        if pkt.is_keyframe and t_pts <= self.start + START_SLACK_S:
                            pending = [pkt]  # a later key frame to start decoding the window from
                            continue
                        if not pkt.is_keyframe:
                            if pending:
                                pending.append(pkt)
                            continue
                        self.zero = self.start if pending else t_pts  # no key frame before: start at this one
                    if pending:
                        emit(pending)
                        pending = []
                    if seg.start + float((pkt.dts - first) * tb) >= self.end:
                        self.done = True
                        break
                    emit([pkt])
            except (av.FFmpegError, OSError) as e:  # the torn tail of a segment being written
                log.debug("export: segment read stopped: %s", e)
            if pending and self.zero is None and first is not None:
                # The window starts inside this segment's last GOP.
                last = pending[-1]
                if seg.start + float((last.pts - first) * tb) + float(frame * tb) > self.start:
                    self.zero = self.start
                    emit(pending)
            if used:
                self.segments += 1

    def _mux(self, pkt: av.Packet, tb: Fraction, first: int, seg_start: float, offset: int | None,
             frame: int) -> int:
        if self.output is None:
            assert self.tpl is not None
            self.output = av.open(str(self.path), "w", format="mp4", options=dict(EXPORT_OPTIONS))
            self.stream = self.tpl.add_to(self.output)
        if offset is None:
            offset = round((seg_start - self.zero) / tb) - first
        dts_s = (pkt.dts + offset) * tb
        if self.last_dts_s is not None and dts_s <= self.last_dts_s:
            # Segments that overlap a little (a re-anchored clock): push this one on, keeping dts increasing.
            offset += math.floor((self.last_dts_s - dts_s) / tb) + 1
            dts_s = (pkt.dts + offset) * tb
        self.last_dts_s = dts_s
        duration = pkt.duration or frame
        out = copy_packet(pkt, pkt.pts + offset, pkt.dts + offset, duration, self.stream, tb)
        self.output.mux(out)
        self.packets += 1
        end = self.zero + float((pkt.pts + offset + duration) * tb)
        if end > self.max_end:
            self.max_end = end
        return offset

    def finish(self) -> Export | None:
        """Write the trailer (moving the moov to the front); None when nothing fell in the window."""
        if self.output is None:
            return None
        self.output.close()
        tpl = self.tpl
        assert tpl is not None and self.zero is not None
        return Export(str(self.path), self.zero, min(self.max_end, self.end), self.path.stat().st_size, tpl.codec,
                      tpl.width, tpl.height, self.segments, self.truncated)

    def abort(self) -> None:
        if self.output is not None:
            try:
                self.output.close()
            except (av.FFmpegError, OSError, ValueError):
                pass


def export_window(store: RecordingStore, camera_id: str, start: float, end: float, out_path: str | Path) -> Export:
    """Write one seekable MP4 of [start, end] (at most an hour) to out_path; raises WindowError, NoRecording.

    Cut at the key frame at or before start (frames before start hidden by an edit list) and after the last
    packet before end; the camera's own codec, resolution and bitrate. Blocking: run it in a thread."""
    camera_id = check_camera_id(camera_id)
    s, e = check_window(start, end)
    segments = store.segments(camera_id, s, e)
    if not segments:
        raise NoRecording(f"camera {camera_id} has no recording in that window")
    out_path = Path(out_path)
    part = out_path.with_name(out_path.name + ".part")
    writer = _WindowWriter(part, s, e)
    try:
        for seg in segments:
            writer.add(store.path_of(seg), seg)
            if writer.done:
                break
        result = writer.finish()
    except (av.FFmpegError, OSError, ValueError) as err:
        writer.abort()
        part.unlink(missing_ok=True)
        raise RecordingError(f"export failed: {getattr(err, 'strerror', None) or err}") from None
    except BaseException:
        writer.abort()
        part.unlink(missing_ok=True)
        raise
    if result is None:
        part.unlink(missing_ok=True)
        raise NoRecording(f"camera {camera_id} has no recording in that window")
    os.replace(part, out_path)
    return Export(str(out_path), result.start, result.end, result.bytes, result.codec, result.width, result.height,
                  result.segments, result.truncated)


def export_clip(store: RecordingStore, camera_id: str, at: float, pre_s: float, post_s: float,
                out_path: str | Path) -> Export:
    """An MP4 of an event: pre_s (0..30) before `at` to post_s (0..120) after it; as export_window."""
    for name, value, (lo, hi) in (("pre_s", pre_s, PRE_S_RANGE), ("post_s", post_s, POST_S_RANGE)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise WindowError(f"{name} must be within {lo:g}..{hi:g}")
    if pre_s + post_s <= 0:
        raise WindowError("a clip needs pre_s or post_s above 0")
    return export_window(store, camera_id, at - pre_s, at + post_s, out_path)


__all__ = ["export_window", "export_clip"]
