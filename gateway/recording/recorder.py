"""A camera's recorder: packets from its demuxer thread remuxed (never re-encoded) into MP4 segments.

Two halves. The demuxer thread calls `stream_opened`, `packet` and `stream_ended`; each only stamps the
arrival time (the store's clock) and appends to the camera's queue, and never waits for a disk. A writer
thread of the store drains the queue and does everything else: timestamps, key-frame gating, the
events-mode ring, muxing, rotation, the index. Measured (bench/recording.py, the 720p street clip): a
packet costs the demuxer thread ~3 us handed over versus ~25 us muxed in place, and the whole recording
0.6 % of what decoding the same video costs either way, so CPU does not decide. The hand-over is chosen
because a write can block for as long as the disk likes (dirty-page throttling, a stalled NFS mount, an
fsync at a WAL checkpoint), and a demuxer blocked in a write stops reading its camera: analysis would
stall with the disk. A writer that falls behind costs recording only: the queue is bounded
(`queue_bytes`), and past it packets are dropped, counted, up to the next key frame (an `overload` gap).

Time: a packet's wall time is the clock at the arrival of the first packet after a (re)start plus its
pts since that packet's dts ("anchor": packets arrive in decode order, paced by dts). A backward or
large forward jump of the timestamps (a file camera looping, a camera rebooting) ends the segment and
re-anchors on the clock: the next segment starts at the next key frame, where wall time continues. At
a segment boundary the anchor is also renewed when it has drifted from the clock by more than
DRIFT_REANCHOR_S.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING

import av

from gateway.recording.mp4 import SEGMENT_OPTIONS, StreamTemplate, copy_packet, probe_segment, repair_segment
from gateway.recording.records import (
    GapReason, Mode, RecorderState, RecorderStatus, RecordingSettings, safe_detail,
)

if TYPE_CHECKING:
    from gateway.recording.store import RecordingStore

log = logging.getLogger(__name__)

# Per camera, bytes of packets waiting for the writer: 16 s of a 4 Mbit/s camera. More means the writer
# is stuck on the disk: drop (counted) up to the next key frame instead of growing without bound.
WRITER_QUEUE_BYTES = 8 << 20
RESUME_SHARE = 0.5  # after a drop, hand packets over again once the queue is under this share of its bound
# The events ring keeps pre_s plus this: a track is reported a moment after its first frame (analysis
# latency, the tracker's confirmation hits), and its pre-roll counts from that first frame.
RING_SLACK_S = 5.0
RING_MAX_BYTES = 32 << 20  # per camera: 35 s of a 7 Mbit/s camera; past it the oldest GOPs go (counted)
MAX_TS_JUMP_S = 10.0  # a forward dts jump beyond this is a restart of the source, not a late packet
DRIFT_REANCHOR_S = 2.0  # a segment starts on the clock again when pts-mapped time and arrival disagree by more
PROGRESS_S = 5.0  # an open segment's end and bytes go to the index this often (listings see it grow)
MIN_GAP_S = 0.5  # holes shorter than this between segments are no gap (a loop's seam, frame jitter)
MAX_TRACK_S = 3600.0  # a track never reported gone counts as gone this long after it appeared
RETRY_S = 5.0  # while paused, space is checked again this often (of arrival time)
DISK_CHECK_S = 2.0  # while recording, the store's space check is consulted this often
MAX_MUX_ERRORS = 25  # this many unmuxable packets in a row: the segment is closed and a new one started

_PACKET, _OPEN, _END, _CONFIG, _CLOSE, _BEHIND = range(6)
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class _SegmentFile:
    """One segment being written (writer thread only)."""

    __slots__ = ("path", "rel", "id", "output", "stream", "tb", "base", "first_pts", "start", "end", "bytes",
                 "packets", "reported_bytes", "next_progress")

    def __init__(self, path: Path, rel: str, template: StreamTemplate, first_dts: int, first_pts: int,
                 start: float) -> None:
        self.path, self.rel = path, rel
        self.id: int | None = None
        self.output = av.open(str(path), "w", format="mp4", options=dict(SEGMENT_OPTIONS))
        self.stream = template.add_to(self.output)
        self.tb = template.time_base
        self.base = first_dts  # the file's timestamps start at 0 at the first key frame's dts
        self.first_pts = first_pts
        self.start = self.end = start
        self.bytes = 0
        self.packets = 0
        self.reported_bytes = 0
        self.next_progress = 0.0

    def write(self, packet: av.Packet, pts: int, dts: int, duration: int) -> None:
        self.output.mux(copy_packet(packet, pts - self.base, dts - self.base, duration, self.stream, self.tb))
        self.bytes += packet.size
        self.packets += 1


class CameraRecorder:
    """One camera's recorder. Demuxer thread: stream_opened / packet / stream_ended. Any thread: configure,
    track_appeared / track_left / mark, status, close. The store's writer thread does the writing."""

    def __init__(self, store: "RecordingStore", camera_id: str, settings: RecordingSettings,
                 clock: Callable[[], float], queue_bytes: int = WRITER_QUEUE_BYTES) -> None:
        self.camera_id = camera_id
        self._store = store
        self._clock = clock
        self._settings = settings
        self._queue: collections.deque = collections.deque()
        self._queue_max = queue_bytes
        # Demuxer-thread state (the writer reads the counters only).
        self._in_bytes = 0
        self._drop_to_key = False
        self.packets = 0
        self.dropped = 0
        self._closed = False
        # Writer-thread state.
        self._out_bytes = 0
        self._tpl: StreamTemplate | None = None
        self._tpl_error: str | None = None
        self._stream_up = False
        self._tbf = 0.0
        self._frame_ticks = 1
        self._anchor: tuple[float, int] | None = None  # (arrival wall time, dts) of the packet the mapping starts at
        self._last_dts: int | None = None
        self._ts_seen = False  # this stream's packets carry timestamps
        self._seg: _SegmentFile | None = None
        self._need_key = False
        self._mux_errors = 0
        self._paused = False
        self._pause_reason: str | None = None
        self._retry_at = 0.0
        self._next_disk_check = 0.0
        self._ring: collections.deque[list] = collections.deque()  # GOPs: lists of (packet, pts, dts, dur, t)
        self._ring_bytes = 0
        self.written = 0
        self.bytes_written = 0
        self.segments = 0
        self.corrupt = 0
        self.waited_key = 0
        self.ring_dropped = 0
        self.done = False  # the writer processed close()
        # Events (any thread).
        self._events_lock = threading.Lock()
        self._tracks: dict[Hashable, float] = {}
        self._marks: list[tuple[float, float]] = []

    # ---- demuxer thread ---------------------------------------------------------------------------
    def stream_opened(self, stream: av.VideoStream) -> None:
        """The camera's video stream opened (or reopened): `stream` is the input stream, the template."""
        if self._closed:
            return
        try:
            tpl: StreamTemplate | None = StreamTemplate(stream)
            error = None
        except Exception as e:  # never let recording break the demuxer thread
            tpl, error = None, safe_detail(f"this stream cannot be recorded in MP4: {e}")
        self._queue.append((_OPEN, (tpl, error), self._clock()))

    def packet(self, packet: av.Packet) -> None:
        """One packet of the video stream, as read (every packet: before any skipping for analysis)."""
        self.packets += 1
        if self._settings.mode is Mode.OFF or self._closed:
            return
        size = packet.size
        if not size:
            return
        queued = self._in_bytes - self._out_bytes
        if self._drop_to_key:
            if not packet.is_keyframe or queued > self._queue_max * RESUME_SHARE:
                self.dropped += 1
                return
            self._drop_to_key = False
        elif queued + size > self._queue_max:
            # The writer is behind (a stalled disk): the camera goes on, recording skips to a key frame.
            self.dropped += 1
            self._drop_to_key = True
            self._queue.append((_BEHIND, None, self._clock()))
            return
        self._in_bytes += size
        self._queue.append((_PACKET, packet, self._clock()))

    def stream_ended(self, reason: str | None = None) -> None:
        """The stream ended or broke; `reason` (credentials are scrubbed) goes into the gap's detail."""
        if not self._closed:
            self._queue.append((_END, safe_detail(reason), self._clock()))

    # ---- any thread ---------------------------------------------------------------------------------
    @property
    def settings(self) -> RecordingSettings:
        """The settings in force."""
        return self._settings

    def configure(self, settings: RecordingSettings) -> None:
        """Change the camera's recording settings (applied by the writer at once)."""
        if self._closed:
            return
        self._settings = settings
        self._queue.append((_CONFIG, settings, self._clock()))

    def track_appeared(self, track_id: Hashable, at: float) -> None:
        """A detection track started at wall time `at` (events mode records from at - pre_s)."""
        with self._events_lock:
            self._tracks.setdefault(track_id, at)

    def track_left(self, track_id: Hashable, at: float) -> None:
        """A detection track ended at wall time `at` (events mode records until at + post_s)."""
        with self._events_lock:
            start = self._tracks.pop(track_id, at)
            self._marks.append((min(start, at), at))

    def mark(self, start: float, end: float | None = None) -> None:
        """An event over [start, end] (a single moment when end is None), recorded as a track would be."""
        end = start if end is None else end
        with self._events_lock:
            self._marks.append((min(start, end), max(start, end)))

    def close(self) -> None:
        """Stop recording this camera: the open segment is closed by the writer (a `stopped` gap follows)."""
        if not self._closed:
            self._closed = True
            self._queue.append((_CLOSE, None, self._clock()))

    def status(self) -> RecorderStatus:
        """The recorder's state and counters (cheap; for the camera's status)."""
        mode = self._settings.mode
        seg = self._seg
        reason: str | None = None
        if mode is Mode.OFF:
            state = RecorderState.OFF
        elif self._paused:
            state, reason = RecorderState.PAUSED, self._pause_reason
        elif seg is not None:
            state = RecorderState.RECORDING
        elif self._tpl_error:
            state, reason = RecorderState.WAITING, self._tpl_error
        elif not self._stream_up:
            state, reason = RecorderState.WAITING, "no stream"
        elif mode is Mode.EVENTS:
            state = RecorderState.STANDBY
        else:
            state, reason = RecorderState.WAITING, "waiting for a key frame"
        return RecorderStatus(self.camera_id, mode, state, reason, seg.start if seg else None, self.packets,
                              self.written, self.bytes_written, self.segments, self.dropped, self.corrupt,
                              self.waited_key, self._ring_bytes)

    def open_segment_end(self, segment_id: int) -> float | None:
        """Where the open segment `segment_id` ends now (for listings), if it is this recorder's open one."""
        seg = self._seg
        return seg.end if seg is not None and seg.id == segment_id else None

    # ---- writer thread ------------------------------------------------------------------------------
    def drain(self) -> int:
        """Process everything queued (the store's writer thread calls this); items processed."""
        q = self._queue
        n = 0
        while q:
            kind, payload, t = q.popleft()
            n += 1
            try:
                if kind == _PACKET:
                    self._out_bytes += payload.size
                    self._on_packet(payload, t)
                elif kind == _OPEN:
                    self._on_open(payload[0], payload[1], t)
                elif kind == _END:
                    self._on_end(payload, t)
                elif kind == _BEHIND:
                    self._end_segment(GapReason.OVERLOAD, "the writer fell behind the camera")
                    self._need_key = True
                elif kind == _CONFIG:
                    self._on_config(payload)
                elif kind == _CLOSE:
                    self._end_segment(GapReason.STOPPED, None)
                    self._ring_clear()
                    self.done = True
            except Exception:  # a bug must not stop the writer thread (it serves other cameras too)
                log.exception("recorder %s: failed to process an item", self.camera_id)
                self.corrupt += 1
                self._need_key = True
        return n

    def _on_open(self, tpl: StreamTemplate | None, error: str | None, now: float) -> None:
        self._end_segment(GapReason.SOURCE_RESTART, "stream reopened")
        self._ring_clear()
        self._tpl, self._tpl_error = tpl, error
        self._stream_up = True
        self._anchor = None
        self._last_dts = None
        self._ts_seen = False
        self._need_key = False
        if tpl is not None:
            self._tbf = float(tpl.time_base)
            self._frame_ticks = tpl.frame_ticks()

    def _on_end(self, detail: str | None, now: float) -> None:
        self._end_segment(GapReason.STREAM_ENDED, detail)
        self._ring_clear()
        self._stream_up = False
        self._anchor = None
        self._last_dts = None

    def _on_config(self, settings: RecordingSettings) -> None:
        if settings.mode is Mode.OFF:
            self._end_segment(GapReason.OFF, None)
            self._ring_clear()
        elif settings.mode is Mode.CONTINUOUS:
            self._ring_clear()

    def _on_packet(self, packet: av.Packet, arrival: float) -> None:
        if self._tpl is None:
            return  # no stream opened yet, or one MP4 cannot hold
        if packet.is_corrupt:
            self.corrupt += 1
            self._need_key = True
            return
        pts, dts = packet.pts, packet.dts
        last = self._last_dts
        if dts is None:
            if pts is None:
                if self._ts_seen:  # a stream with timestamps sent one without: damaged
                    self.corrupt += 1
                    self._need_key = True
                    return
                # A raw stream (Annex B H.264/H.265 files) has none: one frame after the last.
                dts = pts = 0 if last is None else last + (packet.duration or self._frame_ticks)
            else:
                self._ts_seen = True
                dts = pts if last is None or pts > last else last + 1
        else:
            self._ts_seen = True
            if pts is None:
                pts = dts
        if pts < dts:
            pts = dts
        if last is not None:
            if dts == last and pts > dts:
                dts = last + 1  # a repeated dts: the MP4 needs them increasing, and this one can move
            elif dts <= last or (dts - last) * self._tbf > MAX_TS_JUMP_S:
                # The timestamps restarted (a file looped, the camera rebooted): a new segment at the next
                # key frame, wall time continuing from the clock.
                self._end_segment(GapReason.SOURCE_RESTART, "timestamps restarted")
                self._ring_clear()
                self._anchor = None
        self._last_dts = dts
        anchor = self._anchor
        if anchor is None:
            # Packets arrive in decode order, paced by dts: a frame is shown (pts - dts) after it arrives.
            anchor = self._anchor = (arrival, dts)
        t = anchor[0] + (pts - anchor[1]) * self._tbf
        key = packet.is_keyframe
        seg = self._seg
        rotate = key and seg is not None and (pts - seg.first_pts) * self._tbf >= self._store.segment_s
        drift = arrival - (anchor[0] + (dts - anchor[1]) * self._tbf)
        if key and (seg is None or rotate) and abs(drift) > DRIFT_REANCHOR_S:
            self._anchor = (arrival, dts)
            t = arrival + (pts - dts) * self._tbf
        duration = packet.duration or self._frame_ticks
        if self._paused:
            if arrival < self._retry_at or not self._resume(arrival):
                return
        elif seg is not None and arrival >= self._next_disk_check:
            self._next_disk_check = arrival + DISK_CHECK_S
            ok, why = self._store.space_ok(arrival)
            if not ok:
                self._pause(GapReason.DISK_FULL, why, arrival)
                return
        if self._settings.mode is Mode.EVENTS:
            t_dts = self._anchor[0] + (dts - self._anchor[1]) * self._tbf
            self._events_packet(packet, pts, dts, duration, t, t_dts, key, arrival, rotate)
            return
        if seg is None:
            if not key:
                self.waited_key += 1
                return
            if not self._start_segment(pts, dts, t, arrival):
                return
        elif not self._carry_on(pts, dts, t, key, arrival, rotate):
            return
        self._write(packet, pts, dts, duration, t, arrival)

    def _carry_on(self, pts: int, dts: int, t: float, key: bool, arrival: float, rotate: bool) -> bool:
        """Whether the open segment takes this packet: a new segment at a key frame when one is due, and
        after a drop nothing until the next key frame."""
        if rotate:
            self._end_segment(None, None)
            return self._start_segment(pts, dts, t, arrival)
        if self._need_key:
            if not key:
                self.waited_key += 1
                return False
            self._need_key = False
        return True

    # -- events mode --
    def _windows(self, t: float) -> list[tuple[float, float]]:
        """(from, until) wall times to record: each track's and mark's span widened by pre_s and post_s."""
        s = self._settings
        keep = s.pre_s + RING_SLACK_S
        with self._events_lock:
            if self._marks:
                self._marks = [m for m in self._marks if m[1] + s.post_s >= t - keep]
            out = [(a - s.pre_s, b + s.post_s) for a, b in self._marks]
            stale = []
            for track, start in self._tracks.items():
                if start + MAX_TRACK_S + s.post_s < t - keep:
                    stale.append(track)  # its leave report was lost
                else:
                    out.append((start - s.pre_s, start + MAX_TRACK_S + s.post_s))
            for track in stale:
                del self._tracks[track]
        return out

    def _events_packet(self, packet: av.Packet, pts: int, dts: int, duration: int, t: float, t_dts: float,
                       key: bool, arrival: float, rotate: bool) -> None:
        windows = self._windows(t)
        if self._seg is not None:
            # Decided on decode time: every frame shown up to the hold has dts <= pts <= hold.
            hold = max((until for frm, until in windows if frm <= t_dts), default=None)
            if hold is not None and t_dts <= hold:
                if self._carry_on(pts, dts, t, key, arrival, rotate):
                    self._write(packet, pts, dts, duration, t, arrival)
                return
            self._end_segment(GapReason.NO_EVENT, None)  # post_s has passed since the last event
        # Standby: into the ring, which always starts at a key frame.
        ring = self._ring
        if key:
            ring.append([])
        elif not ring:
            self.waited_key += 1
            return
        ring[-1].append((packet, pts, dts, duration, t))
        self._ring_bytes += packet.size
        keep = self._settings.pre_s + RING_SLACK_S
        while len(ring) > 1 and (ring[1][0][4] <= t - keep or self._ring_bytes > RING_MAX_BYTES):
            if ring[1][0][4] > t - keep:
                self.ring_dropped += len(ring[0])
            self._ring_bytes -= sum(e[0].size for e in ring.popleft())
        head = ring[0][0][4]
        starts = [frm for frm, until in windows if frm <= t and until >= head]
        if not starts:
            return
        # An event: record from the ring's last key frame at or before its pre-roll starts.
        start = min(starts)
        while len(ring) > 1 and ring[1][0][4] <= start:
            self._ring_bytes -= sum(e[0].size for e in ring.popleft())
        gops = list(ring)
        self._ring_clear()
        first = gops[0][0]
        if not self._start_segment(first[1], first[2], first[4], arrival):
            return
        for gop in gops:
            for p, p_pts, p_dts, p_dur, p_t in gop:
                self._write(p, p_pts, p_dts, p_dur, p_t, arrival)

    def _ring_clear(self) -> None:
        self._ring.clear()
        self._ring_bytes = 0

    # -- segments --
    def _start_segment(self, pts: int, dts: int, t: float, now: float) -> bool:
        ok, why = self._store.space_ok(now)
        if not ok:
            self._pause(GapReason.DISK_FULL, why, now)
            return False
        assert self._tpl is not None
        try:
            path, rel = self._store.new_segment_path(self.camera_id, t)
            seg = _SegmentFile(path, rel, self._tpl, dts, pts, t)
        except (av.FFmpegError, OSError, ValueError) as e:
            self._pause(GapReason.WRITE_ERROR, safe_detail(f"cannot create a segment: {_why(e)}"), now)
            return False
        seg.next_progress = now + PROGRESS_S
        index = self._store.index
        try:
            seg.id = index.add_segment(self.camera_id, t, rel, self._tpl.codec, self._tpl.width, self._tpl.height)
            index.close_gaps(self.camera_id, t, MIN_GAP_S)
        except sqlite3.Error as e:  # a full disk can refuse the index too: start-up re-indexes the file
            log.warning("recorder %s: index not updated: %s", self.camera_id, e)
        self._seg = seg
        self._next_disk_check = now + DISK_CHECK_S
        self._need_key = False
        self._mux_errors = 0
        self.segments += 1
        return True

    def _write(self, packet: av.Packet, pts: int, dts: int, duration: int, t: float, now: float) -> None:
        seg = self._seg
        assert seg is not None
        try:
            seg.write(packet, pts, dts, duration)
        except (av.FFmpegError, OSError) as e:
            if getattr(e, "errno", None) in _DISK_ERRNOS or _is_io_error(e):
                self._write_failed(e, now)
                return
            self._mux_failed(e)
            return
        except ValueError as e:
            self._mux_failed(e)
            return
        self._mux_errors = 0
        self.written += 1
        self.bytes_written += packet.size
        end = t + duration * self._tbf
        if end > seg.end:
            seg.end = end
        if now >= seg.next_progress:
            seg.next_progress = now + PROGRESS_S
            self._report(seg, closed=False)

    def _mux_failed(self, e: BaseException) -> None:
        # A packet the muxer refuses (damaged, bad timestamps): skip to the next key frame.
        self.corrupt += 1
        self._mux_errors += 1
        self._need_key = True
        log.debug("recorder %s: packet not muxed: %s", self.camera_id, e)
        if self._mux_errors >= MAX_MUX_ERRORS:
            self._end_segment(GapReason.WRITE_ERROR, "packets could not be written")

    def _report(self, seg: _SegmentFile, *, closed: bool, nbytes: int | None = None) -> None:
        if nbytes is None:
            try:
                nbytes = os.path.getsize(seg.path)
            except OSError:
                nbytes = seg.bytes
        self._store.account(nbytes - seg.reported_bytes)
        seg.reported_bytes = nbytes
        if seg.id is None:
            return
        try:
            self._store.index.update_segment(seg.id, seg.end, nbytes, closed=closed)
        except sqlite3.Error as e:
            log.warning("recorder %s: index not updated: %s", self.camera_id, e)

    def _end_segment(self, reason: GapReason | None, detail: str | None) -> None:
        """Close the open segment, if any; a reason opens a gap from its end (None: rotation, no gap)."""
        seg = self._seg
        if seg is None:
            return
        self._seg = None
        try:
            seg.output.close()
        except (av.FFmpegError, OSError, ValueError) as e:
            self._salvage(seg, GapReason.WRITE_ERROR, safe_detail(f"segment not closed cleanly: {_why(e)}"))
            return
        if seg.packets == 0:
            self._discard(seg, reason, detail)
            return
        self._report(seg, closed=True)
        self._open_gap(seg.end, reason, detail)

    def _write_failed(self, e: BaseException, now: float) -> None:
        full = getattr(e, "errno", None) in _DISK_ERRNOS
        reason = GapReason.DISK_FULL if full else GapReason.WRITE_ERROR
        why = "disk full" if full else safe_detail(f"write failed: {_why(e)}")
        seg = self._seg
        self._seg = None
        if seg is not None:
            try:
                seg.output.close()
            except (av.FFmpegError, OSError, ValueError):
                pass  # the trailer cannot be written either: the fragments before it are kept
            self._salvage(seg, reason, why)
        if full:
            self._store.disk_full_seen()
        self._pause(reason, why, now)

    def _salvage(self, seg: _SegmentFile, reason: GapReason, detail: str | None) -> None:
        """Keep what a failed segment holds: cut its torn tail, index the time it covers."""
        try:
            size = repair_segment(seg.path)
            probe = probe_segment(seg.path)
        except OSError:
            size, probe = 0, None
        if probe is None:
            self._discard(seg, reason, detail)
            return
        seg.end = seg.start + probe.span_s
        self._report(seg, closed=True, nbytes=size)
        self._open_gap(seg.end, reason, detail)

    def _discard(self, seg: _SegmentFile, reason: GapReason | None, detail: str | None) -> None:
        try:
            seg.path.unlink(missing_ok=True)
        except OSError:
            pass
        self._store.account(-seg.reported_bytes)
        if seg.id is not None:
            try:
                self._store.index.delete_segment(seg.id)
            except sqlite3.Error as e:
                log.warning("recorder %s: index not updated: %s", self.camera_id, e)
        self._open_gap(seg.start, reason, detail)

    def _open_gap(self, start: float, reason: GapReason | None, detail: str | None) -> None:
        if reason is None:
            return
        try:
            self._store.index.open_gap(self.camera_id, start, reason.value, detail)
        except sqlite3.Error as e:
            log.warning("recorder %s: index not updated: %s", self.camera_id, e)

    # -- pause --
    def _pause(self, reason: GapReason, why: str | None, now: float) -> None:
        self._end_segment(reason, why)
        self._ring_clear()
        if not self._paused:
            log.warning("recording of camera %s paused: %s", self.camera_id, why)
        self._paused = True
        self._pause_reason = why
        self._retry_at = now + RETRY_S

    def _resume(self, now: float) -> bool:
        ok, why = self._store.space_ok(now)
        if not ok:
            self._pause_reason = why
            self._retry_at = now + RETRY_S
            return False
        log.info("recording of camera %s resumed", self.camera_id)
        self._paused = False
        self._pause_reason = None
        return True


def _why(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _is_io_error(e: BaseException) -> bool:
    """An error of the file (not of the packet): EIO, EROFS, EACCES... as PyAV raises them."""
    code = getattr(e, "errno", None)
    return code in (errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EBADF, errno.EFBIG)


__all__ = ["CameraRecorder", "WRITER_QUEUE_BYTES", "MIN_GAP_S"]
