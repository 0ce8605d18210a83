"""The index of recorded segments and gaps: SQLite (stdlib sqlite3) in WAL mode.

SQLite rather than JSON lines: listings are range queries on (camera, start) that an index answers
without reading the whole history; retention deletes the oldest rows across all cameras, which a log
file could only do by rewriting itself; each change is one atomic commit, so a crash leaves the index
consistent (a segment's row says `open` until it is closed, and start-up repairs those); and in WAL
mode a listing from the loop's executor never waits for a writer thread's commit, nor the reverse.

One connection serves every thread, behind a lock: each statement is short (rows per segment, not per
packet), and commits are not fsynced one by one (synchronous=NORMAL: a power cut may lose the last
commits, never corrupt the file; start-up repair re-indexes segment files the index lost).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from gateway.private import private_file, tighten
from gateway.recording.records import Gap, Segment

SCHEMA_VERSION = 1
# A segment is at most segment_s (<= MAX_SEGMENT_S) plus one GOP long: window queries look back this far
# for segments that started before the window, so the (camera, start) index bounds the scan.
MAX_SEGMENT_S = 3600.0
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    codec TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    path TEXT NOT NULL UNIQUE,
    open INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS segments_camera_start ON segments(camera, start);
CREATE INDEX IF NOT EXISTS segments_start ON segments(start);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL,
    reason TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS gaps_camera_start ON gaps(camera, start);
CREATE INDEX IF NOT EXISTS gaps_open ON gaps(camera) WHERE end IS NULL;
"""

_SEG_COLS = "id, camera, start, end, bytes, codec, width, height, path, open"


def _segment(row: tuple) -> Segment:
    return Segment(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], bool(row[9]))


class RecordingIndex:
    """Segments and gaps of every camera; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        # 0600 before SQLite opens it (its -wal and -shm files take the database's mode), whatever the umask.
        if self.path.exists():
            for p in (self.path, self.path.with_name(self.path.name + "-wal"),
                      self.path.with_name(self.path.name + "-shm")):
                tighten(p)
        else:
            private_file(self.path, "")
        self._db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                                   isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _all(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:  # fetched under the lock too: the connection serves every thread
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple = ()) -> tuple | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    # ---- segments ------------------------------------------------------------------------------
    def add_segment(self, camera_id: str, start: float, path: str, codec: str, width: int, height: int) -> int:
        """Insert an open segment; its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO segments (camera, start, end, bytes, codec, width, height, path, open) "
                "VALUES (?, ?, ?, 0, ?, ?, ?, ?, 1)", (camera_id, start, start, codec, width, height, path))
            return int(cur.lastrowid)

    def insert_closed(self, camera_id: str, start: float, end: float, nbytes: int, codec: str, width: int,
                      height: int, path: str) -> int:
        """Insert a finished segment (start-up re-indexing of a file the index lost); its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO segments (camera, start, end, bytes, codec, width, height, path, open) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)", (camera_id, start, end, nbytes, codec, width, height, path))
            return int(cur.lastrowid or 0)

    def update_segment(self, segment_id: int, end: float, nbytes: int, *, closed: bool) -> None:
        """Record a segment's progress (end, bytes), or its final values when closed."""
        self._run("UPDATE segments SET end = ?, bytes = ?, open = ? WHERE id = ?",
                  (end, nbytes, 0 if closed else 1, segment_id))

    def delete_segment(self, segment_id: int) -> None:
        """Remove a segment's row."""
        self._run("DELETE FROM segments WHERE id = ?", (segment_id,))

    def segment(self, segment_id: int) -> Segment | None:
        """One segment by id."""
        row = self._one(f"SELECT {_SEG_COLS} FROM segments WHERE id = ?", (segment_id,))
        return _segment(row) if row else None

    def segments(self, camera_id: str, start: float, end: float, limit: int = -1) -> list[Segment]:
        """A camera's segments overlapping [start, end), oldest first."""
        rows = self._all(
            f"SELECT {_SEG_COLS} FROM segments WHERE camera = ? AND start >= ? AND start < ? AND end > ? "
            "ORDER BY start LIMIT ?", (camera_id, start - MAX_SEGMENT_S, end, start, limit))
        return [_segment(r) for r in rows]

    def open_segments(self) -> list[Segment]:
        """Segments whose row still says open (left so by a crash when read at start-up)."""
        return [_segment(r) for r in self._all(f"SELECT {_SEG_COLS} FROM segments WHERE open = 1")]

    def oldest(self, limit: int, *, closed_only: bool = True, offset: int = 0) -> list[Segment]:
        """The oldest segments of all cameras (closed ones only by default)."""
        where = "WHERE open = 0 " if closed_only else ""
        rows = self._all(f"SELECT {_SEG_COLS} FROM segments {where}ORDER BY start LIMIT ? OFFSET ?",
                         (limit, offset))
        return [_segment(r) for r in rows]

    def older_than(self, camera_id: str, cutoff: float, limit: int) -> list[Segment]:
        """A camera's closed segments that ended before `cutoff`, oldest first."""
        # start < cutoff bounds the scan of the (camera, start) index to the old rows.
        rows = self._all(f"SELECT {_SEG_COLS} FROM segments WHERE camera = ? AND start < ? AND open = 0 "
                         "AND end < ? ORDER BY start LIMIT ?", (camera_id, cutoff, cutoff, limit))
        return [_segment(r) for r in rows]

    def paths_under(self, prefix: str) -> set[str]:
        """Indexed relative paths starting with `prefix` (a camera's day folder, "<camera>/<date>/")."""
        # A range on the path's unique index; the prefix is ours (digits, '-' and '/'), "0" follows "/".
        return {r[0] for r in self._all("SELECT path FROM segments WHERE path >= ? AND path < ?",
                                        (prefix, prefix[:-1] + "0"))}

    def cameras(self) -> list[str]:
        """Cameras with segments."""
        # DISTINCT would read the whole index; this hops from one camera to the next on it.
        return [r[0] for r in self._all(
            "WITH RECURSIVE c(camera) AS (SELECT MIN(camera) FROM segments UNION ALL "
            "SELECT (SELECT MIN(camera) FROM segments WHERE camera > c.camera) FROM c WHERE c.camera IS NOT NULL) "
            "SELECT camera FROM c WHERE camera IS NOT NULL")]

    def total_bytes(self) -> int:
        """Bytes of all indexed segments."""
        return int(self._one("SELECT COALESCE(SUM(bytes), 0) FROM segments")[0])

    def first_start(self, camera_id: str) -> float | None:
        """Where a camera's oldest segment starts (None: nothing recorded is left)."""
        row = self._one("SELECT MIN(start) FROM segments WHERE camera = ?", (camera_id,))
        return row[0] if row and row[0] is not None else None

    def last_end(self, camera_id: str) -> float | None:
        """Where a camera's latest segment ends."""
        row = self._one("SELECT MAX(end) FROM segments WHERE camera = ?", (camera_id,))
        return row[0] if row and row[0] is not None else None

    # ---- gaps ----------------------------------------------------------------------------------
    def open_gap(self, camera_id: str, start: float, reason: str, detail: str | None = None) -> None:
        """Start a gap (no recording from `start`, for `reason`) unless one is already open for the camera."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM gaps WHERE camera = ? AND end IS NULL", (camera_id,)).fetchone():
                return
            self._db.execute("INSERT INTO gaps (camera, start, end, reason, detail) VALUES (?, ?, NULL, ?, ?)",
                             (camera_id, start, reason, detail))

    def close_gaps(self, camera_id: str, end: float, min_s: float) -> None:
        """End a camera's open gap at `end` (recording resumed); one shorter than min_s is forgotten."""
        with self._lock:
            self._db.execute("DELETE FROM gaps WHERE camera = ? AND end IS NULL AND ? - start < ?",
                             (camera_id, end, min_s))
            self._db.execute("UPDATE gaps SET end = MAX(start, ?) WHERE camera = ? AND end IS NULL", (end, camera_id))

    def gaps(self, camera_id: str, start: float, end: float, now: float) -> list[Gap]:
        """A camera's recorded gaps overlapping [start, end); an open one ends `now`."""
        rows = self._all("SELECT camera, start, COALESCE(end, ?), reason, detail FROM gaps "
                         "WHERE camera = ? AND start < ? AND COALESCE(end, ?) > ? ORDER BY start",
                         (now, camera_id, end, now, start))
        return [Gap(*r) for r in rows]

    def delete_gaps_before(self, camera_id: str | None, cutoff: float) -> None:
        """Forget gaps that ended before `cutoff` (of one camera, or all)."""
        if camera_id is None:
            self._run("DELETE FROM gaps WHERE end IS NOT NULL AND end < ?", (cutoff,))
        else:
            self._run("DELETE FROM gaps WHERE camera = ? AND start < ? AND end IS NOT NULL AND end < ?",
                      (camera_id, cutoff, cutoff))
