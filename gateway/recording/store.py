"""The recordings of every camera on one disk: layout, index, writer threads, retention and the disk budget.

Layout under `root` (every path component is a validated camera id, a date or a name made here, never an
outside string):

    <root>/index.sqlite3                                   the index (index.py)
    <root>/<camera_id>/<YYYY-MM-DD>/<HHMMSS.mmm>.mp4       a segment, named by its UTC start

Retention removes the oldest first: each camera's segments older than its `retain_days`, then, across
all cameras, the oldest segments while the recordings exceed `max_bytes` or the disk's free space is
under `min_free_bytes`. If the floor cannot be reached by deleting (the disk is full of other things),
recording pauses (each camera's status says "disk full") and resumes at a key frame once the space is
back (checked every few seconds); the cameras' analysis never notices. Writes that fail with ENOSPC
anyway (another writer raced us) pause the same way, and the torn segment is cut at its last complete
fragment.
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gateway.private import private_dir, private_file
from gateway.recording.index import RecordingIndex
from gateway.recording.mp4 import probe_segment, repair_segment
from gateway.recording.recorder import MIN_GAP_S, WRITER_QUEUE_BYTES, CameraRecorder
from gateway.recording.records import (
    MAX_LIST_ROWS, MAX_LIST_WINDOW_S, BadCameraId, DiskStatus, Gap, GapReason, RecordingError, RecordingSettings,
    Segment, SweepReport, Timeline, check_camera_id, check_window,
)

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite3"
DEFAULT_SEGMENT_S = 60.0  # a segment is rotated at the first key frame after this long
SEGMENT_S_RANGE = (0.5, 600.0)  # small for tests; long segments make retention coarse
DEFAULT_MIN_FREE_BYTES = 1 << 30  # keep 1 GiB free for the system (and the index) by default
RESUME_MARGIN_BYTES = 64 << 20  # paused for space: resume only once this much more than the floor is free
DEFAULT_RETAIN_DAYS = 30  # for cameras no longer registered (their own setting is gone with them)
SPACE_CHECK_S = 2.0  # free space is read (statvfs) at most this often
SWEEP_S = 60.0  # retention by age runs this often (writer thread 0)
WRITER_TICK_S = 0.1  # a writer thread drains its cameras' queues this often (no wake-up per packet)
DELETE_BATCH = 64  # segments fetched per retention query
ORPHAN_SCAN_DAYS = 2  # start-up looks for unindexed files in each camera's newest days only (see _repair)
JOIN_TIMEOUT_S = 10.0

_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SEGMENT_NAME = re.compile(r"^(\d{2})(\d{2})(\d{2})\.(\d{3})(?:-\d{1,4})?\.mp4$")


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What start-up found: segments left open and repaired, files re-indexed, rows or files removed."""

    repaired: int
    reindexed: int
    removed: int


class _Writer(threading.Thread):
    """Drains a share of the cameras' queues every WRITER_TICK_S; thread 0 also runs retention."""

    def __init__(self, store: "RecordingStore", number: int) -> None:
        super().__init__(name=f"rec-writer-{number}", daemon=True)
        self.store = store
        self.number = number
        self.recorders: list[CameraRecorder] = []  # replaced, never mutated (read without a lock)
        self.kick = threading.Event()
        self.passes = 0
        self.cond = threading.Condition()
        self.stopping = False

    def run(self) -> None:
        while True:
            stopping = self.stopping
            self.kick.wait(WRITER_TICK_S)
            self.kick.clear()
            self.store._pass(self.recorders, maintain=self.number == 0)
            with self.cond:
                self.passes += 1
                self.cond.notify_all()
            if stopping:
                return

    def flush(self, timeout: float) -> bool:
        with self.cond:
            target = self.passes + 2  # a whole pass that started after this call
            self.kick.set()
            return self.cond.wait_for(lambda: self.passes >= target or not self.is_alive(), timeout)


class RecordingStore:
    """Every camera's recordings under one root: create recorders, list, sweep; see the module docstring."""

    def __init__(self, root: str | Path, *, max_bytes: int | None = None,
                 min_free_bytes: int = DEFAULT_MIN_FREE_BYTES, segment_s: float = DEFAULT_SEGMENT_S,
                 writer_threads: int = 1, clock: Callable[[], float] = time.time,
                 default_retain_days: int = DEFAULT_RETAIN_DAYS, queue_bytes: int = WRITER_QUEUE_BYTES,
                 auto_sweep: bool = True) -> None:
        if not SEGMENT_S_RANGE[0] <= segment_s <= SEGMENT_S_RANGE[1]:
            raise RecordingError(f"segment_s must be within {SEGMENT_S_RANGE[0]:g}..{SEGMENT_S_RANGE[1]:g}")
        if max_bytes is not None and max_bytes <= 0:
            raise RecordingError("max_bytes must be positive")
        self.root = Path(root).resolve()
        self.max_bytes = max_bytes
        self.min_free_bytes = max(0, int(min_free_bytes))
        self.segment_s = float(segment_s)
        self.clock = clock
        self.default_retain_days = default_retain_days
        self.queue_bytes = queue_bytes
        # False: retention by age runs only when sweep() is called (the gateway's named task does), not on a writer.
        self.auto_sweep = auto_sweep
        self.index: RecordingIndex | None = None
        self._recorders: dict[str, CameraRecorder] = {}
        self._all: list[CameraRecorder] = []  # including closing ones not yet done (replaced, never mutated)
        self._writers = [_Writer(self, i) for i in range(max(0, writer_threads))]
        self._lock = threading.Lock()  # recorders and writers' lists
        self._space_lock = threading.Lock()
        self._sweep_lock = threading.RLock()
        self._used = 0
        self._full = False
        self._full_reason: str | None = None
        self._next_space_check = 0.0
        self._next_sweep = 0.0
        self._closed = False

    # ---- life cycle -----------------------------------------------------------------------------------
    def open(self) -> RepairReport:
        """Create the root, open the index, repair what a crash left, start the writer threads."""
        private_dir(self.root)  # video of the cameras: only the gateway's user may read it
        self.index = RecordingIndex(self.root / INDEX_NAME)
        report = self._repair()
        self._used = self.index.total_bytes()
        self._next_sweep = self.clock() + SWEEP_S
        for w in self._writers:
            w.start()
        return report

    def close(self) -> None:
        """Close every recorder's segment (a `stopped` gap follows each), stop the writers, close the index."""
        if self._closed or self.index is None:
            return
        self._closed = True
        recorders = self._all
        for r in recorders:
            r.close()
        for w in self._writers:
            w.stopping = True
            w.kick.set()
        for w in self._writers:
            w.join(JOIN_TIMEOUT_S)
            if w.is_alive():
                log.warning("recordings: writer %d did not stop in time (a stalled disk?)", w.number)
        if not self._writers:
            self._pass(recorders, maintain=False)
        self.index.close()

    def __enter__(self) -> "RecordingStore":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- recorders ------------------------------------------------------------------------------------
    def recorder(self, camera_id: str, settings: RecordingSettings | None = None) -> CameraRecorder:
        """The camera's recorder (made on first call; later calls apply `settings` when given)."""
        camera_id = check_camera_id(camera_id)
        if self.index is None or self._closed:
            raise RecordingError("the recording store is not open")
        with self._lock:
            rec = self._recorders.get(camera_id)
            if rec is not None and not rec.done and not rec._closed:
                if settings is not None and settings != rec.settings:
                    rec.configure(settings)
                return rec
            rec = CameraRecorder(self, camera_id, settings or RecordingSettings(), self.clock, self.queue_bytes)
            self._recorders[camera_id] = rec
            self._all = [r for r in self._all if not r.done] + [rec]
            if self._writers:
                w = min(self._writers, key=lambda w: len(w.recorders))
                w.recorders = [r for r in w.recorders if not r.done] + [rec]
        return rec

    def remove(self, camera_id: str) -> None:
        """Stop recording a camera (its recordings stay until retention removes them)."""
        with self._lock:
            rec = self._recorders.get(camera_id)
        if rec is not None:
            rec.close()

    def flush(self, timeout: float = 10.0) -> None:
        """Process every packet handed in so far (no writer threads: here, in the caller's thread)."""
        if not self._writers:
            self._pass(self._all, maintain=False)
            return
        for w in self._writers:
            if not w.flush(timeout):
                raise RecordingError("the recording writer did not catch up in time")

    def _pass(self, recorders: list[CameraRecorder], *, maintain: bool) -> None:
        for rec in recorders:
            rec.drain()
        if any(r.done for r in recorders):
            with self._lock:
                for w in self._writers:
                    w.recorders = [r for r in w.recorders if not r.done]
                self._all = [r for r in self._all if not r.done]
                for cid, r in list(self._recorders.items()):
                    if r.done:
                        del self._recorders[cid]
        if maintain and self.auto_sweep:
            now = self.clock()
            if now >= self._next_sweep:
                self._next_sweep = now + SWEEP_S
                try:
                    self.sweep(now)
                except (OSError, sqlite3.Error) as e:
                    log.warning("recording retention failed: %s", e)

    # ---- paths ----------------------------------------------------------------------------------------
    def new_segment_path(self, camera_id: str, start: float) -> tuple[Path, str]:
        """A fresh file for a segment of `camera_id` starting at `start`: (absolute path, path relative to root)."""
        camera_id = check_camera_id(camera_id)
        when = datetime.fromtimestamp(start, tz=timezone.utc)
        day = private_dir(self.root / camera_id / when.strftime("%Y-%m-%d"))
        stem = when.strftime("%H%M%S") + f".{when.microsecond // 1000:03d}"
        for n in range(10_000):
            name = f"{stem}.mp4" if n == 0 else f"{stem}-{n}.mp4"
            path = day / name
            try:
                # Made here, 0600, whatever the umask: FFmpeg then writes into it and keeps its mode.
                private_file(path, "")
            except FileExistsError:
                continue
            return path, f"{camera_id}/{day.name}/{name}"
        raise RecordingError("too many segments start in the same millisecond")

    def path_of(self, segment: Segment) -> Path:
        """The absolute path of a segment's file (checked to lie under the root)."""
        path = (self.root / segment.path).resolve()
        if self.root not in path.parents:
            raise RecordingError("segment path outside the recordings root")
        return path

    # ---- listing --------------------------------------------------------------------------------------
    def segments(self, camera_id: str, start: float, end: float, limit: int = -1) -> list[Segment]:
        """A camera's segments overlapping [start, end), oldest first; open ones end where writing is now."""
        camera_id = check_camera_id(camera_id)
        if self.index is None:
            raise RecordingError("the recording store is not open")
        segs = self.index.segments(camera_id, start, end, limit)
        rec = self._recorders.get(camera_id)
        out = []
        for s in segs:
            if s.open and rec is not None:
                live_end = rec.open_segment_end(s.id)
                if live_end is not None and live_end > s.end:
                    s = Segment(s.id, s.camera_id, s.start, live_end, s.bytes, s.codec, s.width, s.height, s.path,
                                s.open)
            out.append(s)
        return out

    def timeline(self, camera_id: str, start: float, end: float) -> Timeline:
        """What is recorded in [start, end) (up to 31 days): segments, and the holes between them with reasons."""
        camera_id = check_camera_id(camera_id)
        s, e = check_window(start, end, MAX_LIST_WINDOW_S)
        if self.index is None:
            raise RecordingError("the recording store is not open")
        now = self.clock()
        segs = self.segments(camera_id, s, e, MAX_LIST_ROWS + 1)
        truncated = len(segs) > MAX_LIST_ROWS
        segs = segs[:MAX_LIST_ROWS]
        limit = min(e, now) if not truncated else min(e, segs[-1].end if segs else e)
        rows = self.index.gaps(camera_id, s, e, now)
        holes: list[tuple[float, float]] = []
        cursor = s
        for seg in segs:
            if seg.start - cursor >= MIN_GAP_S:
                holes.append((cursor, min(seg.start, limit)))
            cursor = max(cursor, seg.end)
        if limit - cursor >= MIN_GAP_S:
            holes.append((cursor, limit))
        gaps = []
        for a, b in holes:
            if b - a < MIN_GAP_S:
                continue
            best: Gap | None = None
            best_overlap = 0.0
            for g in rows:
                overlap = min(b, g.end) - max(a, g.start)
                if overlap > best_overlap:
                    best, best_overlap = g, overlap
            if best is not None:
                gaps.append(Gap(camera_id, a, b, best.reason, best.detail))
            else:
                gaps.append(Gap(camera_id, a, b, GapReason.NO_RECORDING.value))
        return Timeline(camera_id, s, e, tuple(segs), tuple(gaps), truncated)

    # ---- space ----------------------------------------------------------------------------------------
    def account(self, delta: int) -> None:
        """Add bytes written (or removed, negative) to the running total of the recordings."""
        with self._space_lock:
            self._used += delta

    def disk_full_seen(self) -> None:
        """A write failed for space: paused until the floor plus a margin is free (read at the next check)."""
        with self._space_lock:
            self._full = True
            self._full_reason = "disk full"
            self._next_space_check = 0.0

    def _resume_margin(self) -> int:
        """Free space beyond the floor needed to resume: RESUME_MARGIN_BYTES, less on a small disk (1/20 of it)."""
        try:
            total = shutil.disk_usage(self.root).total
        except OSError:
            return RESUME_MARGIN_BYTES
        return min(RESUME_MARGIN_BYTES, total // 20)

    def space_ok(self, now: float) -> tuple[bool, str | None]:
        """Whether segments may be written now (and why not); makes room by retention when it must."""
        with self._space_lock:
            if now < self._next_space_check:
                return not self._full, self._full_reason
            self._next_space_check = now + SPACE_CHECK_S
            over_budget = self.max_bytes is not None and self._used > self.max_bytes
        if over_budget:
            self._trim_budget()
        floor = self.min_free_bytes + (self._resume_margin() if self._full else 0)
        free = self._free()
        if free < floor:
            self._make_free(floor)
            free = self._free()
        with self._space_lock:
            was_full = self._full
            self._full = free < floor or free == 0
            self._full_reason = (f"disk full: {free >> 20} MiB free, {self.min_free_bytes >> 20} MiB must stay free"
                                 if self._full else None)
            if self._full and not was_full:
                log.warning("recordings disk: %s; recording paused", self._full_reason)
            return not self._full, self._full_reason

    def disk_status(self) -> DiskStatus:
        """Free space, our usage, the budget, and whether recording is paused for space."""
        return DiskStatus(self._free(), self._used, self.max_bytes, self.min_free_bytes, self._full)

    def free_bytes(self) -> int:
        """Free bytes on the recordings' disk (one statvfs; 0 when it cannot be read)."""
        return self._free()

    def _free(self) -> int:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return 0

    # ---- retention ------------------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> SweepReport:
        """Remove segments past their camera's retain_days, then the oldest while over max_bytes or the floor."""
        if self.index is None:
            raise RecordingError("the recording store is not open")
        now = self.clock() if now is None else now
        with self._sweep_lock:
            by_age = freed = 0
            with self._lock:
                days = {cid: r.settings.retain_days for cid, r in self._recorders.items()}
            for camera_id in self.index.cameras():
                cutoff = now - days.get(camera_id, self.default_retain_days) * 86400.0
                while True:
                    old = self.index.older_than(camera_id, cutoff, DELETE_BATCH)
                    for seg in old:
                        freed += self._delete(seg)
                    by_age += len(old)
                    if len(old) < DELETE_BATCH:
                        break
                self.index.delete_gaps_before(camera_id, cutoff)
            n, b = self._trim_budget()
            by_budget, freed = n, freed + b
            if self.min_free_bytes and self._free() < self.min_free_bytes:
                n, b = self._make_free(self.min_free_bytes)
                by_budget, freed = by_budget + n, freed + b
        return SweepReport(by_age, by_budget, freed)

    def _trim_budget(self) -> tuple[int, int]:
        """Delete the oldest closed segments while the recordings exceed max_bytes."""
        if self.max_bytes is None:
            return 0, 0
        return self._delete_oldest(lambda: self._used <= self.max_bytes)  # type: ignore[operator]

    def _make_free(self, floor: int) -> tuple[int, int]:
        """Delete the oldest closed segments until `floor` bytes are free (or none is left to delete)."""
        return self._delete_oldest(lambda: self._free() >= floor)

    def _delete_oldest(self, enough: Callable[[], bool]) -> tuple[int, int]:
        n = freed = 0
        with self._sweep_lock:
            while not enough():
                batch = self.index.oldest(DELETE_BATCH)
                if not batch:
                    break
                for seg in batch:
                    freed += self._delete(seg)
                    n += 1
                    if enough():
                        break
        return n, freed

    def _delete(self, seg: Segment) -> int:
        """Remove one segment's file, then its row (the file first: on a full disk the row may not go)."""
        path = self.root / seg.path
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("recordings: cannot remove a segment of camera %s: %s", seg.camera_id, e.strerror)
            return 0
        try:
            path.parent.rmdir()  # the day's folder, once empty
        except OSError:
            pass
        self.account(-seg.bytes)
        try:
            self.index.delete_segment(seg.id)
            self.index.delete_gaps_before(seg.camera_id, seg.end)
        except sqlite3.Error as e:  # start-up removes rows whose file is gone
            log.warning("recordings index: %s", e)
        return seg.bytes

    # ---- start-up repair ------------------------------------------------------------------------------
    def _repair(self) -> RepairReport:
        index = self.index
        repaired = reindexed = removed = 0
        for seg in index.open_segments():
            path = self.root / seg.path
            probe = None
            size = 0
            if path.is_file():
                try:
                    size = repair_segment(path)
                    probe = probe_segment(path)
                except OSError as e:
                    log.warning("recordings: cannot repair a segment of camera %s: %s", seg.camera_id, e)
            if probe is None:
                path.unlink(missing_ok=True)
                index.delete_segment(seg.id)
                removed += 1
                continue
            end = seg.start + probe.span_s
            index.update_segment(seg.id, end, size, closed=True)
            index.open_gap(seg.camera_id, end, GapReason.GATEWAY_DOWN.value, None)
            repaired += 1
        # Files the index lacks: a crash between creating a file and indexing it, or an index write refused
        # on a full disk, leaves them at the newest end, so only each camera's last two days are scanned;
        # everything is when the index is new (lost or deleted).
        full_scan = not index.cameras()
        for cam_dir in sorted(self.root.iterdir()):
            if not cam_dir.is_dir():
                continue
            try:
                camera_id = check_camera_id(cam_dir.name)
            except BadCameraId:
                continue
            days = sorted(d for d in cam_dir.iterdir() if d.is_dir() and _DATE_DIR.match(d.name))
            for day in days if full_scan else days[-ORPHAN_SCAN_DAYS:]:
                known = index.paths_under(f"{camera_id}/{day.name}/")
                for f in sorted(day.iterdir()):
                    m = _SEGMENT_NAME.match(f.name)
                    rel = f"{camera_id}/{day.name}/{f.name}"
                    if m is None or rel in known or not f.is_file():
                        continue
                    try:
                        start = datetime.strptime(f"{day.name} {m[1]}{m[2]}{m[3]}", "%Y-%m-%d %H%M%S").replace(
                            tzinfo=timezone.utc).timestamp() + int(m[4]) / 1000
                    except ValueError:
                        continue
                    size = repair_segment(f)
                    probe = probe_segment(f)
                    if probe is None:
                        f.unlink(missing_ok=True)
                        removed += 1
                        continue
                    index.insert_closed(camera_id, start, start + probe.span_s, size, probe.codec, probe.width,
                                        probe.height, rel)
                    reindexed += 1
        # Rows whose file is gone (deleted by retention while the index could not be written): retention
        # deletes oldest first, so they are the oldest rows; stop at the first batch without one.
        offset = 0
        while True:
            batch = index.oldest(DELETE_BATCH, closed_only=False, offset=offset)
            gone = [seg for seg in batch if not (self.root / seg.path).is_file()]
            for seg in gone:
                index.delete_segment(seg.id)
            removed += len(gone)
            offset += len(batch) - len(gone)
            if not gone or len(batch) < DELETE_BATCH:
                break
        if repaired or reindexed or removed:
            log.info("recordings: %d segments repaired, %d re-indexed, %d removed at start-up",
                     repaired, reindexed, removed)
        return RepairReport(repaired, reindexed, removed)


__all__ = ["RecordingStore", "RepairReport", "DEFAULT_SEGMENT_S", "DEFAULT_MIN_FREE_BYTES"]
