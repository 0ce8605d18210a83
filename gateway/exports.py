"""Exports kept for a while: a window or clip asked again (a player's seek) is served from the file already written.

A browser's <video> asks a recording.mp4 or clip.mp4 several times: `bytes=0-`, then one Range request per seek,
often aborting the one before. Each used to re-export the whole window (an hour of a 4 Mbit/s camera is 1.8 GB).
Here one export per key (`ExportKey`: the window as asked, or the event and the pre/post used) is written once:

* requests for a key being written wait for that write (no duplicate export); the write is the cache's own task,
  so a client that gives up does not waste it (its next request, the seek, finds it);
* a written export is kept `keep_s` after its last use (least recently used evicted first) while the kept bytes
  stay under `max_bytes` and a share of the disk's free space above the recordings' floor, so that a full disk
  still pauses recording rather than filling with exports;
* a file is never deleted under a reader: each user holds a `Lease` (the HTTP answer until aiohttp's
  FileResponse has sent it, a relayed stream until it is closed); an entry evicted or expired while leased goes
  when its last lease is released;
* never stale: a window ending later than what was recorded when it was written is served once and not kept
  (a later request sees the newer footage); an entry is served at most `EXPORT_MAX_AGE_S` after it was written,
  and one whose footage retention has since deleted is dropped after the sweep (`drop_deleted`);
* the cleaner (`run_cleaner`, the task `recordings:exports`) expires entries; the folder is emptied at start-up
  and at shutdown (gateway/recordings.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.private import private_dir

log = logging.getLogger(__name__)

EXPORT_CACHE_BYTES = 2 << 30  # default bound on kept exports: a few hours of windows of a 1 Mbit/s camera
EXPORT_KEEP_S = 60.0  # default: a player seeks within seconds of its last request; kept short so that an export
# does not outlive by much the footage retention deletes (see EXPORT_MAX_AGE_S)
EXPORT_MAX_AGE_S = 600.0  # an export is served at most this long after it was written, however often it is used:
# bounds how long footage deleted since (retention, the disk floor) can still be played from it
EXPORT_FREE_SHARE = 0.25  # kept exports take at most this share of the free space above the recordings' floor
CLEAN_EVERY_S = 5.0  # the cleaner's period (at most keep_s / 2): how late an expired export may linger
MAX_WRITING = 2  # exports written at once; more: ExportsBusy (503) — each reads and writes the disk


class ExportsBusy(Exception):
    """MAX_WRITING exports of other keys are being written: try again shortly."""


@dataclass(frozen=True, slots=True)
class ExportKey:
    """What identifies an export: a camera's window as asked, or an event's clip with the pre/post used."""

    kind: str  # "recording" or "clip"
    camera_id: str
    start: float
    end: float
    event_id: str | None = None
    pre_s: float | None = None
    post_s: float | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """One export on disk: its file, size, the answer's head, where its footage starts, whether it may be kept."""

    path: Path
    size: int
    head: Any  # the stream head the API answers with (tiers.relay.StreamHead)
    footage_start: float  # wall time of the first recorded moment in it (the segment it came from)
    keep: bool  # its window ended no later than what was recorded when it was written


@dataclass(frozen=True, slots=True)
class ExportStats:
    """The cache's counters (the recordings' health)."""

    hits: int  # requests served from a kept export
    joined: int  # requests that waited for the same key's write
    misses: int  # exports written
    not_kept: int  # written but served once only (window still being recorded, or over the bound)
    evictions: int  # kept exports removed for the byte bound (least recently used first)
    expired: int  # kept exports removed past keep_s, EXPORT_MAX_AGE_S, or after retention deleted their footage
    entries: int  # exports kept now
    kept_bytes: int  # their bytes
    limit_bytes: int  # the bound now (max_bytes, or less on a disk short of space)
    writing: int  # exports being written now

    def to_dict(self) -> dict[str, int]:
        """JSON form."""
        return {f: getattr(self, f) for f in self.__slots__}


class _Entry:
    """One key's export: being written (task), then written; users hold leases on its file."""

    __slots__ = ("key", "task", "written", "users", "last_used", "made_at", "kept", "gone")

    def __init__(self, key: ExportKey, now: float) -> None:
        self.key = key
        self.task: asyncio.Task[Written] | None = None
        self.written: Written | None = None
        self.users = 0
        self.last_used = now
        self.made_at = now
        self.kept = False  # counted in the cache's bytes
        self.gone = False  # no longer served: its file goes when its last user releases it


class Lease:
    """One user's hold on an export's file: it stays on disk until every lease on it is released."""

    __slots__ = ("_cache", "_entry", "_held")

    def __init__(self, cache: "ExportCache", entry: _Entry) -> None:
        self._cache, self._entry, self._held = cache, entry, True

    @property
    def written(self) -> Written:
        """The export (path, size, head)."""
        assert self._entry.written is not None
        return self._entry.written

    def release(self) -> None:
        """Let the file go (idempotent; safe from a finalizer): a file no longer served is deleted."""
        if self._held:
            self._held = False
            self._cache._release(self._entry)


class ExportCache:
    """Exports by key: written once, kept a while, bounded in bytes, never deleted under a reader."""

    def __init__(self, folder: Path, *, max_bytes: int = EXPORT_CACHE_BYTES, keep_s: float = EXPORT_KEEP_S,
                 free_bytes: Callable[[], int] | None = None, floor_bytes: int = 0,
                 max_writing: int = MAX_WRITING, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = folder
        self.max_bytes, self.keep_s = max_bytes, keep_s
        self.free_bytes = free_bytes  # blocking (statvfs): called in a thread
        self.floor_bytes = floor_bytes
        self.max_writing = max_writing
        self.clock = clock  # monotonic seconds; a test drives it
        self._entries: OrderedDict[ExportKey, _Entry] = OrderedDict()  # least recently used first
        self._kept_bytes = 0
        self._limit = max_bytes
        self._writing = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unlinks: set[asyncio.Task] = set()
        self.hits = self.joined = self.misses = self.not_kept = self.evictions = self.expired = 0

    # ---- serving --------------------------------------------------------------------------------------
    async def open(self, key: ExportKey, write: Callable[[Path], Awaitable[Written]]) -> Lease:
        """A lease on the export of `key`: kept, being written (waits for it), or written now by `write(path)`.

        Raises what `write` raises (to every request waiting for it), ExportsBusy past max_writing."""
        self._loop = asyncio.get_running_loop()
        now = self.clock()
        e = self._entries.get(key)
        if e is not None and e.written is not None and now - e.made_at > EXPORT_MAX_AGE_S:
            self._retire(e, expired=True)
            e = None
        if e is None:
            if self._writing >= self.max_writing:
                raise ExportsBusy(f"{self.max_writing} exports are being written; try again shortly")
            self.misses += 1
            e = self._entries[key] = _Entry(key, now)
            self._writing += 1  # counted now: a second key asked before the task starts sees it
            e.task = asyncio.create_task(self._write(e, write), name="recordings:export")
            e.task.add_done_callback(_retrieve)
        elif e.written is not None:
            self.hits += 1
        else:
            self.joined += 1
        e.users += 1  # held while waiting: not evicted under a waiter
        self._entries.move_to_end(key)
        try:
            assert e.task is not None
            await asyncio.shield(e.task)
        except BaseException:
            self._release(e)
            raise
        e.last_used = self.clock()
        return Lease(self, e)

    async def _write(self, e: _Entry, write: Callable[[Path], Awaitable[Written]]) -> Written:
        try:
            await asyncio.to_thread(private_dir, self.folder)
            fd, name = await asyncio.to_thread(tempfile.mkstemp, ".mp4", None, self.folder)
            os.close(fd)
            path = Path(name)
            try:
                w = await write(path)
            except BaseException:
                await asyncio.to_thread(path.unlink, True)
                raise
        except BaseException:
            if self._entries.get(e.key) is e:
                del self._entries[e.key]
            e.gone = True
            raise
        finally:
            self._writing -= 1
        e.written, e.made_at = w, self.clock()
        if w.keep and not e.gone:
            self._limit = await self._bound()
            if w.size <= self._limit:
                e.kept = True
                self._kept_bytes += w.size
                self._evict(spare=e)
        if not e.kept:
            self.not_kept += 1
            self._retire(e)  # served to those waiting for it, then deleted
        return w

    def _release(self, e: _Entry) -> None:
        e.users -= 1
        e.last_used = self.clock()  # keep_s counts from the end of its last send
        if e.users <= 0 and e.gone:
            self._unlink(e)

    # ---- keeping --------------------------------------------------------------------------------------
    async def _bound(self) -> int:
        """The byte bound now: max_bytes, or the share of the free space above the floor if that is less."""
        if self.free_bytes is None:
            return self.max_bytes
        free = await asyncio.to_thread(self.free_bytes)
        room = max(0, free + self._kept_bytes - self.floor_bytes)  # kept exports could be given back
        return min(self.max_bytes, int(room * EXPORT_FREE_SHARE))

    def _evict(self, spare: _Entry | None = None) -> None:
        """Least recently used first, until the kept bytes fit the bound."""
        for e in list(self._entries.values()):
            if self._kept_bytes <= self._limit:
                break
            if e.kept and e is not spare:
                self.evictions += 1
                self._retire(e)

    def _retire(self, e: _Entry, expired: bool = False) -> None:
        """No longer served: out of the index and the byte count; the file goes once no one reads it."""
        if self._entries.get(e.key) is e:
            del self._entries[e.key]
        if e.kept:
            e.kept = False
            self._kept_bytes -= e.written.size if e.written is not None else 0
            self.expired += expired
        if not e.gone:
            e.gone = True
            if e.users <= 0 and e.written is not None:
                self._unlink(e)

    def _unlink(self, e: _Entry) -> None:
        w, loop = e.written, self._loop
        if w is None or loop is None or loop.is_closed():
            return
        e.written = None  # once

        def start() -> None:
            t = loop.create_task(asyncio.to_thread(w.path.unlink, True), name="recordings:export-unlink")
            self._unlinks.add(t)
            t.add_done_callback(self._unlinks.discard)
        loop.call_soon_threadsafe(start)  # a lease may be released by a finalizer, off the loop

    def expire(self) -> int:
        """Remove kept exports unused for keep_s or written over EXPORT_MAX_AGE_S ago; the number removed."""
        now = self.clock()
        old = [e for e in self._entries.values() if e.written is not None
               and (now - e.made_at > EXPORT_MAX_AGE_S or (e.users <= 0 and now - e.last_used > self.keep_s))]
        for e in old:
            self._retire(e, expired=True)
        return len(old)

    def cameras(self) -> set[str]:
        """The cameras of the exports written (for `drop_deleted`)."""
        return {e.key.camera_id for e in self._entries.values() if e.written is not None}

    def drop_deleted(self, first_start: Mapping[str, float | None]) -> int:
        """After a retention sweep: remove exports whose footage starts before what is left of their camera's
        recording (`first_start[camera]`: its oldest segment's start, None when none is left)."""
        old = [e for e in self._entries.values() if e.written is not None
               and ((first := first_start.get(e.key.camera_id)) is None or e.written.footage_start < first)]
        for e in old:
            self._retire(e, expired=True)
        return len(old)

    async def run_cleaner(self) -> None:
        """Expire kept exports and keep the byte bound as the disk's free space changes, every CLEAN_EVERY_S."""
        self._loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(CLEAN_EVERY_S, self.keep_s / 2))
            self.expire()
            self._limit = await self._bound()
            self._evict()

    async def close(self) -> None:
        """At shutdown: forget every export and wait for the deletions under way (the folder is emptied next)."""
        for e in list(self._entries.values()):
            if e.written is not None:
                self._retire(e)
        await asyncio.sleep(0)  # the deletions scheduled by call_soon_threadsafe start
        if self._unlinks:
            await asyncio.wait(set(self._unlinks), timeout=5)

    def stats(self) -> ExportStats:
        """The counters and what is kept now."""
        kept = sum(1 for e in self._entries.values() if e.kept)
        return ExportStats(self.hits, self.joined, self.misses, self.not_kept, self.evictions, self.expired, kept,
                           self._kept_bytes, self._limit, self._writing)


def _retrieve(task: asyncio.Task) -> None:
    # A write every waiter gave up on: its error is not "never retrieved".
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()
